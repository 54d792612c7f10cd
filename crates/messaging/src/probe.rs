//! Whether the broker can be reached now, for `GET /readyz`.

// Classic Pull asks the name server and the broker directly without joining any
// consumer group's rebalancing, which is all a probe needs.
#![allow(deprecated)]

use std::time::Duration;

use rocketmq_client_rust::DefaultMQPullConsumer;

use crate::{MessagingError, MqClient, MqSettings};

/// How long one probe may take before the broker counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the name server for a topic's route and the broker for one of its queues' offsets.
pub struct BrokerProbe {
    consumer: DefaultMQPullConsumer,
    topic: String,
}

impl BrokerProbe {
    /// Starts a probe of `topic` (the bank's inbound topic), named after `bank` and this
    /// process so that no consumer group is shared.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        bank: &str,
        topic: &str,
    ) -> Result<BrokerProbe, MessagingError> {
        let group = format!("txbank_probe_{bank}_{}", std::process::id());
        let consumer = start_pull_consumer(client, settings, group).await?;
        Ok(BrokerProbe {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Ok when the name server routes the topic and the broker answers, within two seconds.
    pub async fn check(&self) -> Result<(), MessagingError> {
        let probe = async {
            let queues = self
                .consumer
                .fetch_subscribe_message_queues(&self.topic)
                .await
                .map_err(|e| MessagingError::client("route lookup", e))?;
            let queue = queues.first().ok_or_else(|| MessagingError::Client {
                operation: "route lookup",
                message: format!("no queue of topic {}", self.topic),
            })?;
            self.consumer
                .max_offset(queue)
                .await
                .map_err(|e| MessagingError::client("broker offset", e))?;
            Ok(())
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe).await.unwrap_or_else(|_| {
            Err(MessagingError::Client {
                operation: "broker probe",
                message: format!("no answer within {PROBE_TIMEOUT:?}"),
            })
        })
    }

    /// Stops the probe's client.
    pub async fn shutdown(self) {
        let _ = self.consumer.shutdown().await;
    }
}

/// Starts a classic pull consumer in `group`: it reads queues and offsets without joining
/// any rebalancing.
pub(crate) async fn start_pull_consumer(
    client: &MqClient,
    settings: &MqSettings,
    group: String,
) -> Result<DefaultMQPullConsumer, MessagingError> {
    let consumer = DefaultMQPullConsumer::builder(client.runtime())
        .consumer_group(group)
        .name_server_addr(settings.namesrv_addr.clone())
        .build()
        .map_err(|e| MessagingError::client("pull consumer", e))?;
    consumer
        .start()
        .await
        .map_err(|e| MessagingError::client("pull consumer start", e))?;
    Ok(consumer)
}
