#!/usr/bin/env bash
# A local Aviary cluster on loopback: Redis, a Cassandra node, 3 session nodes and
# 2 edges, domain `localhost`, in-band registration on.
#
#   cluster.sh up [DIR]          start everything; returns once every node is ready
#                                and every partition has a live owner
#   cluster.sh down [DIR]        stop everything (nodes first, then the stores)
#   cluster.sh endpoints [DIR]   the edges' STARTTLS client addresses, host:port,…
#   cluster.sh pids edge|session [DIR]   one PID a line
#
# DIR defaults to .dev/cluster in the repository. The binary is $AVIARY_BIN, or
# target/release/aviary (built with `cargo build --release -p aviary` if missing).
# Sizes: AVIARY_SESSIONS (default 3), AVIARY_EDGES (default 2). Each node's
# configuration and log are in DIR/<node>/.
set -euo pipefail
LOG_TAG=cluster
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$DEV_DIR/../.." && pwd -P)"

SESSIONS="${AVIARY_SESSIONS:-3}"
EDGES="${AVIARY_EDGES:-2}"
READY_TIMEOUT="${AVIARY_READY_TIMEOUT:-120}"

usage() {
    print_header "${BASH_SOURCE[0]}"
    exit 2
}

default_dir() {
    printf '%s\n' "$ROOT/.dev/cluster"
}

binary() {
    if [ -n "${AVIARY_BIN:-}" ]; then
        [ -x "$AVIARY_BIN" ] || die "AVIARY_BIN=$AVIARY_BIN is not an executable"
        printf '%s\n' "$AVIARY_BIN"
        return
    fi
    local bin="$ROOT/target/release/aviary"
    if [ ! -x "$bin" ]; then
        log "building $bin (cargo build --release -p aviary)"
        (cd "$ROOT" && cargo build --release -p aviary >&2) || die "build failed"
    fi
    printf '%s\n' "$bin"
}

# node_config DIR NAME ROLE GRPC_PORT C2S_PORT TLS_PORT — writes DIR/NAME/aviary.toml
node_config() {
    local dir="$1" name="$2" role="$3" grpc="$4" c2s="$5" tls="$6"
    # shellcheck disable=SC1090,SC1091
    . "$dir/deps/env"
    local cql="${AVIARY_TEST_CQL}" redis="${AVIARY_TEST_REDIS_URL}"
    mkdir -p "$dir/$name"
    cat >"$dir/$name/aviary.toml" <<EOF
[server]
domains = ["localhost"]
data_dir = "$dir/$name/data"
node_id = "$name"
workers = 1
shutdown_grace = "5s"

[c2s]
listen = ["127.0.0.1:$c2s"]
listen_tls = ["127.0.0.1:$tls"]

[registration]
enabled = true
per_ip = 0

[auth]
scram_iterations = 4096

[store]
backend = "cql"
cql_contact_points = ["$cql"]
cql_keyspace = "aviary_dev"

[cluster]
role = "$role"
grpc_listen = "127.0.0.1:$grpc"
redis_url = "$redis"
redis_prefix = "aviary-dev"
lease_ttl = "3s"
lease_tick = "250ms"

[log]
level = "info"
EOF
}

start_node() {
    local dir="$1" name="$2" bin="$3"
    (cd "$dir/$name" && exec "$bin" serve --config "$dir/$name/aviary.toml" \
        >"$dir/$name/log" 2>&1) &
    echo $! >"$dir/$name/pid"
}

redis_cli() {
    # shellcheck disable=SC1090,SC1091
    . "$1/deps/env"
    local port="${AVIARY_TEST_REDIS_URL##*:}"
    shift
    redis-cli -p "$port" "$@"
}

# ready DIR — every node live in the membership, every partition claimed by a live
# session node, every edge accepting connections.
ready() {
    local dir="$1" live n
    live="$(redis_cli "$dir" ZRANGEBYSCORE 'aviary-dev:{cluster}:members' "$(($(date +%s) * 1000))" +inf 2>/dev/null | wc -l)"
    [ "$live" -ge $((SESSIONS + EDGES)) ] || return 1
    n="$(redis_cli "$dir" HLEN 'aviary-dev:{cluster}:claims' 2>/dev/null)"
    [ "${n:-0}" -eq 1024 ] || return 1
    local owners
    owners="$(redis_cli "$dir" HVALS 'aviary-dev:{cluster}:claims' | awk '{print $2}' | sort -u)"
    local o
    for o in $owners; do
        case "$o" in s[0-9]*) [ -f "$dir/$o/pid" ] || return 1 ;; *) return 1 ;; esac
    done
    local e port
    for e in $(seq 1 "$EDGES"); do
        port="$(cat "$dir/e$e/c2s_port")"
        python3 - "$port" <<'EOF' || return 1
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.close()
EOF
    done
}

