#!/usr/bin/env python3
"""The throughput cost of transactions, Brook beside Apache Kafka in one run.

Starts a fresh Brook (the release binary, default config: fsync before ack)
and a fresh Apache Kafka 4.4 (ci/tests/apache_kafka.py, its defaults: page
cache, no fsync), then runs the Java client's TransactionBench
(ci/java/.../TransactionBench.java, one KafkaProducer, acks=all, linger 5 ms,
closed loop) against each: RECORDS records of --record-size bytes to a topic
of --partitions partitions, without transactions (idempotent) and in
transactions of 100 and of 10,000 records. Each case runs --rounds times,
brokers alternating; prints one line per run and a table of medians.

    ci/.venv/bin/python perf-scripts/txn_cost.py --records 200000 --record-size 1024

Bounded: each run sends a fixed number of records; a run that takes longer
than --run-timeout seconds is stopped. Both brokers and their data are
removed at the end.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "ci", "tests"))
from apache_kafka import ApacheKafka  # noqa: E402

BIN = os.path.join(REPO, "target", "release", "brook")
JARS = os.path.join(REPO, "ci", ".lab", "jars")
RESULT_RE = re.compile(r"RESULT records=(\d+) seconds=([\d.]+) records_per_s=(\d+) mb_per_s=([\d.]+) "
                       r"transactions=(\d+) commit_ms_avg=([\d.]+)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_brook(root):
    port = free_port()
    log = open(os.path.join(root, "brook.log"), "wb")
    proc = subprocess.Popen([BIN, "--data-dir", os.path.join(root, "brook-data"), "--listen",
                             "127.0.0.1:%d" % port], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(os.path.join(root, "brook.log"), "rb") as f:
            if b"brook ready" in f.read():
                return proc, "127.0.0.1:%d" % port
        time.sleep(0.05)
    raise SystemExit("brook did not start")


def create_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def run(bootstrap, topic, a, txn_size):
    cmd = ["java", "-cp", os.path.join(JARS, "*"), "dev.brook.interop.TransactionBench", bootstrap, topic,
           str(a.records), str(a.record_size), str(txn_size)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.run_timeout)
    m = RESULT_RE.search(r.stdout)
    if r.returncode != 0 or not m:
        raise SystemExit("TransactionBench failed (%d):\n%s\n%s" % (r.returncode, r.stdout[-2000:], r.stderr[-3000:]))
    return {"rps": int(m[3]), "mbps": float(m[4]), "txns": int(m[5]), "commit_ms": float(m[6])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--run-timeout", type=int, default=300)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="txn-cost-")
    brook_proc, kafka = None, None
    try:
        brook_proc, brook_bs = start_brook(root)
        kafka = ApacheKafka(os.path.join(root, "kafka"))
        kafka.format()
        kafka.start()
        results = {}
        for rnd in range(a.rounds):
            for txn_size in (0, 100, 10_000):
                for name, bs in (("brook", brook_bs), ("kafka", kafka.bootstrap)):
                    topic = "txn-cost-%d-%d" % (rnd, txn_size)
                    create_topic(bs, topic, a.partitions)
                    r = run(bs, topic, a, txn_size)
                    results.setdefault((name, txn_size), []).append(r)
                    print("round %d %-5s txn=%-5d %8d rec/s %7.1f MB/s %5d txns commit avg %.2f ms"
                          % (rnd, name, txn_size, r["rps"], r["mbps"], r["txns"], r["commit_ms"]), flush=True)
        print("\n| broker | transaction size | records/s (median of %d) | MB/s | commit avg ms |" % a.rounds)
        print("|---|---|---|---|---|")
        for (name, txn_size), rs in sorted(results.items()):
            med = statistics.median(x["rps"] for x in rs)
            print("| %s | %s | %.0f | %.1f | %.2f |" % (
                name, txn_size or "none (idempotent)", med, med * a.record_size / 1e6,
                statistics.median(x["commit_ms"] for x in rs)))
    finally:
        if brook_proc:
            brook_proc.send_signal(signal.SIGTERM)
            brook_proc.wait(30)
        if kafka:
            kafka.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
