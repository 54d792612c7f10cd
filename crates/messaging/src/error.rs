//! What can go wrong on the RocketMQ side.

/// A messaging failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MessagingError {
    /// The RocketMQ client refused or failed an operation (broker unreachable, timeout...).
    #[error("RocketMQ {operation} failed: {message}")]
    Client { operation: &'static str, message: String },
    /// No topic is configured for this bank.
    #[error("no route to bank {0}: it is not among the configured banks")]
    NoRoute(txbank_domain::BankId),
    /// As many transfers as may wait for a message wait already; this one was not taken.
    #[error("{0} transfers wait for a message already: nothing moved, try again")]
    Overloaded(usize),
    /// The client runtime could not be built.
    #[error("RocketMQ client runtime: {0}")]
    Runtime(String),
}

impl MessagingError {
    pub(crate) fn client(operation: &'static str, error: impl std::fmt::Display) -> Self {
        MessagingError::Client {
            operation,
            message: error.to_string(),
        }
    }
}
