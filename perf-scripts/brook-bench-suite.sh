#!/usr/bin/env bash
# Brook against its ceilings with brook-bench, in one run, on this machine.
#
#   0. ceilings.sh (O_DIRECT write bw, fdatasync latency, loopback TCP) and
#      read-ceiling.sh (sequential read bw, O_DIRECT and buffered, cold cache), all in
#      the file system of the broker's data dir
#   a. max throughput, 100 B, 8 partitions, acks=all, produce+consume, DUR s (closed loop)
#   b. the same with 1 KiB records
#   c. end-to-end latency at half of (a)'s produce rate, open loop (--rate), DUR s
#   d. catch-up read: produce a BACKLOG of 1 KiB records (produce-only), drop the page
#      cache, then consume-only from the earliest offset; compare with the read ceilings
#   e. harness check: brook-bench produce-only vs rdkafka_performance (librdkafka 2.3.0)
#      on the same broker, 100 B, acks=all, 8 partitions, linger 1 ms, batch 1 MiB
#      (brook-bench's defaults), and rdkafka with produce-bench.sh's linger 5 / 1 MB
# Every test runs against a fresh broker (private copy `bkd`, empty data dir, free port,
# --shards 2 --default-partitions 8). Broker durability: fdatasync before every ack.
# Results: perf-scripts/results/<stamp>-suite/ (results.jsonl, per-test JSON/logs,
# table.txt). Figures in MB/s are 10^6 bytes of record payload per second.
#
# Usage: brook-bench-suite.sh [--duration 20] [--backlog 10G|0] [--skip-ceilings]
#                             [--only a,b,c,d,e] [--wait-idle SECS] [--e-size 100]
#   --e-size: record size of the harness check (e), e.g. 1024 to check the 1 KiB case
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
DUR=20; BACKLOG=10G; SKIP_CEIL=0; ONLY="a,b,c,d,e"; WAIT_IDLE=0; WARM=3; E_SIZE=100
while (($#)); do
  case "$1" in
    --duration) DUR="$2"; shift 2;;
    --backlog) BACKLOG="$2"; shift 2;;
    --skip-ceilings) SKIP_CEIL=1; shift;;
    --only) ONLY="$2"; shift 2;;
    --wait-idle) WAIT_IDLE="$2"; shift 2;;
    --e-size) E_SIZE="$2"; shift 2;;
    -h|--help) sed -n '2,23p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
bytes_of() { python3 -c '
import re,sys; m=re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)i?B?", sys.argv[1].upper())
if not m: sys.exit("bad size "+sys.argv[1])
print(int(float(m[1])*1024**" KMGT".index(m[2] or " ")))' "$1"; }
BACKLOG_BYTES=$(bytes_of "$BACKLOG")
((DUR >= 1 && DUR <= 600)) || { echo "--duration 1..600" >&2; exit 2; }

bk_apt fio:fio iperf3:iperf3 mpstat:sysstat python3:python3 ss:iproute2 kcat:kcat
bk_build
PERF="$HERE/.build/rdkafka_performance"
if want e; then [[ -x "$PERF" ]] || "$HERE/build-rdkafka-perf.sh"; fi

RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bksuite.XXXXXX")"
BROKER_PID=""; LOAD_PID=""; SAMPLE_PIDS=""
cleanup() {
  for p in $SAMPLE_PIDS; do kill "$p" 2>/dev/null || true; done
  bk_stop_pid "$LOAD_PID"; bk_stop_pid "$BROKER_PID"
  rm -rf "$RUN"
}
trap cleanup EXIT

# Disk: the backlog must fit twice over (data + slack for other users of the disk).
FREE=$(( $(df -Pk "$RUN" | awk 'NR==2{print $4}') * 1024 ))
if want d && ((BACKLOG_BYTES > 0)) && ((FREE < 2 * BACKLOG_BYTES)); then
  echo "refusing: backlog $BACKLOG needs 2x = $((2 * BACKLOG_BYTES / 2**30)) GiB free in $RUN, have $((FREE / 2**30)) GiB" >&2
  exit 1
fi

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
RES="$HERE/results/$STAMP-suite"; mkdir -p "$RES"
{ bk_machine; echo "data dir: $RUN ($(df -T "$RUN" | awk 'NR==2{print $1", "$2}'))"; } | tee "$RES/machine.txt"
: >"$RES/results.jsonl"; : >"$RES/commands.txt"

