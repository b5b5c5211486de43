"""A Brook cluster: three brokers on loopback, started as the README shows
(--node-id, --voters, --controller-listen), forming a raft-rs metadata quorum.

Checked with librdkafka (confluent-kafka) against the real binaries: every
broker reports the same brokers and partition leaders; topics created through
any broker are spread over all three with three replicas each and clients
route to the leaders; idempotent producers get ids from the quorum; a
consumer group's coordinator is on whichever broker leads its
__consumer_offsets partition. A broker that is killed is fenced after its
session timeout: its replicated partitions get new leaders from the ISR and
keep taking acks=all writes, a partition whose only replica it held goes
offline, and new topics can still be created; it comes back, catches up and
rejoins the ISR. A leader killed under acks=all load loses no acknowledged
record. SIGTERM moves a broker's leaderships away at once (controlled
shutdown). Records are checked one by one."""

import threading
import time

import pytest
from confluent_kafka import KafkaException

from apache_kafka import free_port
from cluster_util import SESSION_MS, cluster, cluster_of, create, partitions_of, preferred
from util import admin, check_keyed, consume_all, produce_keyed, producer, unique_topic, wait_until


def test_three_brokers_spread_route_and_coordinate(tmp_path, request):
    with cluster(tmp_path, request) as c:
        # Every broker answers Metadata with the same three brokers.
        for b in c.brokers:
            assert c.live_brokers(b) == [1, 2, 3]
        topic = unique_topic("cluster")
        create(c, topic, 6, via=c.node(3), rf=3)
        leaders = wait_until(lambda: (lambda l: l if len(l) == 6 else None)(c.leaders(topic, c.node(1))),
                             15, what="6 partitions")
        assert sorted(set(leaders.values())) == [1, 2, 3], leaders
        assert sorted(leaders.values()).count(1) == 2, leaders
        for p, (leader, replicas, isr) in partitions_of(c, topic, c.node(2)).items():
            assert replicas == [1, 2, 3] and isr == [1, 2, 3], (p, replicas, isr)
        # All brokers agree on the leaders.
        for b in c.brokers:
            assert c.leaders(topic, b) == leaders
        # Idempotent producer bootstrapped from one broker writes to all three.
        dr = produce_keyed(producer(c.node(2).bootstrap, acks="all", **{"enable.idempotence": True}),
                           topic, 3000)
        assert not dr.errors and len(dr.acked) == 3000, dr.errors[:5]
        assert {p for p, _ in dr.acked.values()} == set(range(6))
        check_keyed(consume_all(c.node(1).bootstrap, topic, 6), 3000, acked=dr.acked)

        # A consumer group (its coordinator on whichever broker leads its
        # __consumer_offsets partition) commits; a second member of the group
        # resumes from the commits.
        from confluent_kafka import Consumer, TopicPartition
        conf = {"bootstrap.servers": c.node(3).bootstrap, "group.id": "cluster-g",
                "auto.offset.reset": "earliest", "enable.auto.commit": False}
        cons = Consumer(conf)
        cons.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 60
        while got < 1500 and time.monotonic() < deadline:
            for m in cons.consume(500, 1.0):
                assert m.error() is None, m.error()
                got += 1
        assert got >= 1500
        cons.commit(asynchronous=False)
        committed = cons.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
        cons.close()
        total = sum(tp.offset for tp in committed if tp.offset >= 0)
        assert total == got, (total, got)
        cons = Consumer(dict(conf, **{"bootstrap.servers": c.node(1).bootstrap}))
        cons.subscribe([topic])
        rest = 0
        deadline = time.monotonic() + 60
        while got + rest < 3000 and time.monotonic() < deadline:
            for m in cons.consume(500, 1.0):
                assert m.error() is None, m.error()
                rest += 1
        cons.close()
        assert got + rest == 3000, (got, rest)

        # More replicas than brokers: refused at once.
        with pytest.raises(KafkaException) as e:
            create(c, unique_topic("rf4"), 1, via=c.node(1), rf=4)
        assert "INVALID_REPLICATION_FACTOR" in str(e.value) or "replication" in str(e.value).lower()


