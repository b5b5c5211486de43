"""Consumer groups with each client library's own group consumer, unmodified:
kafka-python, aiokafka and kcat -G consume and commit; the assignors the
clients ship (range, roundrobin, sticky, cooperative-sticky) split partitions
between two members; a member that leaves cleanly hands its partitions over
without waiting for the session timeout."""

import asyncio
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import ConsumerGroupState
from kafka import KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from group_util import (Poller, committed_offsets, describe, describe_summary, end_offsets, gconsumer,
                        member_partitions, unique_group, wait_stable)
from util import admin, create_topic, produce_keyed, producer, run, unique_topic, wait_until

PARTITIONS = 4
N = 600


@pytest.fixture
def topic_with_records(module_broker):
    topic = unique_topic("grp-cli")
    create_topic(module_broker.bootstrap, topic, PARTITIONS)
    dr = produce_keyed(producer(module_broker.bootstrap), topic, N)
    return topic, set(dr.acked.values()), end_offsets(module_broker.bootstrap, topic, PARTITIONS)


def committed_equals(bootstrap, group, topic, ends):
    got = committed_offsets(bootstrap, group)
    return {p: got.get((topic, p), (None,))[0] for p in ends} == ends


# ---------------------------------------------------------------- 4. each client's group consumer

def test_kafka_python_group_consumer(module_broker, topic_with_records):
    b = module_broker.bootstrap
    topic, produced, ends = topic_with_records
    group = unique_group("grp-kp")
    kc = KafkaConsumer(topic, bootstrap_servers=b, group_id=group, client_id="kp-member",
                       auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                       heartbeat_interval_ms=1000, request_timeout_ms=15000)
    try:
        seen = set()
        deadline = time.monotonic() + 60
        while seen != produced:
            assert time.monotonic() < deadline, "kafka-python group consumer read %d of %d records; assignment %r" % (
                len(seen), len(produced), kc.assignment())
            for tp, recs in kc.poll(timeout_ms=200).items():
                seen.update((r.partition, r.offset) for r in recs)
        d = describe(b, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 1, describe_summary(d)
        assert d.members[0].client_id == "kp-member" and d.partition_assignor == "range", describe_summary(d)
        assert member_partitions(d.members[0], topic) == list(range(PARTITIONS)), describe_summary(d)
        kc.commit()  # synchronous, the consumed positions
        assert committed_equals(b, group, topic, ends)
    finally:
        kc.close()
    d = describe(b, group)
    assert d.state == ConsumerGroupState.EMPTY and not d.members, describe_summary(d)


def test_aiokafka_group_consumer(module_broker, topic_with_records):
    b = module_broker.bootstrap
    topic, produced, ends = topic_with_records
    group = unique_group("grp-aio")

    async def main():
        c = AIOKafkaConsumer(topic, bootstrap_servers=b, group_id=group, client_id="aio-member",
                             auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=200,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, request_timeout_ms=15000)
        await c.start()
        try:
            seen = set()
            deadline = time.monotonic() + 60
            while seen != produced:
                assert time.monotonic() < deadline, "aiokafka group consumer read %d of %d; assignment %r" % (
                    len(seen), len(produced), c.assignment())
                for tp, recs in (await c.getmany(timeout_ms=200)).items():
                    seen.update((r.partition, r.offset) for r in recs)
            d = describe(b, group)
            assert d.state == ConsumerGroupState.STABLE and [m.client_id for m in d.members] == ["aio-member"], (
                describe_summary(d))
            # auto commit (every 200 ms) catches up with what was consumed
            deadline = time.monotonic() + 15
            while not committed_equals(b, group, topic, ends):
                assert time.monotonic() < deadline, "auto commit did not reach the end offsets %r: %r" % (
                    ends, committed_offsets(b, group))
                await asyncio.sleep(0.2)
            await c.commit()  # explicit commit too
        finally:
            await c.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    assert committed_equals(b, group, topic, ends)


def kcat_group(bootstrap, group, topic, *extra):
    """kcat -G (balanced consumer) until EOF on every assigned partition; no -o:
    kcat applies -o to every assigned partition, overriding committed offsets,
    so the start is the committed offset, else auto.offset.reset=earliest.
    Returns the set of (partition, offset) read."""
    r = run(["kcat", "-b", bootstrap, "-G", group, "-e", "-q", "-f", "%p:%o:%k\\n",
             "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
             "-X", "socket.timeout.ms=10000"] + list(extra) + [topic], timeout=90)
    err = r.stderr.decode(errors="replace")
    assert "ERROR" not in err, "kcat -G stderr:\n" + err
    seen = set()
    for line in r.stdout.decode().splitlines():
        if line:
            p, o, _k = line.split(":", 2)
            seen.add((int(p), int(o)))
    return seen


def test_kcat_balanced_consumer(module_broker, topic_with_records):
    b = module_broker.bootstrap
    topic, produced, ends = topic_with_records
    group = unique_group("grp-kcat")
    seen = kcat_group(b, group, topic, "-X", "client.id=kcat-member")
    assert seen == produced, "kcat -G read %d of %d records, %d unexpected" % (
        len(seen & produced), len(produced), len(seen - produced))
    # kcat commits (auto commit, and on close) the consumed offsets
    wait_until(lambda: committed_equals(b, group, topic, ends), 15, interval=0.25,
               what="kcat group's committed offsets == end offsets %r" % ends)
    # ... and a second run of the same group resumes there: nothing left to read
    again = kcat_group(b, group, topic)
    assert not again, "second kcat -G run of the group re-read %d records, e.g. %r" % (
        len(again), sorted(again)[:10])


# ---------------------------------------------------------------- 5. assignors

class KPoller:
    """A kafka-python group consumer polled in its own thread."""

    def __init__(self, bootstrap, topic, group, name, assignors):
        self.name = name
        self.records = []
        self.assigned = []
        self.errors = []
        self._stop = threading.Event()
        self.kw = dict(bootstrap_servers=bootstrap, group_id=group, client_id=name, auto_offset_reset="earliest",
                       enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                       request_timeout_ms=15000, partition_assignment_strategy=assignors)
        self.topic = topic
        self.thread = threading.Thread(target=self._run, daemon=True, name="kpoller-" + name)
        self.thread.start()

    def _run(self):
        try:
            c = KafkaConsumer(self.topic, **self.kw)
        except Exception as e:
            self.errors.append(repr(e))
            return
        try:
            while not self._stop.is_set():
                for tp, recs in c.poll(timeout_ms=200).items():
                    self.records.extend((r.partition, r.offset, r.key) for r in recs)
                self.assigned = sorted(tp.partition for tp in c.assignment())
        except Exception as e:
            self.errors.append(repr(e))
        finally:
            c.close()

    def assignment(self):
        return list(self.assigned)

    def consumed(self):
        return list(self.records)

    def stop(self, close=True):
        self._stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "kafka-python poller %s did not stop" % self.name


CONFLUENT_ASSIGNORS = ["range", "roundrobin", "cooperative-sticky"]
KAFKA_PYTHON_ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                          "sticky": StickyPartitionAssignor, "cooperative-sticky": CooperativeStickyAssignor}


