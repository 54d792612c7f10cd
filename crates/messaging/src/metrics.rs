//! Counters of what a bank's messaging did since it started, shared by the producer and
//! the consumer and rendered in Prometheus' text format for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a received message was set aside (never applied; RocketMQ redelivers it and in
/// the end moves it to the dead-letter queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAside {
    /// Not a transfer or settlement body this build can read.
    Unreadable,
    /// Missing or wrong signature.
    Unauthenticated,
    /// For another bank, or from a bank this one does not route to.
    Misrouted,
    /// A settlement report that does not apply (unknown transfer, wrong reporter).
    BadSettlement,
}

impl SetAside {
    /// The label value and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            SetAside::Unreadable => "unreadable",
            SetAside::Unauthenticated => "unauthenticated",
            SetAside::Misrouted => "misrouted",
            SetAside::BadSettlement => "bad_settlement",
        }
    }

    const ALL: [SetAside; 4] = [
        SetAside::Unreadable,
        SetAside::Unauthenticated,
        SetAside::Misrouted,
        SetAside::BadSettlement,
    ];
}

/// The counters; every field only grows.
#[derive(Debug, Default)]
pub struct Counters {
    debited: AtomicU64,
    rolled_back: AtomicU64,
    check_backs_commit: AtomicU64,
    check_backs_rollback: AtomicU64,
    check_backs_unknown: AtomicU64,
    credited: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    redelivery_requests: AtomicU64,
    settlements: AtomicU64,
    set_aside: [AtomicU64; 4],
}

/// What happened, as the counters count it.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A local transaction debited.
    Debited,
    /// A local transaction was refused or failed, and its message rolled back.
    RolledBack,
    /// A check-back answered COMMIT, ROLLBACK or UNKNOWN (`Some(true)`, `Some(false)`,
    /// `None`).
    CheckBack(Option<bool>),
    /// A transfer was credited.
    Credited,
    /// A transfer was refused for good (its money goes back).
    Refused,
    /// A redelivered message was absorbed by `de_duplication`.
    Duplicate,
    /// A message failed for a passing reason and will be delivered again.
    RedeliveryRequested,
    /// A settlement report moved a sent transfer to its final state.
    Settled,
    /// A message was set aside.
    SetAside(SetAside),
}

impl Counters {
    /// Counts one `event`.
    pub fn record(&self, event: Event) {
        let counter = match event {
            Event::Debited => &self.debited,
            Event::RolledBack => &self.rolled_back,
            Event::CheckBack(Some(true)) => &self.check_backs_commit,
            Event::CheckBack(Some(false)) => &self.check_backs_rollback,
            Event::CheckBack(None) => &self.check_backs_unknown,
            Event::Credited => &self.credited,
            Event::Refused => &self.refused,
            Event::Duplicate => &self.duplicates,
            Event::RedeliveryRequested => &self.redelivery_requests,
            Event::Settled => &self.settlements,
            Event::SetAside(reason) => &self.set_aside[reason as usize],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus' text exposition format, labelled with `bank`.
    pub fn render(&self, bank: &str) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{bank=\"{bank}\"{labels}}} {value}");
            }
        };
        family(
            "txbank_transfers_sent_total",
            "Local transactions of transfers this bank sent, by outcome.",
            &[
                (",outcome=\"debited\"", get(&self.debited)),
                (",outcome=\"rolled_back\"", get(&self.rolled_back)),
            ],
        );
        family(
            "txbank_check_backs_total",
            "Broker check-backs answered, by verdict.",
            &[
                (",verdict=\"commit\"", get(&self.check_backs_commit)),
                (",verdict=\"rollback\"", get(&self.check_backs_rollback)),
                (",verdict=\"unknown\"", get(&self.check_backs_unknown)),
            ],
        );
        family(
            "txbank_transfers_received_total",
            "Transfers this bank received, by outcome.",
            &[
                (",outcome=\"credited\"", get(&self.credited)),
                (",outcome=\"refused\"", get(&self.refused)),
            ],
        );
        family(
            "txbank_duplicates_absorbed_total",
            "Redelivered messages absorbed by de_duplication.",
            &[("", get(&self.duplicates))],
        );
        family(
            "txbank_redeliveries_requested_total",
            "Messages handed back for redelivery after a passing failure.",
            &[("", get(&self.redelivery_requests))],
        );
        family(
            "txbank_settlements_applied_total",
            "Settlement reports that moved a sent transfer to credited or returned.",
            &[("", get(&self.settlements))],
        );
        let set_aside: Vec<(String, u64)> = SetAside::ALL
            .iter()
            .map(|reason| {
                (
                    format!(",reason=\"{}\"", reason.as_str()),
                    get(&self.set_aside[*reason as usize]),
                )
            })
            .collect();
        let set_aside: Vec<(&str, u64)> = set_aside.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        family(
            "txbank_messages_set_aside_total",
            "Messages never applied (bound for the dead-letter queue), by reason; alert on any.",
            &set_aside,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_counter_with_its_labels() {
        let counters = Counters::default();
        counters.record(Event::Credited);
        counters.record(Event::Credited);
        counters.record(Event::SetAside(SetAside::Unauthenticated));
        counters.record(Event::CheckBack(Some(false)));
        let text = counters.render("bank2");
        assert!(
            text.contains("txbank_transfers_received_total{bank=\"bank2\",outcome=\"credited\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("txbank_messages_set_aside_total{bank=\"bank2\",reason=\"unauthenticated\"} 1\n"));
        assert!(text.contains("txbank_check_backs_total{bank=\"bank2\",verdict=\"rollback\"} 1\n"));
        assert!(text.contains("# TYPE txbank_duplicates_absorbed_total counter\n"));
    }
}
