#!/usr/bin/env python3
"""Brook torture test: acks=all producers against the real binary, SIGKILL at
random moments over many cycles, restart, and a verifier after every cycle.

    ci/.venv/bin/python ci/torture.py [--cycles 50] [--seconds-per-cycle 6]
        [--partitions 6] [--producers 3] [--seed N] [--results-dir DIR]

(Run with any python3: it re-executes itself under ci/.venv/bin/python when
confluent-kafka is not importable.)

One broker (target/release/brook, or $BROOK_BIN / --broker) serves one data
dir for the whole run. Each cycle:

  1. the broker runs (cycle 1 starts it and creates the topic; later cycles
     continue with the broker restarted at the end of the previous cycle);
     producer processes (ci/tests/torture_producer.py) run with acks=all, a mix
     of confluent-kafka with enable.idempotence=true, with enable.idempotence=
     false (max.in.flight=1), and kafka-python's default producer; each writes
     keyed records whose value encodes (producer, seq) and journals every
     ACKNOWLEDGED (partition, offset, seq), flushed per acknowledgement; one
     consumer-group member (ci/tests/torture_consumer.py) consumes and commits
     synchronously, journaling its commits;
  2. at a random moment (seeded RNG) the broker is SIGKILLed, sometimes with
     some producers and/or the group consumer at the same instant;
  3. the broker is restarted on the same data dir (sometimes SIGKILLed again
     during its recovery first); producers that were not killed carry on and
     reconnect by themselves; killed ones are replaced by new processes, and
     some survivors are replaced (SIGTERM) after the verification;
  4. the verifier reads every partition from offset 0 to the high watermark
     and checks:
       (1) every acknowledged record is at its acknowledged offset, with the
           same key and value (and below the high watermark);
       (2) idempotent producers: each (producer, seq) is in the log at most
           once (acknowledged ones exactly once); non-idempotent producers'
           duplicates from retries are counted, not failed;
       (3) offsets are dense from the log start 0 up to the high watermark,
           every record is intact (value/key match its (producer, seq));
       (4) per producer and partition, acknowledged seqs increase with the
           offset (and, for idempotent producers, all stored seqs);
       (5) consumers resume: the group's committed offsets are at or after
           every commit the member saw acknowledged, and after each
           (re)assignment the member resumes at or after its last acknowledged
           commit and not beyond the last commit it sent, without jumps;
       (6) what a previous verification read below the high watermark is
           unchanged (the high watermark never goes back).

At the end the producers and the consumer are stopped cleanly, a final
verification runs, the broker gets SIGTERM (it must exit 0), and a summary is
printed: cycles run, records acknowledged, records verified, duplicates from
non-idempotent producers, and every violation with details and the broker log
lines around it. Exit status 1 if there was any violation.

Results (one broker log per broker process, named after the cycle that
started it; journals; summary.json; violations.txt) go to --results-dir
(default: a new /tmp/brook-torture-* directory); its path is printed.
Only processes this script started are ever signalled, by their pid.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TESTS = HERE / "tests"
VENV_PY = HERE / ".venv" / "bin" / "python"

try:
    import confluent_kafka  # noqa: F401
except ImportError:
    if VENV_PY.exists() and Path(sys.executable).resolve() != VENV_PY.resolve() and not os.environ.get("BROOK_TORTURE_REEXEC"):
        os.environ["BROOK_TORTURE_REEXEC"] = "1"
        os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve())] + sys.argv[1:])
    raise

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from confluent_kafka import ConsumerGroupTopicPartitions  # noqa: E402

sys.path.insert(0, str(TESTS))
from torture_producer import parse_value, record_key, record_value  # noqa: E402

KINDS = ("ck-idem", "ck-plain", "kp")
COMPRESSIONS = ("none", "lz4", "zstd", "gzip", "snappy")
READY_TIMEOUT = 40.0       # a restarted broker may wait up to 10 s for the data-dir lock
STOP_TIMEOUT = 15.0
PRODUCER_STOP_TIMEOUT = 45.0  # producers flush for up to 30 s on SIGTERM
PROGRESS_TIMEOUT = 20.0    # surviving producers must be acknowledged again within this after a restart
TOPIC = "torture"
GROUP = "torture-group"


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Violation(Exception):
    pass


# ---------------------------------------------------------------- processes

class Broker:
    """The brook process (and its restarts) on one port and data dir. Each
    start gets its own log file."""

    def __init__(self, binary, data_dir, logs_dir, partitions, extra_args):
        self.binary = str(binary)
        self.data_dir = Path(data_dir)
        self.logs_dir = Path(logs_dir)
        self.port = free_port()
        self.bootstrap = "127.0.0.1:%d" % self.port
        self.partitions = partitions
        self.extra_args = list(extra_args)
        self.proc = None
        self.starts = 0
        self.log_path = None
        self.logs = []  # (cycle, path)
        self.unexpected_exits = []

    def args(self):
        return [self.binary, "--data-dir", str(self.data_dir), "--listen", self.bootstrap,
                "--shards", "2", "--default-partitions", str(self.partitions)] + self.extra_args

    def spawn(self, cycle, why):
        assert not self.alive()
        self.starts += 1
        self.log_path = self.logs_dir / ("broker-%03d-cycle-%03d.log" % (self.starts, cycle))
        self.logs.append((cycle, str(self.log_path)))
        with open(self.log_path, "ab") as f:
            f.write(("==== torture: cycle %d, start #%d (%s): %s\n" % (
                cycle, self.starts, why, " ".join(self.args()))).encode())
            f.flush()  # before the broker appends to the same file
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            env.setdefault("NO_COLOR", "1")
            # same process group as this script: if the script itself is killed
            # with its group (as the CI test does on a timeout), the broker goes too
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=env)
        self.t_start = time.monotonic()

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(self.log_path, "rb") as f:
                if b"brook ready" in f.read():
                    return time.monotonic() - self.t_start
            rc = self.proc.poll()
            if rc is not None:
                raise Violation("broker exited with status %s before 'brook ready' (log %s):\n%s"
                                % (rc, self.log_path, tail(self.log_path, 30)))
            if time.monotonic() > deadline:
                raise Violation("broker not ready within %.0f s (log %s):\n%s"
                                % (READY_TIMEOUT, self.log_path, tail(self.log_path, 30)))
            time.sleep(0.02)

    def start(self, cycle, why, on_retry=None):
        """Starts and waits for 'brook ready'. A broker whose predecessor was
        SIGKILLed a moment ago may find the port still held (io_uring tears a
        killed process's sockets down asynchronously): that start is retried for
        up to 20 s and reported through on_retry; any other failure raises."""
        t0 = time.monotonic()
        while True:
            self.spawn(cycle, why)
            try:
                return self.wait_ready()
            except Violation as e:
                if "Address already in use" not in str(e) or time.monotonic() - t0 > 20:
                    raise
                if on_retry:
                    on_retry("broker start #%d could not listen (%s); retrying"
                             % (self.starts, str(e).strip().splitlines()[-1][-120:]))
                time.sleep(0.5)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        self.note("SIGKILL")

    def terminate(self):
        """SIGTERM; returns (exit status or None if it had to be killed, seconds)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            rc = None
        self.note("SIGTERM -> exit %s" % rc)
        return rc, time.monotonic() - t0

    def note(self, what):
        try:
            with open(self.log_path, "ab") as f:
                f.write(("==== torture: %s at %s\n" % (what, time.strftime("%H:%M:%S"))).encode())
        except OSError:
            pass


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 512 * 1024))
            lines = ANSI.sub("", f.read().decode(errors="replace")).splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "<no log: %s>" % e


