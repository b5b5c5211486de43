"""Helper process for test_transactions.py: a confluent-kafka exactly-once
application, written as an unmodified application would be, that the tests
SIGKILL and restart.

usage:
  txn_app.py copy BOOTSTRAP INPUT OUTPUT GROUP TXN_ID BATCH MAX_SECONDS
  txn_app.py open BOOTSTRAP TOPIC TXN_ID N TXN_TIMEOUT_MS

copy: consume-transform-produce. A group consumer (read_committed, no auto
commit) subscribed to INPUT and a transactional producer (TXN_ID). For each
batch of up to BATCH records: begin_transaction, produce each record's
transform (same key, value b"out-" + value, same partition number) to OUTPUT,
send_offsets_to_transaction(the positions, the group metadata),
commit_transaction. An abortable error aborts the transaction and rewinds the
consumer to the batch's first offsets; a retriable one is retried; a fatal one
ends the process (exit 3). Stdout, one line per event, flushed:

    READY                        init_transactions returned
    ASSIGNED p,p,...             the partitions of INPUT this member owns
    COMMIT <records> <total>     a transaction of <records> committed; <total> in this run
    ABORT <error>                a transaction aborted after an abortable error
    RETRY <what> <error>         a retriable error, the call repeated
    BEHIND p:at/end ...          idle, but not at the end of every partition (when it changes)
    DONE <total>                 every partition of INPUT owned and read to its end: exit 0
    FATAL <error>                exit 3
    STUCK <call>                 a transactional call did not return within its timeout + 10 s,
                                 stacks dumped to stderr: exit 5

STUCK is librdkafka's, not the broker's: send_offsets_to_transaction() can
block past its timeout, for good, when the group coordinator's connection
went away under it (librdkafka issues #5456 and #5511, open in 2.16; seen
against Apache Kafka and Brook alike whenever a single broker is SIGKILLed and
restarted under this application). A supervisor would restart the
application; the tests that kill brokers do.

TXN_APP_CONSUMER_DEBUG / TXN_APP_PRODUCER_DEBUG set librdkafka's `debug`
(e.g. "cgrp,fetch", "eos,protocol"); its log goes to stderr.

open: a transactional producer with transaction.timeout.ms = TXN_TIMEOUT_MS
begins a transaction, produces N records (keys o0.., partition 0), flushes,
prints "OPEN <offset of the first>" and sleeps until killed (at most 120 s,
then exits 4 without ending the transaction).
"""

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

CALL_TIMEOUT_S = 10
STUCK_AFTER_S = CALL_TIMEOUT_S + 10
STUCK_EXIT = 5


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def one_line(err):
    return str(err).replace("\n", " ")


def debug(var):
    """librdkafka's `debug` contexts from the environment, e.g. "cgrp,fetch" or "eos,protocol"."""
    contexts = os.environ.get(var)
    return {"debug": contexts} if contexts else {}


class Fatal(Exception):
    pass


@contextlib.contextmanager
def watchdog(what):
    """Ends the process (STUCK, exit 5) if the block outlives the call timeout by 10 s."""
    def stuck():
        say("STUCK %s" % what)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(STUCK_EXIT)

    t = threading.Timer(STUCK_AFTER_S, stuck)
    t.daemon = True
    t.start()
    try:
        yield
    finally:
        t.cancel()


def retrying(what, fn, deadline):
    """Calls fn until it returns; retriable errors are retried until deadline.
    An error that needs an abort is returned (the caller aborts); a fatal one
    raises Fatal."""
    while True:
        try:
            with watchdog(what):
                fn()
            return None
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                raise Fatal("%s: %s" % (what, one_line(err)))
            if err.txn_requires_abort():
                return err
            if not err.retriable() or time.monotonic() > deadline:
                raise Fatal("%s (not retriable or out of time): %s" % (what, one_line(err)))
            say("RETRY %s %s" % (what, one_line(err)))
            time.sleep(0.2)


