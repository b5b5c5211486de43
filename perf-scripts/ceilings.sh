#!/usr/bin/env bash
# Measure this machine's ceilings in the file system that holds DIR:
#   - O_DIRECT sequential write bandwidth (fio, io_uring, direct=1, bs=1M and bs=64k)
#   - fdatasync latency after 4 KiB writes into preallocated (already written) space
#     (fio fdatasync=1; O_DIRECT and buffered variants; p50/p99 of the sync call)
#   - write latency with the broker's pattern and no broker: 8 files, each an
#     O_DIRECT 128 KiB write + fdatasync paced at 30 MB/s (240 MB/s in all) into
#     freshly fallocated space, 20 s; p50..p99.99 and max of write and of fdatasync.
#     A latency target cannot be better than this disk's own tail.
#   - loopback TCP bandwidth (iperf3, 5 s)
# Usage: ceilings.sh [--dir DIR] [--size 2G] [--json FILE]
# Every test is bounded in size and time; test files are removed on exit.
set -euo pipefail
DIR="${TMPDIR:-/tmp}"; SIZE="2G"; JSON=""
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift 2;;
    --size) SIZE="$2"; shift 2;;
    --json) JSON="$2"; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done

need=()
command -v fio >/dev/null || need+=(fio)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v python3 >/dev/null || need+=(python3)
command -v ss >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$DIR"
WORK="$(mktemp -d "$DIR/ceilings.XXXXXX")"
IPERF_PID=""
cleanup() {
  [[ -n "$IPERF_PID" ]] && kill "$IPERF_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

FS="$(df -T "$DIR" | awk 'NR==2{print $1" "$2}')"
ENGINE=io_uring
if ! fio --name=probe --filename="$WORK/probe" --size=1M --bs=1M --rw=write \
      --direct=1 --ioengine=io_uring --output=/dev/null >/dev/null 2>&1; then
  ENGINE=libaio
fi
rm -f "$WORK/probe"

run_fio() { # name, outfile, fio args...
  local name="$1" out="$2"; shift 2
  timeout 300 fio --name="$name" --directory="$WORK" --output-format=json --output="$out" "$@" >/dev/null
}

echo "ceilings: dir=$DIR fs=[$FS] engine=$ENGINE size=$SIZE" >&2
echo "  fio seq write bs=1M direct ..." >&2
run_fio seqw1m "$WORK/w1m.json" --rw=write --bs=1M --size="$SIZE" --direct=1 \
  --ioengine="$ENGINE" --iodepth=16 --end_fsync=1 --runtime=60
rm -f "$WORK"/seqw1m*
echo "  fio seq write bs=64k direct ..." >&2
run_fio seqw64k "$WORK/w64k.json" --rw=write --bs=64k --size="$SIZE" --direct=1 \
  --ioengine="$ENGINE" --iodepth=16 --end_fsync=1 --runtime=60
rm -f "$WORK"/seqw64k*
# fdatasync after each 4 KiB write; overwrite=1 lays the file out fully first, so the
# writes land in allocated, already-written space (no metadata/extent changes).
echo "  fio 4k write+fdatasync (direct) ..." >&2
run_fio sync4kd "$WORK/s4kd.json" --rw=write --bs=4k --size=64M --overwrite=1 \
  --direct=1 --ioengine=psync --fdatasync=1 --time_based --runtime=8
rm -f "$WORK"/sync4kd*
echo "  fio 4k write+fdatasync (buffered) ..." >&2
run_fio sync4kb "$WORK/s4kb.json" --rw=write --bs=4k --size=64M --overwrite=1 \
  --direct=0 --ioengine=psync --fdatasync=1 --time_based --runtime=8
rm -f "$WORK"/sync4kb*

echo "  fio paced 8 x (128k O_DIRECT write + fdatasync) at 30 MB/s each, 20 s ..." >&2
run_fio paced8 "$WORK/p8.json" --rw=write --bs=128k --size=1G --direct=1 \
  --ioengine=psync --fdatasync=1 --fallocate=native --rate=30m --numjobs=8 \
  --group_reporting --time_based --runtime=20
rm -f "$WORK"/paced8*

echo "  iperf3 loopback 5 s ..." >&2
PORT="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
iperf3 -s -1 -B 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
IPERF_PID=$!
for _ in $(seq 50); do
  ss -ltnH "sport = :$PORT" 2>/dev/null | grep -q . && break; sleep 0.1
done
timeout 30 iperf3 -c 127.0.0.1 -p "$PORT" -t 5 -J >"$WORK/iperf.json" 2>"$WORK/iperf.err" \
  || { echo "  iperf3 failed:" >&2; head -c 400 "$WORK/iperf.json" "$WORK/iperf.err" >&2; }
wait "$IPERF_PID" 2>/dev/null || true; IPERF_PID=""

python3 - "$WORK" "$JSON" "$ENGINE" "$FS" "$DIR" <<'PY'
import json, sys, os
work, out, engine, fs, d = sys.argv[1:6]
def fio(name):
    j = json.load(open(os.path.join(work, name)))["jobs"][0]
    return j
res = {"dir": d, "fs": fs, "engine": engine}
for key, f in (("seq_write_1m", "w1m.json"), ("seq_write_64k", "w64k.json")):
    w = fio(f)["write"]
    res[key + "_MBps"] = round(w["bw_bytes"] / 1e6, 1)
    res[key + "_MiBps"] = round(w["bw_bytes"] / 2**20, 1)
for key, f in (("fdatasync_4k_direct", "s4kd.json"), ("fdatasync_4k_buffered", "s4kb.json")):
    j = fio(f)
    s = j["sync"]["lat_ns"]; p = s.get("percentile", {})
    def pct(x):
        for k, v in p.items():
            if abs(float(k) - x) < 1e-6: return round(v / 1000, 1)
        return None
    res[key] = {"p50_us": pct(50.0), "p99_us": pct(99.0), "mean_us": round(s["mean"] / 1000, 1),
                "max_us": round(s["max"] / 1000, 1), "count": s.get("N", j["write"]["total_ios"]),
                "write_iops": round(j["write"]["iops"])}
j = fio("p8.json")
def pcts(lat):
    p = {float(k): v for k, v in lat.get("percentile", {}).items()}
    out = {f"p{str(q).rstrip('0').rstrip('.')}_ms": round(p[q] / 1e6, 2) for q in (50.0, 99.0, 99.9, 99.99) if q in p}
    out["max_ms"] = round(lat["max"] / 1e6, 1)
    return out
res["paced8_write"] = pcts(j["write"]["clat_ns"])
res["paced8_fdatasync"] = pcts(j["sync"]["lat_ns"])
res["paced8_MBps"] = round(j["write"]["bw_bytes"] / 1e6, 1)
try:
    ip = json.load(open(os.path.join(work, "iperf.json")))
    res["loopback_tcp_Gbps"] = round(ip["end"]["sum_received"]["bits_per_second"] / 1e9, 2)
except Exception as e:
    res["loopback_tcp_Gbps"] = None
print(f"== ceilings ({d}, {fs}) ==")
print(f"O_DIRECT seq write  bs=1M : {res['seq_write_1m_MBps']:>8} MB/s   ({engine}, iodepth 16)")
print(f"O_DIRECT seq write  bs=64k: {res['seq_write_64k_MBps']:>8} MB/s")
for k in ("fdatasync_4k_direct", "fdatasync_4k_buffered"):
    r = res[k]
    print(f"{k:<26}: p50 {r['p50_us']} us  p99 {r['p99_us']} us  mean {r['mean_us']} us  max {r['max_us']} us  (n={r['count']})")
for k in ("paced8_write", "paced8_fdatasync"):
    r = res[k]
    print(f"{k:<26}: " + "  ".join(f"{q[:-3]} {v} ms" for q, v in r.items()) + f"  ({res['paced8_MBps']} MB/s in all)")
lb = res["loopback_tcp_Gbps"]
print(f"loopback TCP (iperf3 5 s) : {lb} Gbit/s" + (f" = {lb*125:.0f} MB/s" if lb else ""))
if out:
    json.dump(res, open(out, "w"), indent=2)
PY
