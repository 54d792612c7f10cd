//! Retention: settled transfers move out of the hot tables into `transfer_out_archive`
//! and `transfer_in_archive`, row for row, with the de-duplication rows they no longer
//! need; `archive_totals` carries what was moved for the auditor, and `archive_horizon`
//! tells the receiving side which late messages to check against the archive.

use txbank_domain::audit::{ArchivedTotals, Incoming, Outgoing};
use txbank_domain::{Amount, TransferState, TxNo};

use crate::script::placeholders;
use crate::store::{parse, query, query_as, Engine, StorageResult, Store, Transaction};
use crate::StorageError;

/// The most transfers moved in one database transaction.
const BATCH: usize = 500;

/// One of a bank's two transfer tables: what an archive run empties, what preloaded
/// books fill.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    /// `transfer_out`: the transfers this bank sent.
    Sent,
    /// `transfer_in`: the transfers this bank received.
    Received,
}

impl Side {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Side::Sent => "transfer_out",
            Side::Received => "transfer_in",
        }
    }

    /// The other table: a de-duplication row stays while it still names the number.
    fn other_table(self) -> &'static str {
        match self {
            Side::Sent => "transfer_in",
            Side::Received => "transfer_out",
        }
    }

    /// The table's columns, which its archive table repeats.
    pub(crate) fn columns(self) -> &'static str {
        match self {
            Side::Sent => {
                "tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time"
            }
            Side::Received => "tx_no, from_bank, from_account, to_account, amount_cents, state, reason, create_time",
        }
    }

    fn direction(self) -> &'static str {
        match self {
            Side::Sent => "out",
            Side::Received => "in",
        }
    }

    /// Up to [`BATCH`] settled transfers recorded before `before_ms`, oldest first. A
    /// sent transfer is settled once credited, returned or rolled back; a received one
    /// once its settlement report left the outbox.
    fn select_settled(self) -> String {
        match self {
            Side::Sent => format!(
                "SELECT tx_no FROM transfer_out WHERE create_time < ? AND state <> '{}' ORDER BY create_time LIMIT {BATCH}",
                TransferState::Debited.as_str()
            ),
            Side::Received => format!(
                "SELECT tx_no FROM transfer_in WHERE create_time < ?
                 AND NOT EXISTS (SELECT 1 FROM settlement_outbox WHERE settlement_outbox.tx_no = transfer_in.tx_no)
                 ORDER BY create_time LIMIT {BATCH}"
            ),
        }
    }
}

/// What one archive run moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveRun {
    /// Sent transfers moved to `transfer_out_archive`.
    pub sent: u64,
    /// Received transfers moved to `transfer_in_archive`.
    pub received: u64,
    /// De-duplication rows deleted.
    pub de_duplication: u64,
}

