"""confluent-kafka (librdkafka 2.16) against brook: admin, produce with every
acks setting and codec, consume back exactly, offsets, long poll."""

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition, OFFSET_BEGINNING, OFFSET_END
from confluent_kafka.admin import NewTopic

from util import (Delivery, admin, assert_codec, check_keyed, consume_all, consumer, create_topic, payload,
                  produce_keyed, producer, unique_topic, wait_until)

N = 20_000
PARTITIONS = 6


def test_admin_create_list_describe_delete(broker):
    a = admin(broker.bootstrap)
    topic = unique_topic("ck-admin")
    fs = a.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)], operation_timeout=15)
    fs[topic].result(timeout=30)

    md = wait_until(lambda: (lambda m: m if topic in m.topics else None)(a.list_topics(timeout=10)), 15,
                    what="topic in list_topics")
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: ("127.0.0.1", broker.port)}
    assert md.controller_id in (1, -1)
    t = md.topics[topic]
    assert t.error is None, t.error
    assert sorted(t.partitions) == list(range(6))
    for p in t.partitions.values():
        assert p.error is None
        assert p.leader == 1 and p.replicas == [1] and p.isrs == [1], (p.leader, p.replicas, p.isrs)

    # creating it again fails with TOPIC_ALREADY_EXISTS
    fs = a.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)], operation_timeout=15)
    with pytest.raises(KafkaException) as ei:
        fs[topic].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, ei.value

    fs = a.delete_topics([topic], operation_timeout=15)
    fs[topic].result(timeout=30)
    wait_until(lambda: topic not in a.list_topics(timeout=10).topics, 15, what="topic gone after delete")

    # deleting a topic that does not exist fails with UNKNOWN_TOPIC_OR_PART
    fs = a.delete_topics([unique_topic("ck-nonexistent")], operation_timeout=15)
    with pytest.raises(KafkaException) as ei:
        list(fs.values())[0].result(timeout=30)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


def test_admin_create_many_and_recreate(broker):
    a = admin(broker.bootstrap)
    topics = [unique_topic("ck-many") for _ in range(5)]
    fs = a.create_topics([NewTopic(t, num_partitions=i + 1, replication_factor=1) for i, t in enumerate(topics)],
                         operation_timeout=15)
    for f in fs.values():
        f.result(timeout=30)
    md = a.list_topics(timeout=10)
    for i, t in enumerate(topics):
        assert len(md.topics[t].partitions) == i + 1

    # a deleted topic can be recreated and starts empty
    t = topics[2]
    p = producer(broker.bootstrap)
    produce_keyed(p, t, 30)
    a.delete_topics([t], operation_timeout=15)[t].result(timeout=30)
    wait_until(lambda: t not in a.list_topics(timeout=10).topics, 15, what="topic deleted")
    a.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)], operation_timeout=15)[t].result(timeout=30)
    wait_until(lambda: t in a.list_topics(timeout=10).topics, 15, what="topic recreated")
    c = consumer(broker.bootstrap)
    try:
        for part in range(2):
            lo, hi = c.get_watermark_offsets(TopicPartition(t, part), timeout=10)
            assert (lo, hi) == (0, 0), "recreated topic partition %d not empty: %r" % (part, (lo, hi))
    finally:
        c.close()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_consume(broker, acks, codec):
    topic = unique_topic("ck-%s-%s" % (acks, codec))
    create_topic(broker.bootstrap, topic, PARTITIONS)
    p = producer(broker.bootstrap, acks=acks, **{"compression.type": codec, "enable.idempotence": False})
    dr = produce_keyed(p, topic, N)
    assert not dr.errors, "delivery errors: %r" % dr.errors[:5]
    assert len(dr.acked) == N

    got = consume_all(broker.bootstrap, topic, PARTITIONS)
    # With acks=0 nothing proves a record was stored; all that were stored must
    # come back intact and in order. On loopback all of them should arrive, so
    # the exact count is asserted too.
    if acks == "0":
        # (delivery reports carry no broker offset with acks=0, so they are not compared)
        check_keyed(got, N)
    else:
        check_keyed(got, N, acked=dr.acked)
    assert sum(1 for recs in got.values() if recs) == PARTITIONS, "keys did not spread over partitions"
    assert_codec(broker.bootstrap, topic, PARTITIONS, codec)

    c = consumer(broker.bootstrap)
    try:
        for part in range(PARTITIONS):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            assert (lo, hi) == (0, len(got[part])), "partition %d watermarks %r" % (part, (lo, hi))
    finally:
        c.close()


def test_idempotent_producer_roundtrip(broker):
    topic = unique_topic("ck-idem")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    p = producer(broker.bootstrap, acks="all", **{"enable.idempotence": True, "compression.type": "lz4"})
    dr = produce_keyed(p, topic, N)
    assert not dr.errors, dr.errors[:5]
    check_keyed(consume_all(broker.bootstrap, topic, PARTITIONS), N, acked=dr.acked)


