#!/usr/bin/env bash
# Apache Kafka as Brook's performance peer: same machine, same run, same tools.
#
#   0. ceilings.sh (O_DIRECT write bw, fdatasync latency, loopback TCP) in the file
#      system that holds the brokers' data dirs
#   then, test by test, the three brokers one after the other, each test against a
#   FRESH broker (empty data dir, free port), so every pair of figures is minutes apart:
#     brook        target/release/brook (private copy `bkd`) --shards 2 --default-partitions 8;
#                  its default durability: fdatasync before acks=1/all answers
#     kafka        Apache Kafka 4.4 (ci/tests/apache_kafka.py: KRaft combined mode, one node),
#                  heap -Xmx1G -Xms1G + the G1 flags of Kafka's scripts, num.partitions=8,
#                  Kafka's defaults: acks from the page cache, no fsync
#     kafka-fsync  the same with log.flush.interval.messages=1 (fsync on the append path
#                  before the ack: the setting comparable to Brook's default)
#   tests (8 partitions, acks=all, no compression, closed loop unless said):
#     bb-100, bb-1024   brook-bench --mode produce, 100 B / 1 KiB (linger 1, batch 1 MiB)
#     pt-100, pt-1024   kafka-producer-perf-test (ci/kafka-tool), linger.ms=5,
#                       batch.size=1048576; it has no duration option, so it is stopped
#                       after WARM + DUR of its 1-second report lines, and its figures are
#                       those lines' (records/s, avg and max latency), warm-up lines skipped
#     rdk-100           rdkafka_performance (librdkafka 2.3.0), linger.ms=5, batch.size=1048576;
#                       stopped with SIGINT after WARM + DUR s, its summary covers the whole run
#     e2e-100           brook-bench --mode both --rate R, 100 B (open loop, p50/p99/p99.9/max)
#   Every topic is created first with kafka-topics (8 partitions, RF 1) on every broker.
#   CPU of every process with pidstat (and mpstat for the machine) during each run.
# Only PIDs started here are signalled. Every run is bounded in time.
# Results: perf-scripts/results/<stamp>-kafka-peer/ (results.jsonl, logs, table.txt).
#
# Usage: kafka-peer.sh [--duration 20] [--rate 200000] [--wait-idle SECS]
#                      [--skip-ceilings] [--brokers brook,kafka,kafka-fsync]
#                      [--tests bb-100,bb-1024,pt-100,pt-1024,rdk-100,e2e-100] [--heap 1G]
#   --rate: the e2e test's fixed rate (records/s of 100 B) for all three brokers. If the
#           lowest brook-bench 100 B maximum measured in this run is below 2 x R, R is
#           lowered to half of it (so no broker runs above half its maximum).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
DUR=20; RATE=200000; WAIT_IDLE=0; SKIP_CEIL=0; HEAP=1G; WARM=3
BROKERS="brook,kafka,kafka-fsync"; TESTS="bb-100,bb-1024,pt-100,pt-1024,rdk-100,e2e-100"
while (($#)); do
  case "$1" in
    --duration) DUR="$2"; shift 2;;
    --rate) RATE="$2"; shift 2;;
    --wait-idle) WAIT_IDLE="$2"; shift 2;;
    --skip-ceilings) SKIP_CEIL=1; shift;;
    --brokers) BROKERS="$2"; shift 2;;
    --tests) TESTS="$2"; shift 2;;
    --heap) HEAP="$2"; shift 2;;
    -h|--help) sed -n '2,35p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
((DUR >= 1 && DUR <= 600)) || { echo "--duration 1..600" >&2; exit 2; }
((WAIT_IDLE <= 900)) || { echo "--wait-idle at most 900 s" >&2; exit 2; }

bk_apt fio:fio iperf3:iperf3 mpstat:sysstat python3:python3 ss:iproute2 kcat:kcat java:openjdk-17-jre-headless
bk_build
JARS="$ROOT/ci/.lab/jars"
[[ -d "$JARS" ]] || "$ROOT/ci/setup.sh"
PERF="$HERE/.build/rdkafka_performance"
RDK_WHY=""
if [[ ",$TESTS," == *",rdk-100,"* && ! -x "$PERF" ]]; then
  "$HERE/build-rdkafka-perf.sh" || RDK_WHY="rdkafka_performance did not build (perf-scripts/build-rdkafka-perf.sh failed)"
