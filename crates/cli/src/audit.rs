//! `txbank audit`: reads the banks' databases and checks that every cent is accounted
//! for and every transfer ended in exactly one correct state.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use txbank_domain::audit::{audit, unmatched, ArchivedTotals, AuditReport};

use crate::databases::{named_or_up, open_existing, BankDatabase};

/// Exit status of an audit whose books balance while a transfer is stuck in flight.
const STUCK_EXIT_STATUS: i32 = 2;

/// Audits `banks` (`NAME=URL`, receiving banks first), or `up`'s bank2 and bank1 under
/// `data_dir` when none are given. Fails when a rule is broken; exits with
/// [`STUCK_EXIT_STATUS`] when none is but a transfer has been in flight longer than
/// `stuck_after_ms`.
pub fn run(banks: &[String], data_dir: &Path, json: bool, stuck_after_ms: i64) -> Result<()> {
    let banks = named_or_up(banks, data_dir)?;
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
    if report.has_stuck_transfers(stuck_after_ms) {
        eprintln!(
            "balanced, but a transfer has been in flight for longer than {} s",
            stuck_after_ms / 1000
        );
        std::process::exit(STUCK_EXIT_STATUS);
    }
    Ok(())
}

/// Reads each bank in its own snapshot and audits them together. A live transfer whose
/// other side no live ledger holds is looked up in every bank's archive.
pub async fn read_and_audit(banks: &[BankDatabase]) -> Result<AuditReport> {
    let stores = open_existing(banks).await?;
    let mut ledgers = Vec::new();
    for store in &stores {
        let bank = store.bank();
        ledgers.push(
            store
                .ledger()
                .await
                .with_context(|| format!("cannot read {bank}'s ledger"))?,
        );
    }
    // With nothing archived anywhere, nothing is to be looked up there: the books are
    // walked once, by the audit itself.
    let archived_any = ledgers
        .iter()
        .any(|ledger| ledger.archived != ArchivedTotals::default());
    let (debits_missing, credits_missing) = if archived_any {
        unmatched(&ledgers)
    } else {
        (Vec::new(), Vec::new())
    };
    for (store, ledger) in stores.iter().zip(&mut ledgers) {
        if !debits_missing.is_empty() {
            ledger.archived_outgoing = store.archived_outgoing(&debits_missing).await?;
        }
        if !credits_missing.is_empty() {
            ledger.archived_incoming = store.archived_incoming(&credits_missing).await?;
        }
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
    if report.held > 0 {
        println!(
            "held             {} in {} return(s) whose source could not take the money back",
            money(report.held_cents),
            report.held
        );
    }
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
