"""kcat (Debian's 1.7.1, librdkafka 2.0.2) against brook.

librdkafka < 2.11.1 enables gzip/snappy/lz4 only when the broker lists Produce
v0, record format v2 only with Produce >= 3 and Fetch >= 4, and zstd only with
Produce >= 7 and Fetch >= 10; so these tests also check the ApiVersions table.
"""

import json
import time
from collections import defaultdict

import pytest

from util import assert_codec, create_topic, payload, run, unique_topic

N = 2000
PARTITIONS = 4
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def kcat(broker, *args, **kw):
    return run(["kcat", "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000",
                "-X", "api.version.request=true"] + list(args), **kw)


def kcat_produce(broker, topic, lines, *args):
    data = "".join(l + "\n" for l in lines).encode()
    r = kcat(broker, "-P", "-t", topic, "-K:", "-X", "acks=all", *args, input=data, timeout=120)
    err = r.stderr.decode(errors="replace")
    assert "ERROR" not in err and "Failed" not in err, "kcat produce stderr:\n" + err
    return r


def kcat_consume(broker, topic, *args, timeout=120):
    r = kcat(broker, "-C", "-t", topic, "-e", "-q", "-f", "%k:%s:%p:%o:%T\\n", *args, timeout=timeout)
    err = r.stderr.decode(errors="replace")
    assert "ERROR" not in err, "kcat consume stderr:\n" + err
    out = []
    for line in r.stdout.decode().splitlines():
        if not line:
            continue
        parts = line.split(":")
        key, p, o, ts = parts[0], int(parts[-3]), int(parts[-2]), int(parts[-1])
        value = ":".join(parts[1:-3])
        out.append((p, o, key, value, ts))
    return out


def lines_for(start, n):
    return ["k%d:%s" % (i, payload(i).decode()) for i in range(start, start + n)]


def check_kcat_records(recs, start, n):
    by_p = defaultdict(list)
    for p, o, k, v, _ts in recs:
        by_p[p].append((o, k, v))
    seen = set()
    for p, rs in by_p.items():
        assert [o for o, _, _ in rs] == list(range(len(rs))), "partition %d offsets not dense: %r" % (
            p, [o for o, _, _ in rs][:20])
        last = -1
        for o, k, v in rs:
            i = int(k[1:])
            assert v == payload(i).decode(), "bad value at %d/%d: %r" % (p, o, v[:60])
            assert i > last, "order broken in partition %d at offset %d" % (p, o)
            assert k not in seen, "duplicate key %s" % k
            seen.add(k)
            last = i
    assert seen == set("k%d" % i for i in range(start, start + n)), "got %d of %d keys" % (len(seen), n)
    return by_p


def test_kcat_metadata_lists_broker(broker):
    r = kcat(broker, "-L", "-J", timeout=60)
    md = json.loads(r.stdout)
    brokers = [(b["id"], b["name"]) for b in md["brokers"]]
    assert brokers == [(1, broker.bootstrap)], md

    topic = unique_topic("kcat-md")
    create_topic(broker.bootstrap, topic, 5)
    md = json.loads(kcat(broker, "-L", "-J", "-t", topic, timeout=60).stdout)
    [t] = [t for t in md["topics"] if t["topic"] == topic]
    assert "error" not in t or not t["error"], t
    assert sorted(p["partition"] for p in t["partitions"]) == list(range(5))
    for p in t["partitions"]:
        assert p["leader"] == 1 and [r["id"] for r in p["replicas"]] == [1], p


@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_consume(broker, codec):
    # zstd works with Debian's kcat: librdkafka 2.0.2 is built with zstd and uses it
    # when the broker advertises Produce >= 7 and Fetch >= 10 (brook does).
    # lz4 needs FindCoordinator v0 advertised (librdkafka's LZ4 feature check), and
    # gzip/snappy/lz4 need Produce v0 listed; otherwise librdkafka silently sends
    # uncompressed, which assert_codec() catches by reading the stored batches.
    topic = unique_topic("kcat-" + codec)
    create_topic(broker.bootstrap, topic, PARTITIONS)
    kcat_produce(broker, topic, lines_for(0, N), "-z", codec)
    recs = kcat_consume(broker, topic, "-o", "beginning")
    assert len(recs) == N, "consumed %d of %d" % (len(recs), N)
    by_p = check_kcat_records(recs, 0, N)
    assert len(by_p) > 1, "keys all landed in one partition: %r" % list(by_p)
    assert_codec(broker.bootstrap, topic, PARTITIONS, codec)


def test_kcat_consume_from_offset(broker):
    topic = unique_topic("kcat-off")
    create_topic(broker.bootstrap, topic, 1)
    kcat_produce(broker, topic, lines_for(0, 50), "-z", "lz4")
    recs = kcat_consume(broker, topic, "-p", "0", "-o", "5")
    assert [(o, k) for _, o, k, _, _ in recs] == [(o, "k%d" % o) for o in range(5, 50)]
    for _, o, k, v, _ in recs:
        assert v == payload(o).decode()
    # negative (relative to end) offset
    recs = kcat_consume(broker, topic, "-p", "0", "-o", "-10")
    assert [o for _, o, _, _, _ in recs] == list(range(40, 50))


def test_kcat_consume_from_timestamp(broker):
    topic = unique_topic("kcat-ts")
    create_topic(broker.bootstrap, topic, 3)
    kcat_produce(broker, topic, lines_for(0, 300), "-z", "gzip")
    time.sleep(0.05)
    mid = int(time.time() * 1000)
    time.sleep(0.05)
    kcat_produce(broker, topic, lines_for(300, 300), "-z", "snappy")

    everything = kcat_consume(broker, topic, "-o", "beginning")
    check_kcat_records(everything, 0, 600)
    for _, _, k, _, ts in everything:
        i = int(k[1:])
        assert (ts < mid) == (i < 300), "record %s has timestamp %d vs mid %d" % (k, ts, mid)

    recs = kcat_consume(broker, topic, "-o", "s@%d" % mid)
    got = sorted(int(k[1:]) for _, _, k, _, _ in recs)
    assert got == list(range(300, 600)), "from timestamp: got %d records, first %r" % (len(got), got[:5])
    # the second batch starts where the first one ended, per partition
    first_counts = defaultdict(int)
    for p, _, k, _, _ in everything:
        if int(k[1:]) < 300:
            first_counts[p] += 1
    for p, o, k, _, _ in recs:
        assert o >= first_counts[p]
