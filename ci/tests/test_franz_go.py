"""franz-go (Go: kgo v1.22.3, kadm v1.20.0) against brook.

The Go side is ci/go/cmd/franz-interop (built by ci/setup.sh into
ci/.lab/bin/franz-interop). Each subcommand prints JSON lines of what it did
(records produced with their acknowledged partition/offset, records consumed,
group events, admin results); this file checks them record by record:
content, headers, order per partition, no loss, no duplicates.

- produce: franz-go's default idempotent producer with acks=all, every codec,
  keys and headers, several partitions, async (Produce + Flush) and sync
  (ProduceSync); consume: direct partitions (kgo.ConsumePartitions).
- consumer group (classic protocol, kgo.ConsumerGroup, cooperative-sticky):
  three members, one SIGKILLed mid-stream, the others take over its
  partitions; committed offsets survive a restart of the consumer and of the
  broker.
- kadm: topics, groups, committed offsets, list offsets (start/end/by time/max
  timestamp), DeleteGroup; APIs brook does not list in ApiVersions fail fast
  with the client's "unsupported" error (those it lists must work as on
  Kafka); a transaction (kgo.TransactionalID) commits.
"""

import json
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

import kproto as kp
from confluent_kafka import TopicPartition

from util import assert_codec, check_keyed, consumer, payload, unique_topic, wait_until

REPO = Path(__file__).resolve().parents[2]
FRANZ = Path(os.environ.get("FRANZ_INTEROP", REPO / "ci" / ".lab" / "bin" / "franz-interop"))
PARTITIONS = 6
N = 5000
FAST = 20.0  # "fails fast": a generous bound, Kafka answers in milliseconds

# Kafka protocol error codes
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
GROUP_ID_NOT_FOUND = 69
INVALID_PARTITIONS = 37
# franz-go's error for a request whose API the broker's ApiVersions does not
# list (Kafka's Java client throws UnsupportedVersionException there).
BROKER_TOO_OLD = "broker is too old"


@pytest.fixture(scope="module", autouse=True)
def franz_binary():
    if not FRANZ.exists():
        pytest.fail("%s does not exist: run ci/setup.sh (it builds ci/go into ci/.lab/bin)" % FRANZ)


def fz(*args, timeout=120):
    """Runs franz-interop with a hard timeout; returns its JSON lines."""
    args = [str(FRANZ)] + [str(a) for a in args]
    t0 = time.monotonic()
    try:
        r = subprocess.run(args, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not finish within %ds; stderr: %s" % (
            " ".join(args), timeout, (e.stderr or b"")[-3000:].decode(errors="replace")))
    if r.returncode != 0:
        raise AssertionError("%s exited %d after %.1fs\nstdout tail: %s\nstderr: %s" % (
            " ".join(args), r.returncode, time.monotonic() - t0, r.stdout[-2000:].decode(errors="replace"),
            r.stderr[-4000:].decode(errors="replace")))
    return [json.loads(l) for l in r.stdout.decode().splitlines() if l.strip()]


def admin_op(bootstrap, op, *args, timeout=90):
    [res] = fz("admin", "-brokers", bootstrap, "-op", op, *args, timeout=timeout)
    return res


def create_topic(bootstrap, topic, partitions):
    res = admin_op(bootstrap, "topics-create", "-topic", topic, "-partitions", partitions)
    assert res["err"] is None and res["topic_err"] is None and res["in_metadata"], res
    return res


def produce(bootstrap, topic, n, *args, timeout=120):
    """Runs `produce`; returns (acked {key: (p, o)}, done line). Every record acked."""
    lines = fz("produce", "-brokers", bootstrap, "-topic", topic, "-n", n, *args, timeout=timeout)
    done = lines[-1]
    assert done.get("done"), lines[-3:]
    errs = [l for l in lines[:-1] if l.get("err")]
    assert not errs, "%d produce errors, e.g. %r" % (len(errs), errs[:5])
    acked = {}
    for l in lines[:-1]:
        k = l["k"].encode()
        assert k not in acked, "key %r reported twice" % k
        assert l["p"] >= 0 and l["o"] >= 0, l
        acked[k] = (l["p"], l["o"])
    assert len(acked) == n == done["acked"] and done["failed"] == 0, done
    return acked, done


