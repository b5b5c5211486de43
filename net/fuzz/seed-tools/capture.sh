#!/usr/bin/env bash
# Regenerates the fuzz seed corpora from real clients' traffic:
#   1. starts target/release/brook on a free loopback port with a fresh data dir,
#   2. records the loopback traffic with tcpdump while traffic.py drives kcat,
#      confluent-kafka, kafka-python and aiokafka against it,
#   3. stops the broker cleanly (so it writes its index files), then
#   4. split_seeds.py cuts the capture into request frames (net seeds) and takes
#      record batches, segments, index files and offset records (engine seeds).
# Needs root (tcpdump), ci/setup.sh done, and a release build of brook.
# Usage: net/fuzz/seed-tools/capture.sh   (from anywhere; rewrites seeds/)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PY="$ROOT/ci/.venv/bin/python"
command -v tcpdump >/dev/null || { apt-get update -q && apt-get install -y -q tcpdump; }

WORK="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
tcpdump -i lo -U -s 0 -w "$WORK/traffic.pcap" "tcp port $PORT" 2>"$WORK/tcpdump.err" &
TCPDUMP=$!
sleep 1
"$ROOT/target/release/brook" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" \
    --shards 1 --no-pin >"$WORK/brook.log" 2>&1 &
BROOK=$!
for _ in $(seq 50); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
    sleep 0.2
done
"$PY" "$HERE/traffic.py" "127.0.0.1:$PORT"
kill -TERM "$BROOK"; wait "$BROOK" || true
sleep 1
kill -INT "$TCPDUMP"; wait "$TCPDUMP" || true
"$PY" "$HERE/split_seeds.py" "$WORK/traffic.pcap" "$PORT" "$WORK/data" "$ROOT"
rm -rf "$WORK"
