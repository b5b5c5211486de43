#!/usr/bin/env bash
# Closed-loop produce benchmark of the real Brook broker with librdkafka's
# rdkafka_performance (single producer, acks=all, no compression, linger 5 ms,
# batch.size 1,000,000), 100 B and 1 KiB records, on a topic with 8 partitions.
#
# Per record size:  REPEAT max-throughput runs (no per-message latency stamping),
#                   1 max-throughput run with -l (send -> delivery-report latency),
#                   1 fixed-rate run with -l at half the median max rate
#                   (capped at 500k msg/s: rdkafka_performance's limiter sleeps whole us).
# Runs ceilings.sh in the same run first, in the broker's data-dir file system.
# Broker default durability: every batch fdatasynced before acks=1/all are answered.
#
# Usage: produce-bench.sh [--repeat N] [--count-100 N] [--count-1k N] [--keep] [--wait-idle SECS]
#   --wait-idle SECS: first wait (at most SECS) until the machine is >= 90% idle over 5 s,
#                     since other work on a shared 2-core machine skews every figure.
# Env:   BROOK_BIN (default target/release/brook), BENCH_TMP (default /tmp),
#        PERF_NICE (nice level for the load generator, default 0), SHARDS (2).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
REPEAT=3; COUNT_100=15000000; COUNT_1K=3000000; KEEP=0; WAIT_IDLE=0
while (($#)); do
  case "$1" in
    --repeat) REPEAT="$2"; shift 2;;
    --count-100) COUNT_100="$2"; shift 2;;
    --count-1k) COUNT_1K="$2"; shift 2;;
    --keep) KEEP=1; shift;;
    --wait-idle) WAIT_IDLE="$2"; shift 2;;
    -h|--help) sed -n '2,18p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
BROOK_BIN="${BROOK_BIN:-$ROOT/target/release/brook}"
PERF="$HERE/.build/rdkafka_performance"
SHARDS="${SHARDS:-2}"
PERF_NICE="${PERF_NICE:-0}"
RUN_TIMEOUT=300           # seconds, per rdkafka_performance run
PARTITIONS=8

# ---- tools (idempotent) ----
need=()
command -v pidstat >/dev/null || need+=(sysstat)
command -v kcat >/dev/null || need+=(kcat)
command -v python3 >/dev/null || need+=(python3)
command -v ss >/dev/null || need+=(iproute2)
command -v top >/dev/null || need+=(procps)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
[[ -x "$PERF" ]] || "$HERE/build-rdkafka-perf.sh"
if [[ ! -x "$BROOK_BIN" ]]; then
  (cd "$ROOT" && cargo build --release)
fi

idle_pct() { # whole-machine idle % over $1 seconds, from /proc/stat
  local a b; a=($(head -1 /proc/stat)); sleep "$1"; b=($(head -1 /proc/stat))
  local tot=0 i; for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $(( tot > 0 ? 100 * (b[4] + b[5] - a[4] - a[5]) / tot : 0 ))
}
if ((WAIT_IDLE > 0)); then
  deadline=$((SECONDS + WAIT_IDLE))
  while :; do
    idle=$(idle_pct 5)
    ((idle >= 90)) && { echo "machine idle ${idle}% - starting" >&2; break; }
    ((SECONDS >= deadline)) && { echo "machine still busy (idle ${idle}%) after ${WAIT_IDLE}s - starting anyway" >&2; break; }
    echo "waiting for an idle machine (idle ${idle}%)" >&2
  done
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RES="$HERE/results/$STAMP"
mkdir -p "$RES" "${BENCH_TMP:-/tmp}"
RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bkperf.XXXXXX")"
DATA="$RUN/data"; mkdir -p "$DATA"
# Run a private copy, so a concurrent `cargo build` replacing the binary cannot race us.
# Its name is not "brook" and its paths do not contain it: on a shared machine another
# session's `pkill brook` has SIGTERMed the broker mid-run (seen twice).
cp "$BROOK_BIN" "$RUN/bkd"
BROKER_PID=""; PIDSTAT_PID=""; MPSTAT_PID=""
cleanup() {
  for p in $PIDSTAT_PID $MPSTAT_PID; do kill "$p" 2>/dev/null || true; done
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  if ((KEEP)); then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# Disk space: each record size writes (REPEAT+2) * count * size bytes.
NEED_MB=$(( (REPEAT + 2) * (COUNT_100 * 100 + COUNT_1K * 1024) / 1000000 * 3 / 2 + 3000 ))
FREE_MB=$(df -Pm "$RUN" | awk 'NR==2{print $4}')
if (( FREE_MB < NEED_MB )); then
  echo "not enough space in $RUN: ${FREE_MB} MB free, need ~${NEED_MB} MB" >&2; exit 1
fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nproc: $(nproc)"; echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "mem: $(free -g | awk '/Mem:/{print $2" GiB"}')"
  echo "data dir: $RUN ($(df -T "$RUN" | awk 'NR==2{print $1", "$2", "$3/1048576" GiB"}'))"
  echo "lsblk:"; lsblk -o NAME,SIZE,ROTA,TYPE,MOUNTPOINTS 2>/dev/null | sed 's/^/  /'
  echo "loadavg before: $(cat /proc/loadavg)"
  echo "busiest processes before:"; ps -eo pcpu,etime,comm --sort=-pcpu | head -6 | sed 's/^/  /'
  echo "broker: $BROOK_BIN (built $(date -u -r "$BROOK_BIN" '+%H:%M:%S UTC'); HEAD $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "load tool: $("$PERF" 2>&1 | grep -m1 'librdkafka version')"
} | tee "$RES/machine.txt"

