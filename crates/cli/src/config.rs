//! A bank's configuration: one struct, loaded from a preset or a TOML file, then
//! overridden by environment variables and flags (flags win) in [`BankConfig::load`].

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use txbank_domain::{AccountName, AccountNo, Money};

/// Everything one bank process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// The bank's name, shown in logs and responses (`bank1`).
    pub name: String,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc` or `mysql://user:password@host:port/database`.
    pub database_url: String,
    /// Most database connections the bank opens.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// The RocketMQ name-server list, `;`-separated.
    pub namesrv_addr: String,
    /// Present when this bank sends transfers.
    #[serde(default)]
    pub send: Option<SendConfig>,
    /// Present when this bank receives transfers.
    #[serde(default)]
    pub receive: Option<ReceiveConfig>,
    /// Accounts opened on first start (existing ones are left as they are).
    #[serde(default)]
    pub accounts: Vec<AccountSeed>,
}

/// The sending side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendConfig {
    /// Producer group; the broker checks back with this group.
    pub producer_group: String,
    /// Topic the transfers go to.
    pub topic: String,
    /// The account the seed's `GET /transfer` credits.
    pub seed_destination: String,
}

/// The receiving side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveConfig {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic consumed.
    pub topic: String,
    /// The account credited by a message that names none (the seed's messages).
    pub default_account: String,
}

/// An account to open on first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSeed {
    /// Account number.
    pub no: String,
    /// Holder's name.
    pub name: String,
    /// Opening balance, as a decimal string.
    pub balance: String,
}

/// Values given on the command line or in the environment; each replaces the file's.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct BankOverrides {
    /// HTTP listen address.
    #[arg(long, env = "TXBANK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Database URL (`sqlite://...` or `mysql://...`).
    #[arg(long, env = "TXBANK_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// RocketMQ name-server list, `;`-separated.
    #[arg(long, env = "TXBANK_NAMESRV_ADDR")]
    pub namesrv_addr: Option<String>,
}

fn default_max_connections() -> u32 {
    8
}

/// The seed's names, kept so the seed's Java services interoperate.
pub const SEED_TOPIC: &str = "topic_txmsg";
/// The seed's producer group for bank1.
pub const SEED_PRODUCER_GROUP: &str = "producer_group_txmsg_bank1";
/// The seed's consumer group for bank2.
pub const SEED_CONSUMER_GROUP: &str = "consumer_group_txmsg_bank2";

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
}

impl BankConfig {
    /// The embedded configuration of `bank1` (Zhang San, sends) or `bank2` (Li Si,
    /// receives), with its SQLite file under `data_dir`.
    pub fn preset(name: &str, data_dir: &Path) -> Result<BankConfig> {
        let database_url = format!("sqlite://{}?mode=rwc", data_dir.join(format!("{name}.db")).display());
        let seed = |no: &str, holder: &str, balance: &str| AccountSeed {
            no: no.into(),
            name: holder.into(),
            balance: balance.into(),
        };
        let config = match name {
            "bank1" => BankConfig {
                name: name.into(),
                listen: defaults::BANK1.parse()?,
                database_url,
                max_connections: default_max_connections(),
                namesrv_addr: defaults::NAMESRV.into(),
                send: Some(SendConfig {
                    producer_group: SEED_PRODUCER_GROUP.into(),
                    topic: SEED_TOPIC.into(),
                    seed_destination: "2".into(),
                }),
                receive: None,
                accounts: vec![seed("1", "张三的账户", "10000.00")],
            },
            "bank2" => BankConfig {
                name: name.into(),
                listen: defaults::BANK2.parse()?,
                database_url,
                max_connections: default_max_connections(),
                namesrv_addr: defaults::NAMESRV.into(),
                send: None,
                receive: Some(ReceiveConfig {
                    consumer_group: SEED_CONSUMER_GROUP.into(),
                    topic: SEED_TOPIC.into(),
                    default_account: "2".into(),
                }),
                accounts: vec![seed("2", "李四的账户", "0.00")],
            },
            other => bail!("unknown preset {other:?}: expected bank1 or bank2"),
        };
        Ok(config)
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
        config.validate()?;
        Ok(config)
    }

    /// Refuses a configuration that would fail later: bad account numbers or balances.
    fn validate(&self) -> Result<()> {
        for account in &self.accounts {
            account
                .parse()
                .with_context(|| format!("account {:?} in the configuration", account.no))?;
        }
        if let Some(send) = &self.send {
            AccountNo::parse(&send.seed_destination).context("send.seed_destination")?;
        }
        if let Some(receive) = &self.receive {
            AccountNo::parse(&receive.default_account).context("receive.default_account")?;
        }
        if self.send.is_none() && self.receive.is_none() {
            bail!(
                "bank {} neither sends nor receives: configure [send] and/or [receive]",
                self.name
            );
        }
        Ok(())
    }
}

impl AccountSeed {
    /// The seed as domain values.
    pub fn parse(&self) -> Result<(AccountNo, AccountName, Money)> {
        Ok((
            AccountNo::parse(&self.no)?,
            AccountName::parse(&self.name)?,
            Money::parse(&self.balance)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_the_seed_banks() {
        let bank1 = BankConfig::load(None, Some("bank1"), Path::new("d"), &BankOverrides::default()).unwrap();
        assert_eq!(bank1.send.unwrap().producer_group, "producer_group_txmsg_bank1");
        assert_eq!(bank1.accounts[0].balance, "10000.00");
        let bank2 = BankConfig::load(None, Some("bank2"), Path::new("d"), &BankOverrides::default()).unwrap();
        assert_eq!(bank2.receive.unwrap().consumer_group, "consumer_group_txmsg_bank2");
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
        let mut config = BankConfig::preset("bank1", dir.path()).unwrap();
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        assert!(BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).is_ok());
        config.accounts[0].balance = "-1".into();
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        assert!(BankConfig::load(Some(&path), None, dir.path(), &BankOverrides::default()).is_err());
    }
}
