//! Messaging for txbank: the RocketMQ side of reliable-message eventual consistency.
//!
//! - [`TransferProducer`] sends a transfer as a transactional (half) message and runs the
//!   local debit inside RocketMQ's local-transaction callback, then answers the broker's
//!   check-back from the database.
//! - [`CreditConsumer`] consumes transfers and credits each exactly once.
//! - [`wire`] is the message body, wire-compatible with the seed's Java services.
//!
//! RocketMQ's callbacks are synchronous and run on the client's blocking lane; they hand
//! database work to the application's Tokio runtime through a [`tokio::runtime::Handle`].

mod client;
mod consumer;
mod error;
mod producer;
mod publish;
mod topics;
pub mod wire;

pub use client::{MqClient, MqSettings};
pub use consumer::CreditConsumer;
pub use error::MessagingError;
pub use producer::{SendOutcome, TransferProducer};
pub use publish::publish;
pub use topics::ensure_topic;
