//! A bank's configuration: one struct, loaded from a preset or a TOML file, then
//! overridden by environment variables and flags (flags win) in [`BankConfig::load`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use txbank_api::{ApiToken, SeedGetTransfer};
use txbank_domain::{AccountName, AccountNo, BankId, Money};
use txbank_messaging::{BankKey, MessageKey, MessageSigner, DEFAULT_TOPIC_QUEUES, DEFAULT_TRANSFERS_PER_MESSAGE};
use txbank_storage::Engine;

use crate::keys;

/// Everything one bank process needs. Every bank both sends and receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// The bank's identifier, by which transfers are routed (`bank1`).
    pub name: BankId,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc`, `mysql://user:password@host:port/database` or
    /// `postgres://user:password@host:port/database`.
    pub database_url: String,
    /// Most database connections the bank opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Most HTTP requests the bank answers at once; more are refused at once with
    /// `503 overloaded`, nothing moved.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Threads running the bank's asynchronous work (HTTP, RocketMQ client, handlers);
    /// unset, [`BankConfig::worker_threads`] chooses from the database engine.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// The RocketMQ name-server list, `;`-separated.
    pub namesrv_addr: String,
    /// This bank's producer group, consumer group and inbound topic.
    pub messaging: MessagingConfig,
    /// Every other bank this one exchanges money with: bank identifier → its inbound
    /// topic (`bank2 = "topic_txmsg"`), or a table saying also whether it sends
    /// settlement reports (`bank2 = { topic = "topic_txmsg", reports = false }`).
    #[serde(default)]
    pub routes: BTreeMap<BankId, Route>,
    /// What the seed's API and the seed's message bodies mean here.
    pub seed: SeedConfig,
    /// File holding this bank's private Ed25519 key, which signs what it sends
    /// (`txbank keys new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_file: Option<PathBuf>,
    /// File holding the public keys of the banks this one takes messages from, one
    /// `BANK KEY_ID PUBLIC_HEX [until=UNIX_SECONDS]` a line; read again when a message
    /// names a key it does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_keys_file: Option<PathBuf>,
    /// File holding the key the banks shared before key pairs: while it is set, the bank
    /// also signs with it and also accepts messages signed with it (the move from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_key_file: Option<PathBuf>,
    /// Apply messages that carry no signature (the seed's Java services); off by default.
    #[serde(default)]
    pub accept_unsigned_messages: bool,
    /// File holding the operators' API token (`Authorization: Bearer ...`).
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// The address of a reverse proxy or load balancer in front of the bank: requests from
    /// it are known by the client address it appends to `X-Forwarded-For`, so that one
    /// client's failed logins slow that client alone. Unset, the peer's address counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxy: Option<IpAddr>,
    /// Redeliveries of a refused message before it goes to the dead-letter queue.
    #[serde(default = "default_max_redeliveries")]
    pub max_redeliveries: i32,
    /// Accounts opened on first start (existing ones are left as they are).
    #[serde(default)]
    pub accounts: Vec<OpeningAccount>,
    /// Apply pending schema migrations on start (the default); when false, a bank whose
    /// database is behind refuses to start, for operators who run `txbank migrate run`.
    #[serde(default = "default_migrate_on_start")]
    pub migrate_on_start: bool,
}

/// The RocketMQ names of one bank.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// Producer group; the broker checks back with this group.
    pub producer_group: String,
    /// Consumer group of the inbound topic.
    pub consumer_group: String,
    /// The topic other banks send this bank's transfers and settlement reports to.
    pub inbound_topic: String,
    /// Queues of each topic the bank creates; a topic found with fewer is raised to this
    /// many, one with more keeps them. At most this many instances of a bank consume at
    /// once, and fewer queues carry more messages per pull: 2 suits a bank run as two
    /// instances, 1 a bank run as one (about 4 % more throughput at 64 clients,
    /// docs/PERFORMANCE.md).
    #[serde(default = "default_topic_queues")]
    pub topic_queues: u32,
    /// Most transfers to one bank that go in one message when they wait for it at the
    /// same time (the more load, the more share a message; the broker and both banks
    /// then do one message's work for all). 1 sends each transfer alone, in the seed's
    /// shape, for a destination that is the seed's Java bank2; more need the receiving
    /// bank to be txbank from the version that reads them (body version 3).
    #[serde(default = "default_transfers_per_message")]
    pub transfers_per_message: usize,
    /// Seconds a sent transfer may stay without a settlement report before its message
    /// is sent again from this bank's books (re-drive); longer than a normal delivery
    /// and check-back. The pause then doubles with every attempt, up to a minute.
    #[serde(default = "default_redrive_after_secs")]
    pub redrive_after_secs: u64,
    /// Most payments that may wait, debited, for a broker to take their message (see
    /// `routes.<bank>.when_broker_away`); past it a payment is refused with `503
    /// broker_unavailable`, so that a long outage cannot pile up without limit.
    #[serde(default = "default_most_queued")]
    pub most_queued: u64,
}

