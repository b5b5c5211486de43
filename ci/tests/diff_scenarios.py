"""Scenarios of the differential suite (test_differential.py).

Each scenario is a function `fn(ctx)` that drives one broker through the
protocol and records what a client can observe with `ctx.obs(key, value)`. The
same function runs against Apache Kafka and against Brook with the same topic
and group names; the two observation dicts are then compared key by key.

Normalisation happens where a value is recorded, and only for what legitimately
differs between two clusters: topic ids and producer ids (recorded as "set" when
valid), the cluster id, node ids and ports ("self" for the broker itself),
member ids (aliases m1, m2, … in order of appearance), timestamps assigned by
the broker (recorded relative to the client's own timestamps, or as "set"),
throttle times and free-text error messages (not recorded).
"""

import hashlib
import json
import socket
import struct
import threading
import time
import uuid

import kproto as kp
from diff_wire import (REQUESTS, Closed, Conn, CreateTopicsRequest, DeleteGroupsRequest,
                       DeleteTopicsRequest, DescribeGroupsRequest, FetchRequest,
                       FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest,
                       JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest,
                       MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
                       SyncGroupRequest, ApiVersionsRequest, api_name)

SCENARIOS = {}
MISSING = "<missing>"
# Bounds for the loops that wait for a broker (Kafka's asynchronous topic
# creation and deletion, coordinator loading): bounded, never timing assertions.
SETTLE_TRIES = 100
SETTLE_SLEEP = 0.1
T0 = 1_700_000_000_000  # client-assigned timestamps are T0 + n (well in the past)


def scenario(sid):
    def deco(fn):
        assert sid not in SCENARIOS, sid
        SCENARIOS[sid] = fn
        return fn
    return deco


class Ctx:
    def __init__(self, bootstrap, run_id, sid, versions, own_versions, brook_versions):
        self.bootstrap = bootstrap
        self.run_id = run_id
        self.sid = sid
        self.versions = versions          # api_key -> common version
        self.own_versions = own_versions  # this broker's ApiVersions table
        self.brook_versions = brook_versions
        self.observed = {}
        self.conns = []
        self.node_id = None
        self.port = int(bootstrap.rsplit(":", 1)[1])
        self._members = {}

    # -- plumbing ----------------------------------------------------------

    def conn(self, timeout=20.0):
        c = Conn(self.bootstrap, timeout=timeout)
        self.conns.append(c)
        return c

    def close(self):
        for c in self.conns:
            c.close()

    def v(self, api_key):
        return self.versions[api_key]

    def obs(self, key, value):
        """Records one observation; a dict is flattened into key.subkey entries so
        that a difference names the exact field."""
        if isinstance(value, dict):
            for k, v in value.items():
                self.obs("%s.%s" % (key, k), v)
            return
        assert key not in self.observed, "observed twice: %s" % key
        self.observed[key] = jsonable(value)

    def name(self, suffix=""):
        base = "diff-%s-%s" % (self.run_id, self.sid.replace(".", "-").replace("_", "-"))
        return base + ("-" + suffix if suffix else "")

    def node(self, nid):
        if self.node_id is None:
            with Conn(self.bootstrap) as c:
                r = c.call(MetadataRequest, self.v(3), topics=[], allow_auto_topic_creation=False)
                self.node_id = r.brokers[0].node_id
        return "self" if nid == self.node_id else nid

    def self_id(self):
        self.node(-1)
        return self.node_id

    def port_of(self, p):
        return "self" if p == self.port else p

    def scrub(self, b):
        """Bytes a client sent that contain this run's names (subscriptions)."""
        if b is None:
            return None
        return jsonable(bytes(b).replace(self.name().encode(), b"T"))

    def member(self, mid):
        if mid in (None, ""):
            return mid
        if mid not in self._members:
            self._members[mid] = "m%d" % (len(self._members) + 1)
        return self._members[mid]


def jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return "b:" + b.decode("ascii") if all(32 <= c < 127 for c in b) else "hex:" + b.hex()
        except UnicodeDecodeError:
            return "hex:" + b.hex()
    if isinstance(v, str) and len(v) > 48:
        return "str(len=%d,sha1=%s)" % (len(v), hashlib.sha1(v.encode()).hexdigest()[:8])
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return v


def render(v):
    """How a value is written in COMPATIBILITY.md: compact JSON."""
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def run(fn, ctx):
    """Runs one scenario; a connection the broker closes (or a request it never
    answers) ends the scenario and is itself recorded."""
    try:
        fn(ctx)
    except Closed:
        ctx.observed["aborted"] = "connection closed by broker"
    except socket.timeout:
        ctx.observed["aborted"] = "request timed out"
    finally:
        ctx.close()
    return ctx.observed


def diff(a, b):
    keys = sorted(set(a) | set(b))
    return {k: (a.get(k, MISSING), b.get(k, MISSING)) for k in keys if a.get(k, MISSING) != b.get(k, MISSING)}


# ---------------------------------------------------------------- helpers

def S(parent, field, version, **kw):
    """A nested struct of request class `parent`: S(JoinGroupRequest, 'protocols', v, name=...)"""
    return getattr(parent, parent.fields[field].type_str)(version=version, **kw)


def S2(parent, f1, f2, version, **kw):
    outer = getattr(parent, parent.fields[f1].type_str)
    return getattr(outer, outer.fields[f2].type_str)(version=version, **kw)


def create_topics(ctx, c, topics, validate_only=False, version=None):
    """topics: list of (name, partitions, replication_factor, {config: value}[, assignments]).
    Returns the response's topic entries by name (as dicts)."""
    v = version if version is not None else ctx.v(19)
    entries = []
    for t in topics:
        name, parts, rf, configs = t[:4]
        assignments = t[4] if len(t) > 4 else []
        entries.append(S(CreateTopicsRequest, "topics", v, name=name, num_partitions=parts,
                         replication_factor=rf,
                         assignments=[S2(CreateTopicsRequest, "topics", "assignments", v,
                                         partition_index=i, broker_ids=b) for i, b in assignments],
                         configs=[S2(CreateTopicsRequest, "topics", "configs", v, name=k, value=val)
                                  for k, val in configs.items()]))
    r = c.call(CreateTopicsRequest, v, topics=entries, timeout_ms=15000, validate_only=validate_only)
    return [t.to_dict() for t in r.topics]


def metadata(ctx, c, topics, auto=False, version=None):
    v = version if version is not None else ctx.v(3)
    if topics is None:
        tl = None
    else:
        tl = [S(MetadataRequest, "topics", v, name=t, topic_id=None) if v >= 10 else
              S(MetadataRequest, "topics", v, name=t) for t in topics]
    return c.call(MetadataRequest, v, topics=tl, allow_auto_topic_creation=auto,
                  include_cluster_authorized_operations=False,
                  include_topic_authorized_operations=False)


def wait_topic(ctx, c, name, partitions):
    """Bounded wait until Metadata shows `name` with `partitions` led partitions
    (Kafka propagates a new topic to its metadata cache asynchronously)."""
    last = None
    for _ in range(SETTLE_TRIES):
        r = metadata(ctx, c, [name])
        t = r.topics[0]
        last = (t.error_code, len(t.partitions))
        if t.error_code == 0 and len(t.partitions) == partitions and all(p.leader_id >= 0 for p in t.partitions):
            return True
        time.sleep(SETTLE_SLEEP)
    return last


def create(ctx, c, name, partitions=1, configs=None):
    res = create_topics(ctx, c, [(name, partitions, 1, configs or {})])
    assert res[0]["error_code"] == 0, "setup: CreateTopics %s: %r" % (name, res)
    ready(ctx, c, name, partitions)


def ready(ctx, c, name, partitions):
    assert wait_topic(ctx, c, name, partitions) is True, "setup: topic %s not in metadata" % name
    # Kafka's metadata cache can name a leader a moment before that replica
    # serves the partition (NOT_LEADER_OR_FOLLOWER): wait until each answers.
    for p in range(partitions):
        err = None
        for _ in range(SETTLE_TRIES):
            err = list_offsets(ctx, c, name, p, -1)["error"]
            if err == 0:
                break
            time.sleep(SETTLE_SLEEP)
        assert err == 0, "setup: %s-%d not served: error %s" % (name, p, err)


