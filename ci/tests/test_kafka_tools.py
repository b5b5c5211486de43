"""Apache Kafka's own command-line tools (4.4.0, run by ci/kafka-tool from the
jars ci/setup.sh resolved) against the real Brook binary, as an operator would:
kafka-topics, kafka-console-producer / kafka-console-consumer,
kafka-consumer-groups, kafka-get-offsets, kafka-producer-perf-test and
kafka-consumer-perf-test.

What the tools print is asserted as Apache Kafka 4.4 prints it (checked
against a real Kafka broker); what they wrote or read is checked record by
record with a Python client (content, keys, headers, order per partition, no
loss, no duplicates). Where Brook differs from Kafka, see /work/findings/tools.md.

One broker is shared by the module (unique topic and group names per test).
Each tool run is a JVM start; the JVM flags below (serial GC, C1 only) make
those starts ~1.5 s instead of ~2.5 s on a small machine.

To check these assertions against Apache Kafka itself, point the module at any
running broker: TOOLS_TEST_BOOTSTRAP=127.0.0.1:PORT pytest ci/tests/test_kafka_tools.py
(e.g. one started by `python3 ci/tests/apache_kafka.py --dir /tmp/k --heap 512M`).
"""

import os
import re
import signal
import subprocess
import time
import types
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition, OFFSET_BEGINNING

from util import admin, consumer, create_topic, payload, producer, topic_partitions, unique_topic, wait_until

REPO = Path(__file__).resolve().parents[2]
KAFKA_TOOL = REPO / "ci" / "kafka-tool"
JARS = REPO / "ci" / ".lab" / "jars"
TOOL_ENV = dict(os.environ)
TOOL_ENV.setdefault("KAFKA_JVM_OPTS", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto")
TOOL_TIMEOUT = 90

pytestmark = pytest.mark.skipif(not (JARS / "kafka-tools-4.4.0.jar").exists(),
                                reason="Kafka 4.4.0 jars missing (run ci/setup.sh)")


@pytest.fixture(scope="module")
def target(request):
    """The broker under test: the module's Brook, or $TOOLS_TEST_BOOTSTRAP."""
    bs = os.environ.get("TOOLS_TEST_BOOTSTRAP")
    if bs:
        return types.SimpleNamespace(bootstrap=bs)
    return request.getfixturevalue("module_broker")


# -- running the tools --------------------------------------------------------

class Ran:
    def __init__(self, args, r):
        self.args = args
        self.rc = r.returncode
        self.out = r.stdout.decode(errors="replace")
        self.err = r.stderr.decode(errors="replace")

    def __repr__(self):
        return "%s\nexit %d\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(self.args), self.rc, self.out[-3000:], self.err[-5000:])


def tool(name, *args, input=None, timeout=TOOL_TIMEOUT, check=True):
    """Runs `ci/kafka-tool name args...`; with check, requires exit 0."""
    argv = [str(KAFKA_TOOL), name] + [str(a) for a in args]
    r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=TOOL_ENV)
    ran = Ran(argv[1:], r)
    if check:
        assert ran.rc == 0, "tool failed: %r" % ran
    return ran


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


def table(text, header_first):
    """Rows of a whitespace-aligned table printed by kafka-consumer-groups:
    [dict(column -> value)] for the table whose header starts with header_first."""
    rows, cols = [], None
    for l in text.splitlines():
        parts = l.split()
        if not parts:
            continue
        if parts[0] == header_first and cols is None:
            cols = parts
            continue
        if cols is not None:
            assert len(parts) == len(cols), "row %r does not match header %r" % (l, cols)
            rows.append(dict(zip(cols, parts)))
    assert cols is not None, "no table with header %r in:\n%s" % (header_first, text)
    return rows


def iso_utc(ms):
    """A --to-datetime argument for epoch milliseconds, in UTC."""
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ms % 1000)


# -- Kafka's default partitioner (murmur2), to check where keyed records are ---

