//! txbank as a library: the commands of the `txbank` binary, which the lab
//! (`crates/lab`) also runs, with its fault points armed, beside its own.

// RocketMQ's client futures are deeply nested.
#![recursion_limit = "512"]

pub mod archive;
pub mod audit;
pub mod bank;
pub mod cli;
pub mod client;
pub mod config;
pub mod databases;
pub mod keys;
pub mod listen;
pub mod migrate;
pub mod progress;
pub mod rocketmq_server;
pub mod supervisor;
#[cfg(feature = "otel")]
mod telemetry;
pub mod up;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cli::{Command, KeysAction, LogFormat};

/// Runs one command of the `txbank` binary, logging in `log_format`.
pub fn run(log_format: LogFormat, command: Command) -> Result<()> {
    let default_filter = match command {
        Command::Namesrv { .. } => format!("{DEFAULT_LOG_FILTER},{NAMESRV_QUIET}"),
        Command::Broker(ref args) if rocketmq_server::is_new_store(&args.store) => {
            format!("{DEFAULT_LOG_FILTER},{BROKER_QUIET},{NEW_STORE_QUIET}")
        }
        Command::Broker(_) => format!("{DEFAULT_LOG_FILTER},{BROKER_QUIET}"),
        _ => DEFAULT_LOG_FILTER.to_string(),
    };
    init_logging(log_format, &default_filter);
    match command {
        Command::Up(args) => up::run(&args),
        Command::Namesrv { listen, home } => rocketmq_server::run_namesrv(listen, &home),
        Command::Broker(args) => rocketmq_server::run_broker(&rocketmq_server::BrokerSettings {
            listen: args.listen,
            name: args.name,
            cluster: args.cluster,
            namesrv_addr: args.namesrv_addr,
            store_dir: args.store,
            transaction_timeout: Duration::from_millis(args.transaction_timeout_ms),
            transaction_check_interval: Duration::from_millis(args.transaction_check_interval_ms),
            transaction_check_max: args.transaction_check_max,
            flush_disk_type: if args.sync_flush { "SYNC_FLUSH" } else { "ASYNC_FLUSH" }.into(),
        }),
        Command::Bank(source) => bank::run(source.load()?),
        Command::Dashboard(args) => dashboard(&args),
        Command::Config { print, source } => {
            if !print {
                anyhow::bail!("say what to do: txbank config --print");
            }
            print!("{}", source.load()?.printable()?);
            Ok(())
        }
        Command::Transfer {
            from,
            to,
            to_bank,
            amount,
            idempotency_key,
            file,
            all_or_nothing,
            url,
            login,
        } => match (file, from, to, amount) {
            (Some(file), ..) => client::transfer_file(&url, &file, all_or_nothing, &login),
            (None, Some(from), Some(to), Some(amount)) => client::transfer(
                &url,
                (&from, &to, to_bank.as_deref()),
                &amount,
                idempotency_key.as_deref(),
                &login,
            ),
            _ => bail!("give --from, --to and --amount, or --file"),
        },
        Command::Balance {
            bank,
            account,
            url,
            login,
        } => client::balance(&bank, &account, url.as_deref(), &login),
        Command::Accounts {
            action,
            bank,
            url,
            login,
        } => client::accounts(&action, &bank, url.as_deref(), &login),
        Command::Publish {
            topic,
            body,
            key,
            times,
            signing_key,
            key_file,
            to_bank,
            namesrv_addr,
        } => {
            let own = signing_key
                .as_deref()
                .map(txbank_messaging::BankKey::read)
                .transpose()?;
            let shared = match key_file {
                Some(file) => {
                    let secret = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                    Some(txbank_messaging::MessageKey::new(&secret)?)
                }
                None => None,
            };
            let signer = txbank_messaging::MessageSigner { own, shared };
            let settings = txbank_messaging::MqSettings::new(namesrv_addr, signer);
            let to_bank = txbank_domain::BankId::parse(&to_bank).context("--to-bank")?;
            let mq = txbank_messaging::MqClient::build(1, 8)?;
            let sent = mq.block_on(txbank_messaging::publish(
                &mq,
                &settings,
                (&to_bank, &topic),
                &key,
                body.as_bytes(),
                times,
            ));
            mq.shutdown();
            Ok(sent?)
        }
        Command::Keys { action, dir } => {
            let public = match action {
                KeysAction::New { bank } => keys::new_key(&dir, &txbank_domain::BankId::parse(&bank)?)?,
                KeysAction::Rotate { bank, overlap_secs } => {
                    keys::rotate_key(&dir, &txbank_domain::BankId::parse(&bank)?, overlap_secs)?
                }
                KeysAction::Public { key } => txbank_messaging::BankKey::read(&key)?.public(),
            };
            println!("{}", public.to_line());
            Ok(())
        }
        Command::Dlq {
            action,
            group,
            topic,
            namesrv_addr,
        } => dlq(&action, &group, &topic, namesrv_addr),
        Command::Audit {
            bank,
            data_dir,
            json,
            stuck_after_secs,
        } => audit::run(&bank, &data_dir, json, stuck_after_secs.saturating_mul(1000)),
        Command::Archive(args) => archive::run(&args.before, &args.bank, &args.data_dir),
        Command::Migrate { action, bank, data_dir } => migrate::run(&action, &bank, &data_dir),
    }
}

