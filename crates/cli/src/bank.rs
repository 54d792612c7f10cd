//! Runs one bank: its database, its RocketMQ producer and/or consumer, its HTTP API,
//! and a shutdown that drains in-flight work.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use txbank_api::{AppState, Outbound};
use txbank_domain::AccountNo;
use txbank_messaging::{ensure_topic, CreditConsumer, MqClient, MqSettings, TransferProducer};
use txbank_storage::Store;

use crate::config::BankConfig;

/// Threads for RocketMQ's synchronous callbacks: each holds one database transaction.
const CALLBACK_THREADS: usize = 64;

/// Runs the bank until SIGINT/SIGTERM.
pub fn run(config: BankConfig) -> Result<()> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mq = MqClient::build(workers, CALLBACK_THREADS)?;
    let result = mq.block_on(serve(&mq, config));
    mq.shutdown();
    result
}

async fn serve(mq: &MqClient, config: BankConfig) -> Result<()> {
    let store = Store::connect(&config.database_url, config.max_connections)
        .await
        .with_context(|| format!("{}: cannot open the database", config.name))?;
    store.migrate().await.context("cannot create the schema")?;
    for seed in &config.accounts {
        let (no, name, balance) = seed.parse()?;
        if store.open_account_if_absent(&no, &name, balance).await? {
            tracing::info!(bank = %config.name, account = %no, %balance, "opened account");
        }
    }
    let settings = MqSettings {
        namesrv_addr: config.namesrv_addr.clone(),
        send_timeout: std::time::Duration::from_secs(3),
    };

    for topic in config
        .send
        .iter()
        .map(|s| &s.topic)
        .chain(config.receive.iter().map(|r| &r.topic))
    {
        ensure_topic(mq, &settings, topic).await?;
    }
    let outbound = match &config.send {
        Some(send) => {
            let seed_destination = AccountNo::parse(&send.seed_destination)?;
            let producer = TransferProducer::start(
                mq,
                &settings,
                &send.producer_group,
                &send.topic,
                store.clone(),
                seed_destination.clone(),
            )
            .await?;
            Some(Arc::new(Outbound {
                producer,
                seed_destination,
            }))
        }
        None => None,
    };
    let consumer = match &config.receive {
        Some(receive) => Some(
            CreditConsumer::start(
                mq,
                &settings,
                &receive.consumer_group,
                &receive.topic,
                store.clone(),
                AccountNo::parse(&receive.default_account)?,
            )
            .await?,
        ),
        None => None,
    };

    let state = AppState {
        bank: config.name.clone().into(),
        store: store.clone(),
        outbound: outbound.clone(),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    println!("{} listening on http://{}", config.name, listener.local_addr()?);
    axum::serve(listener, txbank_api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    tracing::info!(bank = %config.name, "draining");
    if let Some(consumer) = consumer {
        consumer.shutdown().await;
    }
    if let Some(outbound) = outbound.and_then(|o| Arc::try_unwrap(o).ok()) {
        outbound.producer.shutdown().await;
    }
    store.close().await;
    Ok(())
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
