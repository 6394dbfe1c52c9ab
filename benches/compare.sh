#!/usr/bin/env bash
# Runs one loadgen scenario against Aviary (single node), Aviary (the local cluster
# of deploy/dev/cluster.sh), Prosody and ejabberd, one after another, each started
# fresh with the same users, domain and settings, and prints a table of the figures
# with ratios to Aviary (single node). benches/README.md documents every setting.
#
#   benches/compare.sh SCENARIO [LOADGEN FLAGS...]
#   e.g. benches/compare.sh chat --users 1000 --rate 100 --duration 20s
#        benches/compare.sh idle --users 2000 --duration 10s
#
# Environment:
#   TARGETS   servers to run, in order (default "aviary cluster prosody ejabberd")
#   TLS       none (default: PLAIN-capable plaintext streams) or starttls (one
#             self-signed ECDSA P-256 certificate for localhost, used by all)
#   OUT       directory for configurations, logs and JSON (default: a new temp dir)
#   CARGO_TARGET_DIR  where to build aviary and loadgen (default: target/)
#
# Prosody and ejabberd are installed from Debian packages (apt-get) if missing;
# their packaged services are not used (each runs from a config in OUT).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TARGETS="${TARGETS:-aviary cluster prosody ejabberd}"
TLS="${TLS:-none}"
DOMAIN=localhost
PASSWORD=password
PORT_AVIARY=25222
PORT_PROSODY=25322
PORT_EJABBERD=25422
EJABBERD_NODE=ejabberd-bench@localhost

log() { printf 'compare: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[ $# -ge 1 ] || die "usage: $0 SCENARIO [LOADGEN FLAGS...]"
SCENARIO="$1"
shift
LOADGEN_ARGS=("$@")
case "$TLS" in
    none) TLS_ARGS=(--tls none) ;;
    starttls) TLS_ARGS=(--tls starttls --insecure) ;;
    *) die "TLS must be none or starttls" ;;
esac

# The users loadgen will use: --users N (default 100) and --user-prefix P.
USERS=100
PREFIX=user
for ((i = 0; i < ${#LOADGEN_ARGS[@]}; i++)); do
    case "${LOADGEN_ARGS[$i]}" in
        --users) USERS="${LOADGEN_ARGS[$((i + 1))]}" ;;
        --users=*) USERS="${LOADGEN_ARGS[$i]#--users=}" ;;
        --user-prefix) PREFIX="${LOADGEN_ARGS[$((i + 1))]}" ;;
        --user-prefix=*) PREFIX="${LOADGEN_ARGS[$i]#--user-prefix=}" ;;
        --servers* | --pid* | --json* | --tls* | --domain* | --password*)
            die "compare.sh sets ${LOADGEN_ARGS[$i]%%=*} itself"
            ;;
    esac
done

OUT="${OUT:-$(mktemp -d /tmp/aviary-compare.XXXXXX)}"
mkdir -p "$OUT"
chmod 755 "$OUT"
log "output in $OUT"
AVIARY="$TARGET_DIR/release/aviary"
LOADGEN="$TARGET_DIR/release/loadgen"

build() {
    log "building aviary and loadgen (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release -p aviary -p aviary-benches >&2)
}

install_peers() {
    local missing=()
    case " $TARGETS " in *" prosody "*) command -v prosody >/dev/null || missing+=(prosody) ;; esac
    case " $TARGETS " in *" ejabberd "*) command -v ejabberdctl >/dev/null || missing+=(ejabberd) ;; esac
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} from the Debian packages"
        apt-get install -y "${missing[@]}" >&2
    fi
}

users_file() {
    local i
    for ((i = 0; i < USERS; i++)); do printf '%s%d %s\n' "$PREFIX" "$i" "$PASSWORD"; done >"$OUT/users.txt"
}

certificate() {
    mkdir -p "$OUT/cert"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN" \
        -keyout "$OUT/cert/key.pem" -out "$OUT/cert/cert.pem" 2>/dev/null
    cat "$OUT/cert/cert.pem" "$OUT/cert/key.pem" >"$OUT/cert/combined.pem"
    chmod 644 "$OUT/cert/"*.pem
}

