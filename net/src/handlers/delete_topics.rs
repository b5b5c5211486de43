//! DeleteTopics: the topic leaves the catalog and its data is removed, on every
//! shard, before the answer. Deletion by topic id (v6) is supported.

use std::rc::Rc;

use brook_engine::EngineError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::topic_name;
use crate::errors;
use crate::server::ShardServer;

pub async fn handle(
    srv: Rc<ShardServer>,
    req: DeleteTopicsRequest,
    version: i16,
    client: super::ClientInfo,
) -> DeleteTopicsResponse {
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = Vec::new();
    if version >= 6 {
        for t in req.topics {
            targets.push((t.name.map(|n| n.to_string()), t.topic_id));
        }
    } else {
        for n in req.topic_names {
            targets.push((Some(n.to_string()), uuid::Uuid::nil()));
        }
    }
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let name = name.or_else(|| {
            let catalog = srv.shard.catalog();
            catalog.topic_by_id(id.as_bytes()).map(|t| t.name.clone())
        });
        let outcome = match &name {
            Some(n)
                if !srv.allowed_topic(&client, brook_engine::meta::acls::Operation::Delete, n) =>
            {
                Err(EngineError::TopicAuthorizationFailed)
            }
            Some(n) => srv.shard.delete_topic(n.clone()).await,
            // Only v6+ names a topic by id alone, and Kafka answers an id it does
            // not know with UNKNOWN_TOPIC_ID.
            None => Err(EngineError::UnknownTopicId),
        };
        let mut r = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        if let Err(e) = outcome {
            r = r
                .with_error_code(errors::code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
        responses.push(r);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
