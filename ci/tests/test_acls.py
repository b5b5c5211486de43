"""ACLs with Kafka's semantics, enforced on every API Brook serves.

One broker with `authorizer.class.name` set, `super.users=User:admin`, a
PLAINTEXT listener (principal ANONYMOUS) and a SASL_PLAINTEXT listener with
PLAIN users admin, alice and bob.

- `test_every_api_refuses_a_principal_without_acls`: bob, who has no ACL,
  sends each API Brook lists (encoded by kafka-python's generated protocol
  classes) and gets Kafka's authorization error for it (29 TOPIC_, 30 GROUP_,
  31 CLUSTER_, 53 TRANSACTIONAL_ID_AUTHORIZATION_FAILED), or a list without
  what he may not see; the super user gets none of them.
- `test_allow_deny_prefixed_and_super_users_with_real_clients`: librdkafka
  as alice with prefixed ALLOWs and a literal DENY; Metadata shows only
  what she may describe; the ACL admin APIs through confluent-kafka and
  Kafka's own kafka-acls.
"""

import os
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType)
from kafka.protocol.admin.acl import CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest
from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest, DescribeClientQuotasRequest
from kafka.protocol.admin.cluster import (AlterReplicaLogDirsRequest, DescribeClusterRequest,
                                          DescribeLogDirsRequest)
from kafka.protocol.admin.configs import (AlterConfigsRequest, DescribeConfigsRequest,
                                          IncrementalAlterConfigsRequest)
from kafka.protocol.admin.groups import DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest
from kafka.protocol.admin.topics import (AlterPartitionReassignmentsRequest, CreatePartitionsRequest,
                                         CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
                                         DescribeTopicPartitionsRequest, ElectLeadersRequest,
                                         ListPartitionReassignmentsRequest)
from kafka.protocol.admin.transactions import DescribeTransactionsRequest, ListTransactionsRequest
from kafka.protocol.admin.users import (AlterUserScramCredentialsRequest,
                                        DescribeUserScramCredentialsRequest)
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                           OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
                                           SyncGroupRequest)
from kafka.protocol.consumer.offsets import ListOffsetsRequest, OffsetForLeaderEpochRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.protocol.producer.transaction import (AddOffsetsToTxnRequest, AddPartitionsToTxnRequest,
                                                 EndTxnRequest, InitProducerIdRequest,
                                                 TxnOffsetCommitRequest, WriteTxnMarkersRequest)
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

import diff_wire
import kproto as kp
from apache_kafka import free_port
from util import check_keyed, consume_all, produce_keyed, producer, unique_topic, wait_until

PW = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}
TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED = 29, 30, 31, 53


@pytest.fixture(scope="module")
def acl_broker(request, tmp_path_factory):
    from conftest import Broker, running
    b = Broker(tmp_path_factory.mktemp("brook-acl"))
    b.sasl_port = free_port()
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join('user_%s="%s"' % kv for kv in PW.items()) + ";")
    cfg = b.workdir / "brook.toml"
    cfg.write_text("\n".join([
        '"listeners" = "PLAINTEXT://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d"' % (b.port, b.sasl_port),
        '"sasl.enabled.mechanisms" = "PLAIN"',
        "'sasl.jaas.config' = '%s'" % jaas,
        '"authorizer.class.name" = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"',
        '"super.users" = "User:admin"',
    ]) + "\n")
    b.extra_args = ["--config", str(cfg)]
    yield from running(request, b, request.module)


