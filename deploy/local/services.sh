#!/usr/bin/env bash
# Real Apache Kafka (KRaft) and Elasticsearch on this machine, without Docker.
#
#   deploy/local/services.sh up|down|status|logs|env [kafka|elasticsearch]
#
# One script for developers, tests and CI. Downloads come from Maven Central through Maven, once,
# into a cache outside the repository; the services run as plain Java processes bound to 127.0.0.1,
# with their configuration, data, pid files and logs in one run folder.
#
# Settings (environment, defaults in brackets):
#   BEARWATCH_CACHE            downloads                     [${XDG_CACHE_HOME:-~/.cache}/bearwatch]
#   BEARWATCH_RUN_DIR          config, data, pids, logs      [${TMPDIR:-/tmp}/bearwatch-services-<uid>]
#   BEARWATCH_KAFKA_PORT       Kafka PLAINTEXT listener      [19092]
#   BEARWATCH_KAFKA_CONTROLLER_PORT  KRaft controller        [19093]
#   BEARWATCH_ES_PORT          Elasticsearch HTTP            [19200]
#   BEARWATCH_ES_TRANSPORT_PORT  Elasticsearch transport     [19300]
#   BEARWATCH_KAFKA_VERSION    [4.3.1]     BEARWATCH_ES_VERSION  [9.2.4]
#   BEARWATCH_KAFKA_HEAP / BEARWATCH_ES_HEAP                 [1g / 1g]
#   ES_JAVA_HOME               a JDK 21+ for Elasticsearch   [newest one found under /usr/lib/jvm]
#   BEARWATCH_ES_USER          user Elasticsearch runs as when this script runs as root [bearwatch-es]
#   BEARWATCH_START_TIMEOUT    seconds to wait for readiness [180]
#
# The run folder defaults to a world-traversable place because Elasticsearch refuses to run as
# root: when this script runs as root, Elasticsearch runs as an unprivileged user who must be able
# to reach its files.
set -euo pipefail

