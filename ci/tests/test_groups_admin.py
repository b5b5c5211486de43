"""Consumer groups: the admin APIs (ListGroups, DescribeGroups, OffsetFetch,
DeleteGroups) through confluent-kafka's and kafka-python's admin clients,
static membership (group.instance.id), and the coordinator's error answers
on hand-encoded requests."""

import threading
import time

import pytest
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, TopicPartition
from kafka import KafkaAdminClient

import group_util as gu
from group_util import (Poller, committed_offsets, describe, describe_summary, end_offsets, gconsumer,
                        member_partitions, unique_group, wait_stable)
from util import admin, create_topic, produce_keyed, producer, unique_topic, wait_until

PARTITIONS = 4


# ---------------------------------------------------------------- 7. admin APIs

def test_admin_list_describe_offsets_lag_delete(module_broker):
    b = module_broker.bootstrap
    a = admin(b)
    topic = unique_topic("grp-admin")
    create_topic(b, topic, PARTITIONS)
    produced = set(produce_keyed(producer(b), topic, 400).acked.values())
    ends = end_offsets(b, topic, PARTITIONS)
    group = unique_group("grp-admin")
    simple = unique_group("grp-admin-simple")  # offsets only, no members

    # a "simple" group: commits without membership (generation -1)
    sc = gconsumer(b, simple)
    res = sc.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    assert all(tp.error is None for tp in res), res
    sc.close()

    pollers = [Poller(gconsumer(b, group, **{"client.id": "adm-%s" % x}), topic, name="adm-" + x)
               for x in ("a", "b")]
    try:
        wait_stable(b, group, topic, 2, PARTITIONS, timeout=30)
        wait_until(lambda: {(r[0], r[1]) for pl in pollers for r in pl.consumed()} == produced, 30,
                   what="all records consumed by the group")
        # commit chosen offsets (one member commits for all partitions): lag p = p + 1 ... scaled
        want = {p: ends[p] - 5 * (p + 1) for p in range(PARTITIONS)}
        res = pollers[0].call(lambda c: c.commit(offsets=[TopicPartition(topic, p, o, metadata="lag-%d" % p)
                                                          for p, o in want.items()], asynchronous=False))
        assert all(tp.error is None for tp in res), res
        # 10 more records on partition 0: its lag grows by 10
        p0 = producer(b)
        for i in range(10):
            p0.produce(topic, key=b"extra%d" % i, value=b"x", partition=0)
        assert p0.flush(30) == 0
        ends2 = end_offsets(b, topic, PARTITIONS)
        assert ends2[0] == ends[0] + 10

        # ListGroups
        listed = a.list_consumer_groups(request_timeout=15).result(timeout=30)
        assert not listed.errors, listed.errors
        by_id = {g.group_id: g for g in listed.valid}
        assert group in by_id and simple in by_id, sorted(by_id)
        assert by_id[group].state == ConsumerGroupState.STABLE, by_id[group].state
        assert not by_id[group].is_simple_consumer_group
        assert by_id[simple].state == ConsumerGroupState.EMPTY, by_id[simple].state

        # DescribeGroups: members, client ids, hosts, assignments
        d = describe(b, group, a)
        assert d.state == ConsumerGroupState.STABLE and d.partition_assignor == "range", describe_summary(d)
        assert not d.is_simple_consumer_group
        assert d.coordinator.id == 1 and d.coordinator.port == module_broker.port, d.coordinator
        assert sorted(m.client_id for m in d.members) == ["adm-a", "adm-b"], describe_summary(d)
        for m in d.members:
            assert m.member_id.startswith(m.client_id + "-"), m.member_id
            assert "127.0.0.1" in m.host, m.host
            assert m.group_instance_id is None
            own = pollers[0] if m.client_id == "adm-a" else pollers[1]
            assert member_partitions(m, topic) == own.assignment(), (
                "DescribeGroups says %s owns %r, the member itself says %r" % (
                    m.client_id, member_partitions(m, topic), own.assignment()))
        assert sorted(p for m in d.members for p in member_partitions(m, topic)) == list(range(PARTITIONS))

        # OffsetFetch (list_consumer_group_offsets) and lag
        got = committed_offsets(b, group, a)
        assert {k: v[0] for k, v in got.items()} == {(topic, p): o for p, o in want.items()}, got
        assert all(md == "lag-%d" % p for (t, p), (o, md) in got.items()), got
        lag = {p: ends2[p] - got[(topic, p)][0] for p in range(PARTITIONS)}
        assert lag == {0: 15, 1: 10, 2: 15, 3: 20}, lag

        # kafka-python's admin client sees the same
        ka = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=15000)
        try:
            kgroups = {g["group_id"]: g for g in ka.list_groups()}
            assert (kgroups[group]["group_state"], kgroups[group]["protocol_type"]) == ("Stable", "consumer"), kgroups
            assert kgroups[simple]["group_state"] == "Empty", kgroups
            kd = ka.describe_groups([group])[group]
            assert (kd["group_state"], kd["protocol_data"]) == ("Stable", "range"), kd
            assert sorted(m["client_id"] for m in kd["members"]) == ["adm-a", "adm-b"], kd
            kparts = sorted(p for m in kd["members"] for a_ in m["member_assignment"]["assigned_partitions"]
                            if a_["topic"] == topic for p in a_["partitions"])
            assert kparts == list(range(PARTITIONS)), kd
            koffs = ka.list_group_offsets(group)[group]
            assert {tp.partition: om.offset for tp, om in koffs.items()} == want, koffs
        finally:
            ka.close()

        # DeleteGroups refuses a group with members
        f = a.delete_consumer_groups([group], request_timeout=15)[group]
        with pytest.raises(KafkaException) as ei:
            f.result(timeout=30)
        assert ei.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, ei.value
    finally:
        for pl in pollers:
            pl.stop(close=True)  # LeaveGroup

    wait_until(lambda: describe(b, group, a).state == ConsumerGroupState.EMPTY, 15, interval=0.25,
               what="group Empty after both members left")
    # the offsets outlive the members ...
    assert {k: v[0] for k, v in committed_offsets(b, group, a).items()} == {(topic, p): o for p, o in want.items()}
    # ... until the empty group is deleted
    a.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=30)
    gone = committed_offsets(b, group, a)
    assert all(o < 0 for o, _md in gone.values()), "offsets of the deleted group: %r" % gone
    assert describe(b, group, a).state == ConsumerGroupState.DEAD
    listed = a.list_consumer_groups(request_timeout=15).result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}
    # and a new member of a group of that name starts from auto.offset.reset (earliest)
    c = gconsumer(b, group)
    try:
        c.subscribe([topic])
        first = {}
        deadline = time.monotonic() + 30
        while len(first) < PARTITIONS:
            assert time.monotonic() < deadline, "re-created group read from %r only" % first
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error() is None:
                    first.setdefault(m.partition(), m.offset())
        assert first == {p: 0 for p in range(PARTITIONS)}, first
    finally:
        c.close()

    # deleting a group that does not exist
    f = a.delete_consumer_groups([unique_group("grp-nonexistent")], request_timeout=15)
    with pytest.raises(KafkaException) as ei:
        list(f.values())[0].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, ei.value


