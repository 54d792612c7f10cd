//! Runs one bank: its database, its RocketMQ producer, consumer, settlement relay,
//! re-drive and topic keeper, its HTTP API, and a shutdown that drains in-flight work.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use txbank_api::{AppState, Auth};
use txbank_domain::{BankId, Party};
use txbank_messaging::metrics::Counters;
use txbank_messaging::wire::SeedDefaults;
use txbank_messaging::{
    Acceptance, BrokerProbe, CreditConsumer, MessageVerifier, MqClient, MqSettings, Redriver, Routes, SettlementRelay,
    Tasks, TopicKeeper, TransferProducer,
};
use txbank_storage::{Engine, Store};

use crate::config::BankConfig;
use crate::supervisor::stop_requested;

/// Threads for RocketMQ's synchronous callbacks: each holds one database transaction.
const CALLBACK_THREADS: usize = 64;

/// How often a bank gives the memory its allocator holds free back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Runs the bank until SIGINT/SIGTERM.
pub fn run(config: BankConfig) -> Result<()> {
    run_until(config, stop_requested(), |name, address| {
        println!("{name} listening on http://{address}");
    })
}

/// Runs the bank until `stop` resolves, on a RocketMQ client runtime of its own,
/// telling `listening` where it listens once it is built.
fn run_until(
    config: BankConfig,
    stop: impl Future<Output = ()> + Send + 'static,
    listening: impl FnOnce(&BankId, SocketAddr),
) -> Result<()> {
    let mq = MqClient::build(config.worker_threads(), CALLBACK_THREADS)?;
    let result = mq.block_on(async {
        let bank = Application::build(&mq, config).await?;
        listening(&bank.name, bank.address());
        bank.run_until_stopped(stop).await
    });
    mq.shutdown();
    result
}

