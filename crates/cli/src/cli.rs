//! The command line: `txbank up`, each part alone, and the client commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{defaults, BankOverrides};

/// txbank: money transfers between banks over RocketMQ transactional messages.
#[derive(Debug, Parser)]
#[command(name = "txbank", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TXBANK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start everything on loopback: name server, broker, bank1, bank2 and the dashboard.
    Up(UpArgs),
    /// Run a RocketMQ name server.
    Namesrv {
        /// Listen address.
        #[arg(long, default_value = defaults::NAMESRV)]
        listen: SocketAddr,
        /// Folder for its state (also ROCKETMQ_HOME when unset).
        #[arg(long, default_value = "data/rocketmq")]
        home: PathBuf,
    },
    /// Run a RocketMQ broker.
    Broker(BrokerArgs),
    /// Run one bank service.
    Bank(BankSource),
    /// Serve the live dashboard of any banks, read through their APIs.
    Dashboard(DashboardArgs),
    /// Show a bank's effective configuration (file, then environment, then flags), with
    /// secrets hidden.
    Config {
        /// Print it as TOML (the only action for now).
        #[arg(long)]
        print: bool,
        #[command(flatten)]
        source: BankSource,
    },
    /// Transfer money (asks the sending bank's API): one transfer, or a CSV file of them.
    Transfer {
        /// Source account.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        from: Option<String>,
        /// Destination account.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        to: Option<String>,
        /// Destination bank (default: the sending bank's configured destination).
        #[arg(long, conflicts_with = "file")]
        to_bank: Option<String>,
        /// Amount, a decimal with at most 2 places.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        amount: Option<String>,
        /// Makes a retried command return the first transfer instead of paying twice.
        #[arg(long, conflicts_with = "file")]
        idempotency_key: Option<String>,
        /// A CSV file of transfers, sent in batches of up to 1,000: a header line naming
        /// the columns `from`, `to`, `amount` and optionally `to_bank` and
        /// `idempotency_key` (which makes running the file again pay nobody twice).
        #[arg(long)]
        file: Option<PathBuf>,
        /// With --file: debit every transfer of the file or none (at most 1,000).
        #[arg(long, requires = "file")]
        all_or_nothing: bool,
        /// The sending bank's API.
        #[arg(long, default_value = "http://127.0.0.1:56081", env = "TXBANK_BANK_URL")]
        url: String,
        #[command(flatten)]
        login: Login,
    },
    /// Show an account's balance.
    Balance {
        /// bank1 or bank2, for the default addresses.
        #[arg(long, default_value = "bank1")]
        bank: String,
        /// The account number.
        #[arg(long)]
        account: String,
        /// The bank's API, instead of the default address of --bank.
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// List, open or close a bank's accounts (operators only).
    Accounts {
        /// What to do.
        #[command(subcommand)]
        action: AccountsAction,
        /// bank1 or bank2, for the default addresses.
        #[arg(long, global = true, default_value = "bank1")]
        bank: String,
        /// The bank's API, instead of the default address of --bank.
        #[arg(long, global = true)]
        url: Option<String>,
        #[command(flatten)]
        login: Login,
    },
    /// Send a raw message body to a topic, as the seed's Java bank1 does after a commit.
    Publish {
        /// The topic.
        #[arg(long, default_value = "topic_txmsg")]
        topic: String,
        /// The message body, sent as it is.
        #[arg(long)]
        body: String,
        /// The message key (the seed uses the txNo).
        #[arg(long, default_value = "")]
        key: String,
        /// How many times to send it.
        #[arg(long, default_value_t = 1)]
        times: u32,
        /// Sign it with this bank's private key file (`txbank keys new`).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Sign it also (or only) with the key the banks shared before key pairs, from
        /// this file. With neither, the message goes unsigned, as the seed's Java bank1
        /// sends.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The bank the topic belongs to, which the signature names.
        #[arg(long, default_value = "bank2")]
        to_bank: String,
        /// Name-server list, `;`-separated.
        #[arg(long, default_value = defaults::NAMESRV, env = "TXBANK_NAMESRV_ADDR")]
        namesrv_addr: String,
    },
    /// Make, rotate and show the banks' message-signing keys.
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
        /// The keys folder.
        #[arg(long, global = true, default_value = "data/keys")]
        dir: PathBuf,
    },
    /// Inspect a bank's dead-letter queue, and replay a message from it after a fix.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        action: DlqAction,
        /// The bank's consumer group (default: bank2's, the seed's).
        #[arg(long, global = true, default_value = crate::config::SEED_CONSUMER_GROUP)]
        group: String,
        /// The bank's inbound topic, where replays go (default: bank2's, the seed's).
        #[arg(long, global = true, default_value = crate::config::SEED_TOPIC)]
        topic: String,
        /// Name-server list, `;`-separated.
        #[arg(long, global = true, default_value = defaults::NAMESRV, env = "TXBANK_NAMESRV_ADDR")]
        namesrv_addr: String,
    },
    /// Check that every cent is accounted for and every transfer ended correctly. Exits
    /// 0 when all is well, 1 on any violation, 2 when the books balance but a transfer
    /// has been in flight for longer than --stuck-after-secs (for a cron job to alert).
    Audit {
        /// A bank's database as NAME=URL (repeat; receiving banks first). Default: `up`'s
        /// bank2 and bank1 under --data-dir.
        #[arg(long, value_name = "NAME=URL")]
        bank: Vec<String>,
        /// Where `up` keeps its data.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Seconds a transfer may stay in flight before the audit calls it stuck.
        #[arg(long, default_value_t = txbank_domain::audit::DEFAULT_STUCK_AFTER_MS / 1000)]
        stuck_after_secs: i64,
    },
    /// Move settled transfers older than a date out of the banks' hot tables into their
    /// archive tables, keeping the auditor exact and every message idempotent.
    Archive(ArchiveArgs),
    /// Show where each bank's database schema stands, or apply the pending migrations.
    Migrate {
        /// What to do.
        #[command(subcommand)]
        action: MigrateAction,
        /// A bank's database as NAME=URL (repeat). Default: `up`'s bank2 and bank1 under
        /// --data-dir.
        #[arg(long, global = true, value_name = "NAME=URL")]
        bank: Vec<String>,
        /// Where `up` keeps its data.
        #[arg(long, global = true, default_value = "data")]
        data_dir: PathBuf,
    },
}

