//! The transfer domain of txbank: money, account numbers, transaction numbers and the
//! states a transfer moves through. Pure values and rules; no I/O, no HTTP, no RocketMQ.
//!
//! Every type here parses its input and refuses bad values, so a value in hand is
//! always valid: a [`Money`] never has more than two decimals, an [`Amount`] is never
//! zero, a [`TxNo`] is never empty.

/// Gives each named type, which has `parse(&str)` and `Display`, its text form for
/// serde: read through `parse` (refusing what it refuses), written as displayed; with
/// `#[serde(try_from = "String", into = "String")]` on the type, a configuration file
/// holds it as a string and is checked as it is read.
macro_rules! text_form {
    ($($domain_type:ty),+) => {$(
        impl TryFrom<String> for $domain_type {
            type Error = crate::DomainError;

            fn try_from(text: String) -> Result<Self, crate::DomainError> {
                <$domain_type>::parse(&text)
            }
        }

        impl From<$domain_type> for String {
            fn from(value: $domain_type) -> String {
                value.to_string()
            }
        }
    )+};
}
pub(crate) use text_form;

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
