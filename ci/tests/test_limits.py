"""Connection limits and timeouts: a client that breaks them loses its own
connection and nobody else notices."""

import socket
import struct

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
