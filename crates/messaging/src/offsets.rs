//! Consumer offsets past the end of their queues: what a broker that lost its store
//! leaves behind, and the repair.
//!
//! A broker that starts again with an empty store numbers each queue from 0 again, while
//! a consumer still holds the offsets it had reached. Its next pull carries that offset
//! as the one to commit, and the new broker, which has none for the group, stores it.
//! The broker then answers the pull with `OFFSET_ILLEGAL` and the client corrects its
//! offset to the end of the queue, but the `rocketmq-broker` crate 1.0 never lets a
//! committed offset go down (`[NOTIFYME]update consumer offset less than store`), so the
//! client reads the old offset back and pulls past the end again, twice a second, until
//! the queue grows past it; what was stored below it is never consumed. (Apache's broker
//! accepts the correction, and skips only what was stored before it.)
//!
//! [`past_the_end`] finds such queues, and [`rewind`] moves their committed offset back
//! to the queue's start, but only while it is still the one read (a conditional update
//! of the Rust broker), so a consumer that moved on meanwhile is not sent back. A bank
//! consumes every message again from there: each one is idempotent on its side.

use cheetah_string::CheetahString;
use rocketmq_client_rust::{ConsumerAdmin, DefaultMQAdminExt, MQAdminMutationExt, OffsetAdmin};
use rocketmq_model::common::message::message_queue::MessageQueue;

use crate::topics::masters;
use crate::MessagingError;

/// How long one admin request may take.
const ADMIN_TIMEOUT_MS: u64 = 3_000;

/// A queue whose committed offset lies beyond the last message its broker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PastTheEnd {
    /// The broker's address.
    pub broker: CheetahString,
    /// The queue.
    pub queue: MessageQueue,
    /// The group's committed offset.
    pub committed: i64,
    /// The offset the broker would write next.
    pub end: i64,
}

/// The queues of every topic `group` consumes, on every master broker, whose committed
/// offset lies past their end. A broker that does not answer is skipped.
pub(crate) async fn past_the_end(admin: &DefaultMQAdminExt, group: &str) -> Vec<PastTheEnd> {
    let mut found = Vec::new();
    for broker in masters(admin).await {
        let stats = admin
            .examine_consume_stats(group.into(), None, None, Some(broker.clone()), Some(ADMIN_TIMEOUT_MS))
            .await;
        match stats {
            Ok(stats) => found.extend(stats.offset_table.into_iter().filter_map(|(queue, offsets)| {
                (offsets.get_consumer_offset() > offsets.get_broker_offset()).then(|| PastTheEnd {
                    broker: broker.clone(),
                    queue,
                    committed: offsets.get_consumer_offset(),
                    end: offsets.get_broker_offset(),
                })
            })),
            Err(error) => tracing::debug!(%broker, %error, "consumer offsets not readable now"),
        }
    }
    found
}

/// Moves `group`'s committed offset of `past.queue` back to the queue's first message,
/// if it is still `past.committed`. True when it moved.
pub(crate) async fn rewind(admin: &DefaultMQAdminExt, group: &str, past: &PastTheEnd) -> Result<bool, MessagingError> {
    let start = admin
        .min_offset(past.broker.clone(), past.queue.clone(), ADMIN_TIMEOUT_MS)
        .await
        .map_err(|e| MessagingError::client("read a queue's first offset", e))?;
    let outcome = admin
        .reset_consumer_offset_if_current(
            past.broker.clone(),
            group.into(),
            past.queue.topic().clone(),
            past.queue.queue_id(),
            past.committed,
            start.max(0),
        )
        .await
        .map_err(|e| MessagingError::client("rewind a consumer offset", e))?;
    Ok(outcome.applied)
}
