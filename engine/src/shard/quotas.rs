//! Client quotas on a shard: every shard reads its own copy; changes are made
//! on shard 0, persisted, and broadcast.

use std::rc::Rc;
use std::sync::Arc;

use super::Shard;
use crate::error::EngineError;
use crate::meta::quota::{QuotaEntity, QuotaOp, Quotas};
use crate::types::ShardId;

impl Shard {
    pub fn quotas(&self) -> Arc<Quotas> {
        self.quotas.borrow().clone()
    }

    /// Applies AlterClientQuotas changes (on shard 0), persists and broadcasts them.
    pub async fn alter_quotas(
        self: &Rc<Self>,
        changes: Vec<(QuotaEntity, Vec<QuotaOp>)>,
        validate_only: bool,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if self.id.0 != 0 {
            let fut = self.invoke_on(ShardId(0), move |s| async move {
                s.alter_quotas(changes, validate_only).await
            });
            return fut.await?;
        }
        let _guard = self.topic_lock.lock().await;
        let mut next = (*self.quotas()).clone();
        let mut results = Vec::with_capacity(changes.len());
        for (entity, ops) in &changes {
            results.push(next.with_changes(entity, ops).map(|q| next = q));
        }
        if validate_only || next == *self.quotas() {
            return Ok(results);
        }
        next.store(&self.shared.config.data_dir)?;
        let next = Arc::new(next);
        self.invoke_on_all(move |shard| async move {
            *shard.quotas.borrow_mut() = next;
        })
        .await;
        Ok(results)
    }
}
