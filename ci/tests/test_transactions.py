"""Kafka transactions and exactly-once, end to end with real clients:
confluent-kafka (librdkafka), kafka-python, the Java client 4.4, Kafka
Streams 4.4 (exactly_once_v2) and Kafka's own kafka-transactions tool.

What is proved: consume-transform-produce applications (txn_app.py,
TxnCopy.java, StreamsEosWordCount.java) SIGKILLed and restarted with the same
transactional.id, or run while the broker (or, in a cluster, the transaction
coordinator) is SIGKILLed, leave an output that read_committed is exactly the
input transformed (each record once, in order per partition); aborted records
are invisible to read_committed and visible to read_uncommitted, markers take
one offset each and never reach the application; the last stable offset holds
read_committed consumers back behind an open transaction; a second producer
with the same transactional.id fences the first and aborts its transaction;
the coordinator aborts a transaction whose producer died once its
transaction.timeout.ms has passed.

Target: Brook by default (one broker for the module, a fresh one for the
broker-kill test, a three-node cluster for the coordinator-kill test). With
TXN_TARGET=kafka the single-broker tests run against the session's real
Apache Kafka 4.4 (the `apache_kafka` fixture) instead, to check what they
expect against Kafka:

    TXN_TARGET=kafka ci/.venv/bin/pytest -q -p no:cacheprovider ci/tests/test_transactions.py

Every record is checked one by one; every wait is bounded; no timing is
asserted. The kill points are random: TXN_SEED=N repeats a run's (its
output prints the seed).

One client bug is worked around, not hidden: librdkafka (2.16) can block in
send_offsets_to_transaction() for good when the broker it talks to went away
under it (librdkafka issues #5456, #5511; it happens against Apache Kafka as
well). txn_app.py then exits STUCK, and in the broker-kill tests a
`Supervisor` restarts it, as a deployment would; exactly-once must hold
across that restart too.
"""

import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, OFFSET_BEGINNING, Producer, TopicPartition

import kproto as kp
import txn_app
from cluster_util import cluster, create as cluster_create
from conftest import REPO, Broker, running
from test_java_client import JARS, explain, java_cmd, run_java
from util import admin, consume_all, consumer, create_topic, producer, spawn, unique_topic, wait_until

ON_KAFKA = os.environ.get("TXN_TARGET", "brook") == "kafka"
APP = [sys.executable, str(Path(__file__).resolve().parent / "txn_app.py")]
KAFKA_TOOL = REPO / "ci" / "kafka-tool"
TOOL_ENV = dict(os.environ, KAFKA_JVM_OPTS="-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto")
RC = {"isolation.level": "read_committed"}
RU = {"isolation.level": "read_uncommitted"}
SEED = int(os.environ.get("TXN_SEED", random.randrange(1 << 30)))

# The consume-transform-produce loop: 3 partitions x 1000 records, 50 per
# transaction (60 transactions), the application killed 4 times.
PARTITIONS = 3
N_INPUT = 3000
BATCH = 50
APP_KILLS = 4
APP_BOUND_S = 150


# ---------------------------------------------------------------- targets

class KafkaTarget:
    """The session's Apache Kafka behind the two things the tests use of a
    Brook `Broker`: `bootstrap` and `restart(kill=True)`."""

    def __init__(self, kafka):
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap

    def restart(self, kill=False):
        if kill:
            self.kafka.kill()
        else:
            self.kafka.stop()
        self.kafka.start()


def brook_for_txn(request, tmp_path_factory, owner):
    """A Brook broker without the 3 s initial rebalance delay (each test's
    group is new), as test_java_client's module broker."""
    d = tmp_path_factory.mktemp("brook-txn")
    cfg = d / "brook.toml"
    cfg.write_text('"group.initial.rebalance.delay.ms" = 0\n')
    return running(request, Broker(d / "broker", extra_args=["--config", str(cfg)]), owner)


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    """The broker for the module's single-broker tests (unique topics, groups
    and transactional ids per test)."""
    if ON_KAFKA:
        yield KafkaTarget(request.getfixturevalue("apache_kafka"))
        return
    yield from brook_for_txn(request, tmp_path_factory, request.module)


@pytest.fixture
def killable_target(request, tmp_path_factory):
    """A broker the test may SIGKILL: a fresh Brook, or the session's Kafka
    (restarted in place)."""
    if ON_KAFKA:
        yield KafkaTarget(request.getfixturevalue("apache_kafka"))
        return
    yield from brook_for_txn(request, tmp_path_factory, request.node)


# ---------------------------------------------------------------- records

def produce_input(bootstrap, topic, n=N_INPUT, partitions=PARTITIONS, create=True):
    """Plain (non-transactional, idempotent) input: key k<i>, value b"<i>",
    partition i % partitions; the topic is created first unless `create` is
    False. Returns {partition: [i, ...]} in offset order."""
    if create:
        create_topic(bootstrap, topic, partitions)
    p = producer(bootstrap, **{"enable.idempotence": True})
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b"k%d" % i, value=b"%d" % i, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(60) == 0, "input not delivered"
    return {q: list(range(q, n, partitions)) for q in range(partitions)}


def check_transformed(out_by_partition, expected):
    """Each output partition holds exactly its input partition's records
    transformed (key k<i>, value b"out-<i>"), in input order: none lost, none
    twice, none reordered."""
    for p, want in expected.items():
        got = []
        for off, key, value, _ts in out_by_partition.get(p, []):
            i = int(key[1:])
            assert key == b"k%d" % i and value == b"out-%d" % i, (
                "partition %d offset %d: key %r value %r" % (p, off, key, value))
            got.append(i)
        if got == want:
            continue
        dups = sorted(i for i in set(got) if got.count(i) > 1)
        missing = sorted(set(want) - set(got))
        at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise AssertionError(
            "output partition %d: %d records, expected %d; %d duplicated (e.g. %r), %d missing (e.g. %r);"
            " first difference at position %d: got %r, expected %r"
            % (p, len(got), len(want), len(dups), dups[:5], len(missing), missing[:5], at,
               got[at:at + 5], want[at:at + 5]))
    extra = set(out_by_partition) - set(expected)
    assert not extra, "records in unexpected output partitions %r" % sorted(extra)


