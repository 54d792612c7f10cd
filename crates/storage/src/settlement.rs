//! Settlement: the outbox of reports owed to sending banks, and applying a report to a
//! sent transfer at most once.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::Executor;
use txbank_domain::{BankId, Settlement, TransferState, TxNo};

use crate::script::{in_runs, placeholders, Script, Value};
use crate::sending::select_transfer_out_anywhere;
use crate::store::{parse, rows, Engine, StorageResult, Store, Transaction, TransferRow};
use crate::StorageError;

/// What [`Store::apply_settlement`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementOutcome {
    /// The transfer moved to its final state now (and a returned amount was credited back).
    Applied,
    /// The same report was applied before; nothing changed.
    AlreadyApplied,
}

/// A settlement report owed to a sending bank, waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSettlement {
    /// The transfer it concerns.
    pub tx_no: TxNo,
    /// The bank that sent the transfer, to which the report goes.
    pub to_bank: BankId,
    /// What happened to the transfer here.
    pub settlement: Settlement,
}

/// Adds to `script` the statements that apply "credited" reports (tx_nos by reporting
/// bank) as [`settle_in`] would each, one per reporting bank: they move every row they
/// aim at only when each report is about a debited transfer of its reporter's.
pub(crate) fn settle_together<'a>(script: &mut Script<'a>, reports: &BTreeMap<&'a str, Vec<&'a str>>) {
    for (reporter, tx_nos) in reports {
        for run in in_runs(tx_nos) {
            let mut values = vec![
                Value::Text(TransferState::Credited.as_str()),
                Value::Text(reporter),
                Value::Text(TransferState::Debited.as_str()),
            ];
            values.extend(run.iter().map(|tx_no| Value::Text(tx_no)));
            script.push(
                format!(
                    "UPDATE transfer_out SET state = ?, reason = NULL WHERE to_bank = ? AND state = ? AND tx_no IN ({})",
                    placeholders(run.len())
                ),
                values,
                run.len(),
            );
        }
    }
}

/// The sending side of one settlement report inside `tx` (see
/// [`Store::apply_settlement`]); a refusal changes nothing.
pub(crate) async fn settle_in(
    tx: &mut Transaction,
    bank: &BankId,
    tx_no: &TxNo,
    reporter: &BankId,
    settlement: &Settlement,
) -> StorageResult<SettlementOutcome> {
    let reported = settlement.final_state();
    let reason = match settlement {
        Settlement::Credited => None,
        Settlement::Returned { reason } => Some(reason.chars().take(255).collect::<String>()),
    };
    let moved =
        sqlx::query("UPDATE transfer_out SET state = ?, reason = ? WHERE tx_no = ? AND to_bank = ? AND state = ?")
            .bind(reported.as_str())
            .bind(reason)
            .bind(tx_no.as_str())
            .bind(reporter.as_str())
            .bind(TransferState::Debited.as_str())
            .execute(&mut **tx)
            .await?;
    if rows(&moved) == 0 {
        let existing: Option<TransferRow> = sqlx::query_as(&select_transfer_out_anywhere("tx_no"))
            .bind(tx_no.as_str())
            .bind(tx_no.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let existing = existing.map(|row| row.into_record(bank)).transpose()?;
        return match existing {
            None => Err(StorageError::UnknownTransfer(tx_no.clone())),
            Some(existing) if existing.transfer.to_bank != *reporter => Err(StorageError::ForeignSettlement {
                tx_no: tx_no.clone(),
                reporter: reporter.clone(),
            }),
            Some(existing) if existing.state == reported => Ok(SettlementOutcome::AlreadyApplied),
            Some(existing) => Err(StorageError::SettlementConflict {
                tx_no: tx_no.clone(),
                state: existing.state,
                reported,
            }),
        };
    }
    if reported == TransferState::Returned {
        sqlx::query(
            "UPDATE account_info SET account_balance_cents = account_balance_cents +
                (SELECT amount_cents FROM transfer_out WHERE tx_no = ?)
             WHERE account_no = (SELECT from_account FROM transfer_out WHERE tx_no = ?)",
        )
        .bind(tx_no.as_str())
        .bind(tx_no.as_str())
        .execute(&mut **tx)
        .await?;
    }
    Ok(SettlementOutcome::Applied)
}

impl Store {
    /// Settlement reports not yet sent, oldest first, at most `limit`.
    pub async fn pending_settlements(&self, limit: u32) -> StorageResult<Vec<PendingSettlement>> {
        let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT tx_no, to_bank, outcome, reason FROM settlement_outbox ORDER BY create_time LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tx_no, to_bank, outcome, reason)| {
                let settlement = match TransferState::from_str(&outcome).map_err(StorageError::Corrupt)? {
                    TransferState::Credited => Settlement::Credited,
                    TransferState::Returned => Settlement::Returned {
                        reason: reason.unwrap_or_default(),
                    },
                    other => return Err(StorageError::Corrupt(format!("outbox holds a {other} report"))),
                };
                Ok(PendingSettlement {
                    tx_no: parse(TxNo::parse(&tx_no))?,
                    to_bank: parse(BankId::parse(&to_bank))?,
                    settlement,
                })
            })
            .collect()
    }

    /// Removes settlement reports from the outbox once the broker stored them: one
    /// `DELETE ... IN (...)` per 500 reports, each its own transaction (one call to the
    /// database and one durable commit; a crash between two leaves reports that are sent
    /// again, which their receiver absorbs). On MySQL at `READ COMMITTED`: at InnoDB's
    /// default `REPEATABLE READ` such a `DELETE` locks the gaps between its keys, and
    /// deadlocked with the credits inserting new reports meanwhile.
    pub async fn settlements_sent(&self, tx_nos: &[TxNo]) -> StorageResult<()> {
        if tx_nos.is_empty() {
            return Ok(());
        }
        let _turn = self.write_turn().await;
        for chunk in tx_nos.chunks(500) {
            let statement = format!(
                "DELETE FROM settlement_outbox WHERE tx_no IN ({})",
                placeholders(chunk.len())
            );
            let mut removing = sqlx::query(&statement).persistent(false);
            for tx_no in chunk {
                removing = removing.bind(tx_no.as_str());
            }
            let mut conn = self.pool.acquire().await?;
            if self.engine == Engine::MySql {
                // Applies to the next transaction of this connection only: the DELETE.
                conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
            }
            removing.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The sending side of a settlement report, in one database transaction: move the
    /// debited transfer to credited, or to returned and credit its amount back to the
    /// source. Applying the same report again changes nothing; a report from another bank
    /// than the transfer's destination is refused.
    pub async fn apply_settlement(
        &self,
        tx_no: &TxNo,
        reporter: &BankId,
        settlement: &Settlement,
    ) -> StorageResult<SettlementOutcome> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let outcome = settle_in(&mut tx, &self.bank, tx_no, reporter, settlement).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}
