"""Wire client for the differential suite (test_differential.py).

Requests and responses are encoded and decoded by kafka-python's low-level,
JSON-schema generated message classes (kafka.protocol.*), so any version of any
API — flexible or not — can be sent over a plain blocking socket, exactly the
same bytes to Apache Kafka and to Brook. Record batches come from kproto.py.
"""

import socket
import struct
import time

from kafka.protocol.admin.groups import (DeleteGroupsRequest, DescribeGroupsRequest,
                                         ListGroupsRequest)
from kafka.protocol.admin.topics import CreateTopicsRequest, DeleteTopicsRequest
from kafka.protocol.admin.client_quotas import (AlterClientQuotasRequest,
                                                DescribeClientQuotasRequest)
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                           OffsetCommitRequest, OffsetFetchRequest,
                                           SyncGroupRequest)
from kafka.protocol.consumer.offsets import ListOffsetsRequest
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.protocol.producer.transaction import InitProducerIdRequest

import kproto as kp

REQUESTS = {cls.API_KEY: cls for cls in (
    ProduceRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ApiVersionsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, InitProducerIdRequest, FindCoordinatorRequest,
    JoinGroupRequest, SyncGroupRequest, HeartbeatRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, ListGroupsRequest, DescribeGroupsRequest,
    DeleteGroupsRequest, DescribeClientQuotasRequest, AlterClientQuotasRequest)}

# Kafka's API names (ApiKeys.java), for readable keys in observations and in
# COMPATIBILITY.md.
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 55: "DescribeQuorum", 57: "UpdateFeatures",
    60: "DescribeCluster", 61: "DescribeProducers", 64: "UnregisterBroker",
    65: "DescribeTransactions", 66: "ListTransactions", 68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
    74: "ListConfigResources", 75: "DescribeTopicPartitions", 76: "ShareGroupHeartbeat",
    77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge",
    80: "AddRaftVoter", 81: "RemoveRaftVoter", 83: "InitializeShareGroupState",
    84: "ReadShareGroupState", 85: "WriteShareGroupState", 86: "DeleteShareGroupState",
    87: "ReadShareGroupStateSummary", 88: "StreamsGroupHeartbeat", 89: "StreamsGroupDescribe",
    90: "DescribeShareGroupOffsets", 91: "AlterShareGroupOffsets", 92: "DeleteShareGroupOffsets",
}


def api_name(key):
    return API_NAMES.get(key, "api%d" % key)


class Closed(Exception):
    """The broker closed the connection instead of answering."""


class Conn:
    """One blocking connection. `call` sends one request and returns the decoded
    response (a kafka-python DataContainer; `.to_dict()` gives plain data)."""

    def __init__(self, bootstrap, timeout=15.0, client_id="brook-diff"):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.client_id = client_id
        self.corr = 0
        self.versions = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _recv_exact(self, n, deadline):
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out after %d of %d bytes" % (len(buf), n))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def send_frame(self, payload):
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(str(e))

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        (n,) = struct.unpack(">i", self._recv_exact(4, deadline))
        assert 4 <= n < 256 * 1024 * 1024, "bad response length %d" % n
        return self._recv_exact(n, deadline)

    def call(self, req_cls, version, timeout=None, **fields):
        req = req_cls[version](**fields)
        self.corr += 1
        req.with_header(correlation_id=self.corr, client_id=self.client_id)
        self.send_frame(req.encode(header=True))
        if req_cls is ProduceRequest and fields.get("acks") == 0:
            return None
        data = self.recv_frame(timeout)
        resp_cls = req.header.get_response_class()
        resp = resp_cls.decode(data, version=version, header=True)
        assert resp.header.correlation_id == self.corr, (resp.header.correlation_id, self.corr)
        return resp

    def api_versions(self):
        """{api_key: (min, max)} from ApiVersions v0."""
        r = self.call(ApiVersionsRequest, 0)
        assert r.error_code == 0, r
        self.versions = {a.api_key: (a.min_version, a.max_version) for a in r.api_keys}
        return self.versions


def common_version(a, b, api_key, cap=None):
    """The highest version both tables list (and the codec knows), or None."""
    if api_key not in a or api_key not in b:
        return None
    hi = min(a[api_key][1], b[api_key][1], REQUESTS[api_key].max_version)
    if cap is not None:
        hi = min(hi, cap)
    lo = max(a[api_key][0], b[api_key][0])
    return hi if hi >= lo else None


def produce_req(topic, partition, records, acks=-1, timeout_ms=10000, transactional_id=None):
    return dict(transactional_id=transactional_id, acks=acks, timeout_ms=timeout_ms,
                topic_data=[ProduceRequest.TopicProduceData(
                    name=topic, partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(
                        index=partition, records=records)])])
