//! The `Store`: one bank's database, its connection pool and what every statement
//! shares (engines, time, errors). The statements themselves live with what they
//! serve: `accounts`, `transfers`, `sending`, `receiving`, `settlement`, `ledger` and
//! `redrive`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyPool, Executor};
use txbank_domain::BankId;

use crate::StorageError;

/// The most a balance may hold, in cents (DECIMAL(10,2)).
pub(crate) const MAX_BALANCE_CENTS: i64 = 9_999_999_999;

/// Which SQL engine a [`Store`] talks to. The statements are written once, with `?`
/// placeholders (see [`Engine::sql`]); the migrations and a few statements differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite, by a `sqlite:` URL.
    Sqlite,
    /// MySQL or MariaDB, by a `mysql:` or `mariadb:` URL.
    MySql,
    /// PostgreSQL, by a `postgres:` or `postgresql:` URL.
    Postgres,
}

impl Engine {
    /// The engine a database URL names, if any.
    pub fn of(url: &str) -> Option<Engine> {
        if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Some(Engine::MySql)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Engine::Postgres)
        } else {
            None
        }
    }

    /// The engine a connection talks to.
    pub(crate) fn of_connection(conn: &sqlx::AnyConnection) -> Engine {
        match conn.backend_name() {
            "SQLite" => Engine::Sqlite,
            "PostgreSQL" => Engine::Postgres,
            _ => Engine::MySql,
        }
    }

    /// True where rows are locked, not the database: several connections write at
    /// once, and several instances of a bank share its outbox (`SKIP LOCKED`).
    pub(crate) fn locks_rows(self) -> bool {
        self != Engine::Sqlite
    }

    /// A statement as this engine takes it. Statements are written as SQLite and MySQL
    /// take them, with `?` placeholders and MySQL's `CAST(… AS SIGNED)`; PostgreSQL
    /// numbers its placeholders (`$1`, `$2`, …) and casts to `BIGINT`. Each text is
    /// rewritten once and kept for the life of the process: the texts are the crate's
    /// own, a bounded set (batch statements come in power-of-two shapes).
    pub(crate) fn sql(self, text: &str) -> &str {
        match self {
            Engine::Postgres => for_postgres(text),
            Engine::Sqlite | Engine::MySql => text,
        }
    }
}

/// `text` as PostgreSQL takes it (see [`Engine::sql`]), rewritten on first use and kept.
fn for_postgres(text: &str) -> &'static str {
    static REWRITTEN: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let rewritten = REWRITTEN.get_or_init(RwLock::default);
    if let Some(known) = rewritten.read().unwrap_or_else(|e| e.into_inner()).get(text) {
        return known;
    }
    let postgres: &'static str = Box::leak(numbered_placeholders(text).into_boxed_str());
    rewritten
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(text.to_string())
        .or_insert(postgres)
}

/// `text` with its `?` placeholders numbered (outside quoted literals) and MySQL's
/// `AS SIGNED` casts made `AS BIGINT`.
fn numbered_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut placeholder, mut quoted) = (0, false);
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                placeholder += 1;
                out.push('$');
                out.push_str(&placeholder.to_string());
            }
            _ => out.push(c),
        }
    }
    out.replace(" AS SIGNED)", " AS BIGINT)")
}

/// A statement of `sql` on `engine` (see [`Engine::sql`]).
pub(crate) fn query(engine: Engine, sql: &str) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(engine.sql(sql))
}

/// `insert`, an `INSERT` into a table with one unique key, made to insert nothing
/// where that key exists already on PostgreSQL (`ON CONFLICT DO NOTHING`), whose
/// transaction a failed statement would abort; elsewhere it fails alone, with a unique
/// violation, and the transaction goes on. Either way the caller reads the row it
/// inserted from what it answers.
pub(crate) fn insert_unless_present<'q>(
    engine: Engine,
    insert: &'static str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    match engine {
        Engine::Postgres => sqlx::query(for_postgres(&format!("{insert} ON CONFLICT DO NOTHING"))),
        Engine::Sqlite | Engine::MySql => sqlx::query(insert),
    }
}

/// A statement of `sql` on `engine` whose rows are read as `O` (see [`Engine::sql`]).
pub(crate) fn query_as<O>(
    engine: Engine,
    sql: &str,
) -> sqlx::query::QueryAs<'_, sqlx::Any, O, sqlx::any::AnyArguments<'_>>
where
    O: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
{
    sqlx::query_as(engine.sql(sql))
}

/// A bank's database: a connection pool plus the statements that read and change it.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// Where [`Store::begin_write`] takes its connection: on SQLite a pool of one, so
    /// that the writer's page cache stays warm; elsewhere `pool`.
    write_pool: AnyPool,
    pub(crate) engine: Engine,
    pub(crate) bank: BankId,
    /// Whose turn it is to write (SQLite only; see [`Store::write_turn`]).
    pub(crate) writer: Arc<Writer>,
}

/// SQLite's one writer in this process: whose turn it is, and how long turns were held
/// and waited for.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    turn: tokio::sync::Mutex<()>,
    held_micros: AtomicU64,
    waited_micros: AtomicU64,
}

