#!/usr/bin/env bash
# Partition density and restart time.
#
#   1. density, for each N in $PARTITIONS: a fresh data dir and broker (--shards 2),
#      N/100 topics of 100 partitions (dens-0000, ...) created with CreateTopics, wait
#      until Metadata lists them all; 2 s later idle RSS (VmRSS) and open fds; then 20
#      records of 100 B to every partition (confluent-kafka, explicit partitions,
#      acks=all, every delivery report checked); 2 s later RSS and fds again; then
#      SIGTERM, wait for the exit, start again on the same data dir and time exec ->
#      Metadata lists all N partitions with a leader (polled every 50 ms, at most
#      $RESTART_TIMEOUT s); then SIGKILL and the same again. __consumer_offsets (50
#      partitions) is not counted. A row that fails (CreateTopics refused, broker
#      died, RSS over $MAX_RSS_MIB: the broker is SIGKILLed) records the error and the
#      next N runs.
#   2. restart against log size: one topic `big` of 8 partitions, brook-bench writes
#      1 KiB records (acks=all) until `du -sb` of the data dir >= $LOG_GB GiB; then
#      SIGTERM -> restart and SIGKILL (idle) -> restart, each timed from exec until
#      Metadata lists the 8 partitions AND ListOffsets(latest) answers for each, the
#      log ends checked against the ones before the stop, with the restarted broker's
#      /proc/PID/io read_bytes (and rchar) at that moment. With EVICT=1 (default) the
#      two restarts are repeated with the data dir evicted from the page cache first
#      (posix_fadvise DONTNEED, no root needed), so read_bytes shows what a restart reads.
#      Last, SIGKILL under load: brook-bench produces to `big` again (same settings, as
#      fast as it can, --duration LOAD_KILL_S + 60 s) and the broker is SIGKILLed
#      $LOAD_KILL_S s after the bench started writing; the bench is then given 30 s to
#      exit, else SIGTERM, then SIGKILL; the restart is timed as above, but the log end
#      after it is checked to be >= the end before the bench started (the end at the
#      kill is unknown). Reported with it: the bench's acked bytes / seconds until the
#      kill (write rate) and the checkpoint interval in force. Every restart row also
#      shows the broker's own count of log bytes read to open its partitions (the sum
#      of read_bytes= over its `opened partitions` lines, one a shard).
#
# Environment:
#   PARTITIONS="100 1000 5000 10000"  LOG_GB=10  MAX_RSS_MIB=12000  RESTART_TIMEOUT=120
#   PHASES="density log"  EVICT=1  SHARDS=2  MAX_WRITE_S=1800 (bound on the LOG_GB write)
#   LOAD_KILL_S=20 (SIGKILL under load: seconds of writing before the kill)
#   CHECKPOINT_MS (unset: the broker's default, 10 s; set: passed to every broker as
#     "log.flush.offset.checkpoint.interval.ms" in a --config TOML file)
#   BROOK_BIN, BENCH_BIN (lib.sh: target/release/...), BENCH_TMP (where the temp dir goes)
#
# The broker and brook-bench are copied into a private temp dir (mktemp -d) first;
# brokers listen on free loopback ports; only PIDs started here are signalled; every
# wait is bounded; the temp dir is removed on exit. Results (results.md, results.jsonl,
# broker logs): perf-scripts/results/<UTC stamp>-density/.
#
# Usage: perf-scripts/density.sh      (e.g. PARTITIONS="100 1000" LOG_GB=1 perf-scripts/density.sh)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;; "") ;; *) echo "no arguments; see --help" >&2; exit 2;; esac

