"""aiokafka 0.14 against brook: producer with every codec (and once with
enable_idempotence=True), manual-assignment consumer, offsets APIs, admin."""

import asyncio
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from util import assert_codec, check_keyed, create_topic, payload, unique_topic, wait_until

N = 10_000
PARTITIONS = 4


def run(coro, timeout=240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def produce_keyed(broker, topic, n, start=0, timestamp=None, partition=None, **kw):
    prod = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000, **kw)
    await prod.start()
    try:
        futs = []
        for i in range(start, start + n):
            key = ("k%d" % i).encode()
            fut = await prod.send(topic, key=key, value=payload(i), partition=partition,
                                  timestamp_ms=timestamp(i) if timestamp else None)
            futs.append((key, fut))
        await prod.flush()
        acked = {}
        for key, fut in futs:
            md = await fut
            if md is not None:  # aiokafka resolves acks=0 sends with None
                acked[key] = (md.partition, md.offset)
        return acked
    finally:
        await prod.stop()


async def consume_all(broker, topic, partitions, timeout=120):
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                         request_timeout_ms=15000)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out = defaultdict(list)
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp: await c.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            assert time.monotonic() < deadline, "consume timed out at %r of %r" % (positions, ends)
            batches = await c.getmany(*tps, timeout_ms=500, max_records=5000)
            for tp, msgs in batches.items():
                for m in msgs:
                    out[tp.partition].append((m.offset, m.key, m.value, m.timestamp))
        return out, {tp.partition: e for tp, e in ends.items()}
    finally:
        await c.stop()


@pytest.mark.parametrize("codec,idempotent", [
    (None, False), ("gzip", False), ("snappy", False), ("lz4", False), ("zstd", False), ("gzip", True),
])
def test_producer_roundtrip(broker, codec, idempotent):
    topic = unique_topic("aio-%s%s" % (codec, "-idem" if idempotent else ""))
    create_topic(broker.bootstrap, topic, PARTITIONS)
    kw = dict(compression_type=codec, acks="all")
    if idempotent:
        kw["enable_idempotence"] = True
    acked = run(produce_keyed(broker, topic, N, **kw))
    got, ends = run(consume_all(broker, topic, PARTITIONS))
    check_keyed(got, N, acked=acked)
    assert ends == {p: len(got[p]) for p in range(PARTITIONS)}
    assert all(got[p] for p in range(PARTITIONS)), "keys did not spread over partitions"
    assert_codec(broker.bootstrap, topic, PARTITIONS, codec)


def test_acks_1_and_0(broker):
    topic = unique_topic("aio-acks")
    create_topic(broker.bootstrap, topic, 2)
    acked = run(produce_keyed(broker, topic, 2000, acks=1, compression_type="lz4"))
    assert len(acked) == 2000
    assert run(produce_keyed(broker, topic, 2000, start=2000, acks=0, compression_type="zstd")) == {}
    got, _ = run(consume_all(broker, topic, 2))
    check_keyed(got, 4000)  # acks=0: all should arrive on loopback
    seen = {r[1]: (p, r[0]) for p, recs in got.items() for r in recs}
    for k, po in acked.items():
        assert seen[k] == po


def test_offsets_apis(broker):
    topic = unique_topic("aio-offsets")
    create_topic(broker.bootstrap, topic, 2)
    base = int(time.time() * 1000) - 60_000

    async def go():
        await produce_keyed(broker, topic, 100, partition=0, timestamp=lambda i: base + i)
        await produce_keyed(broker, topic, 100, start=100, partition=0, timestamp=lambda i: base + 5000 + i)
        await produce_keyed(broker, topic, 10, start=200, partition=1, timestamp=lambda i: base + 20_000 + i)
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
        await c.start()
        try:
            tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
            assert await c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
            assert await c.end_offsets([tp0, tp1]) == {tp0: 200, tp1: 10}
            r = await c.offsets_for_times({tp0: base + 1000, tp1: base + 1000})
            assert r[tp0].offset == 100 and r[tp0].timestamp == base + 5100, r
            assert r[tp1].offset == 0 and r[tp1].timestamp == base + 20_200, r
            r = await c.offsets_for_times({tp0: base - 5, tp1: base + 10**7})
            assert r[tp0].offset == 0 and r[tp0].timestamp == base, r
            assert r[tp1] is None, r
            # read from the offset offsets_for_times gave
            c.assign([tp0])
            c.seek(tp0, 100)
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 100 and time.monotonic() < deadline:
                for msgs in (await c.getmany(tp0, timeout_ms=500)).values():
                    got.extend((m.offset, m.key, m.timestamp) for m in msgs)
            assert got == [(i, b"k%d" % i, base + 5000 + i) for i in range(100, 200)]
        finally:
            await c.stop()

    run(go())


def test_long_poll(broker):
    topic = unique_topic("aio-longpoll")
    create_topic(broker.bootstrap, topic, 1)

    async def go():
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=500)
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            assert await c.getmany(tp, timeout_ms=1000) == {}

            async def later():
                await asyncio.sleep(1.0)
                await produce_keyed(broker, topic, 1, partition=0)
                return time.monotonic()

            task = asyncio.ensure_future(later())
            m = await asyncio.wait_for(c.getone(tp), 15)
            delay = time.monotonic() - await task
            assert (m.offset, m.key, m.value) == (0, b"k0", payload(0))
            assert delay < 5.0, "record reached the consumer %.2fs after produce" % delay
        finally:
            await c.stop()

    run(go())


def test_admin(broker):
    topic = unique_topic("aio-admin")

    async def go():
        a = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
        await a.start()
        try:
            await a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
            assert topic in await a.list_topics()
            [d] = await a.describe_topics([topic])
            assert d["topic"] == topic and d["error_code"] == 0, d
            assert sorted(p["partition"] for p in d["partitions"]) == [0, 1, 2], d
            await a.delete_topics([topic])
            deadline = time.monotonic() + 15
            while topic in await a.list_topics():
                assert time.monotonic() < deadline, "topic still listed after delete"
                await asyncio.sleep(0.1)
        finally:
            await a.close()

    run(go())