/// A turn to write; the time it was held is counted when it ends.
pub(crate) struct WriteTurn<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    writer: &'a Writer,
    since: Instant,
}

impl Drop for WriteTurn<'_> {
    fn drop(&mut self) {
        self.writer
            .held_micros
            .fetch_add(micros(self.since.elapsed()), Ordering::Relaxed);
    }
}

/// How long a SQLite bank process's writers held the write turn and waited for it, since
/// it started ([`Store::writer_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterTime {
    /// Time some writer held the turn: SQLite writes one transaction at a time, so near
    /// a second a second, the writer is what bounds the bank, whatever its cores.
    pub held: Duration,
    /// Time writers waited for the turn, summed over the writers waiting.
    pub waited: Duration,
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) type StorageResult<T> = Result<T, StorageError>;

pub(crate) type Transaction = sqlx::Transaction<'static, sqlx::Any>;

pub(crate) fn parse<T>(value: Result<T, txbank_domain::DomainError>) -> StorageResult<T> {
    value.map_err(|error| StorageError::Corrupt(error.to_string()))
}

pub(crate) fn rows(result: &AnyQueryResult) -> u64 {
    result.rows_affected()
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// Creates the empty database `name` (letters, digits, `_`) on the MySQL/MariaDB or
/// PostgreSQL server at `server_url` (`mysql://user@host:3306`,
/// `postgres://user@host:5432`) and returns its URL.
pub async fn create_database(server_url: &str, name: &str) -> StorageResult<String> {
    on_server(server_url, "CREATE DATABASE", name, "").await?;
    Ok(format!("{}/{name}", server_url.trim_end_matches('/')))
}

/// Drops the database `name` from the server at `server_url`, if it exists (on
/// PostgreSQL, closing the connections still open to it).
pub async fn drop_database(server_url: &str, name: &str) -> StorageResult<()> {
    let force = match Engine::of(server_url) {
        Some(Engine::Postgres) => " WITH (FORCE)",
        _ => "",
    };
    on_server(server_url, "DROP DATABASE IF EXISTS", name, force).await
}

/// Runs `statement name options` on the server, `name` being a plain database name.
async fn on_server(server_url: &str, statement: &str, name: &str, options: &str) -> StorageResult<()> {
    use sqlx::Connection;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let refusal = format!("{name:?} is not a plain database name");
        return Err(StorageError::Database(sqlx::Error::Configuration(refusal.into())));
    }
    let sql = format!("{statement} {name}{options}");
    match Engine::of(server_url) {
        Some(Engine::MySql) => {
            let mut conn = sqlx::MySqlConnection::connect(&server_url.replacen("mariadb:", "mysql:", 1)).await?;
            sqlx::query(&sql).execute(&mut conn).await?;
            conn.close().await?;
        }
        Some(Engine::Postgres) => {
            let mut conn = sqlx::PgConnection::connect(server_url).await?;
            sqlx::query(&sql).execute(&mut conn).await?;
            conn.close().await?;
        }
        _ => {
            let refusal = format!("{:?} names no MySQL or PostgreSQL server", redact(server_url));
            return Err(StorageError::Database(sqlx::Error::Configuration(refusal.into())));
        }
    }
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
    /// Connects to bank `bank`'s database at `url` (`sqlite://path?mode=rwc`,
    /// `mysql://user:pass@host/db` or `postgres://user:pass@host/db`) with at most
    /// `max_connections` connections, and on SQLite one more, through which every write
    /// goes. SQLite runs in WAL mode with `synchronous=FULL`, so every commit is durable.
    pub async fn connect(bank: BankId, url: &str, max_connections: u32) -> StorageResult<Store> {
        sqlx::any::install_default_drivers();
        let Some(engine) = Engine::of(url) else {
            return Err(StorageError::Database(sqlx::Error::Configuration(
                format!(
                    "database URL must start with sqlite:, mysql: or postgres:, got {:?}",
                    redact(url)
                )
                .into(),
            )));
        };
        let url = url.replacen("mariadb:", "mysql:", 1);
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            // A SQLite connection lives in this process: a ping before each use is one
            // more trip to its thread inside the bank's one write turn, and the pool
            // pings every connection given back anyway. A MySQL or PostgreSQL server may
            // have dropped an idle connection.
            .test_before_acquire(engine != Engine::Sqlite)
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
            });
        let pool = options.clone().max_connections(max_connections).connect(&url).await?;
        // SQLite empties a connection's page cache whenever another connection wrote
        // since its last transaction: writes taken in turn by every connection of the
        // pool each began with a cold cache. One connection for all writes keeps its own.
        let write_pool = match engine {
            Engine::Sqlite => options.max_connections(1).connect(&url).await?,
            Engine::MySql | Engine::Postgres => pool.clone(),
        };
        Ok(Store {
            pool,
            write_pool,
            engine,
            bank,
            writer: Arc::default(),
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

    /// The most connections this store opens (on SQLite, besides its one for writes).
    pub fn max_connections(&self) -> usize {
        self.pool.options().get_max_connections() as usize
    }

    /// The engine this database runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The bank this database belongs to.
    pub fn bank(&self) -> &BankId {
        &self.bank
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), waiting in the busy handler while another process holds it:
    /// a deferred transaction that reads first gets `SQLITE_BUSY` at once, with no wait,
    /// when it comes to write while another process writes.
    pub(crate) async fn begin_write(&self) -> StorageResult<Transaction> {
        Ok(match self.engine {
            Engine::Sqlite => self.write_pool.begin_with("BEGIN IMMEDIATE").await?,
            Engine::MySql | Engine::Postgres => self.write_pool.begin().await?,
        })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.write_pool.close().await;
    }

    /// Waits for this process's turn to write. SQLite takes one writer at a time, and a
    /// writer that finds the database locked sleeps in SQLite's busy handler, backing off
    /// up to 100 ms a try; writers queued here are handed the lock at once instead. Other
    /// engines lock rows, not the database: no turn to wait for.
    pub(crate) async fn write_turn(&self) -> Option<WriteTurn<'_>> {
        match self.engine {
            Engine::Sqlite => {
                let asked = Instant::now();
                let turn = self.writer.turn.lock().await;
                let since = Instant::now();
                let waited = micros(since.duration_since(asked));
                self.writer.waited_micros.fetch_add(waited, Ordering::Relaxed);
                Some(WriteTurn {
                    _turn: turn,
                    writer: &self.writer,
                    since,
                })
            }
            Engine::MySql | Engine::Postgres => None,
        }
    }

    /// How long this process's writers held SQLite's write turn and waited for it, since
    /// the store was connected; `None` on MySQL and PostgreSQL, which lock rows, not the
    /// database.
    pub fn writer_time(&self) -> Option<WriterTime> {
        (self.engine == Engine::Sqlite).then(|| WriterTime {
            held: Duration::from_micros(self.writer.held_micros.load(Ordering::Relaxed)),
            waited: Duration::from_micros(self.writer.waited_micros.load(Ordering::Relaxed)),
        })
    }
}

