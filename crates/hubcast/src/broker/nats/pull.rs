//! Reading a room's messages back from the stream through a pull consumer,
//! whole or not at all.

use async_nats::jetstream::consumer;
use futures_util::StreamExt;

use crate::broker::BrokerError;

use super::stream::Stored;
use super::{REQUEST_TIMEOUT, down};

/// Most messages read from the stream in one batch.
const BATCH: usize = 1000;

/// Pulls in a row that may bring nothing before a read gives up.
const EMPTY_PULLS: u32 = 3;

/// Pulls up to `wanted` messages (what the consumer had pending when it was
/// made; later ones are newer than the caller's position) until they came
/// or the server has none left for the consumer. Gives up, with an error,
/// after [`EMPTY_PULLS`] pulls in a row brought nothing while the server
/// still counted messages pending.
pub(super) async fn read_all(
    c: &mut consumer::Consumer<consumer::pull::Config>,
    room: &str,
    wanted: u64,
) -> Result<Vec<Stored>, BrokerError> {
    let failed = |e: &dyn std::fmt::Display| down(format!("read {room}: {e}"));
    let mut out = Vec::with_capacity((wanted as usize).min(BATCH));
    let mut read = 0u64;
    // Messages the server says the consumer still has.
    let mut left = wanted;
    let mut empty = 0;
    while read < wanted && left > 0 {
        let mut batch = c
            .batch()
            .max_messages(((wanted - read) as usize).min(BATCH))
            .expires(REQUEST_TIMEOUT)
            .messages()
            .await
            .map_err(|e| failed(&e))?;
        let mut got = 0u64;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| failed(&e))?;
            got += 1;
            let info = m.info().map_err(|e| failed(&e))?;
            left = info.pending;
            let time = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
            let seq = info.stream_sequence;
            match Stored::from_parts(seq, m.headers.as_ref(), m.payload.clone(), time) {
                Some(s) => out.push(s),
                None => tracing::warn!(
                    room,
                    seq,
                    "skipped a stream message without hubcast headers"
                ),
            }
        }
        read += got;
        if got > 0 {
            empty = 0;
            continue;
        }
        left = c.info().await.map_err(|e| failed(&e))?.num_pending;
        empty += 1;
        if left > 0 && empty >= EMPTY_PULLS {
            return Err(failed(&format!(
                "{left} messages pending but {EMPTY_PULLS} pulls brought none"
            )));
        }
    }
    Ok(out)
}
