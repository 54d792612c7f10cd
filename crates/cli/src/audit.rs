//! `txbank audit`: reads the banks' databases and checks that every cent is accounted
//! for and every transfer ended in exactly one correct state.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use txbank_domain::audit::{audit, AuditReport};
use txbank_domain::BankId;
use txbank_storage::Store;

/// Audits `banks` (`NAME=URL`, receiving banks first), or `up`'s bank2 and bank1 under
/// `data_dir` when none are given. Fails when a rule is broken.
pub fn run(banks: &[String], data_dir: &Path, json: bool) -> Result<()> {
    let banks = if banks.is_empty() {
        up_banks(data_dir)
    } else {
        banks.to_vec()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reading = crate::progress::spinner(format!("reading {} banks' ledgers", banks.len()));
    let report = runtime.block_on(read_and_audit(&banks));
    reading.finish_and_clear();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !report.is_clean() {
        bail!("{} violation(s) found", report.violations.len());
    }
    Ok(())
}

/// `up`'s banks as `NAME=URL`, receiving bank first: their SQLite files under `data_dir`.
fn up_banks(data_dir: &Path) -> Vec<String> {
    ["bank2", "bank1"]
        .iter()
        .map(|name| format!("{name}=sqlite://{}", data_dir.join(format!("{name}.db")).display()))
        .collect()
}

/// Reads each bank (`NAME=URL`) in its own snapshot and audits them together.
pub(crate) async fn read_and_audit(banks: &[String]) -> Result<AuditReport> {
    let mut ledgers = Vec::new();
    for bank in banks {
        let (name, url) = bank
            .split_once('=')
            .with_context(|| format!("expected NAME=URL, got {bank:?}"))?;
        let bank = BankId::parse(name)?;
        let store = Store::connect(bank, url, 1)
            .await
            .with_context(|| format!("cannot open {name}'s database"))?;
        ledgers.push(
            store
                .ledger()
                .await
                .with_context(|| format!("cannot read {name}'s ledger"))?,
        );
        store.close().await;
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    Ok(audit(&ledgers, now_ms))
}

fn print_report(report: &AuditReport) {
    let money = |cents: i64| format!("{}.{:02}", cents / 100, (cents % 100).abs());
    println!("money entered    {}", money(report.opened_cents));
    println!("on accounts      {}", money(report.balance_cents));
    println!(
        "in flight        {} in {} transfer(s)",
        money(report.in_flight_cents),
        report.in_flight
    );
    if let Some(age) = report.oldest_in_flight_ms {
        println!("oldest in flight {:.1} s", age as f64 / 1000.0);
    }
    println!(
        "debited {}, rolled back {}, credited {}, refused {}, returned {}",
        report.debited, report.rolled_back, report.credited, report.refused, report.returned
    );
    if report.set_aside > 0 {
        println!(
            "set aside        {} received message(s) never applied (see the banks' logs and txbank dlq list)",
            report.set_aside
        );
    }
    if report.is_clean() {
        println!("conservation: OK, no violations");
    }
    for violation in &report.violations {
        println!("VIOLATION {}", serde_json::to_string(violation).unwrap_or_default());
    }
}