PARTITIONS="${PARTITIONS:-100 1000 5000 10000}"
LOG_GB="${LOG_GB:-10}"
MAX_RSS_MIB="${MAX_RSS_MIB:-12000}"
RESTART_TIMEOUT="${RESTART_TIMEOUT:-120}"
PHASES="${PHASES:-density log}"
EVICT="${EVICT:-1}"
SHARDS="${SHARDS:-2}"
MAX_WRITE_S="${MAX_WRITE_S:-1800}"
LOAD_KILL_S="${LOAD_KILL_S:-20}"
CHECKPOINT_MS="${CHECKPOINT_MS:-}"
BENCH_STOP_S=30    # SIGKILL under load: how long the bench may take to give up by itself
STOP_TIMEOUT=120   # SIGTERM -> exit, then SIGKILL
PY="$ROOT/ci/.venv/bin/python"
DPY="$HERE/density.py"

[[ -x "$PY" ]] && "$PY" -c 'import confluent_kafka' 2>/dev/null \
  || { echo "needs $PY with confluent-kafka (ci/setup.sh installs it)" >&2; exit 2; }
bk_apt ss:iproute2 fincore:util-linux
bk_build
for n in $PARTITIONS; do [[ "$n" =~ ^[0-9]+$ ]] && ((n > 0)) || { echo "PARTITIONS: bad count $n" >&2; exit 2; }; done
[[ "$MAX_RSS_MIB" =~ ^[0-9]+$ ]] || { echo "MAX_RSS_MIB: integer MiB" >&2; exit 2; }
[[ "$LOAD_KILL_S" =~ ^[0-9]+$ ]] && ((LOAD_KILL_S > 0)) || { echo "LOAD_KILL_S: seconds > 0" >&2; exit 2; }
[[ -z "$CHECKPOINT_MS" || "$CHECKPOINT_MS" =~ ^[0-9]+$ ]] || { echo "CHECKPOINT_MS: integer ms" >&2; exit 2; }
LOG_BYTES="$(python3 -c "import sys; print(int(float(sys.argv[1]) * (1 << 30)))" "$LOG_GB")"

# Segments and connections are fds: the soft limit up to the hard one (the broker does the same).
HARD_FDS="$(ulimit -Hn)"
ulimit -n "$HARD_FDS" 2>/dev/null || true

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$HERE/results/$STAMP-density"
mkdir -p "$OUT"
RES="$OUT/results.jsonl"
: >"$RES"
RUN="$(mktemp -d "${BENCH_TMP:-/tmp}/bkdensity.XXXXXX")"
cp "$BROOK_BIN" "$RUN/bkd"
cp "$BENCH_BIN" "$RUN/bench"
# The checkpoint interval every broker here runs with (the broker takes at least 100 ms).
BROKER_CFG=()
if [[ -n "$CHECKPOINT_MS" ]]; then
  echo "\"log.flush.offset.checkpoint.interval.ms\" = $CHECKPOINT_MS" >"$RUN/brook.toml"
  BROKER_CFG=(--config "$RUN/brook.toml")
  CHECKPOINT_IN_FORCE="$((CHECKPOINT_MS < 100 ? 100 : CHECKPOINT_MS)) ms (CHECKPOINT_MS=$CHECKPOINT_MS, --config)"
else
  CHECKPOINT_IN_FORCE="10000 ms (broker default; no --config)"
fi

BPID=""; GUARD_PID=""; LOAD_PID=""; BROKER=""; T0=""
cleanup() {
  set +e
  guard_stop
  if [[ -n "$LOAD_PID" ]]; then kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null; fi
  bk_stop_pid "$BPID"
  [[ -n "$BPID" ]] && wait "$BPID" 2>/dev/null
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "[density $(date -u +%H:%M:%S)] $*" >&2; }
py() { "$PY" "$DPY" "$@"; }   # density.py; its JSON result line goes to stdout and $RES

# ---------------------------------------------------------------- broker control