def interesting_lines(path, n=25):
    """Warnings, errors and recovery lines of a broker log, else its tail."""
    try:
        lines = ANSI.sub("", Path(path).read_text(errors="replace")).splitlines()
    except OSError as e:
        return ["<no log: %s>" % e]
    keys = ("WARN", "ERROR", "error", "panic", "recover", "truncat", "corrupt", "torture:")
    hits = [l for l in lines if any(k in l for k in keys)]
    return (hits or lines)[-n:]


class Child:
    """A helper process (producer or group consumer) with a journal."""

    def __init__(self, name, kind, journal, argv, out_path):
        self.name, self.kind, self.journal = name, kind, Path(journal)
        self.out_path = out_path
        with open(out_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=str(TESTS))
        self.reaped_rc = None

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout):
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns rc."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return "killed after %.0f s" % timeout
        return self.proc.returncode


def stop_all_children(children, timeout):
    for c in children:
        if c.alive():
            c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    rcs = {}
    for c in children:
        try:
            rcs[c.name] = c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            rcs[c.name] = "killed after %.0f s" % timeout
    return rcs


# ---------------------------------------------------------------- journals

class AckMap:
    """seq -> (partition, offset) of acknowledged records, as two arrays
    indexed by seq (seqs are dense from 0): ~10 bytes a record, not ~200."""

    def __init__(self):
        self.part = array("h")
        self.off = array("q")
        self.n = 0

    def get(self, seq):
        if seq < len(self.part) and self.part[seq] >= 0:
            return (self.part[seq], self.off[seq])
        return None

    def __getitem__(self, seq):
        po = self.get(seq)
        if po is None:
            raise KeyError(seq)
        return po

    def __setitem__(self, seq, po):
        if seq >= len(self.part):
            grow = max(seq + 1 - len(self.part), len(self.part), 1024)
            self.part.extend([-1] * grow)
            self.off.extend([-1] * grow)
        if self.part[seq] < 0:
            self.n += 1
        self.part[seq], self.off[seq] = po

    def __len__(self):
        return self.n

    def items(self):
        part, off = self.part, self.off
        for seq in range(len(part)):
            if part[seq] >= 0:
                yield seq, (part[seq], off[seq])


