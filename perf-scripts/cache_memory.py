#!/usr/bin/env python3
"""What the batch cache really holds: a quiet partition receives N small
batches, each in its own Produce request (acks=all, one record), and the
broker's RSS is read before, after, and after the producer's connection is
gone. By default every batch comes on a connection of its own (a client that
connects, sends and leaves: each connection's read buffer is at least
256 KiB); `--one-connection` sends them all through one librdkafka producer.
Run it against two builds to compare.

    ci/.venv/bin/python perf-scripts/cache_memory.py --brook target/release/brook [--batches 2000]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status_mib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def mem(pid):
    """(VmRSS, VmData) in MiB: what is resident, and what is allocated (a
    256 KiB read buffer pinned by a 100-byte batch is mostly untouched, so
    it shows in VmData, not in VmRSS)."""
    return status_mib(pid, "VmRSS"), status_mib(pid, "VmData")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brook", required=True)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--one-connection", action="store_true")
    a = ap.parse_args()
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    work = tempfile.mkdtemp(prefix="cache-mem-")
    port = free_port()
    bootstrap = "127.0.0.1:%d" % port
    log = open(os.path.join(work, "brook.log"), "wb")
    proc = subprocess.Popen([a.brook, "--data-dir", os.path.join(work, "data"), "--listen", bootstrap,
                             "--shards", "2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"brook ready" not in open(os.path.join(work, "brook.log"), "rb").read():
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("broker did not start")
            time.sleep(0.05)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("quiet", 1, 1)])["quiet"].result(30)
        time.sleep(1)
        before = mem(proc.pid)
        value = b"x" * a.value_bytes
        started = time.monotonic()
        if a.one_connection:
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                          "enable.idempotence": False})
            for i in range(a.batches):
                p.produce("quiet", value=value, key=b"k%d" % i, partition=0)
                p.flush(10)
                if time.monotonic() - started > 300:
                    sys.exit("took over 300 s")
        else:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "tests"))
            import kproto as kp
            for i in range(a.batches):
                with kp.Conn(bootstrap) as c:
                    err, _ = c.produce("quiet", 0, kp.encode_batch([(b"k%d" % i, value)]))
                    assert err == 0, err
                if time.monotonic() - started > 300:
                    sys.exit("took over 300 s")
        time.sleep(2)
        after = mem(proc.pid)
        p = None
        time.sleep(3)
        closed = mem(proc.pid)
        print("binary: %s" % a.brook)
        print("batches: %d of one %d-byte record, one request each, %s" % (
            a.batches, a.value_bytes, "one connection" if a.one_connection else "a connection each"))
        for i, name in enumerate(("VmRSS", "VmData")):
            print("%s MiB: before %.1f | after the batches %.1f | after the producer closed %.1f"
                  " | held: %.1f MiB" % (name, before[i], after[i], closed[i], closed[i] - before[i]))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
