#!/usr/bin/env python3
"""Produce latency with the log cleaner compacting beside it, and without.

Starts a fresh Brook (release binary, defaults: fsync before ack) with the
cleaner polling every 100 ms, fills a compacted topic (`cleanup.policy=compact`,
--segment-mib segments (16 MiB), min.cleanable.dirty.ratio 0.01) with --fill-seconds of 1 KiB
records cycling over --keys keys (brook-bench, cleaner off while filling, so
the whole backlog is dirty), then measures a fixed-rate produce+consume load
on a separate plain topic (brook-bench --mode both, 100 B, acks=all,
8 partitions) twice:

  off: the broker restarted with log.cleaner.enable=false;
  on:  restarted with the cleaner on, so it compacts the backlog during
       the measured window (the cleaner's bytes read and written during the
       window are taken from the metrics endpoint and printed, to show it
       really ran);
  throttled: a fresh backlog, then as "on" with
       log.cleaner.io.max.bytes.per.second = --io-limit.

Rounds alternate off/on --rounds times; prints one line per run and the
medians. Bounded: every load has a fixed duration; the broker and its data
are removed at the end.

    ci/.venv/bin/python perf-scripts/cleaner_p99.py --rate 200000 --duration 20
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "brook")
BENCH = os.path.join(REPO, "target", "release", "brook-bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Brook:
    def __init__(self, root):
        self.root = root
        self.port, self.metrics_port = free_port(), free_port()
        self.bootstrap = "127.0.0.1:%d" % self.port
        self.proc = None

    def start(self, cleaner, io_limit=None):
        cfg = os.path.join(self.root, "brook.toml")
        with open(cfg, "w") as f:
            f.write('"log.cleaner.enable" = %s\n"log.cleaner.backoff.ms" = 100\n' % ("true" if cleaner else "false"))
            if io_limit:
                f.write('"log.cleaner.io.max.bytes.per.second" = %d\n' % io_limit)
        log_path = os.path.join(self.root, "brook.log")
        log = open(log_path, "ab")
        start = log.tell()
        self.proc = subprocess.Popen(
            [BIN, "--data-dir", os.path.join(self.root, "data"), "--listen", self.bootstrap,
             "--metrics-listen", "127.0.0.1:%d" % self.metrics_port, "--config", cfg],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            with open(log_path, "rb") as f:
                f.seek(start)
                if b"brook ready" in f.read():
                    return
            time.sleep(0.05)
        raise SystemExit("brook did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)

    def scrape(self):
        """(cleaner bytes read, written, {flush histogram bucket: count},
        {event-loop delay bucket: count})."""
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read().decode()
        get = lambda name: float(re.search(r"^%s (\S+)$" % name, text, re.M)[1])
        hist = lambda name: {m[1]: float(m[2]) for m in re.finditer(
            r'^%s_bucket\{le="([^"]+)"\} (\S+)$' % name, text, re.M)}
        return (get("brook_log_cleaner_read_bytes_total"), get("brook_log_cleaner_written_bytes_total"),
                hist("brook_log_flush_duration_seconds"), hist("brook_shard_loop_delay_seconds"))


def p99_ms(before, after):
    """The upper bound of the histogram bucket holding the 99th percentile of
    the observations (flushes: write + fdatasync; event-loop delays) between
    two scrapes."""
    diff = [(float(le), after[le] - before.get(le, 0)) for le in after]
    diff.sort()
    total = diff[-1][1] if diff else 0
    for le, cum in diff:
        if total and cum >= 0.99 * total:
            return le * 1000
    return float("nan")


def bench(bootstrap, out, *args):
    cmd = [BENCH, "--bootstrap", bootstrap, "--json", out] + list(args)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200000, help="records/s of the measured load")
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--fill-seconds", type=int, default=15)
    ap.add_argument("--fill-rate", type=int, default=60000, help="1 KiB records/s while filling")
    ap.add_argument("--keys", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--segment-mib", type=int, default=16, help="segment.bytes of the compacted topic, MiB")
    ap.add_argument("--io-limit", type=int, default=50_000_000,
                    help="log.cleaner.io.max.bytes.per.second of the throttled case")
    ap.add_argument("--keep", action="store_true", help="keep the broker's directory (and log) at the end")
    ap.add_argument("--cases", default="off,on,throttled", help="which of off,on,throttled to run")
    a = ap.parse_args()
    cases = a.cases.split(",")
    root = tempfile.mkdtemp(prefix="cleaner-p99-", dir=os.path.expanduser("~"))
    b = Brook(root)
    try:
        b.start(cleaner=False)
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        conf = {"cleanup.policy": "compact", "segment.bytes": str(a.segment_mib << 20),
                "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
        for f in admin.create_topics([NewTopic("compacted", 4, 1, config=conf)]).values():
            f.result(30)
        rows = []
        for r in range(a.rounds):
            # A fresh dirty backlog for each round's "on" run, cleaner off.
            b.stop()
            b.start(cleaner=False)
            bench(b.bootstrap, os.path.join(root, "fill.json"), "--mode", "produce", "--topic", "compacted",
                  "--no-create", "--record-size", "1024", "--key-distribution", "round-robin",
                  "--key-count", str(a.keys), "--rate", str(a.fill_rate), "--warmup", "0s",
                  "--duration", "%ds" % a.fill_seconds)
            for case in cases:
                if case == "throttled":
                    # What the "on" run left is clean: a fresh backlog.
                    b.stop()
                    b.start(cleaner=False)
                    bench(b.bootstrap, os.path.join(root, "fill.json"), "--mode", "produce", "--topic",
                          "compacted", "--no-create", "--record-size", "1024", "--key-distribution",
                          "round-robin", "--key-count", str(a.keys), "--rate", str(a.fill_rate),
                          "--warmup", "0s", "--duration", "%ds" % a.fill_seconds)
                b.stop()
                b.start(cleaner=case != "off", io_limit=a.io_limit if case == "throttled" else None)
                before = b.scrape()
                res = bench(b.bootstrap, os.path.join(root, "run.json"), "--mode", "both", "--topic", "plain",
                            "--partitions", "8", "--record-size", "100", "--acks", "all",
                            "--rate", str(a.rate), "--warmup", "3s", "--duration", "%ds" % a.duration)
                after = b.scrape()
                row = {
                    "round": r, "cleaner": case,
                    "rps": res["produce"]["records_per_sec"],
                    "pub_p50": res["publish"]["latency_ms"]["p50"],
                    "pub_p99": res["publish"]["latency_ms"]["p99"],
                    "e2e_p50": res["end_to_end"]["latency_ms"]["p50"],
                    "e2e_p99": res["end_to_end"]["latency_ms"]["p99"],
                    "cleaned_read_mb": (after[0] - before[0]) / 1e6,
                    "cleaned_written_mb": (after[1] - before[1]) / 1e6,
                    "flush_p99": p99_ms(before[2], after[2]),
                    "loop_p99": p99_ms(before[3], after[3]),
                }
                rows.append(row)
                print("round %(round)d cleaner %(cleaner)-9s  %(rps)9.0f rec/s  publish p50 %(pub_p50)6.2f p99 %(pub_p99)6.2f ms"
                      "  e2e p50 %(e2e_p50)6.2f p99 %(e2e_p99)6.2f ms  cleaner read %(cleaned_read_mb)7.1f MB"
                      " wrote %(cleaned_written_mb)6.1f MB  flush p99 <= %(flush_p99)g ms  loop delay p99 <= %(loop_p99)g ms" % row, flush=True)
        print("\nmedians")
        for c in cases:
            rs = [x for x in rows if x["cleaner"] == c]
            med = lambda k: statistics.median(x[k] for x in rs)
            print("cleaner %-9s  publish p50 %.2f p99 %.2f ms  e2e p50 %.2f p99 %.2f ms  (%d runs)"
                  % (c, med("pub_p50"), med("pub_p99"), med("e2e_p50"), med("e2e_p99"), len(rs)))
    finally:
        b.stop()
        if a.keep:
            print("kept", root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
