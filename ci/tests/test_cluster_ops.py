"""Operating a three-broker Brook cluster with Kafka's own tools and admin
clients (issue 14): topic configs changed at run time, DeleteRecords and
leader election, against the real binaries, records checked one by one.

One cluster runs the whole scenario, with automatic preferred-leader
rebalancing off so that only kafka-leader-election moves leaders back:
1. IncrementalAlterConfigs through one broker sets a topic's
   max.message.bytes; every broker describes it and every partition's
   leader (on all three brokers) enforces it at once; deleting it restores
   the default.
2. kafka-delete-records moves log starts; its low watermark means every
   in-sync replica stored it, so when the leader is killed its successor
   answers the same earliest offset and serves exactly the records after it.
   Meanwhile the survivors' metrics show the partitions under-replicated and
   count the ISR shrinks.
3. The killed broker returns and catches up; kafka-leader-election
   --election-type PREFERRED gives its partitions back to it, and a second
   run reports that no election is needed.
"""

import json

from confluent_kafka import KafkaError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from apache_kafka import free_port
from cluster_util import Cluster, cluster_of, create, partitions_of
from test_metrics import samples, scrape, value
from test_kafka_tools import get_offsets, lines, read_all, tool
from util import admin, payload, producer, unique_topic, wait_until


def topic_config(via, topic, name):
    a = admin(via.bootstrap)  # alive until the future completes
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return a.describe_configs([res])[res].result(timeout=30)[name].value