/// `txbank dashboard`: serves the page until SIGINT/SIGTERM.
fn dashboard(args: &cli::DashboardArgs) -> Result<()> {
    let api_token = config::read_secret("TXBANK_API_TOKEN", Some(&args.token_file))?
        .filter(|token| !token.is_empty())
        .context("the dashboard needs the operators' API token")?;
    let settings = txbank_dashboard::DashboardSettings {
        banks: args.banks.clone(),
        api_token,
        poll_every: Duration::from_millis(args.poll_ms),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = listen::listener(args.listen)?;
        println!("dashboard on http://{}", listener.local_addr()?);
        txbank_dashboard::serve(listener, settings, supervisor::stop_requested()).await?;
        Ok(())
    })
}

/// `txbank dlq list|replay`.
fn dlq(action: &cli::DlqAction, group: &str, topic: &str, namesrv_addr: String) -> Result<()> {
    use txbank_messaging::dead_letters;
    let settings = txbank_messaging::MqSettings::new(namesrv_addr, txbank_messaging::MessageSigner::default());
    let mq = txbank_messaging::MqClient::build(1, 8)?;
    let outcome = mq.block_on(async {
        match action {
            cli::DlqAction::List => {
                for letter in dead_letters::list(&mq, &settings, group).await? {
                    println!("{}", serde_json::to_string(&letter)?);
                }
                Ok(())
            }
            cli::DlqAction::Replay { tx_no } => {
                let sent = dead_letters::replay(&mq, &settings, (group, topic), tx_no).await?;
                if sent == 0 {
                    anyhow::bail!("no dead letter of {group} has the key {tx_no:?}");
                }
                println!("replayed {sent} message(s) keyed {tx_no} to {topic}");
                Ok(())
            }
        }
    });
    mq.shutdown();
    outcome
}

/// glibc gives threads that allocate at once arenas of their own, up to eight per core,
/// and a bank's callback threads would keep many of them: two arenas keep a bank's
/// resident memory near what it uses (measured in docs/PERFORMANCE.md).
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Log lines on stderr, as text or JSON, filtered by `RUST_LOG` (default `info`); with
/// the `otel` feature, spans also go to an OpenTelemetry collector when one is configured.
/// What is logged when `RUST_LOG` is not set: `info` for txbank, and what went wrong
/// for the RocketMQ crates. At `info` they log each request a broker receives
/// (heartbeats, offset queries, end-transactions, pulls: thousands a second under
/// load) and every 1-5 s the scans of an idle system (pop buffer, transaction check,
/// consumer offsets, rebalance): an idle broker wrote 112 KB in two and a half minutes.
/// `RUST_LOG=info` shows them all again.
pub const DEFAULT_LOG_FILTER: &str = "info,rocketmq=warn";

/// Added for the name server. `rocketmq-namesrv` 1.0 points a client of its own at
/// the machine's first non-loopback address and its port, and checks every 30 s that
/// it answers there; a name server bound to another address (loopback, as `up` binds
/// it) logged "Failed to connect" (ERROR) and "Nameserver is now unavailable" at every
/// check, with nothing wrong. That client talks to no other name server.
const NAMESRV_QUIET: &str = "rocketmq_transport::clients::rocketmq_tokio_client::connect_flight=off,\
     rocketmq_transport::clients::rocketmq_tokio_client::nameserver=error";

/// Added for the broker. `rocketmq-store` 1.0 counts a disk's used share as
/// `1 - available / total`, so blocks the file system holds back from users count as
/// used (a disk `df` shows 13 % used, 80 of 252 GB available, counts as 68 %), and above
/// `diskMaxUsedSpaceRatio` (75 %) it warned "disk capacity requires reclaim" every 10 s
/// even when nothing could be removed (seen with `df` at 29 %). A store too full to take
/// messages says so in its answers to the banks, and a broker that cannot start for it
/// says so as it fails.
///
/// Above that share its clean-up also warned "mapped-file delete batch limit must be
/// positive delete_file_batch_max=0" every 10 s (seen with `df` at 32 %).
///
/// Its transaction check also warns "The miss op offset=0 ... is NO_NEW_MSG" every 5 s
/// while no transaction is open: the usual state of an idle broker. The banks'
/// check-back counters show what the check does.
///
/// Once its store holds a message, its clean-up warns "maybe ConsumeQueue was created
/// just now" every 10 s for each queue that holds none (the banks' retry queues, a
/// queue no transfer went to yet): 36 lines a minute from an idle `up`.
const BROKER_QUIET: &str = "rocketmq_store::message_store::local_file_message_store::health=error,\
     rocketmq_store_local::mapped_file::queue_lifecycle=error,\
     rocketmq_broker::transaction::queue::default_transactional_message_service=error,\
     rocketmq_store::queue::local_file_consume_queue_store=error";

/// Added for a broker whose store is new (no `config` folder yet): its first start
/// warns of each of its 8 configuration files and their 8 backups missing, 4 times
/// "load bak config file", and once that the commit log's files are gone. The broker
/// says instead, once, that it starts with a new store.
const NEW_STORE_QUIET: &str = "rocketmq_runtime::common::file_utils=error,\
     rocketmq_broker::config::config_manager=error,\
     rocketmq_store::log_file::commit_log=error";

pub fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    #[cfg(feature = "otel")]
    let registry = registry.with(telemetry::layer());
    let _ = registry.try_init();
}