/// A bank running on a thread of this process, as `txbank bank` runs one in a process
/// of its own: for programs that embed a bank, and for tests. Dropping it stops it.
pub struct RunningBank {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

/// Starts the bank `config` describes on a thread of its own, and returns once it
/// listens (on a free port when `config.listen`'s is 0).
pub fn spawn(config: BankConfig) -> Result<RunningBank> {
    let (listening, listens_at) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(config.name.to_string())
        .spawn(move || {
            let stopped = async {
                let _ = stopped.await;
            };
            run_until(config, stopped, |_, address| {
                let _ = listening.send(address);
            })
        })?;
    let Ok(address) = listens_at.recv() else {
        let ended = thread
            .join()
            .map_err(|_| anyhow::anyhow!("the bank's thread panicked"))?;
        return Err(ended
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the bank stopped before it listened")));
    };
    Ok(RunningBank {
        address,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl RunningBank {
    /// Where its HTTP API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops it as SIGTERM stops `txbank bank`, and waits until it drained.
    pub fn stop(mut self) -> Result<()> {
        self.stop_and_wait()
    }

    fn stop_and_wait(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(ended)) => ended,
            Some(Err(_)) => Err(anyhow::anyhow!("the bank's thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for RunningBank {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_wait() {
            tracing::error!(%error, "the bank did not stop cleanly");
        }
    }
}

/// One bank, built: its database open and migrated, its RocketMQ parts started, its
/// listener bound (port 0 takes a free one, which [`Application::address`] tells).
/// Nothing is answered until [`Application::run_until_stopped`].
pub struct Application {
    name: BankId,
    listener: tokio::net::TcpListener,
    state: AppState,
    parts: Parts,
    /// Every task the parts spawn.
    tasks: Tasks,
}

/// What runs beside the HTTP API. A bank drains in this order:
/// 1. the API takes no new request and answers those in flight;
/// 2. the sends those requests began end (each on a task of its own);
/// 3. the topic keeper, the re-drive and the consumer stop, so that nothing new is sent
///    or consumed, then the relay, after the report it is sending;
/// 4. the producer finishes the messages on their way and stops, then the probe;
/// 5. the group commits apply what is queued and end, with every other task left;
/// 6. the database closes.
struct Parts {
    keeper: TopicKeeper,
    redriver: Redriver,
    consumer: CreditConsumer,
    relay: SettlementRelay,
}

impl Application {
    /// Builds the bank `config` describes on `mq`'s runtime.
    pub async fn build(mq: &MqClient, config: BankConfig) -> Result<Application> {
        build(mq, config).await
    }

    /// Where the HTTP API listens.
    pub fn address(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `stop` resolves, then drains: requests in flight are answered, the
    /// parts stop in order, and the database closes.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Application {
            name,
            listener,
            state,
            parts,
            tasks,
        } = self;
        let app = txbank_api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tasks.spawn(give_back_free_memory(tasks.clone()));
        let served = axum::serve(listener, app).with_graceful_shutdown(stop).await;

        tracing::info!(bank = %name, "draining");
        let unfinished = state.sends.end(DRAIN_WAIT).await;
        if unfinished > 0 {
            tracing::error!(bank = %name, unfinished, "sends still run {DRAIN_WAIT:?} after the API stopped: the broker's check-back settles what they began");
        }
        let Parts {
            keeper,
            redriver,
            consumer,
            relay,
        } = parts;
        keeper.shutdown().await;
        redriver.shutdown().await;
        consumer.shutdown().await;
        relay.shutdown().await;
        let AppState {
            store,
            producer,
            broker,
            ..
        } = state;
        match sole_owner(producer).await {
            Some(producer) => producer.shutdown().await,
            None => {
                tracing::error!(bank = %name, "a send still runs {DRAIN_WAIT:?} after the API stopped: the producer stops with the runtime, and the broker's check-back settles what it began")
            }
        }
        if let Some(probe) = sole_owner(broker).await {
            probe.shutdown().await;
        }
        let left = tasks.end(DRAIN_WAIT).await;
        if left > 0 {
            tracing::error!(bank = %name, left, "tasks still run {DRAIN_WAIT:?} after the parts stopped; they end with the runtime");
        }
        store.close().await;
        Ok(served?)
    }
}

async fn build(mq: &MqClient, config: BankConfig) -> Result<Application> {
    let bank = config.name.clone();
    let secrets = config.secrets()?;
    if secrets.api_token.is_none() {
        tracing::warn!(%bank, "no API token configured: only account holders with passwords can log in");
    }
    if config.accept_unsigned_messages {
        tracing::warn!(%bank, "accepting unsigned messages (seed compatibility); forged signatures are still refused");
    }
    let store = Store::connect(bank.clone(), &config.database_url, config.max_connections)
        .await
        .with_context(|| format!("{bank}: cannot open the database"))?;
    if store.engine() == Engine::Sqlite {
        tracing::info!(%bank, "SQLite writes one transaction at a time per file: run one instance of this bank; more instances on the same file share that writer and add no throughput (docs/SCALING.md)");
    }
    if config.migrate_on_start {
        for migration in store
            .migrate()
            .await
            .with_context(|| format!("{bank}: cannot migrate the database"))?
        {
            tracing::info!(%bank, version = migration.version, description = %migration.description, "applied schema migration");
        }
    } else {
        store
            .require_current_schema()
            .await
            .with_context(|| format!("{bank}: cannot use the database"))?;
    }
    for opening in &config.accounts {
        let (no, balance) = (&opening.no, opening.balance);
        if store.open_account_if_absent(no, &opening.name, balance).await? {
            tracing::info!(%bank, account = %no, %balance, "opened account");
        }
    }
    if secrets.signer.shared.is_some() {
        tracing::warn!(%bank, "signing and accepting with the key the banks share: any bank that holds it can speak for any other; remove message_key_file once every bank trusts the others' keys (docs/SECURITY.md)");
    }
    let verifier = MessageVerifier::new(
        bank.clone(),
        &config.messaging.inbound_topic,
        config.trusted_keys_file.clone(),
        secrets.signer.shared.clone(),
    )
    .with_context(|| format!("{bank}: cannot read the trusted keys"))?;
    let mut settings = MqSettings::new(config.namesrv_addr.clone(), secrets.signer.clone());
    settings.transfers_per_message = config.messaging.transfers_per_message;
    let routes = Routes::new(config.routes())
        .with_silent(config.silent_banks())
        .refusing_when_broker_away(config.refusing_banks());
    let topics = routes.topics().map(str::to_string).collect();
    let keeper = TopicKeeper::start(mq, &settings, topics, config.messaging.topic_queues).await?;
    let seed = SeedDefaults {
        sender: config.seed.sender_bank.clone(),
        receiver: bank.clone(),
        account: config.seed.default_account.clone(),
    };
    let counters = Arc::new(Counters::default());
    let producer = TransferProducer::start(
        mq,
        &settings,
        &config.messaging.producer_group,
        routes.clone(),
        store.clone(),
        seed.clone(),
        Arc::clone(&counters),
    )
    .await?;
    let relay = SettlementRelay::start(mq, &settings, routes.clone(), store.clone(), Arc::clone(&counters)).await?;
    let redriver = Redriver::start(
        mq,
        &settings,
        routes.clone(),
        store.clone(),
        config.redrive_after(),
        Arc::clone(&counters),
    )
    .await?;
    let acceptance = Acceptance {
        routes,
        seed,
        verifier: Arc::new(verifier),
        accept_unsigned: config.accept_unsigned_messages,
        max_redeliveries: config.max_redeliveries,
    };
    let consumer = CreditConsumer::start(
        mq,
        &settings,
        (&config.messaging.consumer_group, &config.messaging.inbound_topic),
        store.clone(),
        acceptance,
        relay.queued(),
        Arc::clone(&counters),
    )
    .await?;
    let probe = BrokerProbe::start(mq, &settings, bank.as_str(), &config.messaging.inbound_topic).await?;

    let state = AppState {
        bank: bank.clone(),
        store: store.clone(),
        producer: Arc::new(producer),
        seed_destination: Party {
            bank: config.seed.destination_bank.clone(),
            account: config.seed.destination_account.clone(),
        },
        auth: Arc::new(Auth::new(secrets.api_token, config.trusted_proxy)),
        counters,
        broker: Arc::new(probe),
        most_queued: config.messaging.most_queued,
        seed_get_transfer: config.seed.get_transfer,
        max_concurrent_requests: config.max_concurrent_requests,
        sends: Tasks::new(),
    };
    let listener = crate::listen::listener(config.listen)?;
    Ok(Application {
        name: bank,
        listener,
        state,
        parts: Parts {
            keeper,
            redriver,
            consumer,
            relay,
        },
        tasks: settings.tasks,
    })
}

/// How long a draining bank waits for sends that a caller left midway (they hold the
/// producer) to end: longer than a half message's retries and its local transaction.
const DRAIN_WAIT: Duration = Duration::from_secs(20);

/// `shared` itself, once the tasks that also hold it ended, waiting up to [`DRAIN_WAIT`].
async fn sole_owner<T>(mut shared: Arc<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    loop {
        match Arc::try_unwrap(shared) {
            Ok(owned) => return Some(owned),
            Err(still_shared) if tokio::time::Instant::now() < deadline => {
                shared = still_shared;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return None,
        }
    }
}

/// Every [`TRIM_EVERY`], asks glibc to return the pages it holds free (`malloc_trim`).
/// glibc keeps freed memory for reuse and gives back only what is free at a heap's top,
/// so a burst of allocations would stay resident after it: after a broker refused 12 %
/// of sends for nine seconds, bank1 kept 16 MiB more than usual (66 MiB resident) until
/// a trim gave back 10 (docs/PERFORMANCE.md). Ends when `tasks` is cancelled.
async fn give_back_free_memory(tasks: Tasks) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = tasks.cancelled() => return,
        }
        // SAFETY: malloc_trim only hands free pages back to the kernel, under the
        // allocator's own locks.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}