def test_killed_broker_is_fenced_then_returns_with_its_data(tmp_path, request):
    with cluster(tmp_path, request) as c:
        single = unique_topic("fence-rf1")
        create(c, single, 6, via=c.node(1), rf=1)
        replicated = unique_topic("fence-rf3")
        create(c, replicated, 6, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
        for t in (single, replicated):
            wait_until(lambda: len(c.leaders(t, c.node(1))) == 6, 15, what="6 partitions of %s" % t)
        p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True})
        dr1 = produce_keyed(p, single, 2000)
        dr3 = produce_keyed(p, replicated, 2000)
        assert not dr1.errors and not dr3.errors
        single_leaders = c.leaders(single, c.node(1))
        on2 = sorted(q for q, l in single_leaders.items() if l == 2)
        assert on2

        c.node(2).kill()
        # Fenced after its session timeout: the replicated partitions it led
        # have new leaders from the ISR, which shrinks to {1, 3}; the
        # partitions only it held have no leader, the others keep theirs.
        c.wait_brokers([1, 3], c.node(1), timeout=SESSION_MS / 1000 + 20)
        now = c.leaders(single, c.node(3))
        assert all(now[q] == -1 for q in on2), now
        assert all(now[q] == single_leaders[q] for q in now if q not in on2), now
        for q, (leader, replicas, isr) in partitions_of(c, replicated, c.node(3)).items():
            assert leader in (1, 3) and isr == [1, 3] and replicas == [1, 2, 3], (q, leader, isr)
        # The quorum (2 of 3) still takes changes; the new topic avoids node 2.
        t2 = unique_topic("after-kill")
        create(c, t2, 4, via=c.node(3), rf=2)
        wait_until(lambda: len(c.leaders(t2, c.node(1))) == 4, 15, what="t2 partitions")
        assert all(r == [1, 3] for _, r, _ in partitions_of(c, t2, c.node(1)).values())
        # The replicated topic takes acks=all writes on every partition
        # (2 in-sync replicas, min.insync.replicas=2).
        dr3b = produce_keyed(p, replicated, 1000, start=2000, dr=dr3)
        assert not dr3b.errors, dr3b.errors[:3]

        c.node(2).start()
        c.wait_brokers([1, 2, 3], c.node(1))
        # Node 2 catches up and rejoins every ISR; its single-replica
        # partitions have their leader back.
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, replicated, c.node(1)).values()),
                   30, what="node 2 back in the ISR")
        wait_until(lambda: all(l == 2 for q, l in c.leaders(single, c.node(1)).items() if q in on2),
                   20, what="node 2 leading its partitions again")
        # Preferred leaders are restored: every replicated partition is led by
        # its first replica again (auto.leader.rebalance.enable).
        wait_until(lambda: all(l == r[0] for l, r, _ in
                               ((l, md_r, i) for l, md_r, i in preferred(c, replicated, c.node(1)))),
                   30, what="preferred leaders restored")
        check_keyed(consume_all(c.node(1).bootstrap, single, 6), 2000, acked=dr1.acked)
        check_keyed(consume_all(c.node(1).bootstrap, replicated, 6), 3000, acked=dr3.acked)
        # Every copy is whole: make each broker in turn the only one serving
        # node 2's former leaderships... by reading after moving leadership to
        # node 2 alone is not possible yet, so stop nodes 1 and 3's copies
        # from answering instead: kill both, leaving node 2 as the last ISR
        # member of nothing; so check node 2's copy directly via a SIGTERM
        # of the others (controlled shutdown moves leadership to node 2).
        assert c.node(1).terminate() == 0
        assert c.node(3).terminate() == 0
        wait_until(lambda: set(c.leaders(replicated, c.node(2)).values()) == {2}, 20,
                   what="node 2 leading every replicated partition")
        check_keyed(consume_all(c.node(2).bootstrap, replicated, 6), 3000, acked=dr3.acked)


