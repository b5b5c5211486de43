#!/usr/bin/env python3
"""Failover time of a three-broker Brook cluster on this machine.

Starts three brokers (README's "A cluster", on free ports, fresh data dirs,
`broker.session.timeout.ms` as given), creates a topic with one partition and
three replicas (min.insync.replicas=2), and keeps an idempotent acks=all
producer (confluent-kafka) writing to it. Then, KILLS times: kill -9 the
partition's leader, measure the time from the kill to the first record
acknowledged after it (by the new leader), restart the killed broker and wait
until it is back in the ISR. Prints p50 and max over the kills, and checks at
the end that every acknowledged record is in the log once, in order.

    ci/.venv/bin/python perf-scripts/failover.py --kills 20 --session-ms 3000

The failover time is bounded below by the session timeout (a killed broker is
fenced when the controller has not heard from it for that long) plus the
client's metadata refresh; Kafka's default session is 9 s.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BROOK_BIN", os.path.join(REPO, "target", "release", "brook"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, root, node, voters, ctl, session_ms):
        self.node, self.port, self.ctl = node, free_port(), ctl
        self.dir = os.path.join(root, "node%d" % node)
        os.makedirs(self.dir)
        self.cfg = os.path.join(self.dir, "brook.toml")
        with open(self.cfg, "w") as f:
            f.write('"broker.session.timeout.ms" = %d\n' % session_ms)
        self.args = [BIN, "--node-id", str(node), "--data-dir", os.path.join(self.dir, "data"),
                     "--listen", "127.0.0.1:%d" % self.port, "--controller-listen", "127.0.0.1:%d" % ctl,
                     "--voters", voters, "--config", self.cfg, "--no-pin", "--shards", "1"]
        self.proc = None

    def start(self):
        self.started = getattr(self, "started", 0) + 1
        log = open(os.path.join(self.dir, "brook.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            with open(os.path.join(self.dir, "brook.log"), "rb") as f:
                if f.read().count(b"brook ready") >= self.started:
                    return
            time.sleep(0.05)
        raise SystemExit("node %d did not start" % self.node)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def partition0(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10)
    p = md.topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--session-ms", type=int, default=3000)
    ap.add_argument("--rate", type=int, default=2000, help="records/s offered")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="brook-failover-")
    ctl = [free_port() for _ in range(3)]
    voters = ",".join("%d@127.0.0.1:%d" % (i + 1, ctl[i]) for i in range(3))
    nodes = [Node(root, i + 1, voters, ctl[i], a.session_ms) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        boot = ",".join("127.0.0.1:%d" % n.port for n in nodes)
        time.sleep(2)
        topic = "failover"
        admin = AdminClient({"bootstrap.servers": boot})
        fs = admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])
        fs[topic].result(30)
        acks = []  # (time, offset, value)
        errors = []
        lock = threading.Lock()
        stop = threading.Event()

        def produce():
            p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True,
                          "linger.ms": 1, "message.timeout.ms": 300000, "request.timeout.ms": 5000})

            def cb(err, msg):
                with lock:
                    if err:
                        errors.append(str(err))
                    else:
                        acks.append((time.monotonic(), msg.offset(), msg.value()))
            i = 0
            t0 = time.monotonic()
            while not stop.is_set():
                if i > (time.monotonic() - t0) * a.rate:
                    p.poll(0.001)
                    continue
                try:
                    p.produce(topic, value=b"%d" % i, partition=0, on_delivery=cb)
                    i += 1
                except BufferError:
                    p.poll(0.01)
                p.poll(0)
            p.flush(120)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        time.sleep(3)
        times = []
        for k in range(a.kills):
            leader, _ = partition0(boot, topic)
            victim = nodes[leader - 1]
            with lock:
                before = len(acks)
            t_kill = time.monotonic()
            victim.kill()
            while True:
                with lock:
                    later = [x for x in acks[before:] if x[0] > t_kill]
                if later:
                    break
                if time.monotonic() - t_kill > 120:
                    raise SystemExit("no acknowledgement within 120 s of kill %d" % k)
                time.sleep(0.005)
            took = later[0][0] - t_kill
            times.append(took)
            print("kill %2d: node %d, first acknowledged produce after %.2f s" % (k + 1, leader, took), flush=True)
            victim.start()
            others = ",".join("127.0.0.1:%d" % n.port for n in nodes if n is not victim)
            deadline = time.time() + 60
            while partition0(others, topic)[1] != [1, 2, 3]:
                if time.time() > deadline:
                    raise SystemExit("node %d did not rejoin the ISR" % victim.node)
                time.sleep(0.2)
        stop.set()
        t.join(180)
        times.sort()
        print("failover over %d kills: p50 %.2f s, max %.2f s, min %.2f s (session %d ms)" % (
            len(times), statistics.median(times), times[-1], times[0], a.session_ms))
        with lock:
            acked = {v: o for _, o, v in acks}
        c = Consumer({"bootstrap.servers": boot, "group.id": "failover-check", "enable.partition.eof": True})
        c.assign([TopicPartition(topic, 0, 0)])
        seen = []
        while True:
            m = c.poll(5)
            if m is None:
                raise SystemExit("consumer stalled")
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise SystemExit(str(m.error()))
            seen.append((m.offset(), m.value()))
        c.close()
        offsets = [o for o, _ in seen]
        values = [v for _, v in seen]
        assert offsets == list(range(len(offsets))), "offsets not dense"
        assert len(set(values)) == len(values), "a record appears twice"
        where = {v: o for o, v in seen}
        lost = [v for v, o in acked.items() if where.get(v) != o]
        print("records: %d acknowledged, %d in the log, %d acknowledged but missing or moved, %d errors"
              % (len(acked), len(seen), len(lost), len(errors)))
        if lost:
            sys.exit(1)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
