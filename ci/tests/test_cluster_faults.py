"""A Brook cluster under the faults an operator meets, beyond those of
test_cluster.py: a rolling restart of every broker under an idempotent acks=all
producer and a committing consumer group; acks=all refused with
NOT_ENOUGH_REPLICAS (and nothing appended) while the ISR is below
min.insync.replicas; the Java client's default (idempotent, acks=all) producer
across a SIGKILL and restart of a partition leader; and a follower whose disk
fills up (a small loop-mounted ext4 the test makes and removes).

Records are checked one by one: content, order per partition, every
acknowledged record exactly once at its acknowledged offset, offsets dense."""

import contextlib
import os
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import kproto as kp
from test_java_client import ProduceStream
from test_jbod import LoopDisk
from cluster_util import SESSION_MS, Cluster, cluster, cluster_of, create, partitions_of
from util import (Delivery, admin, check_keyed, consume_all, key_index, payload, produce_keyed, producer,
                  unique_topic, wait_until)

NOT_ENOUGH_REPLICAS = 19
# What Kafka's OffsetCommit answers while a group's coordinator moves or its
# member must rejoin (Kafka maps a failed append to __consumer_offsets to
# NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE).
COORDINATOR_MOVE_ERRORS = {"NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS",
                           "REQUEST_TIMED_OUT", "UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION",
                           "REBALANCE_IN_PROGRESS"}


# ------------------------------------------------------------------ helpers

def fenced_wait(c, alive, via):
    """Waits until the brokers' metadata lists exactly `alive` (a killed one
    is fenced after its session timeout)."""
    c.wait_brokers(sorted(alive), via, timeout=SESSION_MS / 1000 + 30)


def not_in_isr(c, node, via):
    """(topic, partition) of every partition that has `node` as a replica but
    not in its ISR, over every topic in the metadata (internal ones too)."""
    try:
        md = admin(via.bootstrap).list_topics(timeout=10)
    except KafkaException as e:
        return ["metadata error: %s" % e]
    out = []
    for t in md.topics.values():
        for p in t.partitions.values():
            if node in p.replicas and node not in p.isrs:
                out.append((t.topic, p.id))
    return sorted(out)


