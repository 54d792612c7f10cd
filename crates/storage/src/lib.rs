//! Storage for one bank: every SQL statement txbank runs lives in this crate.
//!
//! One code path serves SQLite (the embedded default), MySQL 8 / MariaDB and PostgreSQL,
//! through sqlx's `Any` driver. Each public function is one statement or one database
//! transaction, named for what it does (`debit_and_record`, `credit_once`, ...).
//! Money is stored as whole cents in `BIGINT` columns, so arithmetic in SQL is exact on
//! every engine.

mod accounts;
mod archive;
mod error;
pub mod faults;
mod ledger;
mod migrations;
#[cfg(feature = "lab")]
mod preload;
mod receiving;
mod redrive;
mod script;
mod sending;
mod settlement;
mod store;
mod transfers;
mod unsent;

pub use accounts::AccountRecord;
pub use archive::ArchiveRun;
pub use error::StorageError;
pub use migrations::{SchemaStatus, SchemaVersion};
#[cfg(feature = "lab")]
pub use preload::{fill_books, PastTransfer, Preload};
pub use receiving::{CreditOutcome, Delivery, DeliveryOutcome};
pub use redrive::DueRedrive;
pub use sending::DebitOutcome;
pub use settlement::{HeldReturn, PendingSettlement, SettlementOutcome};
pub use store::{create_database, drop_database, redact, Engine, Store, WriterTime};
pub use transfers::TransferRecord;
