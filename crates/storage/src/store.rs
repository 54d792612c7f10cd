//! The `Store`: one bank's database, its connection pool and what every statement
//! shares (row shapes, time, errors). The statements themselves live with what they
//! serve: `accounts`, `sending`, `receiving`, `settlement`, `ledger` and `redrive`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Executor};
use txbank_domain::{AccountNo, Amount, BankId, Transfer, TransferState, TxNo};

use crate::sending::TransferRecord;
use crate::StorageError;

/// The most a balance may hold, in cents (DECIMAL(10,2)).
pub(crate) const MAX_BALANCE_CENTS: i64 = 9_999_999_999;

/// Which SQL engine a [`Store`] talks to; only the migrations differ between them.
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
    pub(crate) writes: Arc<tokio::sync::Mutex<()>>,
}

pub(crate) type StorageResult<T> = Result<T, StorageError>;

pub(crate) type Transaction = sqlx::Transaction<'static, sqlx::Any>;

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
pub(crate) async fn on_mysql_server(server_url: &str, statement: &str, name: &str) -> StorageResult<()> {
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

/// The file a `sqlite:` URL names, without its options.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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

    /// Connects like [`Store::connect`] to a database that must exist already: a missing
    /// SQLite file is refused, not created. For commands that read or change a bank's
    /// existing data (`txbank migrate`, `txbank archive`).
    pub async fn connect_existing(bank: BankId, url: &str, max_connections: u32) -> StorageResult<Store> {
        let Some(path) = sqlite_file(url) else {
            return Self::connect(bank, url, max_connections).await;
        };
        if !std::path::Path::new(path).is_file() {
            return Err(StorageError::NoDatabase(redact(url)));
        }
        Self::connect(bank, &format!("sqlite://{path}?mode=rw"), max_connections).await
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The engine this database runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The bank this database belongs to.
    pub fn bank(&self) -> &BankId {
        &self.bank
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact("mysql://root:secret@127.0.0.1/test"),
            "mysql://root:***@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://data/bank1.db"), "sqlite://data/bank1.db");
    }
}
