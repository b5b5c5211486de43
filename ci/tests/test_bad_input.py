"""Malformed and hostile input over raw sockets. After each case (and at the
end) the broker is still alive and a real client still round-trips records.

The cases share one broker (module scope), so damage from one case would
show up in the following ones too."""

import os
import random
import socket
import struct
import time

import pytest

import kproto as kp
from util import consume_all, create_topic, produce_keyed, producer, check_keyed, unique_topic

CLOSE_TIMEOUT = 5.0


@pytest.fixture
def broker(module_broker):
    return module_broker


def roundtrip_ok(broker):
    assert broker.alive(), "broker died: exit %s" % broker.proc.poll()
    topic = unique_topic("bad-ok")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap, acks="all", **{"compression.type": "lz4"})
    dr = produce_keyed(p, topic, 200)
    assert not dr.errors, dr.errors
    check_keyed(consume_all(broker.bootstrap, topic, 2, timeout=60), 200, acked=dr.acked)
    assert broker.alive()


def raw_socket(broker):
    s = socket.create_connection((broker.host, broker.port), timeout=CLOSE_TIMEOUT)
    return s


def closed_within(sock, timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not chunk:
            return True


def test_garbage_bytes(broker):
    # a negative length prefix followed by junk: the broker must drop the connection
    s = raw_socket(broker)
    try:
        s.sendall(b"\xde\xad\xbe\xef" * 16)
        assert closed_within(s, CLOSE_TIMEOUT), "connection not closed after garbage with a negative length"
    finally:
        s.close()
    # a plausible length but a garbage header: api key 0x0b54 is no API, so the
    # connection is closed (as Kafka does), never answered or left hanging
    s = raw_socket(broker)
    try:
        junk = bytes((i * 73 + 11) & 0xFF for i in range(60))
        assert struct.unpack(">h", junk[:2])[0] == 0x0B54
        s.sendall(struct.pack(">i", len(junk)) + junk)
        assert closed_within(s, CLOSE_TIMEOUT), "connection not closed after a frame with api key 0x0b54"
    finally:
        s.close()
    # binary noise in bulk (seeded): a frame of 1000 bytes whose api key is -1,
    # then 63 KiB more noise
    rnd = random.Random(7)
    noise = struct.pack(">ih", 1000, -1) + bytes(rnd.getrandbits(8) for _ in range(64 * 1024))
    s = raw_socket(broker)
    try:
        try:
            s.sendall(noise)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_within(s, CLOSE_TIMEOUT), "connection not closed after binary noise"
    finally:
        s.close()
    roundtrip_ok(broker)


def test_truncated_frame_then_close(broker):
    for _ in range(20):
        s = raw_socket(broker)
        s.sendall(struct.pack(">i", 10) + b"\x00\x12\x00")
        s.close()
    # and a half-open one that stays connected while others work
    s = raw_socket(broker)
    try:
        s.sendall(struct.pack(">i", 10) + b"\x00\x12\x00")
        roundtrip_ok(broker)
    finally:
        s.close()
    roundtrip_ok(broker)


@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x80000000, 0xFFFFFFF0])
def test_oversized_frame(broker, length):
    rss_before = broker.rss_kib()
    s = raw_socket(broker)
    try:
        # only the 4-byte length: the broker must reject it from the prefix alone,
        # not wait for (or allocate) 2 GiB
        s.sendall(struct.pack(">I", length))
        assert closed_within(s, CLOSE_TIMEOUT), "connection not closed after a length prefix of %d" % length
    finally:
        s.close()
    s = raw_socket(broker)
    try:
        s.sendall(struct.pack(">I", length) + b"\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01" + b"\x00" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        assert closed_within(s, CLOSE_TIMEOUT), "connection not closed while streaming an oversized frame"
    finally:
        s.close()
    rss_after = broker.rss_kib()
    assert rss_after - rss_before < 256 * 1024, "RSS grew %d KiB" % (rss_after - rss_before)
    roundtrip_ok(broker)


def test_api_versions_unsupported_version(broker):
    with kp.Conn(broker.bootstrap) as c:
        # ApiVersions v99 with a flexible (v2) header and a v3-style body
        body = kp.uvarint(len(b"brook-test") + 1) + b"brook-test" + kp.uvarint(2) + b"1" + kp.uvarint(0)
        corr = c.send(kp.API_VERSIONS, 99, body, flexible_header=True)
        rc, data = c.recv()
        assert rc == corr
        r = kp.Reader(data)  # v0 response body, header v0
        err = r.i16()
        assert err == kp.UNSUPPORTED_VERSION, "error %d" % err
        apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
        assert r.remaining() == 0, "trailing bytes after a v0 ApiVersions response: %d" % r.remaining()
        keys = {k: (lo, hi) for k, lo, hi in apis}
        for k in (kp.PRODUCE, kp.FETCH, kp.LIST_OFFSETS, kp.METADATA, kp.API_VERSIONS, kp.INIT_PRODUCER_ID):
            assert k in keys, "api %d missing from %r" % (k, keys)
        assert keys[kp.API_VERSIONS][0] == 0 and keys[kp.API_VERSIONS][1] >= 3
        # the connection is still usable afterwards
        err, vers = c.api_versions()
        assert err == 0 and vers == keys
    roundtrip_ok(broker)


def test_api_versions_table(broker):
    """Version floors the clients in design.md rely on (librdkafka 2.0.2 needs
    Produce from v0 listed, and Produce>=7/Fetch>=10 for zstd)."""
    with kp.Conn(broker.bootstrap) as c:
        err, v = c.api_versions()
        assert err == 0
        assert v[kp.PRODUCE][0] == 0 and v[kp.PRODUCE][1] >= 7, v[kp.PRODUCE]
        assert v[kp.FETCH][1] >= 10, v[kp.FETCH]
        assert v[kp.INIT_PRODUCER_ID][0] == 0, v[kp.INIT_PRODUCER_ID]
    # Produce v0-2 is listed but refused by closing the connection, as Apache
    # Kafka 4.4 does (checked against it: KAFKA-18659 lists v0 only for
    # librdkafka's feature detection); never an answer, never a crash
    topic = unique_topic("bad-v0")
    create_topic(broker.bootstrap, topic, 1)
    body = kp.i16(1) + kp.i32(1000) + kp.array([kp.string(topic) + kp.array([kp.i32(0) + kp.bytes_(b"")])])
    for version in (0, 1, 2):
        with kp.Conn(broker.bootstrap) as c:
            c.send(kp.PRODUCE, version, body)
            assert c.wait_closed(CLOSE_TIMEOUT), "Produce v%d answered instead of refused" % version
    roundtrip_ok(broker)


def test_unknown_api_key(broker):
    with kp.Conn(broker.bootstrap) as c:
        c.send(9999, 0, b"\x00\x00\x00\x00")
        # Kafka closes the connection without an answer; so does Brook
        assert c.wait_closed(CLOSE_TIMEOUT), "connection not closed after api key 9999"
    roundtrip_ok(broker)


SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "net", "fuzz", "seeds", "request_frame")
FUZZ_FINDINGS = sorted(f for f in os.listdir(SEEDS) if f.startswith(("crash-", "regress-")))


