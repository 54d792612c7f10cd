//! The `Store`: one bank's database and the statements txbank runs against it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Executor};
use txbank_domain::audit::{BankLedger, Incoming, Outgoing};
use txbank_domain::{
    AccountName, AccountNo, Amount, BankId, IdempotencyKey, Money, Settlement, Transfer, TransferState, TxNo,
};

use crate::{faults, schema, StorageError};

/// The most a balance may hold, in cents (DECIMAL(10,2)).
const MAX_BALANCE_CENTS: i64 = 9_999_999_999;

/// Which SQL engine a [`Store`] talks to; only schema creation differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, by a `sqlite:` URL.
    Sqlite,
    /// MySQL or MariaDB, by a `mysql:` or `mariadb:` URL.
    MySql,
}

impl Engine {
    /// The engine a database URL names, if any.
    pub fn of(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Engine::MySql)
        } else {
            None
        }
    }
}

/// A bank's database: a connection pool plus the statements that read and change it.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) engine: Engine,
    pub(crate) bank: BankId,
    /// Whose turn it is to write (SQLite only; see [`Store::write_turn`]).
    writes: Arc<tokio::sync::Mutex<()>>,
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account's number.
    pub account_no: AccountNo,
    /// The holder's name.
    pub account_name: String,
    /// The current balance.
    pub balance: Money,
    /// True once closed: it neither sends nor receives.
    pub closed: bool,
}

/// An outgoing transfer as the sending bank recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The transfer itself.
    pub transfer: Transfer,
    /// Where it stands.
    pub state: TransferState,
    /// Why it was rolled back, when it was.
    pub reason: Option<String>,
    /// The client's idempotency key, when one was given.
    pub idempotency_key: Option<String>,
    /// When it was recorded, in Unix milliseconds.
    pub created_at_ms: i64,
}

/// What [`Store::debit_and_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebitOutcome {
    /// The source was debited now.
    Debited,
    /// The same transaction number had already been debited; nothing changed.
    AlreadyDebited,
}

/// What [`Store::credit_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The destination was credited now.
    Credited,
    /// The destination cannot take it (unknown or closed account, balance at its
    /// maximum): recorded as refused, and the money's return to the sender queued.
    Refused(String),
    /// The transaction number was already applied; nothing changed but, when this bank
    /// recorded what it did with it, its settlement report was queued again
    /// (`reported_again`), so that a sender whose report was lost hears it.
    Duplicate {
        /// True when the report was queued again.
        reported_again: bool,
    },
}

/// What [`Store::apply_settlement`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementOutcome {
    /// The transfer moved to its final state now (and a returned amount was credited back).
    Applied,
    /// The same report was applied before; nothing changed.
    AlreadyApplied,
}

/// A received message, for [`Store::apply_deliveries`].
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Money for one of this bank's accounts.
    Transfer(Transfer),
    /// A destination's report about a transfer this bank sent.
    Settlement {
        /// The transfer.
        tx_no: TxNo,
        /// The bank that reports.
        reporter: BankId,
        /// What it did.
        settlement: Settlement,
    },
}

impl Delivery {
    /// The outcome of a delivery applied as asked: credited, or the report applied.
    fn applied(&self) -> DeliveryOutcome {
        match self {
            Delivery::Transfer(_) => DeliveryOutcome::Credit(CreditOutcome::Credited),
            Delivery::Settlement { .. } => DeliveryOutcome::Settlement(SettlementOutcome::Applied),
        }
    }
}

/// What [`Store::apply_deliveries`] did with one delivery.
#[derive(Debug)]
pub enum DeliveryOutcome {
    /// What crediting the transfer did.
    Credit(CreditOutcome),
    /// What applying the report did.
    Settlement(SettlementOutcome),
    /// The report cannot apply (unknown transfer, another bank's, contradicting); nothing
    /// changed.
    BadSettlement(StorageError),
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

type StorageResult<T> = Result<T, StorageError>;

impl Store {
    /// Connects to bank `bank`'s database at `url` (`sqlite://path?mode=rwc` or
    /// `mysql://user:pass@host/db`) with at most `max_connections` connections. SQLite
    /// runs in WAL mode with `synchronous=FULL`, so every commit is durable.
    pub async fn connect(bank: BankId, url: &str, max_connections: u32) -> StorageResult<Store> {
        sqlx::any::install_default_drivers();
        let Some(engine) = Engine::of(url) else {
            return Err(StorageError::Database(sqlx::Error::Configuration(
                format!("database URL must start with sqlite: or mysql:, got {:?}", redact(url)).into(),
            )));
        };
        let url = url.replacen("mariadb:", "mysql:", 1);
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if engine == Engine::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        // Each connection has its own page cache (2 MiB by default): a
                        // smaller one keeps a bank's memory low; the hot rows still fit.
                        conn.execute("PRAGMA cache_size = -512").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Store {
            pool,
            engine,
            bank,
            writes: Arc::default(),
        })
    }

