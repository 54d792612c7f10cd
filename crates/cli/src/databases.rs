//! The banks' databases named on a command line (`--bank NAME=URL`), for the commands
//! that read or change them directly: `audit`, `migrate` and `archive`.

use std::path::Path;

use anyhow::{Context, Result};
use txbank_domain::BankId;
use txbank_storage::{redact, Store};

/// A bank and its database's URL.
pub struct BankDatabase {
    /// The bank.
    pub bank: BankId,
    /// Its database.
    pub url: String,
}

/// `banks` (`NAME=URL`, in the order given), or `up`'s bank2 and bank1 (receiving bank
/// first) under `data_dir` when none are given.
pub fn named_or_up(banks: &[String], data_dir: &Path) -> Result<Vec<BankDatabase>> {
    if banks.is_empty() {
        return ["bank2", "bank1"]
            .iter()
            .map(|name| {
                Ok(BankDatabase {
                    bank: BankId::parse(name)?,
                    url: format!("sqlite://{}", data_dir.join(format!("{name}.db")).display()),
                })
            })
            .collect();
    }
    banks
        .iter()
        .map(|bank| {
            let (name, url) = bank
                .split_once('=')
                .with_context(|| format!("expected NAME=URL, got {bank:?}"))?;
            Ok(BankDatabase {
                bank: BankId::parse(name)?,
                url: url.to_string(),
            })
        })
        .collect()
}

/// Opens each of `banks`' databases, one connection each; refuses a missing one.
pub async fn open_existing(banks: &[BankDatabase]) -> Result<Vec<Store>> {
    let mut stores = Vec::new();
    for BankDatabase { bank, url } in banks {
        let store = Store::connect_existing(bank.clone(), url, 1)
            .await
            .with_context(|| format!("cannot open {bank}'s database at {}", redact(url)))?;
        stores.push(store);
    }
    Ok(stores)
}
