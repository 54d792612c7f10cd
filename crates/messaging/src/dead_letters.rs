//! The dead-letter queue of a consumer group (`%DLQ%<group>`): where RocketMQ puts a
//! message the bank refused to apply after its redeliveries (unreadable, unsigned or
//! forged, from an unknown bank, or a database down for longer than the retries). It can
//! be listed and, after a fix, replayed to the bank's inbound topic: the replay carries
//! the original body and signature, so it is checked like any message and applied at
//! most once (the `de_duplication` table absorbs a second replay).

// Classic Pull reads a queue from any offset without taking part in rebalancing, which is
// what inspecting a dead-letter queue needs; the lite pull consumer would subscribe.
#![allow(deprecated)]

use rocketmq_client_rust::{DefaultMQPullConsumer, PullStatus};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::{MessageConst, MessageTrait};
use serde::Serialize;

use crate::probe::start_pull_consumer;
use crate::publish::start_plain_producer;
use crate::signing::{BANK_SIGNATURE_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY};
use crate::{MessagingError, MqClient, MqSettings};

/// Messages read from one queue per pull.
const PULL_BATCH: i32 = 32;

/// One dead-lettered message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// RocketMQ's message id.
    pub msg_id: String,
    /// The message key: the transfer's `tx_no` for txbank's and the seed's messages;
    /// for a message of several transfers or of settlement reports, each one's `tx_no`,
    /// space-separated.
    pub key: String,
    /// How many times it had been redelivered.
    pub reconsumed: i32,
    /// When the broker stored it, in Unix milliseconds.
    pub stored_at_ms: i64,
    /// Its body, as text.
    pub body: String,
    /// Its signature properties (the bank's signature and key id, the shared key's),
    /// those it had.
    #[serde(skip)]
    signatures: Vec<(&'static str, String)>,
}

/// The name of `group`'s dead-letter topic.
pub fn dead_letter_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// Every message in `group`'s dead-letter queue, oldest first per queue; empty when the
/// group never dead-lettered anything.
pub async fn list(client: &MqClient, settings: &MqSettings, group: &str) -> Result<Vec<DeadLetter>, MessagingError> {
    let reader = format!("txbank_dlq_reader_{}", std::process::id());
    let consumer = start_pull_consumer(client, settings, reader).await?;
    let read = read_all(&consumer, &dead_letter_topic(group)).await;
    let _ = consumer.shutdown().await;
    read
}

async fn read_all(consumer: &DefaultMQPullConsumer, topic: &str) -> Result<Vec<DeadLetter>, MessagingError> {
    // A group that never dead-lettered has no such topic, and so no route.
    let Ok(queues) = consumer.fetch_subscribe_message_queues(topic).await else {
        return Ok(Vec::new());
    };
    let mut letters = Vec::new();
    for queue in &queues {
        let mut offset = consumer
            .min_offset(queue)
            .await
            .map_err(|e| MessagingError::client("dead-letter offsets", e))?;
        let end = consumer
            .max_offset(queue)
            .await
            .map_err(|e| MessagingError::client("dead-letter offsets", e))?;
        while offset < end {
            let pulled = consumer
                .pull(queue, "*", offset, PULL_BATCH)
                .await
                .map_err(|e| MessagingError::client("dead-letter pull", e))?;
            if *pulled.pull_status() != PullStatus::Found {
                break;
            }
            letters.extend(pulled.msg_found_list().unwrap_or_default().iter().map(DeadLetter::of));
            offset = pulled.next_begin_offset() as i64;
        }
    }
    Ok(letters)
}

/// Sends every dead letter of `group` that has the key `key` again to `topic`, with its
/// original body and signature. Returns how many were sent (0: none has this key).
pub async fn replay(
    client: &MqClient,
    settings: &MqSettings,
    (group, topic): (&str, &str),
    key: &str,
) -> Result<usize, MessagingError> {
    let letters: Vec<DeadLetter> = list(client, settings, group)
        .await?
        .into_iter()
        .filter(|letter| letter.key.split(MessageConst::KEY_SEPARATOR).any(|one| one == key))
        .collect();
    if letters.is_empty() {
        return Ok(0);
    }
    let mut producer =
        start_plain_producer(client, settings, &format!("txbank_dlq_replay_{}", std::process::id())).await?;
    let mut sent = Ok(0);
    for letter in &letters {
        let mut builder = rocketmq_model::common::message::message_single::Message::builder()
            .topic(topic)
            .key(letter.key.as_str())
            .body(letter.body.clone().into_bytes());
        for (name, value) in &letter.signatures {
            builder = builder
                .raw_property(*name, value.as_str())
                .map_err(|e| MessagingError::client("replay message", e))?;
        }
        let message = builder
            .build()
            .map_err(|e| MessagingError::client("replay message", e))?;
        if let Err(error) = producer.send(message).await {
            sent = Err(MessagingError::client("send", error));
            break;
        }
        sent = sent.map(|n| n + 1);
    }
    producer.shutdown().await;
    sent
}

impl DeadLetter {
    fn of(msg: &MessageExt) -> DeadLetter {
        let property = |name: &'static str| msg.property(&cheetah_string::CheetahString::from_static_str(name));
        DeadLetter {
            msg_id: msg.msg_id().to_string(),
            key: property("KEYS").map(|k| k.to_string()).unwrap_or_default(),
            reconsumed: msg.reconsume_times(),
            stored_at_ms: msg.store_timestamp(),
            body: String::from_utf8_lossy(&msg.body().unwrap_or_default()).into_owned(),
            signatures: [BANK_SIGNATURE_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY]
                .into_iter()
                .filter_map(|name| Some((name, property(name)?.to_string())))
                .collect(),
        }
    }
}