    /// Creates the tables that do not exist yet.
    pub async fn migrate(&self) -> StorageResult<()> {
        let statements = match self.engine {
            Engine::Sqlite => schema::SQLITE,
            Engine::MySql => schema::MYSQL,
        };
        for statement in statements {
            self.pool.execute(*statement).await?;
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Opens an account with an opening balance unless one with this number exists.
    /// Returns true when it was created now.
    pub async fn open_account_if_absent(
        &self,
        no: &AccountNo,
        name: &AccountName,
        opening: Money,
    ) -> StorageResult<bool> {
        match self.open_account(no, name, opening, "").await {
            Ok(()) => Ok(true),
            Err(StorageError::AccountExists(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Opens an account with an opening balance (money entering the system, as the
    /// auditor counts it) and a password hash (empty: no password login); refuses a
    /// number that exists.
    pub async fn open_account(
        &self,
        no: &AccountNo,
        name: &AccountName,
        opening: Money,
        password_hash: &str,
    ) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let inserted = sqlx::query(
            "INSERT INTO account_info (account_name, account_no, account_password, account_balance_cents, opening_balance_cents)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name.as_str())
        .bind(no.as_str())
        .bind(password_hash)
        .bind(opening.cents())
        .bind(opening.cents())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(StorageError::AccountExists(no.clone())),
            Err(error) => Err(error.into()),
        }
    }

    /// The bank this database belongs to.
    pub fn bank(&self) -> &BankId {
        &self.bank
    }

    /// The account with this number, if any.
    pub async fn account(&self, no: &AccountNo) -> StorageResult<Option<AccountRecord>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!("{SELECT_ACCOUNT} WHERE account_no = ?"))
            .bind(no.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(AccountRow::into_record).transpose()
    }

    /// The stored password hash of an account (empty when it has none), if the account
    /// exists.
    pub async fn password_hash(&self, no: &AccountNo) -> StorageResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT account_password FROM account_info WHERE account_no = ?")
            .bind(no.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(hash,)| hash))
    }

    /// Every account, by number.
    pub async fn accounts(&self) -> StorageResult<Vec<AccountRecord>> {
        let rows: Vec<AccountRow> = sqlx::query_as(&format!("{SELECT_ACCOUNT} ORDER BY account_no"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AccountRow::into_record).collect()
    }

    /// Closes an account: from now on it neither sends nor receives, and transfers to it
    /// are returned to their senders. Its balance stays where it is.
    pub async fn close_account(&self, no: &AccountNo) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let closed = sqlx::query("UPDATE account_info SET closed = 1 WHERE account_no = ?")
            .bind(no.as_str())
            .execute(&self.pool)
            .await?;
        if rows(&closed) == 0 {
            return Err(StorageError::UnknownAccount(no.clone()));
        }
        Ok(())
    }

    /// The bank1 side of a transfer, in one database transaction: record the transfer as
    /// debited, debit the source if its balance covers the amount, and insert the
    /// transaction number into `de_duplication`.
    ///
    /// Refuses (changing nothing) an unknown source, insufficient funds, a transaction
    /// number already rolled back, and an idempotency key that names another transfer.
    pub async fn debit_and_record(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
    ) -> StorageResult<DebitOutcome> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut tx = match self.begin_recording(transfer, key, TransferState::Debited, now).await? {
            Ok(tx) => tx,
            Err(existing) => return Ok(existing),
        };
        if let Err(refusal) = debit(&mut tx, transfer).await {
            tx.rollback().await?;
            return Err(refusal);
        }
        faults::crash_point(faults::INSIDE_LOCAL_TRANSACTION);
        faults::pause_point(faults::INSIDE_LOCAL_TRANSACTION).await;
        if faults::fail_point(faults::INSIDE_LOCAL_TRANSACTION) {
            tx.rollback().await?;
            return Err(StorageError::Database(sqlx::Error::Protocol(
                "failure injected inside the local transaction".into(),
            )));
        }
        sqlx::query("INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)")
            .bind(transfer.tx_no.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DebitOutcome::Debited)
    }

    /// Debits many transfers with one durable commit (group commit), each as
    /// [`Store::debit_and_record`] would, and answers each with its own outcome.
    ///
    /// The common case (new transfers, sources that cover their sum) takes one
    /// transaction of a few statements for the whole group (see [`Script`]). Anything
    /// else (a transfer or idempotency key seen before, a source that cannot cover the
    /// group, a database error) rolls that transaction back, and each transfer is then
    /// debited on its own, so that a refusal stays the refused transfer's alone.
    pub async fn debit_all(&self, requests: &[(Transfer, Option<IdempotencyKey>)]) -> Vec<StorageResult<DebitOutcome>> {
        if !requests.is_empty() {
            match self.debit_together(requests).await {
                Ok(true) => return requests.iter().map(|_| Ok(DebitOutcome::Debited)).collect(),
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, transfers = requests.len(), "group debit failed; debiting one by one")
                }
            }
        }
        let mut outcomes = Vec::with_capacity(requests.len());
        for (transfer, key) in requests {
            outcomes.push(self.debit_and_record(transfer, key.as_ref()).await);
        }
        outcomes
    }