def wait_topic_gone(ctx, c, name):
    last = None
    for _ in range(SETTLE_TRIES):
        last = metadata(ctx, c, [name]).topics[0].error_code
        if last == 3:
            return last
        time.sleep(SETTLE_SLEEP)
    return last


def produce(ctx, c, topic, partition, records, acks=-1, version=None, transactional_id=None):
    """Returns the partition response as a dict (error, base_offset, log_start,
    log_append_time normalised), or the whole response for several partitions."""
    v = version if version is not None else ctx.v(0)
    T = S(ProduceRequest, "topic_data", v, name=topic,
          partition_data=[S2(ProduceRequest, "topic_data", "partition_data", v, index=partition,
                             records=records)])
    r = c.call(ProduceRequest, v, transactional_id=transactional_id, acks=acks, timeout_ms=10000,
               topic_data=[T])
    if r is None:
        return None
    return pr(r.responses[0].partition_responses[0])


def pr(p):
    d = dict(error=p.error_code, base_offset=p.base_offset)
    if hasattr(p, "log_append_time_ms"):
        d["log_append_time"] = p.log_append_time_ms
    if hasattr(p, "log_start_offset"):
        d["log_start_offset"] = p.log_start_offset
    if getattr(p, "record_errors", None):
        d["record_errors"] = [(e.batch_index, ) for e in p.record_errors]
    return d


def batch(values, ts=T0, **kw):
    return kp.encode_batch([(None if v is None else ("k%d" % i).encode(), v) for i, v in enumerate(values)],
                           base_timestamp=ts, **kw)


def fetch(ctx, c, topic, partition, offset, max_bytes=1 << 20, isolation=0, max_wait_ms=0,
          version=None, session_id=0, session_epoch=-1):
    v = version if version is not None else ctx.v(1)
    P = S2(FetchRequest, "topics", "partitions", v, partition=partition, current_leader_epoch=-1,
           fetch_offset=offset, last_fetched_epoch=-1, log_start_offset=-1,
           partition_max_bytes=max_bytes)
    T = S(FetchRequest, "topics", v, topic=topic, partitions=[P])
    r = c.call(FetchRequest, v, replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=0, max_bytes=max_bytes,
               isolation_level=isolation, session_id=session_id, session_epoch=session_epoch,
               topics=[T], forgotten_topics_data=[], rack_id="")
    return r


def fetch_part(r):
    p = r.responses[0].partitions[0]
    d = dict(error=p.error_code, hw=p.high_watermark, lso=p.last_stable_offset,
             log_start=p.log_start_offset, aborted=None if p.aborted_transactions is None
             else [(a.producer_id, a.first_offset) for a in p.aborted_transactions],
             preferred_read_replica=p.preferred_read_replica)
    d["batches"] = batches(p.records or b"")
    return d


def batches(data):
    out = []
    for b in kp.decode_batches(bytes(data)):
        out.append(dict(base=b["base_offset"], count=b["count"], leader_epoch=b["leader_epoch"],
                        pid="set" if b["producer_id"] >= 0 else b["producer_id"],
                        seq=b["base_sequence"], attrs=b["attributes"],
                        records=[(o, ts - T0, k, v) for o, ts, k, v in b["records"]]))
    return out


def list_offsets(ctx, c, topic, partition, timestamp, version=None, isolation=0, extra_parts=()):
    v = version if version is not None else ctx.v(2)
    parts = [S2(ListOffsetsRequest, "topics", "partitions", v, partition_index=p, current_leader_epoch=-1,
                timestamp=ts, max_num_offsets=1) for p, ts in [(partition, timestamp)] + list(extra_parts)]
    r = c.call(ListOffsetsRequest, v, replica_id=-1, isolation_level=isolation,
               topics=[S(ListOffsetsRequest, "topics", v, name=topic, partitions=parts)], timeout_ms=10000)
    out = []
    for p in r.topics[0].partitions:
        ts = p.timestamp
        d = dict(error=p.error_code, offset=p.offset,
                 timestamp=(ts - T0) if ts is not None and ts >= T0 else ts)
        if v >= 4:
            d["leader_epoch"] = p.leader_epoch
        out.append(d)
    return out[0] if not extra_parts else [tuple(sorted(d.items())) for d in out]


def find_coordinator(ctx, c, key, key_type=0, version=None, retry=True):
    """(error, node, host, port) with retries while the coordinator loads
    (COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS, bounded)."""
    v = version if version is not None else ctx.v(10)
    res = None
    for _ in range(SETTLE_TRIES if retry else 1):
        if v >= 4:
            r = c.call(FindCoordinatorRequest, v, key_type=key_type, coordinator_keys=[key])
            x = r.coordinators[0]
            res = (x.error_code, ctx.node(x.node_id), x.host, ctx.port_of(x.port))
        else:
            r = c.call(FindCoordinatorRequest, v, key=key, key_type=key_type)
            res = (r.error_code, ctx.node(r.node_id), r.host, ctx.port_of(r.port))
        if res[0] not in (14, 15):
            return res
        time.sleep(SETTLE_SLEEP)
    return res


def subscription(topics):
    return kp.i16(0) + kp.array([kp.string(t) for t in topics]) + kp.bytes_(None)


def assignment(parts):
    """parts: {topic: [partitions]}"""
    return (kp.i16(0) + kp.array([kp.string(t) + kp.array([kp.i32(p) for p in ps]) for t, ps in parts.items()])
            + kp.bytes_(None))


def join(ctx, c, group, member_id="", protocols=(("range", None),), protocol_type="consumer",
         session_ms=10000, rebalance_ms=10000, version=None, instance=None, topics=("t",)):
    v = version if version is not None else ctx.v(11)
    protos = [S(JoinGroupRequest, "protocols", v, name=n, metadata=m if m is not None else subscription(topics))
              for n, m in protocols]
    r = c.call(JoinGroupRequest, v, timeout=40, group_id=group, session_timeout_ms=session_ms,
               rebalance_timeout_ms=rebalance_ms, member_id=member_id, group_instance_id=instance,
               protocol_type=protocol_type, protocols=protos, reason=None)
    return r


def join_obs(ctx, r):
    d = dict(error=r.error_code, generation=r.generation_id, protocol_name=r.protocol_name,
             leader=ctx.member(r.leader), member=ctx.member(r.member_id),
             members=sorted([ctx.member(m.member_id), m.group_instance_id, ctx.scrub(m.metadata)]
                            for m in r.members))
    if hasattr(r, "protocol_type"):
        d["protocol_type"] = r.protocol_type
    if hasattr(r, "skip_assignment"):
        d["skip_assignment"] = r.skip_assignment
    return d


def join_member(ctx, c, group, **kw):
    """JoinGroup v4+: the MEMBER_ID_REQUIRED round trip, then the real join."""
    r = join(ctx, c, group, **kw)
    if r.error_code == 79:
        kw["member_id"] = r.member_id
        return join(ctx, c, group, **kw)
    return r


def sync(ctx, c, group, gen, member_id, assignments=(), protocol_type="consumer", protocol_name="range",
         version=None):
    v = version if version is not None else ctx.v(14)
    a = [S(SyncGroupRequest, "assignments", v, member_id=m, assignment=b) for m, b in assignments]
    return c.call(SyncGroupRequest, v, timeout=40, group_id=group, generation_id=gen, member_id=member_id,
                  group_instance_id=None, protocol_type=protocol_type, protocol_name=protocol_name,
                  assignments=a)


def sync_obs(ctx, r):
    d = dict(error=r.error_code, assignment=ctx.scrub(r.assignment))
    if hasattr(r, "protocol_type"):
        d["protocol_type"] = r.protocol_type
        d["protocol_name"] = r.protocol_name
    return d


def heartbeat(ctx, c, group, gen, member_id, version=None):
    v = version if version is not None else ctx.v(12)
    return c.call(HeartbeatRequest, v, group_id=group, generation_id=gen, member_id=member_id,
                  group_instance_id=None).error_code


def leave(ctx, c, group, member_ids, version=None):
    v = version if version is not None else ctx.v(13)
    if v >= 3:
        r = c.call(LeaveGroupRequest, v, group_id=group,
                   members=[S(LeaveGroupRequest, "members", v, member_id=m, group_instance_id=None, reason=None)
                            for m in member_ids])
        return dict(error=r.error_code, members=[(ctx.member(m.member_id), m.error_code) for m in r.members])
    r = c.call(LeaveGroupRequest, v, group_id=group, member_id=member_ids[0])
    return dict(error=r.error_code)