/// The lab's statements (feature `lab`), which no bank runs.
#[cfg(feature = "lab")]
mod lab {
    use std::time::Duration;

    use sqlx::Executor;
    use txbank_domain::{AccountNo, TxNo};

    use super::{now_ms, query, StorageResult, Store};

    impl Store {
        /// The benchmark's reference transaction, the least a transfer costs a database: a
        /// `de_duplication` insert and a one-row balance update, committed together. For a
        /// scratch database only: it adds one cent to `account`.
        pub async fn reference_commit(&self, tx_no: &TxNo, account: &AccountNo) -> StorageResult<()> {
            let _turn = self.write_turn().await;
            let mut tx = self.begin_write().await?;
            query(
                self.engine,
                "INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)",
            )
            .bind(tx_no.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            query(
                self.engine,
                "UPDATE account_info SET account_balance_cents = account_balance_cents + 1 WHERE account_no = ?",
            )
            .bind(account.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        /// Holds the database's write lock for `length`, as another process stalled inside
        /// a write transaction would (SQLite; for `txbank-lab chaos`'s database outages): a
        /// bank's writes wait meanwhile, and fail once they waited its busy timeout.
        pub async fn hold_write_lock(&self, length: Duration) -> StorageResult<()> {
            let mut conn = self.pool.acquire().await?;
            conn.execute("BEGIN IMMEDIATE").await?;
            tokio::time::sleep(length).await;
            conn.execute("ROLLBACK").await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{numbered_placeholders, redact, Store};
    use sqlx::Executor;
    use txbank_domain::BankId;

    /// SQLite empties a connection's page cache whenever another connection wrote since its
    /// last transaction, so every write goes through one connection, whatever connections
    /// the readers hold or left idle. A temporary table lives in one connection only.
    #[tokio::test]
    async fn on_sqlite_every_write_goes_through_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
        let store = Store::connect(BankId::parse("bank1").unwrap(), &url, 4).await.unwrap();
        let mut readers = Vec::new();
        for _ in 0..4 {
            readers.push(store.pool.acquire().await.unwrap());
        }
        drop(readers);
        for _ in 0..4 {
            let mut tx = store.begin_write().await.unwrap();
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS written (n INTEGER)")
                .await
                .unwrap();
            tx.execute("INSERT INTO written VALUES (1)").await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = store.begin_write().await.unwrap();
        let (writes,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM written")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(writes, 4);
    }

    #[test]
    fn postgres_statements_number_their_placeholders_outside_quotes() {
        assert_eq!(
            numbered_placeholders("UPDATE t SET a = ?, b = '?' WHERE c IN (?, ?)"),
            "UPDATE t SET a = $1, b = '?' WHERE c IN ($2, $3)"
        );
        assert_eq!(
            numbered_placeholders("SELECT CAST(SUM(x) AS SIGNED) FROM t"),
            "SELECT CAST(SUM(x) AS BIGINT) FROM t"
        );
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
