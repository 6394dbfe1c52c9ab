#!/usr/bin/env bash
# A private Python virtualenv with the third-party XMPP client slixmpp, which the
# end-to-end tests drive as a real peer (tests/python/, tests/tests/slixmpp.rs).
#
#   python.sh install   create ${AVIARY_DEV_DIR:-<repo>/.dev}/venv with the pinned
#                       packages (idempotent; quiet when already installed)
#   python.sh python    print the venv's interpreter (what AVIARY_TEST_PYTHON
#                       may be set to); fails if not installed
#
# Environment: AVIARY_DEV_DIR (default <repo>/.dev, git-ignored);
# AVIARY_PYTHON (interpreter to build the venv from, default: python3 on PATH,
# then /usr/bin/python3; slixmpp 1.17 needs Python >= 3.11).
set -euo pipefail
LOG_TAG=python
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Exact pins: a new slixmpp release must not change what the tests exercise
# unnoticed. Bump deliberately (and re-run tests/tests/slixmpp.rs).
PINS=(slixmpp==1.17.0)
MIN_PY=3.11

usage() {
    print_header "${BASH_SOURCE[0]}"
    exit 2
}

venv_dir() {
    local dev="${AVIARY_DEV_DIR:-$(cd "$DEV_DIR/../.." && pwd -P)/.dev}"
    printf '%s/venv\n' "$dev"
}

# py_ok PY — PY runs, is recent enough and can create a venv with pip.
py_ok() {
    "$1" - "$MIN_PY" >/dev/null 2>&1 <<'EOF'
import sys
need = tuple(int(x) for x in sys.argv[1].split("."))
if sys.version_info[:2] < need:
    sys.exit(1)
import venv, ensurepip  # noqa: F401  (Debian splits these into python3-venv)
EOF
}

pick_python() {
    local cand
    if [ -n "${AVIARY_PYTHON:-}" ]; then
        py_ok "$AVIARY_PYTHON" \
            || die "AVIARY_PYTHON=$AVIARY_PYTHON is not a Python >= $MIN_PY with venv and ensurepip"
        printf '%s\n' "$AVIARY_PYTHON"
        return 0
    fi
    for cand in "$(command -v python3 || true)" /usr/bin/python3; do
        if [ -n "$cand" ] && py_ok "$cand"; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    # A plain Debian 12 has Python 3.11 but not its venv/ensurepip modules.
    apt_install python3 python3-venv
    py_ok /usr/bin/python3 || die "no Python >= $MIN_PY with venv support (set AVIARY_PYTHON)"
    printf '%s\n' /usr/bin/python3
}

# installed VENV — the venv exists, was completed for exactly these pins, and
# its slixmpp imports.
installed() {
    local venv="$1"
    [ -x "$venv/bin/python" ] || return 1
    [ "$(cat "$venv/.aviary-pins" 2>/dev/null || true)" = "${PINS[*]}" ] || return 1
    "$venv/bin/python" -c 'import slixmpp' >/dev/null 2>&1
}

cmd_install() {
    local venv py out lock
    venv="$(venv_dir)"
    installed "$venv" && return 0
    mkdir -p -- "$(dirname "$venv")" || die "cannot create $(dirname "$venv")"
    # Serialise concurrent installs (parallel CI steps, several shells).
    lock="$(dirname "$venv")/.venv.lock"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$lock"
        flock 9
        installed "$venv" && return 0
    fi
    py="$(pick_python)"
    out="$(mktemp)"
    # A venv cannot be moved after creation (its scripts name their own path),
    # so build it in place; the pins marker is written last and a half-built
    # venv is wiped and redone on the next run.
    rm -rf -- "$venv"
    if ! "$py" -m venv "$venv" >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "'$py -m venv $venv' failed"
    fi
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --no-input "${PINS[@]}" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        rm -f "$out"
        die "pip install ${PINS[*]} failed (PyPI reachable? see above)"
    fi
    rm -f "$out"
    "$venv/bin/python" -c 'import slixmpp' \
        || die "slixmpp does not import in $venv after install"
    printf '%s\n' "${PINS[*]}" >"$venv/.aviary-pins"
    log "installed ${PINS[*]} in $venv ($("$venv/bin/python" --version 2>&1))"
}

cmd_python() {
    local venv
    venv="$(venv_dir)"
    installed "$venv" || die "no venv with ${PINS[*]} in $venv: run '$0 install'"
    printf '%s\n' "$venv/bin/python"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    install) [ $# -eq 0 ] || usage; cmd_install ;;
    python) [ $# -eq 0 ] || usage; cmd_python ;;
    -h|--help|help) usage ;;
    *) log "unknown subcommand: $sub"; usage ;;
esac
