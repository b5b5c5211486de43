"""SIGKILL the broker under an idempotent acks=all producer, restart it on the
same data dir, and check that every acknowledged record is there exactly once
at its acknowledged offset."""

import os
import signal
import struct
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from util import Delivery, consume_all, create_topic, producer, spawn, unique_topic, wait_until

HELPER = str(Path(__file__).resolve().parent / "crash_producer.py")
PARTITIONS = 3


def value_for(prefix, i):
    return ("%s:%d:" % (prefix, i) + "x" * (i % 50)).encode()


def read_acks(path):
    acked, errors = {}, []
    if not os.path.exists(path):
        return acked, errors
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line of a killed writer
            parts = line.split()
            if parts[0] == "ERR":
                errors.append(line.strip())
                continue
            p, o, k = int(parts[0]), int(parts[1]), parts[2]
            assert k not in acked, "key %s acknowledged twice: %r and %r" % (k, acked[k], (p, o))
            acked[k] = (p, o)
    return acked, errors


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def verify_log(broker, topic, acked, phases):
    """Dense offsets, no duplicates, order per partition by (phase, i), exact
    values, and every acknowledged key at its acknowledged offset."""
    got = consume_all(broker.bootstrap, topic, PARTITIONS, timeout=180)
    rank = {ph: n for n, ph in enumerate(phases)}
    seen = {}
    for p in range(PARTITIONS):
        recs = got.get(p, [])
        offs = [r[0] for r in recs]
        assert offs == list(range(len(offs))), "partition %d offsets not dense from 0: %r..." % (p, offs[:10])
        last = (-1, -1)
        for off, key, value, _ in recs:
            k = key.decode()
            prefix, i = k.rsplit("-", 1)
            i = int(i)
            assert k not in seen, "key %s stored twice: %r and %r" % (k, seen[k], (p, off))
            seen[k] = (p, off)
            assert value == value_for(prefix, i), "bad value at %d/%d: %r" % (p, off, value[:60])
            cur = (rank[prefix], i)
            assert cur > last, "order broken in partition %d at offset %d: %r after %r" % (p, off, cur, last)
            last = cur
    missing = [k for k in acked if k not in seen]
    assert not missing, "%d acknowledged records lost, e.g. %r" % (len(missing), [(k, acked[k]) for k in missing[:5]])
    moved = [(k, acked[k], seen[k]) for k in acked if seen[k] != acked[k]]
    assert not moved, "%d records not at their acknowledged offset, e.g. %r" % (len(moved), moved[:5])
    return got


def produce_after(broker, topic, prefix, n):
    p = producer(broker.bootstrap, acks="all", **{"enable.idempotence": True})
    dr = Delivery()
    for i in range(n):
        p.produce(topic, key=("%s-%d" % (prefix, i)).encode(), value=value_for(prefix, i), on_delivery=dr)
        p.poll(0)
    left = p.flush(60)
    assert left == 0 and not dr.errors, "fresh producer after restart: %d undelivered, %d acked, errors %r" % (
        left, len(dr.acked), dr.errors[:5])
    return {k.decode(): po for k, po in dr.acked.items()}


