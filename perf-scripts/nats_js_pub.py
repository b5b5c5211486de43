#!/usr/bin/env python3
"""Tiny bounded JetStream publisher (nats-py), for peers.sh: no `nats bench` in Debian.

Creates a file-storage stream with nats-py, then publishes fixed-size messages to it,
each with a reply subject, so JetStream answers every one with a PubAck once stored
(what `nats bench --js` and publish_async do), keeping at most --pending unacknowledged,
for --secs seconds or --count messages, whichever comes first; then waits for the acks
and prints JSON: acked msgs/s over the time to the last ack.
--client raw (default) writes the NATS protocol on a plain socket in batches and counts
the PubAck MSGs in bulk; --client nats-py uses js.publish_async per message (about 10x
slower in Python). Either way a Python client: the figure is a lower bound on JetStream,
set by the client's CPU (see load% in peers.sh's table).

Usage: nats_js_pub.py --url nats://127.0.0.1:PORT [--size 100] [--secs 20] [--count N] [--pending 4000]
"""
import argparse
import asyncio
import json
import time

import nats
from nats.js.api import StorageType, StreamConfig


def raw(a, payload):
    import socket
    import threading
    host, port = a.url.split("//", 1)[1].rsplit(":", 1)
    sk = socket.create_connection((host, int(port)))
    sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sk.makefile("rb")
    f.readline()  # INFO
    sk.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'
               b"SUB _INBOX.bkpub.* 1\r\nPING\r\n")
    while not f.readline().startswith(b"PONG"):
        pass
    one = b"PUB bench.p _INBOX.bkpub.1 %d\r\n" % len(payload) + payload + b"\r\n"
    batch = 64
    chunk = one * batch
    st = {"acked": 0, "errors": 0, "eof": False}
    cv = threading.Condition()

    def reader():
        tail = b""
        while True:
            try:
                b = sk.recv(1 << 20)
            except OSError:
                break
            if not b:
                break
            data = tail + b
            cut = data.rfind(b"\n") + 1   # count whole lines only; keep the partial line
            body, tail = data[:cut], data[cut:]
            n = body.count(b"MSG _INBOX.bkpub.")
            e = body.count(b'"error"')
            if b"PING" in body:
                sk.sendall(b"PONG\r\n")
            if n or e:
                with cv:
                    st["acked"] += n
                    st["errors"] += e
                    cv.notify_all()
            if st.get("done") and st["acked"] >= st["target"]:
                break
        with cv:
            st["acked"] += tail.count(b"MSG _INBOX.bkpub.")
            st["eof"] = True
            cv.notify_all()

    st["target"] = 1 << 62
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    sent = 0
    start = time.monotonic()
    deadline = start + a.secs
    while sent < a.count and time.monotonic() < deadline:
        with cv:
            while sent - st["acked"] > a.pending and not st["eof"]:
                cv.wait(1.0)
        sk.sendall(chunk)
        sent += batch
    st["target"] = sent
    st["done"] = True
    with cv:
        end = time.monotonic() + 60
        while st["acked"] < sent and not st["eof"] and time.monotonic() < end:
            cv.wait(1.0)
    el = time.monotonic() - start
    sk.sendall(b"PING\r\n")
    sk.close()
    acked = st["acked"]
    return {"client": "raw", "sent": sent, "acked": acked, "ack_errors": st["errors"], "elapsed_s": round(el, 3),
            "msgs_per_s": round(acked / el), "MB_per_s": round(acked * len(payload) / el / 1e6, 1)}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--secs", type=float, default=20)
    ap.add_argument("--count", type=int, default=50_000_000)
    ap.add_argument("--pending", type=int, default=4000)
    ap.add_argument("--stream", default="BENCH")
    ap.add_argument("--client", choices=["raw", "nats-py"], default="raw")
    a = ap.parse_args()
    nc = await nats.connect(a.url, max_reconnect_attempts=0)
    js = nc.jetstream(publish_async_max_pending=a.pending)
    await js.add_stream(StreamConfig(name=a.stream, subjects=["bench.>"], storage=StorageType.FILE,
                                     num_replicas=1))
    payload = b"x" * a.size
    if a.client == "raw":
        await nc.close()
        r = raw(a, payload)
        nc = await nats.connect(a.url, max_reconnect_attempts=0)
        info = await nc.jetstream().stream_info(a.stream)
        r["stream_msgs"] = info.state.messages
        print(json.dumps(r))
        await nc.close()
        return
    sent = acked = failed = 0
    start = time.monotonic()
    deadline = start + a.secs

    def done(f):
        nonlocal acked, failed
        if f.cancelled() or f.exception() is not None:
            failed += 1
        else:
            acked += 1

    while sent < a.count and (sent % 256 or time.monotonic() < deadline):
        f = await js.publish_async("bench.p", payload, wait_stall=30)
        f.add_done_callback(done)
        sent += 1
    await asyncio.wait_for(js.publish_async_completed(), timeout=60)
    el = time.monotonic() - start
    info = await js.stream_info(a.stream)
    print(json.dumps({"client": "nats-py", "sent": sent, "acked": acked, "failed": failed, "elapsed_s": round(el, 3),
                      "msgs_per_s": round(acked / el), "MB_per_s": round(acked * a.size / el / 1e6, 1),
                      "stream_msgs": info.state.messages}))
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
