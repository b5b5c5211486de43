"""Features Brook lacks fail fast, with Kafka's own error, and the coordinator
key types answer as Kafka's do: a share group (key type 2) and unknown key
types get INVALID_REQUEST, which clients treat as final; transactional ids (1)
have a coordinator (test_transactions.py covers the clients). aiokafka's
transactional producer is checked here, as its only transactions test.
"""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import kproto
from util import create_topic, unique_topic

CLIENT_TIMEOUT_S = 60


def test_aiokafka_transactions(module_broker):
    """aiokafka: a committed transaction is visible to read_committed, an
    aborted one only to read_uncommitted, record by record."""
    topic = unique_topic("aio-tx")
    create_topic(module_broker.bootstrap, topic, 1)

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=module_broker.bootstrap, transactional_id=unique_topic("aio-tid"))
        await p.start()
        try:
            async with p.transaction():
                for i in range(20):
                    await p.send(topic, b"c%d" % i, partition=0)
            await p.begin_transaction()
            for i in range(10):
                await p.send_and_wait(topic, b"a%d" % i, partition=0)
            await p.abort_transaction()
            async with p.transaction():
                for i in range(20, 30):
                    await p.send(topic, b"c%d" % i, partition=0)
        finally:
            await p.stop()
        seen = {}
        for iso in ("read_committed", "read_uncommitted"):
            c = AIOKafkaConsumer(bootstrap_servers=module_broker.bootstrap, isolation_level=iso,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
            await c.start()
            try:
                tp = TopicPartition(topic, 0)
                c.assign([tp])
                await c.seek_to_beginning(tp)
                end = (await c.end_offsets([tp]))[tp]
                got = []
                while await c.position(tp) < end:
                    batch = await c.getmany(tp, timeout_ms=1000)
                    got += [m.value for m in batch.get(tp, [])]
                seen[iso] = (got, end)
            finally:
                await c.stop()
        return seen

    seen = asyncio.run(asyncio.wait_for(go(), CLIENT_TIMEOUT_S))
    committed = [b"c%d" % i for i in range(30)]
    aborted = [b"a%d" % i for i in range(10)]
    assert seen["read_committed"][0] == committed, seen["read_committed"]
    assert seen["read_uncommitted"][0] == committed[:20] + aborted + committed[20:], seen["read_uncommitted"]
    # 40 records and three markers (commit, abort, commit).
    assert seen["read_uncommitted"][1] == 43 and seen["read_committed"][1] == 43, seen


FIND_COORDINATOR = 10
INVALID_REQUEST = 42


def find_coordinator_v1(conn, key, key_type):
    """FindCoordinator v1 (non-flexible): (error, message, node, host, port)."""
    r = conn.request(FIND_COORDINATOR, 1, kproto.string(key) + kproto.i8(key_type))
    r.i32()  # throttle
    return r.i16(), r.string(), r.i32(), r.string(), r.i32()


def test_raw_coordinator_answers(module_broker):
    """FindCoordinator v1 per key type, and InitProducerId with a transactional
    id: a fresh producer id at epoch 0, the same id at epoch 1 the next time."""
    with kproto.Conn(module_broker.bootstrap) as c:
        err, _msg, _node, _host, port = find_coordinator_v1(c, "some-group", 0)
        assert (err, port) == (kproto.NONE, module_broker.port)
        err, _msg, _node, _host, port = find_coordinator_v1(c, "some-txn", 1)
        assert (err, port) == (kproto.NONE, module_broker.port)
        err, _msg, node, _host, _port = find_coordinator_v1(c, "some-share", 2)
        assert (err, node) == (INVALID_REQUEST, -1)
        tid = unique_topic("raw-tid")
        err, pid, epoch = c.init_producer_id(transactional_id=tid)
        assert (err, epoch) == (kproto.NONE, 0) and pid >= 0, (err, pid, epoch)
        assert c.init_producer_id(transactional_id=tid) == (kproto.NONE, pid, 1)