/// How to reach another bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Route {
    /// Its inbound topic: a txbank bank, which reports on every transfer it receives.
    Topic(String),
    /// Its inbound topic, and whether it reports.
    Table(RouteTable),
}

/// A route written as a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTable {
    /// The bank's inbound topic.
    pub topic: String,
    /// Whether the bank sends settlement reports (true by default). The seed's Java
    /// bank2 sends none: with `false`, transfers to it are never re-driven, and stay
    /// `debited` (in flight) as the sender's books see them.
    #[serde(default = "reports_by_default")]
    pub reports: bool,
    /// What a payment to this bank does while no broker stores its half message:
    /// `queue` (the default: debit it, answer `201 queued`, send its message once a
    /// broker answers) or `refuse` (answer `503 broker_unavailable`, debit nothing).
    #[serde(default)]
    pub when_broker_away: WhenBrokerAway,
}

/// What a payment does while no broker stores its half message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenBrokerAway {
    /// Debit it and send its message once a broker answers.
    #[default]
    Queue,
    /// Refuse it; nothing is debited.
    Refuse,
}

fn reports_by_default() -> bool {
    true
}

impl Route {
    /// The bank's inbound topic.
    pub fn topic(&self) -> &str {
        match self {
            Route::Topic(topic) => topic,
            Route::Table(table) => &table.topic,
        }
    }

    /// Whether the bank sends settlement reports.
    pub fn reports(&self) -> bool {
        match self {
            Route::Topic(_) => true,
            Route::Table(table) => table.reports,
        }
    }

    /// What a payment to the bank does while no broker stores its half message.
    pub fn when_broker_away(&self) -> WhenBrokerAway {
        match self {
            Route::Topic(_) => WhenBrokerAway::default(),
            Route::Table(table) => table.when_broker_away,
        }
    }
}

/// The seed's defaults: where money goes when a request or message does not say.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConfig {
    /// The bank credited by `GET /transfer` and by `POST /transfers` without `to_bank`.
    pub destination_bank: BankId,
    /// The account credited by `GET /transfer`.
    pub destination_account: AccountNo,
    /// The bank a message without `fromBank` (the seed's Java bank1) comes from.
    pub sender_bank: BankId,
    /// The account credited by a message that names none.
    pub default_account: AccountNo,
    /// Who may pay with `GET /transfer`: `open` (operators and holders, as the seed;
    /// the default), `operators` (bearer token only, which no browser sends by itself)
    /// or `off`.
    #[serde(default)]
    pub get_transfer: SeedGetTransfer,
}
/// An account to open on first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningAccount {
    /// Account number.
    pub no: AccountNo,
    /// Holder's name.
    pub name: AccountName,
    /// Opening balance, as a decimal string.
    pub balance: Money,
}