def test_watermarks_and_offsets_for_times(broker):
    topic = unique_topic("ck-times")
    create_topic(broker.bootstrap, topic, 2)
    base = int(time.time() * 1000) - 60_000
    p = producer(broker.bootstrap, acks="all")
    # batch A: 100 records at base+0..99; batch B: 100 records at base+10000+j
    produce_keyed(p, topic, 100, start=0, partition=0, timestamp=lambda i: base + i)
    produce_keyed(p, topic, 100, start=100, partition=0, timestamp=lambda i: base + 10_000 + (i - 100))

    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 200)
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10) == (0, 0)

        def at(ts, part=0):
            [r] = c.offsets_for_times([TopicPartition(topic, part, ts)], timeout=10)
            assert r.error is None, r.error
            return r.offset

        # between the two batches -> first record of batch B
        assert at(base + 5_000) == 100
        # at/before the first record
        assert at(base - 1_000) == 0
        assert at(base) == 0
        # exactly the first record of batch B
        assert at(base + 10_000) == 100
        # after everything -> no offset (-1, i.e. OFFSET_END)
        assert at(base + 1_000_000) == OFFSET_END
        # empty partition -> -1
        assert at(base, part=1) == OFFSET_END
    finally:
        c.close()

    got = consume_all(broker.bootstrap, topic, 2)
    assert [ts for _, _, _, ts in got[0]] == [base + i for i in range(100)] + [base + 10_000 + j for j in range(100)]


def test_offsets_for_times_inside_a_batch(broker):
    # Kafka semantics: the earliest offset whose record timestamp >= target,
    # even when that record is in the middle of a batch.
    topic = unique_topic("ck-times-in")
    create_topic(broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 60_000
    p = producer(broker.bootstrap, acks="all")
    produce_keyed(p, topic, 100, partition=0, timestamp=lambda i: base + 10 * i)
    c = consumer(broker.bootstrap)
    try:
        for target, want in [(base + 500, 50), (base + 501, 51), (base + 990, 99), (base + 991, OFFSET_END)]:
            [r] = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
            assert r.offset == want, "offsets_for_times(%d) = %d, want %d" % (target - base, r.offset, want)
    finally:
        c.close()


def test_consume_from_middle_offset(broker):
    topic = unique_topic("ck-mid")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, acks="all", **{"batch.num.messages": 7})
    produce_keyed(p, topic, 500, partition=0)
    c = consumer(broker.bootstrap)
    try:
        # an offset in the middle of a stored batch: records before it must be skipped
        c.assign([TopicPartition(topic, 0, 253)])
        got = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(m.error())
            got.append((m.offset(), m.key()))
        assert got == [(o, b"k%d" % o) for o in range(253, 500)]
    finally:
        c.close()


def test_long_poll_consumer(broker):
    topic = unique_topic("ck-longpoll")
    create_topic(broker.bootstrap, topic, 1)
    c = consumer(broker.bootstrap, **{"fetch.wait.max.ms": 500, "enable.partition.eof": False})
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 0})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        # nothing there yet: polling for a while yields nothing
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            m = c.poll(0.2)
            assert m is None, "unexpected event before produce: %r" % (m.error() or m.value())
        produced_at = [None]

        def produce_later():
            time.sleep(1.0)
            produced_at[0] = time.monotonic()
            p.produce(topic, key=b"late", value=b"hello", partition=0)
            p.flush(10)

        th = threading.Thread(target=produce_later)
        th.start()
        got = None
        deadline = time.monotonic() + 15
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got = m
        th.join(15)
        assert got is not None, "record produced 1s later never reached the polling consumer"
        assert (got.key(), got.value(), got.offset()) == (b"late", b"hello", 0)
        delay = time.monotonic() - produced_at[0]
        assert delay < 5.0, "consumer saw the record %.2fs after it was produced" % delay
    finally:
        c.close()


def test_many_small_batches_and_large_record(broker):
    topic = unique_topic("ck-sizes")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 0, "batch.num.messages": 1})
    dr = Delivery()
    big = bytes(range(256)) * 3000  # 768 KB record
    p.produce(topic, key=b"big", value=big, partition=1, on_delivery=dr)
    for i in range(300):
        p.produce(topic, key=b"k%d" % i, value=payload(i), partition=0, on_delivery=dr)
    assert p.flush(60) == 0
    assert not dr.errors, dr.errors
    got = consume_all(broker.bootstrap, topic, 2)
    assert [(o, k, v) for o, k, v, _ in got[0]] == [(i, b"k%d" % i, payload(i)) for i in range(300)]
    assert [(o, k, v) for o, k, v, _ in got[1]] == [(0, b"big", big)]


def test_null_keys_values_and_headers(broker):
    topic = unique_topic("ck-nulls")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, acks="all")
    p.produce(topic, key=None, value=b"no-key", partition=0)
    p.produce(topic, key=b"tombstone", value=None, partition=0)
    p.produce(topic, key=b"h", value=b"with-headers", partition=0,
              headers=[("a", b"1"), ("b", None), ("a", b"2")])
    p.produce(topic, key=b"", value=b"", partition=0)
    assert p.flush(30) == 0
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m)
        assert [(m.key(), m.value()) for m in got] == [
            (None, b"no-key"), (b"tombstone", None), (b"h", b"with-headers"), (b"", b"")]
        assert got[2].headers() == [("a", b"1"), ("b", None), ("a", b"2")]
    finally:
        c.close()


def test_produce_to_unknown_partition_fails(broker):
    topic = unique_topic("ck-badpart")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap, acks="all", **{"message.timeout.ms": 5000})
    dr = Delivery()
    p.produce(topic, key=b"x", value=b"y", partition=7, on_delivery=dr)
    p.flush(15)
    assert len(dr.errors) == 1 and not dr.acked, (dr.errors, dr.acked)
