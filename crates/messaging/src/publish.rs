//! Plain (non-transactional) sends: what the seed's Java bank1 puts on the topic after a
//! commit, for interoperability checks and operators' replays.

use rocketmq_client_rust::DefaultMQProducer;

use txbank_domain::BankId;

use crate::{MessagingError, MqClient, MqSettings};

/// Sends `body` to `to_bank`'s `topic` `times` times as one plain message each, keyed by
/// `key`, signed as `settings` say.
pub async fn publish(
    client: &MqClient,
    settings: &MqSettings,
    (to_bank, topic): (&BankId, &str),
    key: &str,
    body: &[u8],
    times: u32,
) -> Result<(), MessagingError> {
    let mut producer =
        start_plain_producer(client, settings, &format!("txbank_publish_{}", std::process::id())).await?;
    let mut result = Ok(());
    for _ in 0..times {
        let message = settings.signer.message(to_bank, topic, key, body.to_vec())?;
        if let Err(error) = producer.send(message).await {
            result = Err(MessagingError::client("send", error));
            break;
        }
    }
    producer.shutdown().await;
    result
}

/// Bodies at least this long would be compressed (RocketMQ's default is 4 KiB). A message
/// of transfers or of settlement reports is a few KiB of JSON, sent over loopback or a
/// data-centre network: never compressed, so neither bank spends CPU on it (zlib took a
/// twentieth of a sending bank's CPU under batches).
pub(crate) const NEVER_COMPRESS: u32 = u32::MAX;

/// Starts a producer of plain (non-transactional) messages in `group`.
pub(crate) async fn start_plain_producer(
    client: &MqClient,
    settings: &MqSettings,
    group: &str,
) -> Result<DefaultMQProducer, MessagingError> {
    let mut producer = DefaultMQProducer::builder(client.runtime())
        .client_config(settings.client_config())
        .producer_group(group.to_string())
        .name_server_addr(settings.namesrv_addr.clone())
        .send_msg_timeout(settings.send_timeout.as_millis() as u32)
        .compress_msg_body_over_howmuch(NEVER_COMPRESS)
        .build();
    producer
        .start()
        .await
        .map_err(|e| MessagingError::client("producer start", e))?;
    Ok(producer)
}