def alter_topic(via, topic, name, value, op):
    a = admin(via.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic,
                         incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
    a.incremental_alter_configs([res])[res].result(timeout=30)


def test_configs_delete_records_and_elections_across_the_cluster(tmp_path, request):
    c = Cluster(tmp_path)
    for b in c.brokers:
        cfg = b.workdir / "brook.toml"
        cfg.write_text(cfg.read_text() + '"auto.leader.rebalance.enable" = "false"\n')
        b.metrics_port = free_port()
        b.extra_args += ["--metrics-listen", "127.0.0.1:%d" % b.metrics_port]
    with cluster_of(c, request):
        topic = unique_topic("ops")
        create(c, topic, 3, via=c.node(1), rf=3)
        parts = wait_until(lambda: (lambda p: p if len(p) == 3 and all(l > 0 for l, _, _ in p.values())
                                    else None)(partitions_of(c, topic, c.node(1))), 30, what="3 partitions led")
        assert sorted(l for l, _, _ in parts.values()) == [1, 2, 3], parts

        # 1. A topic config set through broker 2, enforced by every leader.
        alter_topic(c.node(2), topic, "max.message.bytes", "2000", AlterConfigOpType.SET)
        for b in c.brokers:
            assert topic_config(b, topic, "max.message.bytes") == "2000", b.node

        def produce(size, start):
            p = producer(c.bootstrap, acks="all", **{"message.max.bytes": 100_000})
            errs = []
            for q in range(3):
                p.produce(topic, key=b"k%d-%d" % (q, start), value=payload(start).ljust(size, b"."),
                          partition=q, on_delivery=lambda err, msg: errs.append(err))
            assert p.flush(60) == 0
            return errs

        assert produce(1000, 0) == [None] * 3
        big = produce(3000, 1)
        assert all(e is not None and e.code() == KafkaError.MSG_SIZE_TOO_LARGE for e in big), big
        alter_topic(c.node(3), topic, "max.message.bytes", None, AlterConfigOpType.DELETE)
        for b in c.brokers:
            assert topic_config(b, topic, "max.message.bytes") == "1048588", b.node
        assert produce(3000, 1) == [None] * 3
        p = producer(c.bootstrap, acks="all")
        for j in range(2, 20):
            for q in range(3):
                p.produce(topic, key=b"k%d-%d" % (q, j), value=payload(j), partition=q)
        assert p.flush(60) == 0

        # 2. DeleteRecords, then the leader of partition 0 dies.
        spec = tmp_path / "delete.json"
        spec.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "offset": 7}, {"topic": topic, "partition": 1, "offset": 12}]}))
        r = tool("kafka-delete-records", "--bootstrap-server", c.node(3).bootstrap, "--offset-json-file", spec)
        assert "partition: %s-0\tlow_watermark: 7" % topic in lines(r.out), r
        assert "partition: %s-1\tlow_watermark: 12" % topic in lines(r.out), r
        starts = {(topic, 0): 7, (topic, 1): 12, (topic, 2): 0}
        assert get_offsets(c.node(1).bootstrap, "--topic", topic, "--time", "-2") == starts

        victim = parts[0][0]
        c.node(victim).kill()
        wait_until(lambda: (lambda p: p[0][0] not in (victim, -1) and p)(partitions_of(c, topic, c.bootstrap_node())),
                   30, what="a new leader for partition 0")
        live = c.bootstrap_node()
        assert get_offsets(live.bootstrap, "--topic", topic, "--time", "-2") == starts
        # The leaders left see their partitions under-replicated, and count an
        # ISR shrink for each partition they led before (the controller took
        # the killed broker out of its ISR).
        followed = sum(1 for l, _r, _i in parts.values() if l != victim)
        def shrunk():
            m = [samples(scrape(b.metrics_port)) for b in c.brokers if b.alive()]
            return (sum(value(x, "brook_under_replicated_partitions") for x in m) == 3
                    and sum(value(x, "brook_isr_shrinks_total") for x in m) == followed)
        wait_until(shrunk, 60, what="3 under-replicated partitions and their ISR shrinks in the metrics")
        by_p = read_all(live.bootstrap, topic, 3)
        for q in range(3):
            got = [(off, key) for off, key, _v, _h, _ts in by_p[q]]
            first = starts[(topic, q)]
            assert got == [(j, b"k%d-%d" % (q, j)) for j in range(first, 20)], (q, got[:3])

        # 3. It returns; a preferred election gives its partitions back.
        c.node(victim).start()
        c.wait_brokers([1, 2, 3], live)
        wait_until(lambda: all(isr == [1, 2, 3] for _l, _r, isr in partitions_of(c, topic, live).values()),
                   60, what="the returned broker back in every ISR")
        wait_until(lambda: sum(value(samples(scrape(b.metrics_port)), "brook_under_replicated_partitions")
                               for b in c.brokers) == 0, 30, what="no under-replicated partition in the metrics")
        moved = sorted(q for q, (l, _r, _i) in partitions_of(c, topic, live).items() if l != parts[q][0])
        assert moved, "no leadership moved while broker %d was down" % victim
        r = tool("kafka-leader-election", "--bootstrap-server", live.bootstrap, "--election-type", "PREFERRED",
                 "--all-topic-partitions")
        for q in moved:
            assert "%s-%d" % (topic, q) in r.out, r
        assert r.out.startswith("Successfully completed leader election (PREFERRED) for partitions"), r
        assert {q: l for q, (l, _r, _i) in partitions_of(c, topic, live).items()} == \
            {q: l for q, (l, _r, _i) in parts.items()}
        r = tool("kafka-leader-election", "--bootstrap-server", live.bootstrap, "--election-type", "PREFERRED",
                 "--topic", topic, "--partition", 0)
        assert lines(r.out) == ["Valid replica already elected for partitions %s-0" % topic], r
        # The old leader of partition 0 serves from the log start it stored.
        assert get_offsets(c.node(victim).bootstrap, "--topic", topic, "--time", "-2") == starts


