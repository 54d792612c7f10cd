//! Routing: which topic reaches which bank. Each bank consumes one inbound topic; a
//! transfer goes to its destination bank's topic, a settlement report to its sender's.

use std::collections::BTreeMap;

use txbank_domain::BankId;

use crate::MessagingError;

/// The inbound topic of every bank this bank talks to, itself included.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    topics: BTreeMap<BankId, String>,
}

impl Routes {
    /// Routes from `(bank, inbound topic)` pairs.
    pub fn new(topics: impl IntoIterator<Item = (BankId, String)>) -> Routes {
        Routes {
            topics: topics.into_iter().collect(),
        }
    }

    /// The inbound topic of `bank`.
    pub fn topic(&self, bank: &BankId) -> Result<&str, MessagingError> {
        self.topics
            .get(bank)
            .map(String::as_str)
            .ok_or_else(|| MessagingError::NoRoute(bank.clone()))
    }

    /// True when messages can reach `bank`.
    pub fn reaches(&self, bank: &BankId) -> bool {
        self.topics.contains_key(bank)
    }

    /// Every topic routed to.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.values().map(String::as_str)
    }
}