# ---- ceilings, same run, same file system ----
"$HERE/ceilings.sh" --dir "$RUN" --json "$RES/ceilings.json" | tee "$RES/ceilings.txt"

# ---- broker ----
PORT="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
BROKER=127.0.0.1:$PORT
BROKER_CMD=("$RUN/bkd" --data-dir "$DATA" --listen "$BROKER" --shards "$SHARDS" --default-partitions "$PARTITIONS")
echo "broker: ${BROKER_CMD[*]}" | tee -a "$RES/machine.txt"
"${BROKER_CMD[@]}" 2>"$RES/broker.log" &
BROKER_PID=$!
export BROKER_PID
for _ in $(seq 300); do
  grep -q 'brook ready' "$RES/broker.log" && break
  kill -0 "$BROKER_PID" 2>/dev/null || { echo "broker died:"; cat "$RES/broker.log"; exit 1; }
  sleep 0.1
done
grep -q 'brook ready' "$RES/broker.log" || { echo "broker not ready in 30 s" >&2; exit 1; }

# Topics are auto-created by Metadata with --default-partitions 8; verify the count.
create_topic() {
  local t="$1" n
  n=$(timeout 20 kcat -b "$BROKER" -L -t "$t" -X allow.auto.create.topics=true 2>&1 \
      | sed -n 's/.*topic "'"$t"'" with \([0-9]*\) partitions.*/\1/p' | head -1)
  if [[ "$n" != "$PARTITIONS" ]]; then
    sleep 1
    n=$(timeout 20 kcat -b "$BROKER" -L -t "$t" 2>&1 \
        | sed -n 's/.*topic "'"$t"'" with \([0-9]*\) partitions.*/\1/p' | head -1)
  fi
  [[ "$n" == "$PARTITIONS" ]] || { echo "topic $t has '$n' partitions, want $PARTITIONS" >&2; exit 1; }
}

: >"$RES/results.jsonl"
# run_perf NAME SIZE COUNT TOPIC [extra rdkafka_performance args...]
run_perf() {
  local name="$1" size="$2" count="$3" topic="$4"; shift 4
  local log="$RES/$name.log" ps="$RES/$name.pidstat" lat="" rc=0
  local args=(-P -t "$topic" -b "$BROKER" -s "$size" -c "$count" -a -1 -z none
              -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=1000000 "$@")
  for a in "$@"; do [[ "$a" == "-l" ]] && lat="$RES/$name.lat"; done
  [[ -n "$lat" ]] && args+=(-A "$lat")
  echo "$(date -u +%T) $name: rdkafka_performance ${args[*]}" | tee -a "$RES/commands.txt" >&2
  : >"$ps"; : >"$RES/$name.mpstat"
  # Per-process CPU (threads too) of the broker and the load tool, and whole-machine CPU.
  pidstat -u -t -h -C 'bkd|brook|rdkafka_perf|rdk:' 1 "$RUN_TIMEOUT" >"$ps" 2>&1 &
  PIDSTAT_PID=$!
  mpstat 1 "$RUN_TIMEOUT" >"$RES/$name.mpstat" 2>&1 &
  MPSTAT_PID=$!
  ( sleep 1.5; top -b -n1 -w 200 | head -15 >"$RES/$name.top" ) &
  local top_pid=$!
  nice -n "$PERF_NICE" timeout "$RUN_TIMEOUT" "$PERF" "${args[@]}" >"$log" 2>&1 &
  local perf_pid=$! broker_died=0
  # Watchdog: if the broker goes away, stop the load tool at once instead of letting
  # it retry until RUN_TIMEOUT.
  while kill -0 "$perf_pid" 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then broker_died=1; kill "$perf_pid" 2>/dev/null || true; break; fi
    sleep 0.2
  done
  wait "$perf_pid" || rc=$?
  kill "$PIDSTAT_PID" "$MPSTAT_PID" 2>/dev/null || true
  wait "$PIDSTAT_PID" "$MPSTAT_PID" 2>/dev/null || true; PIDSTAT_PID=""; MPSTAT_PID=""
  wait "$top_pid" 2>/dev/null || true
  if ((broker_died)) || ! kill -0 "$BROKER_PID" 2>/dev/null; then
    local brc=0; wait "$BROKER_PID" || brc=$?
    echo "BROKER EXITED (status $brc) during $name; broker log tail:" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$RES/broker.log" | tail -20 >&2
    BROKER_PID=""; exit 1
  fi
  python3 - "$name" "$size" "$count" "$rc" "$log" "$ps" "$lat" "$RES/$name.mpstat" >>"$RES/results.jsonl" <<'PY'
import json, subprocess, sys
name, size, count, rc, log, ps, lat = sys.argv[1:8]
pp = sys.argv[0]
import importlib.util, os
spec = importlib.util.spec_from_file_location("perfparse", os.environ["PERFPARSE"])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
r = {"run": name, "size": int(size), "count": int(count), "rc": int(rc),
     "summary": m.summary(log), "pidstat": m.pidstat(ps, os.environ["BROKER_PID"]), "mpstat": m.mpstat(sys.argv[8])}
if lat:
    r["latency"] = m.lat(lat)
    os.remove(lat)
print(json.dumps(r))
PY
  tail -n1 "$RES/results.jsonl" | python3 -c '
import json,sys; r=json.load(sys.stdin); s=r["summary"]; l=r.get("latency") or {}; p=r["pidstat"]["proc_avg_cpu"]
print("   rc=%d %s msgs/s %s MB/s delivered=%s qfull=%s %s cpu=%s" % (r["rc"], s.get("msgs_per_s"), s.get("MB_per_s"), s.get("delivered"), s.get("queue_full_retries"),
  ("lat p50/p99/p99.9/max ms %s/%s/%s/%s" % (l.get("p50_ms"), l.get("p99_ms"), l.get("p99.9_ms"), l.get("max_ms"))) if l else "", p))' >&2
}
export PERFPARSE="$HERE/perfparse.py"

