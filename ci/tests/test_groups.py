"""Consumer groups against brook with real clients: the issue's scenarios.

1. Three consumer processes in one group over a 12-partition topic consume a
   stream that is produced meanwhile; one is SIGKILLed mid-stream; the two
   survivors take over its partitions after the session timeout. Every record
   is consumed at least once, the survivors resume exactly at the dead
   member's last commit, and the duplicates the rebalance caused are counted
   and bounded by what was consumed but not yet committed.
2. Committed offsets (with metadata) survive a broker restart (SIGTERM and
   SIGKILL) and the group resumes exactly there.
3. Two groups on one topic each see every record.

The coordinator uses Kafka's defaults: a new group's first rebalance waits
group.initial.rebalance.delay.ms = 3 s; session timeouts are >= 6 s.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.structs import OffsetAndMetadata

from group_util import (MemberLog, Poller, committed_offsets, end_offsets, gconsumer, unique_group,
                        uncommitted, wait_stable)
from util import Delivery, create_topic, produce_keyed, producer, spawn, unique_topic, wait_until

HELPER = str(Path(__file__).resolve().parent / "group_member.py")


# ---------------------------------------------------------------- 1. SIGKILL a member

PARTITIONS = 12
N = 30_000
RATE = 2000.0  # records/s: the stream lasts about 15 s
COMMIT_EVERY = 300


class StreamProducer(threading.Thread):
    """Produces keys s0..s{n-1} (value = the sequence number) at about `rate`
    records/s; delivery reports go to self.dr (key -> (partition, offset))."""

    def __init__(self, bootstrap, topic, n, rate):
        super().__init__(daemon=True, name="stream-producer")
        self.p = producer(bootstrap, acks="all")
        self.topic, self.n, self.rate = topic, n, rate
        self.dr = Delivery()
        self.produced = 0
        self.left = None
        self.exc = None

    def run(self):
        try:
            t0 = time.monotonic()
            for i in range(self.n):
                while True:
                    try:
                        self.p.produce(self.topic, key=b"s%d" % i, value=b"%d" % i, on_delivery=self.dr)
                        break
                    except BufferError:
                        self.p.poll(0.05)
                self.produced = i + 1
                self.p.poll(0)
                ahead = (i + 1) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    self.p.poll(ahead)
            self.left = self.p.flush(60)
        except Exception as e:  # reported by the test
            self.exc = e


def read_logs(logs):
    return {n: MemberLog(n, p) for n, p in logs.items()}


def test_three_members_one_sigkilled_mid_stream(broker, procs, tmp_path):
    topic = unique_topic("grp-kill")
    group = unique_group("grp-kill")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    names = ["m0", "m1", "m2"]
    victim = "m1"
    logs = {n: str(tmp_path / ("%s.log" % n)) for n in names}
    members = {}
    for n in names:
        out = open(tmp_path / ("%s.out" % n), "wb")
        members[n] = spawn(procs, [sys.executable, HELPER, broker.bootstrap, topic, group, logs[n], n,
                                   str(COMMIT_EVERY), "240"], stdout=out, stderr=subprocess.STDOUT)
        out.close()
    prod = StreamProducer(broker.bootstrap, topic, N, RATE)
    prod.start()

    def outputs():
        return "\n".join("--- %s:\n%s" % (n, (tmp_path / ("%s.out" % n)).read_text(errors="replace")[-3000:])
                         for n in names)

    # -- all three members own partitions and consume
    def all_consuming():
        for n, p in members.items():
            assert p.poll() is None, "member %s exited with %s\n%s" % (n, p.returncode, outputs())
        ls = read_logs(logs)
        cur = {n: l.current_assignment() for n, l in ls.items()}
        if any(not c for c in cur.values()) or sorted(sum(cur.values(), [])) != list(range(PARTITIONS)):
            return None
        for l in ls.values():
            last_a = max(i for i, e in enumerate(l.events) if e[0] == "A")
            if not any(e[0] == "C" for e in l.events[last_a:]):
                return None
        return cur

    cur = wait_until(all_consuming, 60, interval=0.2, what="three members each owning and consuming partitions")
    print("assignment with three members: %r" % cur)

    # -- the victim has committed on every partition it owns and has consumed past its last commit
    def victim_ready():
        l = MemberLog(victim, logs[victim])
        pers = [per for per in l.periods() if per["end"] is None]
        if not pers or any(not per["acked"] for per in pers):
            return None
        if not any(uncommitted(per) for per in pers):
            return None
        return pers

    wait_until(victim_ready, 60, interval=0.05, what="victim with commits on all its partitions and records past them")
    kill_t = time.monotonic()
    os.killpg(members[victim].pid, signal.SIGKILL)
    members[victim].wait(10)
    produced_at_kill = prod.produced
    print("SIGKILLed %s after %d of %d records were produced" % (victim, produced_at_kill, N))

    # -- the survivors consume everything
    prod.join(120)
    assert not prod.is_alive() and prod.exc is None and prod.left == 0, (prod.exc, prod.left)
    assert not prod.dr.errors, prod.dr.errors[:5]
    produced = {v: k.decode() for k, v in prod.dr.acked.items()}  # (p, o) -> key
    assert len(produced) == N

    def all_consumed():
        for n in names:
            if n != victim:
                assert members[n].poll() is None, "member %s exited with %s\n%s" % (
                    n, members[n].returncode, outputs())
        seen = set()
        for l in read_logs(logs).values():
            seen.update((p, o) for p, o, _k in l.consumed())
        missing = set(produced) - seen
        return not missing or None

    try:
        wait_until(all_consumed, 120, interval=0.5, what="every produced record consumed by some member")
    except AssertionError:
        ls = read_logs(logs)
        raise AssertionError("not everything was consumed; member assignments now: %r; errors: %r\n%s" % (
            {n: l.current_assignment() for n, l in ls.items()}, {n: l.errors()[-5:] for n, l in ls.items()},
            outputs()))

    # -- the group: Stable, the two survivors, every partition owned exactly once
    survivors = [n for n in names if n != victim]
    d = wait_stable(broker.bootstrap, group, topic, 2, PARTITIONS, timeout=30)
    assert sorted(m.client_id for m in d.members) == survivors, [m.client_id for m in d.members]
    ls = read_logs(logs)
    by_client = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}
    for n in survivors:
        assert ls[n].current_assignment() == by_client[n], (
            "member %s's own view of its assignment %r differs from DescribeGroups %r"
            % (n, ls[n].current_assignment(), by_client[n]))

    # -- stop the survivors cleanly (final commit, LeaveGroup)
    for n in survivors:
        members[n].send_signal(signal.SIGTERM)
    for n in survivors:
        rc = members[n].wait(30)
        assert rc == 0, "member %s exit code %s\n%s" % (n, rc, outputs())
    ls = read_logs(logs)

    # -- analysis
    consumers_of = defaultdict(list)  # (p, o) -> [member]
    for n, l in ls.items():
        for p, o, k in l.consumed():
            assert (p, o) in produced, "%s consumed %d/%d which was never produced" % (n, p, o)
            assert produced[(p, o)] == k, "%s consumed key %s at %d/%d, produced %s" % (n, k, p, o, produced[(p, o)])
            consumers_of[(p, o)].append(n)
    missing = sorted(set(produced) - set(consumers_of))
    assert not missing, "%d produced records never consumed, e.g. %r" % (len(missing), missing[:10])

    # The victim's partitions at its death: the survivors resume exactly at its
    # last acknowledged commit (or at a commit it had sent but not yet logged).
    vlog = ls[victim]
    dead = [per for per in vlog.periods() if per["end"] is None]
    assert dead, "victim owned nothing at its death"
    final = committed_offsets(broker.bootstrap, group)
    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    report = []
    for per in dead:
        p = per["partition"]
        acked = per["acked"][-1]
        later = [o for o in per["attempted"] if o > acked]
        allowed = [acked] + later
        first = None
        for n in survivors:
            for sp in ls[n].periods():
                if sp["partition"] == p and sp["start"] > kill_t and sp["consumed"]:
                    if first is None or sp["start"] < first[0]:
                        first = (sp["start"], sp["consumed"][0], n)
        vmax = max(per["consumed"]) if per["consumed"] else None
        if first is None:
            # nothing was left to read on p after the victim's last commit
            assert final[(topic, p)][0] in allowed and final[(topic, p)][0] == ends[p], (
                "partition %d: no survivor consumed it after the kill; victim's last commit %d (unlogged %r), "
                "group's committed offset now %r, end offset %d" % (p, acked, later, final[(topic, p)], ends[p]))
            report.append("p%d: victim committed %d, consumed up to %r, nothing left" % (p, acked, vmax))
            continue
        start, s, who = first
        assert s in allowed, (
            "partition %d: survivor %s resumed at offset %d, but the victim's last acknowledged commit was %d"
            " (commits sent but unacknowledged: %r); %s" % (
                p, who, s, acked, later, "records skipped" if s > acked else "resumed before the commit"))
        report.append("p%d: victim committed %d, consumed up to %r; %s resumed at %d" % (p, acked, vmax, who, s))

    # Duplicates: only records consumed but not yet committed by a member that
    # then lost the partition (the victim, or a survivor at a rebalance).
    dups = {po: ns for po, ns in consumers_of.items() if len(ns) > 1}
    explainable = set()
    victim_uncommitted = set()
    for n, l in ls.items():
        for per in l.periods():
            u = {(per["partition"], o) for o in uncommitted(per)}
            explainable |= u
            if n == victim and per["end"] is None:
                victim_uncommitted |= u
    unexplained = sorted(set(dups) - explainable)
    extra_reads = sum(len(ns) - 1 for ns in dups.values())
    dead_parts = {per["partition"] for per in dead}
    dups_dead = {po for po in dups if po[0] in dead_parts}
    print("partitions of the victim at its death: %s" % sorted(dead_parts))
    print("\n".join(report))
    print("victim consumed %d records, %d of them after its last commit; survivors re-read %d of those"
          % (len(vlog.consumed()), len(victim_uncommitted), len(victim_uncommitted & set(dups))))
    print("duplicates: %d records read more than once (%d extra reads); %d on the victim's partitions, %d elsewhere"
          % (len(dups), extra_reads, len(dups_dead), len(dups) - len(dups_dead)))
    print("member errors: %r" % {n: l.errors() for n, l in ls.items() if l.errors()})
    assert not unexplained, (
        "%d duplicates were not consumed-but-uncommitted by a member that lost the partition, e.g. %r"
        % (len(unexplained), [(po, dups[po]) for po in unexplained[:10]]))
    assert len(dups) <= len(explainable)

    # After the survivors' final commits the group's offsets are the end offsets.
    final = committed_offsets(broker.bootstrap, group)
    assert {p: final.get((topic, p), (None,))[0] for p in range(PARTITIONS)} == ends


# ---------------------------------------------------------------- 2. restart the broker

def confluent_committed(bootstrap, group, topic, partitions):
    """{p: (offset, metadata)} as a fresh confluent-kafka consumer of the group sees them."""
    c = gconsumer(bootstrap, group)
    try:
        return {tp.partition: (tp.offset, tp.metadata) for tp in
                c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)}
    finally:
        c.close()


def kafka_python_committed(bootstrap, group, topic, partitions):
    """{p: (offset, metadata)} as a fresh kafka-python consumer of the group sees them."""
    kc = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                       request_timeout_ms=15000)
    try:
        out = {}
        for p in range(partitions):
            cm = kc.committed(KTopicPartition(topic, p), metadata=True)
            out[p] = (cm.offset, cm.metadata) if cm is not None else None
        return out
    finally:
        kc.close()


def consume_from_group(bootstrap, group, topic, ends, timeout=60):
    """Subscribes a new confluent consumer in `group` and reads until the end
    offsets `ends` {p: end} on every partition; returns {p: [(offset, key)]}.
    Closes without committing."""
    c = gconsumer(bootstrap, group)
    try:
        c.subscribe([topic])
        got = defaultdict(list)
        deadline = time.monotonic() + timeout
        while any((got[p][-1][0] + 1 if got[p] else -1) < e for p, e in ends.items()):
            assert time.monotonic() < deadline, "timed out reading group %s: got up to %r, ends %r, assignment %r" % (
                group, {p: got[p][-1][0] if got[p] else None for p in ends}, ends, c.assignment())
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    continue
                got[m.partition()].append((m.offset(), m.key()))
        return got
    finally:
        c.close()


def test_commit_restart_resume_at_committed_offsets(broker):
    """Note on metadata: confluent-kafka-python sends commit metadata with its
    C string's trailing NUL ('m-0' is stored as 'm-0\\0') and reads it back as a
    C string, so its committed() shows garbage after metadata committed by
    another client; each library's metadata is therefore read back with the
    same library (the raw bytes are what each client sent, as Kafka stores them)."""
    topic = unique_topic("grp-restart")
    group = unique_group("grp-restart")
    parts = 3
    create_topic(broker.bootstrap, topic, parts)
    dr = produce_keyed(producer(broker.bootstrap), topic, 300)
    by_po = {v: k for k, v in dr.acked.items()}
    ends = end_offsets(broker.bootstrap, topic, parts)
    assert sum(ends.values()) == 300 and all(e >= 10 for e in ends.values()), ends

    # A group member reads everything, then commits chosen offsets with metadata.
    c = gconsumer(broker.bootstrap, group)
    c.subscribe([topic])
    n = 0
    deadline = time.monotonic() + 30
    while n < 300:
        assert time.monotonic() < deadline, "group consumer read only %d of 300 records" % n
        n += sum(1 for m in c.consume(num_messages=500, timeout=0.2) if m.error() is None)
    want = {0: ends[0] // 3, 1: ends[1] // 2, 2: 1}
    res = c.commit(offsets=[TopicPartition(topic, p, o, metadata="m-%d" % p) for p, o in want.items()],
                   asynchronous=False)
    assert all(tp.error is None for tp in res), res
    c.close()

    broker.restart()

    assert confluent_committed(broker.bootstrap, group, topic, parts) == {p: (o, "m-%d" % p) for p, o in want.items()}
    got = consume_from_group(broker.bootstrap, group, topic, ends)
    for p in range(parts):
        assert got[p] == [(o, by_po[(p, o)]) for o in range(want[p], ends[p])], (
            "partition %d: after the restart the group read offsets %r..., expected %d..%d" % (
                p, [o for o, _ in got[p][:5]], want[p], ends[p] - 1))

    # kafka-python, as a group member, commits other offsets with other
    # metadata; then the broker is SIGKILLed.
    want2 = {0: ends[0] - 1, 1: 0, 2: ends[2] // 2}
    kc = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                       auto_offset_reset="earliest", request_timeout_ms=15000, session_timeout_ms=6000,
                       heartbeat_interval_ms=1000)
    try:
        deadline = time.monotonic() + 30
        while not kc.assignment():
            assert time.monotonic() < deadline, "kafka-python consumer got no assignment"
            kc.poll(timeout_ms=200, max_records=1)
        assert {tp.partition for tp in kc.assignment()} == set(range(parts))
        kc.commit({KTopicPartition(topic, p): OffsetAndMetadata(o, "kp-%d" % p, -1) for p, o in want2.items()})
    finally:
        kc.close()

    broker.restart(kill=True)

    assert kafka_python_committed(broker.bootstrap, group, topic, parts) == {
        p: (o, "kp-%d" % p) for p, o in want2.items()}
    got = consume_from_group(broker.bootstrap, group, topic, ends)
    for p in range(parts):
        assert [o for o, _ in got[p]] == list(range(want2[p], ends[p])), (p, [o for o, _ in got[p][:5]])


# ---------------------------------------------------------------- 3. two groups

def test_two_groups_each_get_every_record(broker):
    topic = unique_topic("grp-two")
    parts = 4
    n = 2000
    create_topic(broker.bootstrap, topic, parts)
    dr = produce_keyed(producer(broker.bootstrap), topic, n)
    produced = set(dr.acked.values())
    ends = end_offsets(broker.bootstrap, topic, parts)

    groups = {
        # auto commit every 200 ms
        unique_group("grp-two-auto"): dict(conf={"enable.auto.commit": True, "auto.commit.interval.ms": 200},
                                           commit_each_batch=False),
        # manual synchronous commit after every batch
        unique_group("grp-two-manual"): dict(conf={}, commit_each_batch=True),
    }
    pollers = {}
    for g, spec in groups.items():
        pollers[g] = [Poller(gconsumer(broker.bootstrap, g, **{"client.id": "%s-%d" % (g, i)}, **spec["conf"]),
                             topic, name="%s-%d" % (g, i), commit_each_batch=spec["commit_each_batch"])
                      for i in range(2)]
    try:
        def everyone_has_everything():
            for ps in pollers.values():
                seen = set()
                for pl in ps:
                    assert not pl.errors, (pl.name, pl.errors)
                    seen.update((p, o) for p, o, _k in pl.consumed())
                if seen != produced:
                    return None
            return True

        wait_until(everyone_has_everything, 60, interval=0.25, what="both groups consumed all %d records" % n)
        for g in groups:
            d = wait_stable(broker.bootstrap, g, topic, 2, parts, timeout=30)
            for m in d.members:
                assert m.assignment.topic_partitions, "member %s of %s owns nothing" % (m.client_id, g)
        for g in groups:
            for pl in pollers[g]:
                pl.stop(close=True)  # close() commits the auto-commit group's last offsets
            wait_until(lambda: {p: committed_offsets(broker.bootstrap, g).get((topic, p), (None,))[0]
                                for p in range(parts)} == ends, 15, interval=0.25,
                       what="group %s committed offsets == end offsets %r" % (g, ends))
    finally:
        for ps in pollers.values():
            for pl in ps:
                if pl.thread.is_alive():
                    pl.stop(close=True)


# ---------------------------------------------------------------- 4. membership

def test_a_broker_restart_does_not_rebalance_a_stable_group(broker):
    """The group's membership is stored in __consumer_offsets when it becomes
    Stable, so after a SIGKILL and restart its members go on heartbeating and
    reading in the same generation: no revocation, no new assignment."""
    topic = unique_topic("grp-membership")
    group = unique_group("grp-membership")
    create_topic(broker.bootstrap, topic, 2)
    events = []
    c = gconsumer(broker.bootstrap, group, **{"session.timeout.ms": 30000})
    c.subscribe([topic], on_assign=lambda _c, ps: events.append(("assign", sorted(p.partition for p in ps))),
                on_revoke=lambda _c, ps: events.append(("revoke", sorted(p.partition for p in ps))))
    try:
        produce_keyed(producer(broker.bootstrap), topic, 100)
        n = 0
        deadline = time.monotonic() + 30
        while n < 100:
            assert time.monotonic() < deadline, "read only %d of 100" % n
            n += sum(1 for m in c.consume(num_messages=500, timeout=0.2) if m.error() is None)
        assert events == [("assign", [0, 1])], events
        member = c.memberid()
        time.sleep(1)  # the group's tick stores the Stable membership
        broker.restart(kill=True)
        produce_keyed(producer(broker.bootstrap), topic, 100, start=100)
        got = 0
        deadline = time.monotonic() + 30
        while got < 100:
            assert time.monotonic() < deadline, "after the restart read only %d of 100; events %r" % (got, events)
            got += sum(1 for m in c.consume(num_messages=500, timeout=0.2) if m.error() is None)
        # A few heartbeats after the restart, still the same member, never rebalanced.
        end = time.monotonic() + 4
        while time.monotonic() < end:
            c.consume(num_messages=10, timeout=0.2)
        assert events == [("assign", [0, 1])], events
        assert c.memberid() == member
    finally:
        c.close()
