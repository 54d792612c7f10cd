//! The transfer domain of txbank: money, account numbers, transaction numbers and the
//! states a transfer moves through. Pure values and rules; no I/O, no HTTP, no RocketMQ.
//!
//! Every type here parses its input and refuses bad values, so a value in hand is
//! always valid: a [`Money`] never has more than two decimals, an [`Amount`] is never
//! zero, a [`TxNo`] is never empty.

mod account;
pub mod audit;
mod error;
mod money;
pub mod retention;
pub mod secret;
mod transfer;
mod tx_no;

pub use account::{AccountName, AccountNo, BankId};
pub use error::DomainError;
pub use money::{Amount, Money};
pub use transfer::{Party, Settlement, Transfer, TransferEvent, TransferState};
pub use tx_no::{IdempotencyKey, TxNo};
