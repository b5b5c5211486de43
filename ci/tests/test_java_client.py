"""The Java reference client, kafka-clients 4.4.0, against brook, as an unmodified
Java application uses it: the default producer (idempotent, acks=all) with every
codec, KafkaConsumer in a classic-protocol group (three members, one SIGKILLed,
the survivors take over; commitSync/commitAsync, seek, offsetsForTimes,
pause/resume), the AdminClient calls, and the feature brook lacks (the KIP-848
consumer protocol), which must fail at once with Kafka's error (transactions
are in test_transactions.py); plus
static membership, KIP-74 fetch sizes, auto-creation, an oversized record, and
the idempotent producer across a broker SIGKILL + restart.

The Java programs are in ci/java/src/main/java/dev/brook/interop (built by
ci/setup.sh into ci/.lab/jars/brook-interop.jar); they check every record
(content, headers, order per partition, no loss, no duplicates, each at its
acknowledged offset) and print one line per result, which the tests parse.
One JVM per scenario group, and one broker for the module with
group.initial.rebalance.delay.ms = 0 (the group tests need no 3 s wait)."""

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict

import pytest

import kproto
from conftest import REPO, Broker, running
from util import (assert_codec, check_keyed, consume_all, create_topic, produce_keyed, producer, spawn, unique_topic,
                  wait_until)

JARS = REPO / "ci" / ".lab" / "jars"
LOG4J = REPO / "ci" / "java" / "log4j2-tools.properties"
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_PARTITIONS = 12
CODEC_N = 10_000
MANY_PARTITIONS = 64
MANY_N = 20_000
FAIL_FAST_BOUND_S = 20      # "fails fast": the client defaults would block 60 s
SCENARIO_BOUND_S = 30       # the Java program gives up (HANG) after this


def java_cmd(main, *args):
    return ["java", "-XX:TieredStopAtLevel=1", "-Dlog4j2.configurationFile=%s" % LOG4J,
            "-cp", str(JARS / "*"), "dev.brook.interop." + main] + [str(a) for a in args]


def run_java(main, *args, timeout=150, env=None):
    """Runs a Java program to completion; returns (stdout lines, stderr text)."""
    if not (JARS / "brook-interop.jar").exists():
        pytest.fail("%s missing: run ci/setup.sh" % (JARS / "brook-interop.jar"))
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.monotonic()
    try:
        r = subprocess.run(java_cmd(main, *args), capture_output=True, timeout=timeout, env=e, text=True)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError("%s did not finish within %ds\nstdout:\n%s\nstderr:\n%s" % (
            main, timeout, _text(ex.stdout)[-4000:], _text(ex.stderr)[-4000:]))
    print("%s %s: exit %d after %.1fs" % (main, " ".join(map(str, args[1:])), r.returncode, time.monotonic() - t0))
    warns = [l for l in r.stderr.splitlines() if "] WARN " in l or "] ERROR " in l]
    if warns:
        print("  client log, %d WARN/ERROR lines, e.g.:\n  %s" % (len(warns), "\n  ".join(w[:300] for w in warns[:8])))
    return r.stdout.splitlines(), r.stderr, r.returncode


def _text(b):
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def explain(lines, stderr):
    return "stdout:\n%s\nstderr (tail):\n%s" % ("\n".join(lines[-60:]), stderr[-6000:])


