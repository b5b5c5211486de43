//! The ApiVersions table: which Kafka APIs Brook serves, and which versions.
//!
//! The ranges are Kafka 3.0's for these APIs (OffsetCommit from v2 and OffsetFetch
//! from v1: the codec does not carry the 0.8-era versions), so that clients which infer the
//! broker's release from the advertised ranges (kafka-python does: ListOffsets v7
//! means 3.0) pick a release whose behaviour Brook implements. Two deliberate
//! differences, as Kafka 4 does: Produce is listed from v0 — librdkafka before
//! 2.11.1 (Debian's kcat) enables gzip/snappy/lz4 only when it sees Produce v0 —
//! but v0–2 (message format v0/v1) are refused; Fetch starts at v4, the first
//! version that carries RecordBatch v2.
//!
//! Newer versions are listed where a client needs them and they change nothing
//! kafka-python's release guess reads (it keys on ListOffsets, Fetch, Produce and
//! JoinGroup): Metadata v12–13 (topics by id, as `Admin.describeTopics` by ids
//! needs), ListGroups v5 (the group type filter of `Admin.listGroups`), and the
//! admin APIs added since (DescribeConfigs, DescribeCluster, CreatePartitions,
//! DescribeTopicPartitions) at
//! Kafka 4's ranges.

use kafka_protocol::messages::ApiKey;

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

pub const SUPPORTED: &[ApiRange] = &[
    api(ApiKey::Produce, 0, 9),
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 13),
    api(ApiKey::ApiVersions, 0, 3),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 7),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 4),
    api(ApiKey::OffsetCommit, 2, 8),
    api(ApiKey::OffsetFetch, 1, 8),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::DescribeClientQuotas, 0, 1),
    api(ApiKey::AlterClientQuotas, 0, 1),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::DescribeCluster, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// Lowest Produce version Brook decodes: v3 is the first with RecordBatch v2.
pub const PRODUCE_MIN_DECODABLE: i16 = 3;

pub fn range_of(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_listed_version_is_decodable_by_the_codec() {
        use kafka_protocol::messages::*;
        let codec = |k: ApiKey| match k {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::DescribeClientQuotas => DescribeClientQuotasRequest::VERSIONS,
            ApiKey::AlterClientQuotas => AlterClientQuotasRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::DescribeTopicPartitions => DescribeTopicPartitionsRequest::VERSIONS,
            other => panic!("{other:?} listed without a codec check"),
        };
        for r in SUPPORTED {
            let v = codec(r.key);
            let min = if r.key == ApiKey::Produce {
                PRODUCE_MIN_DECODABLE
            } else {
                r.min
            };
            assert!(
                v.min <= min && r.max <= v.max,
                "{:?} {}..{} not within codec {v:?}",
                r.key,
                min,
                r.max
            );
        }
    }
}
