"""Idempotent produce over a raw socket: InitProducerId, hand-encoded
RecordBatch v2 (CRC-32C computed here), duplicates and sequence gaps."""

import kproto as kp
from util import consume_all, create_topic, unique_topic


def recs(start, n, tag=b""):
    return [(b"k%d" % i, b"v%d" % i + tag) for i in range(start, start + n)]


def test_idempotent_sequences(broker):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0 and pid >= 0 and epoch >= 0, (err, pid, epoch)

        def batch(seq, records, **kw):
            return kp.encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, **kw)

        a = batch(0, recs(0, 3))
        assert c.produce(topic, 0, a) == (kp.NONE, 0)
        # exact retry of the same batch: success, same base offset, not stored twice
        assert c.produce(topic, 0, a) == (kp.NONE, 0), "duplicate batch should succeed with the original offset"

        b = batch(3, recs(3, 2))
        assert c.produce(topic, 0, b) == (kp.NONE, 3)
        # an older duplicate (still among the last 5 batches) is also recognised
        assert c.produce(topic, 0, a) == (kp.NONE, 0)
        assert c.produce(topic, 0, b) == (kp.NONE, 3)

        # a gap in the sequence: 5 expected, 10 sent
        gap = batch(10, recs(100, 2))
        err, _ = c.produce(topic, 0, gap)
        assert err == kp.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence gap answered with error %d" % err

        # the producer can carry on from the right sequence
        assert c.produce(topic, 0, batch(5, recs(5, 4))) == (kp.NONE, 5)

        fetched = c.fetch(topic, 0, 0, max_wait_ms=100)
        assert fetched["error"] == 0 and fetched["high_watermark"] == 9, fetched
        batches = kp.decode_batches(fetched["records"])
        assert [(b["base_offset"], b["count"], b["producer_id"], b["base_sequence"]) for b in batches] == [
            (0, 3, pid, 0), (3, 2, pid, 3), (5, 4, pid, 5)]
        got = [(o, k, v) for b in batches for (o, _ts, k, v) in b["records"]]
        assert got == [(i, b"k%d" % i, b"v%d" % i) for i in range(9)]

    # and a real client sees each record exactly once
    by_p = consume_all(broker.bootstrap, topic, 1)
    assert [(o, k, v) for o, k, v, _ in by_p[0]] == [(i, b"k%d" % i, b"v%d" % i) for i in range(9)]


def test_two_producers_independent_sequences(broker):
    topic = unique_topic("idem2")
    create_topic(broker.bootstrap, topic, 2)
    with kp.Conn(broker.bootstrap) as c1, kp.Conn(broker.bootstrap) as c2:
        e1, pid1, ep1 = c1.init_producer_id()
        e2, pid2, ep2 = c2.init_producer_id()
        assert e1 == 0 and e2 == 0 and pid1 != pid2, (pid1, pid2)
        a1 = kp.encode_batch(recs(0, 2, b"a"), producer_id=pid1, producer_epoch=ep1, base_sequence=0)
        a2 = kp.encode_batch(recs(0, 2, b"b"), producer_id=pid2, producer_epoch=ep2, base_sequence=0)
        assert c1.produce(topic, 1, a1) == (0, 0)
        assert c2.produce(topic, 1, a2) == (0, 2)  # same sequence, other producer: not a duplicate
        assert c1.produce(topic, 1, a1) == (0, 0)
        # sequences are per partition: seq 0 on partition 0 is fine for pid1
        assert c1.produce(topic, 0, a1) == (0, 0)
        f = c1.fetch(topic, 1, 0, max_wait_ms=100)
        assert f["high_watermark"] == 4, f


def test_non_idempotent_batches_are_not_deduplicated(broker):
    topic = unique_topic("idem-none")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        plain = kp.encode_batch(recs(0, 3))  # producer id -1
        assert c.produce(topic, 0, plain) == (0, 0)
        assert c.produce(topic, 0, plain) == (0, 3)
        f = c.fetch(topic, 0, 0, max_wait_ms=100)
        assert f["high_watermark"] == 6


def test_idempotent_state_survives_restart(broker):
    topic = unique_topic("idem-restart")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0
        a = kp.encode_batch(recs(0, 3), producer_id=pid, producer_epoch=epoch, base_sequence=0)
        assert c.produce(topic, 0, a) == (0, 0)
    broker.restart(kill=True)
    with kp.Conn(broker.bootstrap) as c:
        # a retry of the acknowledged batch after a crash is still a duplicate
        assert c.produce(topic, 0, a) == (0, 0), "retried batch after restart not recognised as duplicate"
        b = kp.encode_batch(recs(3, 1), producer_id=pid, producer_epoch=epoch, base_sequence=3)
        assert c.produce(topic, 0, b) == (0, 3)
        f = c.fetch(topic, 0, 0, max_wait_ms=100)
        assert f["high_watermark"] == 4, f
