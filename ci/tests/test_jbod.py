"""Several log directories (JBOD): partitions spread over them, kafka-log-dirs
describes them, and a failed disk takes only its own partitions offline.

The disks are loop-mounted ext4 file systems that the test makes and removes
itself; one fails with EXT4_IOC_SHUTDOWN (every later I/O on it gets
EIO, as from a dead disk) while a producer keeps writing to the partitions on
the healthy directory. Records are checked one by one."""

import contextlib
import fcntl
import json
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import kproto as kp
from conftest import Broker, running
from util import admin, create_topic, unique_topic

KAFKA_STORAGE_ERROR = 56
LEADER_NOT_AVAILABLE = 5
ROOT = Path(__file__).resolve().parents[2]
# EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32); flag 2: EXT4_GOING_FLAGS_NOLOGFLUSH
EXT4_IOC_SHUTDOWN = (2 << 30) | (4 << 16) | (ord("X") << 8) | 125


def placement(dirs, topic, partitions):
    """Which of `dirs` holds each partition's directory."""
    out = {}
    for p in range(partitions):
        found = [i for i, d in enumerate(dirs) if (d / ("%s-%d" % (topic, p))).is_dir()]
        assert len(found) == 1, "partition %d in directories %r" % (p, found)
        out[p] = found[0]
    return out


def produce_one(c, topic, p, i):
    return c.produce(topic, p, kp.encode_batch([(b"k%d" % i, b"v%d" % i)]))


def read_partition(bootstrap, topic, p):
    got = []
    with kp.Conn(bootstrap) as c:
        while True:
            f = c.fetch(topic, p, len(got), max_wait_ms=10, max_bytes=4 << 20)
            assert f["error"] == 0, (p, f["error"])
            recs = [(o, k) for b in kp.decode_batches(f["records"]) for (o, _ts, k, _v) in b["records"]]
            if not recs:
                return got
            got += recs


@contextlib.contextmanager
def broker_on(request, tmp_path_factory, dirs):
    """A broker on log directories `dirs` (the first holds the metadata),
    stopped (and checked to stop cleanly) on leaving."""
    b = Broker(tmp_path_factory.mktemp("brook-jbod"))
    b.extra_args = [a for d in dirs[1:] for a in ("--data-dir", str(d))]
    b.data_dir = dirs[0]
    b.data_dir.mkdir(parents=True, exist_ok=True)
    gen = running(request, b, request.node)
    broker = next(gen)
    try:
        yield broker
    finally:
        for _ in gen:
            pass