def test_reassignment_moves_replicas_to_a_new_broker_under_load(tmp_path, request):
    """kafka-reassign-partitions moves both partitions of a topic off broker
    1 and onto broker 4 (started after the topic) while an idempotent
    producer keeps writing: --verify reports progress until both are
    complete, broker 4 is in every ISR, broker 1 deleted its copies, and
    every acknowledged record is there once, in order. Partition 0's log
    start was moved first (DeleteRecords), so broker 4's new copy starts
    there. Then a new topic is
    placed rack-aware (broker.rack: 1 and 2 in "a", 3 and 4 in "b")."""
    import threading
    from confluent_kafka.admin import NewTopic
    from confluent_kafka import TopicPartition
    from util import Delivery, consume_all, produce_keyed

    c = Cluster(tmp_path, brokers_only=1)
    for b in c.brokers:  # racks: 1, 2 in "a"; 3, 4 in "b"
        cfg = b.workdir / "brook.toml"
        cfg.write_text(cfg.read_text() + '"broker.rack" = "%s"\n' % ("a" if b.node <= 2 else "b"))
    with cluster_of(c, request):
        topic = unique_topic("reassign")
        a = admin(c.node(1).bootstrap)
        a.create_topics([NewTopic(topic, num_partitions=2, replica_assignment=[[1, 2, 3], [2, 3, 1]])])[topic].result(timeout=30)
        wait_until(lambda: len(partitions_of(c, topic, c.node(1))) == 2, 30, what="the topic")

        dr, stop, written = Delivery(), threading.Event(), []
        def load():
            p = producer(c.bootstrap, acks="all", **{"enable.idempotence": True, "linger.ms": 5})
            n = 0
            while not stop.is_set() and n < 200_000:
                produce_keyed(p, topic, 500, start=n, dr=dr)
                n += 500
            written.append(n)
        t = threading.Thread(target=load, daemon=True)
        t.start()
        wait_until(lambda: len(dr.acked) >= 1000, 60, what="load running")
        # Partition 0's log now starts past offset 0: its new replica must
        # start there, not at 0 (its leader no longer serves 0).
        [res] = a.delete_records([TopicPartition(topic, 0, 300)]).values()
        assert res.result(timeout=60).low_watermark == 300

        spec = tmp_path / "move.json"
        spec.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": [4, 2, 3]},
            {"topic": topic, "partition": 1, "replicas": [2, 3, 4]}]}))
        r = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(2).bootstrap,
                 "--reassignment-json-file", spec, "--execute")
        assert "Successfully started partition reassignments for %s-0,%s-1" % (topic, topic) in r.out, r

        def verified():
            r = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(3).bootstrap,
                     "--reassignment-json-file", spec, "--verify")
            done = ["Reassignment of partition %s-%d is completed." % (topic, q) in r.out for q in (0, 1)]
            return all(done) and r
        r = wait_until(verified, 120, interval=1, what="both reassignments completed")
        stop.set()
        t.join(120)
        assert not dr.errors, dr.errors[:5]

        got = partitions_of(c, topic, c.node(4))
        assert got[0][1] == [2, 3, 4] and got[1][1] == [2, 3, 4], got
        wait_until(lambda: all(isr == [2, 3, 4] for _l, _r, isr in partitions_of(c, topic, c.node(4)).values()),
                   60, what="broker 4 in every ISR")
        wait_until(lambda: not list((c.node(1).data_dir).glob("%s-*" % topic)), 30,
                   what="broker 1 deleted its copies")
        assert sorted(p.name for p in c.node(4).data_dir.glob("%s-*" % topic)) == [topic + "-0", topic + "-1"]
        # Every acknowledged record not deleted is there once, at its offset.
        got = consume_all(c.node(4).bootstrap, topic, 2)
        seen = {}
        for q, recs in got.items():
            for off, key, value, _ts in recs:
                assert key not in seen and dr.acked.get(key) == (q, off), (q, off, key)
                seen[key] = (q, off)
        expected = {k for k, (q, off) in dr.acked.items() if not (q == 0 and off < 300)}
        assert set(seen) == expected and len(dr.acked) == written[0], (len(seen), len(expected))
        assert [off for off, *_ in got[0]][:1] == [300]
        # Nothing is moving any more.
        r = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(1).bootstrap, "--list")
        assert "No partition reassignments found." in r.out, r

        # Rack-aware placement: each new partition has a replica in each rack.
        desc = a.describe_cluster().result(timeout=30)
        assert {n.id: n.rack for n in desc.nodes} == {1: "a", 2: "a", 3: "b", 4: "b"}, desc.nodes
        spread = unique_topic("racks")
        a.create_topics([NewTopic(spread, num_partitions=8, replication_factor=2)])[spread].result(timeout=30)
        placed = wait_until(lambda: (lambda p: p if len(p) == 8 else None)(partitions_of(c, spread, c.node(1))),
                            30, what="the racked topic")
        for q, (_l, replicas, _i) in placed.items():
            assert sorted("a" if n <= 2 else "b" for n in replicas) == ["a", "b"], (q, replicas)
        assert sorted(l for l, _r, _i in placed.values()) == [1, 1, 2, 2, 3, 3, 4, 4], placed


