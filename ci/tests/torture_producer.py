"""Producer process for ci/torture.py: acks=all, keyed records, and a journal
of every ACKNOWLEDGED record, flushed after each acknowledgement so that it
survives a SIGKILL of this process.

usage: torture_producer.py --kind {ck-idem,ck-plain,kp} --name pN --bootstrap HOST:PORT
                           --topic T --journal FILE [--rate R] [--max-seconds S]
                           [--compression C] [--big-every N]

kinds: ck-idem   confluent-kafka, enable.idempotence=true
       ck-plain  confluent-kafka, enable.idempotence=false, max.in.flight=1
                 (retries may duplicate, never reorder)
       kp        kafka-python with its default producer settings (acks=all;
                 kafka-python >= 2.1 is idempotent by default)

Record number `seq` (0, 1, 2, ...) of producer `name` has
    key   = record_key(name, seq)
    value = record_value(name, seq)
(functions below, shared with the verifier).

Journal lines:
    H <name> <kind> idempotent=<0|1> ordered=<0|1> <client description>
    A <partition> <offset> <seq>         acknowledged
    E <seq> <error text>                 delivery failed (reported, never retried here)
    X <produced> <acked> <errors> <undelivered>   clean exit (SIGTERM or time limit)

Stops producing on SIGTERM or after --max-seconds, flushes for up to 30 s
and exits 0. Exits at once if its parent dies (PR_SET_PDEATHSIG).
"""

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
import zlib


def record_key(name, seq):
    return ("%s/k%d" % (name, seq % 37)).encode()


def record_value(name, seq):
    """"name|seq|" + padding whose length and content depend on seq only;
    every 97th record is ~3 KB so that batches vary in size."""
    n = (zlib.crc32(b"%d" % seq) % 120) + (3000 if seq % 97 == 0 else 0)
    pad = ("%08x" % zlib.crc32(("%s:%d" % (name, seq)).encode())) * (n // 8 + 1)
    return ("%s|%d|%s" % (name, seq, pad[:n])).encode()


def parse_value(value):
    """(name, seq) or None if the value is not one of ours."""
    try:
        name, seq, _ = value.split(b"|", 2)
        return name.decode(), int(seq)
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def die_with_parent():
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(2)


class Journal:
    def __init__(self, path):
        self.f = open(path, "a")
        self.lock = threading.Lock()
        self.acked = 0
        self.errors = 0

    def line(self, s):
        with self.lock:
            self.f.write(s + "\n")
            self.f.flush()

    def ack(self, partition, offset, seq):
        self.acked += 1
        self.line("A %d %d %d" % (partition, offset, seq))

    def error(self, seq, err):
        self.errors += 1
        self.line("E %d %s" % (seq, str(err).replace("\n", " ")[:300]))


def run_confluent(a, journal, stop, idempotent):
    import confluent_kafka
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": a.bootstrap,
        "client.id": a.name,
        "acks": "all",
        "enable.idempotence": idempotent,
        "linger.ms": 5,
        "compression.type": a.compression,
        "message.timeout.ms": 120000,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "queue.buffering.max.messages": 20000,
    }
    if not idempotent:
        conf["max.in.flight.requests.per.connection"] = 1
    journal.line("H %s %s idempotent=%d ordered=1 confluent-kafka %s librdkafka %s compression=%s" % (
        a.name, a.kind, int(idempotent), confluent_kafka.version()[0], confluent_kafka.libversion()[0],
        a.compression))
    fatal = []

    def on_error(err):
        if err.fatal():
            fatal.append(str(err))
            journal.line("E -1 FATAL %s" % str(err).replace("\n", " "))

    p = Producer(dict(conf, error_cb=on_error))

    def cb(seq):
        def on_delivery(err, msg):
            if err is None:
                journal.ack(msg.partition(), msg.offset(), seq)
            else:
                journal.error(seq, err)
        return on_delivery

    seq = 0
    t0 = time.monotonic()
    while not stop[0] and not fatal and time.monotonic() - t0 < a.max_seconds:
        try:
            p.produce(a.topic, key=record_key(a.name, seq), value=record_value(a.name, seq), on_delivery=cb(seq))
        except BufferError:
            p.poll(0.05)
            continue
        seq += 1
        p.poll(0)
        ahead = seq / a.rate - (time.monotonic() - t0)
        if ahead > 0:
            p.poll(min(ahead, 0.5))
    left = p.flush(30)
    return seq, left


def run_kafka_python(a, journal, stop):
    import kafka
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=a.bootstrap, client_id=a.name,
                      compression_type=None if a.compression == "none" else a.compression,
                      reconnect_backoff_max_ms=1000)
    idem = bool(p.config.get("enable_idempotence"))
    acks = p.config.get("acks")
    assert acks in (-1, "all"), "kafka-python default acks is %r, expected all" % (acks,)
    inflight = p.config.get("max_in_flight_requests_per_connection")
    journal.line("H %s %s idempotent=%d ordered=%d kafka-python %s acks=%s max_in_flight=%s compression=%s" % (
        a.name, a.kind, int(idem), int(idem or inflight == 1), kafka.__version__, acks, inflight, a.compression))

    seq = 0
    t0 = time.monotonic()
    while not stop[0] and time.monotonic() - t0 < a.max_seconds:
        s = seq
        try:
            fut = p.send(a.topic, key=record_key(a.name, s), value=record_value(a.name, s))
        except Exception as e:  # KafkaTimeoutError when the buffer stays full
            journal.line("W send %d %s" % (s, str(e).replace("\n", " ")[:200]))
            time.sleep(0.05)
            continue
        fut.add_callback(lambda md, s=s: journal.ack(md.partition, md.offset, s))
        fut.add_errback(lambda e, s=s: journal.error(s, "%s: %s" % (type(e).__name__, e)))
        seq += 1
        ahead = seq / a.rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(min(ahead, 0.5))
    left = 0
    try:
        p.flush(timeout=30)
    except Exception as e:  # KafkaTimeoutError: not everything was delivered
        left = -1
        journal.line("W flush %s" % str(e).replace("\n", " ")[:200])
    try:
        p.close(timeout=5)
    except Exception:
        pass
    return seq, left


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True, choices=["ck-idem", "ck-plain", "kp"])
    ap.add_argument("--name", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--journal", required=True)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--compression", default="none")
    a = ap.parse_args()
    die_with_parent()
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    journal = Journal(a.journal)
    if a.kind == "kp":
        produced, left = run_kafka_python(a, journal, stop)
    else:
        produced, left = run_confluent(a, journal, stop, a.kind == "ck-idem")
    journal.line("X %d %d %d %d" % (produced, journal.acked, journal.errors, left))
    sys.exit(0)


if __name__ == "__main__":
    main()
