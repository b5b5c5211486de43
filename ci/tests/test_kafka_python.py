"""kafka-python 3 against brook: the DEFAULT producer (idempotent, acks=all)
with every codec, manual-assignment consumer, admin client, auto-creation."""

import time
from collections import defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from conftest import DEFAULT_PARTITIONS
from util import assert_codec, check_keyed, payload, unique_topic, wait_until

N = 10_000
PARTITIONS = 4


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)


def kp_producer(broker, **kw):
    return KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000, **kw)


def kp_consume_all(broker, topic, partitions, timeout=120):
    """{partition: [(offset, key, value, timestamp)]} read from the beginning to
    the end offsets (fetched up front)."""
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      request_timeout_ms=15000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning()
        ends = c.end_offsets(tps, timeout_ms=15000)
        out = defaultdict(list)
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "consume timed out: positions %r, ends %r" % (
                {tp.partition: c.position(tp) for tp in tps}, {tp.partition: e for tp, e in ends.items()})
            for tp, msgs in c.poll(timeout_ms=500, max_records=5000).items():
                for m in msgs:
                    out[tp.partition].append((m.offset, m.key, m.value, m.timestamp))
        return out, {tp.partition: e for tp, e in ends.items()}
    finally:
        c.close()


def produce_keyed(prod, topic, n, start=0):
    futs = []
    for i in range(start, start + n):
        futs.append((("k%d" % i).encode(), prod.send(topic, key=("k%d" % i).encode(), value=payload(i))))
    prod.flush(timeout=120)
    acked = {}
    for k, f in futs:
        md = f.get(timeout=30)
        acked[k] = (md.partition, md.offset)
    return acked


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_default_producer_roundtrip(broker, codec):
    topic = unique_topic("kp-%s" % codec)
    a = admin(broker)
    try:
        a.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        a.close()
    prod = kp_producer(broker, compression_type=codec)
    try:
        assert prod.config["enable_idempotence"] and prod.config["acks"] == -1  # the 3.x defaults
        acked = produce_keyed(prod, topic, N)
    finally:
        prod.close(timeout=10)
    got, ends = kp_consume_all(broker, topic, PARTITIONS)
    check_keyed(got, N, acked=acked)
    assert ends == {p: len(got[p]) for p in range(PARTITIONS)}
    assert all(got[p] for p in range(PARTITIONS)), "keys did not spread over partitions"
    assert_codec(broker.bootstrap, topic, PARTITIONS, codec)


def test_admin_list_describe_delete(broker):
    a = admin(broker)
    try:
        topic = unique_topic("kp-admin")
        res = a.create_topics({topic: {"num_partitions": 5, "replication_factor": 1}}, wait_for_metadata=True)
        assert [t["error_code"] for t in res["topics"]] == [0], res
        assert topic in a.list_topics()
        [d] = a.describe_topics([topic])
        assert d["name"] == topic and d["error_code"] == 0, d
        parts = sorted(d["partitions"], key=lambda p: p["partition_index"])
        assert [p["partition_index"] for p in parts] == list(range(5))
        for p in parts:
            assert p["error_code"] == 0 and p["leader_id"] == 1, p
            assert list(p["replica_nodes"]) == [1] and list(p["isr_nodes"]) == [1], p

        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics({topic: {"num_partitions": 5, "replication_factor": 1}})

        cluster = a.describe_cluster()
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [(1, "127.0.0.1", broker.port)], cluster

        a.delete_topics([topic])
        wait_until(lambda: topic not in a.list_topics(), 15, what="topic gone after delete")

        with pytest.raises(UnknownTopicOrPartitionError):
            a.delete_topics([unique_topic("kp-nonexistent")])
    finally:
        a.close()


def test_auto_create_on_produce(broker):
    topic = unique_topic("kp-auto")
    a = admin(broker)
    try:
        assert topic not in a.list_topics()
        prod = kp_producer(broker, compression_type="gzip")
        try:
            md = prod.send(topic, key=b"k0", value=payload(0)).get(timeout=30)
            assert md.topic == topic and md.offset == 0
            assert prod.partitions_for(topic) == set(range(DEFAULT_PARTITIONS))
        finally:
            prod.close(timeout=10)
        assert topic in a.list_topics()
        [d] = a.describe_topics([topic])
        assert len(d["partitions"]) == DEFAULT_PARTITIONS, d
    finally:
        a.close()
    got, _ = kp_consume_all(broker, topic, DEFAULT_PARTITIONS)
    check_keyed(got, 1)


def test_offsets_api(broker):
    topic = unique_topic("kp-offsets")
    a = admin(broker)
    try:
        a.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        a.close()
    base = int(time.time() * 1000) - 60_000
    prod = kp_producer(broker, linger_ms=0)
    try:
        for i in range(50):
            prod.send(topic, key=b"k%d" % i, value=payload(i), partition=0, timestamp_ms=base + i)
        prod.flush(30)
        for i in range(50, 100):
            prod.send(topic, key=b"k%d" % i, value=payload(i), partition=0, timestamp_ms=base + 5000 + i)
        prod.flush(30)
    finally:
        prod.close(timeout=10)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 100}
        r = c.offsets_for_times({tp: base + 1000})
        assert r[tp] is not None and r[tp].offset == 50, r
        r = c.offsets_for_times({tp: base + 10**7})
        assert r[tp] is None, r
        c.assign([tp])
        c.seek(tp, 50)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 50 and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=500).values():
                got.extend((m.offset, m.key, m.timestamp) for m in msgs)
        assert got == [(i, b"k%d" % i, base + 5000 + i) for i in range(50, 100)]
    finally:
        c.close()
