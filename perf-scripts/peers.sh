#!/usr/bin/env bash
# Brook next to its peers, in one run, on this machine: the same produce workload
# (100 B records, acks=all / acknowledged-after-store, DUR seconds, closed loop).
#
#   brook     brook-bench (--mode produce, 8 partitions) and rdkafka_performance
#   tansu     the same two clients (Tansu 0.6.0, `cargo install tansu --features libsql`,
#             storage engine sqlite://; the default build of the crate has no storage
#             engine at all: every scheme answers "feature not enabled")
#   jetstream nats-server (Debian) -js, file storage, 1 replica, published by
#             nats_js_pub.py (Python; Debian has no `nats bench`), PubAck per message
#   redis     redis-server (Debian), appendonly yes + appendfsync always, by
#             redis-benchmark -P 64 XADD (and once with appendfsync everysec)
# Every server is a private process on a free port in a private temp dir; only PIDs
# started here are stopped. Durability differs: see the table's last column.
# Results: perf-scripts/results/<stamp>-peers/ (results.jsonl, logs, table.txt).
#
# Usage: peers.sh [--duration 20] [--skip tansu,jetstream,redis,rdkafka]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
DUR=20; SKIP=""; SIZE=100
while (($#)); do
  case "$1" in
    --duration) DUR="$2"; shift 2;;
    --skip) SKIP="$2"; shift 2;;
    -h|--help) sed -n '2,18p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
skip() { [[ ",$SKIP," == *",$1,"* ]]; }

bk_apt mpstat:sysstat python3:python3 ss:iproute2 nats-server:nats-server redis-server:redis-server \
       redis-benchmark:redis-tools
bk_build
PERF="$HERE/.build/rdkafka_performance"
skip rdkafka || [[ -x "$PERF" ]] || "$HERE/build-rdkafka-perf.sh"
VENV="$HERE/.build/venv"
if ! skip jetstream && ! "$VENV/bin/python" -c 'import nats' 2>/dev/null; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q nats-py
fi
TANSU_WHY=""
if ! skip tansu && ! command -v tansu >/dev/null 2>&1; then
  echo "installing tansu (cargo install tansu --features libsql; several minutes) ..." >&2
  mkdir -p "$HERE/.build/logs"
  CARGO_TARGET_DIR="$HERE/.build/tansu-target" nice -n 10 cargo install --root "$CARGO_ROOT" \
      --locked tansu --features libsql >"$HERE/.build/logs/tansu-install.log" 2>&1 \
    || TANSU_WHY="cargo install tansu failed: $(grep -m1 -E '^error' "$HERE/.build/logs/tansu-install.log")"
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RES="$HERE/results/$STAMP-peers"; mkdir -p "$RES"
RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bkpeers.XXXXXX")"
SRV_PID=""; LOAD_PID=""; SAMPLE_PIDS=""; BROKER_PID=""
cleanup() {
  for p in $SAMPLE_PIDS; do kill "$p" 2>/dev/null || true; done
  bk_stop_pid "$LOAD_PID"; bk_stop_pid "$SRV_PID"; bk_stop_pid "$BROKER_PID"
  rm -rf "$RUN"
}
trap cleanup EXIT
{ bk_machine; echo "data dirs: $RUN ($(df -T "$RUN" | awk 'NR==2{print $1", "$2}'))"
  echo "tansu: $(tansu --version 2>/dev/null || echo none); $(nats-server --version); $(redis-server --version | cut -d' ' -f1-3)"
} | tee "$RES/machine.txt"
: >"$RES/results.jsonl"; : >"$RES/commands.txt"

