//! ElectLeaders (`kafka-leader-election`, `Admin.electLeaders`): preferred or
//! unclean leader election of chosen partitions, or of all of them. The image
//! decides each partition (`ClusterImage::election_for`), the metadata quorum
//! commits one proposal per partition, and the answer waits until this
//! broker has installed it. A single broker leads everything it has already:
//! every election is ELECTION_NOT_NEEDED.

use std::rc::Rc;

use futures::future::join_all;

use super::Shard;
use crate::error::EngineError;

/// One partition's outcome.
pub type Elected = (String, u32, Result<(), EngineError>);

impl Shard {
    /// Elects leaders of `partitions` (every partition when `None`; then,
    /// as Kafka, those that needed no election are left out of the answer).
    pub async fn elect_leaders(
        self: &Rc<Self>,
        unclean: bool,
        partitions: Option<Vec<(String, u32)>>,
    ) -> Vec<Elected> {
        let catalog = self.catalog();
        let all = partitions.is_none();
        let wanted = partitions.unwrap_or_else(|| {
            (catalog.topics.values())
                .flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p)))
                .collect()
        });
        let img = self.cluster_image();
        let elections = wanted.into_iter().map(|(topic, p)| {
            let decided = match &img {
                Some(img) => img.election_for(&topic, p, unclean),
                None => match catalog.topics.get(&topic) {
                    Some(t) if p < t.partitions => Err(EngineError::ElectionNotNeeded),
                    _ => Err(EngineError::UnknownTopicOrPartition),
                },
            };
            async move {
                let r = match decided {
                    Ok(record) => self.propose_and_install(vec![record]).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if r.is_ok() {
                    tracing::info!(partition = %format_args!("{topic}-{p}"), unclean, "leader elected on request");
                }
                (topic, p, r)
            }
        });
        let mut out = join_all(elections).await;
        if all {
            out.retain(|(_, _, r)| *r != Err(EngineError::ElectionNotNeeded));
        }
        out
    }
}