class ProduceStream:
    """The ProduceStream program (a default KafkaProducer: idempotent,
    acks=all) sending `n` records to `topic` at `rate`/s, its output read as it
    runs: `progress` is how many are acknowledged so far. `finish` waits for
    its end, checks that it exited cleanly and no send failed, and returns
    {key: (partition, offset)} of the acknowledged records, each once."""

    def __init__(self, procs, bootstrap, topic, n, rate, tmp_path):
        if not (JARS / "brook-interop.jar").exists():
            pytest.fail("%s missing: run ci/setup.sh" % (JARS / "brook-interop.jar"))
        self.n, self.stderr_path = n, tmp_path / "producer.stderr"
        self.err = open(self.stderr_path, "wb")
        self.p = spawn(procs, java_cmd("ProduceStream", bootstrap, topic, n, rate), stdout=subprocess.PIPE,
                       stderr=self.err, text=True)
        self.lines, self.progress = [], 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("PROGRESS "):
                self.progress = int(line.split()[2])

    def wait_progress(self, count, timeout):
        """Until `count` records are acknowledged; the program must still run."""
        wait_until(lambda: self.progress >= count or self.p.poll() is not None, timeout,
                   what="%d records acknowledged" % count)
        assert self.p.poll() is None, "producer finished too early; make it slower"

    def finish(self, timeout=150):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("producer still running after %ds; last lines %r" % (timeout, self.lines[-5:]))
        self.reader.join(10)
        self.err.close()
        stderr = self.stderr_path.read_text(errors="replace")
        lines = self.lines
        assert self.p.returncode == 0 and lines and lines[-1].startswith("END "), "exit %s\n%s" % (
            self.p.returncode, explain(lines, stderr))
        errs = [l for l in lines if l.startswith("ERR ")]
        assert not errs, "%d sends failed, e.g. %r" % (len(errs), errs[:5])
        acked = {}
        for l in lines:
            if l.startswith("ACK "):
                _, i, part, off = l.split()
                key = ("k%s" % i).encode()
                assert key not in acked, "acknowledged twice: %s" % l
                acked[key] = (int(part), int(off))
        assert len(acked) == self.n, "%d of %d acknowledged" % (len(acked), self.n)
        return acked


@pytest.fixture(scope="module")
def jbroker(request, tmp_path_factory):
    """One broker for the module (tests use unique topics and groups), with the
    initial rebalance delay off, set through the TOML config file."""
    d = tmp_path_factory.mktemp("brook-java")
    cfg = d / "brook.toml"
    cfg.write_text('"group.initial.rebalance.delay.ms" = 0\n')
    yield from running(request, Broker(d / "broker", extra_args=["--config", str(cfg)]), request.module)


# ---------------------------------------------------------------- producer

@pytest.fixture(scope="module")
def produced(jbroker):
    """One JVM: for each codec a 12-partition topic with 10k keyed records with
    headers from a default KafkaProducer, read back and checked record by record;
    plus a 64-partition topic with 20k records (default codec)."""
    base = unique_topic("java-prod")
    topics = {c: "%s-%s" % (base, c) for c in CODECS}
    topics["many"] = "%s-many" % base
    specs = ["%s:%d:%s:%d" % (topics[c], CODEC_PARTITIONS, c, CODEC_N) for c in CODECS]
    specs.append("%s:%d:default:%d" % (topics["many"], MANY_PARTITIONS, MANY_N))
    lines, stderr, rc = run_java("ProducerRoundtrip", jbroker.bootstrap, *specs, timeout=240)
    results = {}
    for line in lines:
        parts = line.split(" ", 2)
        if parts[0] in ("DONE", "FAIL"):
            results[parts[1]] = line
    return topics, results, lines, stderr


def stored_batches(bootstrap, topic, partition):
    """Every batch header of a partition (raw Fetch from offset 0 to the end)."""
    out = []
    off = 0
    with kproto.Conn(bootstrap) as c:
        for _ in range(10_000):
            f = c.fetch(topic, partition, off, max_wait_ms=0, min_bytes=0, max_bytes=1024 * 1024)
            assert f["error"] == 0, f
            batches = kproto.decode_batches(f["records"])
            if not batches:
                return out
            out.extend(batches)
            off = batches[-1]["base_offset"] + batches[-1]["last_offset_delta"] + 1
    raise AssertionError("too many fetches")


def check_idempotent_batches(bootstrap, topic, partitions):
    """The producer really was idempotent: one producer id on every batch, and
    per partition the sequence numbers run on from 0 without a gap."""
    pids = set()
    for p in range(partitions):
        seq = 0
        for b in stored_batches(bootstrap, topic, p):
            pids.add((b["producer_id"], b["producer_epoch"]))
            assert b["base_sequence"] == seq, "partition %d batch at %d: base_sequence %d, expected %d" % (
                p, b["base_offset"], b["base_sequence"], seq)
            seq += b["count"]
    assert len(pids) == 1 and min(pids)[0] >= 0 and min(pids)[1] >= 0, "producer ids/epochs on batches: %r" % pids


