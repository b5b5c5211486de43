"""Shared helpers for the real-client tests (confluent-kafka based)."""

import subprocess
import time
import uuid
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic


def unique_topic(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def payload(i, prefix="v"):
    """Deterministic, compressible value that contains i."""
    return ("%s%d:" % (prefix, i) + ("%08d" % i) * (1 + i % 9)).encode()


def wait_until(fn, timeout, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last=%r)" % (timeout, what, last))


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap, topic, partitions):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                         operation_timeout=15, request_timeout=15)
    fs[topic].result(timeout=30)
    wait_until(lambda: topic_partitions(bootstrap, topic, a) == partitions, 15,
               what="topic %s with %d partitions in metadata" % (topic, partitions))


def topic_partitions(bootstrap, topic, a=None):
    a = a or admin(bootstrap)
    md = a.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return 0
    return len(t.partitions)


def producer(bootstrap, **conf):
    c = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    c.update(conf)
    return Producer(c)


def consumer(bootstrap, **conf):
    c = {
        "bootstrap.servers": bootstrap,
        # confluent-kafka insists on a group.id even for assign(); no group APIs
        # are used because offsets are assigned explicitly and never committed.
        "group.id": "brook-ci-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
    }
    c.update(conf)
    return Consumer(c)


class Delivery:
    """Collects delivery reports: key -> (partition, offset), plus errors."""

    def __init__(self):
        self.acked = {}
        self.errors = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append((msg.key(), str(err)))
        else:
            self.acked[msg.key()] = (msg.partition(), msg.offset())


def produce_keyed(p, topic, n, start=0, dr=None, flush_timeout=120, partition=None, timestamp=None,
                  value=payload):
    """Produces keys k<start>..; `value(i)` gives each record's value."""
    dr = dr or Delivery()
    for i in range(start, start + n):
        kw = {}
        if partition is not None:
            kw["partition"] = partition
        if timestamp is not None:
            kw["timestamp"] = timestamp(i) if callable(timestamp) else timestamp
        while True:
            try:
                p.produce(topic, key=("k%d" % i).encode(), value=value(i), on_delivery=dr, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, "%d messages not delivered within %ds" % (left, flush_timeout)
    return dr


def consume_all(bootstrap, topic, partitions, timeout=120, max_records=5_000_000, **conf):
    """Reads partitions 0..partitions-1 from the beginning until EOF on every
    partition. Returns {partition: [(offset, key, value, timestamp)]}."""
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = defaultdict(list)
        eof = set()
        n = 0
        deadline = time.monotonic() + timeout
        while len(eof) < partitions:
            assert time.monotonic() < deadline, (
                "consume timed out after %ds: %d records, EOF on %s" % (timeout, n, sorted(eof)))
            msgs = c.consume(num_messages=10000, timeout=1.0)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError("consumer error: %s" % err)
                eof.discard(m.partition())
                out[m.partition()].append((m.offset(), m.key(), m.value(), m.timestamp()[1]))
                n += 1
                assert n <= max_records, "more than %d records" % max_records
        return out
    finally:
        c.close()


def key_index(key):
    assert key.startswith(b"k"), key
    return int(key[1:])


def check_keyed(records_by_partition, n, start=0, acked=None, dense=True):
    """Exactly keys k{start}..k{start+n-1}, each once, value == payload(i);
    per partition offsets dense from 0 and i increasing; if acked is given,
    each key is at its acknowledged (partition, offset)."""
    seen = {}
    for p, recs in records_by_partition.items():
        offs = [r[0] for r in recs]
        if dense:
            assert offs == list(range(len(offs))), (
                "partition %d offsets not dense from 0: first %r" % (p, offs[:20]))
        last = -1
        for off, key, value, _ts in recs:
            i = key_index(key)
            assert key not in seen, "duplicate key %r at %d/%d and %r" % (key, p, off, seen[key])
            seen[key] = (p, off)
            assert value == payload(i), "partition %d offset %d key %r: bad value %r" % (p, off, key, value[:60])
            assert i > last, "partition %d order broken at offset %d: %d after %d" % (p, off, i, last)
            last = i
    expected = set(("k%d" % i).encode() for i in range(start, start + n))
    missing = expected - set(seen)
    extra = set(seen) - expected
    assert not missing and not extra, "missing %d keys (e.g. %r), %d unexpected (e.g. %r)" % (
        len(missing), sorted(missing)[:5], len(extra), sorted(extra)[:5])
    if acked is not None:
        bad = [(k, acked[k], seen.get(k)) for k in acked if seen.get(k) != acked[k]]
        assert not bad, "%d records not at their acknowledged (partition, offset), e.g. %r" % (len(bad), bad[:5])
    return seen


def run(args, timeout=120, input=None, check=True):
    """Runs a helper command with a hard timeout; returns CompletedProcess."""
    r = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s" % (
            args, r.returncode, r.stdout[-2000:], r.stderr[-4000:]))
    return r


def spawn(procs, args, **kw):
    """Starts a helper process in its own session; the `procs` fixture kills it."""
    p = subprocess.Popen(args, start_new_session=True, **kw)
    procs.append(p)
    return p


CODEC_IDS = {None: 0, "none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def stored_codecs(bootstrap, topic, partitions):
    """The set of compression codec ids of the batches stored at the start of
    each partition (raw Fetch), to prove the client really used the codec."""
    import kproto as kp
    ids = set()
    with kp.Conn(bootstrap) as c:
        for p in range(partitions):
            f = c.fetch(topic, p, 0, max_wait_ms=0, min_bytes=0, max_bytes=256 * 1024)
            assert f["error"] == 0, f
            ids.update(b["attributes"] & 0x07 for b in kp.decode_batches(f["records"]))
    return ids


def assert_codec(bootstrap, topic, partitions, codec):
    """The stored batches really use `codec`. Clients may send a batch
    uncompressed when compression would not shrink it (kafka-python and
    librdkafka both do), so uncompressed batches are allowed beside it; but at
    least one batch must carry the codec (a silent fallback to uncompressed
    everywhere means the client decided the broker does not support it)."""
    got = stored_codecs(bootstrap, topic, partitions)
    want = CODEC_IDS[codec]
    hint = ""
    if codec == "lz4" and got == {0}:
        hint = (" -- librdkafka (all versions) enables LZ4 only if the broker's ApiVersions lists"
                " FindCoordinator with v0 in range (rdkafka_feature.c, feature LZ4), else it silently"
                " sends uncompressed")
    assert want in got and got <= {0, want}, "stored batches use codec ids %r, expected %r (%s)%s" % (
        got, want, codec, hint)