def check_headers(rec):
    i = int(rec["k"][1:])
    assert rec["h"] == [["h-idx", str(i)], ["h-key", rec["k"]], ["h-empty", ""]], (
        "partition %d offset %d: headers %r" % (rec["p"], rec["o"], rec["h"]))


def consume(bootstrap, topic, *args, timeout=90):
    """Direct consume of every partition up to the end offsets; returns
    ({p: [(o, key, value, ts)]}, records as dicts, ends)."""
    lines = fz("consume", "-brokers", bootstrap, "-topic", topic, "-timeout", "%ds" % (timeout - 15), *args,
               timeout=timeout)
    done = lines[-1]
    assert done.get("done"), lines[-3:]
    recs = lines[:-1]
    by_part = defaultdict(list)
    for r in recs:
        by_part[r["p"]].append((r["o"], r["k"].encode(), r["v"].encode(), r["ts"]))
    assert done["n"] == len(recs)
    return by_part, recs, {int(p): e for p, e in done["ends"].items()}


def check_idempotent_batches(bootstrap, topic, partitions, pid):
    """The stored batches at the start of each partition carry the producer id
    franz-go got from InitProducerId, epoch 0, and sequence == offset (one
    producer on a fresh topic)."""
    with kp.Conn(bootstrap) as c:
        for p in range(partitions):
            f = c.fetch(topic, p, 0, max_wait_ms=0, min_bytes=0, max_bytes=256 * 1024)
            assert f["error"] == 0, f
            for b in kp.decode_batches(f["records"]):
                assert (b["producer_id"], b["producer_epoch"]) == (pid, 0), (p, b["base_offset"], b["producer_id"])
                assert b["base_sequence"] == b["base_offset"], (
                    "partition %d: batch at offset %d has sequence %d" % (p, b["base_offset"], b["base_sequence"]))


# ------------------------------------------------------------------ produce / consume


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_async_consume(module_broker, codec):
    """Async Produce + Flush, idempotent, acks=all, keys and headers over 6
    partitions; consumed back exactly, each record at its acked offset."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-%s" % codec)
    create_topic(bs, topic, PARTITIONS)
    acked, done = produce(bs, topic, N, "-codec", codec, "-mode", "async")
    assert done["pid"] >= 0 and done["epoch"] == 0 and done["pid_err"] is None, done

    got, recs, ends = consume(bs, topic)
    check_keyed(got, N, acked=acked)
    for r in recs:
        check_headers(r)
    assert sorted(ends) == list(range(PARTITIONS))
    assert all(ends[p] == len(got[p]) > 0 for p in range(PARTITIONS)), (
        "end offsets %r, records per partition %r" % (ends, {p: len(v) for p, v in got.items()}))
    assert_codec(bs, topic, PARTITIONS, codec)
    check_idempotent_batches(bs, topic, PARTITIONS, done["pid"])


@pytest.mark.parametrize("chunk,codec", [(1, "lz4"), (100, "gzip")])
def test_produce_sync_consume(module_broker, chunk, codec):
    """ProduceSync (one record per call, and 100 per call); then a direct
    consume from the start and one from an offset in the middle."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-sync%d" % chunk)
    create_topic(bs, topic, 3)
    n = 300 if chunk == 1 else 3000
    acked, done = produce(bs, topic, n, "-codec", codec, "-mode", "sync", "-chunk", chunk)
    assert done["pid"] >= 0, done
    got, recs, ends = consume(bs, topic)
    check_keyed(got, n, acked=acked)
    for r in recs:
        check_headers(r)
    if chunk == 1:
        # one record per ProduceSync: the records of each partition are in
        # produce order, each in its own batch (sequence == offset)
        check_idempotent_batches(bs, topic, 3, done["pid"])

    mid = min(ends.values()) // 2
    got_mid, _, _ = consume(bs, topic, "-from", mid)
    for p in range(3):
        assert got_mid[p] == got[p][mid:], "partition %d from offset %d: %r" % (p, mid, got_mid[p][:3])