/// Options of `archive`.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Archive the settled transfers recorded before this date (YYYY-MM-DD, midnight
    /// UTC); at least 7 days ago.
    #[arg(long)]
    pub before: String,
    /// A bank's database as NAME=URL (repeat). Default: `up`'s bank2 and bank1 under
    /// --data-dir.
    #[arg(long, value_name = "NAME=URL")]
    pub bank: Vec<String>,
    /// Where `up` keeps its data.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
}

/// What `txbank migrate` does.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Applied and pending migrations, and which bank each database belongs to.
    Status,
    /// Apply the pending migrations (none when any database is unusable).
    Run,
}

/// What `txbank dlq` does.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Every dead-lettered message, as JSON lines.
    List,
    /// Send the dead letters keyed TX_NO to the inbound topic again (applied at most once).
    Replay {
        /// The transfer's transaction number (the message key).
        tx_no: String,
    },
}

/// What `txbank keys` does.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Make a bank's key pair: its private key file (DIR/BANK.key, readable by its owner
    /// only) and its public key in DIR/trusted; prints the public key's line.
    New {
        /// The bank.
        #[arg(long)]
        bank: String,
    },
    /// Replace a bank's key with a new one; its old public key stays trusted in
    /// DIR/trusted for --overlap-secs. Restart the bank's instances to sign with it.
    Rotate {
        /// The bank.
        #[arg(long)]
        bank: String,
        /// How long the old key keeps verifying.
        #[arg(long, default_value_t = 86_400)]
        overlap_secs: u64,
    },
    /// Print the public key line of a private key file, to add to the trusted keys of
    /// the banks that take this bank's messages.
    Public {
        /// The private key file.
        key: PathBuf,
    },
}

/// What `txbank accounts` does.
#[derive(Debug, Subcommand)]
pub enum AccountsAction {
    /// Every account with its balance.
    List,
    /// Open an account; its holder's password, if any, comes from TXBANK_ACCOUNT_PASSWORD.
    Open {
        /// Account number.
        #[arg(long)]
        no: String,
        /// Holder's name.
        #[arg(long)]
        name: String,
        /// Opening balance (money entering the system), a decimal.
        #[arg(long)]
        opening_balance: Option<String>,
    },
    /// Close an account: it stops sending and receiving; transfers to it are returned.
    Close {
        /// Account number.
        #[arg(long)]
        no: String,
    },
}

