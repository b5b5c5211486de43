"""Log compaction with real clients against the real broker.

Keyed records go to a `cleanup.policy=compact` topic from librdkafka in all
four codecs, the broker's cleaner compacts the sealed segments, and every
record then read back (librdkafka and kafka-python) is checked one by one:
it is the record produced at that offset, offsets ascend with no duplicate,
and per key the last record read is the last one produced (tombstoned keys
end in a tombstone or are gone). A SIGKILL in the middle of cleaning passes
loses nothing and leaves no half-cleaned segment.
"""

import random
import re
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition

from confluent_kafka import TopicPartition

from cluster_util import Cluster, cluster_of, partitions_of
from util import admin, consume_all, consumer, producer, unique_topic, wait_until

CODECS = ["gzip", "snappy", "lz4", "zstd"]
KEYS = 150
ROUNDS = 12


def start(make_broker, tmp_path, extra=""):
    cfg = tmp_path / "compact.toml"
    cfg.write_text('"log.cleaner.backoff.ms" = 100\n' + extra)
    return make_broker(lambda b: ["--config", str(cfg)])


def create_compacted(bootstrap, topic, **configs):
    conf = {"cleanup.policy": "compact", "segment.bytes": "8192",
            "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    conf.update(configs)
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic, 1, 1, config=conf)], operation_timeout=15)
    fs[topic].result(timeout=30)


def produce_rounds(bootstrap, topic, rounds=ROUNDS, keys=KEYS, pad=40):
    """Every key once per round, in the round's codec; in the last round
    every tenth key gets a tombstone. Returns {offset: (key, value)}."""
    produced = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            produced[msg.offset()] = (msg.key(), msg.value())

    for r in range(rounds):
        p = producer(bootstrap, acks="all", **{"compression.type": CODECS[r % 4],
                                               "enable.idempotence": True})
        for k in range(keys):
            key = b"key-%d" % k
            tomb = r == rounds - 1 and k % 10 == 0
            # Incompressible, so that the log is as large as it looks.
            value = None if tomb else (b"r%d-k%d:" % (r, k)) + random.Random(r * keys + k).randbytes(pad)
            p.produce(topic, key=key, value=value, partition=0, on_delivery=on_delivery)
            p.poll(0)
        assert p.flush(60) == 0
    assert not errors, errors[:5]
    assert len(produced) == rounds * keys
    return produced


def check_compacted(records, produced):
    """`records`: [(offset, key, value)] as read. Each is what was produced
    at that offset, offsets ascend, and per key the latest value wins."""
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets not strictly ascending"
    for o, k, v in records:
        assert produced.get(o) == (k, v), "offset %d read as %r, produced %r" % (o, (k, v), produced.get(o))
    latest = {}
    for o in sorted(produced):
        latest[produced[o][0]] = (o, produced[o][1])
    last_read = {}
    for o, k, v in records:
        last_read[k] = (o, v)
    for k, (o, v) in latest.items():
        if v is None:
            # A tombstone may be gone (delete.retention.ms passed); then no
            # older value of the key may be left either.
            assert last_read.get(k, (o, None)) == (o, None), "key %r: %r after its tombstone" % (k, last_read[k])
        else:
            assert last_read.get(k) == (o, v), "key %r: read %r, latest %r" % (k, last_read.get(k), (o, v))


def read_librdkafka(bootstrap, topic):
    got = consume_all(bootstrap, topic, 1)
    return [(o, k, v) for o, k, v, _ in got[0]]


def read_kafka_python(bootstrap, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    tp = KTopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out = []
    deadline = time.monotonic() + 60
    while c.position(tp) < end and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=1000).values():
            out += [(r.offset, r.key, r.value) for r in recs]
    c.close()
    return out


def cleaner_passes(broker):
    return len(re.findall(r"log cleaner pass", broker.log_text()))


