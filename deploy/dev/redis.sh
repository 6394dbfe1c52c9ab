#!/usr/bin/env bash
# Private Redis instances for Aviary's tests.
#
#   redis.sh install          install redis-server (Debian package) if missing;
#                             the system service is stopped and disabled
#   redis.sh start DIR [PORT] start an instance on 127.0.0.1:PORT (a free port
#                             if none given), state in DIR; prints the port
#   redis.sh stop DIR         stop the instance started in DIR
#
# Environment: REDIS_START_TIMEOUT (seconds, default 20).
set -euo pipefail
LOG_TAG=redis
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    print_header "${BASH_SOURCE[0]}"
    exit 2
}

disable_system_service() {
    # The Debian package starts a system-wide redis on 6379 right away. Tests
    # use private instances only, so stop it and keep it from starting at boot.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    else
        if [ -x /etc/init.d/redis-server ]; then
            as_root /etc/init.d/redis-server stop >/dev/null 2>&1 || true
        fi
        if command -v systemctl >/dev/null 2>&1; then
            # Offline: only removes the wants/ symlinks.
            as_root systemctl disable redis-server.service >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/redis-server ]; then
            as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
        fi
    fi
}

cmd_install() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return 0
    fi
    apt_install redis-server
    disable_system_service
    command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after install"
    log "installed $(redis-server --version | head -n1)"
}

# try_start DIR PORT — 0: up and answering; 1: port was taken; dies otherwise.
try_start() {
    local dir="$1" port="$2" timeout="${REDIS_START_TIMEOUT:-20}" deadline reply
    : >"$dir/redis.log"
    rm -f "$dir/redis.pid"
    # --save '' and --appendonly no: no persistence; --dir keeps any file
    # Redis might still write inside DIR. Config errors make redis-server exit
    # non-zero here, before it forks.
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes \
        --save '' --appendonly no --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --loglevel notice >&2 </dev/null \
        || die "redis-server refused to start (see $dir/redis.log)"
    deadline=$((SECONDS + timeout))
    while :; do
        reply="$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)"
        if [ "$reply" = PONG ] && [ -s "$dir/redis.pid" ]; then
            return 0
        fi
        if grep -qE 'Could not create server TCP listening socket|Address already in use' \
            "$dir/redis.log" 2>/dev/null; then
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "no PONG from 127.0.0.1:$port within ${timeout}s; log tail:"
            tail -n 20 "$dir/redis.log" >&2 || true
            cmd_stop "$dir" 2>/dev/null || true
            die "redis did not start"
        fi
        sleep 0.05
    done
}

cmd_start() {
    local dir port attempt
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server not installed: run '$0 install'"
    dir="$(abs_dir "$1")"
    if [ -s "$dir/redis.pid" ] && pid_alive "$(cat "$dir/redis.pid")" "$dir"; then
        die "an instance already runs in $dir (pid $(cat "$dir/redis.pid")); stop it first"
    fi
    if [ $# -eq 2 ]; then
        valid_port "$2" || die "bad port: $2"
        try_start "$dir" "$2" || {
            tail -n 5 "$dir/redis.log" >&2 || true
            die "port $2 is in use"
        }
        port="$2"
    else
        need_python3
        for attempt in 1 2 3 4 5; do
            port="$(free_ports 1)"
            if try_start "$dir" "$port"; then
                break
            fi
            log "port $port was taken meanwhile (attempt $attempt); trying another"
            port=""
        done
        [ -n "$port" ] || die "could not bind a free port after 5 attempts"
    fi
    echo "$port" >"$dir/port"
    log "redis up on 127.0.0.1:$port (pid $(cat "$dir/redis.pid"), dir $dir)"
    echo "$port"
}

cmd_stop() {
    local dir pid
    [ $# -eq 1 ] || usage
    [ -d "$1" ] || { log "no directory $1: nothing to stop"; return 0; }
    dir="$(cd -- "$1" && pwd -P)"
    if [ ! -s "$dir/redis.pid" ]; then
        log "no pidfile in $dir: nothing to stop"
        return 0
    fi
    pid="$(cat "$dir/redis.pid")"
    # With --save '' a SIGTERM makes Redis exit at once without writing a dump.
    stop_pid "$pid" "$dir" redis 10
    rm -f "$dir/redis.pid"
    log "redis stopped ($dir)"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    install) [ $# -eq 0 ] || usage; cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    -h|--help|help) usage ;;
    *) log "unknown subcommand: $sub"; usage ;;
esac