guard_start() { # SIGKILL the broker if its RSS passes MAX_RSS_MIB; leaves $RUN/rss-stop
  local pid="$1" max=$((MAX_RSS_MIB * 1024))
  rm -f "$RUN/rss-stop"
  (
    while kill -0 "$pid" 2>/dev/null; do
      rss="$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null)" || break
      if [[ -n "$rss" ]] && ((rss > max)); then
        echo "$rss" >"$RUN/rss-stop"
        kill -KILL "$pid" 2>/dev/null
        break
      fi
      sleep 0.2
    done
  ) &
  GUARD_PID=$!
}
guard_stop() {
  [[ -n "$GUARD_PID" ]] || return 0
  kill "$GUARD_PID" 2>/dev/null || true
  wait "$GUARD_PID" 2>/dev/null || true
  GUARD_PID=""
}

start_broker() { # start_broker DATA LOG -> BPID, T0 (Unix time just before the exec)
  T0="$EPOCHREALTIME"
  "$RUN/bkd" --data-dir "$1" --listen "$BROKER" --shards "$SHARDS" ${BROKER_CFG[@]+"${BROKER_CFG[@]}"} 2>"$2" &
  BPID=$!
  guard_start "$BPID"
}

wait_ready() { # wait_ready LOG SECS -> 0 once the broker logged `brook ready`
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    grep -q 'brook ready' "$1" && return 0
    kill -0 "$BPID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

reap() { # wait up to SECS for BPID to be gone; then collect its exit status in EXIT_CODE
  local i
  for ((i = 0; i < $1 * 20; i++)); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$BPID" 2>/dev/null && return 1
  EXIT_CODE=0; wait "$BPID" 2>/dev/null || EXIT_CODE=$?
  guard_stop
  BPID=""
}

stop_term() { # SIGTERM, bounded wait -> STOP_S, EXIT_CODE (SIGKILL after STOP_TIMEOUT)
  local t="$EPOCHREALTIME"
  kill -TERM "$BPID" 2>/dev/null || true
  if ! reap "$STOP_TIMEOUT"; then
    kill -KILL "$BPID" 2>/dev/null || true
    reap 30 || true
    STOP_S="timeout"; EXIT_CODE="killed after ${STOP_TIMEOUT} s"
    return 1
  fi
  STOP_S="$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 3))" "$t" "$EPOCHREALTIME")"
}

stop_kill() {
  kill -KILL "$BPID" 2>/dev/null || true
  reap 30 || { say "broker $BPID did not die in 30 s after SIGKILL"; return 1; }
}

stop_any() { # whatever state it is in: gone afterwards (bounded)
  [[ -n "$BPID" ]] || return 0
  if kill -0 "$BPID" 2>/dev/null; then stop_term || true; else reap 1 || true; fi
  guard_stop; BPID=""
}

rss_stop_msg() { # non-empty if the RSS guard killed the broker
  [[ -f "$RUN/rss-stop" ]] && echo "stopped: RSS over $MAX_RSS_MIB MiB ($(( $(cat "$RUN/rss-stop") / 1024 )) MiB)"
  return 0
}

# ---------------------------------------------------------------- 1. density