class LoadProducer(threading.Thread):
    """acks=all idempotent producer writing keys k0.. at a bounded rate until
    `n` records or `deadline`; delivery reports are collected."""

    def __init__(self, bootstrap, topic, n, rate):
        super().__init__(daemon=True)
        self.p = producer(bootstrap, acks="all", **{"enable.idempotence": True,
                                                    "message.timeout.ms": 120000})
        self.topic, self.n, self.rate = topic, n, rate
        from util import Delivery
        self.dr = Delivery()
        self.sent = 0

    def run(self):
        from util import payload
        t0 = time.monotonic()
        for i in range(self.n):
            while self.sent > (time.monotonic() - t0) * self.rate:
                self.p.poll(0.01)
            while True:
                try:
                    self.p.produce(self.topic, key=("k%d" % i).encode(), value=payload(i), on_delivery=self.dr)
                    break
                except BufferError:
                    self.p.poll(0.05)
            self.sent += 1
            self.p.poll(0)
        self.left = self.p.flush(120)


def test_leader_killed_under_acks_all_load_loses_nothing(tmp_path, request):
    with cluster(tmp_path, request) as c:
        topic = unique_topic("kill-load")
        create(c, topic, 6, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
        wait_until(lambda: len(c.leaders(topic, c.node(1))) == 6, 15, what="6 partitions")
        load = LoadProducer(c.bootstrap, topic, 30000, rate=3000)
        load.start()
        wait_until(lambda: len(load.dr.acked) > 6000, 60, what="6000 acknowledged")
        victim = c.leaders(topic, c.node(1))[0]
        c.node(victim).kill()
        survivor = next(b for b in c.brokers if b.node != victim)
        c.wait_brokers(sorted(b.node for b in c.brokers if b.node != victim), survivor,
                       timeout=SESSION_MS / 1000 + 20)
        wait_until(lambda: len(load.dr.acked) > 18000, 90, what="18000 acknowledged")
        c.node(victim).start()
        load.join(240)
        assert not load.is_alive() and load.left == 0, "producer did not finish"
        assert not load.dr.errors, load.dr.errors[:5]
        assert len(load.dr.acked) == 30000
        # Every acknowledged record exactly once, at its acknowledged offset,
        # in order, offsets dense.
        check_keyed(consume_all(survivor.bootstrap, topic, 6), 30000, acked=load.dr.acked)
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, survivor).values()),
                   30, what="the restarted broker back in every ISR")


def test_controller_loss_and_controlled_shutdown(tmp_path, request):
    # A long session: only controlled shutdown can fence a broker quickly.
    with cluster(tmp_path, request, session_ms=60000) as c:
        topic = unique_topic("ctl")
        create(c, topic, 3, via=c.node(1))
        wait_until(lambda: len(c.leaders(topic, c.node(1))) == 3, 15, what="3 partitions")
        # SIGTERM: node 3 leaves the cluster before it exits.
        assert c.node(3).terminate() == 0
        c.wait_brokers([1, 2], c.node(1), timeout=20)
        # The first controller (node 1 wins most first elections) killed: the
        # quorum elects another among nodes 2 and 3 once node 3 is back.
        c.node(3).start()
        c.wait_brokers([1, 2, 3], c.node(2))
        c.node(1).kill()
        t2 = unique_topic("ctl2")
        deadline = time.monotonic() + 30
        while True:
            try:
                create(c, t2, 2, via=c.node(2))
                break
            except KafkaException as e:
                assert time.monotonic() < deadline, "no topic creation without node 1: %s" % e
                time.sleep(0.5)
        # (Node 1 counts as live until its 60 s session ends, so it may be
        # given replicas of t2; that it was killed is seen only then.)
        wait_until(lambda: len(c.leaders(t2, c.node(3))) == 2, 15, what="t2 known to node 3")