/// Values given on the command line or in the environment; each replaces the file's.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct BankOverrides {
    /// HTTP listen address.
    #[arg(long, env = "TXBANK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Database URL (`sqlite://...`, `mysql://...` or `postgres://...`).
    #[arg(long, env = "TXBANK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// RocketMQ name-server list, `;`-separated.
    #[arg(long, env = "TXBANK_NAMESRV_ADDR")]
    pub namesrv_addr: Option<String>,
    /// File holding this bank's private signing key (`signing_key_file`).
    #[arg(long, env = "TXBANK_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// File holding the other banks' public keys (`trusted_keys_file`).
    #[arg(long, env = "TXBANK_TRUSTED_KEYS_FILE")]
    pub trusted_keys_file: Option<PathBuf>,
    /// File holding the key the banks shared before key pairs, while they move from it
    /// (TXBANK_MESSAGE_KEY gives the key itself).
    #[arg(long, env = "TXBANK_MESSAGE_KEY_FILE")]
    pub message_key_file: Option<PathBuf>,
    /// File holding the operators' API token (TXBANK_API_TOKEN gives the token itself).
    #[arg(long, env = "TXBANK_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Apply messages without a signature, as the seed's Java services send them.
    #[arg(long, env = "TXBANK_ACCEPT_UNSIGNED_MESSAGES")]
    pub accept_unsigned_messages: bool,
    /// Who may pay with the seed's GET /transfer: open, operators or off
    /// (`seed.get_transfer`).
    #[arg(long, env = "TXBANK_SEED_GET_TRANSFER")]
    pub seed_get_transfer: Option<SeedGetTransfer>,
    /// The reverse proxy whose `X-Forwarded-For` names clients (`trusted_proxy`).
    #[arg(long, env = "TXBANK_TRUSTED_PROXY")]
    pub trusted_proxy: Option<IpAddr>,
    /// Redeliveries of a refused message before it goes to the dead-letter queue.
    #[arg(long, env = "TXBANK_MAX_REDELIVERIES")]
    pub max_redeliveries: Option<i32>,
    /// Queues of the topics the bank creates (`messaging.topic_queues`).
    #[arg(long, env = "TXBANK_TOPIC_QUEUES")]
    pub topic_queues: Option<u32>,
    /// Most transfers in one message (`messaging.transfers_per_message`).
    #[arg(long, env = "TXBANK_TRANSFERS_PER_MESSAGE")]
    pub transfers_per_message: Option<usize>,
    /// Threads for the bank's asynchronous work (`worker_threads`).
    #[arg(long, env = "TXBANK_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Seconds before an unsettled transfer is sent again (`messaging.redrive_after_secs`).
    #[arg(long, env = "TXBANK_REDRIVE_AFTER_SECS")]
    pub redrive_after_secs: Option<u64>,
    /// Most payments that may wait for a broker (`messaging.most_queued`).
    #[arg(long, env = "TXBANK_MOST_QUEUED")]
    pub most_queued: Option<u64>,
    /// Most HTTP requests answered at once (`max_concurrent_requests`).
    #[arg(long, env = "TXBANK_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Apply pending schema migrations on start (`migrate_on_start`).
    #[arg(long, env = "TXBANK_MIGRATE_ON_START")]
    pub migrate_on_start: Option<bool>,
}

/// The secrets a bank needs. They come from files or the environment, never from the
/// command line or the configuration file itself, and are never logged.
pub struct Secrets {
    /// How the bank signs what it sends.
    pub signer: MessageSigner,
    /// The operators' API token, if any (without one, only account passwords log in).
    pub api_token: Option<ApiToken>,
}

fn default_migrate_on_start() -> bool {
    true
}

fn default_max_connections() -> u32 {
    8
}

fn default_max_concurrent_requests() -> usize {
    4096
}

/// Most requests `max_concurrent_requests` may let a bank answer at once.
const MAX_CONCURRENT_REQUESTS: usize = 1_000_000;

fn default_redrive_after_secs() -> u64 {
    60
}

fn default_most_queued() -> u64 {
    10_000
}

/// Most payments `messaging.most_queued` may let wait.
const MAX_MOST_QUEUED: u64 = 10_000_000;

/// Most seconds `messaging.redrive_after_secs` may ask for: a day.
const MAX_REDRIVE_AFTER_SECS: u64 = 86_400;

fn default_topic_queues() -> u32 {
    DEFAULT_TOPIC_QUEUES
}

fn default_transfers_per_message() -> usize {
    DEFAULT_TRANSFERS_PER_MESSAGE
}

/// Most transfers `messaging.transfers_per_message` may ask for: one local transaction
/// debits them all, and one receiving transaction credits them. At 256 a sending bank
/// used twice the CPU per transfer and memory of 128 (docs/PERFORMANCE.md).
const MAX_TRANSFERS_PER_MESSAGE: usize = 128;

/// Most threads `worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 256;

/// Most queues `messaging.topic_queues` may ask for: each is a consume queue the broker
/// keeps and every consumer pulls.
const MAX_TOPIC_QUEUES: u32 = 64;

/// RocketMQ's own default: about 4.7 hours of growing delays before a message is
/// dead-lettered, which outlasts most outages.
fn default_max_redeliveries() -> i32 {
    16
}

