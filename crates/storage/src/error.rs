//! What can go wrong when reading or changing a bank's data.

use txbank_domain::{AccountNo, BankId, Money, TransferState, TxNo};

/// A storage failure: either a business refusal decided inside a database transaction
/// (nothing was changed) or a database problem (the caller may retry).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No account with this number exists in this bank.
    #[error("account {0} does not exist")]
    UnknownAccount(AccountNo),
    /// The account exists but is closed: it neither sends nor receives.
    #[error("account {0} is closed")]
    AccountClosed(AccountNo),
    /// An account with this number already exists.
    #[error("account {0} already exists")]
    AccountExists(AccountNo),
    /// No transfer with this transaction number was sent by this bank.
    #[error("transfer {0} is unknown")]
    UnknownTransfer(TxNo),
    /// A settlement report from a bank that is not the transfer's destination.
    #[error("bank {reporter} reported on transfer {tx_no}, which was not sent to it")]
    ForeignSettlement { tx_no: TxNo, reporter: BankId },
    /// A settlement report contradicts the transfer's final state.
    #[error("transfer {tx_no} is already {state}; a report of {reported} cannot apply")]
    SettlementConflict {
        tx_no: TxNo,
        state: TransferState,
        reported: TransferState,
    },
    /// The account's balance is lower than the amount to debit.
    #[error("account {account} has {balance}, less than the {requested} requested")]
    InsufficientFunds {
        account: AccountNo,
        balance: Money,
        requested: Money,
    },
    /// The credit would take the balance above the 99,999,999.99 a balance can hold.
    #[error("crediting {amount} would take account {account} above the maximum balance")]
    BalanceOverflow { account: AccountNo, amount: Money },
    /// The transfer was already recorded as rolled back; it can never be debited.
    #[error("transfer {0} was rolled back and cannot be debited")]
    RolledBack(TxNo),
    /// The idempotency key already names another transfer.
    #[error("idempotency key already used by transfer {existing}")]
    IdempotencyKeyTaken { existing: TxNo },
    /// A row holds a value the domain refuses (hand-edited or corrupted data).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database holds tables, none of them txbank's: not a bank's database.
    #[error("not a txbank database: it holds other tables ({})", tables.join(", "))]
    NotTxbank { tables: Vec<String> },
    /// No database at this place (a SQLite file that does not exist).
    #[error("no database at {0}")]
    NoDatabase(String),
    /// The database belongs to another bank.
    #[error("this database belongs to {found}, not {expected}")]
    OtherBank { expected: BankId, found: String },
    /// The database has migrations this binary does not know: a newer txbank made it.
    #[error("the database's schema is newer than this txbank (unknown migrations {unknown:?}): upgrade txbank")]
    SchemaTooNew { unknown: Vec<i64> },
    /// The database lacks migrations this binary needs.
    #[error("the database's schema is behind (pending migrations {pending:?}): run `txbank migrate run`")]
    SchemaBehind { pending: Vec<i64> },
    /// A migration started and did not finish; an operator must look before anything runs.
    #[error("migration {version} started and did not finish: repair the schema and its row in _sqlx_migrations")]
    MigrationFailed { version: i64 },
    /// Archiving up to this time would move transfers still in flight.
    #[error("{in_flight} transfer(s) sent before the archive date are still in flight (the oldest recorded at {oldest_ms} ms): archive before that")]
    ArchiveCutsInFlight { in_flight: i64, oldest_ms: i64 },
    /// As many transfers as allowed already wait for a broker to take their message.
    #[error("no broker answers, and {waiting} payments already wait for one (messaging.most_queued)")]
    QueueFull { waiting: u64 },
    /// Running the migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StorageError {
    /// True for database problems that may go away on retry (as opposed to refusals, and
    /// to statements the schema refuses, which fail the same way every time).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Database(error) => !error
                .as_database_error()
                .is_some_and(|error| !matches!(error.kind(), sqlx::error::ErrorKind::Other)),
            _ => false,
        }
    }
}