/// How a client command logs in: the operators' API token (TXBANK_API_TOKEN, or the
/// file), or an account holder's number with TXBANK_PASSWORD.
#[derive(Debug, Clone, clap::Args)]
pub struct Login {
    /// File holding the operators' API token (`up` writes data/api-token).
    #[arg(long, global = true, default_value = "data/api-token", env = "TXBANK_API_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Log in as this account's holder instead, with the password in TXBANK_PASSWORD.
    #[arg(long = "as", global = true, value_name = "ACCOUNT")]
    pub as_account: Option<String>,
}

/// Where a bank's configuration comes from: a file or a preset, then the environment
/// and flags.
#[derive(Debug, clap::Args)]
pub struct BankSource {
    /// A TOML configuration file.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// An embedded configuration: bank1 or bank2.
    #[arg(long)]
    pub preset: Option<String>,
    /// Folder for the presets' SQLite files and secrets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub overrides: BankOverrides,
}

impl BankSource {
    /// Loads the configuration it names.
    pub fn load(&self) -> anyhow::Result<crate::config::BankConfig> {
        crate::config::BankConfig::load(
            self.config.as_deref(),
            self.preset.as_deref(),
            &self.data_dir,
            &self.overrides,
        )
    }
}

/// Options of `up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Folder for all data (databases, broker store, logs).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Name-server address.
    #[arg(long, default_value = defaults::NAMESRV)]
    pub namesrv: SocketAddr,
    /// Broker address.
    #[arg(long, default_value = defaults::BROKER)]
    pub broker: SocketAddr,
    /// bank1's API address.
    #[arg(long, default_value = defaults::BANK1)]
    pub bank1: SocketAddr,
    /// bank2's API address.
    #[arg(long, default_value = defaults::BANK2)]
    pub bank2: SocketAddr,
    /// The dashboard's address.
    #[arg(long, default_value = defaults::DASHBOARD)]
    pub dashboard: SocketAddr,
}

/// Options of `dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// Listen address.
    #[arg(long, default_value = defaults::DASHBOARD)]
    pub listen: SocketAddr,
    /// A bank to show, as NAME=URL; repeat for each bank.
    #[arg(long = "bank", value_name = "NAME=URL", required = true, value_parser = txbank_dashboard::BankEndpoint::parse)]
    pub banks: Vec<txbank_dashboard::BankEndpoint>,
    /// File holding the operators' API token (TXBANK_API_TOKEN gives the token itself).
    #[arg(long, default_value = "data/api-token", env = "TXBANK_API_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Milliseconds between two readings of the banks.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub poll_ms: u64,
}

/// Options of `broker`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Listen address; the port two below and the one above are taken too.
    #[arg(long, default_value = defaults::BROKER)]
    pub listen: SocketAddr,
    /// The broker's name (`brokerName`), unique within its cluster.
    #[arg(long, default_value = "broker-a")]
    pub name: String,
    /// The cluster the broker belongs to (`brokerClusterName`).
    #[arg(long, default_value = "DefaultCluster")]
    pub cluster: String,
    /// Name-server list, `;`-separated.
    #[arg(long, default_value = defaults::NAMESRV, env = "TXBANK_NAMESRV_ADDR")]
    pub namesrv_addr: String,
    /// Store folder.
    #[arg(long, default_value = "data/rocketmq/store")]
    pub store: PathBuf,
    /// Milliseconds an undecided half message waits before the broker checks back.
    #[arg(long, default_value_t = defaults::TRANSACTION_TIMEOUT_MS)]
    pub transaction_timeout_ms: u64,
    /// Milliseconds between the broker's scans for undecided half messages.
    #[arg(long, default_value_t = defaults::TRANSACTION_CHECK_INTERVAL_MS)]
    pub transaction_check_interval_ms: u64,
    /// Check-backs before the broker gives up on a half message. Interval × max must
    /// outlast a producer's reconnection after a broker restart (its heartbeat, 10 s),
    /// or a debited transfer's message is given up; the default allows 10 minutes.
    #[arg(long, default_value_t = 120)]
    pub transaction_check_max: u32,
    /// Flush every message to disk before acknowledging it (SYNC_FLUSH).
    #[arg(long)]
    pub sync_flush: bool,
}