if ((SKIP_CEIL == 0)); then
  "$HERE/ceilings.sh" --dir "$RUN" --json "$RES/ceilings.json" | tee "$RES/ceilings.txt"
  if want d; then
    RSIZE=4G; ((BACKLOG_BYTES > 0 && BACKLOG_BYTES < 4 * 2**30)) && RSIZE=$BACKLOG_BYTES
    "$HERE/read-ceiling.sh" --dir "$RUN" --size "$RSIZE" --json "$RES/read-ceiling.json" | tee "$RES/read-ceiling.txt"
  fi
fi

check_broker() {
  kill -0 "$BROKER_PID" 2>/dev/null && return 0
  echo "BROKER EXITED during $1; log tail:" >&2; tail -20 "$2" >&2; exit 1
}

# bench TEST [brook-bench args...]: one brook-bench run against the current broker
bench() {
  local t="$1"; shift
  local cmd=("$BENCH_BIN" --bootstrap "$BROKER" --partitions 8 --acks all "$@" --json "$RES/$t.json")
  echo "$(date -u +%T) $t: ${cmd[*]}" | tee -a "$RES/commands.txt" >&2
  bk_sample_start "$RES/$t"
  "${cmd[@]}" >"$RES/$t.out" 2>"$RES/$t.err" &
  LOAD_PID=$!
  local rc=0 limit=$((SECONDS + DUR + WARM + 90))
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    kill -0 "$BROKER_PID" 2>/dev/null || { kill -INT "$LOAD_PID"; break; }
    ((SECONDS > limit)) && { echo "$t: over time, interrupting" >&2; kill -INT "$LOAD_PID"; limit=$((SECONDS + 30)); }
    sleep 0.5
  done
  wait "$LOAD_PID" || rc=$?
  bk_sample_stop "$RES/$t"
  check_broker "$t" "$RES/$t.broker.log"
  record "$t" "$LOAD_PID" "$rc" bb "$RES/$t.json"
  LOAD_PID=""
}
record() { # record TEST LOADPID RC KIND FILE
  python3 - "$HERE" "$RES" "$1" "$BROKER_PID" "$2" "$3" "$4" "$5" >>"$RES/results.jsonl" <<'PY'
import json, sys
here, res, t, bpid, lpid, rc, kind, f = sys.argv[1:9]
sys.path.insert(0, here)
import benchparse, perfparse
r = {"test": t, "rc": int(rc), "cpu": benchparse.cpu(f"{res}/{t}", bpid, lpid)}
try:
    r["bb" if kind == "bb" else "rdk"] = benchparse.bb(f) if kind == "bb" else perfparse.summary(f)
except Exception as e:
    r["error"] = str(e)
print(json.dumps(r))
PY
}
fresh_broker() { # fresh_broker TEST
  bk_stop_pid "$BROKER_PID"; BROKER_PID=""
  bk_start_broker "$RUN" "$RES/$1.broker.log"
  echo "$(date -u +%T) $1: broker ${BROKER_CMD[*]}" >>"$RES/commands.txt"
}
field() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r["test"]==sys.argv[2]: v=r.get("bb",{}).get(sys.argv[3])
print(v or 0)' "$RES/results.jsonl" "$1" "$2"; }

COMMON=(--warmup "${WARM}s" --duration "${DUR}s" --drain-timeout 10s)
if want a; then fresh_broker a; bench a-max-100 --mode both --topic t100 --record-size 100 "${COMMON[@]}"; fi
if want b; then fresh_broker b; bench b-max-1024 --mode both --topic t1024 --record-size 1024 "${COMMON[@]}"; fi
if want c; then
  A_RATE=$(field a-max-100 produce_rps); ((A_RATE > 0)) || A_RATE=200000
  fresh_broker c
  bench "c-rate$((A_RATE / 2))-100" --mode both --topic t100r --record-size 100 --rate $((A_RATE / 2)) "${COMMON[@]}"