@pytest.mark.parametrize("acks,codec", [("leader", "snappy"), ("none", "lz4")])
def test_produce_non_idempotent_acks(module_broker, acks, codec):
    """kgo.DisableIdempotentWrite with acks=1 and acks=0: everything arrives,
    in order (with acks=0 no offset is acknowledged, so none are compared)."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-acks-%s" % acks)
    create_topic(bs, topic, PARTITIONS)
    acked, done = produce(bs, topic, N, "-acks", acks, "-idempotent=false", "-codec", codec)
    assert done["pid"] == -1, done
    got, recs, _ = consume(bs, topic)
    check_keyed(got, N, acked=acked if acks == "leader" else None)
    for r in recs:
        check_headers(r)
    assert_codec(bs, topic, PARTITIONS, codec)


def test_produce_to_explicit_partition_with_timestamps(module_broker):
    """Records sent to one partition with explicit timestamps keep them."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-part")
    create_topic(bs, topic, 3)
    base = int(time.time() * 1000) - 3_600_000
    acked, _ = produce(bs, topic, 500, "-partition", 2, "-ts-base", base, "-ts-step", 7, "-codec", "snappy")
    assert set(p for p, _ in acked.values()) == {2}
    got, recs, ends = consume(bs, topic)
    assert ends == {0: 0, 1: 0, 2: 500}
    check_keyed(got, 500, acked=acked)
    assert [ts for _, _, _, ts in got[2]] == [base + 7 * i for i in range(500)]


# ------------------------------------------------------------------ kadm


def test_kadm_topics(module_broker):
    bs = module_broker.bootstrap
    topic = unique_topic("fz-adm")
    r = admin_op(bs, "topics", "-topic", topic, "-partitions", 4)
    assert r["create"]["err"] is None and r["create"]["topic_err"] is None, r["create"]
    assert (r["create"]["partitions"], r["create"]["rf"]) == (4, 1), r["create"]
    assert r["create_again"]["topic_err"]["code"] == TOPIC_ALREADY_EXISTS, r["create_again"]

    listed = r["listed"]
    assert listed is not None and listed["err"] is None, r["listed"]
    assert sorted(int(p) for p in listed["partitions"]) == [0, 1, 2, 3]
    for p, d in listed["partitions"].items():
        assert (d["leader"], d["replicas"], d["isr"], d["err"]) == (1, [1], [1], None), (p, d)
    assert listed["internal"] is False

    assert r["brokers"]["err"] is None
    assert r["brokers"]["list"] == [{"node": 1, "host": "127.0.0.1", "port": module_broker.port}]
    md = r["metadata"]
    assert md["err"] is None and md["controller"] == 1, md
    assert md["topic"]["id"] == listed["id"], "topic id differs between ListTopics and Metadata"

    assert r["delete"]["err"] is None and r["delete"]["topic_err"] is None, r["delete"]
    assert r["gone_after_delete"] is True
    assert r["delete_missing"]["topic_err"]["code"] == UNKNOWN_TOPIC_OR_PARTITION, r["delete_missing"]

    for suffix in ("-a", "-b", "-c"):
        assert r["create_many"][topic + suffix] == {"err": None, "partitions": 2}, r["create_many"]
        assert r["delete_many"][topic + suffix] == {"err": None}, r["delete_many"]