median_rate() { # size -> median msgs/s of the max-* runs of that size
  python3 - "$RES/results.jsonl" "$1" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
v = sorted(r["summary"].get("msgs_per_s", 0) for r in rs
           if r["size"] == int(sys.argv[2]) and r["run"].startswith("max-"))
print(v[len(v) // 2] if v else 0)
PY
}

declare -A EXPECTED=()
for size in 100 1024; do
  count=$COUNT_100; [[ $size == 1024 ]] && count=$COUNT_1K
  topic="bench-$size"
  create_topic "$topic"
  for i in $(seq "$REPEAT"); do
    run_perf "max-$size-$i" "$size" "$count" "$topic"
  done
  run_perf "maxlat-$size" "$size" "$count" "$topic" -l
  rate=$(( $(median_rate "$size") / 2 ))
  (( rate > 500000 )) && rate=500000
  (( rate < 1000 )) && rate=1000
  # bounded in time too: at most ~20 s of records at that rate
  rcount=$(( rate * 20 )); (( rcount > count )) && rcount=$count
  run_perf "rate$rate-$size" "$size" "$rcount" "$topic" -l -r "$rate"
done

# ---- verify: high watermarks == delivered records per topic ----
python3 - "$RES/results.jsonl" >"$RES/expected.txt" <<'PY'
import json, sys
from collections import Counter
c = Counter()
for l in open(sys.argv[1]):
    r = json.loads(l); c[r["size"]] += r["summary"].get("delivered", 0)
for k, v in sorted(c.items()): print(k, v)
PY
VERIFY=""
while read -r size want; do
  got=0
  for p in $(seq 0 $((PARTITIONS - 1))); do
    o=$(timeout 20 kcat -b "$BROKER" -Q -t "bench-$size:$p:-1" 2>/dev/null | sed -n 's/.*offset \([0-9-]*\).*/\1/p')
    got=$((got + ${o:-0}))
  done
  VERIFY+="bench-$size: delivered $want, sum of high watermarks $got $([[ $got == "$want" ]] && echo OK || echo MISMATCH)"$'\n'
done <"$RES/expected.txt"
DISK_USED=$(du -sh "$DATA" | cut -f1)

# ---- stop broker: SIGTERM, expect exit 0 ----
kill -TERM "$BROKER_PID"
BROKER_RC=""
for _ in $(seq 300); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$BROKER_PID" 2>/dev/null; then BROKER_RC="still running 30 s after SIGTERM"
else wait "$BROKER_PID" && BROKER_RC=0 || BROKER_RC=$?; fi
BROKER_PID=""

echo
echo "===================== produce-bench $STAMP ====================="
cat "$RES/machine.txt"
echo "policy: acks=all (-a -1); broker fdatasyncs every batch before answering (group commit)"
echo "client: single rdkafka_performance producer, linger.ms=5, batch.size=1000000, batch.num.messages=1000000, no compression, $PARTITIONS partitions, null keys (sticky partitioner)"
echo "commands:"; sed 's/^/  /' "$RES/commands.txt"
echo
python3 "$HERE/perfparse.py" table "$RES/results.jsonl" "$RES/ceilings.json" | tee "$RES/table.txt"
echo
printf '%s' "$VERIFY"
echo "data dir size at end: $DISK_USED"
echo "broker exit status after SIGTERM: $BROKER_RC"
echo "broker log lines that are not INFO:"
sed 's/\x1b\[[0-9;]*m//g' "$RES/broker.log" | grep -v ' INFO ' | head -20 | sed 's/^/  /' || true
echo "results kept in $RES"
[[ "$BROKER_RC" == 0 ]]