def test_bad_cluster_flags_fail_fast(tmp_path):
    import subprocess
    from conftest import BROOK_BIN
    cases = [
        (["--node-id", "4", "--voters", "1@127.0.0.1:1", "--controller-listen", "127.0.0.1:2"], "not one of the voters"),
        (["--node-id", "1", "--voters", "1@127.0.0.1:1"], "controller listener"),
        (["--node-id", "1", "--controller-listen", "127.0.0.1:1"], "needs --voters"),
    ]
    for args, words in cases:
        r = subprocess.run([str(BROOK_BIN), "--data-dir", str(tmp_path / "d"), "--listen",
                            "127.0.0.1:%d" % free_port()] + args, capture_output=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr[-500:])
        assert words in r.stderr.decode(), (args, r.stderr[-500:])


def test_group_resumes_from_its_commits_after_the_coordinator_is_killed(tmp_path, request):
    from confluent_kafka import Consumer
    with cluster(tmp_path, request) as c:
        topic = unique_topic("group-failover")
        create(c, topic, 3, via=c.node(1), rf=3)
        wait_until(lambda: len(c.leaders(topic, c.node(1))) == 3, 15, what="3 partitions")
        dr = produce_keyed(producer(c.bootstrap, acks="all"), topic, 3000)
        assert not dr.errors
        group = "g-" + topic
        conf = {"bootstrap.servers": c.bootstrap, "group.id": group,
                "auto.offset.reset": "earliest", "enable.auto.commit": False}
        cons = Consumer(conf)
        cons.subscribe([topic])
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < 1200 and time.monotonic() < deadline:
            for m in cons.consume(200, 1.0):
                assert m.error() is None, m.error()
                seen.append(m.key())
        cons.commit(asynchronous=False)
        cons.close()
        # Kill the group's coordinator: the leader of its __consumer_offsets
        # partition.
        a = admin(c.node(1).bootstrap)
        desc = a.describe_consumer_groups([group])[group].result(timeout=30)
        victim = desc.coordinator.id
        c.node(victim).kill()
        survivor = next(b for b in c.brokers if b.node != victim)
        c.wait_brokers(sorted(b.node for b in c.brokers if b.node != victim), survivor,
                       timeout=SESSION_MS / 1000 + 20)
        # A new member resumes exactly after the commits: together the two
        # members read every record once.
        cons = Consumer(dict(conf, **{"bootstrap.servers": survivor.bootstrap}))
        cons.subscribe([topic])
        rest = []
        deadline = time.monotonic() + 90
        while len(seen) + len(rest) < 3000 and time.monotonic() < deadline:
            for m in cons.consume(500, 1.0):
                assert m.error() is None, m.error()
                rest.append(m.key())
        cons.close()
        assert len(seen) + len(rest) == 3000, (len(seen), len(rest))
        assert len(set(seen) | set(rest)) == 3000, "a record was read twice or missed"


def test_paused_leader_is_fenced_and_rejoins_as_a_follower(tmp_path, request):
    """SIGSTOP of a leader for longer than the session: the others fence it
    and elect new leaders; writes go on; once continued, it finds itself
    fenced, follows, truncates anything it had that the new leaders lack,
    registers again and rejoins the ISR."""
    import signal
    with cluster(tmp_path, request) as c:
        topic = unique_topic("pause")
        create(c, topic, 3, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
        wait_until(lambda: len(c.leaders(topic, c.node(1))) == 3, 15, what="3 partitions")
        # A paused broker holds its connections open: the client learns of it
        # only from its request timeout, after which it asks for metadata.
        p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True, "message.timeout.ms": 120000,
                                                 "request.timeout.ms": 5000})
        dr = produce_keyed(p, topic, 1000)
        assert not dr.errors
        victim = c.leaders(topic, c.node(1))[0]
        others = [b for b in c.brokers if b.node != victim]
        os_kill = __import__("os").kill
        os_kill(c.node(victim).pid, signal.SIGSTOP)
        try:
            c.wait_brokers(sorted(b.node for b in others), others[0], timeout=SESSION_MS / 1000 + 20)
            dr = produce_keyed(p, topic, 1000, start=1000, dr=dr)
            assert not dr.errors, dr.errors[:3]
        finally:
            os_kill(c.node(victim).pid, signal.SIGCONT)
        c.wait_brokers([1, 2, 3], others[0], timeout=30)
        wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, others[0]).values()),
                   30, what="the paused broker back in every ISR")
        check_keyed(consume_all(others[0].bootstrap, topic, 3), 2000, acked=dr.acked)