class ProducerState:
    def __init__(self, name, idx, kind, journal):
        self.name, self.idx, self.kind, self.journal = name, idx, kind, Path(journal)
        self.idempotent = kind != "ck-plain"  # corrected from the journal's H line
        self.ordered = True
        self.header = ""
        self.pos = 0
        self.acked = AckMap()  # seq -> (partition, offset)
        self.errors = []      # E lines
        self.exit_line = None
        self.acks_at = []     # (monotonic when read, total acked) for progress checks

    def read(self, violations, cycle):
        """Reads complete new journal lines; a torn last line (SIGKILL) is left."""
        try:
            with open(self.journal, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.pos += end + 1
        for raw in data[:end].split(b"\n"):
            line = raw.decode(errors="replace")
            if line.startswith("A "):
                _, p, o, s = line.split()
                p, o, s = int(p), int(o), int(s)
                old = self.acked.get(s)
                if old is not None and old != (p, o):
                    violations.add(cycle, "ack", "%s seq %d acknowledged twice: at %d/%d and at %d/%d"
                                   % (self.name, s, old[0], old[1], p, o))
                self.acked[s] = (p, o)
            elif line.startswith("H "):
                self.header = line[2:]
                self.idempotent = "idempotent=1" in line
                self.ordered = "ordered=1" in line
            elif line.startswith("E "):
                self.errors.append(line[2:])
            elif line.startswith("X "):
                self.exit_line = line[2:]


class Violations:
    def __init__(self):
        self.items = []  # (cycle, check, detail)

    def add(self, cycle, check, detail):
        self.items.append((cycle, check, detail))
        log("  VIOLATION [cycle %s, %s] %s" % (cycle, check, detail))

    def __len__(self):
        return len(self.items)


# ---------------------------------------------------------------- the verifier

SEQ_BITS = 32


class Verifier:
    def __init__(self, bootstrap, topic, partitions, violations):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.v = violations
        self.producers = {}          # name -> ProducerState
        self.by_idx = {}             # idx -> ProducerState
        self.prev = None             # partition -> array of codes from the previous verification
        self.prev_cycle = None
        self.record_checks = 0
        self.dups_nonidem = 0
        self.scanned_last = 0
        # group consumer journals
        self.consumers = []          # [(path, pos)] in start order
        self.cstate = {"lastK": {}, "maxP": {}, "assign": None, "resumes": 0, "jumps": 0, "commitsK": 0,
                       "errors": 0, "files": {}}

    def add_producer(self, st):
        self.producers[st.name] = st
        self.by_idx[st.idx] = st

    # -- consumption ------------------------------------------------------

    def read_log(self, cycle):
        """Returns (hw per partition, codes per partition) read from offset 0."""
        c = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": "torture-verifier",  # never joins or commits: assign() only
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "check.crcs": True,
            "socket.timeout.ms": 10000,
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "fetch.wait.max.ms": 50,
        })
        try:
            lows, hws = {}, {}
            for p in range(self.partitions):
                last_err = None
                for _ in range(20):
                    try:
                        lows[p], hws[p] = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10,
                                                                  cached=False)
                        break
                    except KafkaException as e:
                        last_err = e
                        time.sleep(0.5)
                else:
                    raise Violation("ListOffsets for partition %d failed 20 times: %s" % (p, last_err))
            for p in range(self.partitions):
                if lows[p] != 0:
                    self.v.add(cycle, "dense", "partition %d: log start offset is %d, not 0 (nothing should "
                               "ever be deleted)" % (p, lows[p]))
            codes = {p: array("q") for p in range(self.partitions)}
            want = {p for p in range(self.partitions) if hws[p] > lows[p]}
            if not want:
                return hws, codes
            total = sum(hws[p] - lows[p] for p in want)
            c.assign([TopicPartition(self.topic, p, lows[p]) for p in sorted(want)])
            deadline = time.monotonic() + 60 + total / 20000.0
            nxt = {p: lows[p] for p in want}
            gaps = defaultdict(list)
            bad = []
            while want:
                if time.monotonic() > deadline:
                    raise Violation("verifier could not read up to the high watermark within %.0f s: at %r, hw %r"
                                    % (deadline, nxt, hws))
                for m in c.consume(num_messages=10000, timeout=1.0):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                            raise Violation("verifier: partition %s: offset out of range below the high "
                                            "watermark: %s" % (m.partition(), err))
                        log("  verifier: consumer error (retried by the client): %s" % err)
                        continue
                    p, off = m.partition(), m.offset()
                    if p not in want or off >= hws[p]:
                        continue
                    if off != nxt[p]:
                        if off < nxt[p]:
                            continue  # a re-fetch after a consumer-internal retry
                        gaps[p].append((nxt[p], off))
                        codes[p].extend([-2] * (off - nxt[p]))
                    nxt[p] = off + 1
                    value, key = m.value(), m.key()
                    pv = parse_value(value) if value is not None else None
                    code = -1
                    if pv is not None:
                        name, seq = pv
                        st = self.producers.get(name)
                        if st is not None and value == record_value(name, seq) and key == record_key(name, seq):
                            code = (st.idx << SEQ_BITS) | seq
                    if code == -1 and len(bad) < 20:
                        bad.append((p, off, key[:40] if key else key, value[:60] if value else value))
                    codes[p].append(code)
                    if nxt[p] >= hws[p]:
                        want.discard(p)
            for p, gs in gaps.items():
                self.v.add(cycle, "dense", "partition %d: offsets missing below the high watermark %d: %s"
                           % (p, hws[p], ", ".join("%d..%d" % (a, b - 1) for a, b in gs[:10])))
            for p, off, k, val in bad:
                self.v.add(cycle, "intact", "partition %d offset %d: record is not one of ours or is corrupted: "
                           "key=%r value=%r..." % (p, off, k, val))
            return hws, codes
        finally:
            c.close()

    # -- checks ------------------------------------------------------------

    def where(self, code, codes):
        """Every partition/offset holding `code` (slow: only for reports)."""
        found = ["%d/%d" % (p, off) for p, arr in codes.items() for off, c in enumerate(arr) if c == code]
        return ", ".join(found[:10]) if found else "nowhere in the log"

    def describe(self, code):
        if code == -1:
            return "a foreign/corrupt record"
        if code == -2:
            return "a hole"
        st = self.by_idx.get(code >> SEQ_BITS)
        return "%s seq %d" % (st.name if st else "?", code & ((1 << SEQ_BITS) - 1))

    def verify(self, cycle):
        t0 = time.monotonic()
        # journals first, then the high watermarks: everything in a journal was
        # acknowledged before the high watermark is read
        for st in self.producers.values():
            st.read(self.v, cycle)
        acked_now = sum(len(st.acked) for st in self.producers.values())
        self.read_consumer_journals(cycle)
        committed = self.committed_offsets(cycle)
        hws, codes = self.read_log(cycle)
        scanned = sum(len(a) for a in codes.values())

        # (1) every acknowledged record at its offset
        verified = 0
        lost = []
        for st in self.producers.values():
            for seq, (p, off) in st.acked.items():
                code = (st.idx << SEQ_BITS) | seq
                arr = codes.get(p)
                if arr is None or off >= len(arr) or arr[off] != code:
                    lost.append((st, seq, p, off))
                else:
                    verified += 1
        for st, seq, p, off in lost[:20]:
            arr = codes.get(p)
            found = ("is beyond the high watermark %d" % hws.get(p, -1)) if (arr is None or off >= len(arr)) else \
                "holds %s" % self.describe(arr[off])
            code = (st.idx << SEQ_BITS) | seq
            self.v.add(cycle, "acked", "%s (%s) seq %d acknowledged at %d/%d, but that offset %s; the record is at %s"
                       % (st.name, st.kind, seq, p, off, found, self.where(code, codes)))
        if len(lost) > 20:
            self.v.add(cycle, "acked", "... and %d more acknowledged records not at their offsets" % (len(lost) - 20))

        # (2) exactly once / duplicates, (4) order
        counts = {}   # idx -> bytearray of occurrences per seq (saturating at 255)
        dup_idem = []
        n_dup_idem = 0
        dups_nonidem = 0
        order = []
        last_any = {}   # (idx, p) -> last seq stored (idempotent producers)
        last_acked = {}  # (idx, p) -> (last acknowledged seq, offset)
        for p in range(self.partitions):
            for off, code in enumerate(codes[p]):
                if code < 0:
                    continue
                idx, seq = code >> SEQ_BITS, code & ((1 << SEQ_BITS) - 1)
                st = self.by_idx[idx]
                cnt = counts.get(idx)
                if cnt is None or len(cnt) <= seq:
                    new = bytearray(max(seq + 1, 2 * len(cnt) if cnt else 1024))
                    if cnt:
                        new[:len(cnt)] = cnt
                    cnt = counts[idx] = new
                if cnt[seq]:
                    if st.idempotent:
                        n_dup_idem += 1
                        if cnt[seq] == 1 and len(dup_idem) < 20:
                            dup_idem.append((st, seq, p, off))
                    else:
                        dups_nonidem += 1
                if cnt[seq] < 255:
                    cnt[seq] += 1
                if st.idempotent:
                    prev = last_any.get((idx, p))
                    if prev is not None and seq <= prev[0] and len(order) < 20:
                        order.append("%s (%s, idempotent) partition %d: seq %d at offset %d after seq %d at offset %d"
                                     % (st.name, st.kind, p, seq, off, prev[0], prev[1]))
                    last_any[(idx, p)] = (seq, off)
                if st.acked.get(seq) == (p, off):
                    prev = last_acked.get((idx, p))
                    if prev is not None and seq <= prev[0] and st.ordered and len(order) < 20:
                        order.append("%s (%s) partition %d: acknowledged seq %d at offset %d after acknowledged "
                                     "seq %d at offset %d" % (st.name, st.kind, p, seq, off, prev[0], prev[1]))
                    last_acked[(idx, p)] = (seq, off)
        for st, seq, p, off in dup_idem:
            ack = st.acked.get(seq)
            self.v.add(cycle, "once", "%s (%s, idempotent) seq %d stored more than once: at %s (%s)"
                       % (st.name, st.kind, seq, self.where((st.idx << SEQ_BITS) | seq, codes),
                          "acknowledged at %d/%d" % ack if ack else "not acknowledged"))
        if n_dup_idem > len(dup_idem):
            self.v.add(cycle, "once", "%d extra copies of idempotent producers' records in all" % n_dup_idem)
        for o in order:
            self.v.add(cycle, "order", o)

        # (6) what the previous verification read is unchanged
        if self.prev is not None:
            for p in range(self.partitions):
                old, new = self.prev[p], codes[p]
                if len(new) < len(old):
                    self.v.add(cycle, "stable", "partition %d: high watermark went back from %d (cycle %s) to %d"
                               % (p, len(old), self.prev_cycle, len(new)))
                n = min(len(old), len(new))
                if old[:n] != new[:n]:
                    first = next(i for i in range(n) if old[i] != new[i])
                    self.v.add(cycle, "stable", "partition %d offset %d: was %s in cycle %s, now %s"
                               % (p, first, self.describe(old[first]), self.prev_cycle,
                                  self.describe(new[first])))
        self.prev, self.prev_cycle = codes, cycle

        # (5) committed offsets of the group survive
        lastK = self.cstate["lastK"]
        if committed is not None:
            for p, k in sorted(lastK.items()):
                got = committed.get(p)
                if got is None or got < k:
                    self.v.add(cycle, "resume", "group %s partition %d: committed offset is %s after the restart, "
                               "but a commit of %d had been acknowledged" % (GROUP, p, got, k))
        for p, k in lastK.items():
            if k > hws.get(p, 0):
                self.v.add(cycle, "resume", "partition %d: acknowledged commit %d is beyond the high watermark %d"
                           % (p, k, hws.get(p, 0)))

        self.record_checks += verified
        self.dups_nonidem = dups_nonidem
        self.scanned_last = scanned
        return {"acked": acked_now, "verified": verified, "scanned": scanned, "hw": hws,
                "dups_nonidem": dups_nonidem, "seconds": round(time.monotonic() - t0, 2),
                "resumes": self.cstate["resumes"], "commits": self.cstate["commitsK"]}

    # -- the group consumer ------------------------------------------------

    def add_consumer_journal(self, path):
        self.consumers.append(str(path))

    def read_consumer_journals(self, cycle):
        """Replays new lines of the group member's journals in order."""
        s = self.cstate
        for path in self.consumers:
            pos = s["files"].get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n")
            if end < 0:
                continue
            s["files"][path] = pos + end + 1
            for raw in data[:end].split(b"\n"):
                parts = raw.decode(errors="replace").split()
                if not parts:
                    continue
                t = parts[0]
                if t == "P":
                    p, o = int(parts[1]), int(parts[2])
                    s["maxP"][p] = max(s["maxP"].get(p, 0), o)
                elif t == "K":
                    p, o = int(parts[1]), int(parts[2])
                    s["commitsK"] += 1
                    if o < s["lastK"].get(p, 0):
                        self.v.add(cycle, "resume", "%s: commit of %d for partition %d acknowledged after a "
                                   "commit of %d (the member went back)" % (path, o, p, s["lastK"][p]))
                    s["lastK"][p] = max(s["lastK"].get(p, 0), o)
                elif t == "F":
                    p, o = int(parts[1]), int(parts[2])
                    lo, hi = s["lastK"].get(p, 0), s["maxP"].get(p, 0)
                    s["resumes"] += 1
                    if o < lo:
                        self.v.add(cycle, "resume", "group member resumed partition %d at offset %d, before its "
                                   "acknowledged commit %d (%s)" % (p, o, lo, Path(path).name))
                    elif o > hi:
                        self.v.add(cycle, "resume", "group member resumed partition %d at offset %d, beyond the "
                                   "last offset it ever committed (%d): records skipped (%s)"
                                   % (p, o, hi, Path(path).name))
                elif t == "J":
                    s["jumps"] += 1
                    self.v.add(cycle, "resume", "group member: partition %s jumped from expected offset %s to %s "
                               "within one assignment (%s)" % (parts[1], parts[2], parts[3], Path(path).name))
                elif t == "E":
                    s["errors"] += 1

    def committed_offsets(self, cycle):
        a = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 10000, "log_level": 3})
        last = None
        for _ in range(10):
            try:
                res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(GROUP)], request_timeout=15)
                got = res[GROUP].result(timeout=30)
                return {tp.partition: tp.offset for tp in got.topic_partitions
                        if tp.topic == self.topic and tp.offset >= 0 and tp.error is None}
            except Exception as e:  # the coordinator may still be loading right after a restart
                last = e
                time.sleep(0.5)
        self.v.add(cycle, "resume", "OffsetFetch for group %s failed 10 times: %s" % (GROUP, last))
        return None


