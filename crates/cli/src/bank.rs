//! Runs one bank: its database, its RocketMQ producer, consumer, settlement relay,
//! re-drive and topic keeper, its HTTP API, and a shutdown that drains in-flight work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use txbank_api::{AppState, Auth};
use txbank_domain::{AccountNo, BankId, Party};
use txbank_messaging::metrics::Counters;
use txbank_messaging::wire::SeedDefaults;
use txbank_messaging::{
    Acceptance, BrokerProbe, CreditConsumer, MessageVerifier, MqClient, MqSettings, Redriver, Routes, SettlementRelay,
    TopicKeeper, TransferProducer,
};
use txbank_storage::{Engine, Store};

use crate::config::BankConfig;

/// Threads for RocketMQ's synchronous callbacks: each holds one database transaction.
const CALLBACK_THREADS: usize = 64;

/// How often a bank gives the memory its allocator holds free back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Runs the bank until SIGINT/SIGTERM.
pub fn run(config: BankConfig) -> Result<()> {
    let mq = MqClient::build(config.worker_threads(), CALLBACK_THREADS)?;
    let result = mq.block_on(serve(&mq, config));
    mq.shutdown();
    result
}

async fn serve(mq: &MqClient, config: BankConfig) -> Result<()> {
    let bank = config.bank_id()?;
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
    for seed in &config.accounts {
        let (no, name, balance) = seed.parse()?;
        if store.open_account_if_absent(&no, &name, balance).await? {
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
    let routes = Routes::new(config.routes()?)
        .with_silent(config.silent_banks()?)
        .refusing_when_broker_away(config.refusing_banks()?);
    let topics = routes.topics().map(str::to_string).collect();
    let keeper = TopicKeeper::start(mq, &settings, topics, config.messaging.topic_queues).await?;
    let seed = SeedDefaults {
        sender: BankId::parse(&config.seed.sender_bank)?,
        receiver: bank.clone(),
        account: AccountNo::parse(&config.seed.default_account)?,
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
            bank: BankId::parse(&config.seed.destination_bank)?,
            account: AccountNo::parse(&config.seed.destination_account)?,
        },
        auth: Arc::new(Auth::new(secrets.api_token, config.trusted_proxy)),
        counters,
        broker: Arc::new(probe),
        most_queued: config.messaging.most_queued,
        seed_get_transfer: config.seed.get_transfer,
    };
    let listener = crate::listen::listener(config.listen)?;
    println!("{bank} listening on http://{}", listener.local_addr()?);
    let app = txbank_api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let trimming = tokio::spawn(give_back_free_memory());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    trimming.abort();

    tracing::info!(%bank, "draining");
    keeper.shutdown().await;
    redriver.shutdown().await;
    consumer.shutdown().await;
    relay.shutdown().await;
    if let Ok(producer) = Arc::try_unwrap(state.producer) {
        producer.shutdown().await;
    }
    if let Ok(probe) = Arc::try_unwrap(state.broker) {
        probe.shutdown().await;
    }
    store.close().await;
    Ok(())
}

/// Every [`TRIM_EVERY`], asks glibc to return the pages it holds free (`malloc_trim`).
/// glibc keeps freed memory for reuse and gives back only what is free at a heap's top,
/// so a burst of allocations would stay resident after it: after a broker refused 12 %
/// of sends for nine seconds, bank1 kept 16 MiB more than usual (66 MiB resident) until
/// a trim gave back 10 (docs/PERFORMANCE.md).
async fn give_back_free_memory() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: malloc_trim only hands free pages back to the kernel, under the
        // allocator's own locks.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
