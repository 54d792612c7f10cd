//! Settlement: the outbox of reports owed to sending banks, and applying a report to a
//! sent transfer at most once.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::Executor;
use txbank_domain::{AccountNo, Amount, BankId, Settlement, TransferState, TxNo};

use crate::script::{placeholders, Script, Value};
use crate::store::{now_ms, parse, query, query_as, rows, Engine, StorageResult, Store, Transaction};
use crate::transfers::{credit, select_transfer_out_anywhere, TransferRow, SELECT_TRANSFER_OUT};
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
        let listed: Vec<Value> = tx_nos.iter().map(|tx_no| Value::Text(tx_no)).collect();
        script.update_listed(
            "UPDATE transfer_out SET state = ?, reason = NULL WHERE to_bank = ? AND state = ? AND tx_no IN",
            &[
                Value::Text(TransferState::Credited.as_str()),
                Value::Text(reporter),
                Value::Text(TransferState::Debited.as_str()),
            ],
            &listed,
        );
    }
}

/// The sending side of one settlement report inside `tx` on a database of `engine`
/// (see [`Store::apply_settlement`]); a refusal changes nothing.
pub(crate) async fn settle_in(
    tx: &mut Transaction,
    engine: Engine,
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
    let moved = query(
        engine,
        "UPDATE transfer_out SET state = ?, reason = ? WHERE tx_no = ? AND to_bank = ? AND state = ?",
    )
    .bind(reported.as_str())
    .bind(reason)
    .bind(tx_no.as_str())
    .bind(reporter.as_str())
    .bind(TransferState::Debited.as_str())
    .execute(&mut **tx)
    .await?;
    if rows(&moved) == 0 {
        let existing = sent_as_committed(tx, engine, tx_no).await?;
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
        credit_back_or_hold(tx, engine, tx_no).await?;
    }
    Ok(SettlementOutcome::Applied)
}