/// The seed's names, kept for the bank1 → bank2 direction so the seed's Java services
/// interoperate.
pub const SEED_TOPIC: &str = "topic_txmsg";
/// The seed's producer group for bank1.
pub const SEED_PRODUCER_GROUP: &str = "producer_group_txmsg_bank1";
/// The seed's consumer group for bank2.
pub const SEED_CONSUMER_GROUP: &str = "consumer_group_txmsg_bank2";
/// bank1's inbound topic (transfers from bank2, settlement reports).
pub const BANK1_TOPIC: &str = "topic_txmsg_bank1";

/// Where `up` and the presets put things by default.
pub mod defaults {
    /// Name server.
    pub const NAMESRV: &str = "127.0.0.1:9876";
    /// Broker.
    pub const BROKER: &str = "127.0.0.1:10911";
    /// bank1's HTTP API.
    pub const BANK1: &str = "127.0.0.1:56081";
    /// bank2's HTTP API.
    pub const BANK2: &str = "127.0.0.1:56082";
    /// The dashboard.
    pub const DASHBOARD: &str = "127.0.0.1:56080";
    /// Milliseconds an undecided half message waits before the broker checks back.
    pub const TRANSACTION_TIMEOUT_MS: u64 = 3000;
    /// Milliseconds between the broker's scans for undecided half messages.
    pub const TRANSACTION_CHECK_INTERVAL_MS: u64 = 5000;
}

impl BankConfig {
    /// The embedded configuration of `bank1` (Zhang San) or `bank2` (Li Si), each with a
    /// second account, sending to each other, with its SQLite file under `data_dir` and
    /// the key pair and trusted keys `up` makes under `data_dir/keys`, when they exist.
    pub fn preset(name: &str, data_dir: &Path) -> Result<BankConfig> {
        let database_url = format!("sqlite://{}?mode=rwc", data_dir.join(format!("{name}.db")).display());
        let opening = |no: &str, holder: &str, balance: &str| -> Result<OpeningAccount> {
            Ok(OpeningAccount {
                no: AccountNo::parse(no)?,
                name: AccountName::parse(holder)?,
                balance: Money::parse(balance)?,
            })
        };
        let bank = BankId::parse;
        let account = AccountNo::parse;
        let (listen, messaging, peer, peer_topic, seed_config, accounts) = match name {
            "bank1" => (
                defaults::BANK1,
                MessagingConfig {
                    producer_group: SEED_PRODUCER_GROUP.into(),
                    consumer_group: "consumer_group_txmsg_bank1".into(),
                    inbound_topic: BANK1_TOPIC.into(),
                    topic_queues: default_topic_queues(),
                    transfers_per_message: default_transfers_per_message(),
                    redrive_after_secs: default_redrive_after_secs(),
                    most_queued: default_most_queued(),
                },
                "bank2",
                SEED_TOPIC,
                SeedConfig {
                    destination_bank: bank("bank2")?,
                    destination_account: account("2")?,
                    sender_bank: bank("bank2")?,
                    default_account: account("1")?,
                    get_transfer: SeedGetTransfer::default(),
                },
                vec![
                    opening("1", "张三的账户", "10000.00")?,
                    opening("3", "王五的账户", "5000.00")?,
                ],
            ),
            "bank2" => (
                defaults::BANK2,
                MessagingConfig {
                    producer_group: "producer_group_txmsg_bank2".into(),
                    consumer_group: SEED_CONSUMER_GROUP.into(),
                    inbound_topic: SEED_TOPIC.into(),
                    topic_queues: default_topic_queues(),
                    transfers_per_message: default_transfers_per_message(),
                    redrive_after_secs: default_redrive_after_secs(),
                    most_queued: default_most_queued(),
                },
                "bank1",
                BANK1_TOPIC,
                SeedConfig {
                    destination_bank: bank("bank1")?,
                    destination_account: account("1")?,
                    sender_bank: bank("bank1")?,
                    default_account: account("2")?,
                    get_transfer: SeedGetTransfer::default(),
                },
                vec![
                    opening("2", "李四的账户", "0.00")?,
                    opening("4", "赵六的账户", "5000.00")?,
                ],
            ),
            other => bail!("unknown preset {other:?}: expected bank1 or bank2"),
        };
        Ok(BankConfig {
            name: bank(name)?,
            listen: listen.parse()?,
            database_url,
            max_connections: default_max_connections(),
            max_concurrent_requests: default_max_concurrent_requests(),
            worker_threads: None,
            namesrv_addr: defaults::NAMESRV.into(),
            messaging,
            routes: BTreeMap::from([(bank(peer)?, Route::Topic(peer_topic.to_string()))]),
            seed: seed_config,
            signing_key_file: Some(keys::private_key_file(&data_dir.join(KEYS_DIR), name)).filter(|file| file.exists()),
            trusted_keys_file: Some(keys::trusted_keys_file(&data_dir.join(KEYS_DIR))).filter(|file| file.exists()),
            message_key_file: None,
            accept_unsigned_messages: false,
            api_token_file: Some(data_dir.join(API_TOKEN_FILE)),
            trusted_proxy: None,
            max_redeliveries: default_max_redeliveries(),
            migrate_on_start: default_migrate_on_start(),
            accounts,
        })
    }