# ---------------------------------------------------------------- the run

class Torture:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.results = Path(a.results_dir)
        for d in ("logs", "journals", "out"):
            (self.results / d).mkdir(parents=True, exist_ok=True)
        self.violations = Violations()
        self.broker = Broker(a.broker, self.results / "data", self.results / "logs", a.partitions,
                             a.broker_arg or [])
        self.verifier = Verifier(self.broker.bootstrap, TOPIC, a.partitions, self.violations)
        self.slots = [None] * a.producers   # Child per slot
        self.all_children = []
        self.consumer = None
        self.n_producers = 0
        self.n_consumers = 0
        self.cycle_log = []
        self.warnings = []
        self.kills = 0
        self.recovery_kills = 0

    # -- children ----------------------------------------------------------

    def start_producer(self, slot, cycle):
        self.n_producers += 1
        name = "p%d" % self.n_producers
        kind = KINDS[slot % len(KINDS)] if cycle == 1 else self.rng.choice(KINDS)
        comp = self.rng.choice(COMPRESSIONS)
        journal = self.results / "journals" / ("%s-%s.journal" % (name, kind))
        argv = [sys.executable, str(TESTS / "torture_producer.py"), "--kind", kind, "--name", name,
                "--bootstrap", self.broker.bootstrap, "--topic", TOPIC, "--journal", str(journal),
                "--rate", str(self.a.rate), "--max-seconds", str(self.a.child_max_seconds),
                "--compression", comp]
        ch = Child(name, kind, journal, argv, self.results / "out" / ("%s.out" % name))
        ch.cycle = cycle
        self.all_children.append(ch)
        self.slots[slot] = ch
        self.verifier.add_producer(ProducerState(name, self.n_producers, kind, journal))
        return ch

    def start_consumer(self, cycle):
        self.n_consumers += 1
        name = "c%d" % self.n_consumers
        journal = self.results / "journals" / ("%s-group.journal" % name)
        argv = [sys.executable, str(TESTS / "torture_consumer.py"), self.broker.bootstrap, TOPIC, GROUP,
                str(journal), name, str(self.a.child_max_seconds)]
        self.verifier.add_consumer_journal(journal)
        ch = Child(name, "group", journal, argv, self.results / "out" / ("%s.out" % name))
        ch.cycle = cycle
        self.all_children.append(ch)
        self.consumer = ch
        return ch

    def reap_dead_children(self, cycle):
        """A child that exited by itself is a client-side event worth reporting."""
        for slot, ch in enumerate(self.slots):
            if ch is not None and not ch.alive():
                rc = ch.proc.returncode
                self.warn(cycle, "producer %s (%s) exited by itself with status %s; last output:\n%s"
                          % (ch.name, ch.kind, rc, tail(ch.out_path, 8)))
                self.slots[slot] = None
        if self.consumer is not None and not self.consumer.alive():
            self.warn(cycle, "group consumer %s exited by itself with status %s; last output:\n%s"
                      % (self.consumer.name, self.consumer.proc.returncode, tail(self.consumer.out_path, 8)))
            self.consumer = None

    def warn(self, cycle, msg):
        self.warnings.append((cycle, msg))
        log("  warning [cycle %s] %s" % (cycle, msg))

    def acked_total(self, name, cycle):
        st = self.verifier.producers[name]
        st.read(self.violations, cycle)
        return len(st.acked)

    # -- one cycle -----------------------------------------------------------

    def setup(self):
        ready = self.broker.start(1, "first start")
        a = AdminClient({"bootstrap.servers": self.broker.bootstrap, "socket.timeout.ms": 10000, "log_level": 3})
        fs = a.create_topics([NewTopic(TOPIC, num_partitions=self.a.partitions, replication_factor=1)],
                             operation_timeout=15, request_timeout=15)
        fs[TOPIC].result(timeout=30)
        deadline = time.monotonic() + 20
        while True:
            md = a.list_topics(timeout=10)
            t = md.topics.get(TOPIC)
            if t is not None and t.error is None and len(t.partitions) == self.a.partitions:
                break
            if time.monotonic() > deadline:
                raise Violation("topic %s with %d partitions not in metadata within 20 s" % (TOPIC, self.a.partitions))
            time.sleep(0.2)
        log("broker %s ready in %.2f s; topic %s with %d partitions" % (self.broker.bootstrap, ready, TOPIC,
                                                                         self.a.partitions))

    def cycle(self, n):
        rng = self.rng
        t_cycle = time.monotonic()
        rec = {"cycle": n}
        self.reap_dead_children(n)
        started = []
        for slot in range(len(self.slots)):
            if self.slots[slot] is None:
                started.append(self.start_producer(slot, n).name)
        if self.consumer is None:
            started.append(self.start_consumer(n).name)
        rec["started"] = started

        # run, then SIGKILL at a random moment
        run_for = rng.uniform(0.3, 1.0) * self.a.seconds_per_cycle
        if n == 1 or started:
            run_for += 1.0  # new Python clients need a moment to start
        kill_producers = [i for i in range(len(self.slots)) if rng.random() < 0.5] if rng.random() < 0.3 else []
        kill_consumer = rng.random() < 0.2
        deadline = time.monotonic() + run_for
        while time.monotonic() < deadline:
            if not self.broker.alive():
                self.violations.add(n, "alive", "broker exited by itself with status %s (log %s):\n%s" % (
                    self.broker.proc.returncode, self.broker.log_path, tail(self.broker.log_path, 30)))
                break
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        victims = [self.slots[i] for i in kill_producers if self.slots[i] is not None]
        if kill_consumer and self.consumer is not None:
            victims.append(self.consumer)
        # the broker and the chosen clients die together, in random order
        order = victims + ["broker"]
        rng.shuffle(order)
        for v in order:
            if v == "broker":
                if self.broker.alive():
                    self.broker.proc.send_signal(signal.SIGKILL)
            else:
                v.proc.send_signal(signal.SIGKILL)
        self.broker.kill()
        for v in victims:
            v.kill()
        self.kills += 1
        rec["ran"] = round(run_for, 2)
        rec["killed"] = [v.name for v in victims]
        for i in kill_producers:
            self.slots[i] = None
        if kill_consumer:
            self.consumer = None
        at_kill = {ch.name: self.acked_total(ch.name, n) for ch in self.slots if ch is not None}

        # restart, sometimes crashing it again during recovery first
        rk = 0
        while rng.random() < 0.2 and rk < 2:
            rk += 1
            self.broker.spawn(n, "restart, to be SIGKILLed during recovery")
            time.sleep(rng.uniform(0.0, 0.4))
            self.broker.kill()
            self.recovery_kills += 1
        rec["recovery_kills"] = rk
        ready = self.broker.start(n, "restart after SIGKILL", on_retry=lambda m: self.warn(n, m))
        rec["restart_s"] = round(ready, 2)

        # surviving producers must be acknowledged again (they reconnect by themselves)
        t_wait = time.monotonic()
        waiting = {name for name in at_kill}
        while waiting and time.monotonic() - t_wait < PROGRESS_TIMEOUT:
            for name in list(waiting):
                ch = next((c for c in self.slots if c is not None and c.name == name), None)
                if ch is None or not ch.alive() or self.acked_total(name, n) > at_kill[name]:
                    waiting.discard(name)
            time.sleep(0.1)
        for name in sorted(waiting):
            self.warn(n, "producer %s made no progress within %.0f s after the restart (acked %d at the kill); "
                      "last output:\n%s" % (name, PROGRESS_TIMEOUT, at_kill[name],
                                            tail(self.results / "out" / ("%s.out" % name), 8)))
        rec["resumed_after_s"] = round(time.monotonic() - t_wait, 2)

        before = len(self.violations)
        res = self.verifier.verify(n)
        rec.update(res)
        rec["violations"] = len(self.violations) - before
        rec["broker_logs"] = [p for c, p in self.broker.logs if c == n]

        # replace some survivors cleanly (the others keep running into the next cycle)
        replaced = []
        for slot, ch in enumerate(self.slots):
            if ch is not None and rng.random() < 0.25:
                rc = ch.stop(PRODUCER_STOP_TIMEOUT)
                if rc != 0:
                    self.warn(n, "producer %s (%s) exit status %s on SIGTERM; last output:\n%s"
                              % (ch.name, ch.kind, rc, tail(ch.out_path, 8)))
                self.slots[slot] = None
                replaced.append(ch.name)
        if self.consumer is not None and rng.random() < 0.15:
            rc = self.consumer.stop(30)
            if rc != 0:
                self.warn(n, "group consumer %s exit status %s on SIGTERM" % (self.consumer.name, rc))
            replaced.append(self.consumer.name)
            self.consumer = None
        rec["replaced"] = replaced
        rec["seconds"] = round(time.monotonic() - t_cycle, 2)
        self.cycle_log.append(rec)
        with open(self.results / "cycles.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        log("cycle %d/%d: ran %.1fs, killed broker%s%s; restart %.2fs; acked %d, verified %d at their offsets, "
            "log %d records (hw %s), non-idempotent dups %d, group resumes %d; verify %.1fs%s"
            % (n, self.a.cycles, run_for, "" if not rec["killed"] else " + " + ",".join(rec["killed"]),
               "" if not rk else " (+%d during recovery)" % rk, ready, res["acked"], res["verified"],
               res["scanned"], ",".join(str(res["hw"][p]) for p in sorted(res["hw"])), res["dups_nonidem"],
               res["resumes"], res["seconds"],
               "" if not rec["violations"] else "  ** %d VIOLATIONS **" % rec["violations"]))

    def finish(self):
        """Clean stop of the clients, a final verification, SIGTERM to the broker."""
        n = "final"
        children = [c for c in self.slots if c is not None] + ([self.consumer] if self.consumer else [])
        rcs = stop_all_children(children, PRODUCER_STOP_TIMEOUT)
        for name, rc in rcs.items():
            if rc != 0:
                self.warn(n, "%s exit status %s on SIGTERM" % (name, rc))
        self.slots = [None] * len(self.slots)
        self.consumer = None
        before = len(self.violations)
        res = self.verifier.verify(n)
        unverified = res["acked"] - res["verified"]
        log("final: acked %d, verified %d at their offsets, log %d records, non-idempotent dups %d; verify %.1fs%s"
            % (res["acked"], res["verified"], res["scanned"], res["dups_nonidem"], res["seconds"],
               "" if len(self.violations) == before else "  ** %d VIOLATIONS **" % (len(self.violations) - before)))
        rc, took = self.broker.terminate()
        if rc != 0:
            self.violations.add(n, "shutdown", "broker exit status %s on SIGTERM after %.1f s (expected 0):\n%s"
                                % (rc, took, tail(self.broker.log_path, 20)))
        return res, unverified

    def cleanup(self):
        for ch in self.all_children:
            if ch.alive():
                ch.kill()
        if self.broker.alive():
            self.broker.proc.send_signal(signal.SIGKILL)
            self.broker.proc.wait(STOP_TIMEOUT)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--seconds-per-cycle", type=float, default=6.0,
                    help="longest run time before the SIGKILL (the kill comes at 30-100%% of it)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s per producer")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--broker", default=os.environ.get("BROOK_BIN", str(REPO / "target" / "release" / "brook")))
    ap.add_argument("--broker-arg", action="append", help="extra broker argument (repeatable)")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dir even when all checks pass")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop starting new cycles after this long (default: no limit)")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if a.results_dir is None:
        a.results_dir = tempfile.mkdtemp(prefix="brook-torture-%s-seed%d-" % (time.strftime("%Y%m%d-%H%M%S"), a.seed))
    a.child_max_seconds = a.cycles * (a.seconds_per_cycle + 120) + 600
    if not Path(a.broker).exists():
        sys.exit("broker binary %s does not exist (cargo build --release)" % a.broker)
    Path(a.results_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(a.results_dir) / "args.json", "w") as f:
        json.dump(vars(a), f, indent=1)

    t = Torture(a)
    log("brook torture: %d cycles, up to %.1f s each, %d partitions, %d producers at %.0f/s, seed %d"
        % (a.cycles, a.seconds_per_cycle, a.partitions, a.producers, a.rate, a.seed))
    log("broker %s; results in %s" % (a.broker, a.results_dir))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    cycles_run = 0
    final = None
    unverified = None
    aborted = None
    try:
        t.setup()
        for n in range(1, a.cycles + 1):
            if a.max_minutes and time.monotonic() - t0 > a.max_minutes * 60:
                t.warn(n, "--max-minutes reached; stopping before cycle %d" % n)
                break
            t.cycle(n)
            cycles_run = n
        final, unverified = t.finish()
    except Violation as e:
        aborted = str(e)
        t.violations.add(cycles_run + 1, "abort", aborted)
    except KeyboardInterrupt as e:
        aborted = "interrupted (%s)" % (e or "Ctrl-C")
        log(aborted)
    finally:
        t.cleanup()

    v = t.verifier
    acked = sum(len(st.acked) for st in v.producers.values())
    kinds = defaultdict(int)
    for st in v.producers.values():
        kinds["%s%s" % (st.kind, "" if st.idempotent == (st.kind != "ck-plain") else "(idem=%d)" % st.idempotent)] += 1
    summary = {
        "seed": a.seed, "cycles_requested": a.cycles, "cycles_run": cycles_run,
        "seconds": round(time.monotonic() - t0, 1),
        "broker_kills": t.kills, "kills_during_recovery": t.recovery_kills, "broker_starts": t.broker.starts,
        "producer_processes": dict(kinds), "group_consumer_processes": t.n_consumers,
        "records_acknowledged": acked,
        "records_verified_final": final["verified"] if final else None,
        "record_checks_all_cycles": v.record_checks,
        "log_records_final": v.scanned_last,
        "duplicates_non_idempotent": v.dups_nonidem,
        "delivery_errors": sum(len(st.errors) for st in v.producers.values()),
        "group_resumes_checked": v.cstate["resumes"], "group_commits_acknowledged": v.cstate["commitsK"],
        "violations": len(t.violations), "warnings": len(t.warnings), "aborted": aborted,
        "results_dir": a.results_dir,
        "per_cycle_verified": [r.get("verified", 0) for r in t.cycle_log],
    }
    with open(Path(a.results_dir) / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)

    log("")
    log("==== brook torture summary (seed %d) ====" % a.seed)
    log("cycles run:            %d of %d (%d broker SIGKILLs, %d of them during recovery; %.0f s)"
        % (cycles_run, a.cycles, t.kills + t.recovery_kills, t.recovery_kills, summary["seconds"]))
    log("producer processes:    %s; group consumer processes: %d"
        % (", ".join("%s x%d" % kv for kv in sorted(kinds.items())), t.n_consumers))
    log("records acknowledged:  %d" % acked)
    log("records verified:      %s at their acknowledged offsets in the final check; %d record checks over all cycles"
        % (summary["records_verified_final"], v.record_checks))
    log("log records (final):   %d" % v.scanned_last)
    log("duplicates (non-idempotent producers, from retries): %d" % v.dups_nonidem)
    log("delivery errors:       %d; group: %d commits acknowledged, %d resumes checked"
        % (summary["delivery_errors"], v.cstate["commitsK"], v.cstate["resumes"]))
    if t.warnings:
        log("warnings:              %d (see above and summary.json)" % len(t.warnings))
        with open(Path(a.results_dir) / "warnings.txt", "w") as f:
            for c, w in t.warnings:
                f.write("[cycle %s] %s\n" % (c, w))
    if t.violations.items:
        log("VIOLATIONS:            %d" % len(t.violations))
        with open(Path(a.results_dir) / "violations.txt", "w") as f:
            for c, check, detail in t.violations.items:
                f.write("[cycle %s] (%s) %s\n" % (c, check, detail))
        shown = 0
        for c, check, detail in t.violations.items[:30]:
            log("  [cycle %s] (%s) %s" % (c, check, detail))
        bad_cycles = sorted({c for c, _, _ in t.violations.items if isinstance(c, int)})[:5]
        for c in bad_cycles:
            for cyc, path in t.broker.logs:
                if cyc in (c - 1, c):
                    log("  -- broker log %s (warnings/errors/recovery, last lines):" % path)
                    for line in interesting_lines(path):
                        log("     " + line)
                    shown += 1
    else:
        log("violations:            none")
    if not t.violations.items and not a.keep_data and not aborted:
        shutil.rmtree(Path(a.results_dir) / "data", ignore_errors=True)
    log("results (broker log of every cycle, journals, summary.json): %s" % a.results_dir)
    sys.exit(1 if t.violations.items or aborted else 0)


if __name__ == "__main__":
    main()