    /// Debits every transfer of `requests` in one transaction, or none: true when
    /// committed, false (nothing changed) when any is refused or conflicts (a transfer
    /// or idempotency key seen before, a source that cannot cover its part of the sum)
    /// and needs to be debited on its own. The common case of [`Store::debit_all`].
    pub async fn debit_together(&self, requests: &[(Transfer, Option<IdempotencyKey>)]) -> StorageResult<bool> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut script = Script::default();
        for run in in_runs(requests) {
            let rows = run.iter().map(|(transfer, key)| {
                vec![
                    Value::Text(transfer.tx_no.as_str()),
                    Value::MaybeText(key.as_ref().map(IdempotencyKey::as_str)),
                    Value::Text(transfer.from.as_str()),
                    Value::Text(transfer.to_bank.as_str()),
                    Value::Text(transfer.to.as_str()),
                    Value::Int(transfer.amount.cents()),
                    Value::Text(TransferState::Debited.as_str()),
                    Value::Int(now),
                ]
            });
            script.insert_rows(
                "transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)",
                "(?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                rows,
            );
        }
        let mut per_source: BTreeMap<&str, i64> = BTreeMap::new();
        for (transfer, _) in requests {
            *per_source.entry(transfer.from.as_str()).or_default() += transfer.amount.cents();
        }
        for (source, cents) in per_source {
            script.push(
                "UPDATE account_info SET account_balance_cents = account_balance_cents - ?
                 WHERE account_no = ? AND closed = 0 AND account_balance_cents >= ?",
                vec![Value::Int(cents), Value::Text(source), Value::Int(cents)],
                1,
            );
        }
        remember_all(&mut script, requests, |(transfer, _)| &transfer.tx_no, now);
        let mut tx = self.pool.begin().await?;
        if !script.run_and_check(&mut tx, self.engine).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        faults::crash_point(faults::INSIDE_LOCAL_TRANSACTION);
        faults::pause_point(faults::INSIDE_LOCAL_TRANSACTION).await;
        if faults::fail_point(faults::INSIDE_LOCAL_TRANSACTION) {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A transfer between two accounts of this bank (a book transfer), in one database
    /// transaction: record it as credited, debit the source, credit the destination.
    /// No message is involved. Refuses what [`Store::debit_and_record`] refuses, and an
    /// unknown or closed destination, changing nothing.
    pub async fn transfer_within(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
    ) -> StorageResult<DebitOutcome> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut tx = match self
            .begin_recording(transfer, key, TransferState::Credited, now)
            .await?
        {
            Ok(tx) => tx,
            Err(existing) => return Ok(existing),
        };
        let moved = match debit(&mut tx, transfer).await {
            Ok(()) => credit(&mut tx, transfer).await,
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = moved {
            tx.rollback().await?;
            return Err(refusal);
        }
        record_incoming(&mut tx, transfer, None, now).await?;
        tx.commit().await?;
        Ok(DebitOutcome::Debited)
    }

    /// Opens a transaction whose first statement records `transfer` in `transfer_out` as
    /// `state`: the insert takes SQLite's write lock at once, and its primary key is what
    /// makes a concurrent check-back's rollback marker conflict. When the transfer or its
    /// idempotency key is recorded already, says what became of it instead (`Ok(Err(_))`).
    async fn begin_recording(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
        state: TransferState,
        now: i64,
    ) -> StorageResult<Result<Transaction, DebitOutcome>> {
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        )
        .bind(transfer.tx_no.as_str())
        .bind(key.map(|k| k.as_str().to_string()))
        .bind(transfer.from.as_str())
        .bind(transfer.to_bank.as_str())
        .bind(transfer.to.as_str())
        .bind(transfer.amount.cents())
        .bind(state.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match recorded {
            Ok(_) => Ok(Ok(tx)),
            Err(error) => {
                tx.rollback().await?;
                if !is_unique_violation(&error) {
                    return Err(error.into());
                }
                self.explain_conflict(transfer, key).await.map(Err)
            }
        }
    }

    /// Why recording a debit conflicted: the same transfer already exists, or its
    /// idempotency key belongs to another one.
    async fn explain_conflict(&self, transfer: &Transfer, key: Option<&IdempotencyKey>) -> StorageResult<DebitOutcome> {
        if let Some(existing) = self.transfer_out(&transfer.tx_no).await? {
            return match existing.state {
                TransferState::RolledBack => Err(StorageError::RolledBack(transfer.tx_no.clone())),
                _ => Ok(DebitOutcome::AlreadyDebited),
            };
        }
        if let Some(key) = key {
            if let Some(existing) = self.transfer_out_by_key(key).await? {
                return Err(StorageError::IdempotencyKeyTaken {
                    existing: existing.transfer.tx_no,
                });
            }
        }
        Err(StorageError::Corrupt(format!(
            "transfer {} conflicted with no visible row",
            transfer.tx_no
        )))
    }

    /// Settles a transfer whose local transaction did not (or may not have) committed:
    /// records it as rolled back unless it was debited, and returns the final state.
    ///
    /// The rollback row shares the debit's primary key, so once it exists a late debit
    /// can no longer commit; this is what lets check-back answer ROLLBACK for good.
    pub async fn roll_back_unless_debited(&self, transfer: &Transfer, reason: &str) -> StorageResult<TransferState> {
        let _turn = self.write_turn().await;
        let reason: String = reason.chars().take(255).collect();
        let inserted = sqlx::query(
            "INSERT INTO transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)
             VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(transfer.tx_no.as_str())
        .bind(transfer.from.as_str())
        .bind(transfer.to_bank.as_str())
        .bind(transfer.to.as_str())
        .bind(transfer.amount.cents())
        .bind(TransferState::RolledBack.as_str())
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(TransferState::RolledBack),
            Err(error) if is_unique_violation(&error) => match self.transfer_out(&transfer.tx_no).await? {
                Some(existing) => Ok(existing.state),
                None => Err(error.into()),
            },
            Err(error) => Err(error.into()),
        }
    }

    /// The outgoing transfer with this transaction number, if any.
    pub async fn transfer_out(&self, tx_no: &TxNo) -> StorageResult<Option<TransferRecord>> {
        let row: Option<TransferRow> = sqlx::query_as(&format!("{SELECT_TRANSFER_OUT} WHERE tx_no = ?"))
            .bind(tx_no.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.into_record(&self.bank)).transpose()
    }

    /// The outgoing transfer made with this idempotency key, if any.
    pub async fn transfer_out_by_key(&self, key: &IdempotencyKey) -> StorageResult<Option<TransferRecord>> {
        let row: Option<TransferRow> = sqlx::query_as(&format!("{SELECT_TRANSFER_OUT} WHERE idempotency_key = ?"))
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.into_record(&self.bank)).transpose()
    }