# wait_port PORT — until something accepts on 127.0.0.1:PORT (60 s at most).
wait_port() {
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# register PORT — in-band registration (XEP-0077) of every user, 16 at a time.
register() {
    python3 - "$1" "$DOMAIN" "$OUT/users.txt" <<'EOF'
import socket, sys
from concurrent.futures import ThreadPoolExecutor
port, domain, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
users = [l.split() for l in open(path) if l.strip()]
def until(s, marks):
    buf = b""
    while not any(m in buf for m in marks):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    return buf
def reg(u):
    name, pw = u
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(("<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams'>" % domain).encode())
    until(s, [b"</stream:features>"])
    s.sendall(("<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>%s</username>"
               "<password>%s</password></query></iq>" % (name, pw)).encode())
    r = until(s, [b"</iq>", b"/>"])
    while b"id='reg'" not in r and b'id="reg"' not in r:
        more = until(s, [b"</iq>"])
        if not more:
            break
        r += more
    s.sendall(b"</stream:stream>")
    s.close()
    ok = b"type='result'" in r or b'type="result"' in r or b"conflict" in r
    return ok, r
with ThreadPoolExecutor(16) as ex:
    bad = [(u[0], r[:300]) for u, (ok, r) in zip(users, ex.map(reg, users)) if not ok]
if bad:
    sys.exit("registration failed for %d users, e.g. %s: %r" % (len(bad), bad[0][0], bad[0][1]))
EOF
}

# run_loadgen NAME SERVERS PIDS — runs the scenario; JSON in OUT/NAME.json.
run_loadgen() {
    local name="$1" servers="$2" pids="$3"
    log "$name: loadgen $SCENARIO ${LOADGEN_ARGS[*]}"
    "$LOADGEN" --scenario "$SCENARIO" --servers "$servers" --domain "$DOMAIN" \
        --password "$PASSWORD" --pid "$pids" "${TLS_ARGS[@]}" "${LOADGEN_ARGS[@]}" \
        --json "$OUT/$name.json" 2>&1 | tee "$OUT/$name.summary" >&2
}

# stop_pid PID — SIGTERM, then SIGKILL after 20 s.
stop_pid() {
    local pid="$1" deadline=$((SECONDS + 20))
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

aviary_tls_section() {
    [ "$TLS" = starttls ] || return 0
    printf '[tls]\ncertificate = "%s"\nkey = "%s"\n' "$OUT/cert/cert.pem" "$OUT/cert/key.pem"
}

run_aviary() {
    local dir="$OUT/aviary" pid
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/aviary.toml" <<EOF
[server]
domains = ["$DOMAIN"]
data_dir = "$dir/data"
[c2s]
listen = ["127.0.0.1:$PORT_AVIARY"]
listen_tls = []
require_tls = false
allow_insecure_plain = true
[auth]
scram_iterations = 4096
max_failures_per_account = 0
[admin]
enabled = false
[log]
level = "error"
$(aviary_tls_section)
EOF
    "$AVIARY" --config "$dir/aviary.toml" user import "$OUT/users.txt" >&2
    "$AVIARY" --config "$dir/aviary.toml" serve >"$dir/log" 2>&1 &
    pid=$!
    wait_port "$PORT_AVIARY" || die "aviary did not start (see $dir/log)"
    run_loadgen aviary "127.0.0.1:$PORT_AVIARY" "$pid" || true
    stop_pid "$pid"
}

run_cluster() {
    local dir="$OUT/cluster" endpoints pids s
    # The cluster's nodes read these on top of the configuration cluster.sh writes.
    export AVIARY__C2S__REQUIRE_TLS=false AVIARY__C2S__ALLOW_INSECURE_PLAIN=true
    export AVIARY__AUTH__MAX_FAILURES_PER_ACCOUNT=0 AVIARY__LOG__LEVEL=error
    export AVIARY__ADMIN__ENABLED=false AVIARY_BIN="$AVIARY"
    if [ "$TLS" = starttls ]; then
        export AVIARY__TLS__CERTIFICATE="$OUT/cert/cert.pem" AVIARY__TLS__KEY="$OUT/cert/key.pem"
    fi
    "$ROOT/deploy/dev/cluster.sh" up "$dir" >&2
    endpoints="$("$ROOT/deploy/dev/cluster.sh" endpoints "$dir")"
    pids="$({ "$ROOT/deploy/dev/cluster.sh" pids edge "$dir"; "$ROOT/deploy/dev/cluster.sh" pids session "$dir"; } | paste -sd, -)"
    # Accounts go straight into the cluster's CQL store.
    "$AVIARY" --config "$dir/s1/aviary.toml" user import "$OUT/users.txt" >&2
    run_loadgen cluster "$endpoints" "$pids" || true
    "$ROOT/deploy/dev/cluster.sh" down "$dir" >&2 || true
    for s in AVIARY__C2S__REQUIRE_TLS AVIARY__C2S__ALLOW_INSECURE_PLAIN AVIARY__AUTH__MAX_FAILURES_PER_ACCOUNT \
        AVIARY__LOG__LEVEL AVIARY__ADMIN__ENABLED AVIARY__TLS__CERTIFICATE AVIARY__TLS__KEY; do
        unset "$s"
    done
}

prosody_config() {
    local dir="$1"
    cat >"$dir/prosody.cfg.lua" <<EOF
-- Generated by benches/compare.sh; see benches/README.md.
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
run_as_root = true
network_backend = "epoll"
log = { error = "$dir/error.log" }
c2s_ports = { $PORT_PROSODY }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }
s2s_ports = { }
legacy_ssl_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "register", "offline", "version", "time" }
modules_disabled = { "s2s", "s2s_auth_certs" }
authentication = "internal_hashed"
default_iteration_count = 4096
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
registration_throttle_max = 1000000
c2s_stanza_size_limit = 262144
certificates = "$dir/certs"
VirtualHost "$DOMAIN"
    ssl = { certificate = "$OUT/cert/cert.pem", key = "$OUT/cert/key.pem" }
EOF
}