@pytest.mark.parametrize("name", FUZZ_FINDINGS)
def test_fuzz_findings_over_the_wire(broker, name):
    """Every frame fuzzing kept as a finding, sent as a client would: the crash-oom
    ones claim 2^31 array elements in a few bytes, which once aborted the broker."""
    with open(os.path.join(SEEDS, name), "rb") as f:
        body = f.read()
    s = raw_socket(broker)
    try:
        s.sendall(struct.pack(">i", len(body)) + body)
        # a malformed request closes the connection; a well-formed one is
        # answered; silence (a timeout here) fails the test
        s.settimeout(CLOSE_TIMEOUT)
        try:
            s.recv(65536)
        except ConnectionResetError:
            pass
    finally:
        s.close()
    roundtrip_ok(broker)


def test_produce_bad_crc(broker):
    topic = unique_topic("bad-crc")
    create_topic(broker.bootstrap, topic, 1)
    with kp.Conn(broker.bootstrap) as c:
        bad = kp.encode_batch([(b"k", b"v")], corrupt_crc=True)
        err, _ = c.produce(topic, 0, bad)
        assert err == kp.CORRUPT_MESSAGE, "bad CRC answered with error %d" % err
        # a truncated batch (length field larger than the data) is also rejected,
        # as INVALID_RECORD (not retriable), as Kafka does
        good = kp.encode_batch([(b"k", b"v")])
        err, _ = c.produce(topic, 0, good[:-3])
        assert err == kp.INVALID_RECORD, "truncated batch answered with error %d" % err
        # nothing was stored; a good batch lands at offset 0
        assert c.produce(topic, 0, good) == (kp.NONE, 0)
        f = c.fetch(topic, 0, 0, max_wait_ms=100)
        assert f["high_watermark"] == 1
    roundtrip_ok(broker)


def test_produce_unknown_partition_and_topic(broker):
    topic = unique_topic("bad-part")
    create_topic(broker.bootstrap, topic, 2)
    with kp.Conn(broker.bootstrap) as c:
        batch = kp.encode_batch([(b"k", b"v")])
        err, _ = c.produce(topic, 5, batch)
        assert err == kp.UNKNOWN_TOPIC_OR_PARTITION, "error %d" % err
        err, _ = c.produce(topic, -1, batch)
        assert err == kp.UNKNOWN_TOPIC_OR_PARTITION, "error %d" % err
        err, _ = c.produce(unique_topic("bad-nonexistent"), 0, batch)
        assert err == kp.UNKNOWN_TOPIC_OR_PARTITION, "error %d" % err
        f = c.fetch(topic, 5, 0, max_wait_ms=100)
        assert f["error"] == kp.UNKNOWN_TOPIC_OR_PARTITION, f
    roundtrip_ok(broker)


def test_many_connections_open_and_close(broker):
    socks = []
    try:
        for _ in range(200):
            socks.append(raw_socket(broker))
        with kp.Conn(broker.bootstrap) as c:
            assert c.api_versions()[0] == 0
    finally:
        for s in socks:
            s.close()
    roundtrip_ok(broker)


def test_broker_still_healthy_at_end(broker):
    roundtrip_ok(broker)
    with kp.Conn(broker.bootstrap) as c:
        assert c.api_versions()[0] == 0