def murmur2(data):
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = data[4 * i] | (data[4 * i + 1] << 8) | (data[4 * i + 2] << 16) | (data[4 * i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest, tail = len(data) % 4, 4 * n4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def kafka_partition(key, partitions):
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- reading back with a Python client ----------------------------------------

def read_all(bootstrap, topic, partitions, timeout=120, max_records=1_000_000):
    """Every record of partitions 0..partitions-1 from the beginning up to EOF:
    {partition: [(offset, key, value, headers, timestamp)]}."""
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = defaultdict(list)
        eof = set()
        n = 0
        deadline = time.monotonic() + timeout
        while len(eof) < partitions:
            assert time.monotonic() < deadline, "read timed out: %d records, EOF on %s" % (n, sorted(eof))
            for m in c.consume(num_messages=10000, timeout=1.0):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError("consumer error: %s" % err)
                eof.discard(m.partition())
                out[m.partition()].append((m.offset(), m.key(), m.value(), m.headers() or [], m.timestamp()[1]))
                n += 1
                assert n <= max_records, "more than %d records" % max_records
        return dict(out)
    finally:
        c.close()


def committed(bootstrap, group, topic, partitions):
    """The group's committed offset per partition (-1001 = none)."""
    c = consumer(bootstrap, **{"group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        for tp in tps:
            assert tp.error is None, tp
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def end_offsets(bootstrap, topic, partitions):
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        c.close()


def groups_listed(bootstrap):
    a = admin(bootstrap)  # keep the client alive until the future completes
    res = a.list_consumer_groups(request_timeout=30).result(timeout=60)
    return set(g.group_id for g in res.valid)


def check_dense_and_ordered(by_p):
    """Offsets dense from 0 in every partition; returns the flat list."""
    for p, recs in by_p.items():
        offs = [r[0] for r in recs]
        assert offs == list(range(len(offs))), "partition %d offsets not dense from 0: %r" % (p, offs[:20])


# -- console producer / consumer formats --------------------------------------

def console_line(i):
    """kafka-console-producer input (parse.headers, parse.key, key.separator=TAB):
    headers, key, value. Two headers share the key "dup" (Kafka allows it)."""
    return "idx:%d,src:console,dup:%d,dup:x\tk%d\t%s" % (i, i % 3, i, payload(i).decode())


def console_headers(i):
    return [("idx", b"%d" % i), ("src", b"console"), ("dup", b"%d" % (i % 3)), ("dup", b"x")]


def check_console_records(by_p, n, partitions):
    """Exactly records 0..n-1 as console_line wrote them, each once, in order
    per partition, each in the partition Kafka's partitioner picks for its key."""
    check_dense_and_ordered(by_p)
    seen = {}
    for p, recs in by_p.items():
        last = -1
        for off, key, value, headers, _ts in recs:
            assert key is not None and key.startswith(b"k"), (p, off, key)
            i = int(key[1:])
            assert key not in seen, "duplicate key %r at %d/%d and %r" % (key, p, off, seen[key])
            seen[key] = (p, off)
            assert value == payload(i), "%d/%d key %r: value %r" % (p, off, key, value[:60])
            assert list(headers) == console_headers(i), "%d/%d key %r: headers %r" % (p, off, key, headers)
            assert i > last, "partition %d order broken at offset %d: %d after %d" % (p, off, i, last)
            last = i
            assert p == kafka_partition(key, partitions), "key %r in partition %d" % (key, p)
    missing = set(b"k%d" % i for i in range(n)) - set(seen)
    assert not missing and len(seen) == n, "missing %d keys, e.g. %r" % (len(missing), sorted(missing)[:5])
    return seen


CONSUMER_PRINT = ["--formatter-property", "print.key=true", "--formatter-property", "print.headers=true",
                  "--formatter-property", "print.partition=true", "--formatter-property", "print.offset=true"]


def parse_console_output(text):
    """kafka-console-consumer output with print.partition/offset/headers/key:
    'Partition:P<TAB>Offset:O<TAB>h1:v1,h2:v2<TAB>KEY<TAB>VALUE' -> list of
    (partition, offset, headers_text, key, value) in printed order."""
    out = []
    for l in text.splitlines():
        if not l:
            continue
        parts = l.split("\t", 4)
        assert len(parts) == 5 and parts[0].startswith("Partition:") and parts[1].startswith("Offset:"), (
            "unexpected console-consumer line %r" % l)
        out.append((int(parts[0][len("Partition:"):]), int(parts[1][len("Offset:"):]), parts[2], parts[3], parts[4]))
    return out


def check_printed_against(printed, by_p):
    """Every printed record is the stored record at its (partition, offset),
    each at most once, offsets increasing per partition in print order.
    Returns {partition: number printed}."""
    stored = {}
    for p, recs in by_p.items():
        for off, key, value, headers, _ts in recs:
            hdr = ",".join("%s:%s" % (k, v.decode()) for k, v in headers) if headers else "NO_HEADERS"
            stored[(p, off)] = (hdr, key.decode(), value.decode())
    last = {}
    seen = set()
    for p, off, hdr, key, value in printed:
        assert (p, off) in stored, "printed a record at %d/%d that is not stored" % (p, off)
        assert (p, off) not in seen, "printed %d/%d twice" % (p, off)
        seen.add((p, off))
        assert (hdr, key, value) == stored[(p, off)], "printed %r at %d/%d, stored %r" % (
            (hdr, key, value[:40]), p, off, stored[(p, off)])
        assert off > last.get(p, -1), "partition %d printed out of order: %d after %d" % (p, off, last[p])
        last[p] = off
    counts = defaultdict(int)
    for p, off, *_ in printed:
        counts[p] += 1
    # a prefix of each partition: offsets 0..count-1
    for p, n in counts.items():
        assert last[p] == n - 1, "partition %d: printed %d records, last offset %d" % (p, n, last[p])
    return dict(counts)


# -- kafka-topics --------------------------------------------------------------

def test_topics_create_list_delete(target):
    bs = target.bootstrap
    topic = unique_topic("tools-topic")
    r = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic,
             "--partitions", 4, "--replication-factor", 1)
    assert r.out.strip() == "Created topic %s." % topic, r
    wait_until(lambda: topic_partitions(bs, topic) == 4, 30, what="4 partitions of %s in metadata" % topic)

    r = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic,
             "--partitions", 4, "--if-not-exists")
    assert "Created topic" not in r.out, r

    r = tool("kafka-topics", "--bootstrap-server", bs, "--list")
    assert topic in lines(r.out), r
    r = tool("kafka-topics", "--bootstrap-server", bs, "--list", "--exclude-internal")
    listed = lines(r.out)
    assert topic in listed and not [t for t in listed if t.startswith("__")], r

    # some data, which must be gone with the topic
    p = producer(bs, acks="all")
    for i in range(20):
        p.produce(topic, key=b"k%d" % i, value=payload(i), partition=i % 4)
    assert p.flush(60) == 0

    r = tool("kafka-topics", "--bootstrap-server", bs, "--delete", "--topic", topic)
    assert r.out.strip() == "", r
    wait_until(lambda: topic_partitions(bs, topic) == 0, 30, what="%s gone from metadata" % topic)
    r = tool("kafka-topics", "--bootstrap-server", bs, "--list")
    assert topic not in lines(r.out), r

    # the same name again: a new, empty topic with the new partition count
    r = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", 2)
    assert r.out.strip() == "Created topic %s." % topic, r
    wait_until(lambda: topic_partitions(bs, topic) == 2, 30, what="2 partitions of re-created %s" % topic)
    assert end_offsets(bs, topic, 2) == {0: 0, 1: 0}
    assert read_all(bs, topic, 2) == {}


def test_topics_error_messages(target):
    """The errors an operator reads, as Kafka words them (the exception types are
    checked too; the texts are the brokers' error_message fields)."""
    bs = target.bootstrap
    topic = unique_topic("tools-errors")
    create_topic(bs, topic, 2)
    r = tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", 2, check=False)
    assert r.rc == 1 and "TopicExistsException" in r.err, r
    assert "Error while executing topic command : Topic '%s' already exists." % topic in r.out + r.err, r

    r = tool("kafka-topics", "--bootstrap-server", bs, "--alter", "--topic", topic, "--partitions", 1, check=False)
    assert r.rc == 1 and "InvalidPartitionsException" in r.err, r
    assert ("Error while executing topic command : The topic %s currently has 2 partition(s); "
            "1 would not be an increase." % topic) in r.out + r.err, r


def test_topics_alter_partitions(target):
    bs = target.bootstrap
    topic = unique_topic("tools-alter")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", 2)
    wait_until(lambda: topic_partitions(bs, topic) == 2, 30, what="%s in metadata" % topic)
    # murmur2_random is librdkafka's name for the Java client's default partitioner
    p = producer(bs, acks="all", partitioner="murmur2_random")
    for i in range(60):
        p.produce(topic, key=b"k%d" % i, value=payload(i))
    assert p.flush(60) == 0

    r = tool("kafka-topics", "--bootstrap-server", bs, "--alter", "--topic", topic, "--partitions", 4)
    assert r.out.strip() == "", r
    wait_until(lambda: topic_partitions(bs, topic) == 4, 30, what="4 partitions of %s" % topic)

    p = producer(bs, acks="all", partitioner="murmur2_random")
    for i in range(60, 120):
        p.produce(topic, key=b"k%d" % i, value=payload(i))
    assert p.flush(60) == 0
    by_p = read_all(bs, topic, 4)
    check_dense_and_ordered(by_p)
    seen = set()
    for q, recs in by_p.items():
        for off, key, value, _h, _ts in recs:
            i = int(key[1:])
            assert key not in seen and value == payload(i), (q, off, key)
            seen.add(key)
            # the first 60 were partitioned over 2 partitions, the rest over 4
            assert q == kafka_partition(key, 2 if i < 60 else 4), (q, off, key)
    assert len(seen) == 120
    assert sorted(q for q in by_p if by_p[q]) == [0, 1, 2, 3]


def test_topics_describe(target):
    bs = target.bootstrap
    topic = unique_topic("tools-describe")
    tool("kafka-topics", "--bootstrap-server", bs, "--create", "--topic", topic, "--partitions", 3,
         "--config", "retention.ms=86400000")
    wait_until(lambda: topic_partitions(bs, topic) == 3, 30, what="%s in metadata" % topic)
    [node] = list(admin(bs).list_topics(timeout=10).brokers)

    def check(out):
        head = [l for l in out.splitlines() if l.startswith("Topic: %s\t" % topic)]
        assert len(head) == 1, out
        m = re.match(r"Topic: (\S+)\tTopicId: (\S+)\tPartitionCount: (\d+)\tReplicationFactor: (\d+)\tConfigs: (.*)$",
                     head[0])
        assert m, head[0]
        assert m.group(1) == topic and m.group(3) == "3" and m.group(4) == "1", head[0]
        assert m.group(2) != "AAAAAAAAAAAAAAAAAAAAAA", "zero topic id: %r" % head[0]
        assert "retention.ms=86400000" in m.group(5).split(","), head[0]
        parts = {}
        for l in out.splitlines():
            pm = re.match(r"\tTopic: (\S+)\tPartition: (\d+)\tLeader: (\S+)\tReplicas: (\S+)\tIsr: (\S+)", l)
            if pm and pm.group(1) == topic:
                parts[int(pm.group(2))] = pm.groups()[2:]
        assert sorted(parts) == [0, 1, 2], out
        for p, (leader, replicas, isr) in parts.items():
            assert (leader, replicas, isr) == (str(node),) * 3, (p, leader, replicas, isr)
        return m.group(2)

    r = tool("kafka-topics", "--bootstrap-server", bs, "--describe", "--topic", topic, check=False)
    assert r.rc == 0, r
    topic_id = check(r.out)
    r = tool("kafka-topics", "--bootstrap-server", bs, "--describe", check=False)
    assert r.rc == 0, r
    assert check(r.out) == topic_id


def test_topics_describe_elr(target):
    """Kafka 4.4's TopicCommand describes partitions with DescribeTopicPartitions
    and prints empty ELR lists for a healthy single-node topic; through the
    Metadata fallback (a broker without DescribeTopicPartitions) it prints N/A."""
    bs = target.bootstrap
    topic = unique_topic("tools-elr")
    create_topic(bs, topic, 2)
    r = tool("kafka-topics", "--bootstrap-server", bs, "--describe", "--topic", topic)
    parts = [l for l in r.out.splitlines() if l.startswith("\tTopic: %s\tPartition: " % topic)]
    assert len(parts) == 2, r
    for l in parts:
        assert l.endswith("\tElr: \tLastKnownElr: "), "partition line %r" % l


# -- kafka-configs: topic settings changed at run time --------------------------

def dynamic_configs(bs, topic):
    """{name: value} of the topic's overrides, as kafka-configs --describe prints them."""
    r = tool("kafka-configs", "--bootstrap-server", bs, "--describe", "--entity-type", "topics",
             "--entity-name", topic)
    head, *rest = lines(r.out)
    assert head == "Dynamic configs for topic %s are:" % topic, r
    out = {}
    for l in rest:
        m = re.match(r"\s+([a-z.]+)=(\S*) sensitive=false synonyms=\{DYNAMIC_TOPIC_CONFIG:([a-z.]+)=(\S*?)[,}]", l)
        assert m and m.group(1) == m.group(3) and m.group(2) == m.group(4), (l, r)
        out[m.group(1)] = m.group(2)
    return out


def test_configs_alter_topic(target):
    """kafka-configs --alter changes a topic's settings without a restart: the
    broker enforces the new max.message.bytes at once, deleting the override
    brings back the default, and an invalid value changes nothing."""
    bs = target.bootstrap
    topic = unique_topic("tools-configs")
    create_topic(bs, topic, 1)
    alter = ("kafka-configs", "--bootstrap-server", bs, "--alter", "--entity-type", "topics",
             "--entity-name", topic)
    r = tool(*alter, "--add-config", "max.message.bytes=2000,retention.ms=86400000")
    assert r.out.strip() == "Completed updating config for topic %s." % topic, r
    assert dynamic_configs(bs, topic) == {"max.message.bytes": "2000", "retention.ms": "86400000"}

    def produce_one(i, size):
        p = producer(bs, acks="all", **{"message.max.bytes": 100_000})
        results = []
        p.produce(topic, key=b"k%d" % i, value=payload(i).ljust(size, b"."), partition=0,
                  on_delivery=lambda err, msg: results.append(err))
        assert p.flush(60) == 0
        return results[0]

    assert produce_one(0, 1000) is None
    err = produce_one(1, 3000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err

    r = tool(*alter, "--delete-config", "max.message.bytes")
    assert r.out.strip() == "Completed updating config for topic %s." % topic, r
    assert dynamic_configs(bs, topic) == {"retention.ms": "86400000"}
    assert produce_one(2, 3000) is None

    r = tool(*alter, "--add-config", "retention.ms=soon", check=False)
    assert r.rc != 0 and "InvalidConfigurationException" in r.err, r
    assert dynamic_configs(bs, topic) == {"retention.ms": "86400000"}

    by_p = read_all(bs, topic, 1)
    got = [(off, key, value) for off, key, value, _h, _ts in by_p[0]]
    assert got == [(0, b"k0", payload(0).ljust(1000, b".")), (1, b"k2", payload(2).ljust(3000, b"."))], got


# -- kafka-delete-records ----------------------------------------------------------

def delete_records(bs, tmp_path, offsets, check=True):
    """Runs kafka-delete-records for {(topic, partition): offset}."""
    import json
    f = tmp_path / ("delete-%d.json" % time.monotonic_ns())
    f.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": q, "offset": o} for (t, q), o in sorted(offsets.items())]}))
    return tool("kafka-delete-records", "--bootstrap-server", bs, "--offset-json-file", f, check=check)


def test_delete_records(target, tmp_path):
    """kafka-delete-records moves the log start: earliest offsets follow, a
    consumer from the beginning starts there and reads every later record
    once, in order; -1 deletes up to the high watermark; an offset past it
    is refused and changes nothing."""
    bs = target.bootstrap
    topic = unique_topic("tools-delete-records")
    create_topic(bs, topic, 3)
    p = producer(bs, acks="all", **{"linger.ms": 5})
    for q in range(3):
        for j in range(30):
            p.produce(topic, key=b"k%d-%d" % (q, j), value=payload(j), partition=q)
    assert p.flush(60) == 0

    r = delete_records(bs, tmp_path, {(topic, 0): 10, (topic, 1): -1})
    out = lines(r.out)  # partitions in no particular order
    assert out[:2] == ["Executing records delete operation", "Records delete operation completed:"], r
    assert sorted(out[2:]) == ["partition: %s-0\tlow_watermark: 10" % topic,
                               "partition: %s-1\tlow_watermark: 30" % topic], r
    earliest = lambda: get_offsets(bs, "--topic", topic, "--time", "-2")
    assert earliest() == {(topic, 0): 10, (topic, 1): 30, (topic, 2): 0}
    # An earlier offset than the log start changes nothing.
    r = delete_records(bs, tmp_path, {(topic, 0): 5})
    assert "partition: %s-0\tlow_watermark: 10" % topic in lines(r.out), r

    r = delete_records(bs, tmp_path, {(topic, 2): 31}, check=False)
    assert "partition: %s-2\terror: org.apache.kafka.common.errors.OffsetOutOfRangeException" % topic in r.out, r
    assert earliest() == {(topic, 0): 10, (topic, 1): 30, (topic, 2): 0}

    # New records land after the deleted ones; reads start at the log start.
    for q in range(3):
        p.produce(topic, key=b"k%d-30" % q, value=payload(30), partition=q)
    assert p.flush(60) == 0
    by_p = read_all(bs, topic, 3)
    for q, first in ((0, 10), (1, 30), (2, 0)):
        got = [(off, key, value) for off, key, value, _h, _ts in by_p[q]]
        assert got == [(j, b"k%d-%d" % (q, j), payload(j)) for j in range(first, 31)], (q, got[:3])


# -- console producer and consumer ---------------------------------------------

def test_console_producer_consumer(target):
    bs = target.bootstrap
    n, parts = 300, 3
    topic = unique_topic("tools-console")
    create_topic(bs, topic, parts)
    data = "".join(console_line(i) + "\n" for i in range(n)).encode()
    r = tool("kafka-console-producer", "--bootstrap-server", bs, "--topic", topic,
             "--reader-property", "parse.key=true", "--reader-property", "parse.headers=true",
             "--reader-property", "key.separator=\t", "--command-property", "acks=all", input=data)
    assert "ERROR" not in r.err and "Exception" not in r.err, r

    by_p = read_all(bs, topic, parts)
    check_console_records(by_p, n, parts)
    assert len(by_p) == parts, "keys all in partitions %r" % sorted(by_p)

    # everything, from the beginning, without a group
    r = tool("kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic, "--from-beginning",
             "--max-messages", n, "--timeout-ms", 60000, *CONSUMER_PRINT)
    printed = parse_console_output(r.out)
    assert len(printed) == n, "printed %d of %d records\n%r" % (len(printed), n, r)
    counts = check_printed_against(printed, by_p)
    assert counts == {p: len(recs) for p, recs in by_p.items()}
    assert "Processed a total of %d messages" % n in r.err, r

    # only the values, as an operator's default output
    r = tool("kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic, "--partition", 1,
             "--offset", 2, "--max-messages", 5, "--timeout-ms", 60000)
    want = [value.decode() for _off, _k, value, _h, _ts in by_p[1][2:7]]
    assert lines(r.out) == want, r


# -- consumer groups -------------------------------------------------------------

def test_consumer_groups(target, procs, tmp_path):
    bs = target.bootstrap
    parts = 3
    topic = unique_topic("tools-groups")
    group = "tools-grp-" + uuid.uuid4().hex[:8]
    create_topic(bs, topic, parts)
    now = int(time.time() * 1000)
    t_a, t_mid, t_b = now - 600_000, now - 450_000, now - 300_000
    p = producer(bs, acks="all")
    for i in range(300):
        ts = (t_a if i < 150 else t_b) + i
        p.produce(topic, key=b"k%d" % i, value=payload(i), timestamp=ts,
                  headers=[("idx", b"%d" % i)])
    assert p.flush(60) == 0
    by_p = read_all(bs, topic, parts)
    check_dense_and_ordered(by_p)
    assert sum(len(r) for r in by_p.values()) == 300
    log_end = {q: len(by_p.get(q, [])) for q in range(parts)}
    count_a = {q: sum(1 for r in by_p.get(q, []) if int(r[1][1:]) < 150) for q in range(parts)}
    for q, recs in by_p.items():
        for off, key, value, headers, ts in recs:
            i = int(key[1:])
            assert value == payload(i) and headers == [("idx", b"%d" % i)], (q, off, key)
            assert ts == (t_a if i < 150 else t_b) + i, (q, off, key, ts)

    # consume 100 records in the group; the console consumer commits exactly what it printed
    r = tool("kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic, "--group", group,
             "--from-beginning", "--max-messages", 100, "--timeout-ms", 60000, *CONSUMER_PRINT)
    printed = parse_console_output(r.out)
    assert len(printed) == 100, r
    counts = check_printed_against(printed, by_p)
    consumed = {q: counts.get(q, 0) for q in range(parts)}
    assert committed(bs, group, topic, parts) == consumed

    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--list")
    assert group in lines(r.out), r

    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group)
    assert "Consumer group '%s' has no active members." % group in r.err, r
    rows = table(r.out, "GROUP")
    got = {int(row["PARTITION"]): row for row in rows}
    assert sorted(got) == list(range(parts)), r
    for q, row in got.items():
        assert row["GROUP"] == group and row["TOPIC"] == topic, row
        assert int(row["CURRENT-OFFSET"]) == consumed[q], (row, consumed)
        assert int(row["LOG-END-OFFSET"]) == log_end[q], (row, log_end)
        assert int(row["LAG"]) == log_end[q] - consumed[q], row
        assert row["CONSUMER-ID"] == row["HOST"] == row["CLIENT-ID"] == "-", row

    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group, "--state")
    [row] = table(r.out, "GROUP")
    assert (row["GROUP"], row["STATE"], row["#MEMBERS"]) == (group, "Empty", "0"), r

    # --reset-offsets --to-earliest
    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--group", group, "--reset-offsets",
             "--to-earliest", "--topic", topic, "--execute")
    rows = table(r.out, "GROUP")
    assert {int(row["PARTITION"]): int(row["NEW-OFFSET"]) for row in rows} == {q: 0 for q in range(parts)}, r
    assert committed(bs, group, topic, parts) == {q: 0 for q in range(parts)}

    # --reset-offsets --to-datetime between the two halves: the first record of
    # the second half in each partition
    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--group", group, "--reset-offsets",
             "--to-datetime", iso_utc(t_mid), "--all-topics", "--execute")
    rows = table(r.out, "GROUP")
    assert {int(row["PARTITION"]): int(row["NEW-OFFSET"]) for row in rows} == count_a, r
    assert committed(bs, group, topic, parts) == count_a

    # an active member: it resumes from the committed offsets
    out_path = tmp_path / "active-member.out"
    out_f = open(out_path, "wb")
    try:
        member = subprocess.Popen(
            [str(KAFKA_TOOL), "kafka-console-consumer", "--bootstrap-server", bs, "--topic", topic,
             "--group", group, "--timeout-ms", "120000", "--command-property", "client.id=tools-active"]
            + CONSUMER_PRINT, stdout=out_f, stderr=subprocess.DEVNULL, env=TOOL_ENV, start_new_session=True)
        procs.append(member)
        a = admin(bs)

        def stable():
            d = a.describe_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
            return str(d.state).endswith("STABLE") and len(d.members) == 1

        wait_until(stable, 60, interval=0.5, what="group %s stable with one member" % group)

        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group)
        rows = table(r.out, "GROUP")
        assert sorted(int(row["PARTITION"]) for row in rows) == list(range(parts)), r
        for row in rows:
            assert row["CONSUMER-ID"].startswith("tools-active-"), row
            assert row["HOST"] == "/127.0.0.1" and row["CLIENT-ID"] == "tools-active", row
            assert int(row["LOG-END-OFFSET"]) == log_end[int(row["PARTITION"])], row
            assert count_a[int(row["PARTITION"])] <= int(row["CURRENT-OFFSET"]) <= int(row["LOG-END-OFFSET"]), row

        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group, "--members")
        [row] = table(r.out, "GROUP")
        assert row["CONSUMER-ID"].startswith("tools-active-") and row["CLIENT-ID"] == "tools-active", r
        assert row["HOST"] == "/127.0.0.1" and row["#PARTITIONS"] == str(parts), r

        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group, "--members",
                 "--verbose")
        [row] = table(r.out, "GROUP")
        assert row["#PARTITIONS"] == str(parts), r
        assert row["CURRENT-ASSIGNMENT"] == "%s:%s" % (topic, ",".join(str(q) for q in range(parts))), r

        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--describe", "--group", group, "--state")
        [row] = table(r.out, "GROUP")
        assert (row["ASSIGNMENT-STRATEGY"], row["STATE"], row["#MEMBERS"]) == ("range", "Stable", "1"), r
        assert row["COORDINATOR"] == bs, r

        # a group with a member can be neither deleted nor reset (the tool exits 0 regardless)
        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--delete", "--group", group)
        assert "Group '%s' could not be deleted due to:" % group in r.out + r.err, r
        assert "GroupNotEmptyException" in r.out + r.err, r
        r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--group", group, "--reset-offsets",
                 "--to-earliest", "--all-topics", "--execute")
        assert ("Assignments can only be reset if the group '%s' is inactive, but the current state is Stable."
                % group) in r.out + r.err, r
        assert table(r.out, "GROUP") == [], r

        # the member reads the second half; SIGTERM: it commits what it printed and leaves
        def printed_so_far():
            out_f.flush()
            return len(lines(out_path.read_text(errors="replace")))

        total_b = sum(log_end[q] - count_a[q] for q in range(parts))
        wait_until(lambda: printed_so_far() >= total_b, 60, interval=0.2,
                   what="the member printing the %d records after the reset point" % total_b)
        os.killpg(member.pid, signal.SIGTERM)
        member.wait(60)
    finally:
        out_f.close()
    printed = parse_console_output(out_path.read_text(errors="replace"))
    assert len(printed) == total_b, "member printed %d records, expected %d" % (len(printed), total_b)
    for q, off, hdr, key, value in printed:
        i = int(key[1:])
        assert i >= 150 and off >= count_a[q], "printed %d/%d %s from before the reset point" % (q, off, key)
        assert by_p[q][off][1].decode() == key and by_p[q][off][2].decode() == value, (q, off, key)
        assert hdr == "idx:%d" % i, (q, off, hdr)
    assert sorted((q, off) for q, off, *_ in printed) == sorted(
        (q, off) for q in range(parts) for off in range(count_a[q], log_end[q]))
    assert committed(bs, group, topic, parts) == log_end

    # --delete once the group is empty
    wait_until(lambda: str(a.describe_consumer_groups([group], request_timeout=20)[group]
                           .result(timeout=30).state).endswith("EMPTY"), 30, what="group %s empty" % group)
    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--delete", "--group", group)
    assert "Deletion of requested consumer groups ('%s') was successful." % group in r.out + r.err, r
    assert group not in groups_listed(bs)
    r = tool("kafka-consumer-groups", "--bootstrap-server", bs, "--list")
    assert group not in lines(r.out), r
    assert committed(bs, group, topic, parts) == {q: -1001 for q in range(parts)}


