#!/usr/bin/env bash
# CPU flamegraph and `perf stat` counters of the Brook broker under a brook-bench load.
#
# Starts a private broker copy (`bkd`, private temp dir, free port, --shards 2
# --default-partitions 8), runs brook-bench (closed loop, acks=all, 8 partitions, produce
# and consume by default) and, once the warm-up is over, records the broker's PID for
# SECS seconds with `perf record -F 499 -g --call-graph dwarf` and, over the same
# seconds, `perf stat` (task-clock, cycles, instructions, context switches,
# cpu-migrations, page faults). Writes under perf-scripts/results/<stamp>-flame/:
#   flame.svg (inferno), collapsed.txt, perf-report.txt, perf-stat.txt, bench.json,
#   top.txt (top symbols by self time, where the time goes), cpu.json (broker/load/others).
# Note: on VMs without a PMU (this Firecracker VM) cycles/instructions read
# "<not supported>" and perf samples with the cpu-clock software event.
#
# Usage: flamegraph.sh [--size 1024] [--secs 15] [--mode both|produce] [--call-graph dwarf|fp]
#                      [--freq 499] [--rate N] [--keep]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
SIZE=1024; SECS=15; MODE=both; CG=dwarf; FREQ=499; RATE=0; KEEP=0
while (($#)); do
  case "$1" in
    --size) SIZE="$2"; shift 2;;
    --secs) SECS="$2"; shift 2;;
    --mode) MODE="$2"; shift 2;;
    --call-graph) CG="$2"; shift 2;;
    --freq) FREQ="$2"; shift 2;;
    --rate) RATE="$2"; shift 2;;
    --keep) KEEP=1; shift;;
    -h|--help) sed -n '2,18p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
((SECS >= 1 && SECS <= 120)) || { echo "--secs must be 1..120" >&2; exit 2; }

bk_apt perf:linux-perf mpstat:sysstat python3:python3 ss:iproute2
bk_build
bk_inferno
perf stat -e task-clock true >/dev/null 2>&1 || { echo "perf stat does not work here" >&2; exit 1; }

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RES="$HERE/results/$STAMP-flame"; mkdir -p "$RES"
RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bkflame.XXXXXX")"
BROKER_PID=""; BENCH_PID=""; SAMPLE_PIDS=""
cleanup() {
  for p in $SAMPLE_PIDS; do kill "$p" 2>/dev/null || true; done
  bk_stop_pid "$BENCH_PID"; bk_stop_pid "$BROKER_PID"
  if ((KEEP)); then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

bk_machine | tee "$RES/machine.txt"
bk_start_broker "$RUN" "$RES/broker.log"
echo "broker: ${BROKER_CMD[*]} (pid $BROKER_PID)" | tee -a "$RES/machine.txt"

WARM=3
# The bench window outlasts the recording by a few seconds on each side.
BENCH=("$BENCH_BIN" --bootstrap "$BROKER" --topic "flame-$SIZE" --partitions 8 --record-size "$SIZE"
       --acks all --mode "$MODE" --rate "$RATE" --warmup "${WARM}s" --duration "$((SECS + 4))s"
       --drain-timeout 10s --json "$RES/bench.json")
echo "bench: ${BENCH[*]}" | tee "$RES/commands.txt"
bk_sample_start "$RES/run"
"${BENCH[@]}" >"$RES/bench.out" 2>"$RES/bench.err" &
BENCH_PID=$!; BENCH_PID_SAVED=$BENCH_PID
sleep $((WARM + 1))
kill -0 "$BENCH_PID" 2>/dev/null || { echo "brook-bench exited early:" >&2; tail "$RES/bench.err" >&2; exit 1; }

STAT_EV=task-clock,cycles,instructions,context-switches,cpu-migrations,page-faults,minor-faults,major-faults
PREC=(perf record -F "$FREQ" -g --call-graph "$CG" -p "$BROKER_PID" -o "$RUN/perf.data")
[[ "$CG" == dwarf ]] && PREC=(perf record -F "$FREQ" -g --call-graph dwarf,16384 -p "$BROKER_PID" -o "$RUN/perf.data")
echo "record: ${PREC[*]} -- sleep $SECS" | tee -a "$RES/commands.txt"
echo "stat:   perf stat -e $STAT_EV -p $BROKER_PID -- sleep $SECS" | tee -a "$RES/commands.txt"
perf stat -e "$STAT_EV" -p "$BROKER_PID" -o "$RES/perf-stat.txt" -- sleep "$SECS" &
STAT_PID=$!
timeout $((SECS + 60)) "${PREC[@]}" -- sleep "$SECS" >"$RES/perf-record.log" 2>&1 || true
wait "$STAT_PID" || true
wait "$BENCH_PID" || echo "brook-bench exit status $?" >&2
BENCH_PID=""
bk_sample_stop "$RES/run"
python3 "$HERE/benchparse.py" cpu "$RES/run" "$BROKER_PID" "$BENCH_PID_SAVED" >"$RES/cpu.json" || true

# Stop the broker before the (CPU-heavy) dwarf unwinding so the run is over.
bk_stop_pid "$BROKER_PID"; BROKER_PID=""

echo "unwinding and folding stacks ..." >&2
timeout 900 nice -n 5 perf script -i "$RUN/perf.data" 2>"$RES/perf-script.err" \
  | inferno-collapse-perf --all >"$RES/collapsed.txt"
inferno-flamegraph --title "bkd (Brook) ${SIZE} B acks=all, $MODE, ${SECS}s, perf -F $FREQ $CG" \
  <"$RES/collapsed.txt" >"$RES/flame.svg"
timeout 900 nice -n 5 perf report -i "$RUN/perf.data" --stdio --no-children -g none \
  --sort symbol --percent-limit 0.3 2>/dev/null | sed "s/  *- *- *$//" >"$RES/perf-report.txt" || true
timeout 300 perf report -i "$RUN/perf.data" --stdio --no-children -g none --sort comm \
  2>/dev/null >"$RES/perf-report-comm.txt" || true

python3 "$HERE/benchparse.py" collapsed "$RES/collapsed.txt" 15 >"$RES/top.txt"
{
  echo "== flamegraph run $STAMP: ${SIZE} B, acks=all, 8 partitions, mode $MODE, ${SECS}s recorded =="
  python3 - "$RES" "$HERE" <<'PY'
import json, sys, os
res = sys.argv[1]
sys.path.insert(0, sys.argv[2])
import benchparse
b = benchparse.bb(os.path.join(res, "bench.json"))
c = json.load(open(os.path.join(res, "cpu.json")))
print("brook-bench:", json.dumps(b))
print("cpu (avg %% of one core, whole bench run): broker %s, brook-bench %s, others %s, idle %s%%, loadavg(1m) start/end %s" % (
    c.get("broker_cpu"), c.get("load_cpu"), c.get("others_cpu"), c.get("idle_pct"), c.get("loadavg_1m")))
PY
  echo "perf stat (broker, same ${SECS}s):"
  grep -E 'task-clock|cycles|instructions|context-switches|cpu-migrations|faults|elapsed' "$RES/perf-stat.txt" | sed 's/^ */  /'
  echo "perf report --no-children (top 15 symbols by self time):"
  grep -v '^#' "$RES/perf-report.txt" | grep -v '^$' | head -15
  echo
  cat "$RES/top.txt"
  echo "flamegraph: $RES/flame.svg"
} | tee "$RES/summary.txt"
