#!/usr/bin/env bash
# Produce throughput with 1, 2 and 4 log directories (JBOD), and each
# directory's own O_DIRECT write ceiling (fio) measured in the same run.
# On a machine whose directories share one physical disk this shows Brook's
# overhead of spreading partitions over directories, not a speed-up.
#
# Usage: perf-scripts/jbod-bench.sh [--root DIR] [--dirs "1 2 4"] [--duration 15] [--size 1024]
#   --root: where the directories are made (default: a temp dir under $TMPDIR);
#           point it at a parent of separate mounts to measure real disks.
# Output: perf-scripts/results/<UTC stamp>-jbod/results.md (and the bench JSON).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib.sh"
ROOT_DIR=""; DIRS="1 2 4"; DURATION=15; SIZE=1024
while (($#)); do
  case "$1" in
    --root) ROOT_DIR="$2"; shift 2;;
    --dirs) DIRS="$2"; shift 2;;
    --duration) DURATION="$2"; shift 2;;
    --size) SIZE="$2"; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
bk_build
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/perf-scripts/results/$STAMP-jbod"
mkdir -p "$OUT"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/jbod.XXXXXX")"
[[ -n "$ROOT_DIR" ]] || ROOT_DIR="$RUN/disks"
mkdir -p "$ROOT_DIR"
BROKER_PID=""
cleanup() { bk_stop_pid "$BROKER_PID"; rm -rf "$RUN"; rm -rf "$ROOT_DIR"/jbod-d*; }
trap cleanup EXIT
cp "$BROOK_BIN" "$RUN/bkd"

fio_write() { # fio_write DIR -> MB/s of 1 MiB O_DIRECT sequential writes (1 GiB, 10 s max)
  local j="$RUN/fio.json"
  fio --name=w --directory="$1" --rw=write --bs=1M --size=1G --direct=1 --ioengine=io_uring \
      --iodepth=8 --runtime=10 --time_based=0 --end_fsync=1 --output-format=json --output="$j" >/dev/null
  rm -f "$1"/w.*
  python3 -c "import json;print('%.0f' % (json.load(open('$j'))['jobs'][0]['write']['bw_bytes']/1e6))"
}

{
  echo "# JBOD: produce throughput by number of log directories"
  echo
  echo '```'
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); nproc: $(nproc); HEAD $(cd "$ROOT" && git rev-parse --short HEAD)"
  echo "root: $ROOT_DIR ($(df -h --output=source,fstype "$ROOT_DIR" | tail -1))"
  echo "command: $0 --dirs \"$DIRS\" --duration $DURATION --size $SIZE"
  echo "load: brook-bench --mode produce --partitions 8 --record-size $SIZE --acks all --warmup 3s --duration ${DURATION}s"
  echo '```'
  echo
  echo "| directories | ceilings, fio O_DIRECT 1 MiB writes (MB/s, each) | Brook produce (MB/s) | records/s | partitions per directory |"
  echo "|---:|---|---:|---:|---|"
} > "$OUT/results.md"

for n in $DIRS; do
  args=(); ceilings=()
  for ((i = 0; i < n; i++)); do
    d="$ROOT_DIR/jbod-d$i"; rm -rf "$d"; mkdir -p "$d"
    args+=(--data-dir "$d")
    ceilings+=("$(fio_write "$d")")
  done
  port="$(bk_port)"
  "$RUN/bkd" "${args[@]}" --listen "127.0.0.1:$port" --shards "${SHARDS:-2}" 2> "$OUT/broker-$n.log" &
  BROKER_PID=$!
  bk_wait_port "$port" 30 "$BROKER_PID"
  "$BENCH_BIN" --bootstrap "127.0.0.1:$port" --mode produce --topic jbod --partitions 8 \
      --record-size "$SIZE" --acks all --warmup 3s --duration "${DURATION}s" --json "$OUT/bench-$n.json" \
      > "$OUT/bench-$n.out" 2>&1
  bk_stop_pid "$BROKER_PID"; BROKER_PID=""
  spread=""
  for ((i = 0; i < n; i++)); do spread+="$(ls -d "$ROOT_DIR/jbod-d$i"/jbod-* 2>/dev/null | wc -l) "; done
  python3 - "$OUT/bench-$n.json" "$n" "${ceilings[*]}" "$spread" >> "$OUT/results.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); p = r.get("produce") or r
print("| %s | %s | %.0f | %.0f | %s |" % (sys.argv[2], ", ".join(sys.argv[3].split()), p["mb_per_sec"],
                                          p["records_per_sec"], " / ".join(sys.argv[4].split())))
PY
  for ((i = 0; i < n; i++)); do rm -rf "$ROOT_DIR/jbod-d$i"; done
done
cat "$OUT/results.md"
echo "results: $OUT"