cmd_up() {
    local dir bin t0="$SECONDS"
    dir="$(abs_dir "${1:-$(default_dir)}")"
    [ ! -f "$dir/e1/pid" ] || die "a cluster seems to be running in $dir (run: $0 down $dir)"
    bin="$(binary)"
    "$DEV_DIR/deps.sh" install
    "$DEV_DIR/deps.sh" up "$dir/deps" >/dev/null
    # Start from empty state: a fresh key prefix and keyspace content.
    redis_cli "$dir" --scan --pattern 'aviary-dev:*' | while read -r k; do
        redis_cli "$dir" DEL "$k" >/dev/null
    done
    local ports i
    mapfile -t ports < <(python3 "$DEV_DIR/freeport.py" $((SESSIONS + 3 * EDGES)))
    i=0
    for s in $(seq 1 "$SESSIONS"); do
        node_config "$dir" "s$s" session "${ports[$i]}" 0 0
        i=$((i + 1))
        start_node "$dir" "s$s" "$bin"
    done
    for e in $(seq 1 "$EDGES"); do
        node_config "$dir" "e$e" edge "${ports[$i]}" "${ports[$((i + 1))]}" "${ports[$((i + 2))]}"
        echo "${ports[$((i + 1))]}" >"$dir/e$e/c2s_port"
        i=$((i + 3))
        start_node "$dir" "e$e" "$bin"
    done
    local deadline=$((SECONDS + READY_TIMEOUT))
    until ready "$dir"; do
        for p in "$dir"/*/pid; do
            [ "$p" = "$dir/deps/pid" ] && continue
            if ! kill -0 "$(cat "$p")" 2>/dev/null; then
                tail -n 20 "$(dirname "$p")/log" >&2
                die "node $(basename "$(dirname "$p")") exited during start-up"
            fi
        done
        [ "$SECONDS" -lt "$deadline" ] || die "the cluster was not ready within ${READY_TIMEOUT}s"
        sleep 0.2
    done
    log "up in $((SECONDS - t0))s: $SESSIONS session nodes, $EDGES edges"
    cmd_endpoints "$dir"
}

cmd_down() {
    local dir="${1:-$(default_dir)}" p rc=0
    for p in "$dir"/e*/pid "$dir"/s*/pid; do
        [ -f "$p" ] || continue
        kill "$(cat "$p")" 2>/dev/null || true
    done
    for p in "$dir"/e*/pid "$dir"/s*/pid; do
        [ -f "$p" ] || continue
        local pid deadline=$((SECONDS + 15))
        pid="$(cat "$p")"
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$p"
    done
    [ -d "$dir/deps" ] && { "$DEV_DIR/deps.sh" down "$dir/deps" || rc=1; }
    return "$rc"
}

cmd_endpoints() {
    local dir="${1:-$(default_dir)}" out="" e
    for e in "$dir"/e*/c2s_port; do
        [ -f "$e" ] || continue
        out="${out:+$out,}127.0.0.1:$(cat "$e")"
    done
    [ -n "$out" ] || die "no cluster in $dir"
    printf '%s\n' "$out"
}

cmd_pids() {
    local kind="$1" dir="${2:-$(default_dir)}" prefix p
    case "$kind" in
        edge) prefix=e ;;
        session) prefix=s ;;
        *) usage ;;
    esac
    for p in "$dir"/"$prefix"[0-9]*/pid; do
        [ -f "$p" ] && cat "$p"
    done
}

[ $# -ge 1 ] || usage
sub="$1"
shift
case "$sub" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    endpoints) cmd_endpoints "$@" ;;
    pids) [ $# -ge 1 ] || usage; cmd_pids "$@" ;;
    *) usage ;;
esac