    /// Loads the configuration from `file` (or the preset), then applies `overrides`,
    /// then checks it.
    pub fn load(
        file: Option<&Path>,
        preset: Option<&str>,
        data_dir: &Path,
        overrides: &BankOverrides,
    ) -> Result<BankConfig> {
        let mut config = match (file, preset) {
            (Some(file), None) => {
                let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid configuration in {}", file.display()))?
            }
            (None, Some(preset)) => BankConfig::preset(preset, data_dir)?,
            _ => bail!("give exactly one of --config FILE or --preset bank1|bank2"),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(url) = &overrides.database_url {
            config.database_url = url.clone();
        }
        if let Some(addr) = &overrides.namesrv_addr {
            config.namesrv_addr = addr.clone();
        }
        if let Some(file) = &overrides.signing_key_file {
            config.signing_key_file = Some(file.clone());
        }
        if let Some(file) = &overrides.trusted_keys_file {
            config.trusted_keys_file = Some(file.clone());
        }
        if let Some(file) = &overrides.message_key_file {
            config.message_key_file = Some(file.clone());
        }
        if let Some(file) = &overrides.api_token_file {
            config.api_token_file = Some(file.clone());
        }
        config.accept_unsigned_messages |= overrides.accept_unsigned_messages;
        if let Some(who) = overrides.seed_get_transfer {
            config.seed.get_transfer = who;
        }
        if let Some(proxy) = overrides.trusted_proxy {
            config.trusted_proxy = Some(proxy);
        }
        if let Some(max) = overrides.max_redeliveries {
            config.max_redeliveries = max;
        }
        if let Some(queues) = overrides.topic_queues {
            config.messaging.topic_queues = queues;
        }
        if let Some(transfers) = overrides.transfers_per_message {
            config.messaging.transfers_per_message = transfers;
        }
        if let Some(threads) = overrides.worker_threads {
            config.worker_threads = Some(threads);
        }
        if let Some(secs) = overrides.redrive_after_secs {
            config.messaging.redrive_after_secs = secs;
        }
        if let Some(most) = overrides.most_queued {
            config.messaging.most_queued = most;
        }
        if let Some(most) = overrides.max_concurrent_requests {
            config.max_concurrent_requests = most;
        }
        if let Some(migrate) = overrides.migrate_on_start {
            config.migrate_on_start = migrate;
        }
        config.validate()?;
        Ok(config)
    }

    /// The threads for the bank's asynchronous work: as configured, else one per core
    /// on MySQL/MariaDB, whose driver works on them, and half as many (at least one) on
    /// SQLite, whose connections run on threads of their own, so that the workers mostly
    /// hand work over, and fewer of them hand it over with fewer thread switches
    /// (docs/PERFORMANCE.md).
    pub fn worker_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        self.worker_threads.unwrap_or(match Engine::of(&self.database_url) {
            Some(Engine::Sqlite) => (cores / 2).max(1),
            _ => cores,
        })
    }

