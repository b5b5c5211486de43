"""Helper process for test_groups.py: one member of a confluent-kafka consumer
group that logs everything it does to a file, so the test can reconstruct what
happened even after this process is SIGKILLed.

usage: group_member.py BOOTSTRAP TOPIC GROUP LOG_FILE NAME COMMIT_EVERY MAX_SECONDS

Manual synchronous commits (enable.auto.commit=false) of the next offset to
read, every COMMIT_EVERY records or every second, and in the revoke callback.
Log lines (the file is flushed after every line):

    A <monotonic> p,p,...     partitions assigned (eager: the whole assignment)
    R <monotonic> p,p,...     partitions revoked
    C <p> <offset> <key>      a record consumed
    P <p> <offset>            a commit of <offset> for <p> is about to be sent
    K <p> <offset>            that commit was acknowledged without error
    E <text>                  a commit or consumer error
    X <monotonic>             leaving (SIGTERM); after the final commit and close

time.monotonic() is CLOCK_MONOTONIC, comparable across processes on Linux.
Runs until SIGTERM or MAX_SECONDS, then commits, closes (LeaveGroup), exits 0.
"""

import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main():
    bootstrap, topic, group, log_path, name = sys.argv[1:6]
    commit_every, max_seconds = int(sys.argv[6]), float(sys.argv[7])
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    log = open(log_path, "a", buffering=1)

    def w(line):
        log.write(line + "\n")
        log.flush()

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "range",
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
    })
    pending = {}  # partition -> next offset to read, not yet committed
    owned = set()

    def commit(parts):
        offs = [TopicPartition(topic, p, pending[p]) for p in sorted(parts) if p in pending]
        if not offs:
            return
        for tp in offs:
            w("P %d %d" % (tp.partition, tp.offset))
        try:
            res = c.commit(offsets=offs, asynchronous=False)
        except Exception as e:  # KafkaException: the whole commit failed
            w("E commit %s" % str(e).replace("\n", " "))
            return
        for tp in res:
            if tp.error is not None:
                w("E commit %d %s" % (tp.partition, str(tp.error).replace("\n", " ")))
            else:
                w("K %d %d" % (tp.partition, tp.offset))
                if pending.get(tp.partition) == tp.offset:
                    del pending[tp.partition]

    def on_assign(consumer, parts):
        owned.clear()
        owned.update(tp.partition for tp in parts)
        w("A %.6f %s" % (time.monotonic(), ",".join(str(p) for p in sorted(owned))))

    def on_revoke(consumer, parts):
        revoked = sorted(tp.partition for tp in parts)
        commit(revoked)
        for p in revoked:
            pending.pop(p, None)
        owned.difference_update(revoked)
        w("R %.6f %s" % (time.monotonic(), ",".join(str(p) for p in revoked)))

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    t0 = time.monotonic()
    last_commit = time.monotonic()
    since_commit = 0
    while not stop[0] and time.monotonic() - t0 < max_seconds:
        for m in c.consume(num_messages=200, timeout=0.2):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    w("E consume %s" % str(err).replace("\n", " "))
                continue
            w("C %d %d %s" % (m.partition(), m.offset(), m.key().decode()))
            pending[m.partition()] = m.offset() + 1
            since_commit += 1
            if since_commit >= commit_every:
                commit(list(pending))
                since_commit = 0
                last_commit = time.monotonic()
        if pending and time.monotonic() - last_commit >= 1.0:
            commit(list(pending))
            since_commit = 0
            last_commit = time.monotonic()
    commit(list(pending))
    c.close()
    w("X %.6f" % time.monotonic())
    log.close()


if __name__ == "__main__":
    main()