def test_broker_only_node_serves_replicas_and_follows_the_controller(tmp_path, request):
    """Node 4 starts with --voters but no --controller-listen: it votes in
    nothing, learns the metadata from the voters, hosts replicas and leads
    partitions like any broker, follows a change of active controller, is
    fenced when it dies and comes back with its data."""
    with cluster(tmp_path, request, brokers_only=1) as c:
        for b in c.brokers:
            assert c.live_brokers(b) == [1, 2, 3, 4]
        assert not (c.node(4).data_dir / "__brook" / "quorum.log").exists()
        topic = unique_topic("broker-only")
        create(c, topic, 8, via=c.node(4), rf=3, config={"min.insync.replicas": "2"})
        wait_until(lambda: len(c.leaders(topic, c.node(4))) == 8, 15, what="8 partitions")
        parts = partitions_of(c, topic, c.node(1))
        on4 = sorted(q for q, (_, replicas, _) in parts.items() if 4 in replicas)
        led4 = sorted(q for q, (leader, _, _) in parts.items() if leader == 4)
        assert on4 and led4, parts
        p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True})
        dr = produce_keyed(p, topic, 2000)
        assert not dr.errors, dr.errors[:3]
        wait_until(lambda: all(len(isr) == 3 for _, _, isr in partitions_of(c, topic, c.node(4)).values()),
                   30, what="every ISR full")

        # The active controller changes (node 1 is stopped): node 4 follows
        # the new one and is not fenced.
        assert c.node(1).terminate() == 0
        c.wait_brokers([2, 3, 4], c.node(4), timeout=SESSION_MS / 1000 + 20)
        dr = produce_keyed(p, topic, 1000, start=2000, dr=dr)
        assert not dr.errors, dr.errors[:3]
        time.sleep(2 * SESSION_MS / 1000)
        assert c.live_brokers(c.node(2)) == [2, 3, 4]
        c.node(1).start()
        c.wait_brokers([1, 2, 3, 4], c.node(4))

        # Node 4 dies: its heartbeats (its metadata fetches) stop, it is
        # fenced, its leaderships move; writes go on.
        c.node(4).kill()
        c.wait_brokers([1, 2, 3], c.node(1), timeout=SESSION_MS / 1000 + 20)
        wait_until(lambda: all(l in (1, 2, 3) for l in c.leaders(topic, c.node(1)).values()),
                   20, what="leaders moved off node 4")
        dr = produce_keyed(p, topic, 1000, start=3000, dr=dr)
        assert not dr.errors, dr.errors[:3]
        # It returns with its data, catches up and rejoins every ISR.
        c.node(4).start()
        c.wait_brokers([1, 2, 3, 4], c.node(1))
        wait_until(lambda: all(4 in isr for q, (_, _, isr) in partitions_of(c, topic, c.node(1)).items()
                               if q in on4), 30, what="node 4 back in its ISRs")
        p.flush(30)
        check_keyed(consume_all(c.node(4).bootstrap, topic, 8), 4000, acked=dr.acked)


