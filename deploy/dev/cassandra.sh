#!/usr/bin/env bash
# Private single-node Apache Cassandra 5.0 instances for Aviary's tests
# (a real CQL database; ScyllaDB itself cannot be installed on our machines).
#
#   cassandra.sh install           Java 17 (apt if missing) + cassandra-all and its
#                                  runtime jars from Maven Central into the cache
#   cassandra.sh start DIR [PORT]  start a node on 127.0.0.1 (native CQL port PORT,
#                                  or a free one), all state in DIR; waits until
#                                  CQL answers; prints the native port
#   cassandra.sh stop DIR          SIGTERM, then SIGKILL after a timeout
#   cassandra.sh cql DIR STMT...   run CQL statements against the node in DIR
#   cassandra.sh java              print the java binary that would be used
#
# Environment: CASSANDRA_VERSION (default 5.0.9), AVIARY_DEV_CACHE (default
# ~/.cache/aviary-dev), CASSANDRA_JAVA_HOME (a Java 11 or 17 to use),
# CASSANDRA_START_TIMEOUT (s, default 180), CASSANDRA_STOP_TIMEOUT (s, default 30),
# CASSANDRA_HEAP_MIN / CASSANDRA_HEAP_MAX (default 512m / 1g).
set -euo pipefail
LOG_TAG=cassandra
# shellcheck source=deploy/dev/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
LIB_DIR="$DEV_CACHE/cassandra-$CASSANDRA_VERSION/lib"

usage() {
    print_header "${BASH_SOURCE[0]}"
    exit 2
}

# java_major JAVA — print the feature release (8, 11, 17, 25...) of a java binary.
java_major() {
    local v
    v="$("$1" -XX:-UsePerfData -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
    case "$v" in
        1.*) v="${v#1.}" ;;
    esac
    printf '%s\n' "${v%%[.+-]*}"
}

# Cassandra 5.0 runs on Java 11 or 17 only: it refuses newer ones (the machine
# also has Temurin 25, which may be the default `java` or JAVA_HOME).
java_ok() {
    [ -x "$1" ] || return 1
    case "$(java_major "$1")" in
        11|17) return 0 ;;
    esac
    return 1
}

# find_java — print a java binary of release 17 (or 11), or return 1.
find_java() {
    local c
    for c in ${CASSANDRA_JAVA_HOME:+"$CASSANDRA_JAVA_HOME/bin/java"} \
             ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
             /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
             /usr/lib/jvm/*17*/bin/java \
             /usr/lib/jvm/*-17-*/bin/java \
             /usr/lib/jvm/*11*/bin/java; do
        if java_ok "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    if command -v java >/dev/null 2>&1; then
        c="$(readlink -f "$(command -v java)")"
        java_ok "$c" && { printf '%s\n' "$c"; return 0; }
    fi
    return 1
}

require_java() {
    find_java || die "no Java 17 (or 11) found in CASSANDRA_JAVA_HOME, JAVA_HOME or /usr/lib/jvm: run '$0 install'"
}

lib_complete() {
    [ -f "$LIB_DIR/.complete" ] && [ -f "$LIB_DIR/cassandra-all-$CASSANDRA_VERSION.jar" ] \
        && [ -f "$LIB_DIR/jamm-0.4.0.jar" ]
}