def test_consumer_groups_delete_offsets(target):
    """kafka-consumer-groups --delete-offsets: an empty group loses the named
    partitions' offsets; while a member subscribes to a topic, that topic's
    offsets stay (GROUP_SUBSCRIBED_TO_TOPIC) and other topics' go."""
    bs = target.bootstrap
    ta, tb = unique_topic("tools-deloff-a"), unique_topic("tools-deloff-b")
    create_topic(bs, ta, 2)
    create_topic(bs, tb, 1)
    group = unique_topic("tools-deloff-g")
    c = consumer(bs, **{"group.id": group})
    c.commit(offsets=[TopicPartition(ta, 0, 5), TopicPartition(ta, 1, 6), TopicPartition(tb, 0, 7)],
             asynchronous=False)
    c.close()
    delete = ("kafka-consumer-groups", "--bootstrap-server", bs, "--delete-offsets", "--group", group)

    def statuses(r):
        """{(topic, partition): status} of the printed table (a status may hold spaces)."""
        rows = lines(r.out)
        head = next(i for i, l in enumerate(rows) if l.split()[:3] == ["TOPIC", "PARTITION", "STATUS"])
        return {(t, q): status.strip() for t, q, status in (l.split(None, 2) for l in rows[head + 1:])}

    r = tool(*delete, "--topic", "%s:0" % ta)
    assert "Request succeeded for deleting offsets from group %s." % group in r.out, r
    assert statuses(r) == {(ta, "0"): "Successful"}, r
    assert committed(bs, group, ta, 2) == {0: -1001, 1: 6}

    member = consumer(bs, **{"group.id": group})
    assigned = []
    member.subscribe([tb], on_assign=lambda _c, parts: assigned.extend(parts))
    try:
        wait_until(lambda: member.poll(0.2) is None and assigned, 60, what="member of %s assigned" % group)
        r = tool(*delete, "--topic", tb, check=False)
        assert "Error: Encountered some partition-level error, see the follow-up details." in r.out, r
        [status] = statuses(r).values()
        assert status == ("Error: org.apache.kafka.common.errors.GroupSubscribedToTopicException: Deleting "
                          "offsets of a topic is forbidden while the consumer group is actively subscribed to it."), r
        assert committed(bs, group, tb, 1) == {0: 7}
        r = tool(*delete, "--topic", ta)
        assert statuses(r) == {(ta, "0"): "Successful", (ta, "1"): "Successful"}, r
        assert committed(bs, group, ta, 2) == {0: -1001, 1: -1001}
    finally:
        member.close()
    r = tool(*delete, "--topic", tb)
    assert statuses(r) == {(tb, "0"): "Successful"}, r
    assert committed(bs, group, tb, 1) == {0: -1001}