@pytest.mark.parametrize("codec", CODECS)
def test_default_producer_codec(jbroker, produced, codec):
    topics, results, lines, stderr = produced
    topic = topics[codec]
    assert results.get(topic, "").startswith("DONE"), "%s\n%s" % (results.get(topic), explain(lines, stderr))
    assert_codec(jbroker.bootstrap, topic, CODEC_PARTITIONS, codec)
    check_idempotent_batches(jbroker.bootstrap, topic, CODEC_PARTITIONS)


def test_default_producer_many_partitions(jbroker, produced):
    topics, results, lines, stderr = produced
    topic = topics["many"]
    assert results.get(topic, "").startswith("DONE"), "%s\n%s" % (results.get(topic), explain(lines, stderr))
    check_idempotent_batches(jbroker.bootstrap, topic, MANY_PARTITIONS)


# ---------------------------------------------------------------- consumer API

def test_consumer_apis(jbroker):
    """subscribe in a classic group, commitSync / commitAsync, committed, seek,
    offsetsForTimes, pause / resume, a new member resuming at the commits."""
    topic = unique_topic("java-capi")
    lines, stderr, rc = run_java("ConsumerApis", jbroker.bootstrap, topic, topic + "-g", timeout=150)
    assert rc == 0 and lines and lines[-1] == "PASS", explain(lines, stderr)


# ---------------------------------------------------------------- group: a member killed