def sasl(b, user):
    return {"bootstrap.servers": "127.0.0.1:%d" % b.sasl_port, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": PW[user]}


def admin_client(b, user):
    return AdminClient(dict(sasl(b, user), **{"socket.timeout.ms": 10000}))


def build(cls, v, kw):
    """kafka-python request fields, nested structs given as dicts."""
    out = {}
    for k, val in kw.items():
        sub = getattr(cls, getattr(cls.fields[k], "type_str", "") or "", None)
        if sub is not None and isinstance(val, list) and val and isinstance(val[0], dict):
            val = [sub(version=v, **build(sub, v, x)) for x in val]
        elif sub is not None and isinstance(val, dict):
            val = sub(version=v, **build(sub, v, val))
        out[k] = val
    return out


class Raw(diff_wire.Conn):
    """A raw connection authenticated with SASL PLAIN."""

    def __init__(self, b, user):
        super().__init__("127.0.0.1:%d" % b.sasl_port)
        assert self.call(SaslHandshakeRequest, 1, mechanism="PLAIN").error_code == 0
        token = b"\0%s\0%s" % (user.encode(), PW[user].encode())
        r = self.call(SaslAuthenticateRequest, 1, auth_bytes=token)
        assert r.error_code == 0, r

    def ask(self, cls, v, **kw):
        return self.call(cls, v, **build(cls, v, kw)).to_dict()


def codes(d):
    """Every error code anywhere in a decoded response."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("error_code", "partition_error_code") and isinstance(v, int):
                out.append(v)
            else:
                out += codes(v)
    elif isinstance(d, list):
        for x in d:
            out += codes(x)
    return out


def batch():
    return kp.encode_batch([(b"k", b"v")])


def requests(t, g, tx):
    """(name, class, version, fields, expected error) for each API, for a
    topic `t`, group `g` and transactional id `tx` that exist."""
    part = lambda **kw: dict(partition_index=0, **kw)
    return [
        ("Produce", ProduceRequest, 8, dict(transactional_id=None, acks=1, timeout_ms=5000, topic_data=[
            dict(name=t, partition_data=[dict(index=0, records=batch())])]), TOPIC_DENIED),
        ("Fetch", FetchRequest, 11, dict(replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
                                         isolation_level=0, session_id=0, session_epoch=-1, topics=[
            dict(topic=t, partitions=[dict(partition=0, current_leader_epoch=-1, fetch_offset=0,
                                           log_start_offset=-1, partition_max_bytes=1 << 20)])],
            forgotten_topics_data=[], rack_id=""), TOPIC_DENIED),
        ("Fetch as a follower", FetchRequest, 11, dict(replica_id=1, max_wait_ms=0, min_bytes=0,
                                                      max_bytes=1 << 20, isolation_level=0, session_id=0,
                                                      session_epoch=-1, topics=[], forgotten_topics_data=[],
                                                      rack_id=""), CLUSTER_DENIED),
        ("ListOffsets", ListOffsetsRequest, 5, dict(replica_id=-1, isolation_level=0, topics=[
            dict(name=t, partitions=[part(current_leader_epoch=-1, timestamp=-1)])]), TOPIC_DENIED),
        ("Metadata", MetadataRequest, 8, dict(topics=[dict(name=t)], allow_auto_topic_creation=False,
                                              include_cluster_authorized_operations=False,
                                              include_topic_authorized_operations=False), TOPIC_DENIED),
        ("OffsetCommit", OffsetCommitRequest, 8, dict(group_id=g, generation_id_or_member_epoch=-1, member_id="",
                                                      group_instance_id=None, topics=[
            dict(name=t, partitions=[part(committed_offset=1, committed_leader_epoch=-1,
                                          committed_metadata="")])]), GROUP_DENIED),
        ("OffsetFetch", OffsetFetchRequest, 7, dict(group_id=g, topics=[dict(name=t, partition_indexes=[0])],
                                                    require_stable=False), GROUP_DENIED),
        ("FindCoordinator group", FindCoordinatorRequest, 3, dict(key=g, key_type=0), GROUP_DENIED),
        ("FindCoordinator txn", FindCoordinatorRequest, 3, dict(key=tx, key_type=1), TXN_DENIED),
        ("JoinGroup", JoinGroupRequest, 5, dict(group_id=g, session_timeout_ms=10000, rebalance_timeout_ms=10000,
                                                member_id="", group_instance_id=None, protocol_type="consumer",
                                                protocols=[dict(name="range", metadata=b"")]), GROUP_DENIED),
        ("Heartbeat", HeartbeatRequest, 3, dict(group_id=g, generation_id=1, member_id="m",
                                                group_instance_id=None), GROUP_DENIED),
        ("LeaveGroup", LeaveGroupRequest, 3, dict(group_id=g, members=[dict(member_id="m", group_instance_id=None)]),
         GROUP_DENIED),
        ("SyncGroup", SyncGroupRequest, 3, dict(group_id=g, generation_id=1, member_id="m", group_instance_id=None,
                                                assignments=[]), GROUP_DENIED),
        ("DescribeGroups", DescribeGroupsRequest, 4, dict(groups=[g], include_authorized_operations=False),
         GROUP_DENIED),
        ("CreateTopics", CreateTopicsRequest, 5, dict(topics=[dict(name=t + "-new", num_partitions=1,
                                                                   replication_factor=1, assignments=[],
                                                                   configs=[])], timeout_ms=5000,
                                                      validate_only=False), TOPIC_DENIED),
        ("DeleteTopics", DeleteTopicsRequest, 4, dict(topic_names=[t], timeout_ms=5000), TOPIC_DENIED),
        ("DeleteRecords", DeleteRecordsRequest, 1, dict(topics=[dict(name=t, partitions=[
            dict(partition_index=0, offset=0)])], timeout_ms=5000), TOPIC_DENIED),
        ("InitProducerId txn", InitProducerIdRequest, 2, dict(transactional_id=tx, transaction_timeout_ms=60000),
         TXN_DENIED),
        ("InitProducerId idempotent", InitProducerIdRequest, 2, dict(transactional_id=None,
                                                                     transaction_timeout_ms=60000), CLUSTER_DENIED),
        ("OffsetForLeaderEpoch", OffsetForLeaderEpochRequest, 3, dict(replica_id=-1, topics=[
            dict(topic=t, partitions=[dict(partition=0, current_leader_epoch=-1, leader_epoch=0)])]), TOPIC_DENIED),
        ("AddPartitionsToTxn", AddPartitionsToTxnRequest, 3, dict(
            v3_and_below_transactional_id=tx, v3_and_below_producer_id=1, v3_and_below_producer_epoch=0,
            v3_and_below_topics=[dict(name=t, partitions=[0])]), TXN_DENIED),
        ("AddOffsetsToTxn", AddOffsetsToTxnRequest, 3, dict(transactional_id=tx, producer_id=1, producer_epoch=0,
                                                             group_id=g), TXN_DENIED),
        ("EndTxn", EndTxnRequest, 3, dict(transactional_id=tx, producer_id=1, producer_epoch=0, committed=True),
         TXN_DENIED),
        ("WriteTxnMarkers", WriteTxnMarkersRequest, 1, dict(markers=[dict(
            producer_id=1, producer_epoch=0, transaction_result=True, coordinator_epoch=0,
            topics=[dict(name=t, partition_indexes=[0])])]), CLUSTER_DENIED),
        ("TxnOffsetCommit", TxnOffsetCommitRequest, 3, dict(
            transactional_id=tx, group_id=g, producer_id=1, producer_epoch=0, generation_id=-1, member_id="",
            group_instance_id=None, topics=[dict(name=t, partitions=[
                part(committed_offset=1, committed_leader_epoch=-1, committed_metadata="")])]), TXN_DENIED),
        ("DescribeAcls", DescribeAclsRequest, 1, dict(resource_type_filter=1, resource_name_filter=None,
                                                      pattern_type_filter=1, principal_filter=None, host_filter=None,
                                                      operation=1, permission_type=1), CLUSTER_DENIED),
        ("CreateAcls", CreateAclsRequest, 1, dict(creations=[dict(
            resource_type=2, resource_name=t, resource_pattern_type=3, principal="User:bob", host="*",
            operation=3, permission_type=3)]), CLUSTER_DENIED),
        ("DeleteAcls", DeleteAclsRequest, 1, dict(filters=[dict(
            resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1, principal_filter=None,
            host_filter=None, operation=1, permission_type=1)]), CLUSTER_DENIED),
        ("DescribeConfigs topic", DescribeConfigsRequest, 1, dict(resources=[dict(
            resource_type=2, resource_name=t, configuration_keys=None)], include_synonyms=False), TOPIC_DENIED),
        ("DescribeConfigs broker", DescribeConfigsRequest, 1, dict(resources=[dict(
            resource_type=4, resource_name="1", configuration_keys=None)], include_synonyms=False), CLUSTER_DENIED),
        ("AlterConfigs", AlterConfigsRequest, 1, dict(resources=[dict(
            resource_type=2, resource_name=t, configs=[dict(name="retention.ms", value="1000")])],
            validate_only=True), TOPIC_DENIED),
        ("AlterReplicaLogDirs", AlterReplicaLogDirsRequest, 1, dict(dirs=[dict(
            path="/nonexistent", topics=[dict(name=t, partitions=[0])])]), CLUSTER_DENIED),
        ("DescribeLogDirs", DescribeLogDirsRequest, 3, dict(topics=None), CLUSTER_DENIED),
        ("CreatePartitions", CreatePartitionsRequest, 1, dict(topics=[dict(name=t, count=5, assignments=None)],
                                                              timeout_ms=5000, validate_only=True), TOPIC_DENIED),
        ("DeleteGroups", DeleteGroupsRequest, 1, dict(groups_names=[g]), GROUP_DENIED),
        ("ElectLeaders", ElectLeadersRequest, 1, dict(election_type=0, topic_partitions=None, timeout_ms=5000),
         CLUSTER_DENIED),
        ("IncrementalAlterConfigs", IncrementalAlterConfigsRequest, 0, dict(resources=[dict(
            resource_type=2, resource_name=t, configs=[dict(name="retention.ms", config_operation=0,
                                                            value="1000")])], validate_only=True), TOPIC_DENIED),
        ("AlterPartitionReassignments", AlterPartitionReassignmentsRequest, 0, dict(timeout_ms=5000, topics=[]),
         CLUSTER_DENIED),
        ("ListPartitionReassignments", ListPartitionReassignmentsRequest, 0, dict(timeout_ms=5000, topics=None),
         CLUSTER_DENIED),
        ("OffsetDelete", OffsetDeleteRequest, 0, dict(group_id=g, topics=[dict(name=t, partitions=[
            dict(partition_index=0)])]), GROUP_DENIED),
        ("DescribeClientQuotas", DescribeClientQuotasRequest, 0, dict(components=[], strict=False), CLUSTER_DENIED),
        ("AlterClientQuotas", AlterClientQuotasRequest, 0, dict(entries=[dict(
            entity=[dict(entity_type="client-id", entity_name="x")],
            ops=[dict(key="producer_byte_rate", value=1000.0, remove=False)])], validate_only=True), CLUSTER_DENIED),
        ("DescribeUserScramCredentials", DescribeUserScramCredentialsRequest, 0, dict(users=None), CLUSTER_DENIED),
        ("AlterUserScramCredentials", AlterUserScramCredentialsRequest, 0, dict(deletions=[], upsertions=[dict(
            name="bob", mechanism=1, iterations=4096, salt=b"salt", salted_password=b"x" * 32)]), CLUSTER_DENIED),
        ("DescribeTransactions", DescribeTransactionsRequest, 0, dict(transactional_ids=[tx]), TXN_DENIED),
        ("DescribeTopicPartitions", DescribeTopicPartitionsRequest, 0, dict(
            topics=[dict(name=t)], response_partition_limit=100, cursor=None), TOPIC_DENIED),
    ]


def test_every_api_refuses_a_principal_without_acls(acl_broker):
    b = acl_broker
    t = unique_topic("acl-all")
    g = "acl-group-" + t
    tx = "acl-tx-" + t
    # As the super user: a topic with records, a group with a commit, a transaction.
    a = admin_client(b, "admin")
    a.create_topics([NewTopic(t, 1, 1)])[t].result(30)
    p = producer(sasl(b, "admin")["bootstrap.servers"], **{k: v for k, v in sasl(b, "admin").items()
                                                           if k != "bootstrap.servers"})
    produce_keyed(p, t, 10)
    from confluent_kafka import Producer
    txp = Producer(dict(sasl(b, "admin"), **{"transactional.id": tx}))
    txp.init_transactions(30)
    with Raw(b, "admin") as c:
        r = c.ask(OffsetCommitRequest, 8, group_id=g, generation_id_or_member_epoch=-1, member_id="",
                  group_instance_id=None, topics=[dict(name=t, partitions=[dict(
                      partition_index=0, committed_offset=1, committed_leader_epoch=-1, committed_metadata="")])])
        assert set(codes(r)) == {0}, r
    # bob, with no ACL: every API refuses him with Kafka's error for it.
    seen = set()
    with Raw(b, "bob") as bob, Raw(b, "admin") as adm:
        listed = bob.api_versions()
        for name, cls, v, fields, want in requests(t, g, tx):
            got = codes(bob.ask(cls, v, **fields))
            assert want in got, "%s as bob: codes %r, expected %d" % (name, got, want)
            seen.add(cls.API_KEY)
            # The super user is refused none of it.
            if name not in ("DeleteTopics", "DeleteRecords", "DeleteGroups", "AlterReplicaLogDirs",
                            "Fetch as a follower", "WriteTxnMarkers", "AlterUserScramCredentials"):
                mine = codes(adm.ask(cls, v, **fields))
                assert not {TOPIC_DENIED, GROUP_DENIED, CLUSTER_DENIED, TXN_DENIED} & set(mine), (name, mine)
        # Listings leave out what bob may not describe.
        md = bob.ask(MetadataRequest, 8, topics=None, allow_auto_topic_creation=False,
                     include_cluster_authorized_operations=False, include_topic_authorized_operations=False)
        assert t not in [x["name"] for x in md["topics"]]
        assert t in [x["name"] for x in adm.ask(MetadataRequest, 8, topics=None, allow_auto_topic_creation=False,
                                                 include_cluster_authorized_operations=False,
                                                 include_topic_authorized_operations=False)["topics"]]
        for cls, v, fields, key, field in [
            (ListGroupsRequest, 4, dict(states_filter=[]), "groups", "group_id"),
            (ListTransactionsRequest, 0, dict(state_filters=[], producer_id_filters=[]),
             "transaction_states", "transactional_id"),
        ]:
            assert not bob.ask(cls, v, **fields)[key], cls
            assert (g if cls is ListGroupsRequest else tx) in [x[field] for x in adm.ask(cls, v, **fields)[key]]
            seen.add(cls.API_KEY)
        # DescribeCluster needs no ACL, as in Kafka.
        assert bob.ask(DescribeClusterRequest, 0, include_cluster_authorized_operations=False)["error_code"] == 0
        seen.add(DescribeClusterRequest.API_KEY)
        # UnregisterBroker v0 (flexible), which kafka-python does not encode.
        for conn, want in ((bob, CLUSTER_DENIED), (adm, None)):
            conn.corr += 1
            conn.send_frame(kp.i16(64) + kp.i16(0) + kp.i32(conn.corr) + kp.string("acl-test") + kp.uvarint(0)
                            + kp.i32(7) + kp.uvarint(0))
            r = kp.Reader(conn.recv_frame())
            assert r.i32() == conn.corr
            r.uvarint()
            r.i32()
            code = r.i16()
            assert (code == want) if want else code not in (CLUSTER_DENIED, 0), code
        seen.add(64)
        # Nothing Brook lists is left out of this sweep.
        exempt = {18, 17, 36}  # ApiVersions, SaslHandshake, SaslAuthenticate
        missing = set(listed) - seen - exempt
        assert not missing, "APIs not checked: %s" % sorted(diff_wire.api_name(k) for k in missing)
    # The same refusals on the PLAINTEXT listener (User:ANONYMOUS).
    with diff_wire.Conn(b.bootstrap) as anon:
        got = codes(anon.call(MetadataRequest, 8, **build(MetadataRequest, 8, dict(
            topics=[dict(name=t)], allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False))).to_dict())
        assert got == [TOPIC_DENIED], got


def acl(rt, name, pattern, principal, op, perm):
    return AclBinding(rt, name, pattern, principal, "*", op, perm)


def test_allow_deny_prefixed_and_super_users_with_real_clients(acl_broker, tmp_path):
    b = acl_broker
    a = admin_client(b, "admin")
    run = unique_topic("x").split("-")[-1]
    mine, secret, other = "alice-%s" % run, "alice-%s-secret" % run, "bob-%s" % run
    for t in (mine, secret, other):
        a.create_topics([NewTopic(t, 2, 1)])[t].result(30)
    prefix = "alice-%s" % run
    bindings = [
        acl(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, "User:alice", AclOperation.WRITE,
            AclPermissionType.ALLOW),
        acl(ResourceType.TOPIC, prefix, ResourcePatternType.PREFIXED, "User:alice", AclOperation.READ,
            AclPermissionType.ALLOW),
        acl(ResourceType.TOPIC, secret, ResourcePatternType.LITERAL, "User:alice", AclOperation.ALL,
            AclPermissionType.DENY),
        acl(ResourceType.GROUP, prefix, ResourcePatternType.PREFIXED, "User:alice", AclOperation.READ,
            AclPermissionType.ALLOW),
    ]
    for f in a.create_acls(bindings).values():
        f.result(30)
    # Describe them back, by a MATCH filter on the secret topic: the prefixed
    # ALLOWs and the literal DENY all apply to it.
    match = AclBindingFilter(ResourceType.TOPIC, secret, ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    found = a.describe_acls(match).result(30)
    assert len(found) == 3, found
    alice = sasl(b, "alice")
    extra = {k: v for k, v in alice.items() if k != "bootstrap.servers"}
    # librdkafka looks its group's coordinator up even for assigned reads.
    reader = dict(extra, **{"group.id": prefix + "-reader"})
    # Allowed by prefix: every record produced is read back.
    p = producer(alice["bootstrap.servers"], **extra)
    dr = produce_keyed(p, mine, 500)
    got = consume_all(alice["bootstrap.servers"], mine, 2, **reader)
    check_keyed(got, 500, acked=dr.acked)
    # Denied: another user's topic, and the DENY inside her prefix.
    for t in (other, secret):
        errs = []
        p = producer(alice["bootstrap.servers"], **dict(extra, **{"message.timeout.ms": 10000}))
        p.produce(t, b"v", on_delivery=lambda e, m: errs.append(e))
        p.flush(20)
        assert errs and errs[0] is not None and errs[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (t, errs)
    # Metadata shows her only what she may describe.
    md = AdminClient(dict(alice, **{"socket.timeout.ms": 10000})).list_topics(timeout=20)
    visible = {t for t in md.topics if md.topics[t].error is None}
    assert mine in visible and other not in visible and secret not in visible, visible
    # A consumer group under her prefix works; one outside it does not.
    from confluent_kafka import Consumer
    c = Consumer(dict(alice, **{"group.id": prefix + "-g", "auto.offset.reset": "earliest",
                                "enable.auto.commit": False}))
    c.subscribe([mine])
    n, deadline = 0, time.monotonic() + 60
    while n < 500 and time.monotonic() < deadline:
        for m in c.consume(500, 1.0):
            assert m.error() is None, m.error()
            n += 1
    c.commit(asynchronous=False)
    c.close()
    assert n == 500
    c = Consumer(dict(alice, **{"group.id": "not-hers-" + run, "auto.offset.reset": "earliest"}))
    c.subscribe([mine])
    err, deadline = None, time.monotonic() + 30
    while err is None and time.monotonic() < deadline:
        for m in c.consume(10, 1.0):
            if m.error() is not None:
                err = m.error()
    c.close()
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # Not a super user: the ACL APIs refuse alice.
    alice_admin = AdminClient(dict(alice, **{"socket.timeout.ms": 10000}))
    with pytest.raises(KafkaException) as e:
        for f in alice_admin.create_acls([bindings[0]]).values():
            f.result(30)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    with Raw(b, "alice") as raw:
        r = raw.ask(DescribeAclsRequest, 1, resource_type_filter=1, resource_name_filter=None,
                    pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1,
                    permission_type=1)
        assert (r["error_code"], r["resources"]) == (CLUSTER_DENIED, []), r
    # Deleting the DENY opens the secret topic to her prefix ALLOWs.
    deny = AclBindingFilter(ResourceType.TOPIC, secret, ResourcePatternType.LITERAL, "User:alice", None,
                            AclOperation.ANY, AclPermissionType.DENY)
    deleted = a.delete_acls([deny])[deny].result(30)
    assert len(deleted) == 1
    p = producer(alice["bootstrap.servers"], **extra)
    dr = produce_keyed(p, secret, 100)
    check_keyed(consume_all(alice["bootstrap.servers"], secret, 2, **reader), 100, acked=dr.acked)

    # Kafka's own kafka-acls, as the super user over SASL.
    from test_kafka_tools import JARS, tool
    if not (JARS / "kafka-tools-4.4.0.jar").exists():
        pytest.skip("Kafka's tools are not installed (ci/setup.sh)")
    cfg = tmp_path / "admin.properties"
    cfg.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                   "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
                   'username="admin" password="%s";\n' % PW["admin"])
    bs = alice["bootstrap.servers"]
    bob_group = "bob-g-" + run
    r = tool("kafka-acls", "--bootstrap-server", bs, "--command-config", cfg, "--add", "--allow-principal",
             "User:bob", "--operation", "Read", "--topic", other, "--group", bob_group)
    assert "Adding ACLs for resource" in r.out, r
    r = tool("kafka-acls", "--bootstrap-server", bs, "--command-config", cfg, "--list", "--topic", other)
    assert "principal=User:bob" in r.out and "operation=READ" in r.out and "permissionType=ALLOW" in r.out, r
    bob = sasl(b, "bob")
    got = consume_all(bob["bootstrap.servers"], other, 2, **{k: v for k, v in bob.items()
                                                              if k != "bootstrap.servers"},
                      **{"group.id": bob_group})
    assert sum(len(v) for v in got.values()) == 0  # readable (empty), no authorization error
    r = tool("kafka-acls", "--bootstrap-server", bs, "--command-config", cfg, "--remove", "--force",
             "--allow-principal", "User:bob", "--operation", "Read", "--topic", other, "--group", bob_group)
    r = tool("kafka-acls", "--bootstrap-server", bs, "--command-config", cfg, "--list", "--topic", other)
    assert "User:bob" not in r.out, r
    # The ACLs survive a restart.
    b.restart()
    again = admin_client(b, "admin")
    found = again.describe_acls(match).result(30)
    assert len(found) == 2, found


def test_credentials_acls_and_listeners_across_a_cluster(tmp_path, request):
    """Three brokers, each with a PLAINTEXT listener (between brokers) and a
    SASL_PLAINTEXT one. SCRAM credentials and ACLs made through node 1 reach
    every broker through the quorum; Metadata names every broker at the
    listener the client used; brokers replicate as User:ANONYMOUS with the
    CLUSTER_ACTION ACL SECURITY.md asks for."""
    from cluster_util import Cluster, cluster_of
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)
    c = Cluster(tmp_path)
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join('user_%s="%s"' % kv for kv in PW.items()) + ";")
    for b in c.brokers:
        b.sasl_port = free_port()
        cfg = b.workdir / "brook.toml"
        cfg.write_text(cfg.read_text() + "\n".join([
            '"listeners" = "PLAINTEXT://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d"' % (b.port, b.sasl_port),
            '"sasl.enabled.mechanisms" = "PLAIN,SCRAM-SHA-512"',
            "'sasl.jaas.config' = '%s'" % jaas,
            '"authorizer.class.name" = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"',
            '"super.users" = "User:admin"',
        ]) + "\n")
    with cluster_of(c, request):
        n1, n2, n3 = c.brokers
        a = admin_client(n1, "admin")
        topic = unique_topic("acl-cluster")
        for f in a.create_acls([
            acl(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:ANONYMOUS",
                AclOperation.CLUSTER_ACTION, AclPermissionType.ALLOW),
            acl(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", AclOperation.WRITE,
                AclPermissionType.ALLOW),
            acl(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", AclOperation.READ,
                AclPermissionType.ALLOW),
            acl(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", AclOperation.READ,
                AclPermissionType.ALLOW),
        ]).values():
            f.result(30)
        pw = "alice-scram-%d" % os.getpid()
        for f in a.alter_user_scram_credentials([UserScramCredentialUpsertion(
                "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), pw.encode())]).values():
            f.result(30)
        a.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        # Metadata over node 1's SASL listener names every broker at its SASL port.
        md = a.list_topics(timeout=20)
        assert sorted((x.id, x.port) for x in md.brokers.values()) == \
            sorted((b.node, b.sasl_port) for b in c.brokers), md.brokers
        # alice authenticates with SCRAM on node 3 alone, writes acks=all (the
        # followers fetch as ANONYMOUS) and reads every record back.
        alice = {"bootstrap.servers": "127.0.0.1:%d" % n3.sasl_port, "security.protocol": "SASL_PLAINTEXT",
                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": pw}
        extra = {k: v for k, v in alice.items() if k != "bootstrap.servers"}
        p = producer(alice["bootstrap.servers"], acks="all", **extra)
        dr = produce_keyed(p, topic, 2000)
        got = consume_all(alice["bootstrap.servers"], topic, 3, **dict(extra, **{"group.id": "alice-r"}))
        check_keyed(got, 2000, acked=dr.acked)
        # bob, without ACLs, is refused on node 2 too.
        bob = sasl(n2, "bob")
        errs = []
        p = producer(bob["bootstrap.servers"], **{k: v for k, v in bob.items() if k != "bootstrap.servers"},
                     **{"message.timeout.ms": 10000})
        p.produce(topic, b"v", on_delivery=lambda e, m: errs.append(e))
        p.flush(20)
        assert errs and errs[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errs
