//! The ApiVersions table: which Kafka APIs Brook serves, and which versions.
//!
//! The ranges are Kafka 3.0's for these APIs, so that clients which infer the
//! broker's release from the advertised ranges (kafka-python does: ListOffsets v7
//! means 3.0) pick a release whose behaviour Brook implements. Two deliberate
//! differences, as Kafka 4 does: Produce is listed from v0 — librdkafka before
//! 2.11.1 (Debian's kcat) enables gzip/snappy/lz4 only when it sees Produce v0 —
//! but v0–2 (message format v0/v1) are refused; Fetch starts at v4, the first
//! version that carries RecordBatch v2.

use kafka_protocol::messages::ApiKey;

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

pub const SUPPORTED: &[ApiRange] = &[
    ApiRange {
        key: ApiKey::Produce,
        min: 0,
        max: 9,
    },
    ApiRange {
        key: ApiKey::Fetch,
        min: 4,
        max: 12,
    },
    ApiRange {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 7,
    },
    ApiRange {
        key: ApiKey::Metadata,
        min: 0,
        max: 11,
    },
    ApiRange {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 3,
    },
    ApiRange {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
    },
    ApiRange {
        key: ApiKey::DeleteTopics,
        min: 1,
        max: 6,
    },
    ApiRange {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 4,
    },
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