def describe(ctx, c, groups, version=None):
    v = version if version is not None else ctx.v(15)
    r = c.call(DescribeGroupsRequest, v, groups=groups, include_authorized_operations=False)
    out = []
    for g in r.groups:
        out.append(dict(error=g.error_code, group=g.group_id, state=g.group_state,
                        protocol_type=g.protocol_type, protocol=g.protocol_data,
                        members={ctx.member(m.member_id): dict(
                            instance=m.group_instance_id, client_id=m.client_id, client_host=m.client_host,
                            metadata=ctx.scrub(m.member_metadata), assignment=ctx.scrub(m.member_assignment))
                            for m in g.members}))
    return out[0] if len(out) == 1 else out


def commit(ctx, c, group, offsets, gen=-1, member_id="", version=None):
    """offsets: {(topic, partition): (offset, metadata)}. Returns {"topic/p": error}."""
    v = version if version is not None else ctx.v(8)
    by_topic = {}
    for (t, p), (o, m) in offsets.items():
        by_topic.setdefault(t, []).append(
            S2(OffsetCommitRequest, "topics", "partitions", v, partition_index=p, committed_offset=o,
               committed_leader_epoch=-1, committed_metadata=m))
    r = c.call(OffsetCommitRequest, v, group_id=group, generation_id_or_member_epoch=gen, member_id=member_id,
               group_instance_id=None, retention_time_ms=-1,
               topics=[S(OffsetCommitRequest, "topics", v, name=t, partitions=ps) for t, ps in by_topic.items()])
    return {"%s/%d" % (t.name, p.partition_index): p.error_code for t in r.topics for p in t.partitions}


def offset_fetch(ctx, c, group, topics, version=None):
    """topics: {topic: [partitions]} or None (all). Returns dict(error, offsets={"t/p": (offset, meta, epoch, err)})."""
    v = version if version is not None else ctx.v(9)
    if v >= 8:
        tl = None if topics is None else [S2(OffsetFetchRequest, "groups", "topics", v, name=t, partition_indexes=ps)
                                          for t, ps in topics.items()]
        r = c.call(OffsetFetchRequest, v, require_stable=False,
                   groups=[S(OffsetFetchRequest, "groups", v, group_id=group, topics=tl)])
        g = r.groups[0]
        err, ts = g.error_code, g.topics
    else:
        tl = None if topics is None else [S(OffsetFetchRequest, "topics", v, name=t, partition_indexes=ps)
                                          for t, ps in topics.items()]
        r = c.call(OffsetFetchRequest, v, group_id=group, topics=tl, require_stable=False)
        err, ts = getattr(r, "error_code", None), r.topics
    offs = {}
    for t in ts:
        for p in t.partitions:
            offs["%s/%d" % (t.name, p.partition_index)] = (p.committed_offset, p.metadata,
                                                           getattr(p, "committed_leader_epoch", None), p.error_code)
    return dict(error=err, offsets=offs)


def short(ctx, d):
    """Replace this scenario's name prefix in keys of an offsets dict."""
    pre = ctx.name()
    if isinstance(d, dict):
        return {k.replace(pre, "T"): short(ctx, x) for k, x in d.items()}
    return d