density_row() {
  local n="$1" data="$RUN/dens-$1" l1="$OUT/density-$1-1-fresh.log"
  local l2="$OUT/density-$1-2-after-sigterm.log" l3="$OUT/density-$1-3-after-sigkill.log"
  local tag=(--log "$RES" --tag part=density --tag "n=$n")
  local guard=(--pid "" --max-rss-mib "$MAX_RSS_MIB")
  BROKER="127.0.0.1:$(bk_port)"
  rm -rf "$data"; mkdir -p "$data"
  say "== $n partitions ($(( (n + 99) / 100 )) topics), broker $BROKER"

  row_fail() { # row_fail [MESSAGE]: record why the row stopped, stop the broker
    local msg; msg="$(rss_stop_msg)"
    [[ -z "$msg" ]] && msg="${1:-}"
    if [[ -z "$msg" && -n "$BPID" ]] && ! kill -0 "$BPID" 2>/dev/null; then
      msg="broker exited: $(grep -E 'ERROR|panicked' "$CUR_LOG" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300)"
    fi
    [[ -n "$msg" ]] && py note "${tag[@]}" --tag step=row_error --tag "error=$msg" >/dev/null
    [[ -n "$BPID" ]] && kill -0 "$BPID" 2>/dev/null && py procstat --pid "$BPID" "${tag[@]}" --tag step=at_error >/dev/null
    say "   row $n stopped: ${msg:-see results.jsonl}"
    stop_any
    rm -rf "$data"
  }

  CUR_LOG="$l1"
  start_broker "$data" "$l1"
  guard[1]="$BPID"
  wait_ready "$l1" 60 || { row_fail "broker did not start (see $(basename "$l1"))"; return; }
  say "   CreateTopics ..."
  py create --bootstrap "$BROKER" --total "$n" "${guard[@]}" "${tag[@]}" --tag step=create >&2 || { row_fail; return; }
  py meta --bootstrap "$BROKER" --expect "$n" --timeout "$RESTART_TIMEOUT" "${guard[@]}" "${tag[@]}" \
    --tag step=create_visible >&2 || { row_fail; return; }
  sleep 2
  py procstat --pid "$BPID" "${tag[@]}" --tag step=idle >&2 || { row_fail; return; }
  say "   produce 20 x 100 B to each partition ..."
  py produce --bootstrap "$BROKER" --total "$n" "${guard[@]}" "${tag[@]}" --tag step=produce >&2 || { row_fail; return; }
  sleep 2
  py procstat --pid "$BPID" "${tag[@]}" --tag step=written >&2 || { row_fail; return; }
  [[ -z "$(rss_stop_msg)" ]] || { row_fail; return; }

  say "   SIGTERM, restart ..."
  stop_term || { py note "${tag[@]}" --tag step=stop_term --tag ok=false --tag "error=no exit in ${STOP_TIMEOUT} s after SIGTERM" >/dev/null; }
  [[ "$STOP_S" == timeout ]] || py note "${tag[@]}" --tag step=stop_term --tag "stop_s=$STOP_S" --tag "exit=$EXIT_CODE" >/dev/null
  CUR_LOG="$l2"
  start_broker "$data" "$l2"
  guard[1]="$BPID"
  py meta --bootstrap "$BROKER" --expect "$n" --since "$T0" --timeout "$RESTART_TIMEOUT" --ready-log "$l2" \
    "${guard[@]}" "${tag[@]}" --tag step=restart_term >&2 || { row_fail; return; }

  say "   SIGKILL, restart ..."
  stop_kill || { row_fail "broker did not die after SIGKILL"; return; }
  CUR_LOG="$l3"
  start_broker "$data" "$l3"
  guard[1]="$BPID"
  py meta --bootstrap "$BROKER" --expect "$n" --since "$T0" --timeout "$RESTART_TIMEOUT" --ready-log "$l3" \
    "${guard[@]}" "${tag[@]}" --tag step=restart_kill >&2 || { row_fail; return; }
  py procstat --pid "$BPID" "${tag[@]}" --tag step=final >/dev/null || true
  stop_any
  rm -rf "$data"
}

# ---------------------------------------------------------------- 2. log size

