#!/usr/bin/env bash
# The real components Aviary's tests need: Redis and a single Cassandra node.
#
#   deps.sh install    install both, and the Python venv with slixmpp
#                      (python.sh; idempotent; quiet when already installed)
#   deps.sh up [DIR]   start both with state in DIR (default .dev/deps in the
#                      repository), write DIR/env and print it:
#                        AVIARY_TEST_REDIS_URL=redis://127.0.0.1:PORT
#                        AVIARY_TEST_CQL=127.0.0.1:PORT
#   deps.sh down [DIR] stop both
#
# Typical CI use:
#   deploy/dev/deps.sh install && deploy/dev/deps.sh up "$D"
#   set -a; . "$D/env"; set +a; cargo test; deploy/dev/deps.sh down "$D"
set -euo pipefail
LOG_TAG=deps
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    print_header "${BASH_SOURCE[0]}"
    exit 2
}

default_dir() {
    printf '%s\n' "$(cd "$DEV_DIR/../.." && pwd -P)/.dev/deps"
}

cmd_install() {
    "$DEV_DIR/redis.sh" install
    "$DEV_DIR/cassandra.sh" install
    "$DEV_DIR/python.sh" install
}

cmd_up() {
    local dir redis_port cql_port t0="$SECONDS"
    dir="$(abs_dir "${1:-$(default_dir)}")"
    rm -f "$dir/env"
    redis_port="$("$DEV_DIR/redis.sh" start "$dir/redis")"
    if ! cql_port="$("$DEV_DIR/cassandra.sh" start "$dir/cassandra")"; then
        "$DEV_DIR/redis.sh" stop "$dir/redis" || true
        die "cassandra did not start; redis stopped again"
    fi
    printf 'AVIARY_TEST_REDIS_URL=redis://127.0.0.1:%s\nAVIARY_TEST_CQL=127.0.0.1:%s\n' \
        "$redis_port" "$cql_port" >"$dir/env.tmp"
    mv "$dir/env.tmp" "$dir/env"
    log "up in $((SECONDS - t0))s; environment in $dir/env"
    cat "$dir/env"
}

cmd_down() {
    local dir="${1:-$(default_dir)}" rc=0
    "$DEV_DIR/cassandra.sh" stop "$dir/cassandra" || rc=1
    "$DEV_DIR/redis.sh" stop "$dir/redis" || rc=1
    rm -f "$dir/env"
    return "$rc"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    install) [ $# -eq 0 ] || usage; cmd_install ;;
    up) [ $# -le 1 ] || usage; cmd_up "$@" ;;
    down) [ $# -le 1 ] || usage; cmd_down "$@" ;;
    -h|--help|help) usage ;;
    *) log "unknown subcommand: $sub"; usage ;;
esac