    /// Reads the secrets: the signing key from its file, the others each from its
    /// environment variable when set, else from its file. A bank cannot run without a
    /// key to sign with, and its own key must be its bank's.
    pub fn secrets(&self) -> Result<Secrets> {
        let own = match &self.signing_key_file {
            Some(file) => Some(BankKey::read(file).context("the signing key")?),
            None => None,
        };
        if let Some(own) = own.as_ref().filter(|own| own.bank() != &self.name) {
            bail!("the signing key {} is {}'s, not {}'s", own.id(), own.bank(), self.name);
        }
        let shared = read_secret("TXBANK_MESSAGE_KEY", self.message_key_file.as_deref())?
            .map(|key| MessageKey::new(key.as_bytes()))
            .transpose()
            .context("the message key")?;
        if own.is_none() && shared.is_none() {
            bail!(
                "{}: no key to sign messages with; make one with `txbank keys new --bank {}` and set signing_key_file",
                self.name,
                self.name
            );
        }
        let api_token = read_secret("TXBANK_API_TOKEN", self.api_token_file.as_deref())?
            .map(|token| ApiToken::new(&token))
            .transpose()
            .context("the API token")?;
        Ok(Secrets {
            signer: MessageSigner { own, shared },
            api_token,
        })
    }

    /// The configuration as TOML with the database password hidden, followed by where
    /// each secret comes from (never the secret itself).
    pub fn printable(&self) -> Result<String> {
        let shown = BankConfig {
            database_url: txbank_storage::redact(&self.database_url),
            ..self.clone()
        };
        let mut text = toml::to_string(&shown)?;
        for (what, var, file) in [
            ("signing key", None, &self.signing_key_file),
            ("trusted keys", None, &self.trusted_keys_file),
            ("shared message key", Some("TXBANK_MESSAGE_KEY"), &self.message_key_file),
            ("API token", Some("TXBANK_API_TOKEN"), &self.api_token_file),
        ] {
            let source = match (var.filter(|var| std::env::var_os(var).is_some()), file) {
                (Some(var), _) => format!("environment variable {var}"),
                (None, Some(file)) if file.exists() => format!("file {}", file.display()),
                (None, Some(file)) => format!("file {} (missing)", file.display()),
                (None, None) => "none".to_string(),
            };
            text.push_str(&format!("# {what}: {source}\n"));
        }
        Ok(text)
    }

    /// Every bank's inbound topic, this one's included.
    pub fn routes(&self) -> Vec<(BankId, String)> {
        let mut routes = vec![(self.name.clone(), self.messaging.inbound_topic.clone())];
        for (bank, route) in &self.routes {
            routes.push((bank.clone(), route.topic().to_string()));
        }
        routes
    }

    /// The routed banks that send no settlement reports.
    pub fn silent_banks(&self) -> Vec<BankId> {
        self.banks_routed_where(|route| !route.reports())
    }

    /// The banks payments to which are refused, not queued, while no broker answers.
    pub fn refusing_banks(&self) -> Vec<BankId> {
        self.banks_routed_where(|route| route.when_broker_away() == WhenBrokerAway::Refuse)
    }

    fn banks_routed_where(&self, what: impl Fn(&Route) -> bool) -> Vec<BankId> {
        self.routes
            .iter()
            .filter(|(_, route)| what(route))
            .map(|(bank, _)| bank.clone())
            .collect()
    }

    /// How long a sent transfer may stay unsettled before it is re-driven.
    pub fn redrive_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.messaging.redrive_after_secs)
    }

    /// Refuses a configuration that would fail later: seed defaults that name a bank
    /// with no route, numbers out of range. Names, account numbers and balances were
    /// checked as they were read.
    fn validate(&self) -> Result<()> {
        let routed = |bank: &BankId| bank == &self.name || self.routes.contains_key(bank);
        for (field, bank) in [
            ("seed.destination_bank", &self.seed.destination_bank),
            ("seed.sender_bank", &self.seed.sender_bank),
        ] {
            if !routed(bank) {
                bail!("{field} = {:?} is neither this bank nor one of [routes]", bank.as_str());
            }
        }
        if !(0..=32).contains(&self.max_redeliveries) {
            bail!("max_redeliveries = {} must be 0 to 32", self.max_redeliveries);
        }
        if !(1..=MAX_TOPIC_QUEUES).contains(&self.messaging.topic_queues) {
            bail!(
                "messaging.topic_queues = {} must be 1 to {MAX_TOPIC_QUEUES}",
                self.messaging.topic_queues
            );
        }
        if let Some(threads) = self.worker_threads {
            if !(1..=MAX_WORKER_THREADS).contains(&threads) {
                bail!("worker_threads = {threads} must be 1 to {MAX_WORKER_THREADS}");
            }
        }
        if !(1..=MAX_CONCURRENT_REQUESTS).contains(&self.max_concurrent_requests) {
            bail!(
                "max_concurrent_requests = {} must be 1 to {MAX_CONCURRENT_REQUESTS}",
                self.max_concurrent_requests
            );
        }
        if !(1..=MAX_MOST_QUEUED).contains(&self.messaging.most_queued) {
            bail!(
                "messaging.most_queued = {} must be 1 to {MAX_MOST_QUEUED}",
                self.messaging.most_queued
            );
        }
        if !(1..=MAX_REDRIVE_AFTER_SECS).contains(&self.messaging.redrive_after_secs) {
            bail!(
                "messaging.redrive_after_secs = {} must be 1 to {MAX_REDRIVE_AFTER_SECS}",
                self.messaging.redrive_after_secs
            );
        }
        if !(1..=MAX_TRANSFERS_PER_MESSAGE).contains(&self.messaging.transfers_per_message) {
            bail!(
                "messaging.transfers_per_message = {} must be 1 to {MAX_TRANSFERS_PER_MESSAGE}",
                self.messaging.transfers_per_message
            );
        }
        Ok(())
    }
}

