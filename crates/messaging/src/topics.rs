//! Topic administration: make sure a topic exists before clients use it, as
//! `mqadmin updateTopic` does, so consumers see it at once instead of after their next
//! route refresh, and clusters with `autoCreateTopicEnable=false` work too.

use std::time::Duration;

use rocketmq_client_rust::{DefaultMQAdminExt, RouteAdmin, TopicAdmin};
use rocketmq_model::topic::TopicConfig;

use crate::{MessagingError, MqClient, MqSettings};

/// Queues a topic gets when txbank creates it.
const QUEUES: u32 = 8;
/// How long to wait for at least one broker to register with the name server (a
/// restarted name server learns of a broker only at its next registration).
const BROKER_WAIT: Duration = Duration::from_secs(90);

/// Creates `topic` on every master broker of the cluster, or updates it to the same
/// settings when it exists. Waits for a broker to register first.
pub async fn ensure_topic(client: &MqClient, settings: &MqSettings, topic: &str) -> Result<(), MessagingError> {
    let mut admin =
        DefaultMQAdminExt::with_admin_ext_group(client.runtime(), format!("txbank_admin_{}", std::process::id()));
    admin.set_namesrv_addr(settings.namesrv_addr.as_str());
    admin
        .start()
        .await
        .map_err(|e| MessagingError::client("admin start", e))?;
    let result = create_everywhere(&admin, topic).await;
    admin.shutdown().await;
    result
}

async fn create_everywhere(admin: &DefaultMQAdminExt, topic: &str) -> Result<(), MessagingError> {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        let masters: Vec<_> = match admin.examine_broker_cluster_info().await {
            Ok(cluster) => cluster
                .broker_addr_table
                .unwrap_or_default()
                .values()
                .filter_map(|broker| broker.broker_addrs().get(&0).cloned())
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "cluster not readable yet");
                Vec::new()
            }
        };
        if !masters.is_empty() {
            for addr in masters {
                let config = TopicConfig::with_queues(topic, QUEUES, QUEUES);
                admin
                    .create_and_update_topic_config(addr, config)
                    .await
                    .map_err(|e| MessagingError::client("create topic", e))?;
            }
            tracing::info!(topic, "topic ready");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(MessagingError::Client {
                operation: "create topic",
                message: format!("no broker registered with the name server within {BROKER_WAIT:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
