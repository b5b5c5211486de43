//! ApiVersions: the rows of the routing table, or error 35 with them for a
//! version we do not speak (answered as v0, which every client can read).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

pub async fn handle(_req: ApiVersionsRequest, table: Vec<ApiVersion>) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(table)
}

pub fn unsupported_version(table: Vec<ApiVersion>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(table)
}