cmd_install() {
    local java jhome work out
    if ! java="$(find_java)"; then
        apt_install openjdk-17-jre-headless
        java="$(find_java)" || die "Java 17 still not found after installing openjdk-17-jre-headless"
    fi
    need_python3
    lib_complete && return 0

    command -v mvn >/dev/null 2>&1 || apt_install maven
    jhome="$(dirname "$(dirname "$java")")"
    log "fetching org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION and its runtime dependencies"
    mkdir -p "$(dirname "$LIB_DIR")"
    work="$(mktemp -d "$(dirname "$LIB_DIR")/fetch.XXXXXX")"
    # shellcheck disable=SC2064  # expand $work now
    trap "rm -rf '$work'" EXIT
    cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.aviary</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
    out="$work/mvn.log"
    if ! (cd "$work" && JAVA_HOME="$jhome" mvn -B -q -Dstyle.color=never \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$work/lib" >"$out" 2>&1); then
        tail -n 40 "$out" >&2
        die "maven could not fetch cassandra-all:$CASSANDRA_VERSION"
    fi
    # Harmless ERROR lines about system-scoped JMC/VisualVM jars have been seen
    # with some versions; a missing core jar is not harmless.
    grep -E '\[ERROR\]' "$out" >&2 || true
    [ -f "$work/lib/cassandra-all-$CASSANDRA_VERSION.jar" ] || die "cassandra-all jar missing after fetch"
    [ -f "$work/lib/jamm-0.4.0.jar" ] || die "jamm-0.4.0.jar missing after fetch (needed as -javaagent)"
    ls "$work/lib" >"$work/lib/.complete"
    rm -rf "$LIB_DIR"
    mv "$work/lib" "$LIB_DIR"
    log "installed $(wc -l <"$LIB_DIR/.complete") jars ($(du -sh "$LIB_DIR" | cut -f1)) in $LIB_DIR"
}

write_config() {
    # write_config DIR NATIVE STORAGE SSL_STORAGE CLUSTER
    local dir="$1" native="$2" storage="$3" ssl="$4" cluster="$5"
    # cassandra.yaml: 5.0 rejects unknown keys, so only current ones here.
    cat >"$dir/cassandra.yaml" <<YAML
# Generated by deploy/dev/cassandra.sh for a throwaway single test node.
cluster_name: '$cluster'
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage
ssl_storage_port: $ssl
native_transport_port: $native
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      # The port is explicit: a bare address would mean port 7000, and another
      # test node listening there would join this one into one cluster.
      - seeds: "127.0.0.1:$storage"
data_file_directories:
  - $dir/data/data
commitlog_directory: $dir/data/commitlog
saved_caches_directory: $dir/data/saved_caches
hints_directory: $dir/data/hints
cdc_raw_directory: $dir/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
auto_snapshot: false
memtable_allocation_type: heap_buffers
disk_access_mode: standard
concurrent_compactors: 1
hinted_handoff_enabled: false
# A new node, never part of a 4.x cluster: use 5.0 formats and messaging.
storage_compatibility_mode: NONE
YAML
    cat >"$dir/logback.xml" <<'XML'
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
XML
}

java_args() {
    # java_args DIR — the JVM command line (one argument per line).
    local dir="$1"
    cat <<ARGS
-Xms${CASSANDRA_HEAP_MIN:-512m}
-Xmx${CASSANDRA_HEAP_MAX:-1g}
-Xss256k
-XX:+UseG1GC
-XX:+ParallelRefProcEnabled
-XX:MaxTenuringThreshold=1
-XX:G1HeapRegionSize=16m
-XX:G1RSetUpdatingPauseTimePercent=5
-XX:MaxGCPauseMillis=300
-XX:InitiatingHeapOccupancyPercent=70
-XX:+PerfDisableSharedMem
-XX:+CrashOnOutOfMemoryError
-XX:ErrorFile=$dir/logs/hs_err_%p.log
-Djava.net.preferIPv4Stack=true
-Djava.io.tmpdir=$dir/tmp
-Djna.tmpdir=$dir/tmp
-Djdk.attach.allowAttachSelf=true
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports=java.sql/java.sql=ALL-UNNAMED
--add-exports=java.base/java.lang.ref=ALL-UNNAMED
--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens=java.base/java.lang.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens=java.base/jdk.internal.math=ALL-UNNAMED
--add-opens=java.base/jdk.internal.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/java.io=ALL-UNNAMED
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens=java.base/java.lang=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED
--add-opens=java.base/java.nio=ALL-UNNAMED
-javaagent:$LIB_DIR/jamm-0.4.0.jar
-Dcassandra.config=file://$dir/cassandra.yaml
-Dcassandra.storagedir=$dir/data
-Dcassandra.logdir=$dir/logs
-Dlogback.configurationFile=file://$dir/logback.xml
-Dcassandra-foreground=yes
-Dcassandra.triggers_dir=$dir/triggers
-Dcassandra.skip_wait_for_gossip_to_settle=0
-Dcassandra.ring_delay_ms=1000
-Dcassandra.superuser_setup_delay_ms=0
-Dcassandra.unsafesystem=true
-Dcassandra.skip_sync=true
-Dcassandra.shutdown_announce_in_ms=0
-Dcassandra.test.messagingService.nonGracefulShutdown=true
-cp
$LIB_DIR/*
org.apache.cassandra.service.CassandraDaemon
ARGS
}

# launch DIR JAVA — start the JVM in the background; print its pid.
launch() {
    local dir="$1" java="$2" args=()
    mapfile -t args < <(java_args "$dir")
    : >"$dir/logs/stdout.log"
    # setsid: own session, so a terminal's Ctrl-C/hang-up does not reach it;
    # `stop DIR` ends it. cwd is DIR (see pid_alive in lib.sh).
    (cd "$dir" && exec setsid "$java" "${args[@]}" >>"$dir/logs/stdout.log" 2>&1 </dev/null) &
    echo "$!"
}

log_tail() {
    local dir="$1"
    log "---- tail of $dir/logs/system.log"
    tail -n 40 "$dir/logs/system.log" >&2 2>/dev/null || true
    if [ -s "$dir/logs/stdout.log" ]; then
        log "---- tail of $dir/logs/stdout.log"
        tail -n 20 "$dir/logs/stdout.log" >&2 || true
    fi
}

# try_start DIR JAVA NATIVE STORAGE SSL — 0 ready; 1 a port was taken; dies otherwise.
try_start() {
    local dir="$1" java="$2" native="$3" storage="$4" ssl="$5"
    local timeout="${CASSANDRA_START_TIMEOUT:-180}" deadline pid version t0="$SECONDS"
    write_config "$dir" "$native" "$storage" "$ssl" "$(cat "$dir/cluster_name")"
    : >"$dir/logs/system.log"
    pid="$(launch "$dir" "$java")"
    echo "$pid" >"$dir/pid"
    deadline=$((SECONDS + timeout))
    while :; do
        if ! proc_running "$pid"; then
            if grep -qE 'Address already in use|BindException|Failed to bind port' \
                "$dir/logs/system.log" "$dir/logs/stdout.log" 2>/dev/null; then
                rm -f "$dir/pid"
                return 1
            fi
            log_tail "$dir"
            rm -f "$dir/pid"
            die "cassandra exited during start-up (see $dir/logs)"
        fi
        if version="$(python3 "$DEV_DIR/cqlping.py" --port "$native" --timeout 5 2>/dev/null)"; then
            log "cassandra $version up on 127.0.0.1:$native after $((SECONDS - t0))s (pid $pid, dir $dir)"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "CQL on 127.0.0.1:$native did not answer within ${timeout}s"
            log_tail "$dir"
            stop_pid "$pid" "$dir" cassandra 10 || true
            rm -f "$dir/pid"
            die "cassandra did not become ready"
        fi
        sleep 0.5
    done
}

ports_free() {
    python3 - "$@" <<'PY'
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", int(p)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}

cmd_start() {
    local dir java native storage ssl attempt ports
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    need_python3
    java="$(require_java)"
    lib_complete || die "cassandra $CASSANDRA_VERSION jars not in $LIB_DIR: run '$0 install'"
    dir="$(abs_dir "$1")"
    if [ -s "$dir/pid" ] && pid_alive "$(cat "$dir/pid")" "$dir"; then
        die "a node already runs in $dir (pid $(cat "$dir/pid")); stop it first"
    fi
    mkdir -p "$dir/data" "$dir/logs" "$dir/tmp" "$dir/triggers"
    # A per-directory cluster name: nodes of different tests can never merge.
    [ -s "$dir/cluster_name" ] || echo "aviary-dev-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')" >"$dir/cluster_name"
    if [ $# -eq 2 ]; then
        valid_port "$2" || die "bad port: $2"
        ports_free "$2" || die "port $2 is in use"
    fi
    for attempt in 1 2 3 4 5; do
        # Restarting a directory reuses its previous ports while they are free
        # (the node keeps its identity); otherwise pick fresh ones.
        if [ -s "$dir/ports" ] && read -r native storage ssl <"$dir/ports" \
            && [ "$attempt" -eq 1 ] && ports_free "$storage" "$ssl" \
            && { [ $# -eq 2 ] || ports_free "$native"; }; then
            :
        else
            ports="$(free_ports 3 | tr '\n' ' ')"
            read -r native storage ssl <<<"$ports"
        fi
        [ $# -eq 2 ] && native="$2"
        if try_start "$dir" "$java" "$native" "$storage" "$ssl"; then
            echo "$native $storage $ssl" >"$dir/ports"
            echo "$native" >"$dir/port"
            echo "$native"
            return 0
        fi
        log "a port ($native/$storage/$ssl) was taken meanwhile (attempt $attempt)"
        if [ $# -eq 2 ] && ! ports_free "$2"; then
            die "port $2 is in use"
        fi
    done
    log_tail "$dir"
    die "could not bind free ports after 5 attempts"
}

cmd_stop() {
    local dir pid
    [ $# -eq 1 ] || usage
    [ -d "$1" ] || { log "no directory $1: nothing to stop"; return 0; }
    dir="$(cd -- "$1" && pwd -P)"
    if [ ! -s "$dir/pid" ]; then
        log "no pid file in $dir: nothing to stop"
        return 0
    fi
    pid="$(cat "$dir/pid")"
    stop_pid "$pid" "$dir" cassandra "${CASSANDRA_STOP_TIMEOUT:-30}"
    rm -f "$dir/pid"
    log "cassandra stopped ($dir)"
}

cmd_cql() {
    local dir
    [ $# -ge 2 ] || usage
    dir="$1"; shift
    [ -s "$dir/port" ] || die "no node started in $dir"
    python3 "$DEV_DIR/cqlping.py" --port "$(cat "$dir/port")" --timeout 30 "$@"
}

[ $# -ge 1 ] || usage
sub="$1"; shift
case "$sub" in
    install) [ $# -eq 0 ] || usage; cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    cql) cmd_cql "$@" ;;
    java) require_java ;;
    -h|--help|help) usage ;;
    *) log "unknown subcommand: $sub"; usage ;;
esac