log_run() {
  local data="$RUN/log" tag=(--log "$RES" --tag part=log) k=1 log
  BROKER="127.0.0.1:$(bk_port)"
  rm -rf "$data"; mkdir -p "$data"
  log_fail() {
    local msg; msg="$(rss_stop_msg)"; [[ -z "$msg" ]] && msg="$1"
    py note "${tag[@]}" --tag step=row_error --tag "error=$msg" >/dev/null
    say "   log-size run stopped: $msg"
    stop_any
    rm -rf "$data"
  }
  log="$OUT/log-1-fresh.log"; CUR_LOG="$log"
  say "== log size: $LOG_GB GiB ($LOG_BYTES B) into topic big (8 partitions), broker $BROKER"
  py note "${tag[@]}" --tag step=config --tag "checkpoint_ms=$(( ${CHECKPOINT_MS:-10000} < 100 ? 100 : ${CHECKPOINT_MS:-10000} ))" \
    --tag "checkpoint_src=$([[ -n "$CHECKPOINT_MS" ]] && echo "CHECKPOINT_MS=$CHECKPOINT_MS in a --config file" || echo "broker default, no --config")" \
    --tag "load_kill_s=$LOAD_KILL_S" >/dev/null
  start_broker "$data" "$log"
  wait_ready "$log" 60 || { log_fail "broker did not start"; return; }

  local size=0 written=0 chunk=3 i=0 t0 t1 secs
  while ((size < LOG_BYTES)); do
    i=$((i + 1))
    if ((${written%.*} >= MAX_WRITE_S || i > 100)); then
      log_fail "only $size B written in ${written} s (MAX_WRITE_S=$MAX_WRITE_S)"; return
    fi
    ((chunk > MAX_WRITE_S - ${written%.*})) && chunk=$((MAX_WRITE_S - ${written%.*}))
    say "   brook-bench run $i: ${chunk} s (data dir $size B so far)"
    t0="$EPOCHREALTIME"
    timeout -k 10 $((chunk + 120)) "$RUN/bench" --bootstrap "$BROKER" --mode produce --topic big --partitions 8 \
      --record-size 1024 --acks all --warmup 0s --duration "${chunk}s" --json "$OUT/log-write-$i.json" \
      >"$OUT/log-write-$i.out" 2>&1 &
    LOAD_PID=$!
    local rc=0; wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    t1="$EPOCHREALTIME"
    ((rc == 0)) || { log_fail "brook-bench run $i failed (exit $rc, see log-write-$i.out)"; return; }
    kill -0 "$BPID" 2>/dev/null || { log_fail "broker exited during the write"; return; }
    py note "${tag[@]}" --tag step=write --tag "run=$i" --tag "duration_s=$chunk" >/dev/null
    secs="$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$t1")"
    written="$(python3 -c "import sys; print(round(float(sys.argv[1]) + float(sys.argv[2]), 1))" "$written" "$secs")"
    local before="$size"
    size="$(du -sb "$data" | cut -f1)"
    # next run: 70% of what is left at this run's rate, 1..300 s (a few short runs at the
    # end instead of one long one that overshoots)
    chunk="$(python3 -c "
import math, sys
left, got, secs = int(sys.argv[1]) - int(sys.argv[2]), int(sys.argv[2]) - int(sys.argv[3]), float(sys.argv[4])
rate = max(got, 1) / max(secs, 0.1)
print(min(300, max(1, math.ceil(0.7 * left / rate))))" "$LOG_BYTES" "$size" "$before" "$secs")"
  done
  sleep 1
  py offsets --bootstrap "$BROKER" --topic big --partitions 8 --out "$RUN/ends.json" "${tag[@]}" --tag step=written \
    --tag "du_bytes=$size" --tag "write_s=$written" >&2 || { log_fail "ListOffsets after the write failed"; return; }
  say "   data dir $size B after ${written} s of writing"

  local how cache cached caches=(warm)
  [[ "$EVICT" == 1 ]] && caches+=(cold)
  for cache in "${caches[@]}"; do
    for how in SIGTERM SIGKILL; do
      k=$((k + 1))
      say "   $how ($cache page cache), restart ..."
      if [[ "$how" == SIGTERM ]]; then
        stop_term || true
        py note "${tag[@]}" --tag step=stop --tag "how=$how" --tag "stop_s=$STOP_S" --tag "exit=$EXIT_CODE" >/dev/null
      else
        stop_kill || { log_fail "broker did not die after SIGKILL"; return; }
      fi
      if [[ "$cache" == cold ]]; then
        py evict --dir "$data" "${tag[@]}" --tag step=evict --tag "how=$how" >&2 || true
      fi
      log="$OUT/log-$k-after-${how,,}-$cache.log"; CUR_LOG="$log"
      cached="$(py cache --dir "$data" || echo -1)"
      start_broker "$data" "$log"
      if ! py meta --bootstrap "$BROKER" --prefix big --expect 8 --offsets-topic big --expect-offsets "$RUN/ends.json" \
          --since "$T0" --timeout "$RESTART_TIMEOUT" --ready-log "$log" --pid "$BPID" --max-rss-mib "$MAX_RSS_MIB" \
          "${tag[@]}" --tag step=restart --tag "how=$how" --tag "cache=$cache" --tag "cached_bytes=$cached" >&2; then
        log_fail "restart after $how ($cache) did not complete"; return
      fi
    done
  done

  load_kill "$data" $((k + 1)) || return
  stop_any
  rm -rf "$data"
}

