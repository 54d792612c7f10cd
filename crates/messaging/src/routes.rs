//! Routing: which topic reaches which bank. Each bank consumes one inbound topic; a
//! transfer goes to its destination bank's topic, a settlement report to its sender's.

use std::collections::{BTreeMap, BTreeSet};

use txbank_domain::BankId;

use crate::MessagingError;

/// The inbound topic of every bank this bank talks to, itself included.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    topics: BTreeMap<BankId, String>,
    /// Banks that never send settlement reports (the seed's Java bank2): their
    /// transfers are never re-driven, since no report would ever stop it.
    silent: BTreeSet<BankId>,
    /// Banks payments to which are refused, not queued, while no broker answers.
    refusing: BTreeSet<BankId>,
}

impl Routes {
    /// Routes from `(bank, inbound topic)` pairs.
    pub fn new(topics: impl IntoIterator<Item = (BankId, String)>) -> Routes {
        Routes {
            topics: topics.into_iter().collect(),
            silent: BTreeSet::new(),
            refusing: BTreeSet::new(),
        }
    }

    /// These routes, knowing that `banks` never send settlement reports.
    pub fn with_silent(mut self, banks: impl IntoIterator<Item = BankId>) -> Routes {
        self.silent.extend(banks);
        self
    }

    /// These routes, with payments to `banks` refused, not queued, while no broker
    /// answers.
    pub fn refusing_when_broker_away(mut self, banks: impl IntoIterator<Item = BankId>) -> Routes {
        self.refusing.extend(banks);
        self
    }

    /// True when a payment to `bank` is to be debited and queued while no broker
    /// stores its half message.
    pub fn queues_when_broker_away(&self, bank: &BankId) -> bool {
        self.reaches(bank) && !self.refusing.contains(bank)
    }

    /// The banks that send settlement reports, whose unsettled transfers are re-driven.
    pub fn reporting(&self) -> Vec<BankId> {
        self.topics
            .keys()
            .filter(|bank| !self.silent.contains(*bank))
            .cloned()
            .collect()
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

    /// Every bank routed to.
    pub fn banks(&self) -> Vec<BankId> {
        self.topics.keys().cloned().collect()
    }

    /// Every topic routed to.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.values().map(String::as_str)
    }
}
