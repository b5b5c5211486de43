//! ApiVersions: the rows of the routing table, or error 35 with them for a
//! version we do not speak (answered as v0, which every client can read).
//!
//! From v3 the answer also carries the features (KIP-584): Brook finalizes
//! `transaction.version` 2, as a Kafka 4 cluster does, so 4.x clients use
//! transaction version 2 (KIP-890: the epoch bumped by every commit or abort,
//! partitions added to the transaction by their leaders).

use brook_engine::coord::txn::TRANSACTION_VERSION;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";
/// The epoch of the finalized features; they never change while Brook runs
/// (clients take the features of the highest epoch they have seen).
const FEATURES_EPOCH: i64 = 1;

pub async fn handle(_req: ApiVersionsRequest, table: Vec<ApiVersion>) -> ApiVersionsResponse {
    let name = StrBytes::from_static_str(TRANSACTION_VERSION_FEATURE);
    ApiVersionsResponse::default()
        .with_api_keys(table)
        .with_supported_features(vec![
            SupportedFeatureKey::default()
                .with_name(name.clone())
                .with_min_version(0)
                .with_max_version(TRANSACTION_VERSION),
        ])
        .with_finalized_features_epoch(FEATURES_EPOCH)
        .with_finalized_features(vec![
            FinalizedFeatureKey::default()
                .with_name(name)
                .with_min_version_level(TRANSACTION_VERSION)
                .with_max_version_level(TRANSACTION_VERSION),
        ])
}

pub fn unsupported_version(table: Vec<ApiVersion>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table)
}