def test_kadm_list_and_commit_offsets(module_broker):
    """ListStartOffsets / ListEndOffsets / ListOffsetsAfterMilli /
    ListMaxTimestampOffsets, CommitOffsets + FetchOffsets of a group without
    members."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-offs")
    create_topic(bs, topic, 3)
    base = int(time.time() * 1000) - 600_000
    # partition 0: 100 records at base + 10*i; partition 1: 50 at base + 100_000 + i
    produce(bs, topic, 100, "-partition", 0, "-ts-base", base, "-ts-step", 10)
    produce(bs, topic, 50, "-start", 100, "-partition", 1, "-ts-base", base + 100_000, "-ts-step", 1)
    group = unique_topic("fz-offs-group")
    at = [base - 1000, base, base + 500, base + 501, base + 990, base + 991, base + 100_010, base + 200_000]
    r = admin_op(bs, "offsets", "-topic", topic, "-group", group, "-at", ",".join(map(str, at)),
                 "-commit", "0:42,1:7,2:0")

    def offsets(section):
        assert section["err"] is None, section
        for p, v in section["partitions"].items():
            assert v["err"] is None, (p, v)
        return {int(p): v["offset"] for p, v in section["partitions"].items()}

    assert offsets(r["start"]) == {0: 0, 1: 0, 2: 0}
    assert offsets(r["end"]) == {0: 100, 1: 50, 2: 0}
    # kadm turns "no record at or after the time" (-1) into the end offset
    want_after = {
        base - 1000: {0: 0, 1: 0, 2: 0},
        base: {0: 0, 1: 0, 2: 0},
        base + 500: {0: 50, 1: 0, 2: 0},
        base + 501: {0: 51, 1: 0, 2: 0},
        base + 990: {0: 99, 1: 0, 2: 0},
        base + 991: {0: 100, 1: 0, 2: 0},
        base + 100_010: {0: 100, 1: 10, 2: 0},
        base + 200_000: {0: 100, 1: 50, 2: 0},
    }
    got_after = {t: offsets(r["after"][str(t)]) for t in at}
    assert got_after == want_after
    ts_after = {int(p): v["ts"] for p, v in r["after"][str(base + 501)]["partitions"].items()}
    assert ts_after[0] == base + 510, ts_after

    assert r["commit"]["err"] is None, r["commit"]
    assert {int(p): (v["at"], v["err"]) for p, v in r["commit"]["partitions"].items()} == {
        0: (42, None), 1: (7, None), 2: (0, None)}
    assert r["fetch"]["err"] is None, r["fetch"]
    assert {int(p): (v["at"], v["metadata"], v["err"]) for p, v in r["fetch"]["partitions"].items()} == {
        0: (42, "m0", None), 1: (7, "m1", None), 2: (0, "m2", None)}
    assert {int(p): v["at"] for p, v in r["fetch_for_topics"]["partitions"].items()} == {0: 42, 1: 7, 2: 0}

    g = admin_op(bs, "groups", "-group", group, "-topic", topic)
    assert g["list"]["err"] is None and group in g["list"]["groups"], g["list"]
    assert g["describe"]["group"]["state"] == "Empty", g["describe"]
    assert g["describe"]["group"]["members"] is None, g["describe"]
    assert g["describe"]["group"]["protocol_type"] == "" == g["list"]["group"]["protocol_type"], g
    assert g["lag"]["total"] == (100 - 42) + (50 - 7), g["lag"]

    # ListOffsets with timestamp -3 (max timestamp, KIP-734, v7): Kafka 4.4
    # answers the offset of the record with the largest timestamp, and that
    # timestamp (KAFKA-16310); -1/-1 for an empty partition.
    mx = r["max_ts"]
    assert offsets(mx) == {0: 99, 1: 49, 2: -1}, "ListMaxTimestampOffsets (base %d): %r" % (base, mx)
    assert {int(p): v["ts"] for p, v in mx["partitions"].items()} == {0: base + 990, 1: base + 100_049, 2: -1}, mx


def api_keys(bootstrap):
    r = admin_op(bootstrap, "apiversions")
    assert r["err"] is None, r
    return r["keys"]


OPTIONAL_APIS = {
    # franz-go call -> the API it needs
    "createpartitions": "CreatePartitions",
    "describeconfigs": "DescribeConfigs",
    "alterconfigs": "IncrementalAlterConfigs",
    "deleterecords": "DeleteRecords",
    "deleteoffsets": "OffsetDelete",
    "describeproducers": "DescribeProducers",
}

# DescribeConfigs of a topic created without configs: Kafka 4.4's defaults
# (the same broker defaults brook documents)
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete",
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "max.message.bytes": "1048588",
    "segment.bytes": "1073741824",
}


@pytest.mark.parametrize("call", sorted(OPTIONAL_APIS))
def test_kadm_optional_apis(module_broker, call):
    """An admin call whose API brook does not list in ApiVersions fails at
    once with franz-go's "broker is too old" (what Kafka's own client does
    with UnsupportedVersionException), never hangs. If brook lists the API, the
    call must do what it does on Kafka."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-api")
    create_topic(bs, topic, 2)
    produce(bs, topic, 10, "-partition", 0)
    group = unique_topic("fz-api-group")
    admin_op(bs, "offsets", "-topic", topic, "-group", group, "-commit", "0:1")
    advertised = OPTIONAL_APIS[call] in api_keys(bs)
    t0 = time.monotonic()
    r = admin_op(bs, "call", "-call", call, "-topic", topic, "-group", group, "-timeout", "45s", timeout=90)
    took = time.monotonic() - t0
    print("franz-go %s against brook (%s): %.1f ms in the call, %.2fs for the program; error %r" % (
        call, "advertised" if advertised else "not advertised", r["ms"], took, r["err"]))
    assert r["ms"] < FAST * 1000, "%s took %.1fs (a hang?): %r" % (call, r["ms"] / 1000, r["err"])
    if not advertised:
        assert r["err"] is not None and BROKER_TOO_OLD in r["err"]["msg"], r
        return
    assert r["err"] is None, "%s is listed in ApiVersions but failed: %r" % (OPTIONAL_APIS[call], r["err"])
    if call == "createpartitions":
        # 2 + 2 partitions; the new ones take records
        assert r["partitions_after"] == 4, r
        produce(bs, topic, 10, "-start", 10, "-partition", 3)
        got, _, ends = consume(bs, topic)
        assert ends == {0: 10, 1: 0, 2: 0, 3: 10}, ends
        check_keyed(got, 20)
        # fewer partitions than now: INVALID_PARTITIONS; unknown topic: UNKNOWN_TOPIC_OR_PARTITION
        for sub, code in (("shrinkpartitions", INVALID_PARTITIONS),
                          ("createpartitions-missing", UNKNOWN_TOPIC_OR_PARTITION)):
            e = admin_op(bs, "call", "-call", sub, "-topic", topic, "-timeout", "45s", timeout=90)
            assert e["ms"] < FAST * 1000 and e["err"] is not None and e["err"].get("code") == code, e
    elif call == "describeconfigs":
        got = {k: r["configs"].get(k, {}).get("value") for k in KAFKA_TOPIC_DEFAULTS}
        assert got == KAFKA_TOPIC_DEFAULTS, r["configs"]
        e = admin_op(bs, "call", "-call", "describeconfigs-missing", "-topic", topic, "-timeout", "45s", timeout=90)
        assert e["ms"] < FAST * 1000 and e["err"] is not None and e["err"].get("code") == UNKNOWN_TOPIC_OR_PARTITION, e
    elif call == "deleterecords":
        _, recs, _ = consume(bs, topic)
        assert [x["o"] for x in recs if x["p"] == 0] == list(range(1, 10))
    elif call == "alterconfigs":
        d = admin_op(bs, "call", "-call", "describeconfigs", "-topic", topic, "-timeout", "45s", timeout=90)
        assert d["err"] is None and d["configs"]["retention.ms"]["value"] == "3600000", d
    elif call == "deleteoffsets":
        c = consumer(bs, **{"group.id": group})
        try:
            [tp] = c.committed([TopicPartition(topic, 0)], timeout=30)
        finally:
            c.close()
        assert tp.error is None and tp.offset == -1001, tp