def test_unclean_leader_election_only_where_enabled(tmp_path, request):
    """Two topics placed by hand (manual assignment) on node 4 (broker-only,
    so that the three voters keep their quorum) and node 3: node 3 dies,
    node 4 takes writes alone, then node 4 dies and node 3 returns. With
    unclean.leader.election.enable the out-of-sync node 3 leads at once (what
    only node 4 had is lost, as the setting means); without it the partition
    stays offline until node 4 is back, with every record. When node 4
    returns it truncates its diverged tail to node 3's log."""
    from confluent_kafka.admin import NewTopic
    with cluster(tmp_path, request, brokers_only=1) as c:
        clean, unclean = unique_topic("clean"), unique_topic("unclean")
        a = admin(c.node(1).bootstrap)
        fs = a.create_topics([
            NewTopic(clean, num_partitions=1, replica_assignment=[[4, 3]]),
            NewTopic(unclean, num_partitions=1, replica_assignment=[[4, 3]],
                     config={"unclean.leader.election.enable": "true"}),
        ], operation_timeout=15, request_timeout=15)
        for f in fs.values():
            f.result(timeout=30)
        for t in (clean, unclean):
            wait_until(lambda: partitions_of(c, t, c.node(1)).get(0) == (4, [3, 4], [3, 4]), 15,
                       what="%s led by 4 with ISR [3, 4]" % t)
        p = producer(c.bootstrap, acks="all")
        drs = {t: produce_keyed(p, t, 100) for t in (clean, unclean)}

        c.node(3).kill()
        for t in (clean, unclean):
            wait_until(lambda: partitions_of(c, t, c.node(1))[0][2] == [4], SESSION_MS / 1000 + 20,
                       what="ISR of %s shrunk to [4]" % t)
        for t in (clean, unclean):
            produce_keyed(p, t, 100, start=100, dr=drs[t])
            assert not drs[t].errors, drs[t].errors[:3]
        c.node(4).kill()
        c.wait_brokers([1, 2], c.node(1), timeout=SESSION_MS / 1000 + 20)
        c.node(3).start()
        c.wait_brokers([1, 2, 3], c.node(1))
        # Only the topic that allows it gets the out-of-sync replica as leader.
        wait_until(lambda: partitions_of(c, unclean, c.node(1))[0][:2] == (3, [3, 4]), 15,
                   what="node 3 elected uncleanly")
        assert partitions_of(c, unclean, c.node(1))[0][2] == [3]
        time.sleep(2)
        assert partitions_of(c, clean, c.node(1))[0][0] == -1, "clean topic elected an out-of-sync replica"
        p2 = producer(c.bootstrap, acks="all")
        dr_after = produce_keyed(p2, unclean, 50, start=200)
        assert not dr_after.errors, dr_after.errors[:3]

        # Node 4 returns: the clean topic is led by it with all 200 records;
        # on the unclean topic it truncates its 100 diverged records and
        # follows node 3, back in the ISR.
        c.node(4).start()
        c.wait_brokers([1, 2, 3, 4], c.node(1))
        wait_until(lambda: partitions_of(c, clean, c.node(1))[0] == (4, [3, 4], [3, 4]), 30,
                   what="clean topic led by 4, ISR [3, 4]")
        check_keyed(consume_all(c.node(1).bootstrap, clean, 1), 200, acked=drs[clean].acked)
        wait_until(lambda: partitions_of(c, unclean, c.node(1))[0][2] == [3, 4], 30,
                   what="node 4 back in the unclean topic's ISR")
        got = consume_all(c.node(1).bootstrap, unclean, 1)[0]
        keys = [r[1] for r in got]
        assert [r[0] for r in got] == list(range(150))
        assert keys == [("k%d" % i).encode() for i in list(range(100)) + list(range(200, 250))], keys[95:105]
        # Preferred leader election hands it back to node 4, whose copy must
        # now be node 3's: the same 150 records.
        wait_until(lambda: partitions_of(c, unclean, c.node(1))[0][0] == 4, 30, what="node 4 leading again")
        again = consume_all(c.node(1).bootstrap, unclean, 1)[0]
        assert [(r[0], r[1], r[2]) for r in again] == [(r[0], r[1], r[2]) for r in got]