# ---------------------------------------------------------------- 8. static membership

def test_static_member_restart_keeps_assignment(module_broker):
    """librdkafka static members (group.instance.id) send no LeaveGroup on
    close; the restarted member rejoins under the same instance id and gets
    its old assignment back with no rebalance: the other member sees no
    revoke or assign."""
    b = module_broker.bootstrap
    topic = unique_topic("grp-static")
    create_topic(b, topic, PARTITIONS)
    group = unique_group("grp-static")
    conf = {"session.timeout.ms": 30000, "heartbeat.interval.ms": 1000, "partition.assignment.strategy": "range"}

    def member(inst):
        return Poller(gconsumer(b, group, **{"group.instance.id": inst, "client.id": inst}, **conf), topic,
                      name=inst)

    stayer = member("static-b")  # joins first: the leader
    time.sleep(0.5)
    mover = member("static-a")
    mover2 = None
    try:
        d = wait_stable(b, group, topic, 2, PARTITIONS, timeout=30)
        wait_until(lambda: mover.assignment() and stayer.assignment(), 15, what="both members assigned")
        ids = {m.group_instance_id: m.member_id for m in d.members}
        assert set(ids) == {"static-a", "static-b"}, describe_summary(d)
        a_parts, b_parts = mover.assignment(), stayer.assignment()
        b_assigns, b_revokes = len(stayer.assigned), len(stayer.revoked)

        mover.stop(close=True)  # no LeaveGroup for a static member
        d = describe(b, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 2, (
            "after a static member's close: %s" % describe_summary(d, topic))

        mover2 = member("static-a")
        wait_until(lambda: mover2.assignment(), 20, what="restarted static member assigned")
        assert mover2.assignment() == a_parts, (mover2.assignment(), a_parts)
        d = wait_stable(b, group, topic, 2, PARTITIONS, timeout=10)
        ids2 = {m.group_instance_id: m.member_id for m in d.members}
        assert ids2["static-b"] == ids["static-b"], (ids, ids2)
        assert ids2["static-a"] != ids["static-a"], "the restarted member kept its old member id %r" % ids2
        by_inst = {m.group_instance_id: member_partitions(m, topic) for m in d.members}
        assert by_inst == {"static-a": a_parts, "static-b": b_parts}, by_inst
        time.sleep(2)  # a rebalance, had there been one, would reach the other member's callbacks by now
        assert (len(stayer.assigned), len(stayer.revoked)) == (b_assigns, b_revokes), (
            "the other member was rebalanced: assigned %r revoked %r" % (stayer.assigned, stayer.revoked))
        assert stayer.assignment() == b_parts
        assert not stayer.errors and not mover2.errors, (stayer.errors, mover2.errors)
    finally:
        for pl in (mover, mover2, stayer):
            if pl is not None and pl.thread.is_alive():
                pl.stop(close=True)


# ---------------------------------------------------------------- 9. error answers

class Async:
    """Runs a blocking call (JoinGroup/SyncGroup) in a thread."""

    def __init__(self, fn, *args, **kw):
        self.result = None
        self.exc = None
        self.t = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self.t.start()

    def _run(self, fn, args, kw):
        try:
            self.result = fn(*args, **kw)
        except Exception as e:
            self.exc = e

    def get(self, timeout=30):
        self.t.join(timeout)
        assert not self.t.is_alive(), "blocking call did not return within %ds" % timeout
        if self.exc:
            raise self.exc
        return self.result


def test_coordinator_error_answers(module_broker):
    b = module_broker.bootstrap
    topic = unique_topic("grp-err")
    create_topic(b, topic, 2)
    group = unique_group("grp-err")
    other = unique_group("grp-err-v4")
    c1, c2, c3, c4 = (gu.GroupConn(b, "raw-%d" % i) for i in range(1, 5))
    try:
        err, node, host, port = c1.find_coordinator(group)
        assert (err, node, port) == (0, 1, module_broker.port), (err, node, host, port)

        # JoinGroup v4 with no member id: MEMBER_ID_REQUIRED and an id to rejoin with
        j = c4.join(other, version=4)
        assert j["error"] == gu.MEMBER_ID_REQUIRED and j["member_id"], j
        v4 = Async(c4.join, other, member_id=j["member_id"], version=4)

        # a first member: generation 1 after the initial rebalance delay
        j1 = c1.join(group)
        assert j1["error"] == 0 and j1["generation"] == 1 and j1["leader"] == j1["member_id"], j1
        assert j1["protocol"] == "range" and [m for m, _ in j1["members"]] == [j1["member_id"]], j1
        m1 = j1["member_id"]
        assert c1.sync(group, 1, m1, [(m1, b"assignment-1")]) == (0, b"assignment-1")
        j4 = v4.get()
        assert j4["error"] == 0 and j4["member_id"] == j["member_id"] and j4["generation"] == 1, j4

        assert c1.heartbeat(group, 1, m1) == 0
        assert c1.heartbeat(group, 1, "no-such-member") == gu.UNKNOWN_MEMBER_ID
        assert c1.heartbeat(group, 2, m1) == gu.ILLEGAL_GENERATION
        assert c1.heartbeat(unique_group("grp-err-none"), 1, "x") == gu.UNKNOWN_MEMBER_ID
        assert c1.commit(group, 1, m1, topic, {0: (5, "g1")}) == {0: 0}
        assert c1.commit(group, 0, m1, topic, {0: (6, "stale")}) == {0: gu.ILLEGAL_GENERATION}
        assert c1.commit(group, 1, "no-such-member", topic, {0: (6, "x")}) == {0: gu.UNKNOWN_MEMBER_ID}
        assert c1.sync(group, 0, m1) == (gu.ILLEGAL_GENERATION, b"")
        assert c1.join(group, session_ms=1000)["error"] == gu.INVALID_SESSION_TIMEOUT
        assert c1.join(group, protocols=(("no-such-assignor", b""),))["error"] == gu.INCONSISTENT_GROUP_PROTOCOL

        # a second member joins: the group prepares a rebalance, member 1 is told to rejoin
        j2a = Async(c2.join, group)
        wait_until(lambda: c1.heartbeat(group, 1, m1) == gu.REBALANCE_IN_PROGRESS, 10, interval=0.1,
                   what="REBALANCE_IN_PROGRESS on member 1's heartbeat")
        # commits of the current generation are still accepted while preparing (as Kafka does)
        assert c1.commit(group, 1, m1, topic, {0: (7, "preparing")}) == {0: 0}
        j1b = c1.join(group, member_id=m1)
        j2 = j2a.get()
        assert j1b["error"] == 0 and j2["error"] == 0, (j1b, j2)
        assert j1b["generation"] == j2["generation"] == 2, (j1b, j2)
        assert j1b["leader"] == m1 and sorted(m for m, _ in j1b["members"]) == sorted([m1, j2["member_id"]])
        m2 = j2["member_id"]
        assert j2["members"] == [], "a follower got the member list: %r" % j2
        # awaiting the leader's assignment: commits get REBALANCE_IN_PROGRESS, heartbeats pass
        assert c1.commit(group, 2, m1, topic, {0: (8, "x")}) == {0: gu.REBALANCE_IN_PROGRESS}
        assert c3.heartbeat(group, 2, m2) == 0
        s2 = Async(c2.sync, group, 2, m2)
        assert c1.sync(group, 2, m1, [(m1, b"a1"), (m2, b"a2")]) == (0, b"a1")
        assert s2.get() == (0, b"a2")

        # stable at generation 2: the old generation is refused
        assert c1.commit(group, 1, m1, topic, {1: (9, "old")}) == {1: gu.ILLEGAL_GENERATION}
        assert c2.commit(group, 1, m2, topic, {1: (9, "old")}) == {1: gu.ILLEGAL_GENERATION}
        assert c2.heartbeat(group, 1, m2) == gu.ILLEGAL_GENERATION
        assert c2.commit(group, 2, m2, topic, {1: (10, "gen-2")}) == {1: 0}
        assert c3.fetch_offsets(group, topic, [0, 1]) == {0: (7, "preparing", 0), 1: (10, "gen-2", 0)}

        # LeaveGroup: unknown member, then member 2; its id is then unknown
        assert c3.leave(group, "no-such-member") == gu.UNKNOWN_MEMBER_ID
        assert c2.leave(group, m2) == 0
        assert c2.heartbeat(group, 2, m2) == gu.UNKNOWN_MEMBER_ID
        assert c2.commit(group, 2, m2, topic, {1: (11, "x")}) == {1: gu.UNKNOWN_MEMBER_ID}
    finally:
        for c in (c1, c2, c3, c4):
            c.close()


def test_vanished_member_delays_rebalance_by_its_session_timeout(module_broker):
    """Members that stop talking mid-rebalance are dropped after their session
    timeout (6 s), not the rebalance timeout (60 s): one that never rejoins,
    and a leader that never sends its SyncGroup. The 20 s deadlines only
    separate the two timeouts; no time is asserted beyond that."""
    b = module_broker.bootstrap
    group = unique_group("grp-vanish")
    c1, c2, c3 = (gu.GroupConn(b, "vanish-%d" % i) for i in range(1, 4))
    try:
        ja = c1.join(group, session_ms=6000, rebalance_ms=60000)
        assert ja["error"] == 0, ja
        assert c1.sync(group, ja["generation"], ja["member_id"], [(ja["member_id"], b"a")])[0] == 0
        # B joins; A (the leader) never rejoins: B's join completes once A's session expires
        jb = Async(c2.join, group, session_ms=6000, rebalance_ms=60000).get(timeout=20)
        assert jb["error"] == 0 and jb["generation"] == ja["generation"] + 1, jb
        assert jb["leader"] == jb["member_id"] and [m for m, _ in jb["members"]] == [jb["member_id"]], jb
        mb = jb["member_id"]
        # C joins; B rejoins; both in the next generation, B leads
        jc_ = Async(c3.join, group, session_ms=30000, rebalance_ms=60000)
        wait_until(lambda: c2.heartbeat(group, jb["generation"], mb) == gu.REBALANCE_IN_PROGRESS, 10,
                   interval=0.1, what="REBALANCE_IN_PROGRESS for B")
        jb2 = c2.join(group, member_id=mb, session_ms=6000, rebalance_ms=60000)
        jc = jc_.get()
        assert jb2["error"] == 0 and jc["error"] == 0 and jb2["leader"] == mb, (jb2, jc)
        # C waits in SyncGroup; the leader B never syncs: C is told to rejoin
        # once B's session expires (C's own session is 30 s)
        assert Async(c3.sync, group, jc["generation"], jc["member_id"]).get(timeout=20) == (
            gu.REBALANCE_IN_PROGRESS, b"")
        jc2 = c3.join(group, member_id=jc["member_id"], session_ms=30000, rebalance_ms=60000)
        assert jc2["error"] == 0 and jc2["leader"] == jc["member_id"], jc2
        assert [m for m, _ in jc2["members"]] == [jc["member_id"]], jc2
    finally:
        for c in (c1, c2, c3):
            c.close()


def test_simple_commit_to_group_with_members_is_unknown_member(module_broker):
    """An OffsetCommit with generation -1 and no member id (a "simple",
    assign()-mode consumer) to a group that has members: Kafka's
    GroupCoordinator answers UNKNOWN_MEMBER_ID (the group is not Empty, and
    "" is not a member); ILLEGAL_GENERATION is only for a known member with
    the wrong generation."""
    b = module_broker.bootstrap
    topic = unique_topic("grp-simple")
    create_topic(b, topic, 1)
    group = unique_group("grp-simple")
    c1, c2 = gu.GroupConn(b), gu.GroupConn(b)
    try:
        j = c1.join(group)
        assert j["error"] == 0, j
        assert c1.sync(group, j["generation"], j["member_id"], [(j["member_id"], b"a")])[0] == 0
        assert c2.commit(group, -1, "", topic, {0: (1, "")}) == {0: gu.UNKNOWN_MEMBER_ID}
    finally:
        c1.close()
        c2.close()
