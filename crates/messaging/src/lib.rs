//! Messaging for txbank: the RocketMQ side of reliable-message eventual consistency.
//!
//! - [`TransferProducer`] sends a transfer as a transactional (half) message, runs the
//!   local debit, commits or rolls the message back, and answers the broker's check-back
//!   from the database.
//! - [`CreditConsumer`] consumes a bank's inbound topic: it credits each transfer exactly
//!   once (or refuses it for good and queues its return), and applies settlement reports
//!   about the transfers this bank sent.
//! - [`Redriver`] sends again, from the sender's own books, the transfers whose
//!   settlement report is overdue (their message or its report was lost).
//! - [`SettlementRelay`] sends the settlement reports queued in the database's outbox.
//! - [`BrokerProbe`] tells whether the name server and the broker answer.
//! - [`TopicKeeper`] keeps a bank's topics on every master broker of the cluster.
//! - [`Tasks`] owns every task the parts spawn: a bank ends them all as it drains.
//! - [`Routes`] maps each bank to its inbound topic.
//! - [`metrics`] counts what the producer and consumer did, for `GET /metrics`.
//! - `reference` (feature `lab`) measures the broker's raw transactional-send rate, for
//!   the lab's benchmark.
//! - [`dead_letters`] lists a consumer group's dead-letter queue and replays from it.
//! - [`signing`] signs every message with the sending bank's key and checks it on receipt
//!   against the keys the receiver trusts.
//! - [`wire`] is the message body, wire-compatible with the seed's Java services.
//!
//! RocketMQ's callbacks (check-backs, consumed messages) are synchronous and run on the
//! client's blocking lane; they hand database work to the application's Tokio runtime
//! through a [`tokio::runtime::Handle`]. The local transaction is not one of them: the
//! sending task runs it.

mod client;
mod consumer;
pub mod dead_letters;
mod error;
mod group_commit;
pub mod metrics;
mod offsets;
mod probe;
mod producer;
mod publish;
mod redrive;
#[cfg(feature = "lab")]
pub mod reference;
mod relay;
mod routes;
pub mod signing;
mod tasks;
mod topics;
pub mod wire;

pub use client::{MqClient, MqSettings, DEFAULT_TRANSFERS_PER_MESSAGE};
pub use consumer::{Acceptance, CreditConsumer};
pub use error::MessagingError;
pub use probe::BrokerProbe;
pub use producer::{GroupOutcome, SendOutcome, TransferProducer};
pub use publish::publish;
pub use redrive::{Redriver, LONGEST_PAUSE as LONGEST_REDRIVE_PAUSE};
pub use relay::SettlementRelay;
pub use routes::Routes;
pub use signing::{BankKey, MessageKey, MessageSigner, MessageVerifier, TrustedKeys};
pub use tasks::Tasks;
pub use topics::{ensure_topic, ensure_topic_queues, topic_queues, TopicKeeper, DEFAULT_TOPIC_QUEUES};