def wait_in_every_isr(c, node, via, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        missing = not_in_isr(c, node, via)
        if not missing:
            return
        assert time.monotonic() < deadline, (
            "node %d not back in the ISR of every partition it replicates within %ds: missing from %r"
            % (node, timeout, missing[:10]))
        time.sleep(0.2)


def wait_partitions(c, topic, n, via):
    wait_until(lambda: len(c.leaders(topic, via)) == n and all(l >= 0 for l in c.leaders(topic, via).values()),
               20, what="%d partitions of %s with leaders" % (n, topic))


def log_end(bootstrap, topic, partition):
    """The partition's log end offset (high watermark), from ListOffsets."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lo-" + topic, "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=15, cached=False)[1]
    finally:
        c.close()


class StreamProducer(threading.Thread):
    """An acks=all librdkafka producer writing keys k0, k1, .. at a bounded
    rate until stop() (or `limit` records); delivery reports are collected.
    The loop is bounded by `limit` and by `max_s` seconds."""

    def __init__(self, bootstrap, topic, rate, limit=200_000, max_s=240):
        super().__init__(daemon=True)
        self.p = producer(bootstrap, acks="all", **{"enable.idempotence": True, "message.timeout.ms": 120000})
        self.topic, self.rate, self.limit, self.max_s = topic, rate, limit, max_s
        self.dr = Delivery()
        self.sent = 0
        self.left = None
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()

    def run(self):
        t0 = time.monotonic()
        while self.sent < self.limit and not self._halt.is_set() and time.monotonic() - t0 < self.max_s:
            if self.sent > (time.monotonic() - t0) * self.rate:
                self.p.poll(0.01)
                continue
            i = self.sent
            try:
                self.p.produce(self.topic, key=("k%d" % i).encode(), value=payload(i), on_delivery=self.dr)
            except BufferError:
                self.p.poll(0.05)
                continue
            self.sent += 1
            self.p.poll(0)
        self.left = self.p.flush(150)

    def finish(self, timeout=180):
        self.stop()
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish within %ds" % timeout
        assert self.left == 0, "%d records neither acknowledged nor failed" % self.left


@contextlib.contextmanager
def started(c, request, cleanup=()):
    """cluster_util.cluster_of() for a Cluster built (and adjusted) by the
    test, then the `cleanup` callables (unmounts), whatever happens."""
    try:
        with cluster_of(c, request):
            yield c
    finally:
        for fn in cleanup:
            fn()


# ------------------------------------------------------------------ 2. NOT_ENOUGH_REPLICAS

def test_acks_all_refused_below_min_insync_and_nothing_appended(tmp_path, request):
    """RF 3, min.insync.replicas=3: a follower killed and fenced shrinks the
    ISR to two, and acks=all writes are refused with NOT_ENOUGH_REPLICAS --
    by the broker (raw Produce), by librdkafka without retries, and by
    librdkafka with retries once message.timeout.ms runs out -- and not one
    of them is appended (the log end does not move, the partition reads the
    same). acks=1 still writes. Once the broker is back in the ISR, acks=all
    works again."""
    with cluster(tmp_path, request) as c:
        topic = unique_topic("nerep")
        create(c, topic, 3, via=c.node(1), rf=3, config={"min.insync.replicas": "3"})
        wait_partitions(c, topic, 3, c.node(1))
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, c.node(1)).values()),
                   30, what="full ISR")
        p0_leader = c.leaders(topic, c.node(1))[0]
        dr = produce_keyed(producer(c.bootstrap, acks="all", **{"enable.idempotence": True}), topic, 300,
                           partition=0)
        assert not dr.errors, dr.errors[:3]
        assert sorted(off for _, off in dr.acked.values()) == list(range(300))

        victim = next(b for b in c.brokers if b.node != p0_leader)
        leader = c.node(p0_leader)
        victim.kill()
        fenced_wait(c, [b.node for b in c.brokers if b is not victim], leader)
        wait_until(lambda: partitions_of(c, topic, leader)[0][2] == sorted(b.node for b in c.brokers
                                                                          if b is not victim),
                   30, what="the ISR of partition 0 shrunk to the live brokers")
        assert c.leaders(topic, leader)[0] == p0_leader, "partition 0 changed leader"
        assert log_end(leader.bootstrap, topic, 0) == 300

        # The broker's own answer: NOT_ENOUGH_REPLICAS, no offset.
        with kp.Conn(leader.bootstrap) as conn:
            for i in range(3):
                err, base = conn.produce(topic, 0, kp.encode_batch([(b"raw%d" % i, b"x")]), acks=-1)
                assert err == NOT_ENOUGH_REPLICAS, (err, base)
                assert base == -1, base

        # librdkafka, no retries: the broker's error as it is.
        p = producer(c.bootstrap, acks="all", retries=0, **{"message.timeout.ms": 10000})
        refused = produce_keyed(p, topic, 20, start=300, partition=0, flush_timeout=60)
        assert not refused.acked, "acknowledged below min.insync.replicas: %r" % list(refused.acked.items())[:3]
        assert len(refused.errors) == 20
        codes = {e for _, e in refused.errors}
        assert all("NOT_ENOUGH_REPLICAS" in e and "AFTER_APPEND" not in e for e in codes), codes

        # librdkafka, retrying (the default) with a short message timeout: it
        # retries NOT_ENOUGH_REPLICAS until the timeout, then reports either.
        errs = []

        def on_delivery(err, msg):
            errs.append(err)

        p = producer(c.bootstrap, acks="all", **{"message.timeout.ms": 4000, "retry.backoff.ms": 200})
        for i in range(20):
            p.produce(topic, key=b"retry%d" % i, value=b"r", partition=0, on_delivery=on_delivery)
        assert p.flush(60) == 0
        print("librdkafka with retries reports: %r" % sorted({e.name() for e in errs if e is not None}))
        assert len(errs) == 20 and all(e is not None for e in errs), errs
        assert {e.code() for e in errs} <= {KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._MSG_TIMED_OUT}, \
            {e.name() for e in errs}

        # Nothing of it was appended: same log end, same records.
        assert log_end(leader.bootstrap, topic, 0) == 300
        check_keyed(consume_all(leader.bootstrap, topic, 1), 300, acked=dr.acked)

        # acks=1 to the same partition writes, right after the 300.
        dr1 = produce_keyed(producer(c.bootstrap, acks=1), topic, 100, start=300, partition=0)
        assert not dr1.errors, dr1.errors[:3]
        assert sorted(off for _, off in dr1.acked.values()) == list(range(300, 400))
        with kp.Conn(leader.bootstrap) as conn:
            err, base = conn.produce(topic, 0, kp.encode_batch([(b"raw-acks1", b"x")]), acks=1)
            assert (err, base) == (0, 400)
            # ... and acks=all is still refused.
            assert conn.produce(topic, 0, kp.encode_batch([(b"raw-again", b"x")]), acks=-1)[0] == NOT_ENOUGH_REPLICAS
        assert log_end(leader.bootstrap, topic, 0) == 401

        # The broker returns, catches up, rejoins the ISR: acks=all works again.
        victim.start()
        c.wait_brokers([1, 2, 3], leader)
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, leader).values()),
                   60, what="the returned broker in every ISR")
        lead_now = c.node(c.leaders(topic, leader)[0])
        with kp.Conn(lead_now.bootstrap) as conn:
            err, base = conn.produce(topic, 0, kp.encode_batch([(b"raw-back", b"x")]), acks=-1)
            assert (err, base) == (0, 401), (err, base)
        dr2 = produce_keyed(producer(c.bootstrap, acks="all", **{"enable.idempotence": True}), topic, 100,
                            start=400, partition=0)
        assert not dr2.errors, dr2.errors[:3]
        assert sorted(off for _, off in dr2.acked.values()) == list(range(402, 502))

        # The partition, record by record: 300 + 100 (acks=1) + raw + raw + 100.
        recs = consume_all(lead_now.bootstrap, topic, 1)[0]
        assert [r[0] for r in recs] == list(range(502)), "offsets not dense"
        keys = [r[1] for r in recs]
        want = ([b"k%d" % i for i in range(400)] + [b"raw-acks1", b"raw-back"]
                + [b"k%d" % i for i in range(400, 500)])
        assert keys == want, [(i, a, b) for i, (a, b) in enumerate(zip(keys, want)) if a != b][:5]
        for off, key, value, _ in recs:
            if key.startswith(b"k"):
                assert value == payload(key_index(key)), (off, key)
        for k, at in list(dr.acked.items()) + list(dr1.acked.items()) + list(dr2.acked.items()):
            assert recs[at[1]][1] == k and at[0] == 0, (k, at)


# ------------------------------------------------------------------ 1. rolling restart

class GroupReader(threading.Thread):
    """One member of a consumer group: reads, and after every poll that
    returned records commits the positions synchronously (a commit may fail
    while the coordinator moves; the next one carries the same offsets on).
    Keeps, per partition, every (offset, key) it received, and the offsets of
    its last successful commit. Bounded by `max_s` seconds."""

    def __init__(self, bootstrap, group, topic, partitions, max_s=240):
        super().__init__(daemon=True)
        self.partitions = partitions
        self.conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 10000}
        self.topic, self.max_s = topic, max_s
        self.got = defaultdict(list)
        self.committed = {}
        self.commit_errors = []
        self.consume_errors = []
        self.events = []
        self.exc = None
        self._halt = threading.Event()

    def stop(self):
        self._halt.set()

    def count(self):
        return sum(len(v) for v in self.got.values())

    def run(self):
        try:
            cons = Consumer(self.conf)
            cons.subscribe([self.topic],
                           on_assign=lambda c, ps: self.events.append(("assign", time.monotonic(), len(ps))),
                           on_revoke=lambda c, ps: self.events.append(("revoke", time.monotonic(), len(ps))))
            t0 = time.monotonic()
            while not self._halt.is_set() and time.monotonic() - t0 < self.max_s:
                if self._read(cons):
                    self._commit(cons)
            # The last commit must land, with a position for every partition
            # (not in the middle of a rebalance): retried, bounded.
            for _ in range(60):
                if self._commit(cons, every=True):
                    break
                self._read(cons)
            else:
                raise AssertionError("final commit failed: %r" % self.commit_errors[-3:])
            cons.close()
        except BaseException as e:  # reported by the test
            self.exc = e

    def _read(self, cons):
        msgs = cons.consume(500, 0.5)
        for m in msgs:
            if m.error() is not None:
                self.consume_errors.append(str(m.error()))
                continue
            self.got[m.partition()].append((m.offset(), m.key()))
        return msgs

    def _commit(self, cons, every=False):
        pos = [tp for tp in cons.position(cons.assignment()) if tp.offset >= 0]
        if every and len(pos) < self.partitions:
            return False
        if not pos:
            return True
        try:
            done = cons.commit(offsets=pos, asynchronous=False)
        except KafkaException as e:
            self.commit_errors.append(e.args[0])
            return False
        bad = [tp.error for tp in done if tp.error is not None]
        if bad:
            self.commit_errors.extend(bad)
            return False
        for tp in done:
            self.committed[tp.partition] = tp.offset
        return True


def test_rolling_restart_under_idempotent_load_and_a_committing_group(tmp_path, request):
    """Each broker in turn gets SIGTERM (controlled shutdown), is started
    again, and the next goes only once it is back in the ISR of every
    partition, as an operator rolls a cluster. Meanwhile an idempotent acks=all
    producer writes to an RF 3, min.insync.replicas=2 topic and a group member
    reads and commits. Every acknowledged record is there once, in order, at
    its acknowledged offset; nothing fails; the member's commits are what the
    group holds; a new member reads exactly the records after them."""
    with cluster(tmp_path, request) as c:
        topic = unique_topic("roll")
        parts = 6
        create(c, topic, parts, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
        wait_partitions(c, topic, parts, c.node(1))
        group = "g-" + topic
        load = StreamProducer(c.bootstrap, topic, rate=1500)
        reader = GroupReader(c.bootstrap, group, topic, parts)
        load.start()
        reader.start()
        try:
            wait_until(lambda: len(load.dr.acked) > 2000 and reader.committed, 60,
                       what="2000 acknowledged and a first commit")
            for b in c.brokers:
                others = [o for o in c.brokers if o is not b]
                before = len(load.dr.acked)
                assert b.terminate() == 0, "node %d exit code on SIGTERM\n%s" % (b.node, b.tail(40))
                fenced_wait(c, [o.node for o in others], others[0])
                b.start()
                c.wait_brokers([1, 2, 3], others[0])
                wait_in_every_isr(c, b.node, others[0], timeout=90)
                # The load goes on between restarts (bounded wait).
                wait_until(lambda: len(load.dr.acked) > before + 1000, 60,
                           what="1000 more acknowledged after node %d's restart" % b.node)
                assert not load.dr.errors, load.dr.errors[:5]
                assert reader.exc is None, reader.exc
            # Every broker restarted once. The member (which may have had to
            # rejoin when its coordinator moved) catches up with what was
            # written during the restarts and stops with a final commit; the
            # producer writes some more for the next member.
            rolled = len(load.dr.acked)
            wait_until(lambda: sum(reader.committed.values()) >= rolled, 90,
                       what="the member's commits past the %d records acknowledged by the end of the restarts"
                       % rolled)
            reader.stop()
            reader.join(60)
            assert not reader.is_alive(), "group member did not stop"
            assert reader.exc is None, reader.exc
            at_stop = len(load.dr.acked)
            wait_until(lambda: len(load.dr.acked) > at_stop + 1000, 60, what="1000 more after the member stopped")
        finally:
            load.finish()
            reader.stop()
        assert not load.dr.errors, load.dr.errors[:5]
        n = len(load.dr.acked)
        assert n == load.sent, (n, load.sent)
        print("rolling restart: %d acknowledged; the member read %d (with re-reads after rejoining), "
              "assignments/revocations %r, failed commits %r"
              % (n, reader.count(), [e[0] for e in reader.events], [e.name() for e in reader.commit_errors]))
        assert not reader.consume_errors, reader.consume_errors[:5]

        # Every acknowledged record exactly once, in order, at its offset.
        log = consume_all(c.node(2).bootstrap, topic, parts)
        check_keyed(log, n, acked=load.dr.acked)
        at = {p: {off: key for off, key, _, _ in recs} for p, recs in log.items()}

        # What the member read is the log (redeliveries after a rejoin are
        # re-reads of the same offsets), and it read every offset below its
        # final commit and none past it.
        committed = reader.committed
        assert sorted(committed) == list(range(parts)), committed
        for p in range(parts):
            seen = reader.got[p]
            for off, key in seen:
                assert at[p].get(off) == key, "partition %d offset %d: member read %r, log has %r" % (
                    p, off, key, at[p].get(off))
            assert {off for off, _ in seen} == set(range(committed[p])), (
                "partition %d: member's offsets are not exactly 0..%d" % (p, committed[p]))

        # The group holds those commits, and a new member reads exactly the rest.
        probe = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group, "enable.auto.commit": False})
        held = probe.committed([TopicPartition(topic, p) for p in range(parts)], timeout=30)
        probe.close()
        assert {tp.partition: tp.offset for tp in held} == committed
        rest_total = sum(len(log[p]) - committed[p] for p in range(parts))
        assert rest_total >= 1000, rest_total
        cons = Consumer({"bootstrap.servers": c.node(3).bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
        cons.subscribe([topic])
        rest = defaultdict(list)
        deadline = time.monotonic() + 90
        got = 0
        while got < rest_total and time.monotonic() < deadline:
            for m in cons.consume(500, 1.0):
                assert m.error() is None, m.error()
                rest[m.partition()].append((m.offset(), m.key()))
                got += 1
        # a little longer: nothing more may come
        for m in cons.consume(500, 2.0):
            assert m.error() is None, m.error()
            rest[m.partition()].append((m.offset(), m.key()))
        cons.close()
        for p in range(parts):
            want = [(off, key) for off, key, _, _ in log[p][committed[p]:]]
            assert rest[p] == want, "partition %d: new member read %d records from %r, expected %d from %d" % (
                p, len(rest[p]), rest[p][:1], len(want), committed[p])

        # Last, the commits that failed: while the coordinator moves a commit
        # may fail, but only with the errors Kafka answers then, which
        # clients handle (find the coordinator again, or rejoin);
        # librdkafka's own errors start with _.
        unexpected = [e.name() for e in reader.commit_errors
                      if not e.name().startswith("_") and e.name() not in COORDINATOR_MOVE_ERRORS]
        assert not unexpected, "OffsetCommit failed with %r during the restarts (Kafka answers %s)" % (
            unexpected, "/".join(sorted(COORDINATOR_MOVE_ERRORS)))


# ------------------------------------------------------------------ 3. the Java client

def test_java_idempotent_producer_across_a_leader_kill(tmp_path, request, procs):
    """The Java client's default producer (idempotent, acks=all; ProduceStream
    prints one "ACK i partition offset" per acknowledged record) keeps sending
    to an RF 3, min.insync.replicas=2 topic while the leader of partition 0 is
    SIGKILLed, fenced, and started again. No send fails; every record is
    acknowledged once and is in the log exactly once, in order, at its
    acknowledged offset."""
    with cluster(tmp_path, request) as c:
        topic = unique_topic("java-failover")
        parts, n = 4, 30_000
        create(c, topic, parts, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
        wait_partitions(c, topic, parts, c.node(1))
        run = ProduceStream(procs, c.bootstrap, topic, n, 20, tmp_path)
        run.wait_progress(3000, 90)
        victim = c.node(c.leaders(topic, c.node(1))[0])
        others = [b for b in c.brokers if b is not victim]
        victim.kill()
        fenced_wait(c, [b.node for b in others], others[0])
        assert c.leaders(topic, others[0])[0] in [b.node for b in others]
        at_fence = run.progress
        run.wait_progress(at_fence + 2000, 90)
        print("java producer: %d acknowledged at the fence, %d at the restart of node %d"
              % (at_fence, run.progress, victim.node))
        victim.start()
        acked = run.finish(150)
        assert run.lines[-1] == "END %d 0" % n, run.lines[-1]
        check_keyed(consume_all(others[0].bootstrap, topic, parts), n, acked=acked)
        # The restarted broker catches up and rejoins every ISR.
        wait_in_every_isr(c, victim.node, others[0])


# ------------------------------------------------------------------ 4. a follower's disk fills up

class SmallDisk(LoopDisk):
    """A small ext4 file system in a file, loop-mounted at `mount` (as
    test_jbod.py's disks), with 1 KiB blocks and none reserved for root
    (Brook runs as root here), and a filler file that takes every free
    block."""

    def __init__(self, image, mount, size="256M"):
        super().__init__(image, mount, size=size, mkfs_args=("-m", "0", "-b", "1024"))
        self.filler = self.mount / "filler"

    def free_bytes(self):
        st = os.statvfs(str(self.mount))
        return st.f_bavail * st.f_frsize

    def fill(self):
        """Takes every free block (fallocate, in halving chunks until even
        4 KiB fails with ENOSPC). Returns the bytes taken."""
        import errno
        fd = os.open(str(self.filler), os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            off, chunk = 0, 1 << 30
            while chunk >= 4096:
                try:
                    os.posix_fallocate(fd, off, chunk)
                    off += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
            return off
        finally:
            os.close(fd)

    def free(self):
        self.filler.unlink()


def big_value(i):
    """payload(i) padded to about 4 KiB, so that a few thousand records use
    up a follower's preallocated segment space."""
    v = payload(i)
    return v + b"#" * (4096 - len(v))


def check_big(log, keys, acked):
    """As util.check_keyed for records written with big_value: keys exactly
    `keys`, each once, at its acknowledged (partition, offset), values intact,
    keys increasing and offsets dense per partition."""
    seen = {}
    for p, recs in log.items():
        assert [r[0] for r in recs] == list(range(len(recs))), "partition %d offsets not dense" % p
        last = -1
        for off, key, value, _ in recs:
            i = key_index(key)
            assert key not in seen, "duplicate %r at %d/%d and %r" % (key, p, off, seen[key])
            seen[key] = (p, off)
            assert value == big_value(i), "partition %d offset %d key %r: bad value" % (p, off, key)
            assert i > last, "partition %d order broken at offset %d" % (p, off)
            last = i
    missing, extra = set(keys) - set(seen), set(seen) - set(keys)
    assert not missing and not extra, "missing %d (e.g. %r), unexpected %d (e.g. %r)" % (
        len(missing), sorted(missing)[:5], len(extra), sorted(extra)[:5])
    bad = [(k, acked[k], seen.get(k)) for k in acked if seen.get(k) != acked[k]]
    assert not bad, "%d records not at their acknowledged (partition, offset), e.g. %r" % (len(bad), bad[:5])


def raw_metadata(bootstrap):
    """Metadata v1 for every topic, asked of exactly this broker (a client
    library may ask any broker it knows): (live brokers, {topic: {partition:
    (leader, sorted replicas, sorted isr)}})."""
    with kp.Conn(bootstrap, timeout=15) as conn:
        r = conn.request(kp.METADATA, 1, kp.i32(-1))
        brokers = sorted(b[0] for b in r.array(lambda r: (r.i32(), r.string(), r.i32(), r.string())))
        r.i32()  # controller id
        topics = {}

        def partition(r):
            r.i16()
            return r.i32(), r.i32(), sorted(r.array(lambda r: r.i32())), sorted(r.array(lambda r: r.i32()))

        for _ in range(r.i32()):
            r.i16()
            name = r.string()
            r.i8()
            topics[name] = {q: (l, reps, isr) for q, l, reps, isr in r.array(partition)}
        return brokers, topics


def log_lines(b, *words, n=5):
    """The last `n` lines of a broker's log that contain one of `words`,
    without colour codes."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", b.log_text())
    return [l[:300] for l in text.splitlines() if any(w in l for w in words)][-n:]


def missing_from_isrs(node, via):
    """(topic, partition) where `node` is a replica but not in the ISR, in
    `via`'s own metadata; or why the metadata is not complete."""
    brokers, topics = raw_metadata(via.bootstrap)
    if node not in brokers:
        return "node %d not among the live brokers %r" % (node, brokers)
    return sorted((t, q) for t, parts in topics.items() for q, (_, reps, isr) in parts.items()
                  if node in reps and node not in isr)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_follower_with_a_full_disk_leaves_the_isr_and_returns(tmp_path, request):
    """Node 3's data directory (partitions and the metadata quorum's log) is
    a 256 MB loop-mounted ext4, and node 3 follows the partitions written.
    Its disk filled up (a file takes every free block), acks=all writes to an
    RF 3, min.insync.replicas=2 topic go on without an error: node 3 cannot
    append what it fetches, falls behind and leaves the ISR after
    replica.lag.time.max.ms. It stays up and serves (metadata, reads of the
    partition it leads). The cluster's metadata changes meanwhile (topics are
    created, so the quorum's log grows on every voter, node 3 included). Once
    the file is removed node 3 catches up by itself and rejoins every ISR, and
    its copy holds every acknowledged record, of the new topics too (read
    from it alone after the others stop). Metadata is asked of node 1 itself
    once the disk is full (node 3's own view may lag)."""
    disk = SmallDisk(tmp_path / "node3.img", tmp_path / "node3-disk")
    c = Cluster(tmp_path)
    for b in c.brokers:
        with open(b.workdir / "brook.toml", "a") as f:
            f.write('"replica.lag.time.max.ms" = 2000\n')
    full, n1 = c.node(3), c.node(1)
    disk.attach()
    full.data_dir = disk.mount / "brook"
    with started(c, request, cleanup=[disk.detach]):
        topic = unique_topic("diskfull")
        create(c, topic, 3, via=n1, rf=3, config={"min.insync.replicas": "2"})
        wait_partitions(c, topic, 3, n1)
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, n1).values()),
                   30, what="full ISR")
        leaders = c.leaders(topic, n1)
        written = sorted(q for q, l in leaders.items() if l != 3)
        own = sorted(q for q, l in leaders.items() if l == 3)
        assert written, leaders
        p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True, "message.timeout.ms": 120000})
        dr = Delivery()
        keys = []

        def write(start, n):
            for i in range(start, start + n):
                key = ("k%d" % i).encode()
                while True:
                    try:
                        p.produce(topic, key=key, value=big_value(i), partition=written[i % len(written)],
                                  on_delivery=dr)
                        break
                    except BufferError:
                        p.poll(0.1)
                keys.append(key)
                p.poll(0)
            assert p.flush(150) == 0, "not delivered within 150 s"
            assert not dr.errors, dr.errors[:5]

        write(0, 500)
        # Node 3 leads `own` (if any): a few records there to read from it later.
        own_dr = produce_keyed(producer(c.bootstrap, acks="all"), topic, 50, start=100_000,
                               partition=own[0]) if own else None

        taken = disk.fill()
        print("filler took %d bytes; %d bytes free" % (taken, disk.free_bytes()))
        # Far more than the follower has preallocated: 4 KiB records, 24 MB.
        write(500, 6000)
        wait_until(lambda: all(3 not in raw_metadata(n1.bootstrap)[1][topic][q][2] for q in written), 60,
                   what="node 3 out of the ISR of the partitions written")
        write(6500, 1000)
        # It cannot append, so it stays out.
        isr_now = raw_metadata(n1.bootstrap)[1][topic]
        assert all(3 not in isr_now[q][2] for q in written), isr_now
        assert "No space left on device" in full.log_text(), "node 3 never hit the full disk"
        print("node 3 log while full: %d lines mention a failed append" % full.log_text().count("cannot append"))
        # It still serves: metadata, and reads of what it led.
        assert full.alive(), "node 3 exited with its disk full:\n%s" % full.tail(40)
        brokers, topics = raw_metadata(full.bootstrap)
        assert topic in topics and sorted(topics[topic]) == [0, 1, 2], topics.get(topic)
        if own:
            with kp.Conn(full.bootstrap) as conn:
                f = conn.fetch(topic, own[0], 0, max_wait_ms=0, min_bytes=0)
                assert f["error"] == 0, f["error"]
                got = [k for b in kp.decode_batches(f["records"]) for (_o, _t, k, _v) in b["records"]]
                assert got == [b"k%d" % i for i in range(100_000, 100_050)], got[:3]

        # The metadata changes while node 3's disk is full: topics created
        # (about 1.2 KB of quorum log, more than one 1 KiB block on node 3's
        # file system). Retried while the quorum elects a controller, should
        # node 3 have been it.
        new_topics = []
        for t in range(3):
            name = unique_topic("diskfull-meta%d" % t)
            new_topics.append(name)
            deadline = time.monotonic() + 30
            while True:
                try:
                    create(c, name, 12, via=n1, rf=3)
                    break
                except KafkaException as e:
                    assert time.monotonic() < deadline, "cannot create a topic with node 3's disk full: %s" % e
                    time.sleep(0.5)
        write(7500, 500)

        # Space again: node 3 learns what changed meanwhile (its own metadata
        # has the new topics, and has it among the live brokers), catches up
        # by itself and rejoins every ISR, of the new topics too.
        disk.free()

        def node3_view():
            brokers, topics = raw_metadata(full.bootstrap)
            return (brokers, sorted(t for t in new_topics if t in topics))

        deadline = time.monotonic() + 60
        while node3_view() != ([1, 2, 3], sorted(new_topics)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    "60 s after its disk has room again, node 3 has not caught up with the metadata: its own"
                    " view lists brokers %r and %d of the %d topics created while its disk was full; node 1"
                    " lists brokers %r. Node 3's log: %r" % (
                        node3_view()[0], len(node3_view()[1]), len(new_topics), raw_metadata(n1.bootstrap)[0],
                        log_lines(full, "ERROR", "fencing")))
            time.sleep(0.5)
        wait_until(lambda: not missing_from_isrs(3, n1) or None, 90,
                   what="node 3 back in every ISR after its disk has room again")
        write(8000, 500)
        new_dr = {}
        for t in new_topics:
            new_dr[t] = produce_keyed(producer(c.bootstrap, acks="all", **{"enable.idempotence": True}), t, 120)
            assert not new_dr[t].errors, new_dr[t].errors[:3]
        wait_until(lambda: not missing_from_isrs(3, n1) or None, 60,
                   what="node 3 in every ISR after more writes")
        by_partition = consume_all(n1.bootstrap, topic, 3)
        own_log = {q: by_partition.pop(q) for q in own}
        check_big(by_partition, keys, dr.acked)
        if own:
            check_keyed({own[0]: own_log[own[0]]}, 50, start=100_000, acked=own_dr.acked)

        # Node 3's own copy: the others stop (controlled shutdown hands it
        # every leadership, of the topics created while its disk was full
        # too), and everything acknowledged is read from it.
        assert c.node(1).terminate() == 0
        assert c.node(2).terminate() == 0
        for t in [topic] + new_topics:
            wait_until(lambda: set(c.leaders(t, full).values()) == {3}, 30,
                       what="node 3 leading every partition of %s" % t)
        by_partition = consume_all(full.bootstrap, topic, 3)
        for q in own:
            by_partition.pop(q)
        check_big(by_partition, keys, dr.acked)
        for t in new_topics:
            check_keyed(consume_all(full.bootstrap, t, 12), 120, acked=new_dr[t].acked)