run_prosody() {
    local dir="$OUT/prosody" pid
    rm -rf "$dir"
    mkdir -p "$dir/data" "$dir/certs"
    prosody_config "$dir"
    ulimit -n "$(ulimit -Hn)"
    prosody --config "$dir/prosody.cfg.lua" -F >"$dir/stdout" 2>&1 &
    pid=$!
    wait_port "$PORT_PROSODY" || die "prosody did not start (see $dir/)"
    log "prosody: registering $USERS users"
    register "$PORT_PROSODY"
    # Measure a fresh process, not one warmed up by the registrations.
    stop_pid "$pid"
    prosody --config "$dir/prosody.cfg.lua" -F >>"$dir/stdout" 2>&1 &
    pid=$!
    wait_port "$PORT_PROSODY" || die "prosody did not restart (see $dir/)"
    run_loadgen prosody "127.0.0.1:$PORT_PROSODY" "$pid" || true
    stop_pid "$pid"
}

ejabberd_config() {
    local dir="$1"
    cat >"$dir/ejabberd.yml" <<EOF
# Generated by benches/compare.sh; see benches/README.md.
hosts: ["$DOMAIN"]
loglevel: error
certfiles: ["$OUT/cert/combined.pem"]
define_macro: {}
default_db: mnesia
auth_method: internal
auth_password_format: scram
registration_timeout: infinity
shaper: {}
shaper_rules:
  max_user_sessions: 64
  max_user_offline_messages: 1000
  c2s_shaper: none
acl:
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  c2s:
    allow: all
  register:
    allow: all
listen:
  -
    port: $PORT_EJABBERD
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 1024
    starttls: true
    starttls_required: false
    max_stanza_size: 262144
    shaper: none
    access: c2s
modules:
  mod_disco: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_register:
    access: register
    ip_access: all
  mod_roster:
    versioning: true
  mod_version: {}
EOF
}

# Our own ejabberdctl.cfg: Debian's sets EJABBERD_CONFIG_PATH to /etc/ejabberd.
ejabberdctl_config() {
    local dir="$1"
    cat >"$dir/ejabberdctl.cfg" <<EOF
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH=$dir/ejabberd.pid
# runuser's PAM session resets the soft open-file limit to 1,024.
ulimit -n "\$(ulimit -Hn)"
EOF
    cp /etc/ejabberd/inetrc "$dir/inetrc"
}

# Run as the ejabberd user directly, so that ejabberdctl does not re-run itself
# through su.
ejabberdctl_() {
    local dir="$OUT/ejabberd"
    runuser -u ejabberd -- ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" \
        --ctl-config "$dir/ejabberdctl.cfg" --logs "$dir/logs" --spool "$dir/spool" \
        --node "$EJABBERD_NODE" "$@"
}