# -- kafka-get-offsets -----------------------------------------------------------

def produce_timed(bs, topic, parts, per_part, ts_of):
    """per_part records into each partition, record j with timestamp ts_of(p, j)."""
    p = producer(bs, acks="all", **{"linger.ms": 50})
    for q in range(parts):
        for j in range(per_part):
            p.produce(topic, key=b"k%d-%d" % (q, j), value=payload(j), partition=q, timestamp=ts_of(q, j))
    assert p.flush(60) == 0
    by_p = read_all(bs, topic, parts)
    check_dense_and_ordered(by_p)
    for q in range(parts):
        assert [(r[1], r[4]) for r in by_p[q]] == [(b"k%d-%d" % (q, j), ts_of(q, j)) for j in range(per_part)]
    return by_p


def get_offsets(bs, *args):
    r = tool("kafka-get-offsets", "--bootstrap-server", bs, *args)
    out = {}
    for l in lines(r.out):
        t, q, off = l.rsplit(":", 2)
        assert (t, int(q)) not in out, r
        out[(t, int(q))] = int(off)
    return out


def test_get_offsets(target):
    bs = target.bootstrap
    parts, per = 3, 40
    topic = unique_topic("tools-offsets")
    create_topic(bs, topic, parts)
    base = int(time.time() * 1000) - 3_600_000
    # record 25 of each partition carries the partition's max timestamp
    ts_of = lambda q, j: base + 1000 + q if j == 25 else base + j
    produce_timed(bs, topic, parts, per, ts_of)
    tps = lambda offs: {(topic, q): o for q, o in offs.items()}

    assert get_offsets(bs, "--topic", topic) == tps({q: per for q in range(parts)})
    assert get_offsets(bs, "--topic", topic, "--time", -1) == tps({q: per for q in range(parts)})
    assert get_offsets(bs, "--topic", topic, "--time", -2) == tps({q: 0 for q in range(parts)})
    # first offset whose timestamp is at or after the time
    assert get_offsets(bs, "--topic", topic, "--time", base + 10) == tps({q: 10 for q in range(parts)})
    assert get_offsets(bs, "--topic", topic, "--time", base + 30) == tps({q: 25 for q in range(parts)})
    # partition 0's max timestamp is base + 1000: no offset there, nothing printed for it
    assert get_offsets(bs, "--topic", topic, "--time", base + 1001) == {(topic, 1): 25, (topic, 2): 25}
    # after every record: no offset, nothing printed
    assert get_offsets(bs, "--topic", topic, "--time", base + 5000) == {}
    assert get_offsets(bs, "--topic-partitions", "%s:1" % topic, "--time", base + 10) == {(topic, 1): 10}
    assert get_offsets(bs, "--topic", topic, "--partitions", "0,2", "--time", -2) == {(topic, 0): 0, (topic, 2): 0}