impl Store {
    /// The archive horizon: settled transfers recorded before it, Unix milliseconds, may
    /// be in the archive (0 when nothing was archived).
    pub async fn archive_horizon(&self) -> StorageResult<i64> {
        let (before,): (i64,) = query_as(self.engine, "SELECT before_ms FROM archive_horizon WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(before)
    }

    /// Moves every settled transfer recorded before `before_ms` into the archive tables,
    /// [`BATCH`] at a time, each batch one transaction that also deletes the batch's
    /// de-duplication rows and adds it to `archive_totals`. The horizon is raised first,
    /// so that from then on a late message about an archived transfer is checked against
    /// the archive. Refuses, changing nothing, while a transfer sent before `before_ms`
    /// is still in flight: its message may still arrive, or be sent again.
    pub async fn archive_before(&self, before_ms: i64) -> StorageResult<ArchiveRun> {
        self.refuse_archive_cutting_in_flight(before_ms).await?;
        {
            let _turn = self.write_turn().await;
            query(
                self.engine,
                "UPDATE archive_horizon SET before_ms = ? WHERE id = 1 AND before_ms < ?",
            )
            .bind(before_ms)
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        }
        let mut run = ArchiveRun::default();
        for side in [Side::Sent, Side::Received] {
            loop {
                let batch: Vec<(String,)> = query_as(self.engine, &side.select_settled())
                    .bind(before_ms)
                    .fetch_all(&self.pool)
                    .await?;
                if batch.is_empty() {
                    break;
                }
                let tx_nos: Vec<String> = batch.into_iter().map(|(tx_no,)| tx_no).collect();
                let _turn = self.write_turn().await;
                let mut tx = self.begin_write().await?;
                let moved = move_to_archive(&mut tx, side, &tx_nos, before_ms).await?;
                tx.commit().await?;
                match side {
                    Side::Sent => run.sent += tx_nos.len() as u64,
                    Side::Received => run.received += tx_nos.len() as u64,
                }
                run.de_duplication += moved;
            }
        }
        Ok(run)
    }

    /// Refuses an archive up to `before_ms` while a transfer sent before it is in flight.
    pub async fn refuse_archive_cutting_in_flight(&self, before_ms: i64) -> StorageResult<()> {
        let (in_flight, oldest): (i64, Option<i64>) = query_as(
            self.engine,
            "SELECT COUNT(*), MIN(create_time) FROM transfer_out WHERE state = ? AND create_time < ?",
        )
        .bind(TransferState::Debited.as_str())
        .bind(before_ms)
        .fetch_one(&self.pool)
        .await?;
        match oldest {
            Some(oldest_ms) => Err(StorageError::ArchiveCutsInFlight { in_flight, oldest_ms }),
            None => Ok(()),
        }
    }

    /// What the archive holds, in totals.
    pub(crate) async fn archived_totals(&self, tx: &mut Transaction) -> StorageResult<ArchivedTotals> {
        let rows: Vec<(String, String, i64, i64)> = query_as(
            self.engine,
            "SELECT direction, state, transfers, cents FROM archive_totals",
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut totals = ArchivedTotals::default();
        for (direction, state, transfers, cents) in rows {
            let transfers = transfers as usize;
            match (direction.as_str(), state.as_str()) {
                ("out", "credited") => (totals.sent_credited, totals.sent_credited_cents) = (transfers, cents),
                ("out", "returned") => totals.returned = transfers,
                ("out", "rolled_back") => totals.rolled_back = transfers,
                ("in", "credited") => (totals.received_credited, totals.received_credited_cents) = (transfers, cents),
                ("in", "refused") => totals.refused = transfers,
                other => return Err(StorageError::Corrupt(format!("unknown archive total {other:?}"))),
            }
        }
        Ok(totals)
    }

    /// The archived sent transfers among `tx_nos`.
    pub async fn archived_outgoing(&self, tx_nos: &[TxNo]) -> StorageResult<Vec<Outgoing>> {
        let mut found = Vec::new();
        for chunk in tx_nos.chunks(BATCH) {
            let sql = format!(
                "SELECT tx_no, state, amount_cents, create_time FROM transfer_out_archive WHERE tx_no IN ({})",
                placeholders(chunk.len())
            );
            let mut query = query_as::<(String, String, i64, i64)>(self.engine, &sql);
            for tx_no in chunk {
                query = query.bind(tx_no.as_str());
            }
            for (tx_no, state, cents, created_at_ms) in query.fetch_all(&self.pool).await? {
                found.push(Outgoing {
                    tx_no: parse(TxNo::parse(&tx_no))?,
                    state: state.parse::<TransferState>().map_err(StorageError::Corrupt)?,
                    amount: parse(Amount::from_cents(cents))?,
                    created_at_ms,
                });
            }
        }
        Ok(found)
    }

    /// The archived received transfers among `tx_nos`.
    pub async fn archived_incoming(&self, tx_nos: &[TxNo]) -> StorageResult<Vec<Incoming>> {
        let mut found = Vec::new();
        for chunk in tx_nos.chunks(BATCH) {
            let sql = format!(
                "SELECT tx_no, amount_cents, state FROM transfer_in_archive WHERE tx_no IN ({})",
                placeholders(chunk.len())
            );
            let mut query = query_as::<(String, i64, String)>(self.engine, &sql);
            for tx_no in chunk {
                query = query.bind(tx_no.as_str());
            }
            for (tx_no, cents, state) in query.fetch_all(&self.pool).await? {
                found.push(Incoming {
                    tx_no: parse(TxNo::parse(&tx_no))?,
                    amount: parse(Amount::from_cents(cents))?,
                    credited: state == TransferState::Credited.as_str(),
                });
            }
        }
        Ok(found)
    }
}

/// Moves the transfers `tx_nos` of `side` into its archive table inside `tx`, adds them
/// to `archive_totals`, and deletes the de-duplication rows no hot table names any more;
/// answers how many of those it deleted.
///
/// A received transfer is archived by this bank's clock (`create_time`), but a late
/// copy is checked against the archive by the time in its number, the sender's clock
/// (see `credit_in`). A number whose time is not before the horizon `before_ms` (the
/// sender's clock was ahead) keeps its de-duplication row, so that a late copy is still
/// absorbed as a duplicate.
async fn move_to_archive(tx: &mut Transaction, side: Side, tx_nos: &[String], before_ms: i64) -> StorageResult<u64> {
    let (table, list) = (side.table(), placeholders(tx_nos.len()));
    let sum_by_state = format!(
        "SELECT state, COUNT(*), CAST(SUM(amount_cents) AS SIGNED) FROM {table} WHERE tx_no IN ({list}) GROUP BY state"
    );
    let mut totals = query_as::<(String, i64, i64)>(Engine::of_connection(tx), &sum_by_state);
    for tx_no in tx_nos {
        totals = totals.bind(tx_no.as_str());
    }
    for (state, transfers, cents) in totals.fetch_all(&mut **tx).await? {
        query(
            Engine::of_connection(tx),
            "UPDATE archive_totals SET transfers = transfers + ?, cents = cents + ? WHERE direction = ? AND state = ?",
        )
        .bind(transfers)
        .bind(cents)
        .bind(side.direction())
        .bind(state)
        .execute(&mut **tx)
        .await?;
    }
    let columns = side.columns();
    let mut statements = vec![
        format!("INSERT INTO {table}_archive ({columns}) SELECT {columns} FROM {table} WHERE tx_no IN ({list})"),
        format!("DELETE FROM {table} WHERE tx_no IN ({list})"),
    ];
    if matches!(side, Side::Sent) {
        statements.push(format!("DELETE FROM redrive WHERE tx_no IN ({list})"));
    }
    for sql in &statements {
        bound(Engine::of_connection(tx), sql, tx_nos).execute(&mut **tx).await?;
    }
    let forgotten: Vec<String> = tx_nos
        .iter()
        .filter(|tx_no| match side {
            Side::Sent => true,
            Side::Received => TxNo::parse(tx_no)
                .ok()
                .and_then(|tx_no| tx_no.made_at_ms())
                .is_none_or(|made_at| made_at < before_ms),
        })
        .cloned()
        .collect();
    if forgotten.is_empty() {
        return Ok(0);
    }
    let forget = format!(
        "DELETE FROM de_duplication WHERE tx_no IN ({}) AND tx_no NOT IN (SELECT tx_no FROM {})",
        placeholders(forgotten.len()),
        side.other_table()
    );
    Ok(bound(Engine::of_connection(tx), &forget, &forgotten)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// `sql` on `engine` with each of `tx_nos` bound in order.
fn bound<'q>(
    engine: Engine,
    sql: &'q str,
    tx_nos: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    tx_nos
        .iter()
        .fold(query(engine, sql), |query, tx_no| query.bind(tx_no.as_str()))
}
