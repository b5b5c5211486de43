#!/usr/bin/env bash
# Sequential READ bandwidth of the file system holding DIR, from a cold page cache:
#   fio, bs=1M, O_DIRECT (io_uring or libaio, iodepth 16) and buffered (psync, kernel
#   readahead), each after `sync; echo 3 > /proc/sys/vm/drop_caches`.
# The file is written once with O_DIRECT (not timed here) and removed on exit.
# Usage: read-ceiling.sh [--dir DIR] [--size 4G] [--json FILE]
set -euo pipefail
DIR="${TMPDIR:-/tmp}"; SIZE="4G"; JSON=""
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift 2;;
    --size) SIZE="$2"; shift 2;;
    --json) JSON="$2"; shift 2;;
    -h|--help) sed -n '2,6p' "$0"; exit 0;;
    *) echo "unknown arg $1" >&2; exit 2;;
  esac
done
command -v fio >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq fio >/dev/null; }
mkdir -p "$DIR"
WORK="$(mktemp -d "$DIR/readceil.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ENGINE=io_uring
fio --name=probe --filename="$WORK/probe" --size=1M --bs=1M --rw=write --direct=1 \
    --ioengine=io_uring --output=/dev/null >/dev/null 2>&1 || ENGINE=libaio
rm -f "$WORK/probe"

drop_caches() {
  sync
  if ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    echo "  WARNING: cannot drop caches (not root?); buffered figure may be from cache" >&2
    return 1
  fi
}
F="$WORK/seqread.dat"
echo "read-ceiling: dir=$DIR size=$SIZE engine=$ENGINE (laying out the file ...)" >&2
timeout 300 fio --name=lay --filename="$F" --rw=write --bs=1M --size="$SIZE" --direct=1 \
  --ioengine="$ENGINE" --iodepth=16 --end_fsync=1 --output=/dev/null >/dev/null
DROPPED=1
drop_caches || DROPPED=0
echo "  fio seq read bs=1M O_DIRECT ..." >&2
timeout 300 fio --name=rdirect --filename="$F" --rw=read --bs=1M --size="$SIZE" --direct=1 \
  --ioengine="$ENGINE" --iodepth=16 --runtime=60 --output-format=json --output="$WORK/rd.json" >/dev/null
drop_caches || DROPPED=0
echo "  fio seq read bs=1M buffered (after drop_caches) ..." >&2
timeout 300 fio --name=rbuf --filename="$F" --rw=read --bs=1M --size="$SIZE" --direct=0 \
  --ioengine=psync --runtime=60 --output-format=json --output="$WORK/rb.json" >/dev/null

python3 - "$WORK" "$JSON" "$SIZE" "$ENGINE" "$DROPPED" <<'PY'
import json, sys, os
work, out, size, engine, dropped = sys.argv[1:6]
r = {"size": size, "engine": engine, "caches_dropped": dropped == "1"}
for k, f in (("seq_read_1m_direct_MBps", "rd.json"), ("seq_read_1m_buffered_MBps", "rb.json")):
    j = json.load(open(os.path.join(work, f)))["jobs"][0]["read"]
    r[k] = round(j["bw_bytes"] / 1e6, 1)
print(f"seq read bs=1M O_DIRECT ({engine}, iodepth 16): {r['seq_read_1m_direct_MBps']} MB/s")
print(f"seq read bs=1M buffered (psync, readahead)    : {r['seq_read_1m_buffered_MBps']} MB/s"
      + ("" if r["caches_dropped"] else "  (caches NOT dropped)"))
if out:
    json.dump(r, open(out, "w"), indent=2)
PY
