//! Topic administration: make sure a topic exists before clients use it, as
//! `mqadmin updateTopic` does, so consumers see it at once instead of after their next
//! route refresh, and clusters with `autoCreateTopicEnable=false` work too; and keep it
//! on every master broker of the cluster, including one added later or started again
//! with an empty store.

use std::time::Duration;

use cheetah_string::CheetahString;
use rocketmq_client_rust::{DefaultMQAdminExt, RouteAdmin, TopicAdmin};
use rocketmq_model::topic::TopicConfig;

use crate::tasks::PartTask;
use crate::{MessagingError, MqClient, MqSettings};

/// Queues a topic gets when txbank creates it, unless a bank's configuration says
/// otherwise: one for each instance of a bank run as two. A consumer pulls each queue on
/// its own, so every queue more makes each pull (and each listener callback and group
/// commit) carry fewer messages: on two cores at 16 clients, bank2 spent 0.49-0.53 ms of
/// CPU per transfer with 8 queues and 0.35-0.37 ms with 2 (docs/PERFORMANCE.md). A topic
/// that has more keeps them (see [`ensure_topic`]).
pub const DEFAULT_TOPIC_QUEUES: u32 = 2;
/// How often a [`TopicKeeper`] looks for master brokers that lack a topic.
const KEEP_EVERY: Duration = Duration::from_secs(15);
/// How long to wait for at least one broker to register with the name server (a
/// restarted name server learns of a broker only at its next registration).
const BROKER_WAIT: Duration = Duration::from_secs(90);

/// Creates `topic` on every master broker of the cluster with [`DEFAULT_TOPIC_QUEUES`] queues, or
/// updates it to the same settings when it exists, never to fewer queues than the broker
/// says it has (messages in a queue taken away would no longer be consumed; a broker
/// that does not answer the question counts as having none). Waits for a broker to
/// register first.
pub async fn ensure_topic(client: &MqClient, settings: &MqSettings, topic: &str) -> Result<(), MessagingError> {
    ensure_topic_queues(client, settings, topic, DEFAULT_TOPIC_QUEUES).await
}

/// [`ensure_topic`] with `queues` queues at least.
pub async fn ensure_topic_queues(
    client: &MqClient,
    settings: &MqSettings,
    topic: &str,
    queues: u32,
) -> Result<(), MessagingError> {
    let mut admin = start_admin(client, settings, "admin").await?;
    let result = create_everywhere(&admin, topic, queues).await;
    admin.shutdown().await;
    result
}

/// The most queues `topic` has on any master broker of the cluster; 0 when none has it.
pub async fn topic_queues(client: &MqClient, settings: &MqSettings, topic: &str) -> Result<u32, MessagingError> {
    let mut admin = start_admin(client, settings, "admin").await?;
    let mut most = 0;
    for addr in masters(&admin).await {
        most = most.max(queues_on(&admin, addr, topic).await);
    }
    admin.shutdown().await;
    Ok(most)
}

/// An admin client of the cluster `settings` name, in an admin group of its own for
/// `purpose` (one process may run several); shut it down after use.
pub(crate) async fn start_admin(
    client: &MqClient,
    settings: &MqSettings,
    purpose: &str,
) -> Result<DefaultMQAdminExt, MessagingError> {
    let group = format!("txbank_{purpose}_{}", std::process::id());
    let mut admin = DefaultMQAdminExt::with_admin_ext_group(client.runtime(), group);
    admin.set_namesrv_addr(settings.namesrv_addr.as_str());
    admin
        .start()
        .await
        .map_err(|e| MessagingError::client("admin start", e))?;
    Ok(admin)
}

/// The addresses of the cluster's master brokers; none while no broker registered.
pub(crate) async fn masters(admin: &DefaultMQAdminExt) -> Vec<CheetahString> {
    match admin.examine_broker_cluster_info().await {
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
    }
}

/// The queues `topic` has on the broker at `addr`; 0 when it does not have it (or does
/// not answer).
async fn queues_on(admin: &DefaultMQAdminExt, addr: CheetahString, topic: &str) -> u32 {
    admin
        .examine_topic_config(addr, topic.into())
        .await
        .map_or(0, |config| config.read_queue_nums.max(config.write_queue_nums))
}

/// Creates or updates `topic` with `queues` queues at least on every master broker,
/// waiting up to [`BROKER_WAIT`] for one to register.
async fn create_everywhere(admin: &DefaultMQAdminExt, topic: &str, queues: u32) -> Result<(), MessagingError> {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        let masters = masters(admin).await;
        if !masters.is_empty() {
            for addr in masters {
                let queues = queues.max(queues_on(admin, addr.clone(), topic).await);
                let config = TopicConfig::with_queues(topic, queues, queues);
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

/// Keeps topics on every master broker of the cluster: every [`KEEP_EVERY`] it creates
/// each on any master that lacks it. A broker that joins the cluster after the bank
/// started, or that was started again with an empty store, would otherwise carry none
/// of the bank's traffic, and the topic would vanish with the last broker that has it.
pub struct TopicKeeper {
    task: PartTask,
}

impl TopicKeeper {
    /// Makes sure of `topics` as [`ensure_topic_queues`] does, each with `queues` queues
    /// at least, then keeps them, with `queues` queues on a broker that lacks one.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        topics: Vec<String>,
        queues: u32,
    ) -> Result<TopicKeeper, MessagingError> {
        let mut admin = start_admin(client, settings, "topics").await?;
        for topic in &topics {
            if let Err(error) = create_everywhere(&admin, topic, queues).await {
                admin.shutdown().await;
                return Err(error);
            }
        }
        let task = PartTask::spawn(&settings.tasks, |stop| async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(KEEP_EVERY) => {}
                    () = stop.cancelled() => break,
                }
                add_where_missing(&admin, &topics, queues).await;
            }
            admin.shutdown().await;
        });
        Ok(TopicKeeper { task })
    }

    /// Stops after the check under way.
    pub async fn shutdown(self) {
        self.task.stop().await;
    }
}

/// Creates each of `topics` with `queues` queues on every master broker that lacks it.
async fn add_where_missing(admin: &DefaultMQAdminExt, topics: &[String], queues: u32) {
    for addr in masters(admin).await {
        for topic in topics {
            if queues_on(admin, addr.clone(), topic).await > 0 {
                continue;
            }
            let config = TopicConfig::with_queues(topic, queues, queues);
            match admin.create_and_update_topic_config(addr.clone(), config).await {
                Ok(()) => tracing::info!(topic, broker = %addr, "topic added to a broker that lacked it"),
                Err(error) => {
                    tracing::warn!(topic, broker = %addr, %error, "cannot add the topic to a broker that lacks it; will retry")
                }
            }
        }
    }
}