def threaded(fn, *args, **kw):
    """Runs fn in a thread; returns a getter that joins (bounded) and returns its result."""
    box = {}

    def target():
        try:
            box["r"] = fn(*args, **kw)
        except BaseException as e:  # noqa: B902 - re-raised in the getter
            box["e"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()

    def get(timeout=60):
        th.join(timeout)
        assert not th.is_alive(), "background request did not finish within %ds" % timeout
        if "e" in box:
            raise box["e"]
        return box["r"]
    return get


# ================================================================ ApiVersions

@scenario("api_versions.ranges")
def _(ctx):
    """The version range of every API Brook lists, on each broker."""
    with ctx.conn() as c:
        table = c.api_versions()
    for key in sorted(ctx.brook_versions):
        ctx.obs(api_name(key), list(table[key]) if key in table else "absent")


@scenario("api_versions.v3_request")
def _(ctx):
    """ApiVersions v3 (flexible, with client software name/version) answers the same table as v0."""
    c = ctx.conn()
    v0 = c.api_versions()
    r = c.call(ApiVersionsRequest, ctx.v(18), client_software_name="brook-diff", client_software_version="1.0")
    ctx.obs("error", r.error_code)
    ctx.obs("same_table_as_v0", {a.api_key: (a.min_version, a.max_version) for a in r.api_keys} == v0)


@scenario("api_versions.unsupported_version")
def _(ctx):
    """ApiVersions v99: UNSUPPORTED_VERSION and the table, encoded as v0."""
    c = ctx.conn()
    v0 = c.api_versions()
    body = kp.uvarint(len(b"brook-diff") + 1) + b"brook-diff" + kp.uvarint(2) + b"1" + kp.uvarint(0)
    corr = c.corr = c.corr + 1
    hdr = kp.i16(18) + kp.i16(99) + kp.i32(corr) + kp.string("brook-diff") + kp.uvarint(0)
    c.send_frame(hdr + body)
    data = c.recv_frame()
    r = kp.Reader(data)
    ctx.obs("correlation_ok", r.i32() == corr)
    ctx.obs("error", r.i16())
    apis = r.array(lambda r: (r.i16(), r.i16(), r.i16()))
    ctx.obs("trailing_bytes", r.remaining())
    table = {k: (lo, hi) for k, lo, hi in apis}
    ctx.obs("table", "same as v0" if table == v0 else sorted(api_name(k) for k in table))
    ctx.obs("connection_usable_after", c.api_versions() == v0)


# ================================================================ Metadata

@scenario("metadata.topic")
def _(ctx):
    """A created topic: partitions, leader, replicas, epochs, brokers, controller."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 3)
    r = metadata(ctx, c, [t])
    ctx.obs("brokers", [(ctx.node(b.node_id), b.host, ctx.port_of(b.port), b.rack) for b in r.brokers])
    ctx.obs("controller", ctx.node(r.controller_id))
    ctx.obs("cluster_id", "set" if r.cluster_id else r.cluster_id)
    x = r.topics[0]
    ctx.obs("topic.error", x.error_code)
    ctx.obs("topic.name_matches", x.name == t)
    ctx.obs("topic.is_internal", x.is_internal)
    ctx.obs("topic.topic_id", "set" if x.topic_id not in (None, uuid.UUID(int=0)) else str(x.topic_id))
    ctx.obs("topic.authorized_operations", x.authorized_operations)
    ctx.obs("partitions", [(p.partition_index, p.error_code, ctx.node(p.leader_id), p.leader_epoch,
                            [ctx.node(n) for n in p.replica_nodes], [ctx.node(n) for n in p.isr_nodes],
                            p.offline_replicas) for p in sorted(x.partitions, key=lambda p: p.partition_index)])


@scenario("metadata.all_versions")
def _(ctx):
    """Every Metadata version both list, for an existing topic."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 2)
    lo = max(ctx.own_versions[3][0], ctx.brook_versions[3][0])
    for v in range(lo, ctx.v(3) + 1):
        r = metadata(ctx, c, [t], version=v, auto=False)
        x = r.topics[0]
        ctx.obs("v%d" % v, (x.error_code, len(x.partitions), ctx.node(r.controller_id) if v >= 1 else None))


@scenario("metadata.unknown_topic")
def _(ctx):
    """Unknown topic with allow_auto_topic_creation=false: UNKNOWN_TOPIC_OR_PARTITION, not created."""
    c = ctx.conn()
    t = ctx.name()
    r = metadata(ctx, c, [t], auto=False)
    ctx.obs("error", r.topics[0].error_code)
    ctx.obs("partitions", len(r.topics[0].partitions))
    ctx.obs("still_unknown", metadata(ctx, c, [t], auto=False).topics[0].error_code)


@scenario("metadata.auto_create")
def _(ctx):
    """allow_auto_topic_creation=true creates the topic with num.partitions partitions."""
    c = ctx.conn()
    t = ctx.name()
    r = metadata(ctx, c, [t], auto=True)
    first = r.topics[0]
    ctx.obs("first.error", first.error_code)
    ctx.obs("eventually", wait_topic(ctx, c, t, 1))
    ready(ctx, c, t, 1)
    ctx.obs("produce_after", produce(ctx, c, t, 0, batch([b"v"]))["error"])


@scenario("metadata.auto_create_v0")
def _(ctx):
    """Metadata v1 (before the allow_auto_topic_creation flag) auto-creates."""
    c = ctx.conn()
    t = ctx.name()
    r = metadata(ctx, c, [t], version=1)
    ctx.obs("first.error", r.topics[0].error_code)
    ctx.obs("eventually", wait_topic(ctx, c, t, 1))


@scenario("metadata.auto_create_bad_names")
def _(ctx):
    """Auto-creation of invalid names: each is refused, nothing is created."""
    c = ctx.conn()
    for label, name in [("too_long", "x" * 250), ("invalid_chars", "bad name!"), ("dot", "."),
                        ("dotdot", ".."), ("empty", "")]:
        r = metadata(ctx, c, [name], auto=True)
        ctx.obs(label, (r.topics[0].error_code, len(r.topics[0].partitions)))


@scenario("metadata.all_topics")
def _(ctx):
    """topics=null lists every topic (ours included, __consumer_offsets as internal); topics=[] lists none."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    r = metadata(ctx, c, None)
    names = {x.name: x for x in r.topics}
    ctx.obs("ours_listed", t in names)
    co = names.get("__consumer_offsets")
    ctx.obs("__consumer_offsets", None if co is None else (co.is_internal, len(co.partitions)))
    r = metadata(ctx, c, [])
    ctx.obs("empty_list.topics", len(r.topics))


# ================================================================ CreateTopics

@scenario("create_topics.ok")
def _(ctx):
    """A valid CreateTopics: response fields, then the topic is usable."""
    c = ctx.conn()
    t = ctx.name()
    res = create_topics(ctx, c, [(t, 3, 1, {"retention.ms": "3600000"})])[0]
    ctx.obs("error", res["error_code"])
    ctx.obs("num_partitions", res.get("num_partitions"))
    ctx.obs("replication_factor", res.get("replication_factor"))
    ctx.obs("topic_id", "set" if res.get("topic_id") not in (None, "00000000-0000-0000-0000-000000000000",
                                                             "AAAAAAAAAAAAAAAAAAAAAA") else res.get("topic_id"))
    cfgs = {x["name"]: x for x in (res.get("configs") or [])}
    ctx.obs("configs.retention.ms", cfgs.get("retention.ms", {}).get("value"))
    ctx.obs("configs.max.message.bytes", cfgs.get("max.message.bytes", {}).get("value"))
    ctx.obs("configs.cleanup.policy", cfgs.get("cleanup.policy", {}).get("value"))
    ctx.obs("metadata", wait_topic(ctx, c, t, 3))


@scenario("create_topics.partitions")
def _(ctx):
    """Partition counts: 0 and negative other than -1 are INVALID_PARTITIONS; -1 takes num.partitions."""
    c = ctx.conn()
    for label, n in [("zero", 0), ("minus5", -5), ("default", -1)]:
        t = ctx.name(label)
        res = create_topics(ctx, c, [(t, n, 1, {})])[0]
        ctx.obs(label + ".error", res["error_code"])
        ctx.obs(label + ".num_partitions", res.get("num_partitions"))


@scenario("create_topics.replication_factor")
def _(ctx):
    """Replication factors: 0, 2 and -2 refused on one node; -1 takes the default."""
    c = ctx.conn()
    for label, rf in [("zero", 0), ("two", 2), ("minus2", -2), ("default", -1)]:
        t = ctx.name(label)
        res = create_topics(ctx, c, [(t, 1, rf, {})])[0]
        ctx.obs(label + ".error", res["error_code"])
        ctx.obs(label + ".replication_factor", res.get("replication_factor"))


@scenario("create_topics.configs")
def _(ctx):
    """Unknown config names and unparsable values are INVALID_CONFIG."""
    c = ctx.conn()
    for label, cfg in [("unknown_name", {"no.such.config": "1"}),
                       ("bad_number", {"retention.ms": "soon"}),
                       ("bad_enum", {"cleanup.policy": "sometimes"}),
                       ("null_value", {"retention.ms": None}),
                       ("max_message_bytes", {"max.message.bytes": "2048"})]:
        res = create_topics(ctx, c, [(ctx.name(label), 1, 1, cfg)])[0]
        ctx.obs(label, res["error_code"])


@scenario("create_topics.names")
def _(ctx):
    """Topic name rules: length, characters, '.', '..', empty; 249 characters is fine."""
    c = ctx.conn()
    base = ctx.name()
    for label, name in [("len249", (base + "x" * 249)[:249]), ("len250", (base + "x" * 250)[:250]),
                        ("space", base + " x"), ("slash", base + "/x"), ("non_ascii", base + "\u00e9"),
                        ("dot", "."), ("dotdot", ".."), ("empty", ""),
                        ("legal_chars", base + "-A_z.9")]:
        res = create_topics(ctx, c, [(name, 1, 1, {})])[0]
        ctx.obs(label, res["error_code"])


@scenario("create_topics.collision")
def _(ctx):
    """'a.b' then 'a_b' collide (metric names); the second is refused."""
    c = ctx.conn()
    base = ctx.name()
    ctx.obs("dotted", create_topics(ctx, c, [(base + ".a", 1, 1, {})])[0]["error_code"])
    ctx.obs("underscored", create_topics(ctx, c, [(base + "_a", 1, 1, {})])[0]["error_code"])


@scenario("create_topics.exists")
def _(ctx):
    """Creating an existing topic: TOPIC_ALREADY_EXISTS, also with validate_only."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("again", create_topics(ctx, c, [(t, 1, 1, {})])[0]["error_code"])
    ctx.obs("again_validate_only", create_topics(ctx, c, [(t, 1, 1, {})], validate_only=True)[0]["error_code"])
    ctx.obs("__consumer_offsets", create_topics(ctx, c, [("__consumer_offsets", 1, 1, {})])[0]["error_code"])


@scenario("create_topics.validate_only")
def _(ctx):
    """validate_only checks without creating."""
    c = ctx.conn()
    t = ctx.name()
    res = create_topics(ctx, c, [(t, 2, 1, {})], validate_only=True)[0]
    ctx.obs("error", res["error_code"])
    ctx.obs("num_partitions", res.get("num_partitions"))
    ctx.obs("bad_partitions", create_topics(ctx, c, [(t + "-z", 0, 1, {})], validate_only=True)[0]["error_code"])
    ctx.obs("metadata_after", metadata(ctx, c, [t]).topics[0].error_code)


@scenario("create_topics.duplicate_in_request")
def _(ctx):
    """The same name twice in one request: INVALID_REQUEST."""
    c = ctx.conn()
    t = ctx.name()
    res = create_topics(ctx, c, [(t, 1, 1, {}), (t, 1, 1, {})])
    ctx.obs("errors", [x["error_code"] for x in res])


@scenario("create_topics.assignment")
def _(ctx):
    """Manual replica assignments: onto this broker is fine; onto an unknown broker is INVALID_REPLICA_ASSIGNMENT."""
    c = ctx.conn()
    me = ctx.self_id()
    ok = create_topics(ctx, c, [(ctx.name("ok"), -1, -1, {}, [(0, [me]), (1, [me])])])[0]
    ctx.obs("ok", (ok["error_code"], ok.get("num_partitions")))
    bad = create_topics(ctx, c, [(ctx.name("bad"), -1, -1, {}, [(0, [me + 100])])])[0]
    ctx.obs("unknown_broker", bad["error_code"])
    both = create_topics(ctx, c, [(ctx.name("both"), 2, -1, {}, [(0, [me])])])[0]
    ctx.obs("with_partition_count", both["error_code"])


# ================================================================ DeleteTopics

@scenario("delete_topics.unknown")
def _(ctx):
    c = ctx.conn()
    v = ctx.v(20)
    t = ctx.name()
    if v >= 6:
        r = c.call(DeleteTopicsRequest, v, timeout_ms=15000,
                   topics=[S(DeleteTopicsRequest, "topics", v, name=t, topic_id=uuid.UUID(int=0))])
    else:
        r = c.call(DeleteTopicsRequest, v, timeout_ms=15000, topic_names=[t])
    ctx.obs("by_name", r.responses[0].error_code)
    r = c.call(DeleteTopicsRequest, 1, timeout_ms=15000, topic_names=[t])
    ctx.obs("by_name_v1", r.responses[0].error_code)
    if v >= 6:
        r = c.call(DeleteTopicsRequest, v, timeout_ms=15000,
                   topics=[S(DeleteTopicsRequest, "topics", v, name=None, topic_id=uuid.uuid4())])
        ctx.obs("by_unknown_id", r.responses[0].error_code)


@scenario("delete_topics.existing")
def _(ctx):
    """Delete, then the topic is gone; re-created under the same name it starts at offset 0."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"a", b"b"]))
    r = c.call(DeleteTopicsRequest, 1, timeout_ms=15000, topic_names=[t])
    ctx.obs("delete", r.responses[0].error_code)
    ctx.obs("metadata_after", wait_topic_gone(ctx, c, t))
    ctx.obs("produce_after", produce(ctx, c, t, 0, batch([b"x"]))["error"])
    ok = None
    for _ in range(SETTLE_TRIES):  # Kafka removes the old log asynchronously
        ok = create_topics(ctx, c, [(t, 1, 1, {})])[0]["error_code"]
        if ok == 0:
            break
        time.sleep(SETTLE_SLEEP)
    ctx.obs("recreate", ok)
    ready(ctx, c, t, 1)
    ctx.obs("produce_recreated", produce(ctx, c, t, 0, batch([b"y"]))["base_offset"])


@scenario("delete_topics.by_id")
def _(ctx):
    """DeleteTopics v6 by topic id."""
    c = ctx.conn()
    v = ctx.v(20)
    t = ctx.name()
    create(ctx, c, t, 1)
    tid = metadata(ctx, c, [t]).topics[0].topic_id
    r = c.call(DeleteTopicsRequest, v, timeout_ms=15000,
               topics=[S(DeleteTopicsRequest, "topics", v, name=None, topic_id=tid)])
    x = r.responses[0]
    ctx.obs("error", x.error_code)
    ctx.obs("name_returned", x.name == t)
    ctx.obs("metadata_after", wait_topic_gone(ctx, c, t))


# ================================================================ Produce

@scenario("produce.offsets")
def _(ctx):
    """Base offsets, log start offset and log_append_time (-1 under CreateTime) per batch."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    for i, n in enumerate([1, 5, 2]):
        ctx.obs("batch%d" % i, produce(ctx, c, t, 0, batch([b"v%d" % j for j in range(n)], ts=T0 + i)))
    for v in (3, 5, 7):
        ctx.obs("v%d" % v, produce(ctx, c, t, 0, batch([b"old"]), version=v))


@scenario("produce.unknown")
def _(ctx):
    """Unknown topic (auto-creation does not happen on Produce), unknown and negative partitions."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 2)
    ctx.obs("unknown_topic", produce(ctx, c, ctx.name("nope"), 0, batch([b"v"]))["error"])
    ctx.obs("unknown_topic_created", metadata(ctx, c, [ctx.name("nope")]).topics[0].error_code)
    ctx.obs("partition_2", produce(ctx, c, t, 2, batch([b"v"]))["error"])
    ctx.obs("partition_-1", produce(ctx, c, t, -1, batch([b"v"]))["error"])


@scenario("produce.oversized_batch")
def _(ctx):
    """A batch bigger than the topic's max.message.bytes: MESSAGE_TOO_LARGE, nothing stored."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1, {"max.message.bytes": "1000"})
    ctx.obs("small", produce(ctx, c, t, 0, batch([b"x" * 100]))["error"])
    ctx.obs("big", produce(ctx, c, t, 0, batch([b"x" * 2000])))
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])