def test_compacted_topic_keeps_latest_value_per_key(make_broker, tmp_path):
    broker = start(make_broker, tmp_path)
    topic = unique_topic("compact")
    create_compacted(broker.bootstrap, topic)
    produced = produce_rounds(broker.bootstrap, topic)
    total = len(produced)
    # The cleaner runs by itself: wait until what is read shrank to about
    # one record per key (the active segment is never cleaned).
    wait_until(lambda: len(read_librdkafka(broker.bootstrap, topic)) < total // 3, 60,
               interval=0.5, what="compaction of %s" % topic)
    assert cleaner_passes(broker) >= 1
    records = read_librdkafka(broker.bootstrap, topic)
    check_compacted(records, produced)
    check_compacted(read_kafka_python(broker.bootstrap, topic), produced)
    # The log's end stays where it was: new records follow on.
    p = producer(broker.bootstrap, acks="all")
    got = []
    p.produce(topic, key=b"key-1", value=b"after", partition=0,
              on_delivery=lambda e, m: got.append((e, m.offset())))
    p.flush(30)
    assert got == [(None, total)]
    produced[total] = (b"key-1", b"after")
    check_compacted(read_librdkafka(broker.bootstrap, topic), produced)


def test_keyless_records_are_refused_by_a_compacted_topic(make_broker, tmp_path):
    broker = start(make_broker, tmp_path)
    topic = unique_topic("compact-nokey")
    create_compacted(broker.bootstrap, topic)
    errors = []
    p = producer(broker.bootstrap, acks="all", retries=0, **{"compression.type": "lz4"})
    p.produce(topic, value=b"no key", partition=0,
              on_delivery=lambda e, m: errors.append(e))
    p.flush(30)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]


def test_a_decompression_bomb_is_refused_by_a_compacted_topic(make_broker, tmp_path):
    """A small zstd batch whose records decompress past 64 MiB: INVALID_RECORD,
    and the broker keeps serving."""
    broker = start(make_broker, tmp_path)
    topic = unique_topic("compact-bomb")
    create_compacted(broker.bootstrap, topic, **{"max.message.bytes": str(8 << 20)})
    errors = []
    p = producer(broker.bootstrap, acks="all", retries=0, **{"compression.type": "zstd",
                 "batch.size": 100 << 20, "linger.ms": 500, "message.max.bytes": 200 << 20})
    for i in range(80):
        p.produce(topic, key=b"k%d" % i, value=b"\0" * (1 << 20), partition=0,
                  on_delivery=lambda e, m: errors.append(e))
    p.flush(60)
    assert len(errors) == 80 and all(e is not None and e.code() == KafkaError.INVALID_RECORD
                                     for e in errors), errors[:3]
    got = []
    p.produce(topic, key=b"small", value=b"v", partition=0, on_delivery=lambda e, m: got.append(e))
    p.flush(30)
    assert got == [None]


def test_cleanup_policy_set_at_run_time_compacts_an_existing_topic(make_broker, tmp_path):
    broker = start(make_broker, tmp_path)
    topic = unique_topic("compact-later")
    create_compacted(broker.bootstrap, topic, **{"cleanup.policy": "delete"})
    produced = produce_rounds(broker.bootstrap, topic, rounds=6)
    time.sleep(1)
    assert len(read_librdkafka(broker.bootstrap, topic)) == len(produced), "compacted under delete"
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact,delete",
                    incremental_operation=AlterConfigOpType.SET)])
    a = admin(broker.bootstrap)
    for f in a.incremental_alter_configs([res]).values():
        f.result(timeout=30)
    wait_until(lambda: len(read_librdkafka(broker.bootstrap, topic)) < len(produced) // 2, 60,
               interval=0.5, what="compaction after cleanup.policy changed")
    check_compacted(read_librdkafka(broker.bootstrap, topic), produced)
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException):
        for f in a.incremental_alter_configs([bad]).values():
            f.result(timeout=30)


def test_sigkill_while_cleaning_loses_nothing(make_broker, tmp_path):
    # A slow cleaner (throttled I/O) and a large dirty log, so that kills
    # land inside passes: the topic fills under `delete`, then turns compact.
    broker = start(make_broker, tmp_path, '"log.cleaner.io.max.bytes.per.second" = 300000\n')
    topic = unique_topic("compact-crash")
    create_compacted(broker.bootstrap, topic, **{"cleanup.policy": "delete"})
    produced = produce_rounds(broker.bootstrap, topic, rounds=16, pad=600)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
    a = admin(broker.bootstrap)
    for f in a.incremental_alter_configs([res]).values():
        f.result(timeout=30)
    rng = random.Random(7)
    pdir = broker.data_dir / ("%s-0" % topic)
    mid_pass = 0
    for _ in range(8):
        time.sleep(rng.uniform(1.0, 6.0))
        broker.kill()
        # Files of a pass the kill interrupted; the next open deletes or
        # completes them, and every read must see a whole log.
        if [f for f in pdir.iterdir() if f.name.endswith((".cleaned", ".swap"))]:
            mid_pass += 1
        broker.start()
        check_compacted(read_librdkafka(broker.bootstrap, topic), produced)
        assert not [f.name for f in pdir.iterdir() if f.name.endswith((".cleaned", ".swap"))]
        if mid_pass >= 2:
            break
    assert mid_pass >= 1, "no kill landed inside a cleaner pass"
    wait_until(lambda: len(read_librdkafka(broker.bootstrap, topic)) < len(produced) // 3, 120,
               interval=1, what="compaction to finish after the kills")
    check_compacted(read_librdkafka(broker.bootstrap, topic), produced)