run_ejabberd() {
    local dir="$OUT/ejabberd" pid
    rm -rf "$dir"
    mkdir -p "$dir/logs" "$dir/spool"
    ejabberd_config "$dir"
    ejabberdctl_config "$dir"
    chown -R ejabberd: "$dir"
    ejabberdctl_ start || die "ejabberd did not start (see $dir/logs)"
    ejabberdctl_ started || die "ejabberd did not start (see $dir/logs)"
    wait_port "$PORT_EJABBERD" || die "ejabberd did not start (see $dir/logs)"
    log "ejabberd: registering $USERS users"
    register "$PORT_EJABBERD"
    ejabberdctl_ stop >/dev/null
    ejabberdctl_ stopped
    ejabberdctl_ start || die "ejabberd did not restart (see $dir/logs)"
    ejabberdctl_ started || die "ejabberd did not restart (see $dir/logs)"
    wait_port "$PORT_EJABBERD" || die "ejabberd did not restart (see $dir/logs)"
    pid="$(cat "$dir/ejabberd.pid")"
    run_loadgen ejabberd "127.0.0.1:$PORT_EJABBERD" "$pid" || true
    ejabberdctl_ stop >/dev/null || true
    ejabberdctl_ stopped || true
}

table() {
    python3 - "$OUT" "$TARGETS" <<'EOF'
import json, os, sys
out, targets = sys.argv[1], sys.argv[2].split()
runs = {}
for t in targets:
    p = os.path.join(out, t + ".json")
    if os.path.exists(p):
        runs[t] = json.load(open(p))
if not runs:
    sys.exit("no results")
def g(r, *path):
    for k in path:
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r
rows = [
    ("logins ok", ("logins", "ok"), "{:.0f}", None),
    ("logins/s", ("logins", "per_sec"), "{:.0f}", "hi"),
    ("auth p50 ms", ("logins", "auth_ms", "p50_ms"), "{:.2f}", "lo"),
    ("auth p99 ms", ("logins", "auth_ms", "p99_ms"), "{:.2f}", "lo"),
    ("KiB / idle session", ("server", "kib_per_idle_session"), "{:.1f}", "lo"),
    ("msgs sent", ("messages", "sent"), "{:.0f}", None),
    ("msgs delivered", ("messages", "delivered"), "{:.0f}", None),
    ("msgs lost", ("messages", "lost"), "{:.0f}", None),
    ("msgs duplicated", ("messages", "duplicated"), "{:.0f}", None),
    ("delivery p50 ms", ("messages", "delivery_ms", "p50_ms"), "{:.2f}", "lo"),
    ("delivery p99 ms", ("messages", "delivery_ms", "p99_ms"), "{:.2f}", "lo"),
    ("delivery p99.9 ms", ("messages", "delivery_ms", "p999_ms"), "{:.2f}", "lo"),
    ("CPU-s / 1000 delivered", ("server", "cpu_s_per_1000_delivered"), "{:.3f}", "lo"),
    ("server CPU-s, login", ("server", "cpu_s_login"), "{:.2f}", "lo"),
    ("CPU-ms / login", ("server", "cpu_ms_per_login"), "{:.2f}", "lo"),
    ("presence delivered", ("presence", "delivered"), "{:.0f}", None),
    ("presence p99 ms", ("presence", "latency_ms", "p99_ms"), "{:.2f}", "lo"),
    ("drain s", ("drain", "drain_s"), "{:.2f}", "lo"),
    ("connections dropped", ("connections_dropped",), "{:.0f}", None),
]
names = list(runs)
base = runs.get("aviary")
print("| figure | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for label, path, fmt, _ in rows:
    vals = [g(runs[n], *path) for n in names]
    if all(v is None for v in vals):
        continue
    cells = []
    b = g(base, *path) if base else None
    for n, v in zip(names, vals):
        if v is None:
            cells.append("–")
            continue
        c = fmt.format(v)
        if n != "aviary" and isinstance(b, (int, float)) and b and _ is not None:
            c += " ({:.2f}×)".format(v / b)
        cells.append(c)
    print("| " + label + " | " + " | ".join(cells) + " |")
errs = {n: sum(runs[n].get("errors", {}).values()) for n in names}
print("| errors | " + " | ".join(str(errs[n]) for n in names) + " |")
EOF
}

build
install_peers
users_file
certificate
for t in $TARGETS; do
    case "$t" in
        aviary) run_aviary ;;
        cluster) run_cluster ;;
        prosody) run_prosody ;;
        ejabberd) run_ejabberd ;;
        *) die "unknown target $t" ;;
    esac
done
log "results ($SCENARIO ${LOADGEN_ARGS[*]}, TLS=$TLS); ratios are to aviary (single node)"
table | tee "$OUT/table.md"