def test_transaction_commits(module_broker):
    """kgo.TransactionalID: begin, produce, commit against brook's transaction
    coordinator; the record is at offset 0 and the commit marker takes offset 1."""
    bs = module_broker.bootstrap
    topic = unique_topic("fz-txn")
    create_topic(bs, topic, 1)
    r = admin_op(bs, "call", "-call", "txn", "-topic", topic, "-timeout", "45s", timeout=90)
    print("franz-go transaction against brook: step %s, %.1f ms, error %r" % (r.get("step"), r["ms"], r["err"]))
    assert r["err"] is None and r.get("step") == "committed", r
    with kp.Conn(bs) as c:
        f = c.fetch(topic, 0, 0, max_wait_ms=0, min_bytes=0, max_bytes=64 * 1024)
    assert f["error"] == 0 and f["high_watermark"] == 2, f
    data, marker = kp.decode_batches(f["records"])
    assert data["attributes"] & 0x30 == 0x10 and data["records"][0][2:] == (b"tx-k", b"tx-v"), data
    assert (marker["base_offset"], marker["attributes"] & 0x30) == (1, 0x30), marker
    assert marker["records"][0][2] == b"\x00\x00\x00\x01", marker  # version 0, COMMIT


# ------------------------------------------------------------------ consumer groups