@scenario("produce.oversized_default")
def _(ctx):
    """A batch over the broker default message.max.bytes (1048588)."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("big", produce(ctx, c, t, 0, batch([b"x" * 1_100_000]))["error"])
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])


@scenario("produce.corrupt")
def _(ctx):
    """A bad CRC (CORRUPT_MESSAGE) and a truncated batch (INVALID_RECORD)."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("bad_crc", produce(ctx, c, t, 0, batch([b"v"], corrupt_crc=True))["error"])
    ctx.obs("truncated", produce(ctx, c, t, 0, batch([b"v"])[:-3])["error"])
    ctx.obs("good_after", produce(ctx, c, t, 0, batch([b"v"]))["base_offset"])


@scenario("produce.bad_acks")
def _(ctx):
    """acks=2: INVALID_REQUIRED_ACKS."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("acks2", produce(ctx, c, t, 0, batch([b"v"]), acks=2)["error"])
    ctx.obs("acks1", produce(ctx, c, t, 0, batch([b"v"]), acks=1)["error"])


@scenario("produce.acks0")
def _(ctx):
    """acks=0: no response; the record is stored."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"fire"]), acks=0)
    hw = None
    for _ in range(SETTLE_TRIES):
        hw = fetch_part(fetch(ctx, c, t, 0, 0))["hw"]
        if hw == 1:
            break
        time.sleep(SETTLE_SLEEP)
    ctx.obs("hw", hw)


@scenario("produce.empty_records")
def _(ctx):
    """A partition with zero bytes of records."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("empty", produce(ctx, c, t, 0, b"")["error"])


@scenario("produce.magic_v1")
def _(ctx):
    """A message-format v1 (magic 1) message set in Produce v3+."""
    import zlib
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    body = kp.i8(1) + kp.i8(0) + kp.i64(T0) + kp.bytes_(b"k") + kp.bytes_(b"v")
    msg = kp.u32(zlib.crc32(body)) + body
    ctx.obs("error", produce(ctx, c, t, 0, kp.i64(0) + kp.i32(len(msg)) + msg)["error"])


@scenario("produce.future_timestamp")
def _(ctx):
    """CreateTime far ahead of the broker clock (log.message.timestamp.after.max.ms)."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    now = int(time.time() * 1000)
    ctx.obs("plus_1_day", produce(ctx, c, t, 0, batch([b"v"], ts=now + 86_400_000))["error"])
    ctx.obs("year_2001", produce(ctx, c, t, 0, batch([b"v"], ts=1_000_000_000_000))["error"])


@scenario("produce.timestamp_configs")
def _(ctx):
    """message.timestamp.after.max.ms / before.max.ms as topic configs: the
    bounds move with them (and the record with no timestamp, -1, passes)."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1, {"message.timestamp.after.max.ms": "172800000",
                          "message.timestamp.before.max.ms": "3600000"})
    now = int(time.time() * 1000)
    ctx.obs("plus_1_day", produce(ctx, c, t, 0, batch([b"v"], ts=now + 86_400_000))["error"])
    ctx.obs("plus_3_days", produce(ctx, c, t, 0, batch([b"v"], ts=now + 3 * 86_400_000))["error"])
    ctx.obs("minus_1_day", produce(ctx, c, t, 0, batch([b"v"], ts=now - 86_400_000))["error"])
    ctx.obs("no_timestamp", produce(ctx, c, t, 0, batch([b"v"], ts=-1))["error"])
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])


@scenario("produce.multi_partition")
def _(ctx):
    """One request, three partitions, one of them unknown: per-partition answers."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 2)
    v = ctx.v(0)
    parts = [S2(ProduceRequest, "topic_data", "partition_data", v, index=i, records=batch([b"p%d" % i]))
             for i in (0, 1, 7)]
    r = c.call(ProduceRequest, v, transactional_id=None, acks=-1, timeout_ms=10000,
               topic_data=[S(ProduceRequest, "topic_data", v, name=t, partition_data=parts)])
    ctx.obs("partitions", sorted((p.index, p.error_code, p.base_offset)
                                 for p in r.responses[0].partition_responses))


