"""Group consumer process for ci/torture.py: one confluent-kafka member of a
consumer group that commits synchronously and journals what it does, so the
torture verifier can check that the group resumes at (or after) what it had
committed before a SIGKILL of the broker and/or of this process.

usage: torture_consumer.py BOOTSTRAP TOPIC GROUP JOURNAL NAME [MAX_SECONDS]

Journal lines (flushed after each line, so they survive a SIGKILL):
    H <name> <client description>
    A <p,p,...>              partitions assigned
    R <p,p,...>              partitions revoked
    F <p> <offset>           first record consumed from p after an assignment
    J <p> <expected> <got>   a jump: within one assignment, the next record
                             read from p was not at the next offset
    P <p> <offset>           a commit of <offset> for p is about to be sent
    K <p> <offset>           that commit was acknowledged without error
    E <text>                 a commit or consumer error
    N <count>                records consumed so far (every ~5000)
    X <count>                clean exit after the final commit and close

Commits the next offset to read every 300 records or 0.5 s. Runs until SIGTERM
or MAX_SECONDS; dies with its parent (PR_SET_PDEATHSIG).
"""

import signal
import sys
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, TopicPartition

from torture_producer import die_with_parent


def main():
    bootstrap, topic, group, journal_path, name = sys.argv[1:6]
    max_seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 3600.0
    die_with_parent()
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    journal = open(journal_path, "a")

    def w(line):
        journal.write(line + "\n")
        journal.flush()

    w("H %s confluent-kafka %s librdkafka %s" % (name, confluent_kafka.version()[0],
                                                 confluent_kafka.libversion()[0]))
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "check.crcs": True,
    })
    pending = {}   # partition -> next offset to read, not yet committed
    nxt = {}       # partition -> next offset expected within the current assignment
    first = set()  # partitions whose first record after the assignment was journaled

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
        for tp in parts:
            nxt.pop(tp.partition, None)
            first.discard(tp.partition)
        w("A %s" % ",".join(str(tp.partition) for tp in sorted(parts, key=lambda t: t.partition)))

    def on_revoke(consumer, parts):
        revoked = sorted(tp.partition for tp in parts)
        commit(revoked)
        for p in revoked:
            pending.pop(p, None)
            nxt.pop(p, None)
            first.discard(p)
        w("R %s" % ",".join(str(p) for p in revoked))

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    t0 = time.monotonic()
    last_commit = time.monotonic()
    since_commit = 0
    count = 0
    while not stop[0] and time.monotonic() - t0 < max_seconds:
        for m in c.consume(num_messages=500, timeout=0.2):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    w("E consume %s" % str(err).replace("\n", " "))
                continue
            p, off = m.partition(), m.offset()
            if p not in first:
                first.add(p)
                w("F %d %d" % (p, off))
            elif nxt.get(p) is not None and off != nxt[p]:
                w("J %d %d %d" % (p, nxt[p], off))
            nxt[p] = off + 1
            pending[p] = off + 1
            count += 1
            since_commit += 1
            if count % 5000 == 0:
                w("N %d" % count)
            if since_commit >= 300:
                commit(list(pending))
                since_commit = 0
                last_commit = time.monotonic()
        if pending and time.monotonic() - last_commit >= 0.5:
            commit(list(pending))
            since_commit = 0
            last_commit = time.monotonic()
    commit(list(pending))
    c.close()
    w("X %d" % count)
    journal.close()


if __name__ == "__main__":
    main()