def test_offsets_for_leader_epoch_across_a_failover(tmp_path, request):
    """OffsetsForLeaderEpoch as consumers use it to detect truncation: each
    leader epoch ends where the next one starts, on the leader of the day,
    including a former leader that learned the later epochs by replication;
    a stale current epoch is FENCED_LEADER_EPOCH, a non-leader answers
    NOT_LEADER_OR_FOLLOWER."""
    import kproto as kp
    with cluster(tmp_path, request) as c:
        topic = unique_topic("ofle")
        create(c, topic, 1, via=c.node(1), rf=3)
        wait_until(lambda: partitions_of(c, topic, c.node(1)).get(0, (0, 0, []))[2] == [1, 2, 3], 15,
                   what="ISR [1, 2, 3]")
        first = c.leaders(topic, c.node(1))[0]
        with kp.Conn(c.node(first).bootstrap) as k:
            for i in range(5):
                batch = kp.encode_batch([(b"k%d" % j, b"v") for j in range(i * 20, i * 20 + 20)])
                assert k.produce(topic, 0, batch)[0] == 0
            assert k.offsets_for_leader_epoch(topic, 0, 0, current_leader_epoch=0) == (0, 0, 100)
        # Controlled shutdown moves the leadership at once: epoch 1. The
        # stopped broker leaves its high watermarks checkpointed (read back
        # when it starts).
        assert c.node(first).terminate() == 0
        lines = [line.split() for f in c.node(first).data_dir.glob("high-watermark-checkpoint.shard*")
                 for line in f.read_text().splitlines()[2:]]
        assert [topic, "0", "100"] in [line[:3] for line in lines], lines
        second = wait_until(lambda: (lambda l: l if l not in (first, -1) else None)(
            c.leaders(topic, c.bootstrap_node())[0]), 20, what="a new leader")
        with kp.Conn(c.node(second).bootstrap) as k:
            batch = kp.encode_batch([(b"k%d" % j, b"v") for j in range(100, 150)])
            assert k.produce(topic, 0, batch)[0] == 0
            assert k.offsets_for_leader_epoch(topic, 0, 0) == (0, 0, 100)
            assert k.offsets_for_leader_epoch(topic, 0, 1, current_leader_epoch=1) == (0, 1, 150)
            assert k.offsets_for_leader_epoch(topic, 0, 1, current_leader_epoch=0)[0] == kp.FENCED_LEADER_EPOCH
            assert k.offsets_for_leader_epoch(topic, 0, 2, current_leader_epoch=2)[0] == kp.UNKNOWN_LEADER_EPOCH
        # The first leader returns, catches up, and gets its preferred
        # leadership back (epoch 2): it answers from its own epoch cache.
        c.node(first).start()
        wait_until(lambda: c.leaders(topic, c.node(second))[0] == first, 30, what="preferred leader back")
        with kp.Conn(c.node(first).bootstrap) as k:
            assert k.offsets_for_leader_epoch(topic, 0, 0) == (0, 0, 100)
            assert k.offsets_for_leader_epoch(topic, 0, 1) == (0, 1, 150)
            assert k.offsets_for_leader_epoch(topic, 0, 2, current_leader_epoch=2) == (0, 2, 150)
        with kp.Conn(c.node(second).bootstrap) as k:
            assert k.offsets_for_leader_epoch(topic, 0, 1)[0] == kp.NOT_LEADER_OR_FOLLOWER


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="mounting a file system needs root")
def test_a_failed_disk_moves_its_replicas_out_of_the_isr(tmp_path, request):
    """Node 2 keeps some partitions on a second, loop-mounted disk, which
    fails (EXT4_IOC_SHUTDOWN: every later I/O is EIO). Node 2 stays up and
    serves its other partitions; it reports the lost copies to the
    controller, which takes them out of their ISRs and moves their
    leaderships, so acks=all writes go on; Metadata lists them offline.
    Restarted with the disk back, node 2 opens them again, catches up and
    rejoins every ISR; nothing acknowledged is lost."""
    from test_jbod import LoopDisk
    from cluster_util import Cluster
    disk = LoopDisk(tmp_path / "disk.img", tmp_path / "disk")
    disk.attach()
    try:
        c = Cluster(tmp_path)
        c.node(2).extra_args += ["--data-dir", str(disk.mount / "brook")]
        with cluster_of(c, request):
            topic = unique_topic("diskfail")
            create(c, topic, 6, via=c.node(1), rf=3, config={"min.insync.replicas": "2"})
            wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, c.node(1)).values())
                       and len(partitions_of(c, topic, c.node(1))) == 6, 15, what="every ISR full")
            on_disk = sorted(q for q in range(6) if (disk.mount / "brook" / ("%s-%d" % (topic, q))).is_dir())
            assert on_disk and len(on_disk) < 6, on_disk
            p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True})
            dr = produce_keyed(p, topic, 1200)
            assert not dr.errors, dr.errors[:3]

            disk.shut_down()
            # A write to one of those copies hits the dead disk (as leader or
            # follower); the report follows.
            dr = produce_keyed(p, topic, 1200, start=1200, dr=dr)
            assert not dr.errors, dr.errors[:3]

            def moved():
                parts = partitions_of(c, topic, c.node(3))
                return all(2 not in parts[q][2] and parts[q][0] != 2 for q in on_disk) and parts
            parts = wait_until(moved, 30, what="node 2's lost copies out of their ISRs")
            for q in range(6):
                if q not in on_disk:
                    assert 2 in parts[q][2], (q, parts[q])
            md = admin(c.node(1).bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
            for q in on_disk:
                assert 2 in md[q].replicas and md[q].leader in (1, 3), md[q]
            assert c.live_brokers(c.node(1)) == [1, 2, 3], "node 2 itself stays up"
            dr = produce_keyed(p, topic, 1200, start=2400, dr=dr)
            assert not dr.errors, dr.errors[:3]

            # Node 2 restarts with the disk mounted again: its copies open,
            # catch up and rejoin.
            assert c.node(2).terminate() == 0
            disk.detach()
            disk.attach()
            c.node(2).start()
            wait_until(lambda: all(isr == [1, 2, 3] for _, _, isr in partitions_of(c, topic, c.node(1)).values()),
                       40, what="node 2 back in every ISR")
            check_keyed(consume_all(c.node(1).bootstrap, topic, 6), 3600, acked=dr.acked)
    finally:
        disk.detach()


def test_produce_to_a_follower_names_the_leader(tmp_path, request):
    """KIP-951: Produce v10 to a broker that does not lead the partition is
    refused with NOT_LEADER_OR_FOLLOWER carrying the current leader, its
    epoch and its endpoint, so the client needs no metadata round trip; v9
    carries none of it."""
    import kproto as kp
    from diff_wire import Conn
    from diff_scenarios import S, S2
    from kafka.protocol.producer.produce import ProduceRequest
    with cluster(tmp_path, request) as c:
        topic = unique_topic("kip951")
        create(c, topic, 1, via=c.node(1), rf=3)
        wait_until(lambda: partitions_of(c, topic, c.node(1)).get(0, (-1,))[0] in (1, 2, 3), 15, what="a leader")
        leader = partitions_of(c, topic, c.node(1))[0][0]
        other = next(n for n in (1, 2, 3) if n != leader)
        batch = kp.encode_batch([(b"k", b"v")])
        for v in (9, 10):
            T = S(ProduceRequest, "topic_data", v, name=topic,
                  partition_data=[S2(ProduceRequest, "topic_data", "partition_data", v, index=0, records=batch)])
            with Conn(c.node(other).bootstrap) as conn:
                r = conn.call(ProduceRequest, v, transactional_id=None, acks=-1, timeout_ms=10000, topic_data=[T])
            p = r.responses[0].partition_responses[0]
            assert p.error_code == kp.NOT_LEADER_OR_FOLLOWER, p
            if v < 10:
                continue
            assert (p.current_leader.leader_id, p.current_leader.leader_epoch) == (leader, 0), p.current_leader
            ends = {e.node_id: (e.host, e.port) for e in r.node_endpoints}
            host, port = c.node(leader).bootstrap.rsplit(":", 1)
            assert ends == {leader: (host, int(port))}, ends
        # Nothing was appended by the refused requests.
        assert consume_all(c.node(leader).bootstrap, topic, 1)[0] == []
