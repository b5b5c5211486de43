"""Connection limits and timeouts: a client that breaks them loses its own
connection and nobody else notices."""

import socket
import struct
import time

import kproto as kp
from util import create_topic, unique_topic, producer, produce_keyed, consume_all


def limits_broker(make_broker, tmp_path, **props):
    cfg = tmp_path / "limits.toml"
    cfg.write_text("".join('"%s" = %d\n' % (k, v) for k, v in props.items()))
    return make_broker(lambda b: ["--config", str(cfg)])


def still_serves(bootstrap):
    topic = unique_topic("limits-ok")
    create_topic(bootstrap, topic, 1)
    dr = produce_keyed(producer(bootstrap), topic, 50)
    assert not dr.errors
    assert sum(len(v) for v in consume_all(bootstrap, topic, 1).values()) == 50


def test_half_sent_request_is_dropped_after_the_timeout(make_broker, tmp_path):
    b = limits_broker(make_broker, tmp_path, **{"brook.partial.request.timeout.ms": 1000})
    host, port = b.bootstrap.split(":")
    s = socket.create_connection((host, int(port)))
    # Claims a 1000-byte request, sends 3 bytes of it, then goes quiet.
    s.sendall(struct.pack(">i", 1000) + b"abc")
    s.settimeout(30)
    closed = False
    try:
        closed = s.recv(1) == b""
    except ConnectionResetError:
        closed = True
    assert closed, "the broker kept a half-sent request open"
    still_serves(b.bootstrap)


def test_connections_beyond_the_per_address_limit_are_refused(make_broker, tmp_path):
    b = limits_broker(make_broker, tmp_path, **{"max.connections.per.ip": 3})
    held = [kp.Conn(b.bootstrap) for _ in range(3)]
    try:
        for c in held:
            assert c.api_versions()[0] == 0
        extra = kp.Conn(b.bootstrap)
        assert extra.wait_closed(20), "a 4th connection from the same address was served"
    finally:
        for c in held:
            c.close()
    # Once the three are gone, new connections are admitted again.
    still_serves(b.bootstrap)


def test_pipelined_fetches_that_are_never_read_hold_one_response(make_broker):
    """A client that pipelines big Fetches and never reads the answers: the broker
    takes one Fetch per connection at a time (as Kafka does), so it holds one
    response, not one per request in flight."""
    b = make_broker()
    topic = unique_topic("limits-fetch")
    create_topic(b.bootstrap, topic, 1)
    p = producer(b.bootstrap, **{"linger.ms": 20})
    value = b"v" * 1024
    for i in range(24_000):  # ~25 MB
        while True:
            try:
                p.produce(topic, value=value, partition=0)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0
    rss_before = b.rss_kib()
    c = kp.Conn(b.bootstrap)
    try:
        v = c.pick_version(kp.FETCH, 4, 11)
        body = c.fetch_body(v, topic, 0, 0, max_wait_ms=0, max_bytes=50 << 20)
        for _ in range(30):
            c.send(kp.FETCH, v, body)
        # Let the broker take whatever it will; the answers are never read.
        time.sleep(3)
        grown_mib = (b.rss_kib() - rss_before) / 1024
        # Without the per-connection turn this held ~30 x 25 MB.
        assert grown_mib < 256, "broker RSS grew %.0f MiB" % grown_mib
        still_serves(b.bootstrap)
    finally:
        c.close()
    still_serves(b.bootstrap)