fi
# Kafka's tools get kafka-run-class.sh's JVM performance flags; heap as kafka-producer-perf-test.sh.
export KAFKA_HEAP_OPTS="-Xmx512M"
export KAFKA_JVM_OPTS="-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true"

export KP_WARM="$WARM" KP_DUR="$DUR"
RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bkkafka.XXXXXX")"
BROKER_PID=""; WRAP_PID=""; LOAD_PID=""; SAMPLE_PIDS=""
stop_broker() {
  if [[ -n "$WRAP_PID" ]]; then   # apache_kafka.py: SIGTERM -> Kafka's controlled shutdown (<= 30 s)
    kill -TERM "$WRAP_PID" 2>/dev/null || true
    for _ in $(seq 450); do kill -0 "$WRAP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$WRAP_PID" 2>/dev/null && kill -KILL "$WRAP_PID" 2>/dev/null || true
    wait "$WRAP_PID" 2>/dev/null || true
  fi
  bk_stop_pid "$BROKER_PID"          # Brook, or the JVM if the wrapper left it behind
  WRAP_PID=""; BROKER_PID=""
}
cleanup() {
  for p in $SAMPLE_PIDS; do kill "$p" 2>/dev/null || true; done
  bk_stop_pid "$LOAD_PID"; stop_broker
  rm -rf "$RUN"
}
trap cleanup EXIT

idle_pct() { local a b tot=0 i; a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $(( tot > 0 ? 100 * (b[4] + b[5] - a[4] - a[5]) / tot : 0 )); }
if ((WAIT_IDLE > 0)); then
  deadline=$((SECONDS + WAIT_IDLE))
  while :; do
    idle=$(idle_pct 5)
    ((idle >= 90)) && break
    ((SECONDS >= deadline)) && { echo "machine still busy (idle ${idle}%) - starting anyway" >&2; break; }
    echo "waiting for an idle machine (idle ${idle}%)" >&2
  done
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RES="$HERE/results/$STAMP-kafka-peer"; mkdir -p "$RES"
{ bk_machine
  echo "data dirs: $RUN ($(df -T "$RUN" | awk 'NR==2{print $1", "$2}'))"
  echo "java: $(java -version 2>&1 | head -1); kafka jars: $(cd "$JARS" && ls kafka_*.jar kafka-clients-*.jar | tr '\n' ' ')"
  echo "other processes (ps, top 12 by %CPU since start):"
  ps -eo pid,ni,pcpu,etime,args --sort=-pcpu | head -13 | cut -c1-200 | sed 's/^/  /'
} | tee "$RES/machine.txt"
: >"$RES/results.jsonl"; : >"$RES/commands.txt"
cp "$BENCH_BIN" "$RUN/brook-bench"; BENCH_BIN="$RUN/brook-bench"   # a rebuild mid-run cannot swap it
log() { echo "$(date -u +%T) $*" | tee -a "$RES/commands.txt" >&2; }

if ((SKIP_CEIL == 0)); then
  "$HERE/ceilings.sh" --dir "$RUN" --json "$RES/ceilings.json" | tee "$RES/ceilings.txt"
fi