def copy(bootstrap, src, dst, group, txn_id, batch, max_seconds):
    deadline = time.monotonic() + max_seconds
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": "txn-app-" + txn_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": True,
        **debug("TXN_APP_CONSUMER_DEBUG"),
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "client.id": "txn-app-" + txn_id,
        "linger.ms": 5,
        "transaction.timeout.ms": 30000,
        **debug("TXN_APP_PRODUCER_DEBUG"),
    })
    err = retrying("init_transactions", lambda: producer.init_transactions(CALL_TIMEOUT_S), deadline)
    if err is not None:
        raise Fatal("init_transactions: %s" % one_line(err))
    say("READY")
    assigned = set()

    def on_assign(_c, parts):
        assigned.clear()
        assigned.update(tp.partition for tp in parts)
        say("ASSIGNED %s" % ",".join(str(p) for p in sorted(assigned)))

    at_end = {}  # partition -> offset of its last end-of-partition event

    def on_revoke(_c, parts):
        for tp in parts:
            assigned.discard(tp.partition)
            at_end.pop(tp.partition, None)

    consumer.subscribe([src], on_assign=on_assign, on_revoke=on_revoke)
    total = 0
    last_behind = None
    while time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=batch, timeout=0.5)
        records = []
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end[m.partition()] = m.offset()
                    continue
                raise Fatal("consumer: %s" % one_line(m.error()))
            records.append(m)
        if not records:
            left = behind(consumer, src, assigned, at_end)
            if not left:
                say("DONE %d" % total)
                consumer.close()
                return 0
            if left != last_behind:
                say("BEHIND %s" % " ".join(left))
                last_behind = left
            continue
        if transact(producer, consumer, dst, records, deadline):
            total += len(records)
            say("COMMIT %d %d" % (len(records), total))
        else:
            rewind(consumer, records, at_end)
    raise Fatal("not done after %ss" % max_seconds)


def transact(producer, consumer, dst, records, deadline):
    """One transaction for `records`; True if it committed."""
    producer.begin_transaction()
    for m in records:
        while True:
            try:
                producer.produce(dst, key=m.key(), value=b"out-" + m.value(), partition=m.partition())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
    err = retrying("send_offsets_to_transaction", lambda: producer.send_offsets_to_transaction(
        positions, consumer.consumer_group_metadata(), CALL_TIMEOUT_S), deadline)
    if err is None:
        err = retrying("commit_transaction", lambda: producer.commit_transaction(CALL_TIMEOUT_S), deadline)
    if err is None:
        return True
    say("ABORT %s" % one_line(err))
    abort_err = retrying("abort_transaction", lambda: producer.abort_transaction(CALL_TIMEOUT_S), deadline)
    if abort_err is not None:
        raise Fatal("abort_transaction: %s" % one_line(abort_err))
    return False


def rewind(consumer, records, at_end):
    """Back to the first offset of the aborted batch in each of its partitions."""
    first = {}
    for m in records:
        first.setdefault((m.topic(), m.partition()), m.offset())
    for (topic, p), off in first.items():
        at_end.pop(p, None)
        try:
            consumer.seek(TopicPartition(topic, p, off))
        except KafkaException as e:
            # Revoked meanwhile: its next owner starts at the committed offset.
            say("RETRY seek %s" % one_line(e.args[0]))


def behind(consumer, src, assigned, at_end):
    """What keeps this run from being done: [] once every partition of src is
    ours and read to its end (the input is written before the application
    starts and is not transactional). A partition this run has not read from
    has no position, only its end-of-partition event."""
    md = consumer.list_topics(src, timeout=10).topics[src]
    if md.error is not None or set(md.partitions) != assigned:
        return ["assigned:%s" % ",".join(map(str, sorted(assigned)))]
    parts = [TopicPartition(src, p) for p in sorted(assigned)]
    out = []
    for tp in consumer.position(parts):
        try:
            _low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        except KafkaException as e:
            # A leader moving (its broker was killed) is retriable: not done yet.
            if not e.args[0].retriable() and e.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            say("RETRY watermarks %s" % one_line(e.args[0]))
            return ["%d:leader moving" % tp.partition]
        at = max(tp.offset, at_end.get(tp.partition, -1))
        if at < high:
            out.append("%d:%d/%d" % (tp.partition, at, high))
    return out


def open_transaction(bootstrap, topic, txn_id, n, timeout_ms):
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": timeout_ms,
        "linger.ms": 5,
    })
    producer.init_transactions(CALL_TIMEOUT_S)
    producer.begin_transaction()
    first = []

    def on_delivery(err, msg):
        if err is None and not first:
            first.append(msg.offset())

    for i in range(n):
        producer.produce(topic, key=b"o%d" % i, value=b"open-%d" % i, partition=0, on_delivery=on_delivery)
    left = producer.flush(CALL_TIMEOUT_S)
    if left or not first:
        say("FATAL %d records not delivered" % left)
        return 3
    say("OPEN %d" % first[0])
    time.sleep(120)
    return 4


def main():
    faulthandler.register(signal.SIGUSR1)  # the test asks for a stack dump before it gives up
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        if mode == "copy":
            bootstrap, src, dst, group, txn_id = args[:5]
            return copy(bootstrap, src, dst, group, txn_id, int(args[5]), float(args[6]))
        if mode == "open":
            bootstrap, topic, txn_id = args[:3]
            return open_transaction(bootstrap, topic, txn_id, int(args[3]), int(args[4]))
    except Fatal as e:
        say("FATAL %s" % e)
        return 3
    raise SystemExit("unknown mode %r" % mode)


if __name__ == "__main__":
    sys.exit(main())
