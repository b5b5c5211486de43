"""Features Brook lacks fail fast, with Kafka's own error, in every client.

Transactions: Brook has no transaction coordinator yet. It answers as a Kafka
cluster whose ACLs allow no transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED
on FindCoordinator and InitProducerId), the one answer every client treats as
fatal. Before, FindCoordinator said COORDINATOR_NOT_AVAILABLE and each client
retried it until its own timeout (60 s and more).

The bound below (FAST_S) is not a performance figure: it only tells "failed at
once" from "retried until a client timeout", which is many times longer.
"""

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TransactionalIdAuthorizationFailed as AioTxnAuthFailed
from confluent_kafka import KafkaError, KafkaException, Producer
from kafka import KafkaProducer
from kafka.errors import TransactionalIdAuthorizationFailedError

import kproto
from conftest import DEFAULT_PARTITIONS
from util import check_keyed, consume_all, produce_keyed, producer, unique_topic

# Clients' own timeouts are set far above this, so passing means "did not retry".
FAST_S = 20.0
CLIENT_TIMEOUT_MS = 120_000


def elapsed_since(t0):
    return time.monotonic() - t0


def test_confluent_kafka_transactional_producer_fails_fast(module_broker):
    p = Producer({"bootstrap.servers": module_broker.bootstrap, "transactional.id": unique_topic("tx"),
                  "transaction.timeout.ms": CLIENT_TIMEOUT_MS})
    t0 = time.monotonic()
    with pytest.raises(KafkaException) as exc:
        p.init_transactions(CLIENT_TIMEOUT_MS / 1000)
    took = elapsed_since(t0)
    err = exc.value.args[0]
    assert err.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, err
    assert err.fatal(), "the error must be fatal, not retriable: %r" % err
    assert "does not support transactions" in err.str(), err.str()
    assert took < FAST_S, "init_transactions took %.1fs: it was retried, not refused" % took


def test_kafka_python_transactional_producer_fails_fast(module_broker):
    t0 = time.monotonic()
    with pytest.raises(TransactionalIdAuthorizationFailedError):
        p = KafkaProducer(bootstrap_servers=module_broker.bootstrap, transactional_id=unique_topic("tx"),
                          max_block_ms=CLIENT_TIMEOUT_MS, request_timeout_ms=30000)
        try:
            p.init_transactions()
        finally:
            p.close(timeout=5)
    took = elapsed_since(t0)
    assert took < FAST_S, "init_transactions took %.1fs: it was retried, not refused" % took


def test_aiokafka_transactional_producer_fails_fast(module_broker):
    async def go():
        p = AIOKafkaProducer(bootstrap_servers=module_broker.bootstrap, transactional_id=unique_topic("tx"),
                             request_timeout_ms=30000)
        try:
            await p.start()
        finally:
            await p.stop()

    t0 = time.monotonic()
    with pytest.raises(AioTxnAuthFailed):
        asyncio.run(asyncio.wait_for(go(), CLIENT_TIMEOUT_MS / 1000))
    took = elapsed_since(t0)
    assert took < FAST_S, "start() took %.1fs: it was retried, not refused" % took


FIND_COORDINATOR = 10
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
INVALID_REQUEST = 42


def find_coordinator_v1(conn, key, key_type):
    """FindCoordinator v1 (non-flexible): (error, message, node, host, port)."""
    r = conn.request(FIND_COORDINATOR, 1, kproto.string(key) + kproto.i8(key_type))
    r.i32()  # throttle
    return r.i16(), r.string(), r.i32(), r.string(), r.i32()


def test_raw_coordinator_answers(module_broker):
    """FindCoordinator v1 per key type, and InitProducerId with a transactional id."""
    with kproto.Conn(module_broker.bootstrap) as c:
        err, _msg, _node, _host, port = find_coordinator_v1(c, "some-group", 0)
        assert (err, port) == (kproto.NONE, module_broker.port)
        err, msg, node, _host, _port = find_coordinator_v1(c, "some-txn", 1)
        assert (err, node) == (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1)
        assert "does not support transactions" in (msg or ""), msg
        err, _msg, node, _host, _port = find_coordinator_v1(c, "some-share", 2)
        assert (err, node) == (INVALID_REQUEST, -1)
        assert c.init_producer_id(transactional_id="some-txn") == (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1, -1)


def test_idempotent_producers_unaffected(module_broker):
    """The refusal is for transactional ids only: an idempotent producer on the
    same broker still works, record by record."""
    topic = unique_topic("idem")
    p = producer(module_broker.bootstrap, **{"enable.idempotence": True})
    dr = produce_keyed(p, topic, 500)
    assert not dr.errors, dr.errors[:5]
    records = consume_all(module_broker.bootstrap, topic, DEFAULT_PARTITIONS)
    check_keyed(records, 500, acked=dr.acked)
