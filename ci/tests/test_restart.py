"""Restarts read only what they must: a clean stop leaves a clean-stop recovery
checkpoint in every partition (the restart scans nothing and producer state
comes from the checkpoint), a crash restart reads only what was written after
the last periodic checkpoint, and a damaged checkpoint is ignored in favour of
the segments. Records are checked one by one after every restart."""

import re
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

import kproto as kp
from util import admin, consume_all, create_topic, produce_keyed, producer, unique_topic, wait_until

CHECKPOINT = "recovery-checkpoint"


def partition_dir(broker, topic, p):
    return broker.data_dir / ("%s-%d" % (topic, p))


def checkpoint(broker, topic, p):
    """(clean, next_offset) of a partition's checkpoint file, or None."""
    path = partition_dir(broker, topic, p) / CHECKPOINT
    if not path.exists():
        return None
    b = path.read_bytes()
    assert b[:4] == b"BRCK" and b[4] == 3, b[:8]  # version 3: with transactions and coordinator epochs
    return b[5] == 1, int.from_bytes(b[22:30], "big")


def read_bytes_of_last_start(broker):
    """Sum of `read_bytes` over the shards' "opened partitions" lines of the
    latest start."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", broker.log_text())
    last = text[text.rindex("==== test harness: start #"):]
    counts = [int(m) for m in re.findall(r"read_bytes=(\d+)[^\n]*opened partitions", last)]
    counts += [int(m) for m in re.findall(r"opened partitions[^\n]*read_bytes=(\d+)", last)]
    assert counts, "no 'opened partitions' line in the latest start:\n" + last[-3000:]
    return sum(counts)


def check_records(bootstrap, topic, partitions, n):
    got = consume_all(bootstrap, topic, partitions)
    seen = {}
    for p, recs in got.items():
        offsets = [o for o, _, _, _ in recs]
        assert offsets == list(range(len(offsets))), "partition %d offsets not dense: %r" % (p, offsets[:20])
        for _, k, v, _ in recs:
            assert k not in seen, "duplicate %r" % k
            seen[k] = v
    assert len(seen) == n, "%d records, expected %d" % (len(seen), n)
    for i in range(n):
        assert seen[b"k%d" % i].startswith(b"v%d" % i), (i, seen[b"k%d" % i][:20])


def test_clean_restart_reads_nothing_and_keeps_producer_state(broker):
    topic = unique_topic("restart-clean")
    create_topic(broker.bootstrap, topic, 4)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 4000)
    assert not dr.errors and len(dr.acked) == 4000
    with kp.Conn(broker.bootstrap) as c:
        err, pid, epoch = c.init_producer_id()
        assert err == 0
        first = kp.encode_batch([(b"idem0", b"x")], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        err, idem_offset = c.produce(topic, 0, first)
        assert err == 0

    broker.restart()
    for p in range(4):
        clean, end = checkpoint(broker, topic, p)
        assert clean, "partition %d: checkpoint after SIGTERM is not marked clean" % p
    assert read_bytes_of_last_start(broker) == 0, "a restart after a clean stop read the log"

    with kp.Conn(broker.bootstrap) as c:
        # the producer state came from the checkpoint: a retry is a duplicate,
        # the next sequence is accepted
        assert c.produce(topic, 0, first) == (0, idem_offset), "retry after a clean restart not a duplicate"
        nxt = kp.encode_batch([(b"idem1", b"y")], producer_id=pid, producer_epoch=epoch, base_sequence=1)
        assert c.produce(topic, 0, nxt) == (0, idem_offset + 1)
        gap = kp.encode_batch([(b"idem9", b"z")], producer_id=pid, producer_epoch=epoch, base_sequence=9)
        assert c.produce(topic, 0, gap)[0] == kp.OUT_OF_ORDER_SEQUENCE_NUMBER
    # the first write after the clean restart took the clean mark away
    clean, _ = checkpoint(broker, topic, 0)
    assert not clean, "partition 0 was written after the restart but its checkpoint still says clean"
    assert checkpoint(broker, topic, 1)[0], "an unwritten partition keeps its clean checkpoint"

    broker.restart(kill=True)
    with kp.Conn(broker.bootstrap) as c:
        f = c.fetch(topic, 0, idem_offset, max_wait_ms=100)
        assert f["error"] == 0 and f["high_watermark"] == idem_offset + 2, f
        got = [(o, k) for b in kp.decode_batches(f["records"]) for (o, _ts, k, _v) in b["records"]]
        assert got == [(idem_offset, b"idem0"), (idem_offset + 1, b"idem1")], got
    got = consume_all(broker.bootstrap, topic, 4)
    keyed = {k: v for recs in got.values() for _, k, v, _ in recs if not k.startswith(b"idem")}
    assert len(keyed) == 4000
    for i in range(4000):
        assert keyed[b"k%d" % i].startswith(b"v%d" % i)


def test_crash_restart_reads_only_what_followed_the_checkpoint(make_broker, tmp_path):
    cfg = tmp_path / "ckpt.toml"
    cfg.write_text('"log.flush.offset.checkpoint.interval.ms" = 300\n')
    broker = make_broker(lambda b: ["--config", str(cfg)])
    topic = unique_topic("restart-crash")
    create_topic(broker.bootstrap, topic, 1)
    big = b"x" * 1000
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 5})
    dr = produce_keyed(p, topic, 8000, partition=0, value=lambda i: b"v%d:" % i + big)
    assert not dr.errors and len(dr.acked) == 8000
    # the periodic checkpoint catches up with the log end
    wait_until(lambda: (checkpoint(broker, topic, 0) or (None, -1))[1] == 8000, 30,
               what="a checkpoint at offset 8000")
    dr = produce_keyed(p, topic, 100, start=8000, partition=0, value=lambda i: b"v%d:" % i + big)
    assert not dr.errors and len(dr.acked) == 100
    broker.restart(kill=True)
    read = read_bytes_of_last_start(broker)
    assert 0 < read < 8000 * 1000 // 4, "crash restart read %d bytes: not just what followed the checkpoint" % read
    check_records(broker.bootstrap, topic, 1, 8100)


def test_damaged_checkpoint_is_ignored(broker):
    topic = unique_topic("restart-damaged")
    create_topic(broker.bootstrap, topic, 2)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 3000)
    assert not dr.errors
    broker.terminate()
    for part in range(2):
        path = partition_dir(broker, topic, part) / CHECKPOINT
        b = bytearray(path.read_bytes())
        b[len(b) // 2] ^= 0xff
        path.write_bytes(bytes(b))
    broker.start()
    assert "damaged recovery checkpoint ignored" in broker.log_text()
    assert read_bytes_of_last_start(broker) > 0
    check_records(broker.bootstrap, topic, 2, 3000)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 10, start=3000)
    assert not dr.errors
    check_records(broker.bootstrap, topic, 2, 3010)


def test_deleted_records_and_altered_configs_survive_a_crash(broker):
    """DeleteRecords' log start and an AlterConfigs override are stored before
    they are answered: after a SIGKILL the log still starts there (segments
    wholly before it are gone from the disk) and the override still holds."""
    topic = unique_topic("restart-delete-records")
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic(topic, 1, config={"segment.bytes": "4096"})])[topic].result(timeout=30)
    dr = produce_keyed(producer(broker.bootstrap, acks="all", **{"linger.ms": 0, "batch.num.messages": 1}),
                       topic, 400)
    assert not dr.errors and len(dr.acked) == 400
    pdir = partition_dir(broker, topic, 0)
    segments = lambda: sorted(int(p.stem) for p in pdir.glob("*.log"))
    before = segments()
    assert len(before) > 3 and before[1] < 250, before

    [res] = a.delete_records([TopicPartition(topic, 0, 250)]).values()
    assert res.result(timeout=30).low_watermark == 250
    kept = segments()
    # Only the segment holding offset 250 and those after it are left.
    first = max(b for b in before if b <= 250)
    assert kept == [b for b in before if b >= first], (before, kept)
    cfg = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([cfg])[cfg].result(timeout=30)

    broker.kill()
    broker.start()
    a = admin(broker.bootstrap)
    desc = ConfigResource(ConfigResource.Type.TOPIC, topic)
    got = a.describe_configs([desc])[desc].result(timeout=30)
    assert got["retention.ms"].value == "86400000" and got["segment.bytes"].value == "4096"
    records = consume_all(broker.bootstrap, topic, 1)
    offsets = [off for off, *_ in records[0]]
    assert offsets == list(range(250, 400)), offsets[:5]
    for off, key, *_ in records[0]:
        assert key == b"k%d" % off, (off, key)
