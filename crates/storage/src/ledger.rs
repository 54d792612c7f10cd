//! The ledger the auditor reads, and what is in flight.

use txbank_domain::audit::{BankLedger, Incoming, Outgoing};
use txbank_domain::{Amount, TransferState, TxNo};

use crate::sending::SELECT_TRANSFER_OUT;
use crate::store::{now_ms, parse, Engine, StorageResult, Store, TransferRow};

impl Store {
    /// How many sent transfers are debited but not yet settled, and the oldest one's age
    /// in milliseconds (0 when none).
    pub async fn in_flight(&self) -> StorageResult<(i64, i64)> {
        let (count, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(create_time) FROM transfer_out WHERE state = ?")
                .bind(TransferState::Debited.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok((count, oldest.map_or(0, |oldest| (now_ms() - oldest).max(0))))
    }

    /// When each transfer recorded since `since_ms` was recorded, Unix milliseconds by
    /// `tx_no`: the sent ones (`transfer_out`) or the received ones (`transfer_in`). For
    /// the benchmark's debit-to-credit latencies.
    pub async fn recorded_times(&self, sent: bool, since_ms: i64) -> StorageResult<Vec<(String, i64)>> {
        let table = if sent { "transfer_out" } else { "transfer_in" };
        Ok(sqlx::query_as(&format!(
            "SELECT tx_no, create_time FROM {table} WHERE create_time >= ?"
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The database's size on disk in bytes: SQLite's pages once its write-ahead log is
    /// checkpointed; MySQL's data and indexes as InnoDB counts them once analyzed.
    pub async fn size_on_disk(&self) -> StorageResult<i64> {
        let sql = match self.engine {
            Engine::Sqlite => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await?;
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Engine::MySql => {
                sqlx::query("ANALYZE TABLE account_info, de_duplication, transfer_out, transfer_in")
                    .execute(&self.pool)
                    .await?;
                "SELECT CAST(SUM(data_length + index_length) AS SIGNED) FROM information_schema.tables
                 WHERE table_schema = DATABASE()"
            }
        };
        let (bytes,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        Ok(bytes)
    }

    /// The transfers this bank holds in its live tables, sent and received.
    pub async fn transfers_held(&self) -> StorageResult<i64> {
        let (held,): (i64,) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM transfer_out) + (SELECT COUNT(*) FROM transfer_in)")
                .fetch_one(&self.pool)
                .await?;
        Ok(held)
    }

    /// Everything the auditor needs from this bank, read in one transaction so that the
    /// balances and the transfer lists agree with each other.
    pub async fn ledger(&self) -> StorageResult<BankLedger> {
        let mut tx = self.pool.begin().await?;
        let (opened_cents, balance_cents): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(opening_balance_cents), 0) AS SIGNED), CAST(COALESCE(SUM(account_balance_cents), 0) AS SIGNED)
             FROM account_info",
        )
        .fetch_one(&mut *tx)
        .await?;
        let outgoing: Vec<TransferRow> = sqlx::query_as(SELECT_TRANSFER_OUT).fetch_all(&mut *tx).await?;
        let incoming: Vec<(String, i64, String)> = sqlx::query_as("SELECT tx_no, amount_cents, state FROM transfer_in")
            .fetch_all(&mut *tx)
            .await?;
        let (set_aside,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM set_aside")
            .fetch_one(&mut *tx)
            .await?;
        let archived = self.archived_totals(&mut tx).await?;
        tx.commit().await?;
        Ok(BankLedger {
            bank: self.bank.to_string(),
            opened_cents,
            balance_cents,
            set_aside: set_aside as usize,
            archived,
            archived_outgoing: Vec::new(),
            archived_incoming: Vec::new(),
            outgoing: outgoing
                .into_iter()
                .map(|row| {
                    let record = row.into_record(&self.bank)?;
                    Ok(Outgoing {
                        tx_no: record.transfer.tx_no,
                        state: record.state,
                        amount: record.transfer.amount,
                        created_at_ms: record.created_at_ms,
                    })
                })
                .collect::<StorageResult<_>>()?,
            incoming: incoming
                .into_iter()
                .map(|(tx_no, cents, state)| {
                    Ok(Incoming {
                        tx_no: parse(TxNo::parse(&tx_no))?,
                        amount: parse(Amount::from_cents(cents))?,
                        credited: state == TransferState::Credited.as_str(),
                    })
                })
                .collect::<StorageResult<_>>()?,
        })
    }
}