def test_kill_restart_cycles(broker, procs, tmp_path):
    topic = unique_topic("crash")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    all_acked = {}
    phases = []
    for cycle in range(3):
        prefix = "c%d" % cycle
        phases.append(prefix)
        ack_file = str(tmp_path / ("acks-%d.txt" % cycle))
        out_file = open(tmp_path / ("producer-%d.out" % cycle), "w+")
        t0 = time.monotonic()
        proc = spawn(procs, [sys.executable, HELPER, broker.bootstrap, topic, ack_file, prefix,
                             "500000", "90", "4000"], stdout=out_file, stderr=subprocess.STDOUT)
        def output():
            out_file.flush()
            out_file.seek(0)
            return out_file.read()[-3000:]

        try:
            wait_until(lambda: count_lines(ack_file) >= 200 or proc.poll() is not None, 30,
                       what="cycle %d: first acknowledgements" % cycle)
        except AssertionError as e:
            raise AssertionError("%s; %d acks; producer output:\n%s" % (e, count_lines(ack_file), output()))
        assert proc.poll() is None, "cycle %d: producer exited early:\n%s" % (cycle, output())
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))

        broker.kill()
        at_kill = count_lines(ack_file)
        broker.start()

        # the same producer carries on after the restart (its in-flight batches are retried)
        try:
            wait_until(lambda: count_lines(ack_file) >= at_kill + 1000 or proc.poll() is not None, 60,
                       what="cycle %d: acknowledgements after restart" % cycle)
        except AssertionError as e:
            raise AssertionError("%s; %d acks at kill, %d now; producer output:\n%s" % (
                e, at_kill, count_lines(ack_file), output()))
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(90)
        except subprocess.TimeoutExpired:
            rc = None
        out = output()
        acked, errors = read_acks(ack_file)
        assert rc == 0 and not errors, "producer rc=%r errors=%r output=%s" % (rc, errors[:5], out[-2000:])
        assert len(acked) > at_kill, "no acknowledgements after restart"
        all_acked.update(acked)

        got = verify_log(broker, topic, all_acked, phases)
        ends = {p: len(got.get(p, [])) for p in range(PARTITIONS)}

        # a fresh producer after the restart: offsets continue, none reused
        after = "after%d" % cycle
        phases.append(after)
        new = produce_after(broker, topic, after, 600)
        by_p = defaultdict(list)
        for k, (p, o) in new.items():
            by_p[p].append(o)
        for p, offs in by_p.items():
            offs.sort()
            assert offs == list(range(ends[p], ends[p] + len(offs))), (
                "partition %d: new offsets %r... do not continue from %d" % (p, offs[:5], ends[p]))
        all_acked.update(new)
        verify_log(broker, topic, all_acked, phases)


def _find_partition_dir(data_dir, topic, partition):
    for root, dirs, _files in os.walk(data_dir):
        for d in dirs:
            if d == "%s-%d" % (topic, partition):
                return Path(root) / d
    return None


def _logical_end(path):
    """Scan RecordBatch headers from the start of a segment; returns (end
    position, last batch (pos, length)) of the valid prefix."""
    data = Path(path).read_bytes()
    pos, last = 0, None
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        if length < 49 or pos + 12 + length > len(data) or data[pos + 16] != 2:
            break
        last = (pos, 12 + length)
        pos += 12 + length
    return pos, last, data


def test_torn_tail_is_truncated(broker):
    topic = unique_topic("torn")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, acks="all", **{"linger.ms": 0})
    dr = Delivery()
    for i in range(50):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0, on_delivery=dr)
        p.flush(10)
    assert len(dr.acked) == 50 and not dr.errors
    broker.kill()

    pdir = _find_partition_dir(broker.data_dir, topic, 0)
    if pdir is None:
        pytest.skip("no <topic>-<partition> directory under the data dir (layout differs from design.md)")
    logs = sorted(pdir.glob("*.log"), key=lambda f: int(f.stem) if f.stem.isdigit() else -1)
    assert logs, "no .log segment in %s" % pdir
    seg = logs[-1]
    end, last, data = _logical_end(seg)
    assert last is not None, "no valid batch found in %s" % seg
    # write a torn copy of the last batch at the logical end: a complete header whose
    # body stops halfway (the rest of the preallocated file stays zero)
    lpos, llen = last
    torn = bytearray(data[lpos:lpos + llen])
    struct.pack_into(">q", torn, 0, 50)
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(bytes(torn[:llen // 2 + 8]))
        f.write(b"\x00" * (llen - llen // 2))
        f.flush()
        os.fsync(f.fileno())

    broker.start()
    got = consume_all(broker.bootstrap, topic, 1)
    assert [(o, k, v) for o, k, v, _ in got[0]] == [(i, b"k%d" % i, b"v%d" % i) for i in range(50)]
    p = producer(broker.bootstrap, acks="all")
    dr = Delivery()
    p.produce(topic, key=b"k50", value=b"v50", partition=0, on_delivery=dr)
    assert p.flush(30) == 0
    assert dr.acked == {b"k50": (0, 50)}, dr.acked
    got = consume_all(broker.bootstrap, topic, 1)
    assert [(o, k) for o, k, _, _ in got[0]] == [(i, b"k%d" % i) for i in range(51)]
