//! `txbank migrate`: where each bank's schema stands, and bringing it up to date.

use std::path::Path;

use anyhow::{Context, Result};
use txbank_storage::{redact, SchemaStatus, SchemaVersion, Store};

use crate::cli::MigrateAction;
use crate::databases::{named_or_up, open_existing, BankDatabase};

/// Shows or applies the migrations of `banks` (`NAME=URL`), or of `up`'s banks under
/// `data_dir` when none are given. `run` first checks every database (each exists, is
/// the named bank's, is not newer than this binary) and changes none unless all pass.
pub fn run(action: &MigrateAction, banks: &[String], data_dir: &Path) -> Result<()> {
    let banks = named_or_up(banks, data_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut stores = Vec::new();
        for (store, BankDatabase { bank, url }) in open_existing(&banks).await?.into_iter().zip(&banks) {
            let status = store
                .schema_status()
                .await
                .with_context(|| format!("{bank}: cannot read the schema at {}", redact(url)))?;
            stores.push((store, url, status));
        }
        for (store, url, status) in &stores {
            match action {
                MigrateAction::Status => print_status(store, url, status),
                MigrateAction::Run => store
                    .refuse_unusable(status)
                    .with_context(|| format!("{}: nothing migrated", store.bank()))?,
            }
        }
        if let MigrateAction::Run = action {
            for (store, url, _) in &stores {
                let applied = store
                    .migrate()
                    .await
                    .with_context(|| format!("{}: cannot migrate {}", store.bank(), redact(url)))?;
                println!("{} {}: {}", store.bank(), redact(url), applied_now(&applied));
            }
        }
        for (store, _, _) in &stores {
            store.close().await;
        }
        Ok(())
    })
}

fn print_status(store: &Store, url: &str, status: &SchemaStatus) {
    let versions = |list: &[SchemaVersion]| match list {
        [] => "none".to_string(),
        list => list
            .iter()
            .map(|migration| format!("{} {}", migration.version, migration.description))
            .collect::<Vec<_>>()
            .join(", "),
    };
    println!("{} {}", store.bank(), redact(url));
    let owner = status
        .owner
        .as_deref()
        .unwrap_or("unclaimed (claimed by the first bank to migrate it)");
    println!("  belongs to  {owner}");
    if status.unversioned {
        println!("  schema      made before versioned migrations; `txbank migrate run` upgrades it in place");
    }
    println!("  applied     {}", versions(&status.applied));
    println!("  pending     {}", versions(&status.pending));
    if !status.unknown.is_empty() {
        println!(
            "  unknown     {:?}: the database is newer than this txbank",
            status.unknown
        );
    }
    if let Some(version) = status.failed {
        println!("  failed      {version}: started and did not finish");
    }
}

fn applied_now(applied: &[SchemaVersion]) -> String {
    if applied.is_empty() {
        return "already up to date".to_string();
    }
    let names: Vec<String> = applied
        .iter()
        .map(|migration| format!("{} {}", migration.version, migration.description))
        .collect();
    format!("applied {}", names.join(", "))
}