record() { # record SYSTEM CLIENT DURABILITY LOADPID RC KIND FILE
  python3 - "$HERE" "$RES" "$@" "$SRV_PID" >>"$RES/results.jsonl" <<'PY'
import json, sys
here, res, system, client, dur, lpid, rc, kind, f, spid = sys.argv[1:11]
sys.path.insert(0, here)
import benchparse, perfparse
t = f"{system}-{client}"
r = {"system": system, "client": client, "durability": dur, "rc": int(rc),
     "cpu": benchparse.cpu(f"{res}/{t}", spid, lpid)}
try:
    if kind == "bb":
        b = benchparse.bb(f); r["msgs_per_s"] = b.get("produce_rps"); r["MB_per_s"] = b.get("produce_MBps")
        r["errors"] = b.get("errors"); r["publish"] = b.get("publish")
    elif kind == "rdk":
        s = perfparse.summary(f); r["msgs_per_s"] = s.get("msgs_per_s"); r["MB_per_s"] = s.get("MB_per_s")
        r["delivered"] = s.get("delivered"); r["dr_failed"] = s.get("dr_failed")
    elif kind == "json":
        s = json.loads(open(f).read().strip().splitlines()[-1])
        r["msgs_per_s"] = s.get("msgs_per_s"); r["MB_per_s"] = s.get("MB_per_s"); r["detail"] = s
    elif kind == "redis":
        import csv
        rows = [x for x in csv.reader(open(f)) if len(x) > 1 and x[0] != "test"]
        v = float(rows[-1][1]); r["msgs_per_s"] = round(v); r["MB_per_s"] = round(v * 100 / 1e6, 1)
        r["detail"] = rows[-1]
except Exception as e:
    r["error"] = repr(e)
print(json.dumps(r))
PY
}
# run_load SYSTEM CLIENT DURABILITY KIND OUTFILE cmd... : run a bounded load, sample CPU
run_load() {
  local sys_="$1" client="$2" dur="$3" kind="$4" out="$5"; shift 5
  local t="$sys_-$client" rc=0 limit=$((SECONDS + ${RUN_LIMIT:-$((DUR * 3 + 90))}))
  echo "$(date -u +%T) $t: $*" | tee -a "$RES/commands.txt" >&2
  bk_sample_start "$RES/$t"
  "$@" >"$RES/$t.out" 2>"$RES/$t.err" &
  LOAD_PID=$!
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    if ((SECONDS > limit)); then   # SIGINT: brook-bench and rdkafka_performance print their figures
      echo "$t: over time, stopping" >&2; kill -INT "$LOAD_PID" 2>/dev/null || true
      sleep 5; kill -KILL "$LOAD_PID" 2>/dev/null || true
    fi
    [[ -n "$SRV_PID" ]] && ! kill -0 "$SRV_PID" 2>/dev/null && { echo "$t: server exited" >&2; kill -INT "$LOAD_PID"; break; }
    sleep 0.5
  done
  wait "$LOAD_PID" || rc=$?
  bk_sample_stop "$RES/$t"
  [[ "$kind" == bb ]] || out="$RES/$t.out"
  record "$sys_" "$client" "$dur" "$LOAD_PID" "$rc" "$kind" "$out"
  LOAD_PID=""
}
COUNT=$((2500000 * DUR))   # rdkafka_performance stops at a count (~DUR s at 2.5M/s); bounded in time too
BB=("$BENCH_BIN" --partitions 8 --acks all --mode produce --record-size "$SIZE" --warmup 3s
    --duration "${DUR}s" --drain-timeout 10s)
RDK=(-P -s "$SIZE" -c "$COUNT" -a -1 -z none -X linger.ms=1 -X batch.size=1048576 -X batch.num.messages=1000000)

# ---- Brook ----
mkdir -p "$RUN/brook"
bk_start_broker "$RUN/brook" "$RES/brook.log"; SRV_PID=$BROKER_PID
DUR_BROOK="fdatasync before every ack (group commit), O_DIRECT"
echo "brook: ${BROKER_CMD[*]}" >>"$RES/commands.txt"
run_load brook brook-bench "$DUR_BROOK" bb "$RES/brook-brook-bench.json" \
  "${BB[@]}" --bootstrap "$BROKER" --topic peers --json "$RES/brook-brook-bench.json"
skip rdkafka || RUN_LIMIT=$((DUR + 10)) run_load brook rdkafka_performance "$DUR_BROOK" rdk - "$PERF" "${RDK[@]}" -t peers -b "$BROKER"
bk_stop_pid "$SRV_PID"; SRV_PID=""; BROKER_PID=""; rm -rf "$RUN/brook"