@scenario("produce.transactional_batch")
def _(ctx):
    """A batch flagged transactional, without a transactional id."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    res = produce(ctx, c, t, 0, batch([b"v"], producer_id=pid, producer_epoch=ep,
                                        base_sequence=0, attributes=0x10))
    ctx.obs("error", res["error"])


# ================================================================ Idempotent producer

def init_pid(ctx, c, version=None):
    """InitProducerId without a transactional id, retried (bounded) while the
    broker's producer-id manager loads (COORDINATOR_LOAD_IN_PROGRESS)."""
    v = version if version is not None else ctx.v(22)
    for _ in range(SETTLE_TRIES):
        r = c.call(InitProducerIdRequest, v, transactional_id=None, transaction_timeout_ms=60000,
                   producer_id=-1, producer_epoch=-1)
        if r.error_code != 14:
            break
        time.sleep(SETTLE_SLEEP)
    return r.error_code, r.producer_id, r.producer_epoch


def idem(ctx, c, t, pid, epoch, seq, n, tag="v"):
    return produce(ctx, c, t, 0, batch([("%s%d" % (tag, seq + i)).encode() for i in range(n)],
                                       producer_id=pid, producer_epoch=epoch, base_sequence=seq))


@scenario("init_producer_id.idempotent")
def _(ctx):
    c = ctx.conn()
    lo = max(ctx.own_versions[22][0], ctx.brook_versions[22][0])
    for v in range(lo, ctx.v(22) + 1):
        err, pid, epoch = init_pid(ctx, c, version=v)
        ctx.obs("v%d" % v, (err, "set" if pid >= 0 else pid, epoch))


@scenario("init_producer_id.transactional")
def _(ctx):
    """InitProducerId with a transactional id, as a transactional producer does it:
    FindCoordinator(key_type 1) first (Brook has no transactions)."""
    c = ctx.conn()
    v = ctx.v(22)
    ctx.obs("find_coordinator", find_coordinator(ctx, c, ctx.name(), 1)[0])
    r = None
    for _ in range(SETTLE_TRIES):
        r = c.call(InitProducerIdRequest, v, transactional_id=ctx.name(), transaction_timeout_ms=60000,
                   producer_id=-1, producer_epoch=-1)
        if r.error_code not in (14, 15, 16, 51):
            break
        time.sleep(SETTLE_SLEEP)
    ctx.obs("error", r.error_code)
    ctx.obs("producer_id", "set" if r.producer_id >= 0 else r.producer_id)


@scenario("idempotent.in_order")
def _(ctx):
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    ctx.obs("seq0", idem(ctx, c, t, pid, ep, 0, 3))
    ctx.obs("seq3", idem(ctx, c, t, pid, ep, 3, 2))
    f = fetch_part(fetch(ctx, c, t, 0, 0))
    ctx.obs("hw", f["hw"])
    ctx.obs("batches", [(b["base"], b["count"], b["pid"], b["seq"]) for b in f["batches"]])


@scenario("idempotent.duplicate_last")
def _(ctx):
    """Re-sending the last batch (same sequence): Kafka answers success with the original offset."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    idem(ctx, c, t, pid, ep, 0, 3)
    idem(ctx, c, t, pid, ep, 3, 2)
    ctx.obs("dup", idem(ctx, c, t, pid, ep, 3, 2))
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])
    ctx.obs("next", idem(ctx, c, t, pid, ep, 5, 1)["base_offset"])


@scenario("idempotent.duplicate_older")
def _(ctx):
    """Re-sending an older batch still among the last five."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    for s in range(0, 6, 2):
        idem(ctx, c, t, pid, ep, s, 2)
    ctx.obs("dup_first", idem(ctx, c, t, pid, ep, 0, 2))
    ctx.obs("dup_middle", idem(ctx, c, t, pid, ep, 2, 2))
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])


@scenario("idempotent.duplicate_evicted")
def _(ctx):
    """A duplicate of a batch older than the last five."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    for s in range(7):
        idem(ctx, c, t, pid, ep, s, 1)
    ctx.obs("dup_seq0", idem(ctx, c, t, pid, ep, 0, 1))
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])


@scenario("idempotent.sequence_gap")
def _(ctx):
    """A gap in sequence numbers: OUT_OF_ORDER_SEQUENCE_NUMBER, nothing stored."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    idem(ctx, c, t, pid, ep, 0, 2)
    ctx.obs("gap", idem(ctx, c, t, pid, ep, 5, 1))
    ctx.obs("overlap", idem(ctx, c, t, pid, ep, 1, 2))
    ctx.obs("hw", fetch_part(fetch(ctx, c, t, 0, 0))["hw"])
    ctx.obs("resume", idem(ctx, c, t, pid, ep, 2, 1)["base_offset"])


@scenario("idempotent.first_sequence_nonzero")
def _(ctx):
    """A new producer's first batch with sequence 7."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    ctx.obs("first", idem(ctx, c, t, pid, ep, 7, 1))


@scenario("idempotent.unknown_producer_id")
def _(ctx):
    """A producer id the broker never handed out."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("seq0", idem(ctx, c, t, 987_654_321, 0, 0, 1))
    ctx.obs("seq5_other", idem(ctx, c, t, 987_654_322, 0, 5, 1))


@scenario("idempotent.epochs")
def _(ctx):
    """A higher epoch restarts at sequence 0; an older epoch after that is fenced."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    _, pid, ep = init_pid(ctx, c)
    idem(ctx, c, t, pid, ep, 0, 2)
    ctx.obs("new_epoch_seq0", idem(ctx, c, t, pid, ep + 1, 0, 1))
    ctx.obs("old_epoch", idem(ctx, c, t, pid, ep, 2, 1))
    ctx.obs("newer_epoch_seq3", idem(ctx, c, t, pid, ep + 2, 3, 1))


# ================================================================ Fetch

@scenario("fetch.offsets")
def _(ctx):
    """Batches, high watermark, LSO and log start; mid-batch, end, beyond the end, negative."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"a%d" % i for i in range(5)], ts=T0 + 10))
    produce(ctx, c, t, 0, batch([b"b%d" % i for i in range(5)], ts=T0 + 20))
    ctx.obs("from0", fetch_part(fetch(ctx, c, t, 0, 0)))
    ctx.obs("from7.bases", [b["base"] for b in fetch_part(fetch(ctx, c, t, 0, 7))["batches"]])
    end = fetch_part(fetch(ctx, c, t, 0, 10))
    ctx.obs("at_end", (end["error"], end["hw"], len(end["batches"])))
    past = fetch_part(fetch(ctx, c, t, 0, 11))
    ctx.obs("past_end", (past["error"], past["hw"], past["log_start"], len(past["batches"])))
    neg = fetch_part(fetch(ctx, c, t, 0, -1))
    ctx.obs("negative", (neg["error"], neg["hw"], len(neg["batches"])))
    small = fetch_part(fetch(ctx, c, t, 0, 0, max_bytes=10))
    ctx.obs("max_bytes_10", [(b["base"], b["count"]) for b in small["batches"]])
    rc = fetch_part(fetch(ctx, c, t, 0, 0, isolation=1))
    ctx.obs("read_committed", (rc["error"], rc["hw"], rc["lso"], rc["aborted"], len(rc["batches"])))


@scenario("fetch.versions")
def _(ctx):
    """Fetch at every version both list: the same records."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"x", b"y"]))
    lo = max(ctx.own_versions[1][0], ctx.brook_versions[1][0])
    for v in range(lo, ctx.v(1) + 1):
        f = fetch_part(fetch(ctx, c, t, 0, 0, version=v))
        ctx.obs("v%d" % v, (f["error"], f["hw"], [(b["base"], b["count"]) for b in f["batches"]]))


@scenario("fetch.unknown")
def _(ctx):
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    f = fetch_part(fetch(ctx, c, ctx.name("nope"), 0, 0))
    ctx.obs("unknown_topic", (f["error"], f["hw"], f["lso"], f["log_start"]))
    f = fetch_part(fetch(ctx, c, t, 4, 0))
    ctx.obs("unknown_partition", (f["error"], f["hw"], f["lso"], f["log_start"]))


@scenario("fetch.session")
def _(ctx):
    """Fetch v7+ session creation (session_id 0, epoch 0)."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"x"]))
    r = fetch(ctx, c, t, 0, 0, session_id=0, session_epoch=0)
    ctx.obs("error", r.error_code)
    ctx.obs("session_id", "nonzero" if r.session_id else 0)
    ctx.obs("records", len(fetch_part(r)["batches"]))


# ================================================================ ListOffsets