/// Credits the amount of returned transfer `tx_no` back to its source inside `tx`; when
/// the source cannot take it (closed, or the money would pass the maximum balance), the
/// money is held in `held_return` instead, on the bank's books, until it can (see
/// [`Store::release_held_returns`]). A return thus always ends, and no cent leaves the
/// books.
async fn credit_back_or_hold(tx: &mut Transaction, engine: Engine, tx_no: &TxNo) -> StorageResult<()> {
    let (account, cents): (String, i64) = query_as(
        engine,
        "SELECT from_account, amount_cents FROM transfer_out WHERE tx_no = ?",
    )
    .bind(tx_no.as_str())
    .fetch_one(&mut **tx)
    .await?;
    let amount = parse(Amount::from_cents(cents))?;
    let reason = match credit(tx, &parse(AccountNo::parse(&account))?, amount).await {
        Ok(()) => return Ok(()),
        Err(refusal) if !refusal.is_transient() => refusal.to_string(),
        Err(error) => return Err(error),
    };
    tracing::warn!(%tx_no, %account, %reason, "returned money held: its source cannot take it back now");
    query(
        engine,
        "INSERT INTO held_return (tx_no, account_no, amount_cents, reason, create_time) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(tx_no.as_str())
    .bind(account)
    .bind(cents)
    .bind(reason)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Money of a return held because its source could not take it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReturn {
    /// The returned transfer.
    pub tx_no: TxNo,
    /// The source account the money belongs to.
    pub account: AccountNo,
    /// How much is held.
    pub amount: Amount,
    /// Why the account could not take it.
    pub reason: String,
    /// When it was held, Unix milliseconds.
    pub held_since_ms: i64,
}

/// Sent transfer `tx_no`, live or archived, as last committed. On MySQL and PostgreSQL
/// the live row is read with a share lock: a plain read sees the transaction's snapshot
/// (MySQL's, or at PostgreSQL's `READ COMMITTED` the statement's), which
/// predates a report that another instance of the bank applied meanwhile (the same
/// report, sent by two instances of the reporting bank), and would call the transfer
/// still debited. Archived rows never change.
async fn sent_as_committed(tx: &mut Transaction, engine: Engine, tx_no: &TxNo) -> StorageResult<Option<TransferRow>> {
    if engine.locks_rows() {
        let lock = match engine {
            Engine::MySql => "LOCK IN SHARE MODE",
            Engine::Sqlite | Engine::Postgres => "FOR SHARE",
        };
        let live: Option<TransferRow> = query_as(engine, &format!("{SELECT_TRANSFER_OUT} WHERE tx_no = ? {lock}"))
            .bind(tx_no.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        if live.is_some() {
            return Ok(live);
        }
    }
    Ok(query_as(engine, &select_transfer_out_anywhere("tx_no"))
        .bind(tx_no.as_str())
        .bind(tx_no.as_str())
        .fetch_optional(&mut **tx)
        .await?)
}

/// Most reports one `DELETE` removes from the outbox.
const REMOVED_PER_STATEMENT: usize = 500;

/// Removes the reports of `tx_nos` (at most [`REMOVED_PER_STATEMENT`]) from the outbox.
async fn remove_from_outbox(conn: &mut sqlx::AnyConnection, tx_nos: &[TxNo]) -> StorageResult<()> {
    let statement = format!(
        "DELETE FROM settlement_outbox WHERE tx_no IN ({})",
        placeholders(tx_nos.len())
    );
    let mut removing = query(Engine::of_connection(conn), &statement).persistent(false);
    for tx_no in tx_nos {
        removing = removing.bind(tx_no.as_str());
    }
    removing.execute(conn).await?;
    Ok(())
}

/// A row of `settlement_outbox`: `tx_no`, `to_bank`, `outcome`, `reason`.
type OutboxRow = (String, String, String, Option<String>);

/// Reads [`OutboxRow`]s.
const OUTBOX_ROWS: &str = "SELECT tx_no, to_bank, outcome, reason FROM settlement_outbox";

/// The report an outbox row holds.
fn pending_settlement((tx_no, to_bank, outcome, reason): OutboxRow) -> StorageResult<PendingSettlement> {
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
}

/// The reports outbox rows hold.
fn reports_of(rows: Vec<OutboxRow>) -> StorageResult<Vec<PendingSettlement>> {
    rows.into_iter().map(pending_settlement).collect()
}

impl Store {
    /// Settlement reports not yet sent, oldest first, at most `limit`.
    pub async fn pending_settlements(&self, limit: u32) -> StorageResult<Vec<PendingSettlement>> {
        let rows: Vec<OutboxRow> = query_as(self.engine, &format!("{OUTBOX_ROWS} ORDER BY create_time LIMIT ?"))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        reports_of(rows)
    }

    /// Hands the oldest reports of the outbox to `to_bank`, at most `limit`, to `send`,
    /// and removes from the outbox those `send` answers it sent; answers how many it
    /// removed. Each destination's reports are read on their own (by the index on
    /// `to_bank, create_time`), so that reports a destination cannot take never hold
    /// back those of another.
    ///
    /// Every instance of a bank relays the one outbox. On MySQL the reports are taken
    /// with `FOR UPDATE SKIP LOCKED` in a transaction that lasts until they are removed,
    /// so that the other instances' relays pass over them instead of sending each report
    /// once per instance (at `READ COMMITTED`, which locks the rows read and no gap, so
    /// credits queue new reports meanwhile). A relay that dies mid-send releases them
    /// with its connection. On SQLite (one host, one writer) every relay reads them all;
    /// a report sent twice is absorbed by its receiver.
    pub async fn relay_outbox<F, Fut>(&self, to_bank: &BankId, limit: u32, send: F) -> StorageResult<usize>
    where
        F: FnOnce(Vec<PendingSettlement>) -> Fut,
        Fut: std::future::Future<Output = Vec<TxNo>>,
    {
        let oldest = format!("{OUTBOX_ROWS} WHERE to_bank = ? ORDER BY create_time LIMIT ?");
        if !self.engine.locks_rows() {
            let rows: Vec<OutboxRow> = query_as(self.engine, &oldest)
                .bind(to_bank.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            let sent = send(reports_of(rows)?).await;
            self.settlements_sent(&sent).await?;
            return Ok(sent.len());
        }
        let mut conn = self.pool.acquire().await?;
        if self.engine == Engine::MySql {
            // Applies to the next transaction of this connection only (PostgreSQL's
            // default).
            conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
        }
        let mut tx = sqlx::Acquire::begin(&mut *conn).await?;
        let rows: Vec<OutboxRow> = query_as(self.engine, &format!("{oldest} FOR UPDATE SKIP LOCKED"))
            .bind(to_bank.as_str())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let sent = send(reports_of(rows)?).await;
        for chunk in sent.chunks(REMOVED_PER_STATEMENT) {
            remove_from_outbox(&mut tx, chunk).await?;
        }
        tx.commit().await?;
        Ok(sent.len())
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
        for chunk in tx_nos.chunks(REMOVED_PER_STATEMENT) {
            let mut conn = self.pool.acquire().await?;
            if self.engine == Engine::MySql {
                // Applies to the next transaction of this connection only: the DELETE.
                conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
            }
            remove_from_outbox(&mut conn, chunk).await?;
        }
        Ok(())
    }

    /// The returns whose money is held, oldest first.
    pub async fn held_returns(&self) -> StorageResult<Vec<HeldReturn>> {
        let rows: Vec<(String, String, i64, String, i64)> = query_as(
            self.engine,
            "SELECT tx_no, account_no, amount_cents, reason, create_time FROM held_return ORDER BY create_time",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tx_no, account, cents, reason, held_since_ms)| {
                Ok(HeldReturn {
                    tx_no: parse(TxNo::parse(&tx_no))?,
                    account: parse(AccountNo::parse(&account))?,
                    amount: parse(Amount::from_cents(cents))?,
                    reason,
                    held_since_ms,
                })
            })
            .collect()
    }

    /// Credits held returns back to their accounts where they can take them now, each in
    /// its own transaction; answers how many were released.
    pub async fn release_held_returns(&self) -> StorageResult<usize> {
        let mut released = 0;
        for held in self.held_returns().await? {
            let _turn = self.write_turn().await;
            let mut tx = self.begin_write().await?;
            let removed = query(self.engine, "DELETE FROM held_return WHERE tx_no = ?")
                .bind(held.tx_no.as_str())
                .execute(&mut *tx)
                .await?;
            let credited = match credit(&mut tx, &held.account, held.amount).await {
                Ok(()) => rows(&removed) == 1,
                Err(refusal) if !refusal.is_transient() => false,
                Err(error) => return Err(error),
            };
            if credited {
                tx.commit().await?;
                tracing::info!(tx_no = %held.tx_no, account = %held.account, amount = %held.amount, "held returned money credited back");
                released += 1;
            } else {
                tx.rollback().await?;
            }
        }
        Ok(released)
    }

    /// The sending side of a settlement report, in one database transaction: move the
    /// debited transfer to credited, or to returned and credit its amount back to the
    /// source (or hold it, when the source cannot take it). Applying the same report again changes nothing; a report from another bank
    /// than the transfer's destination is refused.
    pub async fn apply_settlement(
        &self,
        tx_no: &TxNo,
        reporter: &BankId,
        settlement: &Settlement,
    ) -> StorageResult<SettlementOutcome> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let outcome = settle_in(&mut tx, self.engine, &self.bank, tx_no, reporter, settlement).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use txbank_domain::{AccountName, AccountNo, Amount, Money, Party, Transfer};

    /// Two instances of bank1 on one fresh database of the MariaDB server the tests use.
    async fn two_instances() -> (Store, Store) {
        let server = std::env::var("TXBANK_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let name = format!("txbank_t_{}", TxNo::generate().as_str().replace('-', ""));
        let url = crate::create_database(&server, &name)
            .await
            .expect("MySQL/MariaDB must run for the tests (scripts/test.sh starts it)");
        let bank = BankId::parse("bank1").unwrap();
        let first = Store::connect(bank.clone(), &url, 2).await.unwrap();
        first.migrate().await.unwrap();
        let second = Store::connect(bank, &url, 2).await.unwrap();
        (first, second)
    }

    #[tokio::test]
    async fn a_report_applied_by_another_instance_meanwhile_is_already_applied_not_a_conflict() {
        let (first, second) = two_instances().await;
        let account = AccountNo::parse("1").unwrap();
        let holder = AccountName::parse("Zhang San").unwrap();
        first
            .open_account_if_absent(&account, &holder, Money::parse("100").unwrap())
            .await
            .unwrap();
        let party = |bank: &str, no: &str| Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(no).unwrap(),
        };
        let amount = Amount::parse("1").unwrap();
        let transfer = Transfer::new(TxNo::generate(), party("bank1", "1"), party("bank2", "2"), amount).unwrap();
        first.debit_and_record(&transfer, None).await.unwrap();
        let bank2 = BankId::parse("bank2").unwrap();

        // The first instance's transaction reads before the second instance applies the
        // same report (two instances of bank2 both sent it): its snapshot says debited.
        let mut tx = first.pool.begin().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM transfer_out")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let applied = second
            .apply_settlement(&transfer.tx_no, &bank2, &Settlement::Credited)
            .await
            .unwrap();
        assert_eq!(applied, SettlementOutcome::Applied);
        let again = settle_in(
            &mut tx,
            Engine::MySql,
            &first.bank,
            &transfer.tx_no,
            &bank2,
            &Settlement::Credited,
        )
        .await;
        tx.commit().await.unwrap();
        assert_eq!(again.unwrap(), SettlementOutcome::AlreadyApplied);
    }
}
