"""Helpers for the consumer-group tests (test_groups*.py)."""

import threading
import time
import uuid
from collections import defaultdict

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, TopicPartition

from util import admin, wait_until

# librdkafka answers committed()/OffsetFetch for a partition without a commit with this.
OFFSET_INVALID = -1001


def unique_group(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def gconsumer(bootstrap, group, **conf):
    """A confluent-kafka group consumer: manual commits, from the beginning."""
    c = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
    }
    c.update(conf)
    return Consumer(c)


def describe(bootstrap, group, a=None):
    a = a or admin(bootstrap)
    return a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)


def member_partitions(member, topic=None):
    return sorted(tp.partition for tp in member.assignment.topic_partitions
                  if topic is None or tp.topic == topic)


def describe_summary(d, topic=None):
    return "state=%s assignor=%r members=%r" % (
        d.state, d.partition_assignor,
        [(m.client_id, m.group_instance_id, member_partitions(m, topic)) for m in d.members])


def wait_stable(bootstrap, group, topic, members, partitions, timeout=30, a=None):
    """Waits until DescribeGroups says Stable with `members` members whose
    assignments cover 0..partitions-1 of topic exactly once. Returns the
    description."""
    a = a or admin(bootstrap)
    last = [None]

    def ok():
        d = describe(bootstrap, group, a)
        last[0] = d
        if d.state != ConsumerGroupState.STABLE or len(d.members) != members:
            return None
        owned = [p for m in d.members for p in member_partitions(m, topic)]
        if sorted(owned) != list(range(partitions)):
            return None
        return d

    try:
        return wait_until(ok, timeout, interval=0.25, what="group %s Stable with %d members covering %d partitions"
                          % (group, members, partitions))
    except AssertionError as e:
        raise AssertionError("%s; last DescribeGroups: %s" % (e, last[0] and describe_summary(last[0], topic)))


def committed_offsets(bootstrap, group, a=None):
    """{(topic, partition): (offset, metadata)} from OffsetFetch for the whole group."""
    a = a or admin(bootstrap)
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                        request_timeout=15)[group].result(timeout=30)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, "OffsetFetch error for %s-%d: %s" % (tp.topic, tp.partition, tp.error)
        out[(tp.topic, tp.partition)] = (tp.offset, tp.metadata)
    return out


def end_offsets(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "brook-ci-wm-" + uuid.uuid4().hex[:8]})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


class Poller:
    """Polls a confluent consumer in a background thread and records what it
    consumed and its rebalance callbacks, so several consumers can stay in a
    group from one process. Stop with stop(); close() afterwards (from the
    test thread) or pass close=True to stop()."""

    def __init__(self, consumer, topic, name="", commit_each_batch=False):
        self.c = consumer
        self.topic = topic
        self.name = name
        self.commit_each_batch = commit_each_batch
        self.records = []  # (partition, offset, key)
        self.assigned = []  # list of (monotonic, sorted partitions) per on_assign
        self.revoked = []
        self.lost = []
        self.errors = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._pause = threading.Event()
        self.c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.thread = threading.Thread(target=self._run, daemon=True, name="poller-" + name)
        self.thread.start()

    def _on_assign(self, c, parts):
        with self.lock:
            self.assigned.append((time.monotonic(), sorted(tp.partition for tp in parts)))

    def _on_revoke(self, c, parts):
        with self.lock:
            self.revoked.append((time.monotonic(), sorted(tp.partition for tp in parts)))

    def _on_lost(self, c, parts):
        with self.lock:
            self.lost.append((time.monotonic(), sorted(tp.partition for tp in parts)))

    def _run(self):
        while not self._stop.is_set():
            try:
                msgs = self.c.consume(num_messages=500, timeout=0.2)
            except Exception as e:  # closed under us, etc.
                self.errors.append(repr(e))
                return
            got = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(err))
                    continue
                got = True
                with self.lock:
                    self.records.append((m.partition(), m.offset(), m.key()))
            if got and self.commit_each_batch:
                try:
                    self.c.commit(asynchronous=False)
                except Exception as e:
                    self.errors.append("commit: %r" % e)

    def assignment(self):
        return sorted(tp.partition for tp in self.c.assignment())

    def consumed(self):
        with self.lock:
            return list(self.records)

    def stop(self, close=False):
        self._stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "poller %s did not stop" % self.name
        if close:
            self.c.close()


def positions_after(records):
    """{partition: max offset + 1} of (partition, offset, ...) records."""
    out = {}
    for r in records:
        out[r[0]] = max(out.get(r[0], 0), r[1] + 1)
    return out


# ------------------------------------------------------------------ member logs

class MemberLog:
    """Parsed log of a group_member.py process (see its docstring)."""

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.events = []
        try:
            with open(path) as f:
                data = f.read()
        except FileNotFoundError:
            data = ""
        lines = data.split("\n")
        # a killed writer may leave a torn last line (no newline): ignore it
        lines.pop()
        for line in lines:
            if not line:
                continue
            parts = line.split()
            kind = parts[0]
            if kind in ("A", "R"):
                ps = [int(x) for x in parts[2].split(",")] if len(parts) > 2 and parts[2] else []
                self.events.append((kind, float(parts[1]), ps))
            elif kind == "C" and len(parts) == 4:
                self.events.append(("C", int(parts[1]), int(parts[2]), parts[3]))
            elif kind in ("P", "K") and len(parts) == 3:
                self.events.append((kind, int(parts[1]), int(parts[2])))
            elif kind == "X":
                self.events.append(("X", float(parts[1])))
            elif kind == "E":
                self.events.append(("E", line[2:]))

    def consumed(self):
        return [(e[1], e[2], e[3]) for e in self.events if e[0] == "C"]

    def current_assignment(self):
        owned = set()
        for e in self.events:
            if e[0] == "A":
                owned = set(e[2])
            elif e[0] == "R":
                owned -= set(e[2])
        return sorted(owned)

    def errors(self):
        return [e[1] for e in self.events if e[0] == "E"]

    def periods(self, end_time=None):
        """Ownership periods: list of dict(partition, start, end, consumed=[offsets],
        acked=[offsets K], attempted=[offsets P]) in order. A period ends at the
        revoke of the partition, or is open (end=None) at the end of the log."""
        open_ = {}
        out = []
        for e in self.events:
            if e[0] == "A":
                for p in e[2]:
                    if p not in open_:
                        open_[p] = dict(member=self.name, partition=p, start=e[1], end=None,
                                        consumed=[], acked=[], attempted=[])
            elif e[0] == "R":
                for p in e[2]:
                    if p in open_:
                        per = open_.pop(p)
                        per["end"] = e[1]
                        out.append(per)
            elif e[0] == "C":
                if e[1] in open_:
                    open_[e[1]]["consumed"].append(e[2])
            elif e[0] == "K":
                if e[1] in open_:
                    open_[e[1]]["acked"].append(e[2])
            elif e[0] == "P":
                if e[1] in open_:
                    open_[e[1]]["attempted"].append(e[2])
        out.extend(open_.values())
        return out


def uncommitted(period):
    """Offsets consumed in an ownership period at or after the last
    acknowledged commit of that period: what a successor may legitimately read
    again."""
    floor = period["acked"][-1] if period["acked"] else -1
    return {o for o in period["consumed"] if o >= floor}


def count_by(records, key=lambda r: r):
    out = defaultdict(int)
    for r in records:
        out[key(r)] += 1
    return out