class Member:
    """A GroupMember JVM; a thread parses its stdout as it comes."""

    def __init__(self, procs, bootstrap, group, topic, name, logdir, assignor=None):
        self.name = name
        self.err_path = logdir / ("%s.stderr" % name)
        self.lock = threading.Lock()
        self.assignments = []     # (monotonic, [partitions]) per ASSIGNED
        self.records = []         # (p, offset, i)
        self.committed = {}       # p -> next offset
        self.commit_failures = []
        self.closed = False
        self.lines = 0
        with open(self.err_path, "wb") as err:
            self.proc = spawn(procs, java_cmd("GroupMember", bootstrap, group, topic, name, 150,
                                                       *([assignor] if assignor else [])),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if not parts:
                continue
            with self.lock:
                self.lines += 1
                kind = parts[0]
                if kind == "REC":
                    self.records.append((int(parts[1]), int(parts[2]), int(parts[3])))
                elif kind == "ASSIGNED":
                    ps = [] if parts[1] == "-" else [int(x) for x in parts[1].split(",")]
                    self.assignments.append((time.monotonic(), ps))
                elif kind == "COMMITTED":
                    for pc in parts[1].split(","):
                        p, off = pc.split(":")
                        self.committed[int(p)] = max(self.committed.get(int(p), 0), int(off))
                elif kind == "COMMITFAILED":
                    self.commit_failures.append(line.strip())
                elif kind == "CLOSED":
                    self.closed = True

    def assignment(self):
        with self.lock:
            return self.assignments[-1][1] if self.assignments else None

    def stderr_tail(self):
        try:
            return self.err_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def summary(self):
        with self.lock:
            return "%s: alive=%s assignment=%r records=%d committed=%r" % (
                self.name, self.proc.poll() is None, self.assignments[-1][1] if self.assignments else None,
                len(self.records), dict(sorted(self.committed.items())))


def ends_of(acked):
    ends = defaultdict(int)
    for p, off in acked.values():
        ends[p] = max(ends[p], off + 1)
    return dict(ends)


ASSIGNORS = {
    "default": None,  # [RangeAssignor, CooperativeStickyAssignor]: range, eager rebalances
    "cooperative-sticky": "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
}


@pytest.mark.parametrize("assignor", list(ASSIGNORS))
def test_group_member_killed_survivors_take_over(jbroker, procs, tmp_path, assignor):
    """Three KafkaConsumer processes in one classic group share six partitions
    and commit everything they read; one is SIGKILLed; after its session
    times out the two survivors are given its partitions and read what is
    produced next. Every record is read exactly once (all was committed before
    the kill), in offset order per partition. With the client's default
    assignors (range, eager) and with cooperative-sticky (incremental)."""
    b = jbroker.bootstrap
    topic = unique_topic("java-grp")
    group = topic + "-g"
    partitions = 6
    n1, n2 = 3000, 3000
    create_topic(b, topic, partitions)
    acked = dict(produce_keyed(producer(b), topic, n1).acked)
    ends1 = ends_of(acked)
    members = [Member(procs, b, group, topic, "member-%d" % k, tmp_path, ASSIGNORS[assignor]) for k in range(3)]

    def state():
        return "\n".join(m.summary() for m in members) + "\n" + "\n".join(
            "%s stderr:\n%s" % (m.name, m.stderr_tail()) for m in members)

    def all_read_and_committed(ms, ends):
        asg = [m.assignment() for m in ms]
        if any(a is None or not a for a in asg) or sorted(sum(asg, [])) != list(range(partitions)):
            return False
        com = {}
        for m in ms:
            with m.lock:
                for p, off in m.committed.items():
                    com[p] = max(com.get(p, 0), off)
        return all(com.get(p, 0) == ends.get(p, 0) for p in range(partitions))

    try:
        wait_until(lambda: all_read_and_committed(members, ends1), 90, interval=0.2,
                   what="three members sharing the partitions, everything read and committed")
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, state()))
    victim, survivors = members[2], members[:2]
    lost = victim.assignment()
    assert victim.proc.poll() is None, state()
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    t_kill = time.monotonic()

    acked2 = produce_keyed(producer(b), topic, n2, start=n1).acked
    acked.update(acked2)
    ends2 = ends_of(acked)
    try:
        wait_until(lambda: all_read_and_committed(survivors, ends2), 90, interval=0.2,
                   what="the two survivors owning all partitions, everything read and committed")
    except AssertionError as e:
        raise AssertionError("%s\nkilled %s (had %r)\n%s" % (e, victim.name, lost, state()))
    took_over = time.monotonic() - t_kill
    for m in survivors:
        with m.lock:
            assert any(t > t_kill for t, _ in m.assignments), "%s was not reassigned after the kill\n%s" % (m.name, state())
    owners = [p for m in survivors for p in m.assignment()]
    assert set(lost) <= set(owners), state()

    for m in survivors:
        m.proc.stdin.write("stop\n")
        m.proc.stdin.flush()
        m.proc.stdin.close()
    for m in survivors:
        assert m.proc.wait(30) == 0, "%s exit %s\n%s" % (m.name, m.proc.returncode, m.stderr_tail())
        m.reader.join(10)
        assert m.closed, m.summary()

    # every record exactly once, in order per partition per member, at its acknowledged place
    by_pos = {}
    for m in members:
        last = {}
        for p, off, i in m.records:
            assert off > last.get(p, -1), "%s read %d/%d after %d" % (m.name, p, off, last.get(p))
            last[p] = off
            assert (p, off) not in by_pos, "record %d/%d read twice (%s and %s)" % (p, off, by_pos[(p, off)][1], m.name)
            by_pos[(p, off)] = (i, m.name)
    keys = {("k%d" % i).encode(): (p, off) for (p, off), (i, _) in by_pos.items()}
    missing = [k for k in acked if k not in keys]
    assert not missing, "%d records never read, e.g. %r" % (len(missing), missing[:5])
    wrong = [(k, acked[k], keys[k]) for k in acked if keys[k] != acked[k]]
    assert not wrong, "records not at their acknowledged (partition, offset): %r" % wrong[:5]
    assert len(by_pos) == n1 + n2, "read %d distinct records, produced %d" % (len(by_pos), n1 + n2)
    after = [(p, off) for m in survivors for p, off, i in m.records if p in lost and i >= n1]
    assert after, "the survivors read nothing from the killed member's partitions %r" % lost
    assert not any(m.commit_failures for m in members), [m.commit_failures for m in members]
    print("killed %s owning %r; survivors owned all partitions and read the rest %.1fs after the kill"
          % (victim.name, lost, took_over))


# ---------------------------------------------------------------- admin

def results_by_step(lines):
    """{step: its `RESULT step OK|FAIL …` line} from a multi-step Java program."""
    results = {}
    for line in lines:
        parts = line.split(" ", 3)
        if parts[0] == "RESULT":
            results[parts[1]] = line
    return results


ADMIN_STEPS = ["cluster", "topics", "describe-by-id", "create-partitions", "groups", "delete-topics"]


@pytest.fixture(scope="module")
def admin_results(jbroker):
    lines, stderr, rc = run_java("AdminOps", jbroker.bootstrap, "all", timeout=200,
                                 env={"PREFIX": unique_topic("java-admin")})
    return results_by_step(lines), lines, stderr