/// The folder under a data folder that holds the banks' key pairs and trusted keys.
pub const KEYS_DIR: &str = "keys";
/// The file under `up`'s data folder that holds the operators' API token.
pub const API_TOKEN_FILE: &str = "api-token";

/// The secret in environment variable `var`, else in `file`; `None` when neither is
/// given. A named file that cannot be read is an error.
pub fn read_secret(var: &str, file: Option<&Path>) -> Result<Option<String>> {
    if let Ok(value) = std::env::var(var) {
        return Ok(Some(value.trim().to_string()));
    }
    match file {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            Ok(Some(text.trim().to_string()))
        }
        None => Ok(None),
    }
}

/// Writes a new random secret to `file` (readable by its owner only) unless it exists.
pub fn create_secret_file(file: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).context("no randomness from the operating system")?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file);
    match created {
        Ok(mut out) => {
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            out.write_all(secret.as_bytes())
                .with_context(|| format!("cannot write {}", file.display()))?;
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot create {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_the_seed_banks() {
        let bank1 = BankConfig::load(None, Some("bank1"), Path::new("d"), &BankOverrides::default()).unwrap();
        assert_eq!(bank1.messaging.producer_group, "producer_group_txmsg_bank1");
        assert_eq!(
            bank1.routes[&BankId::parse("bank2").unwrap()],
            Route::Topic("topic_txmsg".into())
        );
        assert_eq!(bank1.messaging.redrive_after_secs, 60);
        assert_eq!(bank1.accounts[0].balance.to_string(), "10000.00");
        let bank2 = BankConfig::load(None, Some("bank2"), Path::new("d"), &BankOverrides::default()).unwrap();
        assert_eq!(bank2.messaging.consumer_group, "consumer_group_txmsg_bank2");
        assert_eq!(bank2.messaging.inbound_topic, "topic_txmsg");
    }

    #[test]
    fn the_printed_configuration_hides_the_database_password() {
        let overrides = BankOverrides {
            database_url: Some("mysql://bank1:s3cret@db:3306/bank1".into()),
            ..Default::default()
        };
        let config = BankConfig::load(None, Some("bank1"), Path::new("d"), &overrides).unwrap();
        let printed = config.printable().unwrap();
        assert!(printed.contains("mysql://bank1:***@db:3306/bank1"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("# signing key: "), "{printed}");
    }

    #[test]
    fn topic_queues_default_to_two_and_must_be_1_to_64() {
        let load = |queues| {
            let overrides = BankOverrides {
                topic_queues: queues,
                ..Default::default()
            };
            BankConfig::load(None, Some("bank1"), Path::new("d"), &overrides)
        };
        assert_eq!(load(None).unwrap().messaging.topic_queues, 2);
        assert_eq!(load(Some(1)).unwrap().messaging.topic_queues, 1);
        assert_eq!(load(Some(64)).unwrap().messaging.topic_queues, 64);
        for refused in [0, 65] {
            let error = load(Some(refused)).unwrap_err().to_string();
            assert!(error.contains("messaging.topic_queues"), "{error}");
        }
    }

    #[test]
    fn worker_threads_default_to_half_the_cores_on_sqlite_and_all_on_mysql_and_must_be_1_to_256() {
        let load = |url: &str, threads| {
            let overrides = BankOverrides {
                database_url: Some(url.into()),
                worker_threads: threads,
                ..Default::default()
            };
            BankConfig::load(None, Some("bank1"), Path::new("d"), &overrides)
        };
        let cores = std::thread::available_parallelism().unwrap().get();
        let sqlite = "sqlite://d/bank1.db?mode=rwc";
        assert_eq!(load(sqlite, None).unwrap().worker_threads(), (cores / 2).max(1));
        assert_eq!(load("mysql://root@db/bank1", None).unwrap().worker_threads(), cores);
        assert_eq!(load(sqlite, Some(3)).unwrap().worker_threads(), 3);
        for refused in [0, 257] {
            let error = load(sqlite, Some(refused)).unwrap_err().to_string();
            assert!(error.contains("worker_threads"), "{error}");
        }
    }

    #[test]
    fn transfers_per_message_default_to_128_and_must_be_1_to_128() {
        let load = |transfers| {
            let overrides = BankOverrides {
                transfers_per_message: transfers,
                ..Default::default()
            };
            BankConfig::load(None, Some("bank1"), Path::new("d"), &overrides)
        };
        assert_eq!(load(None).unwrap().messaging.transfers_per_message, 128);
        assert_eq!(load(Some(1)).unwrap().messaging.transfers_per_message, 1);
        assert_eq!(load(Some(128)).unwrap().messaging.transfers_per_message, 128);
        for refused in [0, 129] {
            let error = load(Some(refused)).unwrap_err().to_string();
            assert!(error.contains("messaging.transfers_per_message"), "{error}");
        }
    }

    #[test]
    fn a_route_may_say_its_bank_sends_no_reports_and_is_then_never_redriven() {
        let text = r#"
            name = "bank1"
            listen = "127.0.0.1:56081"
            database_url = "sqlite://d/bank1.db?mode=rwc"
            namesrv_addr = "127.0.0.1:9876"
            [messaging]
            producer_group = "producer_group_txmsg_bank1"
            consumer_group = "consumer_group_txmsg_bank1"
            inbound_topic = "topic_txmsg_bank1"
            redrive_after_secs = 30
            [routes]
            bank2 = { topic = "topic_txmsg", reports = false }
            bank3 = "topic_bank3"
            bank4 = { topic = "topic_bank4" }
            [seed]
            destination_bank = "bank2"
            destination_account = "2"
            sender_bank = "bank2"
            default_account = "1"
        "#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bank.toml");
        std::fs::write(&path, text).unwrap();
        let config = BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).unwrap();
        let bank2 = BankId::parse("bank2").unwrap();
        assert_eq!(config.silent_banks(), std::slice::from_ref(&bank2));
        assert_eq!(config.routes[&bank2].topic(), "topic_txmsg");
        assert_eq!(config.redrive_after().as_secs(), 30);
        std::fs::write(&path, text.replace("reports = false", "report = false")).unwrap();
        assert!(BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).is_err());
        std::fs::write(&path, text.replace("redrive_after_secs = 30", "redrive_after_secs = 0")).unwrap();
        let error = BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).unwrap_err();
        assert!(error.to_string().contains("redrive_after_secs"), "{error}");
    }

    #[test]
    fn flags_replace_file_values() {
        let overrides = BankOverrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            ..Default::default()
        };
        let config = BankConfig::load(None, Some("bank2"), Path::new("d"), &overrides).unwrap();
        assert_eq!(config.listen.port(), 1);
    }

    #[test]
    fn a_file_round_trips_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bank.toml");
        let config = BankConfig::preset("bank1", dir.path()).unwrap();
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        assert!(BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).is_ok());
        let negative = toml::to_string(&config).unwrap().replace("\"10000.00\"", "\"-1\"");
        std::fs::write(&path, negative).unwrap();
        let refused = BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).unwrap_err();
        assert!(format!("{refused:#}").contains("-1"), "{refused:#}");
        let mut unrouted = BankConfig::preset("bank1", dir.path()).unwrap();
        unrouted.seed.destination_bank = BankId::parse("bank9").unwrap();
        std::fs::write(&path, toml::to_string(&unrouted).unwrap()).unwrap();
        assert!(BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).is_err());
    }
}