def test_assignors_split_partitions(module_broker):
    """Seven groups at once (three confluent-kafka assignors, four kafka-python
    ones), two members each, on one 6-partition topic."""
    b = module_broker.bootstrap
    parts = 6
    topic = unique_topic("grp-assign")
    create_topic(b, topic, parts)
    produced = set(produce_keyed(producer(b), topic, 600).acked.values())
    groups = {}  # group -> (library, assignor, [pollers])
    try:
        for name in CONFLUENT_ASSIGNORS:
            g = unique_group("grp-ck-" + name)
            groups[g] = ("confluent-kafka", name, [
                Poller(gconsumer(b, g, **{"partition.assignment.strategy": name, "client.id": "ck-%s-%d" % (name, i)}),
                       topic, name="ck-%s-%d" % (name, i)) for i in range(2)])
        for name, cls in KAFKA_PYTHON_ASSIGNORS.items():
            g = unique_group("grp-kp-" + name)
            groups[g] = ("kafka-python", name, [KPoller(b, topic, g, "kp-%s-%d" % (name, i), (cls,))
                                                for i in range(2)])
        a = admin(b)
        failures = {}
        deadline = time.monotonic() + 60
        pending = dict(groups)
        while pending and time.monotonic() < deadline:
            for g, (lib, name, pollers) in list(pending.items()):
                errs = [(pl.name, pl.errors) for pl in pollers if pl.errors]
                assert not errs, errs
                d = describe(b, g, a)
                own = [pl.assignment() for pl in pollers]
                seen = {(r[0], r[1]) for pl in pollers for r in pl.consumed()}
                failures[g] = "%s %s: %s; members' own assignments %r; consumed %d/%d" % (
                    lib, name, describe_summary(d, topic), own, len(seen), len(produced))
                desc_own = sorted(member_partitions(m, topic) for m in d.members)
                if (d.state == ConsumerGroupState.STABLE and d.partition_assignor == name and len(d.members) == 2
                        and all(own) and sorted(own) == desc_own
                        and sorted(p for o in own for p in o) == list(range(parts)) and seen == produced):
                    del pending[g]
            time.sleep(0.25)
        assert not pending, "groups not split as expected:\n" + "\n".join(failures[g] for g in pending)
        for g, (lib, name, pollers) in groups.items():
            print("%s %s: %s" % (lib, name, [pl.assignment() for pl in pollers]))
    finally:
        for lib, name, pollers in groups.values():
            for pl in pollers:
                pl.stop(close=True)


# ---------------------------------------------------------------- 6. clean leave

def test_clean_leave_hands_partitions_over(module_broker, topic_with_records):
    """session.timeout.ms is 30 s here: only the LeaveGroup sent by close()
    can make the other member take over within the 20 s deadline."""
    b = module_broker.bootstrap
    topic, produced, ends = topic_with_records
    group = unique_group("grp-leave")
    conf = {"session.timeout.ms": 30000, "heartbeat.interval.ms": 1000}
    pa = Poller(gconsumer(b, group, **{"client.id": "leaver"}, **conf), topic, name="leaver", commit_each_batch=True)
    pb = Poller(gconsumer(b, group, **{"client.id": "stayer"}, **conf), topic, name="stayer", commit_each_batch=True)
    try:
        wait_stable(b, group, topic, 2, PARTITIONS, timeout=30)
        wait_until(lambda: pa.assignment() and pb.assignment(), 15, what="both members assigned")
        before = pb.assignment()
        pa.stop(close=True)  # LeaveGroup
        wait_until(lambda: pb.assignment() == list(range(PARTITIONS)), 20, interval=0.1,
                   what="the remaining member owning all %d partitions (it had %r)" % (PARTITIONS, before))
        d = wait_stable(b, group, topic, 1, PARTITIONS, timeout=10)
        assert [m.client_id for m in d.members] == ["stayer"], describe_summary(d, topic)
        # the group as a whole still read everything
        wait_until(lambda: {(r[0], r[1]) for r in pa.consumed() + pb.consumed()} == produced, 30,
                   what="all records consumed by the group")
        assert not pa.errors and not pb.errors, (pa.errors, pb.errors)
    finally:
        if pa.thread.is_alive():
            pa.stop(close=True)
        pb.stop(close=True)
    wait_until(lambda: committed_equals(b, group, topic, ends), 15, interval=0.25, what="committed == end offsets")