@scenario("list_offsets.by_time")
def _(ctx):
    """Earliest, latest, max timestamp, and by time before, at, between and after the records."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    for i in range(3):
        produce(ctx, c, t, 0, batch([b"r%d" % i], ts=T0 + 1000 * i))
    produce(ctx, c, t, 0, batch([b"r3", b"r4"], ts=T0 + 3000))
    for label, ts in [("earliest", -2), ("latest", -1), ("max_timestamp", -3), ("before_first", T0 - 5000),
                      ("at_first", T0), ("between", T0 + 500), ("at_last", T0 + 3000),
                      ("after_last", T0 + 3001)]:
        ctx.obs(label, list_offsets(ctx, c, t, 0, ts))
    ctx.obs("v1.between", list_offsets(ctx, c, t, 0, T0 + 500, version=1))
    ctx.obs("v1.after_last", list_offsets(ctx, c, t, 0, T0 + 3001, version=1))
    ctx.obs("read_committed.latest", list_offsets(ctx, c, t, 0, -1, isolation=1))


@scenario("list_offsets.empty")
def _(ctx):
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    for label, ts in [("earliest", -2), ("latest", -1), ("max_timestamp", -3), ("by_time", T0)]:
        ctx.obs(label, list_offsets(ctx, c, t, 0, ts))


@scenario("list_offsets.unknown")
def _(ctx):
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    ctx.obs("unknown_topic", list_offsets(ctx, c, ctx.name("nope"), 0, -1))
    ctx.obs("unknown_partition", list_offsets(ctx, c, t, 3, -1))


@scenario("list_offsets.odd_requests")
def _(ctx):
    """A negative timestamp that is no special value, and the same partition twice."""
    c = ctx.conn()
    t = ctx.name()
    create(ctx, c, t, 1)
    produce(ctx, c, t, 0, batch([b"a"]))
    ctx.obs("timestamp_-7", list_offsets(ctx, c, t, 0, -7))
    ctx.obs("duplicate_partition", list_offsets(ctx, c, t, 0, -1, extra_parts=[(0, -2)]))


# ================================================================ FindCoordinator

@scenario("find_coordinator.group")
def _(ctx):
    c = ctx.conn()
    lo = max(ctx.own_versions[10][0], ctx.brook_versions[10][0])
    for v in range(lo, ctx.v(10) + 1):
        ctx.obs("v%d" % v, find_coordinator(ctx, c, ctx.name(), 0, version=v))


@scenario("find_coordinator.transaction")
def _(ctx):
    """key_type 1 (transactional id): Brook has no transaction coordinator."""
    c = ctx.conn()
    ctx.obs("v4", find_coordinator(ctx, c, ctx.name(), 1))
    ctx.obs("v1", find_coordinator(ctx, c, ctx.name(), 1, version=1))


@scenario("find_coordinator.bad_key_type")
def _(ctx):
    c = ctx.conn()
    ctx.obs("key_type_7", find_coordinator(ctx, c, ctx.name(), 7, retry=False)[0])


@scenario("find_coordinator.empty_key")
def _(ctx):
    c = ctx.conn()
    ctx.obs("v4", find_coordinator(ctx, c, "", 0, retry=False)[0])
    ctx.obs("v1", find_coordinator(ctx, c, "", 0, version=1, retry=False)[0])


# ================================================================ Groups

@scenario("group.lifecycle")
def _(ctx):
    """One member: MEMBER_ID_REQUIRED, join, CompletingRebalance, sync, Stable, heartbeat,
    commit, leave, Empty, delete, Dead."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 2)
    r = join(ctx, c, g, topics=[t])
    ctx.obs("join1", (r.error_code, r.generation_id, "set" if r.member_id else r.member_id))
    mid = r.member_id
    ctx.member(mid)
    r = join(ctx, c, g, member_id=mid, topics=[t])
    ctx.obs("join2", join_obs(ctx, r))
    ctx.obs("describe.after_join", describe(ctx, c, [g]))
    asg = assignment({t: [0, 1]})
    ctx.obs("sync", sync_obs(ctx, sync(ctx, c, g, r.generation_id, mid, [(mid, asg)])))
    ctx.obs("describe.stable", describe(ctx, c, [g]))
    ctx.obs("heartbeat", heartbeat(ctx, c, g, r.generation_id, mid))
    ctx.obs("commit", short(ctx, commit(ctx, c, g, {(t, 0): (5, "meta")}, gen=r.generation_id, member_id=mid)))
    ctx.obs("list", sorted((x.group_id == g, x.protocol_type, getattr(x, "group_state", None))
                           for x in c.call(ListGroupsRequest, ctx.v(16), states_filter=[], types_filter=[]).groups
                           if x.group_id == g))
    ctx.obs("leave", leave(ctx, c, g, [mid]))
    ctx.obs("describe.after_leave", describe(ctx, c, [g]))
    ctx.obs("heartbeat.after_leave", heartbeat(ctx, c, g, r.generation_id, mid))
    ctx.obs("offsets.after_leave", short(ctx, offset_fetch(ctx, c, g, {t: [0]})))
    r = c.call(DeleteGroupsRequest, ctx.v(42), groups_names=[g])
    ctx.obs("delete", [x.error_code for x in r.results])
    ctx.obs("describe.after_delete", describe(ctx, c, [g]))
    ctx.obs("offsets.after_delete", short(ctx, offset_fetch(ctx, c, g, {t: [0]})))


@scenario("group.rebalance")
def _(ctx):
    """A second member joins a Stable group: the first sees REBALANCE_IN_PROGRESS, rejoins;
    generation 2, the first member leads, each gets its own assignment."""
    c1 = ctx.conn()
    c2 = ctx.conn()
    c3 = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c1, t, 2)
    r1 = join_member(ctx, c1, g, topics=[t])
    m1 = r1.member_id
    ctx.member(m1)
    sync(ctx, c1, g, r1.generation_id, m1, [(m1, assignment({t: [0, 1]}))])
    r = join(ctx, c2, g, topics=[t])  # MEMBER_ID_REQUIRED round trip, synchronous
    ctx.obs("join_b.first", (r.error_code, "set" if r.member_id else r.member_id))
    m2 = r.member_id
    ctx.member(m2)
    pending2 = threaded(join, ctx, c2, g, member_id=m2, topics=[t])
    state = None
    for _ in range(SETTLE_TRIES):
        state = describe(ctx, c3, [g])["state"]
        if state != "Stable":
            break
        time.sleep(SETTLE_SLEEP)
    ctx.obs("describe.while_joining", state)
    ctx.obs("heartbeat_a.during", heartbeat(ctx, c1, g, r1.generation_id, m1))
    ctx.obs("sync_a.stale_during", sync_obs(ctx, sync(ctx, c3, g, r1.generation_id, m1)))
    r1b = join(ctx, c1, g, member_id=m1, topics=[t])
    r2 = pending2()
    ctx.obs("rejoin_a", join_obs(ctx, r1b))
    ctx.obs("join_b", join_obs(ctx, r2))
    gen = r1b.generation_id
    pending_sync2 = threaded(sync, ctx, c2, g, gen, m2)
    s1 = sync(ctx, c1, g, gen, m1, [(m1, assignment({t: [0]})), (m2, assignment({t: [1]}))])
    ctx.obs("sync_a", sync_obs(ctx, s1))
    ctx.obs("sync_b", sync_obs(ctx, pending_sync2()))
    ctx.obs("heartbeats", (heartbeat(ctx, c1, g, gen, m1), heartbeat(ctx, c2, g, gen, m2)))
    ctx.obs("describe.stable", describe(ctx, c3, [g]))
    ctx.obs("leave_b", leave(ctx, c2, g, [m2]))
    ctx.obs("heartbeat_a.after_b_left", heartbeat(ctx, c1, g, gen, m1))
    ctx.obs("describe.after_b_left", describe(ctx, c3, [g])["state"])
    ctx.obs("leave_a", leave(ctx, c1, g, [m1]))