# ---- Tansu ----
if ! skip tansu; then
  if [[ -z "$TANSU_WHY" ]] && command -v tansu >/dev/null; then
    mkdir -p "$RUN/tansu"; PORT=$(bk_port)
    TCMD=(tansu broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT"
          --storage-engine "sqlite://tansu.db")
    echo "tansu (cwd $RUN/tansu): ${TCMD[*]}" >>"$RES/commands.txt"
    (cd "$RUN/tansu" && exec "${TCMD[@]}") >"$RES/tansu.log" 2>&1 &
    SRV_PID=$!
    if bk_wait_port "$PORT" 30 "$SRV_PID"; then
      DUR_T="sqlite (libsql) WAL, synchronous=NORMAL: no fsync per commit (WAL synced at checkpoints)"
      run_load tansu brook-bench "$DUR_T" bb "$RES/tansu-brook-bench.json" \
        "${BB[@]}" --bootstrap "127.0.0.1:$PORT" --topic peers --json "$RES/tansu-brook-bench.json"
      kill -0 "$SRV_PID" 2>/dev/null || TANSU_WHY="tansu exited during the brook-bench run: $(tail -3 "$RES/tansu.log")"
      if [[ -z "$TANSU_WHY" ]] && ! skip rdkafka; then
        RUN_LIMIT=$((DUR + 10)) run_load tansu rdkafka_performance "$DUR_T" rdk - "$PERF" "${RDK[@]}" -t peers -b "127.0.0.1:$PORT"
      fi
    else
      TANSU_WHY="tansu did not listen within 30 s: $(tail -5 "$RES/tansu.log" | tr '\n' ' ')"
    fi
    bk_stop_pid "$SRV_PID"; SRV_PID=""
  else
    TANSU_WHY="${TANSU_WHY:-tansu binary not available}"
  fi
  [[ -n "$TANSU_WHY" ]] && echo "{\"system\": \"tansu\", \"client\": \"-\", \"error\": $(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$TANSU_WHY")}" >>"$RES/results.jsonl"
fi

# ---- NATS JetStream ----
if ! skip jetstream; then
  mkdir -p "$RUN/nats"; PORT=$(bk_port)
  echo "nats-server -a 127.0.0.1 -p $PORT -js -sd $RUN/nats" >>"$RES/commands.txt"
  nats-server -a 127.0.0.1 -p "$PORT" -js -sd "$RUN/nats" >"$RES/nats.log" 2>&1 &
  SRV_PID=$!
  bk_wait_port "$PORT" 20 "$SRV_PID"
  run_load jetstream nats_js_pub "file storage, 1 replica; nats-server 2.9.10 does not fsync per message (no sync_interval option before 2.10; blocks are synced in the background)" \
    json - "$VENV/bin/python" "$HERE/nats_js_pub.py" --url "nats://127.0.0.1:$PORT" --size "$SIZE" --secs "$DUR"
  bk_stop_pid "$SRV_PID"; SRV_PID=""
fi

# ---- Redis Streams ----
if ! skip redis; then
  PAYLOAD=$(printf 'x%.0s' $(seq "$SIZE"))
  for fs in always everysec; do
    mkdir -p "$RUN/redis-$fs"; PORT=$(bk_port)
    RCMD=(redis-server --port "$PORT" --bind 127.0.0.1 --dir "$RUN/redis-$fs" --save "" --appendonly yes
          --appendfsync "$fs" --daemonize no --protected-mode yes)
    echo "${RCMD[*]}" >>"$RES/commands.txt"
    "${RCMD[@]}" >"$RES/redis-$fs.log" 2>&1 &
    SRV_PID=$!
    bk_wait_port "$PORT" 20 "$SRV_PID"
    N=$((200000 * DUR))
    run_load redis "redis-benchmark-$fs" "AOF appendfsync $fs$([[ $fs == always ]] && echo ': fsync of the AOF before replies (per event-loop pass, group commit)' || echo ': fsync once a second')" \
      redis - redis-benchmark -h 127.0.0.1 -p "$PORT" -c 8 -P 64 -n "$N" --csv XADD bench '*' v "$PAYLOAD"
    bk_stop_pid "$SRV_PID"; SRV_PID=""
  done
fi

python3 - "$RES/results.jsonl" <<'PY' | tee "$RES/table.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {r["client"]: r["msgs_per_s"] for r in rows if r.get("system") == "brook" and r.get("msgs_per_s")}
b0 = base.get("brook-bench")
print("| system | client | msgs/s | MB/s | vs Brook (same client) | server %CPU | client %CPU | others% | idle% | durability |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("error") and not r.get("msgs_per_s"):
        print(f"| {r['system']} | {r.get('client')} | - | - | - | - | - | - | - | NOT RUN: {r['error'][:300]} |"); continue
    ref = base.get(r["client"]) or b0
    ratio = f"{r['msgs_per_s'] / ref:.2f}" if ref and r.get("msgs_per_s") else "-"
    if r["client"] not in base and r["system"] != "brook":
        ratio += " (vs brook-bench)"
    c = r.get("cpu", {})
    print(f"| {r['system']} | {r['client']} | {r.get('msgs_per_s') or 0:,} | {r.get('MB_per_s')} | {ratio} | "
          f"{c.get('broker_cpu')} | {c.get('load_cpu')} | {c.get('others_cpu')} | {c.get('idle_pct')} | {r.get('durability')} |")
print("100 B records. CPU in % of one core (200 = the machine), averaged over the run; others% excludes niced work.")
PY
echo "results: $RES"
