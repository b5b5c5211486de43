"""Request framing and pipelining over raw sockets: requests split into tiny
pieces, many requests in one write, responses in request order across shards."""

import time

import kproto as kp
from util import create_topic, unique_topic


def test_request_split_byte_by_byte(broker):
    with kp.Conn(broker.bootstrap) as c:
        hdr = kp.i16(kp.API_VERSIONS) + kp.i16(0) + kp.i32(77) + kp.string("slow-client")
        frame = kp.i32(len(hdr)) + hdr
        for b in frame:
            c.send_raw(bytes([b]))
            time.sleep(0.002)
        corr, data = c.recv()
        assert corr == 77
        r = kp.Reader(data)
        assert r.i16() == 0


def test_pipelined_requests_answered_in_order(broker):
    topic = unique_topic("pipe")
    create_topic(broker.bootstrap, topic, 8)  # partitions spread over both shards
    with kp.Conn(broker.bootstrap) as c:
        pv = c.pick_version(kp.PRODUCE, 3, 8)
        frames = []
        expect = []
        corr = 1000
        for i in range(64):
            corr += 1
            if i % 4 == 3:
                api, ver, body = kp.API_VERSIONS, 0, b""
            else:
                part = i % 8
                batch = kp.encode_batch([(b"k%d" % i, b"v%d" % i)])
                api, ver = kp.PRODUCE, pv
                body = (kp.string(None) + kp.i16(-1) + kp.i32(10000)
                        + kp.array([kp.string(topic) + kp.array([kp.i32(part) + kp.bytes_(batch)])]))
            hdr = kp.i16(api) + kp.i16(ver) + kp.i32(corr) + kp.string("pipeliner")
            frames.append(kp.i32(len(hdr) + len(body)) + hdr + body)
            expect.append(corr)
        # everything in one write
        c.send_raw(b"".join(frames))
        got = []
        for _ in expect:
            rc, _data = c.recv(timeout=30)
            got.append(rc)
        assert got == expect, "responses out of request order: %r" % got[:20]
        # every produced record landed exactly once, in per-partition order
        for part in range(8):
            f = c.fetch(topic, part, 0, max_wait_ms=0, min_bytes=0)
            keys = [k for b in kp.decode_batches(f["records"]) for (_, _, k, _) in b["records"]]
            want = [b"k%d" % i for i in range(64) if i % 4 != 3 and i % 8 == part]
            assert keys == want, "partition %d: %r != %r" % (part, keys, want)


def test_request_and_half_of_next_in_one_write(broker):
    with kp.Conn(broker.bootstrap) as c:
        def frame(corr):
            hdr = kp.i16(kp.API_VERSIONS) + kp.i16(0) + kp.i32(corr) + kp.string("x")
            return kp.i32(len(hdr)) + hdr
        a, b = frame(1), frame(2)
        c.send_raw(a + b[:5])
        assert c.recv()[0] == 1
        time.sleep(0.2)
        c.send_raw(b[5:])
        assert c.recv()[0] == 2
