//! The ledger the auditor reads, and what is in flight.

use txbank_domain::audit::{BankLedger, Incoming, Outgoing};
use txbank_domain::{Amount, TransferState, TxNo};

use crate::store::{now_ms, parse, query, query_as, Engine, StorageResult, Store, Transaction};
use crate::StorageError;

impl Store {
    /// How many sent transfers are debited but not yet settled, and the oldest one's age
    /// in milliseconds (0 when none).
    pub async fn in_flight(&self) -> StorageResult<(i64, i64)> {
        let (count, oldest): (i64, Option<i64>) = query_as(
            self.engine,
            "SELECT COUNT(*), MIN(create_time) FROM transfer_out WHERE state = ?",
        )
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
        Ok(query_as(
            self.engine,
            &format!("SELECT tx_no, create_time FROM {table} WHERE create_time >= ?"),
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The database's size on disk in bytes: SQLite's pages once its write-ahead log is
    /// checkpointed; MySQL's data and indexes as InnoDB counts them once analyzed;
    /// PostgreSQL's database files.
    pub async fn size_on_disk(&self) -> StorageResult<i64> {
        let sql = match self.engine {
            Engine::Sqlite => {
                query(self.engine, "PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&self.pool)
                    .await?;
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
            Engine::MySql => {
                query(
                    self.engine,
                    "ANALYZE TABLE account_info, de_duplication, transfer_out, transfer_in",
                )
                .execute(&self.pool)
                .await?;
                "SELECT CAST(SUM(data_length + index_length) AS SIGNED) FROM information_schema.tables
                 WHERE table_schema = DATABASE()"
            }
            Engine::Postgres => "SELECT pg_database_size(current_database())",
        };
        let (bytes,): (i64,) = query_as(self.engine, sql).fetch_one(&self.pool).await?;
        Ok(bytes)
    }

    /// The transfers this bank holds in its live tables, sent and received.
    pub async fn transfers_held(&self) -> StorageResult<i64> {
        let (held,): (i64,) = query_as(
            self.engine,
            "SELECT (SELECT COUNT(*) FROM transfer_out) + (SELECT COUNT(*) FROM transfer_in)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(held)
    }

    /// Everything the auditor needs from this bank, read in one transaction so that the
    /// balances and the transfer lists agree with each other.
    pub async fn ledger(&self) -> StorageResult<BankLedger> {
        let mut tx = self.pool.begin().await?;
        if self.engine == Engine::MySql {
            query(self.engine, "SET SESSION group_concat_max_len = 67108864")
                .execute(&mut *tx)
                .await?;
        }
        let (opened_cents, balance_cents): (i64, i64) = query_as(self.engine,
            "SELECT CAST(COALESCE(SUM(opening_balance_cents), 0) AS SIGNED), CAST(COALESCE(SUM(account_balance_cents), 0) AS SIGNED)
             FROM account_info",
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut outgoing = Vec::new();
        self.read_packed(
            &mut tx,
            "transfer_out",
            "tx_no, state, amount_cents, create_time",
            |fields| {
                let [tx_no, state, cents, created_at_ms] = fields[..] else {
                    return Err(StorageError::Corrupt(format!("transfer_out row {fields:?}")));
                };
                outgoing.push(Outgoing {
                    tx_no: parse(TxNo::parse(tx_no))?,
                    state: state.parse().map_err(StorageError::Corrupt)?,
                    amount: parse(Amount::from_cents(number(cents)?))?,
                    created_at_ms: number(created_at_ms)?,
                });
                Ok(())
            },
        )
        .await?;
        let mut incoming = Vec::new();
        self.read_packed(&mut tx, "transfer_in", "tx_no, state, amount_cents", |fields| {
            let [tx_no, state, cents] = fields[..] else {
                return Err(StorageError::Corrupt(format!("transfer_in row {fields:?}")));
            };
            incoming.push(Incoming {
                tx_no: parse(TxNo::parse(tx_no))?,
                amount: parse(Amount::from_cents(number(cents)?))?,
                credited: state == TransferState::Credited.as_str(),
            });
            Ok(())
        })
        .await?;
        let (set_aside,): (i64,) = query_as(self.engine, "SELECT COUNT(*) FROM set_aside")
            .fetch_one(&mut *tx)
            .await?;
        let (held, held_cents): (i64, i64) = query_as(
            self.engine,
            "SELECT COUNT(*), CAST(COALESCE(SUM(amount_cents), 0) AS SIGNED) FROM held_return",
        )
        .fetch_one(&mut *tx)
        .await?;
        let (queued,): (i64,) = query_as(self.engine, "SELECT COUNT(*) FROM unsent_transfer")
            .fetch_one(&mut *tx)
            .await?;
        let archived = self.archived_totals(&mut tx).await?;
        tx.commit().await?;
        Ok(BankLedger {
            bank: self.bank.to_string(),
            opened_cents,
            balance_cents,
            held_cents,
            held: held as usize,
            queued: queued as usize,
            set_aside: set_aside as usize,
            archived,
            archived_outgoing: Vec::new(),
            archived_incoming: Vec::new(),
            outgoing,
            incoming,
        })
    }

    /// Reads `columns` of every row of `table` inside `tx`, in pages of [`PAGE`] rows in
    /// `tx_no` order, each page packed by the database into one text (rows joined by
    /// `,`, columns by ` `): a row a call would cost more than the statement, as the
    /// drivers hand rows over one at a time. Each row's fields go to `row`.
    async fn read_packed(
        &self,
        tx: &mut Transaction,
        table: &str,
        columns: &str,
        mut row: impl FnMut(&[&str]) -> StorageResult<()>,
    ) -> StorageResult<()> {
        let packed = match self.engine {
            Engine::Sqlite => "CAST(group_concat(packed, ',') AS BLOB)",
            Engine::MySql => "GROUP_CONCAT(packed SEPARATOR ',')",
            Engine::Postgres => "convert_to(string_agg(packed, ',' ORDER BY tx_no), 'UTF8')",
        };
        let page = format!(
            "SELECT COUNT(*), MAX(tx_no), {packed} FROM (SELECT tx_no, concat_ws(' ', {columns}) AS packed
             FROM {table} WHERE tx_no > ? ORDER BY tx_no LIMIT {PAGE}) page"
        );
        let mut after = String::new();
        loop {
            let (count, last, text): (i64, Option<String>, Option<Vec<u8>>) =
                query_as(self.engine, &page).bind(&after).fetch_one(&mut **tx).await?;
            let text = String::from_utf8(text.unwrap_or_default())
                .map_err(|error| StorageError::Corrupt(format!("{table}: {error}")))?;
            let mut rows = 0;
            for packed_row in text.split(',').filter(|packed_row| !packed_row.is_empty()) {
                row(&packed_row.split(' ').collect::<Vec<_>>())?;
                rows += 1;
            }
            if rows != count {
                return Err(StorageError::Corrupt(format!(
                    "{table}: a page of {count} rows unpacked as {rows}"
                )));
            }
            match last {
                Some(last) if count == PAGE => after = last,
                _ => return Ok(()),
            }
        }
    }
}

/// Rows of a page read by [`Store::read_packed`]: about 6 MB of text, within MySQL's
/// default packet limit.
const PAGE: i64 = 50_000;

fn number(text: &str) -> StorageResult<i64> {
    text.parse()
        .map_err(|_| StorageError::Corrupt(format!("{text:?} is not a number")))
}