    /// The receiving side of a transfer, in one database transaction: insert the
    /// transaction number into `de_duplication` (a duplicate stops here and changes
    /// nothing), credit the destination, record the incoming transfer, and queue the
    /// "credited" report to the sender in `settlement_outbox`.
    ///
    /// A destination that cannot take the money (unknown, closed, at its maximum) is
    /// not retried: the transfer is recorded as refused and a "returned" report queued
    /// instead, so the sender credits its source back.
    pub async fn credit_once(&self, transfer: &Transfer) -> StorageResult<CreditOutcome> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let outcome = credit_in(&mut tx, transfer, now_ms()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

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

    /// The latest `limit` transfers this bank sent, newest first; only those in `state`
    /// when one is given.
    pub async fn recent_transfers_out(
        &self,
        state: Option<TransferState>,
        limit: u32,
    ) -> StorageResult<Vec<TransferRecord>> {
        let sql = match state {
            Some(_) => format!("{SELECT_TRANSFER_OUT} WHERE state = ? ORDER BY create_time DESC LIMIT ?"),
            None => format!("{SELECT_TRANSFER_OUT} ORDER BY create_time DESC LIMIT ?"),
        };
        let mut query = sqlx::query_as::<_, TransferRow>(&sql);
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.into_iter().map(|row| row.into_record(&self.bank)).collect()
    }

    /// The benchmark's reference transaction, the least a transfer costs a database: a
    /// `de_duplication` insert and a one-row balance update, committed together. For a
    /// scratch database only: it adds one cent to `account`.
    pub async fn reference_commit(&self, tx_no: &TxNo, account: &AccountNo) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)")
            .bind(tx_no.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE account_info SET account_balance_cents = account_balance_cents + 1 WHERE account_no = ?")
            .bind(account.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Holds the database's write lock for `length`, as another process stalled inside
    /// a write transaction would (SQLite; for `txbank chaos`'s database outages): a
    /// bank's writes wait meanwhile, and fail once they waited its busy timeout.
    pub async fn hold_write_lock(&self, length: Duration) -> StorageResult<()> {
        let mut conn = self.pool.acquire().await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        tokio::time::sleep(length).await;
        conn.execute("ROLLBACK").await?;
        Ok(())
    }

    /// When each transfer was recorded, Unix milliseconds by `tx_no`: the sent ones
    /// (`transfer_out`) or the received ones (`transfer_in`). For the benchmark's
    /// debit-to-credit latencies.
    pub async fn recorded_times(&self, sent: bool) -> StorageResult<Vec<(String, i64)>> {
        let table = if sent { "transfer_out" } else { "transfer_in" };
        Ok(sqlx::query_as(&format!("SELECT tx_no, create_time FROM {table}"))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records a received message that was set aside (never applied): once per message
    /// id, counting its deliveries.
    pub async fn record_set_aside(&self, message_id: &str, key: &str, reason: &str, detail: &str) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let detail: String = detail.chars().take(255).collect();
        let key: String = key.chars().take(128).collect();
        let counted = sqlx::query(
            "UPDATE set_aside SET deliveries = deliveries + 1, last_seen = ?, reason = ?, detail = ? WHERE message_id = ?",
        )
        .bind(now)
        .bind(reason)
        .bind(detail.as_str())
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        if rows(&counted) == 1 {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO set_aside (message_id, message_key, reason, detail, deliveries, first_seen, last_seen)
             VALUES (?, ?, ?, ?, 1, ?, ?)",
        )
        .bind(message_id)
        .bind(key)
        .bind(reason)
        .bind(detail)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            // A concurrent delivery of the same message inserted it first.
            Err(error) if is_unique_violation(&error) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

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

    /// Applies a batch of received messages in one database transaction, so that one
    /// durable commit covers them all (group commit): each transfer as
    /// [`Store::credit_once`] would, each settlement report as
    /// [`Store::apply_settlement`] would. A report that cannot apply is answered in its
    /// place and changes nothing; any database failure rolls the whole batch back.
    pub async fn apply_deliveries(&self, deliveries: &[Delivery]) -> StorageResult<Vec<DeliveryOutcome>> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        if !deliveries.is_empty() {
            match self.apply_together(deliveries, now).await {
                Ok(true) => return Ok(deliveries.iter().map(Delivery::applied).collect()),
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, deliveries = deliveries.len(), "group apply failed; applying one by one")
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(match delivery {
                Delivery::Transfer(transfer) => DeliveryOutcome::Credit(credit_in(&mut tx, transfer, now).await?),
                Delivery::Settlement {
                    tx_no,
                    reporter,
                    settlement,
                } => match settle_in(&mut tx, &self.bank, tx_no, reporter, settlement).await {
                    Ok(outcome) => DeliveryOutcome::Settlement(outcome),
                    Err(error) if error.is_transient() => return Err(error),
                    Err(refusal) => DeliveryOutcome::BadSettlement(refusal),
                },
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The common case of [`Store::apply_deliveries`] in one transaction of a few
    /// statements for the whole batch (a multi-row insert per table, one update per
    /// destination account and per reporting bank): new transfers to open accounts that
    /// can take their sum, and "credited" reports about transfers still debited. True when
    /// committed; false (nothing changed) when any delivery needs its own answer.
    async fn apply_together(&self, deliveries: &[Delivery], now: i64) -> StorageResult<bool> {
        let mut transfers = Vec::new();
        let mut reports: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for delivery in deliveries {
            match delivery {
                Delivery::Transfer(transfer) => transfers.push(transfer),
                Delivery::Settlement {
                    tx_no,
                    reporter,
                    settlement: Settlement::Credited,
                } => reports.entry(reporter.as_str()).or_default().push(tx_no.as_str()),
                // A return credits the source back: one by one.
                Delivery::Settlement { .. } => return Ok(false),
            }
        }
        let mut script = Script::default();
        credit_together(&mut script, &transfers, now);
        settle_together(&mut script, &reports);
        let mut tx = self.pool.begin().await?;
        let applied = script.run_and_check(&mut tx, self.engine).await?;
        if applied {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(applied)
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
        tx.commit().await?;
        Ok(BankLedger {
            bank: self.bank.to_string(),
            opened_cents,
            balance_cents,
            set_aside: set_aside as usize,
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

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Waits for this process's turn to write. SQLite takes one writer at a time, and a
    /// writer that finds the database locked sleeps in SQLite's busy handler, backing off
    /// up to 100 ms a try; writers queued here are handed the lock at once instead. Other
    /// engines lock rows, not the database: no turn to wait for.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.engine {
            Engine::Sqlite => Some(self.writes.lock().await),
            Engine::MySql => None,
        }
    }
}

const SELECT_TRANSFER_OUT: &str =
    "SELECT tx_no, from_account, to_bank, to_account, amount_cents, state, reason, idempotency_key, create_time FROM transfer_out";

const SELECT_ACCOUNT: &str = "SELECT account_no, account_name, account_balance_cents, closed FROM account_info";

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_no: String,
    account_name: String,
    account_balance_cents: i64,
    closed: i64,
}

impl AccountRow {
    fn into_record(self) -> StorageResult<AccountRecord> {
        Ok(AccountRecord {
            account_no: parse(AccountNo::parse(&self.account_no))?,
            account_name: self.account_name,
            balance: parse(Money::from_cents(self.account_balance_cents))?,
            closed: self.closed != 0,
        })
    }
}

type Transaction = sqlx::Transaction<'static, sqlx::Any>;

/// Debits the transfer's source inside `tx`, refusing an unknown or closed account and
/// insufficient funds.
async fn debit(tx: &mut Transaction, transfer: &Transfer) -> StorageResult<()> {
    let debited = sqlx::query(
        "UPDATE account_info SET account_balance_cents = account_balance_cents - ?
         WHERE account_no = ? AND closed = 0 AND account_balance_cents >= ?",
    )
    .bind(transfer.amount.cents())
    .bind(transfer.from.as_str())
    .bind(transfer.amount.cents())
    .execute(&mut **tx)
    .await?;
    if rows(&debited) == 1 {
        return Ok(());
    }
    Err(match account_in(tx, &transfer.from).await? {
        None => StorageError::UnknownAccount(transfer.from.clone()),
        Some(account) if account.closed => StorageError::AccountClosed(account.account_no),
        Some(account) => StorageError::InsufficientFunds {
            account: account.account_no,
            balance: account.balance,
            requested: transfer.amount.money(),
        },
    })
}

/// The receiving side of one transfer inside `tx` (see [`Store::credit_once`]). A
/// duplicate changes nothing: its `de_duplication` insert fails alone, and the
/// transaction goes on.
async fn credit_in(tx: &mut Transaction, transfer: &Transfer, now: i64) -> StorageResult<CreditOutcome> {
    let first_time = sqlx::query("INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)")
        .bind(transfer.tx_no.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await;
    match first_time {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => {
            let reported_again = report_again(tx, &transfer.tx_no, now).await?;
            return Ok(CreditOutcome::Duplicate { reported_again });
        }
        Err(error) => return Err(error.into()),
    }
    let (settlement, outcome) = match credit(tx, transfer).await {
        Ok(()) => (Settlement::Credited, CreditOutcome::Credited),
        Err(refusal) if !refusal.is_transient() => {
            let reason = refusal.to_string();
            (
                Settlement::Returned { reason: reason.clone() },
                CreditOutcome::Refused(reason),
            )
        }
        Err(error) => return Err(error),
    };
    let reason = match &settlement {
        Settlement::Credited => None,
        Settlement::Returned { reason } => Some(reason.as_str()),
    };
    record_incoming(tx, transfer, reason, now).await?;
    sqlx::query("INSERT INTO settlement_outbox (tx_no, to_bank, outcome, reason, create_time) VALUES (?, ?, ?, ?, ?)")
        .bind(transfer.tx_no.as_str())
        .bind(transfer.from_bank.as_str())
        .bind(settlement.final_state().as_str())
        .bind(reason)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(outcome)
}

/// Queues again, inside `tx`, the settlement report of a transfer this bank received
/// before, from what it recorded (credited or refused), to the bank it recorded as the
/// sender; true when there was one to queue. A report still waiting in the outbox
/// stays as it is.
async fn report_again(tx: &mut Transaction, tx_no: &TxNo, now: i64) -> StorageResult<bool> {
    let recorded: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT from_bank, state, reason FROM transfer_in WHERE tx_no = ?")
            .bind(tx_no.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    let Some((from_bank, state, reason)) = recorded else {
        return Ok(false);
    };
    let outcome = match state.as_str() {
        "refused" => TransferState::Returned,
        _ => TransferState::Credited,
    };
    let queued = sqlx::query(
        "INSERT INTO settlement_outbox (tx_no, to_bank, outcome, reason, create_time) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(tx_no.as_str())
    .bind(from_bank)
    .bind(outcome.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await;
    match queued {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// Adds to `script` the statements that credit `transfers` as [`credit_in`] would each,
/// a few for all: a multi-row insert per table and one update per destination account.
/// They change every row they aim at only when no transfer needs its own answer (seen
/// before, or an account that cannot take its sum).
fn credit_together<'a>(script: &mut Script<'a>, transfers: &'a [&'a Transfer], now: i64) {
    remember_all(script, transfers, |transfer| &transfer.tx_no, now);
    let mut per_account: BTreeMap<&str, i64> = BTreeMap::new();
    for transfer in transfers {
        *per_account.entry(transfer.to.as_str()).or_default() += transfer.amount.cents();
    }
    for (account, cents) in per_account {
        script.push(
            "UPDATE account_info SET account_balance_cents = account_balance_cents + ?
             WHERE account_no = ? AND closed = 0 AND account_balance_cents <= ?",
            vec![
                Value::Int(cents),
                Value::Text(account),
                Value::Int(MAX_BALANCE_CENTS - cents),
            ],
            1,
        );
    }
    for run in in_runs(transfers) {
        let rows = run.iter().map(|transfer| {
            vec![
                Value::Text(transfer.tx_no.as_str()),
                Value::Text(transfer.from_bank.as_str()),
                Value::Text(transfer.from.as_str()),
                Value::Text(transfer.to.as_str()),
                Value::Int(transfer.amount.cents()),
                Value::Text(TransferState::Credited.as_str()),
                Value::Int(now),
            ]
        });
        script.insert_rows(
            "transfer_in (tx_no, from_bank, from_account, to_account, amount_cents, state, reason, create_time)",
            "(?, ?, ?, ?, ?, ?, NULL, ?)",
            rows,
        );
        let reports = run.iter().map(|transfer| {
            vec![
                Value::Text(transfer.tx_no.as_str()),
                Value::Text(transfer.from_bank.as_str()),
                Value::Text(Settlement::Credited.final_state().as_str()),
                Value::Int(now),
            ]
        });
        script.insert_rows(
            "settlement_outbox (tx_no, to_bank, outcome, reason, create_time)",
            "(?, ?, ?, NULL, ?)",
            reports,
        );
    }
}

/// Adds to `script` the multi-row inserts of each item's transaction number into
/// `de_duplication`; a number seen before fails the script with a unique violation.
fn remember_all<'a, T>(script: &mut Script<'a>, items: &'a [T], tx_no: impl Fn(&'a T) -> &'a TxNo, now: i64) {
    for run in in_runs(items) {
        let rows = run
            .iter()
            .map(|item| vec![Value::Text(tx_no(item).as_str()), Value::Int(now)]);
        script.insert_rows("de_duplication (tx_no, create_time)", "(?, ?)", rows);
    }
}

/// Adds to `script` the statements that apply "credited" reports (tx_nos by reporting
/// bank) as [`settle_in`] would each, one per reporting bank: they move every row they
/// aim at only when each report is about a debited transfer of its reporter's.
fn settle_together<'a>(script: &mut Script<'a>, reports: &BTreeMap<&'a str, Vec<&'a str>>) {
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

/// A value bound to a statement of a [`Script`].
enum Value<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
}

/// Statements that each change exactly the rows they aim at when all goes well (a row per
/// inserted row, one per targeted row of an update), run together inside a transaction.
/// On SQLite they go to the database as one call: sqlx runs every SQLite connection on a
/// thread of its own, and each call is a round trip to it, two thread switches, which
/// under load cost more than the statements. MySQL takes them one by one.
#[derive(Default)]
struct Script<'a> {
    statements: Vec<(String, Vec<Value<'a>>)>,
    /// Rows the statements change when all goes well.
    expected_rows: u64,
}

impl<'a> Script<'a> {
    /// Adds a statement that changes `rows` rows when all goes well.
    fn push(&mut self, sql: impl Into<String>, values: Vec<Value<'a>>, rows: usize) {
        self.expected_rows += rows as u64;
        self.statements.push((sql.into(), values));
    }

    /// Adds `INSERT INTO {into} VALUES {row}, {row}, ...`, one `row` per value list: it
    /// inserts them all or fails.
    fn insert_rows(&mut self, into: &str, row: &str, rows: impl Iterator<Item = Vec<Value<'a>>>) {
        let (mut count, mut values) = (0, Vec::new());
        for row_values in rows {
            count += 1;
            values.extend(row_values);
        }
        self.push(
            format!("INSERT INTO {into} VALUES {}", vec![row; count].join(", ")),
            values,
            count,
        );
    }

    /// Runs the statements inside `tx`: true when each changed what it aimed at; false
    /// when any did not or a unique key refused a row (the caller must roll `tx` back).
    async fn run_and_check(self, tx: &mut Transaction, engine: Engine) -> Result<bool, sqlx::Error> {
        let expected = self.expected_rows;
        match self.execute_all(tx, engine).await {
            Ok(changed) => Ok(changed == expected),
            Err(error) if is_unique_violation(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Runs the statements inside `tx`, answering the rows they changed in all.
    async fn execute_all(self, tx: &mut Transaction, engine: Engine) -> Result<u64, sqlx::Error> {
        match engine {
            Engine::Sqlite => {
                // Batches of other sizes make other texts: prepared each time, not kept.
                let sql = self
                    .statements
                    .iter()
                    .map(|(sql, _)| sql.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n");
                let values = self.statements.iter().flat_map(|(_, values)| values);
                Self::execute(sqlx::query(&sql).persistent(false), values, tx).await
            }
            Engine::MySql => {
                let mut changed = 0;
                for (sql, values) in &self.statements {
                    changed += Self::execute(sqlx::query(sql), values, tx).await?;
                }
                Ok(changed)
            }
        }
    }

    /// Binds `values` to `query` in order and runs it, answering the rows it changed.
    async fn execute<'q>(
        mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        values: impl IntoIterator<Item = &'q Value<'q>>,
        tx: &mut Transaction,
    ) -> Result<u64, sqlx::Error> {
        for value in values {
            query = match *value {
                Value::Text(text) => query.bind(text),
                Value::MaybeText(text) => query.bind(text),
                Value::Int(number) => query.bind(number),
            };
        }
        Ok(rows(&query.execute(&mut **tx).await?))
    }
}

/// `?, ?, ...`: `count` placeholders.
pub(crate) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// `items` in runs whose lengths are powers of two, longest first (45 = 32 + 8 + 4 + 1).
/// A statement over a run then comes in a few shapes only, which each MySQL connection's
/// statement cache keeps prepared (SQLite prepares a [`Script`] each time); one shape
/// per batch size filled the caches with up to 64 large variants of each statement,
/// evicting and preparing them again, and held megabytes of them in every bank.
fn in_runs<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let len = 1 << items.len().checked_ilog2()?;
        let (run, rest) = items.split_at(len);
        items = rest;
        Some(run)
    })
}

/// The sending side of one settlement report inside `tx` (see
/// [`Store::apply_settlement`]); a refusal changes nothing.
async fn settle_in(
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
        let existing: Option<TransferRow> = sqlx::query_as(&format!("{SELECT_TRANSFER_OUT} WHERE tx_no = ?"))
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

/// Credits the transfer's destination inside `tx`, refusing an unknown or closed
/// account and a balance that would pass its maximum.
async fn credit(tx: &mut Transaction, transfer: &Transfer) -> StorageResult<()> {
    let credited = sqlx::query(
        "UPDATE account_info SET account_balance_cents = account_balance_cents + ?
         WHERE account_no = ? AND closed = 0 AND account_balance_cents <= ?",
    )
    .bind(transfer.amount.cents())
    .bind(transfer.to.as_str())
    .bind(MAX_BALANCE_CENTS - transfer.amount.cents())
    .execute(&mut **tx)
    .await?;
    if rows(&credited) == 1 {
        return Ok(());
    }
    Err(match account_in(tx, &transfer.to).await? {
        None => StorageError::UnknownAccount(transfer.to.clone()),
        Some(account) if account.closed => StorageError::AccountClosed(account.account_no),
        Some(_) => StorageError::BalanceOverflow {
            account: transfer.to.clone(),
            amount: transfer.amount.money(),
        },
    })
}

/// Records a received transfer inside `tx`: credited, or refused for `refusal`.
async fn record_incoming(
    tx: &mut Transaction,
    transfer: &Transfer,
    refusal: Option<&str>,
    now: i64,
) -> StorageResult<()> {
    let state = if refusal.is_some() {
        "refused"
    } else {
        TransferState::Credited.as_str()
    };
    sqlx::query(
        "INSERT INTO transfer_in (tx_no, from_bank, from_account, to_account, amount_cents, state, reason, create_time)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(transfer.tx_no.as_str())
    .bind(transfer.from_bank.as_str())
    .bind(transfer.from.as_str())
    .bind(transfer.to.as_str())
    .bind(transfer.amount.cents())
    .bind(state)
    .bind(refusal.map(|r| r.chars().take(255).collect::<String>()))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The account as `tx` sees it.
async fn account_in(tx: &mut Transaction, no: &AccountNo) -> StorageResult<Option<AccountRecord>> {
    let row: Option<AccountRow> = sqlx::query_as(&format!("{SELECT_ACCOUNT} WHERE account_no = ?"))
        .bind(no.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(AccountRow::into_record).transpose()
}

#[derive(sqlx::FromRow)]
pub(crate) struct TransferRow {
    tx_no: String,
    from_account: String,
    to_bank: String,
    to_account: String,
    amount_cents: i64,
    state: String,
    reason: Option<String>,
    idempotency_key: Option<String>,
    create_time: i64,
}

impl TransferRow {
    /// The record of a transfer sent by `bank`.
    pub(crate) fn into_record(self, bank: &BankId) -> StorageResult<TransferRecord> {
        let transfer = Transfer {
            tx_no: parse(TxNo::parse(&self.tx_no))?,
            from_bank: bank.clone(),
            from: parse(AccountNo::parse(&self.from_account))?,
            to_bank: parse(BankId::parse(&self.to_bank))?,
            to: parse(AccountNo::parse(&self.to_account))?,
            amount: parse(Amount::from_cents(self.amount_cents))?,
        };
        let state = TransferState::from_str(&self.state).map_err(StorageError::Corrupt)?;
        Ok(TransferRecord {
            transfer,
            state,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
            created_at_ms: self.create_time,
        })
    }
}

pub(crate) fn parse<T>(value: Result<T, txbank_domain::DomainError>) -> StorageResult<T> {
    value.map_err(|error| StorageError::Corrupt(error.to_string()))
}

pub(crate) fn rows(result: &AnyQueryResult) -> u64 {
    result.rows_affected()
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// Creates the empty database `name` (letters, digits, `_`) on the MySQL/MariaDB server
/// at `server_url` (`mysql://user@host:3306`) and returns its URL.
pub async fn create_mysql_database(server_url: &str, name: &str) -> StorageResult<String> {
    on_mysql_server(server_url, "CREATE DATABASE", name).await?;
    Ok(format!("{}/{name}", server_url.trim_end_matches('/')))
}

/// Drops the database `name` from the MySQL/MariaDB server at `server_url`, if it exists.
pub async fn drop_mysql_database(server_url: &str, name: &str) -> StorageResult<()> {
    on_mysql_server(server_url, "DROP DATABASE IF EXISTS", name).await
}

/// Runs `statement name` on the server, `name` being a plain database name.
async fn on_mysql_server(server_url: &str, statement: &str, name: &str) -> StorageResult<()> {
    use sqlx::Connection;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let refusal = format!("{name:?} is not a plain database name");
        return Err(StorageError::Database(sqlx::Error::Configuration(refusal.into())));
    }
    let mut conn = sqlx::MySqlConnection::connect(server_url).await?;
    sqlx::query(&format!("{statement} {name}")).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// `url` with its password, if any, replaced by `***`, fit for logs and printouts.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{in_runs, redact};

    #[test]
    fn a_batch_splits_into_runs_of_powers_of_two_longest_first() {
        let lengths = |n: usize| in_runs(&vec![0; n]).map(<[i32]>::len).collect::<Vec<_>>();
        assert_eq!(lengths(0), Vec::<usize>::new());
        assert_eq!(lengths(1), [1]);
        assert_eq!(lengths(45), [32, 8, 4, 1]);
        assert_eq!(lengths(64), [64]);
        assert_eq!(lengths(63), [32, 16, 8, 4, 2, 1]);
        let items: Vec<usize> = (0..13).collect();
        let rejoined: Vec<usize> = in_runs(&items).flatten().copied().collect();
        assert_eq!(rejoined, items, "every item once, in order");
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact("mysql://root:secret@127.0.0.1/test"),
            "mysql://root:***@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://data/bank1.db"), "sqlite://data/bank1.db");
    }
}