# ---- brokers ---------------------------------------------------------------
# start_broker NAME TEST -> BROKER_PID (the process doing the work), BROKER (host:port)
start_broker() {
  local name="$1" t="$2" port
  stop_broker
  case "$name" in
    brook)
      mkdir -p "$RUN/brook"
      bk_start_broker "$RUN/brook" "$RES/$t.$name.broker.log"
      log "$t $name: broker ${BROKER_CMD[*]}";;
    kafka|kafka-fsync)
      port="$(bk_port)"
      local cmd=(python3 "$ROOT/ci/tests/apache_kafka.py" --dir "$RUN/kafka" --port "$port" --heap "$HEAP"
                 --prop num.partitions=8)
      [[ "$name" == kafka-fsync ]] && cmd+=(--prop log.flush.interval.messages=1)
      log "$t $name: broker ${cmd[*]}"
      # up to 3 attempts: apache_kafka.py's random cluster id can start with '-', which
      # kafka-storage format then reads as an option ("expected one argument")
      local attempt
      for attempt in 1 2 3; do
        rm -rf "$RUN/kafka"; mkdir -p "$RUN/kafka"
        "${cmd[@]}" >"$RES/$t.$name.wrapper.out" 2>&1 &
        WRAP_PID=$!
        for _ in $(seq 1500); do   # format + start, up to 150 s on a busy machine
          grep -q '^apache-kafka ready' "$RES/$t.$name.wrapper.out" && break
          kill -0 "$WRAP_PID" 2>/dev/null || break
          sleep 0.1
        done
        grep -q '^apache-kafka ready' "$RES/$t.$name.wrapper.out" && break
        log "$t $name: kafka did not start (attempt $attempt): $(grep -m1 -E 'error|Error' "$RES/$t.$name.wrapper.out" | cut -c1-200)"
        cp "$RES/$t.$name.wrapper.out" "$RES/$t.$name.wrapper.attempt$attempt.out"
        stop_broker
      done
      if ! grep -q '^apache-kafka ready' "$RES/$t.$name.wrapper.out"; then
        echo "kafka did not start:" >&2; tail -20 "$RES/$t.$name.wrapper.out" >&2; return 1
      fi
      BROKER_PID=$(awk '/^apache-kafka ready/{print $NF}' "$RES/$t.$name.wrapper.out")
      BROKER="127.0.0.1:$port"
      [[ -f "$RES/$name.server.properties" ]] || cp "$RUN/kafka/server.properties" "$RES/$name.server.properties"
      ps -o args= -p "$BROKER_PID" | cut -c1-600 >"$RES/$name.jvm-cmdline.txt" || true
      ;;
  esac
  sleep 2   # let the broker settle (the JVM finishes its start-up work)
}
save_broker_log() { # keep Kafka's server log of this test
  [[ -f "$RUN/kafka/kafka.log" ]] && cp "$RUN/kafka/kafka.log" "$RES/$1.kafka.log" || true
}
# create_topic TOPIC: 8 partitions, RF 1, with Kafka's own tool, the same way for every broker,
# then wait until metadata shows a leader for all 8 partitions (a Kafka that has just created a
# topic answers NotLeaderOrFollower for a moment, and brook-bench's ListOffsets would fail).
create_topic() {
  if ! timeout 90 "$ROOT/ci/kafka-tool" kafka-topics --bootstrap-server "$BROKER" --create --topic "$1" \
         --partitions 8 --replication-factor 1 >>"$RES/topics.log" 2>&1; then
    log "WARNING: kafka-topics --create $1 failed on $BROKER; relying on auto-creation"
  fi
  local n=0
  for _ in $(seq 60); do
    n=$(kcat -L -b "$BROKER" -t "$1" -m 5 2>/dev/null | grep -cE 'partition [0-9]+, leader [0-9]+,' || true)
    ((n >= 8)) && break
    sleep 0.5
  done
  ((n >= 8)) || log "WARNING: $1 has $n partitions with a leader on $BROKER"
  sleep 1
}

# ---- one bounded load run ------------------------------------------------------
# run_load TEST BROKERNAME KIND LIMIT_SECS cmd... ; KIND bb|pt|rdk; output in RES/TEST.BROKER.*
run_load() {
  local t="$1" b="$2" kind="$3" lim="$4"; shift 4
  local p="$RES/$t.$b" rc=0 limit=$((SECONDS + lim)) timed_out=0
  log "$t $b: $*"
  bk_sample_start "$p"
  "$@" >"$p.out" 2>"$p.err" &
  LOAD_PID=$!; local t0=$SECONDS
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    # kafka-producer-perf-test has no duration option: stop it after WARM + DUR one-second
    # report lines (its figures are then taken from those lines, see kafka_peer.py pt)
    # rdkafka_performance: stopped with SIGINT after WARM + DUR s (its count is never reached);
    # it then prints its summary over the whole run
    if [[ "$kind" == rdk ]] && ((timed_out == 0 && SECONDS >= t0 + WARM + DUR)); then
      kill -INT "$LOAD_PID" 2>/dev/null || true; timed_out=2; limit=$((SECONDS + 15))
    fi
    if [[ "$kind" == pt ]] && ((timed_out == 0)) \
       && (( $(grep -c ' records sent, ' "$p.out" 2>/dev/null || true) >= WARM + DUR + 1 )); then
      # SIGTERM: a background job of a non-interactive shell starts with SIGINT ignored,
      # and the JVM then leaves it ignored
      kill -TERM "$LOAD_PID" 2>/dev/null || true; timed_out=2; limit=$((SECONDS + 15))
    fi
    if ((SECONDS > limit)); then
      if ((timed_out == 0)); then
        log "$t $b: over the ${lim} s limit, SIGINT"; kill -INT "$LOAD_PID" 2>/dev/null || true
        [[ "$kind" == pt ]] && kill -TERM "$LOAD_PID" 2>/dev/null || true
        timed_out=1; limit=$((SECONDS + 15))
      else
        kill -KILL "$LOAD_PID" 2>/dev/null || true
      fi
    fi
    kill -0 "$BROKER_PID" 2>/dev/null || { log "$t $b: BROKER EXITED"; kill -INT "$LOAD_PID" 2>/dev/null || true; break; }
    sleep 0.5
  done
  wait "$LOAD_PID" || rc=$?
  bk_sample_stop "$p"
  python3 "$HERE/kafka_peer.py" record "$p" "$t" "$b" "$kind" "$BROKER_PID" "$LOAD_PID" "$rc" "$timed_out" \
    >>"$RES/results.jsonl" || log "$t $b: could not parse the result"
  LOAD_PID=""
}
# rate_of TEST BROKER -> produce records/s of an earlier run (0 if none)
rate_of() { python3 "$HERE/kafka_peer.py" rate "$RES/results.jsonl" "$1" "$2"; }

