"""Fetch long-poll semantics and Fetch bounds over a raw socket.

The long-poll checks compare against the client's own max_wait with margins of
many seconds: they check *whether* the broker waited, never how fast it is."""

import threading
import time

import kproto as kp
from util import create_topic, unique_topic


def test_fetch_waits_max_wait_when_empty(broker):
    topic = unique_topic("raw-wait")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        t0 = time.monotonic()
        f = c.fetch(topic, 0, 0, max_wait_ms=800, min_bytes=1)
        took = time.monotonic() - t0
        assert f["error"] == 0 and f["records"] == b"" and f["high_watermark"] == 0, f
        assert 0.6 <= took <= 15.0, "empty long poll with max_wait 800ms answered after %.3fs" % took


def test_fetch_returns_early_when_data_arrives(broker):
    topic = unique_topic("raw-early")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c, kp.Conn(broker.bootstrap) as prod:
        sent_at = [None]

        def later():
            time.sleep(1.0)
            sent_at[0] = time.monotonic()
            prod.produce(topic, 0, kp.encode_batch([(b"k", b"late")]))

        th = threading.Thread(target=later)
        t0 = time.monotonic()
        th.start()
        try:
            f = c.fetch(topic, 0, 0, max_wait_ms=30_000, min_bytes=1, timeout=60)
        finally:
            th.join(15)
        took = time.monotonic() - t0
        assert f["error"] == 0, f
        recs = [r for b in kp.decode_batches(f["records"]) for r in b["records"]]
        assert [(o, k, v) for o, _, k, v in recs] == [(0, b"k", b"late")]
        assert took >= 0.9, "fetch returned after %.3fs, before the data was produced" % took
        assert time.monotonic() - sent_at[0] < 15.0, "long poll not woken by produce (max_wait 30s): took %.3fs" % took


def test_fetch_min_bytes_zero_returns_immediately(broker):
    topic = unique_topic("raw-zero")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        t0 = time.monotonic()
        f = c.fetch(topic, 0, 0, max_wait_ms=30_000, min_bytes=0, timeout=60)
        assert time.monotonic() - t0 < 15.0, "min_bytes=0 must not wait out max_wait (30s)"
        assert f["error"] == 0 and f["records"] == b""


def test_fetch_offsets_and_bounds(broker):
    topic = unique_topic("raw-fetch")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        for i in range(10):
            assert c.produce(topic, 0, kp.encode_batch([(b"k%d" % j, b"v" * 100) for j in range(i * 5, i * 5 + 5)])) \
                == (0, i * 5)
        f = c.fetch(topic, 0, 0, max_wait_ms=100)
        assert f["high_watermark"] == 50 and f["last_stable_offset"] == 50, f
        batches = kp.decode_batches(f["records"])
        assert [b["base_offset"] for b in batches] == list(range(0, 50, 5))
        assert [o for b in batches for (o, _, _, _) in b["records"]] == list(range(50))

        # from the middle of a batch: the batch containing the offset comes first
        f = c.fetch(topic, 0, 22, max_wait_ms=100)
        batches = kp.decode_batches(f["records"])
        assert batches[0]["base_offset"] == 20, [b["base_offset"] for b in batches]
        assert batches[-1]["base_offset"] == 45

        # at the end: empty, no error
        f = c.fetch(topic, 0, 50, max_wait_ms=100)
        assert f["error"] == 0 and f["records"] == b""

        # beyond the end: OFFSET_OUT_OF_RANGE (1)
        f = c.fetch(topic, 0, 51, max_wait_ms=100)
        assert f["error"] == 1, f

        # a small max_bytes still returns at least one whole batch
        f = c.fetch(topic, 0, 0, max_wait_ms=100, max_bytes=10)
        batches = kp.decode_batches(f["records"])
        assert batches and batches[0]["base_offset"] == 0 and batches[0]["count"] == 5


def test_offsets_for_leader_epoch_on_a_single_broker(broker):
    """A single broker's partitions are in leader epoch 0 (as Metadata says):
    epoch 0 ends at the log end; a newer epoch is unknown; a client that
    believes in a newer current epoch gets UNKNOWN_LEADER_EPOCH."""
    topic = unique_topic("raw-ofle")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        for i in range(3):
            assert c.produce(topic, 0, kp.encode_batch([(b"k%d" % i, b"v")]))[0] == 0
        assert c.offsets_for_leader_epoch(topic, 0, 0) == (0, 0, 3)
        assert c.offsets_for_leader_epoch(topic, 0, 0, current_leader_epoch=0) == (0, 0, 3)
        assert c.offsets_for_leader_epoch(topic, 0, 5) == (0, -1, -1)
        assert c.offsets_for_leader_epoch(topic, 0, 0, current_leader_epoch=1)[0] == kp.UNKNOWN_LEADER_EPOCH
        assert c.offsets_for_leader_epoch(topic, 7, 0)[0] == kp.UNKNOWN_TOPIC_OR_PARTITION
        # The batches carry the epoch the cache answers for.
        f = c.fetch(topic, 0, 0)
        assert [b["leader_epoch"] for b in kp.decode_batches(f["records"])] == [0, 0, 0]
