#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Redis,
# Apache Cassandra, a Python venv with slixmpp), starts one Redis and one Cassandra
# for the run, runs every test in the workspace — including the RFC 6121
# conformance suite a second time against a local multi-node cluster — and stops
# what it started. This is the README's test command and what .ci/run calls.
#
#   deploy/dev/test.sh [extra cargo test arguments]
set -euo pipefail
LOG_TAG=test
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$DEV_DIR/../.." && pwd -P)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"

"$DEV_DIR/deps.sh" install
AVIARY_TEST_PYTHON="$("$DEV_DIR/python.sh" python)"
export AVIARY_TEST_PYTHON

DEPS="$(mktemp -d "${TMPDIR:-/tmp}/aviary-test-deps.XXXXXX")"
cleanup() {
    "$DEV_DIR/deps.sh" down "$DEPS" >/dev/null 2>&1 || true
    rm -rf "$DEPS"
}
trap cleanup EXIT
"$DEV_DIR/deps.sh" up "$DEPS" >/dev/null
set -a
# shellcheck disable=SC1091
. "$DEPS/env"
set +a

log "running the test suite (Redis ${AVIARY_TEST_REDIS_URL}, Cassandra ${AVIARY_TEST_CQL})"
cargo test --workspace --locked "$@"

log "running the RFC 6121 conformance suite against a cluster (2 edges, 3 session nodes)"
# --workspace, as above: the same feature set, so the test binaries are reused, not
# built a second time.
AVIARY_TEST_TARGET=cluster cargo test --workspace --locked "$@" \
    --test 'rfc6121_*' --test 'xep0160_*' --test 'xep0191_*' -- --skip survive --skip restart
# Restarts need a cluster per test.
AVIARY_TEST_TARGET=cluster AVIARY_TEST_CLUSTER_PER_TEST=1 cargo test --workspace --locked "$@" \
    --test rfc6121_persistence