def test_consumer_offsets_are_compacted_and_survive_a_restart(make_broker, tmp_path):
    """A group committing over and over costs what its live offsets cost."""
    broker = start(make_broker, tmp_path, '"offsets.topic.segment.bytes" = 16384\n')
    topic = unique_topic("compact-offsets")
    create_compacted(broker.bootstrap, topic, **{"cleanup.policy": "delete"})
    group = "g-" + topic
    c = consumer(broker.bootstrap, **{"group.id": group})
    commits = 3000
    for i in range(1, commits + 1):
        c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
    c.close()
    dirs = [d for d in broker.data_dir.iterdir() if d.name.startswith("__consumer_offsets-")]

    def offsets_log_bytes():
        # The sealed segments (the active one is preallocated and never cleaned).
        total = 0
        for d in dirs:
            logs = sorted(f for f in d.iterdir() if f.name.endswith(".log"))
            total += sum(f.stat().st_size for f in logs[:-1])
        return total

    # Each commit is a batch of ~160 bytes (480 KB in all); compacted, the
    # sealed segments hold about one.
    wait_until(lambda: offsets_log_bytes() < 1024, 60, interval=0.5,
               what="__consumer_offsets compacted (now %d bytes)" % offsets_log_bytes())
    broker.restart(kill=True)
    c = consumer(broker.bootstrap, **{"group.id": group})
    got = c.committed([TopicPartition(topic, 0)], timeout=30)
    c.close()
    assert got[0].offset == commits


def test_a_follower_copies_a_compacted_log_and_serves_it_after_failover(tmp_path, request):
    """A replica that was away fetches its leader's compacted log, gaps and
    all, and after the failover serves exactly what the leader did."""
    c = Cluster(tmp_path, brokers_only=1)
    for b in c.brokers:
        cfg = b.workdir / "brook.toml"
        cfg.write_text(cfg.read_text() + '"log.cleaner.backoff.ms" = 100\n')
    with cluster_of(c, request):
        topic = unique_topic("compact-replicas")
        conf = {"cleanup.policy": "compact", "segment.bytes": "8192",
                "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
        # Node 4 (broker only) leads; node 1 is away while the log is compacted;
        # nodes 2 and 4 are lost later with the quorum (voters 1-3) intact.
        a = admin(c.node(1).bootstrap)
        fs = a.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[4, 2, 1]], config=conf)],
                             operation_timeout=15)
        fs[topic].result(timeout=30)
        wait_until(lambda: partitions_of(c, topic, c.node(2)).get(0, (None,))[0] == 4, 30,
                   what="node 4 leading")
        away = c.node(1)
        away.kill()
        produced = produce_rounds(c.bootstrap, topic)
        wait_until(lambda: len(read_librdkafka(c.node(4).bootstrap, topic)) < len(produced) // 3, 60,
                   interval=0.5, what="compaction on the leader")
        away.start()
        wait_until(lambda: partitions_of(c, topic, c.node(2))[0][2] == [1, 2, 4], 60,
                   what="node 1 back in the ISR")
        c.node(2).kill()
        wait_until(lambda: partitions_of(c, topic, c.node(1))[0][2] == [1, 4], 60,
                   what="the ISR without node 2")
        c.node(4).kill()
        wait_until(lambda: partitions_of(c, topic, c.node(1))[0][0] == 1, 60,
                   what="node 1 leading")
        check_compacted(read_librdkafka(c.node(1).bootstrap, topic), produced)
        c.node(2).start()
        c.node(4).start()
