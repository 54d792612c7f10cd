//! The `txbank` binary: parses the command line, sets up logging, runs the command.

// RocketMQ's client futures are deeply nested.
#![recursion_limit = "512"]

mod audit;
mod bank;
mod cli;
mod client;
mod config;
mod rocketmq_server;
mod up;

use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Command, LogFormat};
use config::BankConfig;

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Up(args) => up::run(&args),
        Command::Namesrv { listen, home } => rocketmq_server::run_namesrv(listen, &home),
        Command::Broker(args) => rocketmq_server::run_broker(&rocketmq_server::BrokerSettings {
            listen: args.listen,
            namesrv_addr: args.namesrv_addr,
            store_dir: args.store,
            transaction_timeout: Duration::from_millis(args.transaction_timeout_ms),
            transaction_check_interval: Duration::from_millis(args.transaction_check_interval_ms),
            transaction_check_max: args.transaction_check_max,
            flush_disk_type: if args.sync_flush { "SYNC_FLUSH" } else { "ASYNC_FLUSH" }.into(),
        }),
        Command::Bank {
            config,
            preset,
            data_dir,
            overrides,
        } => bank::run(BankConfig::load(
            config.as_deref(),
            preset.as_deref(),
            &data_dir,
            &overrides,
        )?),
        Command::Transfer {
            from,
            to,
            amount,
            idempotency_key,
            url,
        } => client::transfer(&url, &from, &to, &amount, idempotency_key.as_deref()),
        Command::Balance { bank, account, url } => client::balance(&bank, &account, url.as_deref()),
        Command::Publish {
            topic,
            body,
            key,
            times,
            namesrv_addr,
        } => {
            let settings = txbank_messaging::MqSettings {
                namesrv_addr,
                send_timeout: Duration::from_secs(3),
            };
            let mq = txbank_messaging::MqClient::build(1, 8)?;
            let sent = mq.block_on(txbank_messaging::publish(
                &mq,
                &settings,
                &topic,
                &key,
                body.as_bytes(),
                times,
            ));
            mq.shutdown();
            Ok(sent?)
        }
        Command::Audit { bank, data_dir, json } => audit::run(&bank, &data_dir, json),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
