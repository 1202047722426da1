//! Webhooks on the NATS engine: not yet. A webhook event must be decided
//! once for the cluster and queued durably where any node can deliver it
//! (PROTOCOL.md section 10); on NATS that is a JetStream stream with a
//! durable consumer per webhook and presence transitions decided by
//! compare-and-set in the presence bucket, which this engine does not do
//! yet. Until it does, a server with `[[webhooks]]` on NATS refuses to
//! start with this error, rather than sending events once per node or
//! losing them with a node.

use std::time::Duration;

use async_trait::async_trait;

use super::NatsBroker;
use crate::broker::{BrokerError, LoggedEvent, WebhookLog};

fn unsupported() -> BrokerError {
    BrokerError::Internal(
        "[[webhooks]] are not supported with broker = \"nats\" in this build; use the memory \
         or the Redis engine for webhooks"
            .into(),
    )
}

#[async_trait]
impl WebhookLog for NatsBroker {
    async fn enable_webhooks(
        &self,
        groups: &[String],
        _delay: Duration,
    ) -> Result<(), BrokerError> {
        if groups.is_empty() {
            return Ok(());
        }
        Err(unsupported())
    }

    async fn promote(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn lead(&self, _group: &str, _ttl: Duration) -> Result<bool, BrokerError> {
        Ok(false)
    }

    async fn read(&self, _group: &str, _max: usize) -> Result<Vec<LoggedEvent>, BrokerError> {
        Ok(Vec::new())
    }

    async fn ack(&self, _group: &str, _ids: &[String]) -> Result<(), BrokerError> {
        Ok(())
    }
}