def committed_offsets(bootstrap, group, topic, partitions):
    c = consumer(bootstrap, **{"group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def watermarks(bootstrap, topic, partition, isolation):
    """(low, high) from ListOffsets at `isolation`: for read_committed the
    high end is the last stable offset."""
    c = consumer(bootstrap, **{"isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=15, cached=False)
    finally:
        c.close()


def keyed(records):
    """[(offset, key)] of consume_all's records of one partition."""
    return [(off, key) for off, key, _v, _ts in records]


def fetch_raw(bootstrap, topic, partition, offset, isolation):
    """One Fetch (v4-v11) without a session: dict(error, high_watermark,
    last_stable_offset, aborted [(producer_id, first_offset)], batches)."""
    with kp.Conn(bootstrap) as c:
        v = c.pick_version(kp.FETCH, 4, 11)
        body = c.fetch_body(v, topic, partition, offset, max_wait_ms=0, min_bytes=0, isolation_level=isolation)
        r = c.request(kp.FETCH, v, body)
    r.i32()  # throttle
    if v >= 7:
        assert r.i16() == 0, "fetch top-level error"
        r.i32()  # session id
    out = None
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            idx, err, hw, lso = r.i32(), r.i16(), r.i64(), r.i64()
            if v >= 5:
                r.i64()  # log start offset
            aborted = r.array(lambda r: (r.i64(), r.i64()))
            if v >= 11:
                r.i32()  # preferred read replica
            recs = r.bytes_() or b""
            if (name, idx) == (topic, partition):
                out = dict(error=err, high_watermark=hw, last_stable_offset=lso, aborted=aborted,
                           batches=kp.decode_batches(recs))
    assert out is not None, "no fetch response for %s-%d" % (topic, partition)
    return out


CONTROL = 0x20
TRANSACTIONAL = 0x10
ABORT_MARKER = struct.pack(">hh", 0, 0)
COMMIT_MARKER = struct.pack(">hh", 0, 1)


# ---------------------------------------------------------------- the application under kills

class App:
    """One run of txn_app.py copy (or a Java TxnCopy: same output lines, or
    StreamsEosWordCount); a thread reads its stdout as it comes. With
    kill_after, that thread SIGKILLs the run kill_delay seconds after it
    reports a commit that brings it to kill_after records: at once, wherever
    the next transaction is (the test's own polling would be late by whole
    transactions)."""

    def __init__(self, procs, argv, log_path, kill_after=None, kill_delay=0.0):
        self.log_path = log_path
        self.err = open(log_path, "ab")
        self.kill_after, self.kill_delay = kill_after, kill_delay
        self.killed_after = None  # records committed when the reader thread killed it
        self.proc = spawn(procs, argv, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.lines = []
        self.committed = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("COMMIT "):
                self.committed = int(line.split()[2])
                if self.kill_after is not None and self.killed_after is None and self.committed >= self.kill_after:
                    self.killed_after = self.committed
                    time.sleep(self.kill_delay)
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)
        self.err.close()

    def finish(self, timeout):
        """Waits for the run to end; it must end with DONE and exit 0."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            raise AssertionError("application not done within %ds:\n%s" % (timeout, self.explain()))
        self.reader.join(10)
        self.err.close()
        assert self.proc.returncode == 0 and self.lines and self.lines[-1].startswith("DONE"), (
            "exit %s:\n%s" % (self.proc.returncode, self.explain()))

    def saw(self, line):
        return line in self.lines

    def dump_stacks(self):
        """A stuck run's stacks to its stderr: txn_app.py on SIGUSR1, a JVM on SIGQUIT."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1 if self.proc.args[:len(APP)] == APP else signal.SIGQUIT)
            time.sleep(1)

    def explain(self):
        err = Path(self.log_path).read_text(errors="replace")[-4000:]
        return "stdout (tail):\n%s\nstderr (tail):\n%s" % ("\n".join(self.lines[-30:]), err)


class Supervisor:
    """Keeps one application running across broker kills: when a run ends
    STUCK (txn_app.py's exit 5: librdkafka blocked in a transactional call past
    its timeout, a client bug, see txn_app.py) the next run starts, at most
    `stuck_restarts` times. Exactly-once must hold across those restarts too."""

    def __init__(self, start, stuck_restarts=3):
        self.start, self.left = start, stuck_restarts
        self.runs = [start(0)]

    def committed(self):
        return sum(r.committed for r in self.runs)

    def poll(self):
        """The current run's exit status (None while it runs), after replacing a STUCK one."""
        run = self.runs[-1]
        rc = run.proc.poll()
        if rc == txn_app.STUCK_EXIT and self.left > 0:
            self.left -= 1
            run.reader.join(10)
            print("run %d stuck in librdkafka: %r; restarted" % (len(self.runs), run.lines[-1:]))
            self.runs.append(self.start(len(self.runs)))
            return None
        return rc

    def wait_committed(self, n, timeout):
        try:
            wait_until(lambda: self.committed() >= n or self.poll() is not None, timeout,
                       what="%d records committed" % n)
        except AssertionError as e:
            self.runs[-1].dump_stacks()
            raise AssertionError("%s\n%s" % (e, self.runs[-1].explain()))
        assert self.poll() is None, "application ended early:\n%s" % self.runs[-1].explain()

    def finish(self, timeout):
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        self.runs[-1].finish(max(1, deadline - time.monotonic()))


def copy_app(procs, bootstrap, src, dst, group, txn_id, log_path, kill_after=None, kill_delay=0.0):
    return App(procs, APP + ["copy", bootstrap, src, dst, group, txn_id, str(BATCH), str(APP_BOUND_S)], log_path,
               kill_after, kill_delay)


def kill_and_restart(start, kills, rng, low, high):
    """Runs the application (start(kill_after, kill_delay) -> App) `kills`
    times, each SIGKILLed at a random point: 0-50 ms after the commit that
    brought the run to between low and high records. Then once more, to the end.
    Returns the runs."""
    runs = []
    for k in range(kills):
        app = start(rng.randint(low, high), rng.uniform(0, 0.05))
        runs.append(app)
        try:
            app.proc.wait(90)
        except subprocess.TimeoutExpired:
            app.dump_stacks()
            raise AssertionError("run %d not killed within 90 s:\n%s" % (k + 1, app.explain()))
        app.reader.join(10)
        app.err.close()
        assert app.killed_after is not None and app.proc.returncode == -signal.SIGKILL, (
            "run %d ended (exit %s) before its kill (make the input larger):\n%s"
            % (k + 1, app.proc.returncode, app.explain()))
    app = start(None, 0)
    runs.append(app)
    app.finish(APP_BOUND_S)
    return runs


def check_copy(bootstrap, src, dst, group, expected):
    """The output read committed is exactly the input transformed, and the
    group's committed offsets (written by the transactions) are the input's ends."""
    check_transformed(consume_all(bootstrap, dst, PARTITIONS, timeout=60, **RC), expected)
    ends = {p: len(v) for p, v in expected.items()}
    assert committed_offsets(bootstrap, group, src, PARTITIONS) == ends, "group offsets after the copy"
    # What the kills left behind: aborted records, visible read_uncommitted only.
    ru = consume_all(bootstrap, dst, PARTITIONS, timeout=60, **RU)
    print("output: %d records committed, %d including aborted ones (seed %d)" % (
        sum(map(len, expected.values())), sum(map(len, ru.values())), SEED))


# ---------------------------------------------------------------- 1. application killed

def test_copy_app_killed(target, procs, tmp_path):
    """confluent-kafka consume-transform-produce (txn_app.py) SIGKILLed at
    random points four times and restarted with the same transactional.id:
    read_committed, the output is each input record transformed exactly once,
    in order per partition, and the group offsets committed in the transactions
    are the input's ends."""
    b = target.bootstrap
    src, dst = unique_topic("txn-in"), unique_topic("txn-out")
    expected = produce_input(b, src)
    create_topic(b, dst, PARTITIONS)
    group, txn_id = src + "-g", src + "-t"
    rng = random.Random(SEED)
    runs = kill_and_restart(lambda after, delay: copy_app(procs, b, src, dst, group, txn_id, tmp_path / "app.stderr",
                                                          after, delay), APP_KILLS, rng, 200, 550)
    report_runs(runs)
    check_copy(b, src, dst, group, expected)


# ---------------------------------------------------------------- 2. broker killed

def test_copy_app_broker_killed(killable_target, procs, tmp_path):
    """The same application runs while the broker is SIGKILLed and restarted
    twice: transactions, group offsets and markers survive the crash, and the
    output read_committed is exactly the input transformed."""
    t = killable_target
    b = t.bootstrap
    src, dst = unique_topic("txn-in"), unique_topic("txn-out")
    expected = produce_input(b, src)
    create_topic(b, dst, PARTITIONS)
    group, txn_id = src + "-g", src + "-t"
    app = Supervisor(lambda k: copy_app(procs, b, src, dst, group, txn_id, tmp_path / "app.stderr"))
    for at in (800, 1800):
        app.wait_committed(at, 90)
        t.restart(kill=True)
    app.finish(APP_BOUND_S)
    report_runs(app.runs)
    check_copy(b, src, dst, group, expected)


def report_runs(runs):
    lines = [l for r in runs for l in r.lines if l.startswith(("RETRY", "ABORT", "STUCK"))]
    print("%d runs committed %r; %d retried calls, aborts or hangs, e.g. %r" % (
        len(runs), [r.committed for r in runs], len(lines), lines[:5]))


# ---------------------------------------------------------------- 3. abort, then commit

def test_abort_then_commit(target):
    """A transaction aborted, then one committed, on one partition:
    read_committed sees only the committed records; read_uncommitted sees both
    but never a marker; each transaction end is a control batch that takes one
    offset (abort marker at 5, commit marker at 11); a read_committed Fetch
    lists the aborted transaction."""
    b = target.bootstrap
    topic = unique_topic("txn-abort")
    create_topic(b, topic, 1)
    p = Producer({"bootstrap.servers": b, "transactional.id": topic + "-t", "linger.ms": 5})
    p.init_transactions(60)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"a%d" % i, value=b"aborted-%d" % i, partition=0)
    assert p.flush(30) == 0
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"c%d" % i, value=b"committed-%d" % i, partition=0)
    p.commit_transaction(30)

    committed = [(6 + i, b"c%d" % i) for i in range(5)]
    aborted = [(i, b"a%d" % i) for i in range(5)]
    assert keyed(consume_all(b, topic, 1, **RC)[0]) == committed
    assert keyed(consume_all(b, topic, 1, **RU)[0]) == aborted + committed
    assert watermarks(b, topic, 0, "read_committed") == (0, 12)
    assert watermarks(b, topic, 0, "read_uncommitted") == (0, 12)

    f = fetch_raw(b, topic, 0, 0, isolation=1)
    assert (f["error"], f["high_watermark"], f["last_stable_offset"]) == (0, 12, 12), f
    layout = [(x["base_offset"], x["last_offset_delta"], x["attributes"] & (CONTROL | TRANSACTIONAL))
              for x in f["batches"]]
    assert layout == [(0, 4, TRANSACTIONAL), (5, 0, CONTROL | TRANSACTIONAL),
                      (6, 4, TRANSACTIONAL), (11, 0, CONTROL | TRANSACTIONAL)], layout
    pids = set(x["producer_id"] for x in f["batches"])
    assert len(pids) == 1 and min(pids) >= 0, "producer ids on the batches: %r" % pids
    markers = [x["records"] for x in f["batches"] if x["attributes"] & CONTROL]
    assert [[(off, key) for off, _ts, key, _v in m] for m in markers] == [
        [(5, ABORT_MARKER)], [(11, COMMIT_MARKER)]], markers
    assert f["aborted"] == [(min(pids), 0)], "aborted transactions in a read_committed fetch: %r" % f["aborted"]


# ---------------------------------------------------------------- 4. last stable offset

def test_lso_holds_back_read_committed(target):
    """An open transaction (A, from offset 2) holds read_committed consumers
    at its first offset, also for a non-transactional producer's later records
    (B): ListOffsets read_committed answers the LSO (2) while read_uncommitted
    answers the high watermark (8), a read_committed Fetch returns nothing at
    the LSO, and the consumer stops there. Once A commits, the consumer reads
    A's and B's records in offset order."""
    b = target.bootstrap
    topic = unique_topic("txn-lso")
    create_topic(b, topic, 1)
    plain = producer(b)
    for i in range(2):
        plain.produce(topic, key=b"k%d" % i, value=b"plain", partition=0)
    assert plain.flush(30) == 0
    a = Producer({"bootstrap.servers": b, "transactional.id": topic + "-t", "linger.ms": 5})
    a.init_transactions(60)
    a.begin_transaction()
    for i in range(3):
        a.produce(topic, key=b"a%d" % i, value=b"txn", partition=0)
    assert a.flush(30) == 0
    for i in range(2, 5):
        plain.produce(topic, key=b"k%d" % i, value=b"plain", partition=0)
    assert plain.flush(30) == 0

    assert watermarks(b, topic, 0, "read_committed") == (0, 2), "ListOffsets(read_committed) is the LSO"
    assert watermarks(b, topic, 0, "read_uncommitted") == (0, 8), "ListOffsets(read_uncommitted) is the HW"
    f = fetch_raw(b, topic, 0, 2, isolation=1)
    assert (f["error"], f["high_watermark"], f["last_stable_offset"], f["batches"]) == (0, 8, 2, []), f

    c = consumer(b, **RC)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        before, eof = read_until(c, lambda got, eof: eof is not None and len(got) >= 2, 30)
        assert before == [(0, b"k0"), (1, b"k1")] and eof == 2, (before, eof)
        assert c.position([TopicPartition(topic, 0)])[0].offset == 2, "position past the LSO"
        # Nothing past the LSO while A is open (bounded look).
        more, _ = read_until(c, lambda got, eof: False, 2)
        assert more == [], "read_committed consumer read past the LSO: %r" % more
        a.commit_transaction(30)
        after, eof = read_until(c, lambda got, eof: len(got) >= 6 and eof is not None, 30)
        assert after == [(2, b"a0"), (3, b"a1"), (4, b"a2"), (5, b"k2"), (6, b"k3"), (7, b"k4")], after
        assert eof == 9, "end of partition after the commit marker: %r" % eof
    finally:
        c.close()
    assert watermarks(b, topic, 0, "read_committed") == (0, 9)


def read_until(c, done, timeout):
    """Consumes until done(records, eof_offset) or timeout; returns
    ([(offset, key)], the offset of the last end-of-partition event or None)."""
    got, eof = [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(got, eof):
        for m in c.consume(100, 0.2):
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof = m.offset()
                continue
            eof = None
            got.append((m.offset(), m.key()))
    return got, eof


# ---------------------------------------------------------------- 5. fencing

def fenced_error(fn):
    """The KafkaError fn raised (None if it returned)."""
    try:
        fn()
    except KafkaException as e:
        return e.args[0]
    return None


def test_fencing(target):
    """A second producer's init_transactions with the same transactional.id
    fences the first and aborts its open transaction: the first producer's
    next produce and its commit fail with the fatal _FENCED error (Kafka:
    INVALID_PRODUCER_EPOCH on Produce and EndTxn v1, which librdkafka raises as
    fatal _FENCED), in both orders (produce then commit; commit at once).
    read_committed sees only the second producer's records."""
    b = target.bootstrap
    topic = unique_topic("txn-fence")
    create_topic(b, topic, 2)
    for partition, send_first in ((0, True), (1, False)):
        tid = "%s-t%d" % (topic, partition)
        zombie = Producer({"bootstrap.servers": b, "transactional.id": tid, "linger.ms": 5})
        zombie.init_transactions(60)
        zombie.begin_transaction()
        for i in range(3):
            zombie.produce(topic, key=b"z%d" % i, value=b"zombie", partition=partition)
        assert zombie.flush(30) == 0
        fresh = Producer({"bootstrap.servers": b, "transactional.id": tid, "linger.ms": 5})
        fresh.init_transactions(60)
        if send_first:
            def send():
                zombie.produce(topic, key=b"z3", value=b"zombie", partition=partition)
                zombie.flush(30)
            err = fenced_error(send)
            assert err is None or (err.code() == KafkaError._FENCED and err.fatal()), err
        err = fenced_error(lambda: zombie.commit_transaction(30))
        assert err is not None, "the fenced producer committed"
        assert err.code() == KafkaError._FENCED and err.fatal(), "commit after fencing: %s" % err
        fresh.begin_transaction()
        for i in range(3):
            fresh.produce(topic, key=b"n%d" % i, value=b"new", partition=partition)
        fresh.commit_transaction(30)
    rc = consume_all(b, topic, 2, **RC)
    ru = consume_all(b, topic, 2, **RU)
    for partition in (0, 1):
        assert [k for _o, k in keyed(rc[partition])] == [b"n0", b"n1", b"n2"], rc[partition]
        assert [k for _o, k in keyed(ru[partition])] == [b"z0", b"z1", b"z2", b"n0", b"n1", b"n2"], ru[partition]


# ---------------------------------------------------------------- 6. transaction timeout

TXN_TIMEOUT_MS = 5000
ABORT_BOUND_S = 30


def test_transaction_timeout_aborts(target, procs, tmp_path):
    """A producer with transaction.timeout.ms=5000 opens a transaction, writes
    3 records and is SIGKILLed: the coordinator aborts the transaction on its
    own (Kafka: within the timeout plus
    transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s), the
    LSO moves past it, and read_committed sees the records written after it
    and none of the dead producer's."""
    b = target.bootstrap
    topic = unique_topic("txn-timeout")
    create_topic(b, topic, 1)
    with open(tmp_path / "open.stderr", "wb") as err:
        p = spawn(procs, APP + ["open", b, topic, topic + "-t", "3", str(TXN_TIMEOUT_MS)],
                  stdout=subprocess.PIPE, stderr=err, text=True)
    line = p.stdout.readline().strip()
    assert line.startswith("OPEN "), "%r\n%s" % (line, (tmp_path / "open.stderr").read_text())
    first = int(line.split()[1])
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    killed = time.monotonic()
    plain = producer(b)
    for i in range(3):
        plain.produce(topic, key=b"k%d" % i, value=b"after", partition=0)
    assert plain.flush(30) == 0
    assert watermarks(b, topic, 0, "read_committed")[1] == first, "LSO while the transaction is open"
    wait_until(lambda: watermarks(b, topic, 0, "read_committed")[1] > first + 5, ABORT_BOUND_S,
               interval=0.5, what="the coordinator to abort the timed-out transaction (LSO past it)")
    print("aborted about %.1fs after the producer died" % (time.monotonic() - killed))
    rc = consume_all(b, topic, 1, **RC)[0]
    assert keyed(rc) == [(first + 3 + i, b"k%d" % i) for i in range(3)], rc
    ru = consume_all(b, topic, 1, **RU)[0]
    assert [k for _o, k in keyed(ru)] == [b"o0", b"o1", b"o2", b"k0", b"k1", b"k2"], ru
    f = fetch_raw(b, topic, 0, 0, isolation=1)
    assert [first_off for _pid, first_off in f["aborted"]] == [first], f["aborted"]
    markers = [x for x in f["batches"] if x["attributes"] & CONTROL]
    assert [[key for _o, _t, key, _v in m["records"]] for m in markers] == [[ABORT_MARKER]], markers


# ---------------------------------------------------------------- 7. kafka-python

def test_kafka_python_commit_and_abort(target):
    """kafka-python's transactional KafkaProducer: an aborted transaction
    (records and offsets sent with send_offsets_to_transaction) and a
    committed one; kafka-python's read_committed consumer sees only the
    committed records, read_uncommitted both; the group offset is the
    committed transaction's."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    b = target.bootstrap
    topic = unique_topic("txn-kpy")
    create_topic(b, topic, 1)
    group = topic + "-g"
    p = KafkaProducer(bootstrap_servers=b, transactional_id=topic + "-t")
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, key=b"a%d" % i, value=b"aborted", partition=0)
        p.flush(30)
        p.send_offsets_to_transaction({KTP(topic, 0): OffsetAndMetadata(100, "", -1)}, group)
        p.abort_transaction()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, key=b"c%d" % i, value=b"committed", partition=0)
        p.send_offsets_to_transaction({KTP(topic, 0): OffsetAndMetadata(7, "", -1)}, group)
        p.commit_transaction()
    finally:
        p.close(timeout=10)

    def read(isolation):
        c = KafkaConsumer(bootstrap_servers=b, isolation_level=isolation, enable_auto_commit=False,
                          group_id=None)
        try:
            tp = KTP(topic, 0)
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            got = []
            deadline = time.monotonic() + 30
            while c.position(tp) < end:
                assert time.monotonic() < deadline, "kafka-python read timed out at %d of %d" % (c.position(tp), end)
                for recs in c.poll(timeout_ms=500).values():
                    got.extend((r.offset, r.key) for r in recs)
            return end, got
        finally:
            c.close()

    aborted = [(i, b"a%d" % i) for i in range(3)]
    committed = [(4 + i, b"c%d" % i) for i in range(3)]
    assert read("read_committed") == (8, committed)
    assert read("read_uncommitted") == (8, aborted + committed)
    assert committed_offsets(b, group, topic, 1) == {0: 7}


# ---------------------------------------------------------------- 8. Java client, kafka-transactions

JAVA_PAUSE_MS = 20  # TxnCopy's processing time per batch, with its records in the log


def java_app(procs, bootstrap, src, dst, group, txn_id, log_path, kill_after=None, kill_delay=0.0):
    return App(procs, java_cmd("TxnCopy", bootstrap, src, dst, group, txn_id, BATCH, APP_BOUND_S, JAVA_PAUSE_MS),
               log_path, kill_after, kill_delay)


def test_java_copy_killed(target, procs, tmp_path):
    """The Java client's consume-transform-produce (TxnCopy: KafkaProducer
    transactions, sendOffsetsToTransaction with consumer.groupMetadata())
    SIGKILLed twice and restarted: the output read_committed is exactly the
    input transformed, and the group offsets are the input's ends."""
    if not (JARS / "brook-interop.jar").exists():
        pytest.fail("%s missing: run ci/setup.sh" % (JARS / "brook-interop.jar"))
    b = target.bootstrap
    src, dst = unique_topic("txn-jin"), unique_topic("txn-jout")
    n = 1800
    expected = produce_input(b, src, n)
    create_topic(b, dst, PARTITIONS)
    group, txn_id = src + "-g", src + "-t"
    rng = random.Random(SEED + 1)
    runs = kill_and_restart(lambda after, delay: java_app(procs, b, src, dst, group, txn_id, tmp_path / "java.stderr",
                                                          after, delay), 2, rng, 300, 600)
    report_runs(runs)
    check_copy(b, src, dst, group, expected)


def test_java_fencing(target):
    """Two Java KafkaProducers with one transactional.id: the second's
    initTransactions aborts the first's transaction. The zombie's send fails
    (Kafka 4.4: InvalidProducerEpochException, the broker's
    INVALID_PRODUCER_EPOCH), its commit fails, its abort and a commit without
    a send before it fail with ProducerFencedException; read_committed sees
    only the new instance's records."""
    b = target.bootstrap
    topic = unique_topic("txn-jfence")
    create_topic(b, topic, 2)
    lines, stderr, rc = run_java("TxnFence", b, topic, topic + "-t", timeout=120)
    res = {}
    for l in lines:
        s, what, rest = (l + " ").split(" ", 2)
        res[(s, what)] = rest.strip()
    why = explain(lines, stderr)
    assert rc == 0 and res.get(("send", "NEW_COMMIT")) == "OK" and res.get(("commit", "NEW_COMMIT")) == "OK", why
    fenced = "org.apache.kafka.common.errors.ProducerFencedException"
    epoch = "org.apache.kafka.common.errors.InvalidProducerEpochException"
    assert res[("send", "ZOMBIE_SEND")].split()[0] in (epoch, fenced), why
    assert res[("send", "ZOMBIE_COMMIT")].split()[0] in (epoch, fenced), why
    assert res[("send", "ZOMBIE_ABORT")].split()[0] == fenced, why
    assert res[("commit", "ZOMBIE_COMMIT")].split()[0] == fenced, why
    rc_recs = consume_all(b, topic, 2, **RC)
    for partition in (0, 1):
        assert [k for _o, k in keyed(rc_recs[partition])] == [b"n0", b"n1", b"n2"], rc_recs[partition]


def kafka_transactions(bootstrap, *args):
    r = subprocess.run([str(KAFKA_TOOL), "kafka-transactions", "--bootstrap-server", bootstrap] + list(args),
                       capture_output=True, timeout=90, env=TOOL_ENV, text=True)
    assert r.returncode == 0, "kafka-transactions %s: exit %d\n%s\n%s" % (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def table_rows(text):
    """A kafka-transactions table: [dict(header -> value)]. Every cell,
    padded with spaces, ends with a tab (Kafka 4.4's TransactionsCommand)."""
    rows = [[c.strip() for c in l.split("\t")[:-1]] for l in text.splitlines() if l.strip()]
    assert rows and all(len(r) == len(rows[0]) for r in rows), "not a table:\n%s" % text
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_kafka_transactions_tool(target):
    """Kafka's kafka-transactions tool: `list` names an open transaction's id
    with state Ongoing; `describe` shows its producer id, state Ongoing and the
    partition it wrote; after the commit, state CompleteCommit and no
    partitions."""
    b = target.bootstrap
    topic = unique_topic("txn-tool")
    create_topic(b, topic, 1)
    tid = topic + "-t"
    p = Producer({"bootstrap.servers": b, "transactional.id": tid, "linger.ms": 5})
    p.init_transactions(60)
    p.begin_transaction()
    p.produce(topic, key=b"k", value=b"v", partition=0)
    assert p.flush(30) == 0
    pid = fetch_raw(b, topic, 0, 0, isolation=0)["batches"][0]["producer_id"]

    listed = {r.get("TransactionalId"): r for r in table_rows(kafka_transactions(b, "list"))}
    assert tid in listed, "list does not name %s:\n%r" % (tid, listed)
    assert listed[tid].get("TransactionState") == "Ongoing" and listed[tid].get("ProducerId") == str(pid), listed[tid]

    d = table_rows(kafka_transactions(b, "describe", "--transactional-id", tid))
    assert len(d) == 1, d
    assert (d[0].get("TransactionalId"), d[0].get("ProducerId"), d[0].get("TransactionState")) == (
        tid, str(pid), "Ongoing"), d[0]
    assert d[0].get("TopicPartitions") == "%s-0" % topic, d[0]

    p.commit_transaction(30)
    d = table_rows(kafka_transactions(b, "describe", "--transactional-id", tid))
    assert len(d) == 1 and d[0].get("TransactionState") == "CompleteCommit", d
    assert d[0].get("TopicPartitions", "") == "", d[0]


# ---------------------------------------------------------------- 8b. KIP-890

TV2_TXNS = 20
TV2_TXN_SIZE = 100


def test_java_uses_transaction_version_2(target):
    """ApiVersions finalizes `transaction.version` 2, as Kafka 4 does, so the
    Java 4.4 client runs transaction version 2: it sends no
    AddPartitionsToTxn (the partition leader adds the partition on the first
    Produce v12 of each transaction) and every EndTxn v5 bumps the producer
    epoch. After InitProducerId (epoch 0) and 20 committed transactions,
    `kafka-transactions describe` shows epoch 20, and read_committed reads
    each of the 2000 records."""
    b = target.bootstrap
    topic = unique_topic("txn-tv2")
    create_topic(b, topic, 1)
    lines, err, rc = run_java("TransactionBench", b, topic, TV2_TXNS * TV2_TXN_SIZE, 100, TV2_TXN_SIZE)
    result = [l for l in lines if l.startswith("RESULT ")]
    assert rc == 0 and result and " transactions=%d " % TV2_TXNS in result[0], explain(lines, err)
    d = table_rows(kafka_transactions(b, "describe", "--transactional-id", "bench-%s-%d" % (topic, TV2_TXN_SIZE)))
    assert len(d) == 1 and d[0].get("TransactionState") == "CompleteCommit", d
    assert d[0].get("ProducerEpoch") == str(TV2_TXNS), "epoch not bumped per transaction: %r" % d[0]
    got = consume_all(b, topic, 1, **RC)[0]
    assert len(got) == TV2_TXNS * TV2_TXN_SIZE, "read_committed read %d records" % len(got)
    assert all(v == bytes(ord("a") + i % 26 for i in range(100)) for _o, _k, v, _t in got)


def test_stray_transactional_batch_refused(target):
    """KIP-890 part 1: a transactional batch for a partition the producer did
    not add to its transaction (a Produce below v12, so the leader only
    verifies) is refused with INVALID_TXN_STATE, nothing is appended, and no
    transaction is opened that nobody would end: the last stable offset stays
    where it was. The same producer's batch after AddPartitionsToTxn is
    appended."""
    b = target.bootstrap
    topic = unique_topic("txn-stray")
    create_topic(b, topic, 1)
    tid = topic + "-t"
    p = Producer({"bootstrap.servers": b, "transactional.id": tid})
    p.init_transactions(60)  # creates the id; the raw producer below takes it over
    with kp.Conn(b) as c:
        err, pid, epoch = c.init_producer_id(transactional_id=tid)
        assert err == 0, err
        batch = kp.encode_batch([(b"k", b"stray")], producer_id=pid, producer_epoch=epoch,
                                base_sequence=0, attributes=0x10)
        err, _ = c.produce(topic, 0, batch, version=8, transactional_id=tid)
        assert err == 48, "stray transactional batch: error %d, want INVALID_TXN_STATE (48)" % err
        assert watermarks(b, topic, 0, "read_uncommitted") == (0, 0)
    q = Producer({"bootstrap.servers": b, "transactional.id": tid, "linger.ms": 5})
    q.init_transactions(60)
    q.begin_transaction()
    q.produce(topic, key=b"k", value=b"added", partition=0)
    q.commit_transaction(30)
    assert [(k, v) for _o, k, v, _t in consume_all(b, topic, 1, **RC)[0]] == [(b"k", b"added")]


# ---------------------------------------------------------------- 9. Kafka Streams exactly_once_v2

WORDS = ["w%02d" % i for i in range(12)]
STREAMS_N = 2400
STREAMS_RATE = 120      # input records per second
STREAMS_KILLS = 3


class OutputReader:
    """A read_committed consumer of the word counts, in a thread, for the
    whole test: {word: [count, ...]} in the order read, to pace the kills and
    know when the last run is done (the check reads the output afresh)."""

    def __init__(self, bootstrap, topic, partitions):
        self.counts = defaultdict(list)
        self.n = 0
        self.lock = threading.Lock()
        self.error = None
        self.stop = threading.Event()
        self.c = consumer(bootstrap, **RC, **{"enable.partition.eof": False})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self.stop.is_set():
                for m in self.c.consume(500, 0.2):
                    if m.error() is not None:
                        raise AssertionError("output consumer: %s" % m.error())
                    (count,) = struct.unpack(">q", m.value())
                    with self.lock:
                        self.counts[m.key().decode()].append(count)
                        self.n += 1
        except BaseException as e:  # reported by close()
            self.error = e

    def reached(self, truth):
        """Every word's latest count is at least its true count."""
        with self.lock:
            return all(self.counts.get(w, [0])[-1] >= n for w, n in truth.items())

    def close(self):
        self.stop.set()
        self.t.join(10)
        self.c.close()
        if self.error is not None:
            raise self.error


def test_streams_eos_word_count(target, procs, tmp_path):
    """Kafka Streams (exactly_once_v2, a groupByKey().count() store with its
    changelog topic, record cache off) counts words while the input arrives,
    SIGKILLed three times while it processes and restarted on the same state
    directory: read committed, each word's count updates are exactly 1, 2,
    ..., its true count -- no update lost, none repeated."""
    if not (JARS / "brook-interop.jar").exists():
        pytest.fail("%s missing: run ci/setup.sh" % (JARS / "brook-interop.jar"))
    b = target.bootstrap
    src, dst = unique_topic("txn-words"), unique_topic("txn-counts")
    create_topic(b, src, PARTITIONS)
    create_topic(b, dst, PARTITIONS)
    argv = java_cmd("StreamsEosWordCount", b, src + "-app", src, dst, tmp_path / "state", 120)
    rng = random.Random(SEED + 2)
    words = [WORDS[rng.randrange(len(WORDS))] for _ in range(STREAMS_N)]
    truth = {w: words.count(w) for w in set(words)}
    reader = OutputReader(b, dst, PARTITIONS)
    feeder = threading.Thread(target=feed, args=(b, src, words), daemon=True)
    runs = [App(procs, argv, tmp_path / "streams.stderr")]
    feeder.start()
    try:
        for k in range(STREAMS_KILLS):
            # Killed while it processes: it has reached RUNNING, and has
            # committed its share of the input (or 100 updates more than when it started).
            app, at, base = runs[-1], (k + 1) * STREAMS_N // (STREAMS_KILLS + 2), reader.n
            wait_until(lambda: (app.saw("STATE REBALANCING RUNNING") and reader.n >= max(at, base + 100))
                       or app.proc.poll() is not None, 60, what="streams run %d processing" % (k + 1))
            assert app.proc.poll() is None, "streams exited %s:\n%s" % (app.proc.returncode, app.explain())
            time.sleep(rng.uniform(0, 0.3))
            app.kill()
            print("streams run %d killed after %d count updates read" % (k + 1, reader.n))
            runs.append(App(procs, argv, tmp_path / "streams.stderr"))
        app = runs[-1]
        feeder.join(60)
        assert not feeder.is_alive(), "input not written"
        # The last run restores its state and runs; every final count is out.
        wait_until(lambda: (app.saw("STATE REBALANCING RUNNING") and reader.reached(truth))
                   or app.proc.poll() is not None, 90, what="the last run running and every final count read")
        assert app.proc.poll() is None, "streams exited %s:\n%s" % (app.proc.returncode, app.explain())
        app.proc.send_signal(signal.SIGTERM)
        app.proc.wait(30)
        app.reader.join(10)
    finally:
        reader.close()
    assert app.saw("CLOSED"), "streams did not close cleanly on SIGTERM:\n%s" % app.explain()
    counts = defaultdict(list)
    for recs in consume_all(b, dst, PARTITIONS, timeout=60, **RC).values():
        for _off, key, value, _ts in recs:
            counts[key.decode()].append(struct.unpack(">q", value)[0])
    bad = {w: count_divergence(counts.get(w, []), n) for w, n in truth.items()}
    bad = {w: d for w, d in bad.items() if d}
    assert not bad and set(counts) == set(truth), (
        "count updates per word, read committed, are not 1, 2, ..., n: %r; words read %r\n%s"
        % (bad, sorted(counts), app.explain()))


def count_divergence(got, n):
    """None if got == [1, ..., n], else where and how it differs."""
    if got == list(range(1, n + 1)):
        return None
    at = next((i for i, c in enumerate(got) if c != i + 1), len(got))
    if at == len(got) or at >= n:
        return "%d updates for %d records, the last %r" % (len(got), n, got[-1:])
    return "%d updates for %d records; update %d on: %r" % (len(got), n, at + 1, got[max(0, at - 2):at + 6])


def feed(bootstrap, topic, words):
    """Writes the words (key = value = word) at STREAMS_RATE per second."""
    p = producer(bootstrap)
    t0 = time.monotonic()
    for i, w in enumerate(words):
        p.produce(topic, key=w.encode(), value=w.encode())
        p.poll(0)
        ahead = (i + 1) / STREAMS_RATE - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    p.flush(30)


# ---------------------------------------------------------------- 10. cluster: coordinator killed

FIND_COORDINATOR = 10
KEY_TYPE_TRANSACTION = 1


def find_txn_coordinator(bootstrap, txn_id):
    """FindCoordinator v1 key_type 1: the node id of txn_id's coordinator,
    None while there is none (an error code)."""
    with kp.Conn(bootstrap) as c:
        r = c.request(FIND_COORDINATOR, 1, kp.string(txn_id) + kp.i8(KEY_TYPE_TRANSACTION))
    r.i32()  # throttle
    err = r.i16()
    r.string()  # error message
    node = r.i32()
    return node if err == 0 else None


@pytest.mark.skipif(ON_KAFKA, reason="needs a three-broker cluster; the Apache Kafka fixture is one node")
@pytest.mark.parametrize("client", ["confluent-kafka", "java"])
def test_copy_app_coordinator_killed(tmp_path, request, procs, client):
    """Three brokers, topics and __transaction_state with three replicas: the
    consume-transform-produce application runs while the broker that is its
    transaction coordinator is SIGKILLed (another broker takes over the
    transaction state) and later restarted; the output read_committed is
    exactly the input transformed. librdkafka runs transaction version 1
    (leaders verify its partitions with the coordinator, on another broker
    through AddPartitionsToTxn v5), the Java client version 2 (leaders add
    them; every commit bumps the epoch)."""
    run_app = copy_app if client == "confluent-kafka" else java_app
    with cluster(tmp_path, request) as c:
        via = c.node(1)
        src, dst = unique_topic("txn-cin"), unique_topic("txn-cout")
        cluster_create(c, src, PARTITIONS, via)
        cluster_create(c, dst, PARTITIONS, via)
        expected = produce_input(c.bootstrap, src, create=False)
        group, txn_id = src + "-g", src + "-t"
        app = Supervisor(lambda k: run_app(procs, c.bootstrap, src, dst, group, txn_id, tmp_path / "app.stderr"))
        app.wait_committed(800, 90)
        coord = find_txn_coordinator(via.bootstrap, txn_id)
        assert coord in (1, 2, 3), "FindCoordinator(transaction) for %s: %r" % (txn_id, coord)
        md = replicas_of(c, "__transaction_state")
        assert md and all(len(r) == 3 for r in md.values()), "__transaction_state replicas: %r" % md
        victim = c.node(coord)
        victim.kill()
        survivor = next(x for x in c.brokers if x is not victim)
        wait_until(lambda: find_txn_coordinator(survivor.bootstrap, txn_id) not in (None, coord), 30,
                   what="a new transaction coordinator for %s" % txn_id)
        app.wait_committed(1800, 90)
        victim.start()
        app.finish(APP_BOUND_S)
        report_runs(app.runs)
        check_copy(c.bootstrap, src, dst, group, expected)


def replicas_of(c, topic):
    """{partition: replicas} of a topic (internal ones included), or None."""
    md = admin(c.bootstrap_node().bootstrap).list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p.id: list(p.replicas) for p in t.partitions.values()}