fi
if want d && ((BACKLOG_BYTES > 0)); then
  fresh_broker d
  # Build the backlog: produce-only, 1 KiB, until the topic's files hold BACKLOG bytes
  # (du, so fallocate's preallocation may overshoot by up to 64 MiB per partition),
  # bounded at 900 s. SIGINT ends brook-bench's window; it then writes its report.
  cmd=("$BENCH_BIN" --bootstrap "$BROKER" --partitions 8 --acks all --mode produce --topic backlog
       --record-size 1024 --warmup 0s --duration 900s --json "$RES/d-backlog-produce.json")
  echo "$(date -u +%T) d-backlog-produce: ${cmd[*]} (SIGINT at $BACKLOG)" | tee -a "$RES/commands.txt" >&2
  bk_sample_start "$RES/d-backlog-produce"
  "${cmd[@]}" >"$RES/d-backlog-produce.out" 2>"$RES/d-backlog-produce.err" &
  LOAD_PID=$!; rc=0; sent_int=0
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    check_broker d-backlog "$RES/d.broker.log"
    if ((!sent_int)); then
      used=$(( $(du -sk "$RUN/data" | cut -f1) * 1024 ))
      ((used >= BACKLOG_BYTES)) && { kill -INT "$LOAD_PID"; sent_int=1; }
    fi
    sleep 1
  done
  wait "$LOAD_PID" || rc=$?
  bk_sample_stop "$RES/d-backlog-produce"
  record d-backlog-produce "$LOAD_PID" "$rc" bb "$RES/d-backlog-produce.json"; LOAD_PID=""
  du -sh "$RUN/data" | tee "$RES/d-backlog-du.txt"
  # Cold page cache for the read (the broker writes O_DIRECT, but be sure).
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "WARNING: could not drop caches" | tee -a "$RES/commands.txt"
  bench d-catchup-1024 --mode consume --topic backlog --no-create --warmup 0s --duration 600s
fi
if want e; then
  fresh_broker e
  bench "e-bb-produce-$E_SIZE" --mode produce --topic "te$E_SIZE" --record-size "$E_SIZE" "${COMMON[@]}"
  BB_RATE=$(field "e-bb-produce-$E_SIZE" produce_rps); ((BB_RATE > 0)) || BB_RATE=1000000
  # rdkafka_performance stops at a count: aim for about DUR s at brook-bench's rate
  # (at least 2M records), and bound it in time.
  COUNT=$((BB_RATE * DUR)); ((COUNT < 2000000)) && COUNT=2000000
  ((COUNT * E_SIZE > 20 * 2**30)) && COUNT=$((20 * 2**30 / E_SIZE)); ((COUNT > 100000000)) && COUNT=100000000
  for v in "linger1-b1m:-X linger.ms=1 -X batch.size=1048576 -X batch.num.messages=1000000" "linger5-b1m:-X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=1000000"; do
    name="e-rdkafka-${v%%:*}-$E_SIZE"
    # A fresh broker per run keeps the disk use to one run's data (at 1 KiB a run
    # writes up to 20 GB).
    fresh_broker e
    args=(-P -t "te$E_SIZE" -b "$BROKER" -s "$E_SIZE" -c "$COUNT" -a -1 -z none ${v#*:})
    echo "$(date -u +%T) $name: rdkafka_performance ${args[*]}" | tee -a "$RES/commands.txt" >&2
    bk_sample_start "$RES/$name"
    timeout $((DUR * 4 + 60)) "$PERF" "${args[@]}" >"$RES/$name.log" 2>&1 &
    LOAD_PID=$!; rc=0
    while kill -0 "$LOAD_PID" 2>/dev/null; do check_broker "$name" "$RES/e.broker.log"; sleep 0.5; done
    wait "$LOAD_PID" || rc=$?
    bk_sample_stop "$RES/$name"
    # pidstat shows the timeout(1) wrapper's child: attribute by command name instead
    PPID_RDK=$(awk '$NF ~ /^rdkafka_perf/ {print $3; exit}' "$RES/$name.pidstat")
    record "$name" "${PPID_RDK:-$LOAD_PID}" "$rc" rdk "$RES/$name.log"; LOAD_PID=""
  done
fi
bk_stop_pid "$BROKER_PID"; BROKER_PID=""

python3 "$HERE/suite_table.py" "$RES" | tee "$RES/table.txt"
echo "results: $RES"