def test_get_offsets_max_timestamp(target):
    bs = target.bootstrap
    parts, per = 3, 40
    topic = unique_topic("tools-maxts")
    create_topic(bs, topic, parts)
    base = int(time.time() * 1000) - 3_600_000
    # record 25 of each partition has the max timestamp; 26 and 27 share it in partition 2
    ts_of = lambda q, j: base + 1000 + q if j == 25 or (q == 2 and j in (26, 27)) else base + j
    produce_timed(bs, topic, parts, per, ts_of)
    # Kafka (ListOffsets v7+, KIP-734): the first record with the max timestamp
    want = {(topic, q): 25 for q in range(parts)}
    assert get_offsets(bs, "--topic", topic, "--time", -3) == want
    assert get_offsets(bs, "--topic", topic, "--time", "max-timestamp") == want


# -- perf tools ------------------------------------------------------------------

def test_perf_tools(target):
    bs = target.bootstrap
    n, parts, keys = 10000, 3, 1000
    topic = unique_topic("tools-perf")
    group = "tools-perf-" + uuid.uuid4().hex[:8]
    create_topic(bs, topic, parts)
    r = tool("kafka-producer-perf-test", "--bootstrap-server", bs, "--topic", topic, "--num-records", n,
             "--payload-monotonic", "--key-distribution", "range", "--record-key-range", keys,
             "--throughput", -1, "--command-property", "acks=all", timeout=180)
    final = [l for l in lines(r.out) if re.match(r"^\d+ records sent, ", l)]
    assert final and final[-1].startswith("%d records sent, " % n), r

    # --payload-monotonic: record i has value str(i); key range: key str(i % keys)
    by_p = read_all(bs, topic, parts)
    check_dense_and_ordered(by_p)
    seen = set()
    for q, recs in by_p.items():
        last = -1
        for off, key, value, headers, _ts in recs:
            i = int(value)
            assert i not in seen, "duplicate record %d at %d/%d" % (i, q, off)
            seen.add(i)
            assert i > last, "partition %d order broken at offset %d: %d after %d" % (q, off, i, last)
            last = i
            assert key == b"%d" % (i % keys), (q, off, key, value)
            assert q == kafka_partition(key, parts), "key %r in partition %d" % (key, q)
            assert not headers, (q, off, headers)
    assert seen == set(range(n)), "missing %d records, e.g. %r" % (n - len(seen), sorted(set(range(n)) - seen)[:5])

    r = tool("kafka-consumer-perf-test", "--bootstrap-server", bs, "--topic", topic, "--num-records", n,
             "--group", group, "--timeout", 60000, timeout=180)
    assert "Exiting before consuming the expected number of records" not in r.out + r.err, r
    [header, row] = [l for l in lines(r.out) if not l.startswith("WARNING")][-2:]
    stats = dict(zip([c.strip() for c in header.split(",")], [c.strip() for c in row.split(",")]))
    assert int(stats["data.consumed.in.nMsg"]) == n, r
    assert committed(bs, group, topic, parts) == {q: len(by_p[q]) for q in range(parts)}
