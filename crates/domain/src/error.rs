//! Why a value was refused.

/// A value that does not satisfy the domain's rules. Each variant names the offending
/// input and what was expected, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The text is not a decimal amount with at most two decimals.
    #[error("amount {input:?} is not a decimal number with at most 2 decimals (e.g. \"100\" or \"99.95\")")]
    MalformedAmount { input: String },
    /// The amount is zero or negative where a positive amount is required.
    #[error("amount {input:?} must be greater than zero")]
    NonPositiveAmount { input: String },
    /// The amount does not fit DECIMAL(10,2).
    #[error("amount {input:?} exceeds the maximum of 99999999.99")]
    AmountOutOfRange { input: String },
    /// An account number that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("account number {input:?} must be 1 to 64 characters of letters, digits, '-' or '_'")]
    InvalidAccountNo { input: String },
    /// A bank identifier that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("bank {input:?} must be 1 to 32 characters of letters, digits, '-' or '_'")]
    InvalidBankId { input: String },
    /// An account holder's name that is empty or too long.
    #[error("account name must be 1 to 100 characters without control characters")]
    InvalidAccountName,
    /// A transaction number that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("transaction number {input:?} must be 1 to 64 characters of letters, digits, '-' or '_'")]
    InvalidTxNo { input: String },
    /// An idempotency key that is empty, too long or has control characters.
    #[error("idempotency key must be 1 to 128 printable ASCII characters")]
    InvalidIdempotencyKey,
    /// A transfer whose source and destination are the same account.
    #[error("source and destination are the same account {account_no}")]
    SameAccount { account_no: String },
}