KAFKA_VERSION=${BEARWATCH_KAFKA_VERSION:-4.3.1}
ES_VERSION=${BEARWATCH_ES_VERSION:-9.2.4}
LOG4J_VERSION=2.25.3
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
KAFKA_PORT=${BEARWATCH_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${BEARWATCH_KAFKA_CONTROLLER_PORT:-19093}
ES_PORT=${BEARWATCH_ES_PORT:-19200}
ES_TRANSPORT_PORT=${BEARWATCH_ES_TRANSPORT_PORT:-19300}
KAFKA_HEAP=${BEARWATCH_KAFKA_HEAP:-1g}
ES_HEAP=${BEARWATCH_ES_HEAP:-1g}
ES_USER=${BEARWATCH_ES_USER:-bearwatch-es}
START_TIMEOUT=${BEARWATCH_START_TIMEOUT:-180}
CACHE=${BEARWATCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bearwatch}
RUN_DIR=${BEARWATCH_RUN_DIR:-${TMPDIR:-/tmp}/bearwatch-services-$(id -u)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

KAFKA_LIB=$CACHE/kafka-$KAFKA_VERSION/lib
ES_ZIP=$CACHE/elasticsearch-$ES_VERSION.zip
ES_HOME=$RUN_DIR/elasticsearch-$ES_VERSION
KAFKA_RUN=$RUN_DIR/kafka
ES_RUN=$RUN_DIR/elasticsearch

die() { echo "services.sh: error: $*" >&2; exit 1; }
say() { echo "services.sh: $*" >&2; }

# --- prerequisites ---------------------------------------------------------------------------

java_major() {  # prints the major version of the java binary $1
  "$1" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}'
}

require_python() {
  command -v python3 >/dev/null || die "python3 is required (readiness checks use it)"
}

kafka_java() {
  local java=${JAVA_HOME:+$JAVA_HOME/bin/}java
  command -v "$java" >/dev/null || die "Java 17+ is required for Kafka and was not found (install a JDK or set JAVA_HOME)"
  local major; major=$(java_major "$java")
  [ "${major:-0}" -ge 17 ] || die "Kafka $KAFKA_VERSION needs Java 17+, but $java is Java ${major:-unknown}"
  echo "$java"
}

es_java_home() {
  if [ -n "${ES_JAVA_HOME:-}" ]; then
    local major; major=$(java_major "$ES_JAVA_HOME/bin/java")
    [ "${major:-0}" -ge 21 ] || die "ES_JAVA_HOME=$ES_JAVA_HOME is Java ${major:-unknown}; Elasticsearch $ES_VERSION needs 21+"
    echo "$ES_JAVA_HOME"; return
  fi
  local best="" best_major=0 home major
  for home in /usr/lib/jvm/* /usr/local/lib/jvm/* ${JAVA_HOME:-}; do
    [ -x "$home/bin/java" ] || continue
    major=$(java_major "$home/bin/java")
    if [ "${major:-0}" -gt "$best_major" ]; then best=$home; best_major=$major; fi
  done
  [ "$best_major" -ge 21 ] || die "Elasticsearch $ES_VERSION needs Java 21+; none found under /usr/lib/jvm (set ES_JAVA_HOME)"
  echo "$best"
}

require_maven() {
  command -v mvn >/dev/null || die "Maven (mvn) is required to fetch Kafka and Elasticsearch from Maven Central"
}

# --- downloads (once, cached) ----------------------------------------------------------------

fetch_kafka() {
  [ -f "$KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar" ] && return
  require_maven
  say "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIB"
  local tmp=$KAFKA_LIB.partial log=$CACHE/fetch-kafka.log
  rm -rf "$tmp"; mkdir -p "$tmp"
  if ! mvn -B -q -U -f "$HERE/kafka-pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "download of Kafka $KAFKA_VERSION failed (full log: $log)"
  fi
  mv "$tmp" "$KAFKA_LIB"
}

fetch_es() {
  [ -f "$ES_ZIP" ] && return
  require_maven
  say "fetching Elasticsearch $ES_VERSION (integ-test-zip) from Maven Central into $CACHE"
  local tmp=$CACHE/es-download.partial log=$CACHE/fetch-elasticsearch.log
  rm -rf "$tmp"; mkdir -p "$tmp"
  if ! mvn -B -q -U "$DEPENDENCY_PLUGIN:copy" \
      -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
      -DoutputDirectory="$tmp" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "download of Elasticsearch $ES_VERSION failed (full log: $log)"
  fi
  mv "$tmp/elasticsearch-$ES_VERSION.zip" "$ES_ZIP"
  rm -rf "$tmp"
}

# --- process bookkeeping ---------------------------------------------------------------------

# A pid file is trusted only if that process is still ours: its command line carries this run
# folder, so a recycled pid is never signalled.
our_pid() {  # prints the pid recorded for service $1 if that process is alive and ours
  local file=$RUN_DIR/$1.pid pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$RUN_DIR" || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_free_port() {  # $1 port, $2 what
  if port_open "$1"; then
    die "port $1 ($2) on 127.0.0.1 is taken by another process; stop it or choose another port (see the settings at the top of $0)"
  fi
}

kafka_ready() {
  python3 "$HERE/kafka_metadata_probe.py" 127.0.0.1 "$KAFKA_PORT" >/dev/null 2>&1
}

es_health() {  # prints green/yellow/red, or fails
  python3 - "$ES_PORT" <<'PY'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/_cluster/health?timeout=2s"
with urllib.request.urlopen(url, timeout=5) as r:
    print(json.load(r)["status"])
PY
}

es_ready() {
  local status; status=$(es_health 2>/dev/null) || return 1
  [ "$status" = green ] || [ "$status" = yellow ]
}

wait_until() {  # $1 name, $2 check function, $3 pid; fails early if the process dies
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$2"; do
    if ! our_pid "$1" >/dev/null; then
      tail -n 30 "$RUN_DIR/$1.out" >&2 2>/dev/null || true
      die "$1 exited during start-up; see $RUN_DIR/$1.out and the logs under $RUN_DIR/$1/"
    fi
    [ $SECONDS -lt "$deadline" ] || die "$1 did not become ready within ${START_TIMEOUT}s; see $RUN_DIR/$1.out"
    sleep 0.5
  done
}

# --- Kafka -----------------------------------------------------------------------------------

kafka_config() {
  mkdir -p "$KAFKA_RUN/data" "$KAFKA_RUN/logs"
  cat >"$KAFKA_RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
log.dirs=$KAFKA_RUN/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$KAFKA_RUN/log4j2.properties" <<EOF
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $KAFKA_RUN/logs/server.log
appender.file.filePattern = $KAFKA_RUN/logs/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.stderr.ref = stderr
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
EOF
}

kafka_format() {  # once per data folder
  [ -f "$KAFKA_RUN/data/meta.properties" ] && return
  local java=$1 cluster_id
  cluster_id=$(python3 -c '
import base64, uuid
while True:
    c = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if "-" not in c:
        print(c); break')
  "$java" -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$KAFKA_RUN/log4j2.properties" \
    kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_RUN/server.properties" \
    >"$KAFKA_RUN/format.log" 2>&1 || { cat "$KAFKA_RUN/format.log" >&2; die "formatting Kafka storage failed"; }
}

kafka_up() {
  if our_pid kafka >/dev/null; then say "kafka already running (pid $(our_pid kafka))"; return; fi
  local java; java=$(kafka_java)
  require_free_port "$KAFKA_PORT" "Kafka"
  require_free_port "$KAFKA_CONTROLLER_PORT" "Kafka controller"
  fetch_kafka
  kafka_config
  kafka_format "$java"
  local t0=$SECONDS
  # setsid: the broker must outlive this script and the shell that ran it.
  setsid "$java" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_RUN/log4j2.properties" -Dbearwatch.run="$RUN_DIR" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_RUN/server.properties" \
    >"$RUN_DIR/kafka.out" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/kafka.pid"
  wait_until kafka kafka_ready
  say "kafka $KAFKA_VERSION ready in $((SECONDS - t0))s (pid $(our_pid kafka))"
}

# --- Elasticsearch ---------------------------------------------------------------------------

es_user_setup() {  # prints the user Elasticsearch runs as
  if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
  if ! id "$ES_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" \
      || die "could not create the system user $ES_USER (Elasticsearch refuses to run as root)"
  fi
  echo "$ES_USER"
}

es_config() {  # $1 user
  if [ ! -x "$ES_HOME/bin/elasticsearch" ]; then
    command -v unzip >/dev/null || die "unzip is required to unpack Elasticsearch"
    rm -rf "$ES_HOME.partial"; mkdir -p "$ES_HOME.partial"
    unzip -q "$ES_ZIP" -d "$ES_HOME.partial"   # unzip keeps the exec bits
    mv "$ES_HOME.partial/elasticsearch-$ES_VERSION" "$ES_HOME"; rmdir "$ES_HOME.partial"
  fi
  mkdir -p "$ES_RUN/config" "$ES_RUN/data" "$ES_RUN/logs" "$ES_RUN/tmp"
  cp -rn "$ES_HOME"/config/. "$ES_RUN/config/"
  # Only settings of modules this distribution has: unknown settings are fatal.
  cat >"$ES_RUN/config/elasticsearch.yml" <<EOF
cluster.name: bearwatch-local
node.name: bearwatch-local-1
discovery.type: single-node
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
path.data: $ES_RUN/data
path.logs: $ES_RUN/logs
xpack.security.enabled: false
cluster.routing.allocation.disk.watermark.low: 1b
cluster.routing.allocation.disk.watermark.high: 1b
cluster.routing.allocation.disk.watermark.flood_stage: 1b
EOF
  chmod 755 "$RUN_DIR"
  [ "$1" = "$(id -un)" ] || chown -R "$1" "$ES_RUN"
}

es_single_node_defaults() {
  # One node holds no replicas: a template makes every new index start green.
  python3 - "$ES_PORT" <<'PY'
import json, sys, urllib.request
body = {"index_patterns": ["*"], "priority": 0,
        "template": {"settings": {"number_of_replicas": 0}}}
req = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/_index_template/bearwatch-local-single-node",
    data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=10).read()
PY
}

es_up() {
  if our_pid elasticsearch >/dev/null; then say "elasticsearch already running (pid $(our_pid elasticsearch))"; return; fi
  local java_home user; java_home=$(es_java_home)
  require_free_port "$ES_PORT" "Elasticsearch HTTP"
  require_free_port "$ES_TRANSPORT_PORT" "Elasticsearch transport"
  fetch_es
  user=$(es_user_setup)
  es_config "$user"
  local t0=$SECONDS
  local -a as_user=()
  [ "$user" = "$(id -un)" ] || as_user=(runuser -u "$user" --)
  setsid "${as_user[@]}" env ES_JAVA_HOME="$java_home" ES_PATH_CONF="$ES_RUN/config" \
    ES_TMPDIR="$ES_RUN/tmp" ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP -Dbearwatch.run=$RUN_DIR" \
    "$ES_HOME/bin/elasticsearch" >"$RUN_DIR/elasticsearch.out" 2>&1 </dev/null &
  local launcher=$!
  # The launcher (runuser, then the CLI) is not the server: record the server JVM's pid.
  local deadline=$((SECONDS + 60)) pid=""
  while [ -z "$pid" ] && [ $SECONDS -lt $deadline ]; do
    pid=$(pgrep -f -- "-Dbearwatch.run=$RUN_DIR.*org.elasticsearch.bootstrap.Elasticsearch" | head -n 1 || true)
    if [ -z "$pid" ] && ! kill -0 "$launcher" 2>/dev/null; then
      tail -n 30 "$RUN_DIR/elasticsearch.out" >&2 || true
      die "elasticsearch exited during start-up; see $RUN_DIR/elasticsearch.out and $ES_RUN/logs/"
    fi
    [ -n "$pid" ] || sleep 0.3
  done
  [ -n "$pid" ] || die "elasticsearch server process did not appear; see $RUN_DIR/elasticsearch.out"
  echo "$pid" >"$RUN_DIR/elasticsearch.pid"
  wait_until elasticsearch es_ready
  es_single_node_defaults
  say "elasticsearch $ES_VERSION ready in $((SECONDS - t0))s (pid $pid, health $(es_health))"
}

# --- commands --------------------------------------------------------------------------------

stop_service() {  # $1 name
  local pid
  if ! pid=$(our_pid "$1"); then
    rm -f "$RUN_DIR/$1.pid"; say "$1 not running"; return
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.3; done
  if kill -0 "$pid" 2>/dev/null; then say "$1 (pid $pid) ignored SIGTERM for 60s; sending SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$RUN_DIR/$1.pid"
  say "$1 stopped (pid $pid)"
}

print_env() {
  echo "BEARWATCH_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
  echo "BEARWATCH_ES_URL=http://127.0.0.1:$ES_PORT"
}

status() {
  local rc=0 pid
  if pid=$(our_pid kafka); then
    if kafka_ready; then echo "kafka: running, ready (pid $pid, 127.0.0.1:$KAFKA_PORT)"
    else echo "kafka: running but not answering metadata requests (pid $pid)"; rc=1; fi
  else echo "kafka: stopped"; rc=1; fi
  if pid=$(our_pid elasticsearch); then
    local health; health=$(es_health 2>/dev/null) || health="not answering"
    echo "elasticsearch: running, health $health (pid $pid, http://127.0.0.1:$ES_PORT)"
    [ "$health" = green ] || [ "$health" = yellow ] || rc=1
  else echo "elasticsearch: stopped"; rc=1; fi
  return $rc
}

logs() {
  local which=${1:-all}
  if [ "$which" = all ] || [ "$which" = kafka ]; then
    echo "== kafka: $KAFKA_RUN/logs/server.log"; tail -n 50 "$KAFKA_RUN/logs/server.log" 2>/dev/null || echo "(none)"
  fi
  if [ "$which" = all ] || [ "$which" = elasticsearch ]; then
    echo "== elasticsearch: $ES_RUN/logs/"; tail -n 50 "$ES_RUN/logs/bearwatch-local.log" 2>/dev/null || echo "(none)"
  fi
}

main() {
  local cmd=${1:-} which=${2:-all}
  case "$which" in all|kafka|elasticsearch) ;; *) die "unknown service '$which' (kafka or elasticsearch)";; esac
  mkdir -p "$CACHE" "$RUN_DIR"
  case "$cmd" in
    up)
      require_python
      if [ "$which" != elasticsearch ]; then kafka_up; fi
      if [ "$which" != kafka ]; then es_up; fi
      print_env ;;
    down)
      if [ "$which" != elasticsearch ]; then stop_service kafka; fi
      if [ "$which" != kafka ]; then stop_service elasticsearch; fi ;;
    status) require_python; status ;;
    logs) logs "$which" ;;
    env) print_env ;;
    *) echo "usage: $0 up|down|status|logs|env [kafka|elasticsearch]" >&2; exit 2 ;;
  esac
}

main "$@"