def test_partitions_spread_over_directories_and_are_described(request, tmp_path_factory, tmp_path):
    dirs = [tmp_path / ("disk%d" % i) for i in range(3)]
    with broker_on(request, tmp_path_factory, dirs) as broker:
        topic = unique_topic("jbod")
        create_topic(broker.bootstrap, topic, 6)
        where = placement(dirs, topic, 6)
        assert sorted(where.values()) == [0, 0, 1, 1, 2, 2], where
        with kp.Conn(broker.bootstrap) as c:
            for i in range(60):
                assert produce_one(c, topic, i % 6, i)[0] == 0
        out = subprocess.run([str(ROOT / "ci" / "kafka-tool"), "kafka-log-dirs", "--bootstrap-server",
                              broker.bootstrap, "--describe", "--topic-list", topic],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        described = {}
        for d in doc["brokers"][0]["logDirs"]:
            assert d["error"] is None, d
            for p in d["partitions"]:
                described[p["partition"]] = (os.path.realpath(d["logDir"]), p["size"])
        for p, i in where.items():
            path, size = described["%s-%d" % (topic, p)]
            assert path == os.path.realpath(dirs[i]), (p, path)
            assert size > 0
        broker.restart()
        for p in range(6):
            assert read_partition(broker.bootstrap, topic, p) == [
                (n, b"k%d" % i) for n, i in enumerate(range(p, 60, 6))]


def alter_replica_log_dirs(bootstrap, moves):
    """AlterReplicaLogDirs v1 (raw): moves = {path: {topic: [partitions]}};
    returns {(topic, partition): error code}."""
    body = kp.array([kp.string(str(path)) + kp.array([kp.string(t) + kp.array([kp.i32(p) for p in ps])
                                                      for t, ps in topics.items()])
                     for path, topics in moves.items()])
    with kp.Conn(bootstrap) as c:
        r = c.request(34, 1, body)
    r.i32()  # throttle
    out = {}
    for topic, parts in r.array(lambda r: (r.string(), r.array(lambda r: (r.i32(), r.i16())))):
        for p, err in parts:
            out[(topic, p)] = err
    return out


def test_a_partition_moves_to_another_directory_while_written(request, tmp_path_factory, tmp_path):
    dirs = [tmp_path / "disk0", tmp_path / "disk1"]
    with broker_on(request, tmp_path_factory, dirs) as broker:
        topic = unique_topic("jbodmove")
        # small segments, so the move has sealed ones to copy while serving
        from confluent_kafka.admin import NewTopic
        a = admin(broker.bootstrap)
        a.create_topics([NewTopic(topic, 2, 1, config={"segment.bytes": "65536"})])[topic].result(30)
        where = placement(dirs, topic, 2)
        p = 0
        src, dst = where[p], 1 - where[p]
        acked = []
        stop = threading.Event()
        errors = []

        def keep_writing():
            i = 0
            with kp.Conn(broker.bootstrap) as c:
                while not stop.is_set() and i < 20000:
                    err, off = c.produce(topic, p, kp.encode_batch([(b"k%d" % i, b"v%d" % i + b"x" * 200)]))
                    if err == 0:
                        acked.append((off, b"k%d" % i))
                    else:
                        errors.append(err)
                        time.sleep(0.01)
                    i += 1

        t = threading.Thread(target=keep_writing)
        t.start()
        time.sleep(1.0)
        assert len(list((dirs[src] / ("%s-%d" % (topic, p))).glob("*.index"))) > 0, "no sealed segment yet"
        bad = alter_replica_log_dirs(broker.bootstrap, {dirs[dst]: {topic: [p]}})
        assert bad == {(topic, p): 0}, bad
        deadline = time.monotonic() + 30
        while (dirs[src] / ("%s-%d" % (topic, p))).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        t.join(30)
        print("moved while writing: %d records acknowledged, %d retriable refusals during the pause" % (len(acked), len(errors)))
        assert placement(dirs, topic, 2)[p] == dst, "not moved"
        assert "moved partition" in broker.log_text()
        # requests during the short pause are retriable refusals, nothing else
        assert set(errors) <= {kp.UNKNOWN_TOPIC_OR_PARTITION, 6}, set(errors)
        got = read_partition(broker.bootstrap, topic, p)
        assert got == acked, (len(got), len(acked))
        # unknown directory, unknown partition
        bad = alter_replica_log_dirs(broker.bootstrap, {tmp_path / "nowhere": {topic: [1]}, dirs[0]: {topic: [7]}})
        assert bad == {(topic, 1): 57, (topic, 7): kp.UNKNOWN_TOPIC_OR_PARTITION}, bad
        broker.restart()
        assert read_partition(broker.bootstrap, topic, p) == acked


@contextlib.contextmanager
def two_loop_disks(tmp_path):
    """Two loop-mounted ext4 disks; yields the second (the one tests fail) and
    the log directories on both. Both are unmounted on leaving."""
    disk0 = LoopDisk(tmp_path / "disk0.img", tmp_path / "disk0")
    disk0.attach()
    disk = LoopDisk(tmp_path / "disk1.img", tmp_path / "disk1")
    try:
        disk.attach()
        yield disk, [disk0.mount / "brook", disk.mount / "brook"]
    finally:
        disk.detach()
        disk0.detach()


class LoopDisk:
    """An ext4 file system in a file, loop-mounted at `mount`."""

    def __init__(self, image, mount, size="512M", mkfs_args=()):
        self.image, self.mount = Path(image), Path(mount)
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", *mkfs_args, str(self.image)], check=True, capture_output=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.mounted = False

    def attach(self):
        r = subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip("cannot loop-mount a file system here: %s" % r.stderr.strip())
        self.mounted = True

    def shut_down(self):
        fd = os.open(str(self.mount), os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", 2))
        finally:
            os.close(fd)

    def detach(self):
        if self.mounted:
            subprocess.run(["umount", str(self.mount)], check=True, timeout=60)
            self.mounted = False


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_failed_disk_takes_only_its_own_partitions_offline(request, tmp_path_factory, tmp_path):
    with two_loop_disks(tmp_path) as (disk, dirs), broker_on(request, tmp_path_factory, dirs) as broker:
        topic = unique_topic("jbodfail")
        create_topic(broker.bootstrap, topic, 4)
        where = placement(dirs, topic, 4)
        healthy = [p for p, i in where.items() if i == 0]
        failing = [p for p, i in where.items() if i == 1]
        assert healthy and failing, where
        acked = {p: [] for p in range(4)}
        with kp.Conn(broker.bootstrap) as c:
            for i in range(200):
                p = i % 4
                err, off = produce_one(c, topic, p, i)
                assert err == 0
                acked[p].append((off, b"k%d" % i))

        # a producer keeps writing to the healthy directory's partitions
        stop = threading.Event()
        errors = []

        def keep_writing():
            i = 1000
            with kp.Conn(broker.bootstrap) as c:
                while not stop.is_set():
                    p = healthy[i % len(healthy)]
                    err, off = produce_one(c, topic, p, i)
                    if err:
                        errors.append((p, err))
                    else:
                        acked[p].append((off, b"k%d" % i))
                    i += 1

        t = threading.Thread(target=keep_writing)
        t.start()
        time.sleep(0.5)
        before = sum(len(acked[p]) for p in healthy)
        disk.shut_down()
        # the failing directory's partitions refuse writes with a storage error
        with kp.Conn(broker.bootstrap) as c:
            for p in failing:
                errs = {produce_one(c, topic, p, 9000 + p)[0] for _ in range(3)}
                assert errs == {KAFKA_STORAGE_ERROR}, (p, errs)
        deadline = time.monotonic() + 20
        while True:
            md = admin(broker.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
            if all(md[p].leader == -1 for p in failing) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for p in failing:
            assert md[p].leader == -1 and md[p].error is not None and md[p].error.code() == LEADER_NOT_AVAILABLE, md[p]
        for p in healthy:
            assert md[p].leader >= 0 and md[p].error is None
        time.sleep(1)
        stop.set()
        t.join(30)
        assert not errors, "the healthy directory's partitions refused writes: %r" % errors[:5]
        assert sum(len(acked[p]) for p in healthy) > before, "writes to the healthy directory stopped"
        assert "log directory failed" in broker.log_text()

        # restart with the disk absent (an empty mount point): its partitions stay offline
        assert broker.terminate() == 0
        disk.detach()
        broker.start()
        assert "log directory skipped" in broker.log_text()
        md = admin(broker.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
        for p in failing:
            assert md[p].leader == -1, md[p]
        for p in healthy:
            assert read_partition(broker.bootstrap, topic, p) == acked[p]
        assert not (disk.mount / "brook" / ("%s-%d" % (topic, failing[0]))).exists(), "recreated on the empty mount point"

        # the disk comes back: nothing acknowledged on it before the failure is lost
        assert broker.terminate() == 0
        disk.attach()
        broker.start()
        for p in range(4):
            assert read_partition(broker.bootstrap, topic, p) == acked[p], "partition %d" % p
        with kp.Conn(broker.bootstrap) as c:
            for p in failing:
                assert produce_one(c, topic, p, 7000 + p)[0] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_read_error_fails_the_directory_too(request, tmp_path_factory, tmp_path):
    """A disk that fails while its partitions are only read: the first read
    that reaches it (past the batch cache) gets EIO, and that takes the whole
    directory offline as a write error would."""
    with two_loop_disks(tmp_path) as (disk, dirs), broker_on(request, tmp_path_factory, dirs) as broker:
        topic = unique_topic("jbodread")
        create_topic(broker.bootstrap, topic, 2)
        where = placement(dirs, topic, 2)
        failing = [p for p, i in where.items() if i == 1][0]
        healthy = [p for p, i in where.items() if i == 0][0]
        # more than the 8 MiB batch cache, so offset 0 must come from the disk
        value = b"x" * 1000
        with kp.Conn(broker.bootstrap) as c:
            for b in range(120):
                recs = [(b"k%d" % (b * 100 + i), value) for i in range(100)]
                assert c.produce(topic, failing, kp.encode_batch(recs))[0] == 0
        disk.shut_down()
        with kp.Conn(broker.bootstrap) as c:
            f = c.fetch(topic, failing, 0, max_wait_ms=10, max_bytes=64 << 10)
            assert f["error"] == KAFKA_STORAGE_ERROR, f["error"]
        deadline = time.monotonic() + 20
        while True:
            md = admin(broker.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
            if md[failing].leader == -1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert md[failing].leader == -1, md[failing]
        assert md[healthy].leader >= 0
        with kp.Conn(broker.bootstrap) as c:
            assert produce_one(c, topic, healthy, 1)[0] == 0
        assert "log directory failed" in broker.log_text()

