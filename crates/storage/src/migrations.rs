//! The schema's versions: sqlx migrations embedded from `migrations/sqlite`,
//! `migrations/mysql` and `migrations/postgres`, one folder per engine, recorded in each database's
//! `_sqlx_migrations` table. The first is the schema txbank created before it had
//! versions (every table only when missing), so an older database upgrades in place.
//!
//! A database also records which bank it belongs to (`bank_identity`), so that no
//! command works on another bank's database by mistake.

use sqlx::migrate::Migrator;

use crate::store::{is_unique_violation, now_ms, query, query_as, Engine, StorageResult, Store};
use crate::StorageError;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static MYSQL: Migrator = sqlx::migrate!("migrations/mysql");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The table sqlx records applied migrations in.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// A migration, by version and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersion {
    /// Its number; migrations apply in this order.
    pub version: i64,
    /// What it does.
    pub description: String,
}

/// Where a database's schema stands against the migrations this binary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations recorded as applied, oldest first.
    pub applied: Vec<SchemaVersion>,
    /// Migrations this binary knows that are not applied yet, oldest first.
    pub pending: Vec<SchemaVersion>,
    /// Applied migrations this binary does not know: the database is newer than it.
    pub unknown: Vec<i64>,
    /// A migration that started and did not finish (MySQL runs DDL outside transactions).
    pub failed: Option<i64>,
    /// The bank the database belongs to, once one claimed it.
    pub owner: Option<String>,
    /// True when the tables are txbank's from before versioned migrations.
    pub unversioned: bool,
}

impl SchemaStatus {
    /// True when nothing is pending and nothing is unknown.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty() && self.failed.is_none()
    }
}

impl Store {
    fn migrator(&self) -> &'static Migrator {
        match self.engine {
            Engine::Sqlite => &SQLITE,
            Engine::MySql => &MYSQL,
            Engine::Postgres => &POSTGRES,
        }
    }

    /// The tables of this database.
    async fn tables(&self) -> StorageResult<Vec<String>> {
        let sql = match self.engine {
            Engine::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            Engine::MySql => {
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()"
            }
            Engine::Postgres => "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = current_schema()",
        };
        let names: Vec<(String,)> = query_as(self.engine, sql).fetch_all(&self.pool).await?;
        Ok(names.into_iter().map(|(name,)| name).collect())
    }

    /// Where the schema stands, read without changing anything. Refuses a database that
    /// holds tables but none of txbank's.
    pub async fn schema_status(&self) -> StorageResult<SchemaStatus> {
        let tables = self.tables().await?;
        let has = |name: &str| tables.iter().any(|table| table == name);
        if !tables.is_empty() && !has(MIGRATIONS_TABLE) && !has("account_info") {
            return Err(StorageError::NotTxbank { tables });
        }
        let text = match self.engine {
            Engine::Postgres => "TEXT",
            Engine::Sqlite | Engine::MySql => "CHAR(255)",
        };
        let recorded: Vec<(i64, String, i64)> = if has(MIGRATIONS_TABLE) {
            query_as(self.engine, &format!(
                "SELECT version, CAST(description AS {text}), CASE WHEN success THEN 1 ELSE 0 END FROM {MIGRATIONS_TABLE} ORDER BY version"
            ))
            .fetch_all(&self.pool)
            .await?
        } else {
            Vec::new()
        };
        let owner: Option<(String,)> = if has("bank_identity") {
            query_as(self.engine, "SELECT bank FROM bank_identity WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
        } else {
            None
        };
        let known = self.migrator();
        let is_applied = |version: i64| {
            recorded
                .iter()
                .any(|(applied, _, success)| *applied == version && *success != 0)
        };
        Ok(SchemaStatus {
            applied: recorded
                .iter()
                .filter(|(_, _, success)| *success != 0)
                .map(|(version, description, _)| SchemaVersion {
                    version: *version,
                    description: description.clone(),
                })
                .collect(),
            pending: known
                .iter()
                .filter(|migration| !is_applied(migration.version))
                .map(|migration| SchemaVersion {
                    version: migration.version,
                    description: migration.description.to_string(),
                })
                .collect(),
            unknown: recorded
                .iter()
                .map(|(version, _, _)| *version)
                .filter(|version| !known.version_exists(*version))
                .collect(),
            failed: recorded
                .iter()
                .find(|(_, _, success)| *success == 0)
                .map(|(version, _, _)| *version),
            owner: owner.map(|(bank,)| bank),
            unversioned: has("account_info") && !has(MIGRATIONS_TABLE),
        })
    }

    /// Brings the schema up to date and claims the database for this store's bank;
    /// answers the migrations applied now. Refuses, changing nothing, a database that
    /// belongs to another bank, holds other tables than txbank's, or is newer than this
    /// binary.
    pub async fn migrate(&self) -> StorageResult<Vec<SchemaVersion>> {
        let status = self.schema_status().await?;
        self.refuse_unusable(&status)?;
        if let Err(error) = self.migrator().run(&self.pool).await {
            // Another instance of the bank may have applied them at the same moment
            // (SQLite has no lock for the migrator to take; MySQL's serialises them).
            if !self.schema_status().await?.is_current() {
                return Err(error.into());
            }
        }
        self.claim().await?;
        Ok(status.pending)
    }

    /// Checks that the schema is up to date, for banks whose operators migrate
    /// separately, and claims the database for this store's bank.
    pub async fn require_current_schema(&self) -> StorageResult<()> {
        let status = self.schema_status().await?;
        self.refuse_unusable(&status)?;
        if !status.pending.is_empty() {
            return Err(StorageError::SchemaBehind {
                pending: status.pending.iter().map(|migration| migration.version).collect(),
            });
        }
        self.claim().await
    }

    /// Refuses a schema newer than this binary, a half-applied migration, and another
    /// bank's database.
    pub fn refuse_unusable(&self, status: &SchemaStatus) -> StorageResult<()> {
        if !status.unknown.is_empty() {
            return Err(StorageError::SchemaTooNew {
                unknown: status.unknown.clone(),
            });
        }
        if let Some(version) = status.failed {
            return Err(StorageError::MigrationFailed { version });
        }
        match &status.owner {
            Some(owner) if owner != self.bank.as_str() => Err(StorageError::OtherBank {
                expected: self.bank.clone(),
                found: owner.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Records that the database belongs to this store's bank, unless it is recorded
    /// already; refuses another bank's database.
    async fn claim(&self) -> StorageResult<()> {
        let claimed = query(
            self.engine,
            "INSERT INTO bank_identity (id, bank, claimed_at) VALUES (1, ?, ?)",
        )
        .bind(self.bank.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match claimed {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => {
                let status = self.schema_status().await?;
                self.refuse_unusable(&status)
            }
            Err(error) => Err(error.into()),
        }
    }
}