@scenario("group.stale_member")
def _(ctx):
    """Stale generations and unknown member ids against a Stable group."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 1)
    r = join_member(ctx, c, g, topics=[t])
    mid, gen = r.member_id, r.generation_id
    ctx.member(mid)
    sync(ctx, c, g, gen, mid, [(mid, assignment({t: [0]}))])
    ctx.obs("heartbeat.old_generation", heartbeat(ctx, c, g, gen - 1, mid))
    ctx.obs("heartbeat.future_generation", heartbeat(ctx, c, g, gen + 1, mid))
    ctx.obs("heartbeat.unknown_member", heartbeat(ctx, c, g, gen, "nobody"))
    ctx.obs("heartbeat.empty_member", heartbeat(ctx, c, g, gen, ""))
    ctx.obs("sync.old_generation", sync_obs(ctx, sync(ctx, c, g, gen + 1, mid)))
    ctx.obs("sync.unknown_member", sync_obs(ctx, sync(ctx, c, g, gen, "nobody")))
    ctx.obs("commit.old_generation", short(ctx, commit(ctx, c, g, {(t, 0): (1, "")}, gen=gen + 1, member_id=mid)))
    ctx.obs("commit.unknown_member", short(ctx, commit(ctx, c, g, {(t, 0): (1, "")}, gen=gen, member_id="nobody")))
    ctx.obs("commit.no_member", short(ctx, commit(ctx, c, g, {(t, 0): (1, "")}, gen=-1, member_id="")))
    ctx.obs("join.unknown_member", join_obs(ctx, join(ctx, c, g, member_id="nobody", topics=[t])))
    ctx.obs("join.other_protocol_type",
            join_obs(ctx, join_member(ctx, ctx.conn(), g, protocol_type="connect", topics=[t])))
    ctx.obs("leave.unknown_member", leave(ctx, c, g, ["nobody"]))
    ctx.obs("describe.end", describe(ctx, c, [g])["state"])
    ctx.obs("heartbeat.still_ok", heartbeat(ctx, c, g, gen, mid))
    leave(ctx, c, g, [mid])


@scenario("group.join_validation")
def _(ctx):
    """JoinGroup arguments refused before any membership."""
    c = ctx.conn()
    g = ctx.name("g")
    ctx.obs("session_too_short", join_obs(ctx, join(ctx, c, g, session_ms=1000)))
    ctx.obs("session_too_long", join_obs(ctx, join(ctx, c, g, session_ms=4_000_000)))
    ctx.obs("empty_group_id", join_obs(ctx, join(ctx, c, "")))
    ctx.obs("unknown_member_new_group", join_obs(ctx, join(ctx, c, ctx.name("g2"), member_id="nobody")))
    ctx.obs("no_protocols", join_obs(ctx, join(ctx, c, ctx.name("g3"), protocols=())))
    ctx.obs("empty_protocol_type", join_obs(ctx, join(ctx, c, ctx.name("g4"), protocol_type="")))


@scenario("group.unknown_group")
def _(ctx):
    """Member operations on a group that does not exist."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 1)
    ctx.obs("heartbeat", heartbeat(ctx, c, g, 1, "nobody"))
    ctx.obs("sync", sync_obs(ctx, sync(ctx, c, g, 1, "nobody")))
    ctx.obs("leave", leave(ctx, c, g, ["nobody"]))
    ctx.obs("commit_as_member", short(ctx, commit(ctx, c, g, {(t, 0): (1, "")}, gen=1, member_id="nobody")))
    ctx.obs("describe", describe(ctx, c, [g]))
    r = c.call(DeleteGroupsRequest, ctx.v(42), groups_names=[g])
    ctx.obs("delete", [x.error_code for x in r.results])
    ctx.obs("offset_fetch", short(ctx, offset_fetch(ctx, c, g, {t: [0]})))
    ctx.obs("offset_fetch_all", short(ctx, offset_fetch(ctx, c, g, None)))


@scenario("group.delete_non_empty")
def _(ctx):
    """DeleteGroups on a group with a member: NON_EMPTY_GROUP; ListGroups state filter."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 1)
    r = join_member(ctx, c, g, topics=[t])
    mid, gen = r.member_id, r.generation_id
    sync(ctx, c, g, gen, mid, [(mid, assignment({t: [0]}))])
    r = c.call(DeleteGroupsRequest, ctx.v(42), groups_names=[g])
    ctx.obs("delete", [x.error_code for x in r.results])
    v = ctx.v(16)
    if v >= 4:
        stable = c.call(ListGroupsRequest, v, states_filter=["Stable"], types_filter=[])
        empty = c.call(ListGroupsRequest, v, states_filter=["Empty"], types_filter=[])
        ctx.obs("list.stable", [x.group_state for x in stable.groups if x.group_id == g])
        ctx.obs("list.empty", [x.group_state for x in empty.groups if x.group_id == g])
    leave(ctx, c, g, [mid])
    r = c.call(DeleteGroupsRequest, ctx.v(42), groups_names=[g])
    ctx.obs("delete_after_leave", [x.error_code for x in r.results])


# ================================================================ Offsets

@scenario("offsets.standalone")
def _(ctx):
    """Commits outside any membership (generation -1): metadata, leader epoch, fetch by
    partition and for all topics, partitions never committed."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 3)
    ctx.obs("commit", short(ctx, commit(ctx, c, g, {(t, 0): (10, "m0"), (t, 1): (20, None)})))
    ctx.obs("fetch", short(ctx, offset_fetch(ctx, c, g, {t: [0, 1, 2]})))
    ctx.obs("fetch_all", short(ctx, offset_fetch(ctx, c, g, None)))
    ctx.obs("fetch_v1", short(ctx, offset_fetch(ctx, c, g, {t: [0]}, version=1)))
    ctx.obs("recommit_lower", short(ctx, commit(ctx, c, g, {(t, 0): (3, "")})))
    ctx.obs("fetch_after_lower", short(ctx, offset_fetch(ctx, c, g, {t: [0]})))
    ctx.obs("describe", describe(ctx, c, [g]))


@scenario("offsets.commit_edges")
def _(ctx):
    """Commits to unknown topics/partitions, metadata over 4096 bytes, negative offsets."""
    c = ctx.conn()
    t = ctx.name()
    g = ctx.name("g")
    create(ctx, c, t, 1)
    ctx.obs("unknown_topic", short(ctx, commit(ctx, c, g, {(ctx.name("nope"), 0): (1, "")})))
    ctx.obs("unknown_partition", short(ctx, commit(ctx, c, g, {(t, 9): (1, "")})))
    ctx.obs("metadata_4097", short(ctx, commit(ctx, c, g, {(t, 0): (1, "x" * 4097)})))
    ctx.obs("metadata_4096", short(ctx, commit(ctx, c, g, {(t, 0): (2, "x" * 4096)})))
    ctx.obs("offset_-1", short(ctx, commit(ctx, c, g, {(t, 0): (-1, "")})))
    ctx.obs("fetch", short(ctx, offset_fetch(ctx, c, g, {t: [0, 9], ctx.name("nope"): [0]})))
    ctx.obs("empty_group_id", short(ctx, commit(ctx, c, "", {(t, 0): (1, "")})))


# ================================================================ describe / list groups

@scenario("groups.describe_versions")
def _(ctx):
    """DescribeGroups of an unknown group at every version both list."""
    c = ctx.conn()
    lo = max(ctx.own_versions[15][0], ctx.brook_versions[15][0])
    for v in range(lo, ctx.v(15) + 1):
        d = describe(ctx, c, [ctx.name("g")], version=v)
        ctx.obs("v%d" % v, (d["error"], d["state"], d["protocol_type"], d["protocol"], d["members"]))


# ================================================================ running

def tables(kafka_bootstrap, brook_bootstrap):
    """(kafka ApiVersions, brook ApiVersions, common versions)."""
    with Conn(kafka_bootstrap) as c:
        kv = c.api_versions()
    with Conn(brook_bootstrap) as c:
        bv = c.api_versions()
    from diff_wire import common_version
    common = {k: common_version(kv, bv, k) for k in REQUESTS}
    return kv, bv, common


def run_pair(sid, kafka_bootstrap, brook_bootstrap, run_id, tabs):
    """Runs scenario `sid` against both brokers at once (two threads).
    Returns (kafka observations, brook observations)."""
    kv, bv, common = tabs
    fn = SCENARIOS[sid]
    kctx = Ctx(kafka_bootstrap, run_id, sid, common, kv, bv)
    bctx = Ctx(brook_bootstrap, run_id, sid, common, bv, bv)
    k = threaded(run, fn, kctx)
    b = threaded(run, fn, bctx)
    return k(timeout=120), b(timeout=120)