# SIGKILL under load: the broker (running on DATA) is SIGKILLed LOAD_KILL_S s after
# brook-bench started writing to it, then restarted and timed like the other rows.
load_kill() { # load_kill DATA K -> 1 after log_fail
  local data="$1" k="$2" log cached pre="$OUT/log-load" t_start="" t_kill wb0 wb1 i rc how_stopped
  local ltag=("${tag[@]}" --tag step=load)
  say "   SIGKILL under load: brook-bench writing, SIGKILL after $LOAD_KILL_S s ..."
  py offsets --bootstrap "$BROKER" --topic big --partitions 8 --out "$RUN/ends-load.json" "${ltag[@]}" \
    --tag phase=before_bench >&2 || { log_fail "ListOffsets before the load failed"; return 1; }
  # Started directly (no `timeout` in between) so that LOAD_PID is the bench itself.
  "$RUN/bench" --bootstrap "$BROKER" --mode produce --topic big --partitions 8 \
    --record-size 1024 --acks all --warmup 0s --duration "$((LOAD_KILL_S + 60))s" --json "$pre.json" \
    >"$pre.out" 2>&1 &
  LOAD_PID=$!
  # It has started writing once it printed its plan (topic checked, producers next).
  for ((i = 0; i < 300; i++)); do
    if grep -q '^brook-bench: .* partitions on' "$pre.out"; then t_start="$EPOCHREALTIME"; break; fi
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  wb0="$(awk '/^write_bytes:/{print $2}' "/proc/$BPID/io" 2>/dev/null || echo "")"
  if [[ -z "$t_start" ]]; then
    bench_stop; log_fail "brook-bench did not start writing in 30 s (see log-load.out)"; return 1
  fi
  sleep "$(python3 -c "import sys, time; print(max(0.0, float(sys.argv[1]) + int(sys.argv[2]) - time.time()))" \
    "$t_start" "$LOAD_KILL_S")"
  if ! kill -0 "$LOAD_PID" 2>/dev/null; then
    bench_stop; log_fail "brook-bench exited before the kill (see log-load.out)"; return 1
  fi
  kill -0 "$BPID" 2>/dev/null || { bench_stop; log_fail "broker exited during the load"; return 1; }
  wb1="$(awk '/^write_bytes:/{print $2}' "/proc/$BPID/io" 2>/dev/null || echo "")"
  t_kill="$EPOCHREALTIME"
  kill -KILL "$BPID" 2>/dev/null || true
  reap 30 || { bench_stop; log_fail "broker did not die after SIGKILL"; return 1; }
  # The bench notices the dead broker and stops by itself, or is stopped (bounded).
  how_stopped=""
  for ((i = 0; i < BENCH_STOP_S * 10; i++)); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$LOAD_PID" 2>/dev/null; then
    how_stopped="still running ${BENCH_STOP_S} s after the kill: SIGTERM"
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$LOAD_PID" 2>/dev/null; then
      how_stopped+=", then SIGKILL"
      kill -KILL "$LOAD_PID" 2>/dev/null || true
    fi
  fi
  rc=0; wait "$LOAD_PID" 2>/dev/null || rc=$?
  LOAD_PID=""
  [[ -n "$how_stopped" ]] || how_stopped="exited by itself, status $rc, $(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$t_kill") s after the kill"
  py loadrate --bench-json "$pre.json" --bench-out "$pre.out" --record-size 1024 --start "$t_start" --kill "$t_kill" \
    --broker-write-bytes "$wb0" "$wb1" "${ltag[@]}" --tag phase=load --tag "bench_stopped=$how_stopped" >&2 || true
  say "   bench: $how_stopped; restart ..."
  log="$OUT/log-$k-after-sigkill-under-load.log"; CUR_LOG="$log"
  cached="$(py cache --dir "$data" || echo -1)"
  start_broker "$data" "$log"
  if ! py meta --bootstrap "$BROKER" --prefix big --expect 8 --offsets-topic big --min-offsets "$RUN/ends-load.json" \
      --since "$T0" --timeout "$RESTART_TIMEOUT" --ready-log "$log" --pid "$BPID" --max-rss-mib "$MAX_RSS_MIB" \
      "${tag[@]}" --tag step=restart --tag "how=SIGKILL under load" --tag cache=warm --tag "cached_bytes=$cached" >&2; then
    log_fail "restart after SIGKILL under load did not complete"; return 1
  fi
}

