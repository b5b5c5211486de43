"""Helpers for the consumer-group tests (test_groups*.py)."""

import queue
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
        self.current = []  # c.assignment(), refreshed by the polling thread
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._calls = queue.Queue()
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

    def call(self, fn, timeout=30):
        """Runs fn(consumer) on the polling thread and returns its result
        (librdkafka calls from two Python threads can deadlock on the GIL)."""
        done = threading.Event()
        box = {}
        self._calls.put((fn, done, box))
        assert done.wait(timeout), "poller %s did not run the call within %ds" % (self.name, timeout)
        if "exc" in box:
            raise box["exc"]
        return box["result"]

    def _run(self):
        while not self._stop.is_set():
            while not self._calls.empty():
                fn, done, box = self._calls.get()
                try:
                    box["result"] = fn(self.c)
                except Exception as e:
                    box["exc"] = e
                done.set()
            try:
                msgs = self.c.consume(num_messages=500, timeout=0.2)
            except Exception as e:  # closed under us, etc.
                self.errors.append(repr(e))
                return
            # librdkafka's assignment() must not be called from another thread
            # while this one serves rebalance callbacks (the GIL is held
            # across the call: deadlock), so the current one is kept here.
            self.current = sorted(tp.partition for tp in self.c.assignment())
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
        return list(self.current)

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


# ------------------------------------------------------------------ raw group protocol

FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
OFFSET_COMMIT = 8
OFFSET_FETCH = 9

NONE = 0
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
MEMBER_ID_REQUIRED = 79


class GroupConn:
    """Hand-encoded, non-flexible group requests over one kproto connection.
    JoinGroup and SyncGroup can block until the rebalance completes, so use
    one connection per member (and a thread for a blocking call)."""

    def __init__(self, bootstrap, client_id="brook-raw-group"):
        import kproto
        self.kp = kproto
        self.c = kproto.Conn(bootstrap, timeout=30.0, client_id=client_id)

    def close(self):
        self.c.close()

    def find_coordinator(self, group):
        """v1 -> (error, node_id, host, port)"""
        kp = self.kp
        r = self.c.request(FIND_COORDINATOR, 1, kp.string(group) + kp.i8(0))
        r.i32()
        err = r.i16()
        r.string()
        return err, r.i32(), r.string(), r.i32()

    def join(self, group, member_id="", session_ms=10000, rebalance_ms=10000, protocol_type="consumer",
             protocols=(("range", b"meta"),), version=1, timeout=30):
        """v1 or v4 (same request) -> dict(error, generation, protocol, leader, member_id, members)"""
        kp = self.kp
        body = (kp.string(group) + kp.i32(session_ms) + kp.i32(rebalance_ms) + kp.string(member_id)
                + kp.string(protocol_type) + kp.array([kp.string(n) + kp.bytes_(m) for n, m in protocols]))
        r = self.c.request(JOIN_GROUP, version, body, timeout=timeout)
        if version >= 2:
            r.i32()
        return dict(error=r.i16(), generation=r.i32(), protocol=r.string(), leader=r.string(),
                    member_id=r.string(), members=r.array(lambda r: (r.string(), r.bytes_())))

    def sync(self, group, generation, member_id, assignments=(), timeout=30):
        """v1 -> (error, assignment bytes)"""
        kp = self.kp
        body = (kp.string(group) + kp.i32(generation) + kp.string(member_id)
                + kp.array([kp.string(m) + kp.bytes_(a) for m, a in assignments]))
        r = self.c.request(SYNC_GROUP, 1, body, timeout=timeout)
        r.i32()
        return r.i16(), r.bytes_()

    def heartbeat(self, group, generation, member_id):
        """v1 -> error"""
        kp = self.kp
        r = self.c.request(HEARTBEAT, 1, kp.string(group) + kp.i32(generation) + kp.string(member_id))
        r.i32()
        return r.i16()

    def leave(self, group, member_id):
        """v1 -> error"""
        kp = self.kp
        r = self.c.request(LEAVE_GROUP, 1, kp.string(group) + kp.string(member_id))
        r.i32()
        return r.i16()

    def commit(self, group, generation, member_id, topic, offsets):
        """OffsetCommit v2, offsets {partition: (offset, metadata)} -> {partition: error}"""
        kp = self.kp
        parts = [kp.i32(p) + kp.i64(o) + kp.string(md) for p, (o, md) in sorted(offsets.items())]
        body = (kp.string(group) + kp.i32(generation) + kp.string(member_id) + kp.i64(-1)
                + kp.array([kp.string(topic) + kp.array(parts)]))
        r = self.c.request(OFFSET_COMMIT, 2, body)
        out = {}
        for _ in range(r.i32()):
            r.string()
            for _ in range(r.i32()):
                p = r.i32()
                out[p] = r.i16()
        return out

    def fetch_offsets(self, group, topic, partitions):
        """OffsetFetch v1 -> {partition: (offset, metadata, error)}"""
        kp = self.kp
        body = kp.string(group) + kp.array([kp.string(topic) + kp.array([kp.i32(p) for p in partitions])])
        r = self.c.request(OFFSET_FETCH, 1, body)
        out = {}
        for _ in range(r.i32()):
            r.string()
            for _ in range(r.i32()):
                p = r.i32()
                out[p] = (r.i64(), r.string(), r.i16())
        return out