want_b() { [[ ",$BROKERS," == *",$1,"* ]]; }
BLIST=(); for b in brook kafka kafka-fsync; do want_b "$b" && BLIST+=("$b"); done
BB=("$BENCH_BIN" --partitions 8 --acks all --warmup "${WARM}s" --duration "${DUR}s" --drain-timeout 10s)
IFS=, read -r -a TLIST <<<"$TESTS"
for t in "${TLIST[@]}"; do
  for b in "${BLIST[@]}"; do
    case "$t" in
      bb-100|bb-1024)
        size="${t#bb-}"
        start_broker "$b" "$t"; create_topic "bb$size"
        run_load "$t" "$b" bb $((WARM + DUR + 60)) "${BB[@]}" --bootstrap "$BROKER" --mode produce \
          --topic "bb$size" --record-size "$size" --json "$RES/$t.$b.json";;
      pt-100|pt-1024)
        size="${t#pt-}"
        start_broker "$b" "$t"; create_topic "pt$size"
        # --num-records large enough never to be reached; stopped after WARM + DUR report lines
        run_load "$t" "$b" pt $((WARM + DUR + 40)) "$ROOT/ci/kafka-tool" kafka-producer-perf-test \
          --bootstrap-server "$BROKER" --topic "pt$size" --num-records 1000000000 \
          --record-size "$size" --throughput -1 --reporting-interval 1000 \
          --command-property acks=all linger.ms=5 batch.size=1048576 compression.type=none;;
      rdk-100)
        if [[ -n "$RDK_WHY" || ! -x "$PERF" ]]; then
          echo "{\"test\": \"$t\", \"broker\": \"$b\", \"error\": \"${RDK_WHY:-rdkafka_performance missing}\"}" >>"$RES/results.jsonl"
          continue
        fi
        start_broker "$b" "$t"; create_topic rdk100
        run_load "$t" "$b" rdk $((WARM + DUR + 30)) "$PERF" -P -t rdk100 -b "$BROKER" -s 100 -c 2000000000 \
          -a -1 -z none -X linger.ms=5 -X batch.size=1048576 -X batch.num.messages=1000000;;
      e2e-100)
        if [[ -z "${E2E_RATE:-}" ]]; then
          E2E_RATE=$RATE
          low=$(python3 "$HERE/kafka_peer.py" minrate "$RES/results.jsonl" bb-100)
          if ((low > 0 && low < 2 * RATE)); then
            E2E_RATE=$((low / 2)); log "e2e: lowest bb-100 maximum is $low rec/s: rate lowered to $E2E_RATE"
          fi
          echo "$E2E_RATE" >"$RES/e2e-rate.txt"
        fi
        start_broker "$b" "$t"; create_topic e2e100
        run_load "$t" "$b" bb $((WARM + DUR + 60)) "${BB[@]}" --bootstrap "$BROKER" --mode both \
          --topic e2e100 --record-size 100 --rate "$E2E_RATE" --json "$RES/$t.$b.json";;
      *) echo "unknown test $t" >&2; exit 2;;
    esac
    kcat -L -b "$BROKER" -m 10 2>/dev/null | grep -E '^  topic "' >>"$RES/$t.$b.topics" || true
    stop_broker
    [[ "$b" == brook ]] || save_broker_log "$t.$b"
  done
done

python3 "$HERE/kafka_peer.py" table "$RES" | tee "$RES/table.txt"
echo "results: $RES"
