"""A real network partition of a three-broker cluster, made with Linux network
namespaces.

Each broker runs in a network namespace of its own (`ip netns exec`), on the
far end of a veth pair whose near end is a port of a bridge in the root
namespace; the addresses are in a private /24 (10.213.N.0/24, N chosen free),
nothing has a default route or NAT towards it, so no packet leaves the
machine. Each broker listens on its namespace address for clients (--listen)
and for the quorum (--controller-listen); the voters list those addresses.
The clients (confluent-kafka) run in the root namespace and reach every
broker through the bridge.

The partition cuts the active controller, which also leads partitions of the
test topic, off from both other brokers, in both directions, while the
clients can still reach it: the stale leader clients keep talking to. The
cut drops silently, as a failed link does: each side gets a permanent ARP
entry for the other side's address with a MAC address nobody has, so the
bridge floods those frames to ports where nobody takes them (established
connections stall, new ones time out). No packet filter (nftables,
iptables, tc classifiers) is needed; the kernel may not have one.

Checked, against the real binary:
  * the other two fence the cut-off broker, elect new leaders from the ISR
    for the partitions it led (the ISRs shrink to the two of them) and a new
    active controller among themselves;
  * an idempotent acks=all producer, bootstrapped from all three, keeps
    getting writes acknowledged on those partitions through the new leaders;
  * the cut-off broker acknowledges no acks=all write: Produce requests sent
    straight to it (right after the cut, and again once the others have
    fenced it) get an error, never an offset, also when the partition heals
    under them; as in Kafka, the ones sent right after the cut are answered
    (REQUEST_TIMED_OUT, or any other error) once their timeout_ms has passed,
    not held until the partition heals; its high watermark does not move while
    it is alone;
  * after the heal it learns it was replaced, truncates its divergent tail,
    catches up and is back in the ISR of every partition (and leads its
    preferred ones again, so the final read comes partly from its copy);
  * the final read of every partition from the beginning, record by record:
    offsets dense from 0, every key at most once, values intact, keys in
    order per partition, every acknowledged record at its acknowledged
    (partition, offset), none of the records sent straight to the cut-off
    broker, and every record a consumer read during the test still at the
    offset where it was read;
  * once the brokers have stopped, each one's copy of every partition, read
    from its segment files, holds exactly what the final read returned.

Every wait is bounded; nothing is asserted about timing. The namespaces,
veths and bridge carry this process's pid in their names, are removed at the
end whatever happens, and leftovers of dead runs are removed at the start.
Brokers log at RUST_LOG (default info); on a failure each broker's log tail
and its replication/quorum lines are printed.
"""

import gc
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import KafkaException, TopicPartition, OFFSET_BEGINNING

import kproto as kp
from cluster_util import create
from conftest import Broker, tail
from util import admin, consume_all, consumer, key_index, payload, producer, unique_topic, wait_until

SESSION_MS = 3000
LAG_MS = 3000
PARTITIONS = 6
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093
RATE = 600                # records per second offered by the producer
MAX_RECORDS = 200_000     # the producer stops here whatever happens
PROBE_TIMEOUT_MS = 3000   # the Produce timeout_ms of the requests sent straight to the cut-off broker
MOVE_ON_WAIT = 25         # s after the fence for the writes to go on through the new leaders

NS_PREFIX = "brooknp"     # namespaces: brooknp<pid>n<i>
BRIDGE_PREFIX = "bnpb"    # bridge: bnpb<pid>
HOST_IF_PREFIX = "bnpv"   # root-namespace end of a veth: bnpv<pid>n<i> (15 chars at most)
NS_IF_PREFIX = "bnpp"     # namespace end of a veth: bnpp<pid>n<i>
SAFETY_METRIC = "4093"    # of the `unreachable` route for the test's /24 (see Net.create)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------- the network