bench_stop() { # the load's brook-bench gone, bounded (SIGTERM, 10 s, SIGKILL)
  local i
  [[ -n "$LOAD_PID" ]] || return 0
  kill -TERM "$LOAD_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$LOAD_PID" 2>/dev/null || true
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
}

# ---------------------------------------------------------------- run

{
  echo "# Partition density and restart time"
  echo
  echo '```'
  bk_machine
  echo "fd limit (soft/hard): $(ulimit -n)/$HARD_FDS"
  echo "command: PARTITIONS=\"$PARTITIONS\" LOG_GB=$LOG_GB MAX_RSS_MIB=$MAX_RSS_MIB RESTART_TIMEOUT=$RESTART_TIMEOUT PHASES=\"$PHASES\" EVICT=$EVICT SHARDS=$SHARDS LOAD_KILL_S=$LOAD_KILL_S${CHECKPOINT_MS:+ CHECKPOINT_MS=$CHECKPOINT_MS} BROOK_BIN=$BROOK_BIN BENCH_BIN=$BENCH_BIN perf-scripts/density.sh"
  echo "log.flush.offset.checkpoint.interval.ms in force: $CHECKPOINT_IN_FORCE"
  echo '```'
  echo
} >"$OUT/results.md"
say "results: $OUT"

for phase in $PHASES; do
  case "$phase" in
    density) for n in $PARTITIONS; do density_row "$n"; done ;;
    log) log_run ;;
    *) echo "PHASES: unknown phase $phase" >&2; exit 2 ;;
  esac
done

# Broker warnings and errors, for the reader
{
  echo "## Broker warnings and errors"
  echo
  found=0
  for f in "$OUT"/*.log; do
    [[ -e "$f" ]] || continue
    lines="$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E ' (WARN|ERROR) |panicked' || true)"
    [[ -n "$lines" ]] || continue
    found=1
    echo "$(basename "$f"): $(wc -l <<<"$lines") lines, first ones (distinct messages):"
    echo '```'
    sed -E 's/^[0-9TZ:.-]+ +//' <<<"$lines" | awk '!seen[$0]++' | head -5 | cut -c1-400
    echo '```'
  done
  ((found)) || echo "none"
  echo
} >"$OUT/warnings.md"
py report --results "$RES" --out "$OUT/results.md" >/dev/null
cat "$OUT/warnings.md" >>"$OUT/results.md"
rm -f "$OUT/warnings.md"
cat "$OUT/results.md"
say "results: $OUT"