def test_a_throttled_reassignment_then_the_old_broker_is_retired(tmp_path, request):
    """kafka-reassign-partitions --throttle moves a 24 MB partition off broker
    4 onto broker 1 at a limited rate: the tool sets the brokers' replication
    rates and the topic's throttled replica lists; while either the leader's
    (broker 4) or the follower's (broker 1) limit alone is in force, the new
    copy grows far slower than an unthrottled one would (the whole partition
    copies in well under a second on loopback); lifting the limits lets it
    finish, --verify clears them, and the moved partition holds every record
    once, in order. Broker 4, now empty, is stopped and retired with
    kafka-cluster unregister; a running broker cannot be unregistered and an
    unknown id is Kafka's BROKER_ID_NOT_REGISTERED."""
    import os
    import time
    from confluent_kafka.admin import NewTopic
    from util import consume_all, produce_keyed

    rate = 400_000
    c = Cluster(tmp_path, brokers_only=1)
    for b in c.brokers:
        cfg = b.workdir / "brook.toml"
        cfg.write_text(cfg.read_text() + '"auto.leader.rebalance.enable" = "false"\n')
    with cluster_of(c, request):
        topic = unique_topic("throttled")
        a = admin(c.node(1).bootstrap)
        a.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[4, 2, 3]])])[topic].result(timeout=30)
        wait_until(lambda: partitions_of(c, topic, c.node(1)).get(0, (0,))[0] == 4, 30, what="broker 4 leads")
        p = producer(c.bootstrap, acks="all", **{"linger.ms": 20})
        n = 24_000
        def big(i):
            return payload(i) + b"." * 1000
        dr = produce_keyed(p, topic, n, value=big)
        assert not dr.errors and len(dr.acked) == n, dr.errors[:5]

        def log_bytes(node):
            d = c.node(node).data_dir / ("%s-0" % topic)
            return sum(f.stat().st_size for f in d.glob("*.log")) if d.exists() else 0
        total = log_bytes(4)
        assert total > 24_000_000, total

        spec = tmp_path / "move.json"
        spec.write_text(json.dumps({"version": 1, "partitions": [
            {"topic": topic, "partition": 0, "replicas": [1, 2, 3]}]}))
        r = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(2).bootstrap,
                 "--reassignment-json-file", spec, "--execute", "--throttle", str(rate))
        assert "The inter-broker throttle limit was set to %d B/s" % rate in r.out, r
        started = time.monotonic()
        assert topic_config(c.node(3), topic, "leader.replication.throttled.replicas") == "0:2,0:3,0:4"
        assert topic_config(c.node(3), topic, "follower.replication.throttled.replicas") == "0:1"

        def broker_op(node, name, value):
            res = ConfigResource(ConfigResource.Type.BROKER, str(node), incremental_configs=[
                ConfigEntry(name, value, incremental_operation=(
                    AlterConfigOpType.DELETE if value is None else AlterConfigOpType.SET))])
            via = admin(c.node(node).bootstrap)  # alive until the future completes
            via.incremental_alter_configs([res])[res].result(timeout=30)

        def broker_config(node, name):
            res = ConfigResource(ConfigResource.Type.BROKER, str(node))
            via = admin(c.node(node).bootstrap)
            e = via.describe_configs([res])[res].result(timeout=30)[name]
            return e.value, e.source
        for node in (1, 2, 3, 4):
            assert broker_config(node, "leader.replication.throttled.rate") == (str(rate), 2)

        def still_throttled(what):
            time.sleep(3)
            copied = log_bytes(1)
            # Without a throttle the copy would be complete by now; the bound
            # is the rate over the whole time since the start, plus one fetch
            # (1 MiB) and a first second's burst, far below half.
            assert copied < total / 2, (what, copied, total, time.monotonic() - started)
            listed = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(3).bootstrap, "--list")
            assert "%s-0: replicas: 1,2,3,4. adding: 1. removing: 4." % topic in listed.out, listed
            print("%s: %d of %d bytes copied after %.1f s" % (what, copied, total, time.monotonic() - started))
        still_throttled("both limits")
        broker_op(1, "follower.replication.throttled.rate", None)
        still_throttled("the leader's limit alone")
        broker_op(1, "follower.replication.throttled.rate", str(rate))
        broker_op(4, "leader.replication.throttled.rate", None)
        still_throttled("the follower's limit alone")
        assert log_bytes(1) > 0, "a throttled replica still moves"

        broker_op(1, "follower.replication.throttled.rate", None)

        def verified():
            r = tool("kafka-reassign-partitions", "--bootstrap-server", c.node(3).bootstrap,
                     "--reassignment-json-file", spec, "--verify")
            return "Reassignment of partition %s-0 is completed." % topic in r.out and r
        r = wait_until(verified, 120, interval=1, what="the reassignment completed")
        assert "Clearing broker-level throttles on brokers 1,2,3,4" in r.out, r
        assert "Clearing topic-level throttles on topic %s" % topic in r.out, r
        for node in (1, 2, 3, 4):
            assert broker_config(node, "leader.replication.throttled.rate") == (str(2**63 - 1), 4)
            assert broker_config(node, "follower.replication.throttled.rate") == (str(2**63 - 1), 4)
        assert topic_config(c.node(1), topic, "leader.replication.throttled.replicas") == ""
        wait_until(lambda: partitions_of(c, topic, c.node(1))[0][1:] == ([1, 2, 3], [1, 2, 3]), 60,
                   what="broker 1 in sync")
        got = consume_all(c.node(1).bootstrap, topic, 1)[0]
        assert [off for off, *_ in got] == list(range(n)), "offsets not dense from 0"
        for off, key, value, _ts in got:
            i = int(key[1:])
            assert dr.acked[key] == (0, off) and value == big(i), (off, key, value[:40])
        wait_until(lambda: log_bytes(4) == 0 and not (c.node(4).data_dir / ("%s-0" % topic)).exists(), 30,
                   what="broker 4 deleted its copy")

        # Retiring broker 4.
        unregister = ("kafka-cluster", "unregister", "--bootstrap-server", c.node(2).bootstrap, "--id")
        r = tool(*unregister, "2", check=False)
        assert r.rc != 0 and "broker 2 is running" in r.out + r.err, r
        c.node(4).terminate()
        c.wait_brokers([1, 2, 3], c.node(2))
        r = tool(*unregister, "4")
        assert "Broker 4 is no longer registered." in r.out, r
        r = tool(*unregister, "4", check=False)
        assert r.rc != 0 and "BrokerIdNotRegisteredException" in r.out + r.err, r
        desc = a.describe_cluster().result(timeout=30)
        assert sorted(n.id for n in desc.nodes) == [1, 2, 3], desc.nodes