def ip(*args, check=True, timeout=20):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("ip %s exited %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers():
    """Namespaces, veths and bridges of earlier runs of this test whose
    process is gone (a run killed before its cleanup)."""
    pat = re.compile(r"^(%s|%s|%s|%s)(\d+)" % (NS_PREFIX, BRIDGE_PREFIX, HOST_IF_PREFIX, NS_IF_PREFIX))
    links = ip("-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = pat.match(name)
        if m and m.group(1) in (BRIDGE_PREFIX, HOST_IF_PREFIX) and not _pid_alive(int(m.group(2))):
            ip("link", "del", name, check=False)
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = pat.match(name)
        if m and m.group(1) == NS_PREFIX and not _pid_alive(int(m.group(2))):
            # Brokers of a run killed before its teardown live on in there.
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
            ip("netns", "del", name, check=False)
    addrs = ip("-4", "-o", "addr", check=False).stdout
    for line in ip("-4", "route", "show", check=False).stdout.splitlines():
        m = re.match(r"unreachable (10\.213\.(\d+)\.0/24) .*metric %s" % SAFETY_METRIC, line)
        if m and "10.213.%s.254/24" % m.group(2) not in addrs:
            ip("route", "del", "unreachable", m.group(1), "metric", SAFETY_METRIC, check=False)


def pick_subnet():
    """A 10.213.N.0/24 that no address or route of the root namespace touches."""
    used = ip("-4", "route", "show", "table", "all", check=False).stdout + ip("-4", "addr", check=False).stdout
    start = 100 + os.getpid() % 100
    for k in range(200):
        n = 20 + (start + k) % 230
        if "10.213.%d." % n not in used:
            return n
    raise AssertionError("no free 10.213.N.0/24 subnet")


class Net:
    """Three namespaces on a bridge; node i (1-based) at 10.213.N.i."""

    def __init__(self, n=3):
        tag = str(os.getpid())
        self.bridge = BRIDGE_PREFIX + tag
        self.ns = ["%s%sn%d" % (NS_PREFIX, tag, i) for i in range(1, n + 1)]
        self.host_if = ["%s%sn%d" % (HOST_IF_PREFIX, tag, i) for i in range(1, n + 1)]
        self.ns_if = ["%s%sn%d" % (NS_IF_PREFIX, tag, i) for i in range(1, n + 1)]
        self.subnet = pick_subnet()
        self.addr = ["10.213.%d.%d" % (self.subnet, i) for i in range(1, n + 1)]
        self.gateway = "10.213.%d.254" % self.subnet  # the bridge: the clients' side
        self.subnet_cidr = "10.213.%d.0/24" % self.subnet
        self.cuts = []

    def create(self):
        r = ip("netns", "add", self.ns[0], check=False)
        if r.returncode != 0:
            pytest.skip("the kernel refuses to create a network namespace (ip netns add: %s)" % r.stderr.strip())
        for ns in self.ns[1:]:
            ip("netns", "add", ns)
        ip("link", "add", self.bridge, "type", "bridge")
        self._no_ipv6(self.bridge)
        ip("addr", "add", self.gateway + "/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        # Behind the bridge's own route: should a client still try an address
        # of the subnet once the bridge is gone, it fails here instead of
        # leaving through the default route.
        ip("route", "add", "unreachable", self.subnet_cidr, "metric", SAFETY_METRIC)
        for i, ns in enumerate(self.ns):
            ip("link", "add", self.host_if[i], "type", "veth", "peer", "name", self.ns_if[i], "netns", ns)
            self._no_ipv6(self.host_if[i])
            ip("link", "set", self.host_if[i], "master", self.bridge)
            ip("link", "set", self.host_if[i], "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", self.addr[i] + "/24", "dev", self.ns_if[i])
            ip("-n", ns, "link", "set", self.ns_if[i], "up")

    @staticmethod
    def _no_ipv6(dev):
        # Keeps the links quiet (no router solicitations on the bridge).
        try:
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % dev, "w") as f:
                f.write("1")
        except OSError:
            pass

    def destroy(self):
        # Deleting a veth deletes its pair at once; a namespace's own devices
        # go away asynchronously after `netns del`, hence veths first.
        for dev in self.host_if + [self.bridge]:
            ip("link", "del", dev, check=False)
        for ns in self.ns:
            ip("netns", "del", ns, check=False)
        ip("route", "del", "unreachable", self.subnet_cidr, "metric", SAFETY_METRIC, check=False)
        left = [d for d in self.host_if + [self.bridge] if ip("link", "show", d, check=False).returncode == 0]
        left += [ns for ns in self.ns if ns in ip("netns", "list", check=False).stdout]
        if self.subnet_cidr in ip("-4", "route", "show", check=False).stdout:
            left.append("route " + self.subnet_cidr)
        return left

    @staticmethod
    def _nowhere(i):
        return "02:de:ad:be:ef:%02x" % (i + 1)

    def cut(self, i, others):
        """Node i and each of `others` stop hearing each other (both ways)."""
        for j in others:
            ip("-n", self.ns[i], "neigh", "replace", self.addr[j], "lladdr", self._nowhere(j),
               "dev", self.ns_if[i], "nud", "permanent")
            self.cuts.append((i, j))
            ip("-n", self.ns[j], "neigh", "replace", self.addr[i], "lladdr", self._nowhere(i),
               "dev", self.ns_if[j], "nud", "permanent")
            self.cuts.append((j, i))

    def heal(self):
        for i, j in self.cuts:
            ip("-n", self.ns[i], "neigh", "del", self.addr[j], "dev", self.ns_if[i], check=False)
        self.cuts = []

    def can_connect(self, i, addr, port, timeout=1.0):
        """Whether a TCP connection from node i's namespace (or the root
        namespace when i is None) to addr:port is accepted within timeout."""
        if i is None:
            try:
                socket.create_connection((addr, port), timeout=timeout).close()
                return True
            except OSError:
                return False
        code = ("import socket,sys\n"
                "try:\n socket.create_connection((%r, %d), timeout=%r).close()\n"
                "except OSError:\n sys.exit(1)\n" % (addr, port, timeout))
        r = subprocess.run(["ip", "netns", "exec", self.ns[i], sys.executable, "-c", code],
                           capture_output=True, timeout=timeout + 20)
        return r.returncode == 0


# ---------------------------------------------------------------- brokers

class NsBroker(Broker):
    """A conftest.Broker run inside a network namespace on its address."""

    def __init__(self, workdir, ns, host, node):
        super().__init__(workdir)
        self.ns = ns
        self.node = node
        self.host, self.port = host, CLIENT_PORT
        self.bootstrap = "%s:%d" % (host, CLIENT_PORT)

    def args(self):
        return ["ip", "netns", "exec", self.ns] + super().args()

    def connections(self):
        try:
            out = subprocess.run(["ip", "netns", "exec", self.ns, "ss", "-tanp"], capture_output=True,
                                 timeout=10, text=True).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return "<ss failed: %s>" % e
        return out.strip() or "<none>"


def start_cluster(tmp_path, net):
    voters = ",".join("%d@%s:%d" % (i + 1, a, CONTROLLER_PORT) for i, a in enumerate(net.addr))
    brokers = []
    for i, a in enumerate(net.addr):
        b = NsBroker(tmp_path / ("node%d" % (i + 1)), net.ns[i], a, i + 1)
        cfg = b.workdir / "brook.toml"
        cfg.write_text('"broker.session.timeout.ms" = %d\n'
                       '"replica.lag.time.max.ms" = %d\n'
                       '"leader.imbalance.check.interval.seconds" = 2\n' % (SESSION_MS, LAG_MS))
        b.extra_args = ["--node-id", str(i + 1), "--voters", voters,
                        "--controller-listen", "%s:%d" % (a, CONTROLLER_PORT),
                        "--config", str(cfg), "--no-pin"]
        brokers.append(b)
    for b in brokers:
        b.start()
    return brokers


def log_of(b):
    return ANSI.sub("", b.log_text())


CONTROLLER_LINE = re.compile(r"became the active controller.*?node=(\d+).*?term=(\d+)")


def active_controller(brokers):
    """(node, term) of the latest 'became the active controller' line of any
    broker's log: the quorum's leader of the highest term (None if none)."""
    best = None
    for b in brokers:
        for m in CONTROLLER_LINE.finditer(log_of(b)):
            node, term = int(m.group(1)), int(m.group(2))
            if best is None or term > best[1]:
                best = (node, term)
    return best


INTERESTING = re.compile(r"controller|fenc|ISR|truncat|leading|following|register|snapshot|panick|ERROR|WARN|"
                         r"brook ready|stopped")


def report_logs(brokers):
    for b in brokers:
        lines = [l for l in log_of(b).splitlines()
                 if (INTERESTING.search(l) and "__consumer_offsets" not in l) or l.startswith("====")]
        print("---- node %d (%s): quorum/replication lines ----\n%s" % (b.node, b.ns, "\n".join(lines[-80:])))
        print("---- node %d log tail (%s) ----\n%s" % (b.node, b.log_path, ANSI.sub("", tail(b.log_path, 30))))


# ---------------------------------------------------------------- clients

def view(via, topic):
    """(live brokers, {partition: (leader, isr)}) from Metadata, or None."""
    try:
        md = admin(via.bootstrap).list_topics(topic, timeout=5)
    except KafkaException:
        return None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return sorted(md.brokers), {p.id: (p.leader, sorted(p.isrs)) for p in t.partitions.values()}


def live_brokers(b):
    try:
        return sorted(admin(b.bootstrap).list_topics(timeout=5).brokers)
    except KafkaException:
        return None


def _replicas(via, topic):
    md = admin(via.bootstrap).list_topics(topic, timeout=10)
    return {p.id: list(p.replicas) for p in md.topics[topic].partitions.values()}


class Load(threading.Thread):
    """An idempotent acks=all producer writing keys k0, k1, ... at RATE until
    stopped; every delivery report is kept."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.topic = topic
        self.p = producer(bootstrap, acks="all", **{"enable.idempotence": True,
                                                    "compression.type": "none",  # see stored_records
                                                    "message.timeout.ms": 60000,
                                                    "request.timeout.ms": 5000,
                                                    # clients learn of new leaders from periodic metadata
                                                    # too, not only from errors
                                                    "topic.metadata.refresh.interval.ms": 1000})
        self.lock = threading.Lock()
        self.acked = {}                       # key -> (partition, offset)
        self.failed = {}                      # key -> error
        self.per_partition = defaultdict(int)  # acknowledged count
        self.stop = threading.Event()
        self.abort = threading.Event()   # the test failed: give up on what is still queued
        self.sent = 0
        self.left = None
        self.exc = None

    def on_delivery(self, err, msg):
        with self.lock:
            if err is not None:
                self.failed[msg.key()] = str(err)
            else:
                self.acked[msg.key()] = (msg.partition(), msg.offset())
                self.per_partition[msg.partition()] += 1

    def counts(self):
        with self.lock:
            return dict(self.per_partition)

    def run(self):
        try:
            t0 = time.monotonic()
            i = 0
            while not self.stop.is_set() and i < MAX_RECORDS:
                while i > (time.monotonic() - t0) * RATE and not self.stop.is_set():
                    self.p.poll(0.01)
                queued = False
                while not queued and not self.stop.is_set():
                    try:
                        self.p.produce(self.topic, key=("k%d" % i).encode(), value=payload(i),
                                       on_delivery=self.on_delivery)
                        queued = True
                    except BufferError:
                        self.p.poll(0.05)
                if not queued:
                    break
                i += 1
                self.sent = i
                self.p.poll(0)
            deadline = time.monotonic() + 90
            left = len(self.p)
            while left and time.monotonic() < deadline and not self.abort.is_set():
                left = self.p.flush(1)
            self.left = left
        except BaseException as e:  # reported by the test
            self.exc = e
        finally:
            # No client may outlive the network: one left connecting to an
            # address whose bridge is gone would send through the default route.
            if self.abort.is_set():
                self.p.purge()
                self.p.poll(0)
            self.p = None


class Watcher(threading.Thread):
    """A consumer reading every partition from the beginning while the test
    runs: what it read at each (partition, offset), and its errors."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.topic = topic
        self.c = consumer(bootstrap, **{"enable.partition.eof": False, "topic.metadata.refresh.interval.ms": 1000})
        self.seen = {}          # (partition, offset) -> (key, value)
        self.changed = []       # the same offset read twice with different records
        self.errors = []
        self.stop = threading.Event()
        self.exc = None

    def run(self):
        try:
            self.c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            while not self.stop.is_set():
                for m in self.c.consume(num_messages=1000, timeout=0.5):
                    if m.error() is not None:
                        self.errors.append(str(m.error()))
                        continue
                    at = (m.partition(), m.offset())
                    rec = (m.key(), m.value())
                    old = self.seen.get(at)
                    if old is not None and old != rec:
                        self.changed.append((at, old[0], rec[0]))
                    self.seen[at] = rec
        except BaseException as e:
            self.exc = e
        finally:
            self.close()

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


class Probe(threading.Thread):
    """One acks=all Produce of a single record sent straight to `broker` for
    `partition`, over a raw connection; its answer (or none) is kept."""

    def __init__(self, broker, topic, partition, key, wait):
        super().__init__(daemon=True)
        self.broker, self.topic, self.partition, self.key, self.wait = broker, topic, partition, key, wait
        self.result = None
        self.conn = None

    def run(self):
        try:
            self.conn = kp.Conn(self.broker.bootstrap, timeout=self.wait)
            batch = kp.encode_batch([(self.key, b"sent to the cut-off broker")])
            err, base = self.conn.produce(self.topic, self.partition, batch, acks=-1,
                                          timeout_ms=PROBE_TIMEOUT_MS)
            self.result = ("answered", err, base)
        except socket.timeout:
            self.result = ("no answer",)
        except (kp.ConnectionClosed, OSError) as e:
            self.result = ("closed", str(e))
        except BaseException as e:
            self.result = ("raised", repr(e))
        finally:
            if self.conn is not None:
                self.conn.close()

    def abandon(self):
        if self.conn is not None:
            try:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def high_watermark(broker, topic, partition):
    """(error, high watermark) of a Fetch at 0 straight to `broker`, or None."""
    try:
        with kp.Conn(broker.bootstrap, timeout=10) as c:
            f = c.fetch(topic, partition, 0, max_wait_ms=0, min_bytes=0, max_bytes=1024)
            return f["error"], f["high_watermark"]
    except (OSError, kp.ConnectionClosed, AssertionError):
        return None


# ---------------------------------------------------------------- the check

def stored_records(part_dir):
    """{offset: (key, value)} of a stopped broker's copy of a partition, read
    from its segment files (ARCHITECTURE.md, "On-disk format": RecordBatch v2
    back to back, then preallocated zeros; every batch's CRC is checked)."""
    recs = {}
    for seg in sorted(part_dir.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            _base, length = struct.unpack_from(">qi", data, pos)
            if length <= 0 or pos + 12 + length > len(data):
                break
            for b in kp.decode_batches(data[pos:pos + 12 + length]):
                assert b["attributes"] & 0x07 == 0, "%s: a compressed batch at %d" % (seg, b["base_offset"])
                for off, _ts, key, value in b["records"]:
                    recs[off] = (key, value)
            pos += 12 + length
    return recs


def check_copies(brokers, topic, final):
    """Each broker's copy of every partition holds, below the end of the final
    read, exactly what the read returned (the old leader's above all)."""
    problems = []
    for b in brokers:
        for p, recs in sorted(final.items()):
            stored = stored_records(b.data_dir / ("%s-%d" % (topic, p)))
            bad = [r[0] for r in recs if stored.get(r[0]) != (r[1], r[2])]
            if bad:
                problems.append("node %d's copy of partition %d differs from the final read at %d offsets, e.g. %r "
                                "(stored %r)" % (b.node, p, len(bad), bad[:5], [stored.get(o, (None,))[0]
                                                                                for o in bad[:5]]))
    return problems



def check_final(final, acked, probe_keys, seen):
    """The final read against everything known: returns (problems, how many
    unacknowledged records are stored)."""
    found = defaultdict(list)   # kind of problem -> examples
    where = {}
    for p in sorted(final):
        recs = final[p]
        offs = [r[0] for r in recs]
        if offs != list(range(len(offs))):
            gap = next(k for k, o in enumerate(offs) if o != k)
            found["offsets not dense from 0"].append("partition %d at index %d: %r" % (p, gap, offs[gap:gap + 5]))
        last = -1
        for off, key, value, _ts in recs:
            if key in probe_keys:
                found["records sent only to the cut-off broker are in the log"].append((p, off, key))
                continue
            if key in where:
                found["records stored twice"].append((key, where[key], (p, off)))
            where[key] = (p, off)
            i = key_index(key)
            if value != payload(i):
                found["bad values"].append((p, off, key, value[:40]))
            if i <= last:
                found["order broken within a partition"].append("partition %d offset %d: k%d after k%d"
                                                                % (p, off, i, last))
            last = i
    missing = sorted((k for k in acked if k not in where), key=key_index)
    found["acknowledged records missing (key, acknowledged at)"] = [(k, acked[k]) for k in missing]
    found["acknowledged records not at their acknowledged place (key, acknowledged, found)"] = [
        (k, acked[k], where[k]) for k in acked if k in where and where[k] != acked[k]]
    by_offset = {(p, r[0]): (r[1], r[2]) for p, recs in final.items() for r in recs}
    found["records a consumer read during the test are not there any more ((partition, offset), read, now)"] = sorted(
        (at, rec[0], by_offset.get(at, (None,))[0]) for at, rec in seen.items() if by_offset.get(at) != rec)
    problems = ["%d %s, e.g. %r" % (len(ex), kind, ex[:5]) for kind, ex in found.items() if ex]
    # Failed sends may or may not have been stored (a timeout is not a no).
    unacked_stored = sum(1 for k in where if k not in acked)
    return problems, unacked_stored


# ---------------------------------------------------------------- the test

def mark(brokers, what):
    """A line in every broker's log, to read the logs against the test's steps."""
    line = "==== test: %s at %s\n" % (what, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    for b in brokers:
        with open(b.log_path, "ab") as f:
            f.write(line.encode())


def test_controller_and_leader_cut_off_from_its_peers(tmp_path):
    if shutil.which("ip") is None:
        pytest.fail("the `ip` command (iproute2) is needed to build network namespaces")
    t_start = time.monotonic()
    remove_leftovers()
    net = Net()
    brokers = []
    load = watcher = None
    probes = []
    problems = []   # found along the way; the scenario goes on to the end, then they fail the test
    passed = False
    try:
        net.create()
        brokers = start_cluster(tmp_path, net)
        nodes = [1, 2, 3]
        for b in brokers:
            wait_until(lambda: live_brokers(b) == nodes, 30,
                       what="brokers %r in node %d's metadata" % (nodes, b.node))

        topic = unique_topic("netsplit")
        create(None, topic, PARTITIONS, via=brokers[0], rf=3, config={"min.insync.replicas": "2"})
        wait_until(lambda: (lambda v: v is not None and len(v[1]) == PARTITIONS and
                            all(l in nodes and isr == nodes for l, isr in v[1].values()))(view(brokers[0], topic)),
                   30, what="%d partitions led, ISR [1, 2, 3]" % PARTITIONS)
        bootstrap = ",".join(b.bootstrap for b in brokers)
        load = Load(bootstrap, topic)
        load.start()
        watcher = Watcher(bootstrap, topic)
        watcher.start()
        wait_until(lambda: len(load.acked) >= 2000, 60, what="2000 records acknowledged before the cut")
        wait_until(lambda: len(watcher.seen) >= 500, 30, what="the consumer reading")

        # The victim: the active controller if it leads a partition (it
        # always does with 6 partitions over 3 brokers), else partition 0's leader.
        _, parts = view(brokers[0], topic)
        leaders = {p: l for p, (l, _) in parts.items()}
        ctl = active_controller(brokers)
        if ctl is not None and ctl[0] in leaders.values():
            victim, why = ctl[0], "the active controller (term %d)" % ctl[1]
        else:
            victim, why = leaders[0], "partition 0's leader (controller: %r)" % (ctl,)
        vi = victim - 1
        others = [n for n in nodes if n != victim]
        peers = [brokers[n - 1] for n in others]
        led = sorted(p for p, l in leaders.items() if l == victim)
        print("victim: node %d, %s, leading partitions %r; leaders %r" % (victim, why, led, leaders))

        # ---- the cut
        acked_before_cut = len(load.acked)
        mark(brokers, "CUT node %d off from nodes %r" % (victim, others))
        net.cut(vi, [n - 1 for n in others])
        t_cut = time.monotonic()
        for n in others:
            assert not net.can_connect(vi, net.addr[n - 1], CLIENT_PORT), "node %d still reaches node %d" % (victim, n)
            assert not net.can_connect(n - 1, net.addr[vi], CLIENT_PORT), "node %d still reaches node %d" % (n, victim)
        assert net.can_connect(None, net.addr[vi], CLIENT_PORT), "the clients no longer reach node %d" % victim
        # Straight to the cut-off broker, which still believes it leads:
        # acks=all writes it must not acknowledge. Kafka answers such a
        # request REQUEST_TIMED_OUT after its timeout_ms; the answer is read
        # whenever it comes (also after the heal).
        for p in led:
            probes.append(Probe(brokers[vi], topic, p, b"probe-cut-%d" % p, wait=150))
        for pr in probes:
            pr.start()
        hw_alone = {p: high_watermark(brokers[vi], topic, p) for p in led}
        print("cut at +%.1fs, %d acknowledged; node %d's high watermarks (error, hw) %r"
              % (t_cut - t_start, acked_before_cut, victim, hw_alone))

        # The majority fences it, elects new leaders from the ISR and a new
        # active controller.
        def fenced():
            v = view(peers[0], topic)
            return v is not None and v[0] == others and all(
                l in others and isr == others for l, isr in v[1].values())
        wait_until(fenced, SESSION_MS / 1000 + 30, interval=0.25,
                   what="node %d fenced: every partition led from %r, ISR %r" % (victim, others, others))
        t_fenced = time.monotonic()
        mark(brokers, "the majority has fenced node %d" % victim)
        if ctl is not None and ctl[0] == victim:
            new_ctl = active_controller(peers)
            assert new_ctl is not None and new_ctl[1] > ctl[1], (
                "no new active controller among %r (latest: %r)" % (others, new_ctl))
            print("new active controller: node %d (term %d)" % new_ctl)

        # Writes go on through the new leaders of the victim's partitions,
        # and the requests sent straight to the victim are answered (with an
        # error: it cannot reach its ISR).
        at_fence = load.counts()

        def moved_on():
            c = load.counts()
            return all(c.get(p, 0) >= at_fence.get(p, 0) + 100 for p in led)

        def answered():
            return all(pr.result is not None for pr in probes)
        deadline = time.monotonic() + MOVE_ON_WAIT
        while time.monotonic() < deadline and not (moved_on() and answered()):
            time.sleep(0.2)
        counts = load.counts()
        if not moved_on():
            problems.append(
                "the producer's acks=all writes did not go on through the new leaders of partitions %r within %ds "
                "of the fence (acknowledged per partition at the fence %r, %ds later %r; an idempotent "
                "librdkafka producer moves a partition to its new leader only once its requests in flight to "
                "the old one, node %d, are answered, which Kafka does after their timeout_ms at the latest)"
                % (led, MOVE_ON_WAIT, {p: at_fence.get(p, 0) for p in led}, MOVE_ON_WAIT,
                   {p: counts.get(p, 0) for p in led}, victim))
        if not answered():
            problems.append(
                "node %d, cut off from its ISR, never answered acks=all Produce requests with timeout_ms=%d "
                "(%.0fs after they were sent; Kafka answers REQUEST_TIMED_OUT once timeout_ms has passed): %r"
                % (victim, PROBE_TIMEOUT_MS, time.monotonic() - t_cut,
                   [(pr.partition, pr.result) for pr in probes if pr.result is None]))
        # Once fenced, still alone: another straight write must not be
        # acknowledged either, and its high watermark has not moved.
        late = [Probe(brokers[vi], topic, p, b"probe-fenced-%d" % p, wait=150) for p in led]
        for pr in late:
            pr.start()
        probes += late
        hw_later = {p: high_watermark(brokers[vi], topic, p) for p in led}
        for p in led:
            a, b = hw_alone[p], hw_later[p]
            if a is not None and b is not None and a[0] == 0 and b[0] == 0 and b[1] != a[1]:
                problems.append("the cut-off node %d moved partition %d's high watermark from %d to %d while alone"
                                % (victim, p, a[1], b[1]))
        time.sleep(1)  # the late probes reach the victim before the heal
        print("fenced +%.1fs after the cut; at the heal %d acknowledged, per partition %r; probes so far %r"
              % (t_fenced - t_cut, len(load.acked), sorted(load.counts().items()),
                 [(pr.partition, pr.key, pr.result) for pr in probes]))

        # ---- the heal
        mark(brokers, "HEAL")
        net.heal()
        t_heal = time.monotonic()
        for n in others:
            wait_until(lambda: net.can_connect(vi, net.addr[n - 1], CLIENT_PORT), 20,
                       what="node %d reaching node %d again" % (victim, n))

        def rejoined(via):
            v = view(via, topic)
            return v is not None and v[0] == nodes and all(isr == nodes for _, isr in v[1].values())
        wait_until(lambda: rejoined(peers[0]) and rejoined(brokers[vi]), 90, interval=0.25,
                   what="node %d back in the cluster and in every ISR" % victim)
        t_rejoined = time.monotonic()
        mark(brokers, "node %d back in every ISR" % victim)
        # The probes: never acknowledged, and answered (with an error) once
        # the victim knows it no longer leads.
        deadline = time.monotonic() + 30
        for pr in probes:
            pr.join(max(0.0, deadline - time.monotonic()))
        results = [(pr.partition, pr.key, pr.result) for pr in probes]
        print("probes sent straight to node %d: %r" % (victim, results))
        acked_probes = [r for r in results if r[2] and r[2][0] == "answered" and r[2][1] == 0]
        assert not acked_probes, "the cut-off broker acknowledged acks=all writes: %r" % acked_probes
        hung = [r for r in results if r[2] is None]
        for pr in probes:
            pr.abandon()
        if hung:
            problems.append("node %d never answered acks=all Produce requests it got while cut off, even 30 s "
                            "after it was back in every ISR as a follower: %r" % (victim, hung))

        # Leadership of its preferred partitions comes back to the victim
        # (the final read then comes partly from its copy).
        preferred = _replicas(brokers[0], topic)
        wait_until(lambda: (lambda v: v is not None and all(v[1][p][0] == preferred[p][0] for p in preferred))(
            view(peers[0], topic)), 30, what="preferred leaders restored")

        load.stop.set()
        load.join(120)
        assert not load.is_alive(), "the producer did not finish"
        assert load.exc is None, "producer thread failed: %r" % load.exc
        assert load.left == 0, "%d records neither acknowledged nor failed" % load.left
        watcher.stop.set()
        watcher.join(30)
        assert watcher.exc is None, "consumer thread failed: %r" % watcher.exc
        print("produced %d: %d acknowledged, %d failed (e.g. %r); consumer read %d, errors %r"
              % (load.sent, len(load.acked), len(load.failed), list(load.failed.items())[:3],
                 len(watcher.seen), watcher.errors[:5]))
        if watcher.changed:
            problems.append("the consumer read different records at the same offset: %r" % watcher.changed[:5])
        resets = [e for e in watcher.errors if "reset" in e.lower() or "out of range" in e.lower()
                  or "truncat" in e.lower()]
        if resets:
            problems.append("the consumer's position became invalid (records it read vanished?): %r" % resets[:5])

        final = consume_all(bootstrap, topic, PARTITIONS, timeout=60)
        probe_keys = {pr.key for pr in probes}
        found, unacked_stored = check_final(final, load.acked, probe_keys, watcher.seen)
        problems += found
        # Every copy, the returning broker's above all, holds what the
        # consumers read: stop the brokers and read their files.
        mark(brokers, "stopping")
        stopped = [(b.node, b.stop_for_teardown()) for b in brokers]
        assert not [e for _, e in stopped if e], "brokers did not stop cleanly: %r" % stopped
        problems += check_copies(brokers, topic, final)
        truncations = log_of(brokers[vi]).count("truncating a diverged follower log")
        print("final: %d records, %d acknowledged, %d unacknowledged ones stored; node %d truncated %d times; "
              "cut +%.1fs, fenced +%.1fs after it, rejoined +%.1fs after the heal; %.1fs in all"
              % (sum(len(r) for r in final.values()), len(load.acked), unacked_stored, victim, truncations,
                 t_cut - t_start, t_fenced - t_cut, t_rejoined - t_heal, time.monotonic() - t_start))
        assert not problems, "\n".join(problems)
        passed = True
    except BaseException:
        if brokers:
            report_logs(brokers)
        if problems:
            print("problems found before that:\n%s" % "\n".join(problems))
        raise
    finally:
        # Clients go first (none may outlive the network), then brokers,
        # then the network.
        if load is not None and load.is_alive():
            load.abort.set()
            load.stop.set()
            load.join(30)
        if watcher is not None and watcher.is_alive():
            watcher.stop.set()
            watcher.join(10)
        if load is not None and not load.is_alive():
            load.p = None     # never started
        if watcher is not None and not watcher.is_alive():
            watcher.close()   # never started
        for pr in probes:
            pr.abandon()
        gc.collect()  # admin clients of the metadata checks
        net.heal()
        errors = []
        for b in brokers:
            err = b.stop_for_teardown()
            if err:
                errors.append("node %d: %s" % (b.node, err))
        for b in brokers:
            if b.proc is not None and b.proc.poll() is None:
                os.killpg(b.proc.pid, signal.SIGKILL)
                b.proc.wait(10)
        left = net.destroy()
        if passed:
            for b in brokers:
                shutil.rmtree(b.data_dir, ignore_errors=True)
        if errors and passed:
            for b in brokers:
                print("---- node %d log tail ----\n%s" % (b.node, tail(b.log_path, 40)))
            pytest.fail("; ".join(errors))
        if left and passed:
            pytest.fail("network devices or namespaces left behind: %r" % left)