class Member:
    """A `franz-interop group` process; its JSON lines are collected by a thread."""

    def __init__(self, procs, workdir, name, bootstrap, group, topic, *args):
        self.name = name
        self.lines = []
        self.lock = threading.Lock()
        argv = [str(FRANZ), "group", "-brokers", bootstrap, "-group", group, "-topics", topic,
                "-client-id", name, "-run", "150s"] + [str(a) for a in args]
        self.stderr_path = Path(workdir) / ("%s.stderr" % name)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        procs.append(self.proc)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"ev": "garbage", "raw": raw[:200].decode(errors="replace")}
            with self.lock:
                self.lines.append(line)

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def events(self, ev):
        return [l for l in self.snapshot() if l.get("ev") == ev]

    def records(self):
        return self.events("rec")

    def assigned_now(self):
        """Partitions currently owned, from the assigned/revoked/lost events."""
        owned = set()
        for l in self.snapshot():
            if l.get("ev") == "assigned":
                owned |= set(l["parts"])
            elif l.get("ev") in ("revoked", "lost"):
                owned -= set(l["parts"])
        return owned

    def committed(self):
        """Last committed next-offset per partition."""
        c = {}
        for l in self.events("committed"):
            for p, o in l["offs"].items():
                c[int(p)] = o
        return c

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def stop(self, timeout=45):
        """Closes stdin: the member commits, leaves the group and exits 0."""
        self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not stop within %ds; stderr: %s" % (self.name, timeout, self.err_text()))
        self.reader.join(10)
        assert rc == 0, "%s exited %d; stderr: %s" % (self.name, rc, self.err_text())
        assert self.snapshot()[-1].get("ev") == "closed", self.snapshot()[-3:]

    def err_text(self):
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def check_clean(self):
        bad = [l for l in self.snapshot() if l.get("ev") in ("fetch_err", "commit_err", "garbage", "timeout")]
        assert not bad, "%s: %r" % (self.name, bad[:5])


def check_record(r):
    i = int(r["k"][1:])
    assert r["v"] == payload(i).decode(), "p%d o%d: bad value %r" % (r["p"], r["o"], r["v"][:40])
    check_headers(r)


def check_member_order(m):
    """Within one member, offsets of each partition strictly increase (it
    commits every poll before a rebalance can move a partition)."""
    last = {}
    for r in m.records():
        check_record(r)
        assert r["o"] > last.get(r["p"], -1), "%s: partition %d offset %d after %d" % (
            m.name, r["p"], r["o"], last[r["p"]])
        last[r["p"]] = r["o"]