@pytest.mark.parametrize("step", ADMIN_STEPS)
def test_admin(admin_results, step):
    """cluster: describeCluster. topics: createTopics (and TopicExists /
    InvalidPartitions), listTopics, describeTopics. describe-by-id:
    describeTopics(TopicCollection.ofTopicIds). create-partitions: grows a topic
    with Kafka's errors for a non-growing count, an unknown topic, validateOnly,
    and the new partitions take records -- or, if brook does not list
    CreatePartitions, fails fast with UnsupportedVersionException.
    groups: listGroups, listConsumerGroups, describeConsumerGroups,
    listConsumerGroupOffsets, alterConsumerGroupOffsets, deleteConsumerGroups
    around a live classic group. delete-topics: deleteTopics."""
    results, lines, stderr = admin_results
    got = results.get(step)
    assert got == "RESULT %s OK" % step, "%s\n%s" % (got, explain([l for l in lines if step in l or "STEP" in l
                                                                  or "INFO" in l], stderr))


# ---------------------------------------------------------------- unsupported features fail fast

def fail_fast(broker, what, want):
    topic = unique_topic("java-" + what)
    lines, stderr, rc = run_java("UnsupportedFeatures", broker.bootstrap, what, topic, SCENARIO_BOUND_S,
                                 timeout=SCENARIO_BOUND_S + 60)
    res = [l for l in lines if l.startswith("RESULT ")]
    assert res, explain(lines, stderr)
    _, cls, ms, detail = (res[-1] + " ").split(" ", 3)
    print("%s: %s after %s ms: %s" % (what, cls, ms, detail))
    assert cls == want, "%s: expected %s within %ds, got %s after %s ms: %s" % (
        what, want, FAIL_FAST_BOUND_S, cls, ms, detail)
    assert int(ms) < FAIL_FAST_BOUND_S * 1000, "%s failed correctly but only after %s ms" % (what, ms)
    return int(ms), detail


def test_consumer_protocol_fails_fast(jbroker):
    """group.protocol=consumer (KIP-848) needs ConsumerGroupHeartbeat, which brook
    does not list in ApiVersions: poll() must throw UnsupportedVersionException."""
    ms, detail = fail_fast(jbroker, "consumer-protocol", "org.apache.kafka.common.errors.UnsupportedVersionException")
    assert "group.protocol=classic" in detail, detail


# ---------------------------------------------------------------- smaller behaviours

PROBES = ["auto-create", "small-fetch", "too-large", "static-membership"]


@pytest.fixture(scope="module")
def probe_results(jbroker):
    lines, stderr, rc = run_java("Probes", jbroker.bootstrap, unique_topic("java-probe"), "all", timeout=200)
    return results_by_step(lines), lines, stderr


@pytest.mark.parametrize("probe", PROBES)
def test_probe(probe_results, probe):
    """auto-create: a producer writing to a missing topic (auto.create.topics.enable).
    small-fetch: max.partition.fetch.bytes / fetch.max.bytes 1 kB below a 20 kB
    record still progress (KIP-74). too-large: a 2 MiB record fails with
    RecordTooLargeException and the producer goes on. static-membership: a
    static member (group.instance.id) closed and restarted within the session
    timeout gets its partitions back without rebalancing the other member."""
    results, lines, stderr = probe_results
    got = results.get(probe)
    assert got == "RESULT %s OK" % probe, "%s\n%s" % (got, explain(lines, stderr))


# ---------------------------------------------------------------- broker killed under the producer

def test_idempotent_producer_across_broker_kill(make_broker, procs, tmp_path):
    """A default KafkaProducer (idempotent, acks=all) keeps sending while the
    broker is SIGKILLed and restarted: its retries must neither lose nor
    duplicate anything, and no send may fail (delivery.timeout.ms is 120 s)."""
    broker = make_broker()
    b = broker.bootstrap
    topic = unique_topic("java-crash")
    partitions, n = 4, 20_000
    create_topic(b, topic, partitions)
    run = ProduceStream(procs, b, topic, n, 40, tmp_path)
    run.wait_progress(4000, 60)
    broker.restart(kill=True)
    acked = run.finish(150)
    check_keyed(consume_all(b, topic, partitions), n, acked=acked)
