"""Client byte-rate quotas: set and read at run time (AlterClientQuotas /
DescribeClientQuotas, hand-encoded since the Python admin clients lack them),
enforced by throttling with throttle_time_ms, kept across a restart.

Nothing here times the broker: a throttled client is recognised by the
throttle_time_ms the broker reports to it (confluent-kafka's throttle_cb)."""

import struct

import kproto as kp
from util import consume_all, create_topic, producer, unique_topic

DESCRIBE_CLIENT_QUOTAS = 48
ALTER_CLIENT_QUOTAS = 49


def f64(v):
    return struct.pack(">d", v)


def alter(conn, client_id, key, value, remove=False, validate_only=False):
    """AlterClientQuotas v0 for one client-id entity (None = default)."""
    entity = kp.i32(1) + kp.string("client-id") + kp.string(client_id)
    ops = kp.i32(1) + kp.string(key) + f64(value) + kp.i8(1 if remove else 0)
    body = kp.i32(1) + entity + ops + kp.i8(1 if validate_only else 0)
    r = conn.request(ALTER_CLIENT_QUOTAS, 0, body)
    r.i32()  # throttle
    out = []
    for _ in range(r.i32()):
        code = r.i16()
        msg = r.string()
        for _ in range(r.i32()):
            r.string()
            r.string()
        out.append((code, msg or None))
    return out


def describe(conn):
    """DescribeClientQuotas v0, all client-id entities: {client_id: {key: value}}."""
    body = kp.i32(1) + kp.string("client-id") + kp.i8(2) + kp.string(None) + kp.i8(0)
    r = conn.request(DESCRIBE_CLIENT_QUOTAS, 0, body)
    r.i32()
    assert r.i16() == 0
    r.string()
    got = {}
    for _ in range(max(r.i32(), 0)):
        name = None
        for _ in range(r.i32()):
            assert r.string() == "client-id"
            name = r.string()
        vals = {}
        for _ in range(r.i32()):
            k = r.string()
            (v,) = struct.unpack(">d", r.raw(8))
            vals[k] = v
        got[name] = vals
    return got


def produce_and_collect_throttles(bootstrap, topic, client_id, n, **conf):
    """Produces n records of 512 bytes (with `conf` added to the producer's
    settings); returns the throttle times the broker reported."""
    throttles, errors = [], []
    p = producer(bootstrap, **dict(conf, **{"client.id": client_id, "linger.ms": 5,
                                            "throttle_cb": lambda ev: throttles.append(ev.throttle_time)}))
    for i in range(n):
        p.produce(topic, key=b"k%d" % i, value=b"x" * 512, on_delivery=lambda e, m: e and errors.append(e))
        p.poll(0)
    assert p.flush(120) == 0
    p.poll(0.5)
    assert not errors, errors[:3]
    return throttles


def test_quotas_are_set_described_enforced_and_kept(broker):
    with kp.Conn(broker.bootstrap) as c:
        assert alter(c, "slow", "producer_byte_rate", 200_000.0) == [(0, None)]
        assert alter(c, None, "consumer_byte_rate", 5e9) == [(0, None)]
        code, msg = alter(c, "slow", "request_percentage", 50.0)[0]
        assert code == 42 and "not supported" in msg, (code, msg)
        code, _ = alter(c, "slow", "producer_byte_rate", -1.0)[0]
        assert code == 42
        assert describe(c) == {"slow": {"producer_byte_rate": 200_000.0}, None: {"consumer_byte_rate": 5e9}}

    topic = unique_topic("quota")
    create_topic(broker.bootstrap, topic, 2)
    # ~1 MB from the throttled client: five times its quota per second.
    slow_throttles = produce_and_collect_throttles(broker.bootstrap, topic, "slow", 2000)
    assert any(t > 0 for t in slow_throttles), "the client over its quota was never told to back off"
    fast_throttles = produce_and_collect_throttles(broker.bootstrap, topic, "unlimited", 2000)
    assert not any(t > 0 for t in fast_throttles), "a client without a quota was throttled: %r" % fast_throttles
    # Throttling delays; it never loses or reorders anything.
    got = consume_all(broker.bootstrap, topic, 2)
    assert sum(len(v) for v in got.values()) == 4000

    broker.restart()
    with kp.Conn(broker.bootstrap) as c:
        assert describe(c)["slow"] == {"producer_byte_rate": 200_000.0}, "quotas survive a restart"
        assert alter(c, "slow", "producer_byte_rate", 0.0, remove=True) == [(0, None)]
        assert "slow" not in describe(c)
