# shellcheck shell=bash
# Helpers shared by the deploy/dev scripts. Sourced, never executed.
# All human-readable output goes to stderr: stdout is reserved for the one
# machine-readable line (a port, env lines) that each `start`/`up` prints.

# Directory holding these scripts (absolute).
DEV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
DEV_CACHE="${AVIARY_DEV_CACHE:-${HOME:-/root}/.cache/aviary-dev}"

log() { printf '%s: %s\n' "${LOG_TAG:-aviary-dev}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${LOG_TAG:-aviary-dev}" "$*" >&2; exit 1; }

# print_header FILE — print a script's leading comment block (its usage text).
print_header() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1" >&2
}

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    # apt_install PKG... — non-interactive, runs `apt-get update` once per script
    # run (a fresh machine has empty package lists).
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
            || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    local out
    out="$(mktemp)"
    if ! as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        rm -f "$out"
        die "apt-get install $* failed"
    fi
    rm -f "$out"
}

need_python3() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
}

# abs_dir DIR — create DIR if needed and print its absolute path.
abs_dir() {
    [ -n "${1:-}" ] || die "missing DIR argument"
    mkdir -p -- "$1" || die "cannot create directory $1"
    (cd -- "$1" && pwd -P)
}

# free_ports N — print N distinct free TCP ports on 127.0.0.1, one per line.
free_ports() {
    python3 "$DEV_DIR/freeport.py" "${1:-1}" || die "could not find free ports"
}

valid_port() {
    case "${1:-}" in
        ''|*[!0-9]*) return 1 ;;
    esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

# proc_running PID — true if PID exists and is not a zombie (a daemon whose
# parent exited is reaped by init, which may take a moment or, on machines
# whose pid 1 does not reap, never happen).
proc_running() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
    [ "$state" != Z ]
}

# pid_alive PID DIR — true if PID runs and belongs to the instance in DIR: its
# working directory is DIR or its command line mentions DIR (guards against
# acting on a recycled pid; Redis rewrites its command line, hence the cwd).
pid_alive() {
    local pid="$1" dir="$2"
    [ -n "$pid" ] || return 1
    proc_running "$pid" || return 1
    [ -e "/proc/$pid" ] || return 0
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$dir" ] && return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

# stop_pid PID DIR NAME TIMEOUT — SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
    local pid="$1" dir="$2" name="$3" timeout="$4" deadline
    pid_alive "$pid" "$dir" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while pid_alive "$pid" "$dir"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$name (pid $pid) still running after ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while pid_alive "$pid" "$dir"; do
                [ "$SECONDS" -lt "$deadline" ] || die "$name (pid $pid) survived SIGKILL"
                sleep 0.1
            done
            return 0
        fi
        sleep 0.2
    done
}
