//! The process-wide RocketMQ client runtime and the settings every client shares.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{ClientConfig, ClientRuntime, ClientRuntimeConfig};
use rocketmq_observability::TelemetryHandle;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

use crate::signing::MessageSigner;
use crate::MessagingError;
use crate::Tasks;

/// Where the RocketMQ cluster is and how the clients talk to it.
#[derive(Debug, Clone)]
pub struct MqSettings {
    /// The name-server list, `;`-separated (`127.0.0.1:9876;10.0.0.2:9876`).
    pub namesrv_addr: String,
    /// How long one send may take before it fails.
    pub send_timeout: Duration,
    /// How every message sent is signed; signing with nothing sends unsigned messages,
    /// as the seed's Java services do (only `txbank publish` may).
    pub signer: MessageSigner,
    /// Most transfers to one bank carried by one message (1 sends each in the seed's
    /// shape, which the seed's Java consumer reads).
    pub transfers_per_message: usize,
    /// The RocketMQ client instance the producers and consumers built from these
    /// settings share: `txbank#PID#N`, N counting the settings made in this process.
    instance_name: String,
    /// Owns every task the parts built from these settings spawn: the bank ends them
    /// as it drains.
    pub tasks: Tasks,
}

/// How many [`MqSettings`] this process made: each gets a client instance of its own.
static SETTINGS_MADE: AtomicU64 = AtomicU64::new(0);

impl MqSettings {
    /// Settings for the name-server list `namesrv_addr`, signing with `signer`, a
    /// send timeout of 3 s, and up to [`DEFAULT_TRANSFERS_PER_MESSAGE`] transfers per
    /// message.
    pub fn new(namesrv_addr: String, signer: MessageSigner) -> MqSettings {
        MqSettings {
            namesrv_addr,
            send_timeout: Duration::from_secs(3),
            signer,
            transfers_per_message: DEFAULT_TRANSFERS_PER_MESSAGE,
            instance_name: format!(
                "txbank#{}#{}",
                std::process::id(),
                SETTINGS_MADE.fetch_add(1, Ordering::Relaxed)
            ),
            tasks: Tasks::new(),
        }
    }

    /// The client configuration every producer and consumer starts from: this name
    /// server list, with routes refreshed and heartbeats sent every 10 s (the client's
    /// minimum), and one instance name per settings, so that a bank's producers and
    /// consumers share one RocketMQ client instance (its connections, route tables and
    /// pending-request table) instead of each starting its own, while two banks in one
    /// process (tests, programs that embed them) keep their groups apart.
    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig {
            namesrv_addr: Some(self.namesrv_addr.clone().into()),
            instance_name: self.instance_name.clone().into(),
            poll_name_server_interval: 10_000,
            // Re-register with a restarted broker soon, so its check-backs find a producer.
            heartbeat_broker_interval: 10_000,
            ..ClientConfig::default()
        }
    }
}

/// Most transfers to one bank in one message, unless configured otherwise. A message
/// takes the transfers waiting when it goes, so under light load messages stay small;
/// under batches, 128 a message cost the system 0.075 ms of CPU per transfer where 32
/// cost 0.125 ms (docs/PERFORMANCE.md).
pub const DEFAULT_TRANSFERS_PER_MESSAGE: usize = 128;

/// Callbacks that may wait for a free callback thread, per thread.
const CALLBACK_QUEUE_PER_THREAD: usize = 16;

/// The Tokio runtime a bank process runs on, owned the way the RocketMQ client
/// requires, and the RocketMQ client runtime built on it.
///
/// Its blocking capacity is sized explicitly. RocketMQ runs every listener callback
/// (check-backs, consumed messages; local transactions too, but `TransferProducer` runs
/// those itself) on its metadata-I/O blocking lane, which by default admits 2 callbacks
/// per core at once and queues 8 more per core: bursts beyond the queue failed with
/// `runtime.capacity.exhausted` (a consumed message failed that way comes back only
/// after RocketMQ's 10 s retry delay).
pub struct MqClient {
    owner: RuntimeOwner,
    client: Arc<ClientRuntime>,
}

impl MqClient {
    /// Builds the runtime with `worker_threads` async workers and `blocking_threads`
    /// threads for RocketMQ's synchronous callbacks.
    pub fn build(worker_threads: usize, blocking_threads: usize) -> Result<MqClient, MessagingError> {
        let runtime_error = |e: &dyn std::fmt::Display| MessagingError::Runtime(e.to_string());
        let mut config = RuntimeConfig::for_parallelism("txbank", worker_threads.max(1))
            .with_max_blocking_threads(blocking_threads)
            .map_err(|e| runtime_error(&e))?;
        let callbacks = &mut config.blocking_lane_policies.metadata_io;
        callbacks.max_concurrency = blocking_threads;
        callbacks.max_queue_depth = blocking_threads * CALLBACK_QUEUE_PER_THREAD;
        config.validate().map_err(|e| runtime_error(&e))?;
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| runtime_error(&e))?
            .build()
            .map_err(|e| runtime_error(&e))?;
        let client = ClientRuntime::try_new(
            owner.root_context().component("txbank-client"),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .map_err(|e| runtime_error(&e))?;
        Ok(MqClient { owner, client })
    }

    /// Runs `future` to completion on this runtime, from the main thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.owner.block_on(future)
    }

    /// The RocketMQ client runtime that producers and consumers are built from.
    pub(crate) fn runtime(&self) -> Arc<ClientRuntime> {
        Arc::clone(&self.client)
    }

    /// Stops the RocketMQ clients' background work, then the runtime itself.
    pub fn shutdown(self) {
        let MqClient { owner, client } = self;
        owner.block_on(async {
            client.shutdown().await;
            owner.shutdown_tasks().await;
        });
        owner.shutdown_background();
    }
}