def describe_group(bootstrap, group, topic):
    g = admin_op(bootstrap, "groups", "-group", group, "-topic", topic)
    assert g["describe"]["err"] is None, g
    return g


def wait_group(bootstrap, group, topic, members, partitions, timeout=40):
    """DescribeGroups: Stable, `members` members whose assignments cover the
    partitions exactly once."""
    last = [None]

    def ok():
        g = describe_group(bootstrap, group, topic)
        last[0] = g["describe"]["group"]
        d = last[0]
        if d["state"] != "Stable" or len(d["members"] or []) != members:
            return None
        owned = sorted(p for m in d["members"] for p in m["assigned"].get(topic, []))
        return g if owned == list(range(partitions)) else None

    try:
        return wait_until(ok, timeout, interval=0.5, what="group %s stable with %d members" % (group, members))
    except AssertionError:
        raise AssertionError("group never stable with %d members covering %d partitions; last describe: %r"
                             % (members, partitions, last[0]))


@pytest.mark.parametrize("balancer", ["cooperative-sticky", "range"])
def test_group_failover_and_committed_offsets(broker, procs, tmp_path, balancer):
    """Three kgo.ConsumerGroup members (classic protocol; the cooperative-sticky
    balancer, franz-go's default, and the eager range balancer)
    share 6 partitions; one is SIGKILLed mid-stream and, after its session
    times out, the other two take over its partitions from its last commit.
    Every record is consumed; the only records seen twice are ones the killed
    member printed but had not committed. Then the committed offsets survive a
    restart of the consumer and of the broker."""
    bs = broker.bootstrap
    topic = unique_topic("fz-grp")
    group = unique_topic("fz-group")
    create_topic(bs, topic, PARTITIONS)
    n = 3000
    acked, _ = produce(bs, topic, n, "-codec", "zstd")
    ends = defaultdict(int)
    for p, o in acked.values():
        ends[p] = max(ends[p], o + 1)

    # slow members (20 records per poll, 100 ms pause) so the kill lands mid-stream
    members = [Member(procs, tmp_path, "fz-m%d" % i, bs, group, topic, "-max-poll", 20, "-sleep", "100ms",
                      "-balancer", balancer) for i in range(3)]
    wait_until(lambda: all(m.records() and m.assigned_now() for m in members), 40, interval=0.2,
               what="all three members assigned and consuming")
    g = wait_group(bs, group, topic, 3, PARTITIONS)
    d = g["describe"]["group"]
    assert (d["protocol_type"], d["protocol"]) == ("consumer", balancer), d
    assert g["list"]["group"]["state"] == "Stable" and g["list"]["group"]["protocol_type"] == "consumer", g["list"]
    assert sorted(m["client_id"] for m in d["members"]) == ["fz-m0", "fz-m1", "fz-m2"]
    for m in d["members"]:
        assert m["join_topics"] == [topic], m

    victim, survivors = members[0], members[1:]
    victim_parts = victim.assigned_now()
    assert victim_parts, "victim owns no partitions"
    victim.kill()
    t_kill = time.monotonic()
    victim_committed = victim.committed()
    victim_next = {}
    for r in victim.records():
        victim_next[r["p"]] = r["o"] + 1
    left = {p: ends[p] - victim_next.get(p, 0) for p in victim_parts}
    assert sum(left.values()) > 0, "the victim consumed its partitions %r before the kill" % sorted(victim_parts)

    def covered():
        seen = set()
        for m in members:
            seen |= {(r["p"], r["o"]) for r in m.records()}
        return len(seen) == n

    wait_until(covered, 60, interval=0.3, what="survivors consuming the victim's partitions")
    took_over = time.monotonic() - t_kill
    print("survivors covered every record %.1fs after the SIGKILL (session timeout 6s)" % took_over)
    g = wait_group(bs, group, topic, 2, PARTITIONS)
    for p, n_left in left.items():
        if n_left > 0:
            rest = [r["o"] for s in survivors for r in s.records() if r["p"] == p and r["o"] >= victim_next.get(p, 0)]
            assert rest, "nobody consumed partition %d after the victim died" % p
    owned_after = set().union(*(s.assigned_now() for s in survivors))
    assert owned_after == set(range(PARTITIONS)), owned_after

    for s in survivors:
        s.stop()
    for m in members:
        m.check_clean()
        check_member_order(m)

    # no loss, and duplicates only from the victim's uncommitted tail
    sightings = defaultdict(list)
    for m in members:
        for r in m.records():
            sightings[(r["p"], r["o"])].append((m.name, r["k"]))
    for p in range(PARTITIONS):
        for o in range(ends[p]):
            assert (p, o) in sightings, "partition %d offset %d never consumed" % (p, o)
    assert len(sightings) == n
    key_at = {po: k for k, po in acked.items()}
    dups = 0
    for (p, o), seen in sightings.items():
        assert all(k.encode() == key_at[(p, o)] for _, k in seen), ((p, o), seen, key_at[(p, o)])
        if len(seen) == 1:
            continue
        dups += 1
        names = [name for name, _ in seen]
        assert len(seen) == 2 and victim.name in names, "p%d o%d consumed by %r" % (p, o, names)
        assert o >= victim_committed.get(p, 0), (
            "p%d o%d redelivered although the victim had committed %d" % (p, o, victim_committed.get(p, 0)))
    print("records redelivered after the kill (victim printed, not committed): %d" % dups)

    # the group's committed offsets are the end offsets
    g = describe_group(bs, group, topic)
    assert g["describe"]["group"]["state"] == "Empty", g["describe"]
    assert {int(p): (v["at"], v["err"]) for p, v in g["fetch"]["offsets"].items()} == {
        p: (ends[p], None) for p in range(PARTITIONS)}, g["fetch"]
    assert g["lag"]["total"] == 0, g["lag"]

    def consume_new(name, start, count):
        """A fresh member of the group consumes exactly k{start}..k{start+count-1}."""
        m = Member(procs, tmp_path, name, bs, group, topic, "-max-poll", 500, "-balancer", balancer)
        wait_until(lambda: len(m.records()) >= count, 40, interval=0.2,
                   what="%s consuming %d new records" % (name, count))
        time.sleep(1.0)  # anything beyond them would show up now
        m.stop()
        m.check_clean()
        check_member_order(m)
        keys = sorted(int(r["k"][1:]) for r in m.records())
        assert keys == list(range(start, start + count)), (
            "%s after a restart consumed %d records, keys %r..%r (expected k%d..k%d): committed offsets not used"
            % (name, len(keys), keys[:3], keys[-3:], start, start + count - 1))

    # restart of the consumer: a new member resumes from the committed offsets
    produce(bs, topic, 600, "-start", n, "-codec", "lz4")
    consume_new("fz-restart", n, 600)

    # restart of the broker: the committed offsets are still there
    broker.restart()
    g = describe_group(bs, group, topic)
    fetched = {int(p): v["at"] for p, v in g["fetch"]["offsets"].items()}
    assert sum(fetched.values()) == n + 600 and set(fetched) == set(range(PARTITIONS)), g["fetch"]
    produce(bs, topic, 300, "-start", n + 600)
    consume_new("fz-after-broker-restart", n + 600, 300)

    # kadm DeleteGroup: the group and its offsets are gone; deleting it again
    # fails with GROUP_ID_NOT_FOUND
    r = admin_op(bs, "deletegroup", "-group", group)
    assert r["err"] is None and r["group_err"] is None, r
    assert group not in (r["listed_after"] or []), r
    r = admin_op(bs, "deletegroup", "-group", group)
    assert r["group_err"] is not None and r["group_err"]["code"] == GROUP_ID_NOT_FOUND, r
    g = describe_group(bs, group, topic)
    assert g["fetch"]["offsets"] == {}, g["fetch"]
