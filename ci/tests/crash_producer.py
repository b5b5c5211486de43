"""Helper process for test_crash.py: an idempotent acks=all confluent-kafka
producer that writes every acknowledged record to a file.

usage: crash_producer.py BOOTSTRAP TOPIC ACK_FILE PREFIX MAX_RECORDS MAX_SECONDS RATE

Each acknowledged record is written as "partition offset key" and the file is
flushed after every callback, so the file survives a SIGKILL of this process.
Errors are written as "ERR key error". Stops producing on SIGTERM, after
MAX_RECORDS or MAX_SECONDS, then flushes (30 s) and exits 0 if everything
was delivered, 3 otherwise.
"""

import signal
import sys
import time

from confluent_kafka import Producer


def main():
    bootstrap, topic, ack_path, prefix = sys.argv[1:5]
    max_records, max_seconds, rate = int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    ack = open(ack_path, "a", buffering=1)
    errors = [0]

    def on_delivery(err, msg):
        if err is None:
            ack.write("%d %d %s\n" % (msg.partition(), msg.offset(), msg.key().decode()))
        else:
            errors[0] += 1
            ack.write("ERR %s %s\n" % (msg.key().decode(), str(err).replace("\n", " ")))
        ack.flush()

    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 120000,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })
    t0 = time.monotonic()
    i = 0
    while not stop[0] and i < max_records and time.monotonic() - t0 < max_seconds:
        key = "%s-%d" % (prefix, i)
        try:
            p.produce(topic, key=key.encode(), value=("%s:%d:" % (prefix, i) + "x" * (i % 50)).encode(),
                      on_delivery=on_delivery)
            i += 1
        except BufferError:
            p.poll(0.05)
            continue
        p.poll(0)
        # pace the stream to about `rate` records/s
        ahead = i / rate - (time.monotonic() - t0)
        if ahead > 0:
            p.poll(ahead)
    left = p.flush(30)
    print("produced %d, undelivered %d, errors %d" % (i, left, errors[0]), flush=True)
    ack.close()
    sys.exit(0 if left == 0 and errors[0] == 0 else 3)


if __name__ == "__main__":
    main()
