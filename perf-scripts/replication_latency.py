#!/usr/bin/env python3
"""The latency replication adds at a fixed rate, on a three-broker cluster.

Starts three brokers as failover.py does (README's "A cluster", free ports,
fresh data dirs, one shard each, unpinned), then runs brook-bench at the same
fixed rate against a topic with replication factor 1 and one with 3, acks=all,
interleaved ROUNDS times, and prints publish and end-to-end latency
percentiles of each run (from brook-bench's JSON). With replication factor 3
acks=all is answered once both followers have fetched and fsynced the batch,
so the difference is one follower fetch round trip plus a follower fsync.

    ci/.venv/bin/python perf-scripts/replication_latency.py --rate 20000 --record-size 1024

Bounded: every run lasts --warmup plus --duration; the brokers are stopped
and their data removed at the end.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from failover import Node, free_port  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.environ.get("BROOK_BENCH", os.path.join(REPO, "target", "release", "brook-bench"))


def bench(boot, topic, rf, a, out):
    args = [BENCH, "--bootstrap", boot, "--mode", "both", "--topic", topic,
            "--partitions", str(a.partitions), "--replication-factor", str(rf),
            "--record-size", str(a.record_size), "--acks", "all", "--rate", str(a.rate),
            "--warmup", a.warmup, "--duration", a.duration, "--json", out]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit("brook-bench failed:\n%s\n%s" % (r.stdout[-3000:], r.stderr[-3000:]))
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20000, help="records/s offered")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", default="3s")
    ap.add_argument("--duration", default="15s")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="brook-replat-")
    ctl = [free_port() for _ in range(3)]
    voters = ",".join("%d@127.0.0.1:%d" % (i + 1, ctl[i]) for i in range(3))
    nodes = [Node(root, i + 1, voters, ctl[i], 9000) for i in range(3)]
    rows = []
    try:
        for n in nodes:
            n.start()
        boot = "127.0.0.1:%d" % nodes[0].port  # brook-bench bootstraps from one broker
        time.sleep(2)
        for rnd in range(a.rounds):
            for rf in (1, 3):
                topic = "lat-rf%d-%d" % (rf, rnd)
                r = bench(boot, topic, rf, a, os.path.join(root, topic + ".json"))
                pub, e2e = r["publish"]["latency_ms"], r["end_to_end"]["latency_ms"]
                rows.append((rnd + 1, rf, r["publish"].get("msgs_per_sec", 0), pub, e2e))
                print("round %d rf %d: publish p50 %.2f p99 %.2f p99.9 %.2f ms; e2e p50 %.2f p99 %.2f p99.9 %.2f ms"
                      % (rnd + 1, rf, pub["p50"], pub["p99"], pub["p999"], e2e["p50"], e2e["p99"], e2e["p999"]),
                      flush=True)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n| round | replication factor | publish p50 / p99 / p99.9 (ms) | end-to-end p50 / p99 / p99.9 (ms) |")
    print("|---:|---:|---|---|")
    for rnd, rf, _rate, pub, e2e in rows:
        print("| %d | %d | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f |"
              % (rnd, rf, pub["p50"], pub["p99"], pub["p999"], e2e["p50"], e2e["p99"], e2e["p999"]))


if __name__ == "__main__":
    main()
