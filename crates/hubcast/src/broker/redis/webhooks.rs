//! The Redis engine's webhook log: not in this build yet. A server with
//! `[[webhooks]]` on the Redis engine refuses to start, saying so, rather
//! than send events once per node or lose them with a node.

use std::time::Duration;

use async_trait::async_trait;

use super::RedisBroker;
use crate::broker::BrokerError;
use crate::broker::webhooks::{LoggedEvent, WebhookEvent, WebhookLog};

const NOT_YET: &str = "[[webhooks]] need broker = \"memory\" in this build (the Redis engine's \
cluster-wide webhook log is not implemented yet)";

#[async_trait]
impl WebhookLog for RedisBroker {
    async fn enable_webhooks(&self, groups: &[String], _: Duration) -> Result<(), BrokerError> {
        if groups.is_empty() {
            return Ok(());
        }
        Err(BrokerError::Internal(NOT_YET.into()))
    }
    async fn append(&self, _: WebhookEvent) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn promote(&self) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn lead(&self, _: &str, _: Duration) -> Result<bool, BrokerError> {
        Ok(false)
    }
    async fn read(&self, _: &str, _: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        Ok(Vec::new())
    }
    async fn ack(&self, _: &str, _: &[String]) -> Result<(), BrokerError> {
        Ok(())
    }
}
