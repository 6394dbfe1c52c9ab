#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (the
# Python venv with slixmpp for interoperability tests), then runs every test in the
# workspace. This is the README's test command and what .ci/run calls.
#
#   deploy/dev/test.sh [extra cargo test arguments]
set -euo pipefail
LOG_TAG=test
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$DEV_DIR/../.." && pwd -P)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"

"$DEV_DIR/python.sh" install
AVIARY_TEST_PYTHON="$("$DEV_DIR/python.sh" python)"
export AVIARY_TEST_PYTHON

log "running the test suite"
cargo test --workspace --locked "$@"
