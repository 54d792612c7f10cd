//! Counters and latency histograms of what a bank's messaging did since it started,
//! shared by the producer, the consumer and the relay, and rendered in Prometheus' text
//! format for `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// A transfer older than the archive horizon that no table of the bank holds.
    PastArchiveHorizon,
    /// Applying it fails the same way every time (the schema refuses it).
    Failed,
}

impl SetAside {
    /// The label value and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            SetAside::Unreadable => "unreadable",
            SetAside::Unauthenticated => "unauthenticated",
            SetAside::Misrouted => "misrouted",
            SetAside::BadSettlement => "bad_settlement",
            SetAside::PastArchiveHorizon => "past_archive_horizon",
            SetAside::Failed => "failed",
        }
    }

    const ALL: [SetAside; 6] = [
        SetAside::Unreadable,
        SetAside::Unauthenticated,
        SetAside::Misrouted,
        SetAside::BadSettlement,
        SetAside::PastArchiveHorizon,
        SetAside::Failed,
    ];
}

/// A database call on the hot path, timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCall {
    /// The local transaction: debit and record.
    Debit,
    /// Crediting a received transfer: de-duplicate, credit, queue the report (the wait
    /// for its group commit included).
    Credit,
    /// Applying a settlement message's reports (the wait for their group commit included).
    Settle,
    /// Answering a check-back.
    CheckBack,
}

impl DbCall {
    const ALL: [DbCall; 4] = [DbCall::Debit, DbCall::Credit, DbCall::Settle, DbCall::CheckBack];

    fn as_str(self) -> &'static str {
        match self {
            DbCall::Debit => "debit",
            DbCall::Credit => "credit",
            DbCall::Settle => "settle",
            DbCall::CheckBack => "check_back",
        }
    }
}

/// A broker call, timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerCall {
    /// A transactional send without its local transaction: the half message and the
    /// commit or rollback, one per message whatever the number of transfers it carries.
    TransactionalSend,
    /// A settlement report's plain send.
    SettlementSend,
}

impl BrokerCall {
    const ALL: [BrokerCall; 2] = [BrokerCall::TransactionalSend, BrokerCall::SettlementSend];

    fn as_str(self) -> &'static str {
        match self {
            BrokerCall::TransactionalSend => "transactional_send",
            BrokerCall::SettlementSend => "settlement_send",
        }
    }
}

/// A group commit's queue: requests its tasks apply in database transactions, each for
/// all that waits when it starts (`group_commit.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitQueue {
    /// Lone transfers' local transactions.
    Debits,
    /// Messages' local transactions, each message's transfers all or none.
    MessageDebits,
    /// Received transfers and settlement reports.
    Deliveries,
}

impl CommitQueue {
    const ALL: [CommitQueue; 3] = [CommitQueue::Debits, CommitQueue::MessageDebits, CommitQueue::Deliveries];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitQueue::Debits => "debits",
            CommitQueue::MessageDebits => "message_debits",
            CommitQueue::Deliveries => "deliveries",
        }
    }
}

/// What one group commit queue did: batches applied, requests in them, and the time its
/// tasks spent applying them.
#[derive(Debug, Default)]
struct CommitWork {
    batches: AtomicU64,
    requests: AtomicU64,
    busy_micros: AtomicU64,
}

/// What a latency histogram measures.
#[derive(Debug, Clone, Copy)]
pub enum Timing {
    /// From the sender's half message to this bank's credit commit (clocks of two
    /// machines when the banks run apart).
    DebitToCredit,
    /// A database call.
    Database(DbCall),
    /// A broker call.
    Broker(BrokerCall),
}

/// The upper bounds, in seconds, of every histogram's buckets.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A Prometheus histogram of durations over [`BUCKETS`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros(elapsed), Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .zip(&self.buckets)
        {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cumulative}"
        );
    }
}

/// `duration` in whole microseconds, as the counters keep time.
fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Labelled values as a counter family takes them.
fn samples(series: &[(String, u64)]) -> Vec<(&str, u64)> {
    series.iter().map(|(labels, value)| (labels.as_str(), *value)).collect()
}

/// A histogram family to render: its name, its help, and each series' extra labels.
type HistogramFamily<'a> = (&'static str, &'static str, Vec<(String, &'a Histogram)>);

/// The counters and histograms; every figure only grows.
#[derive(Debug, Default)]
pub struct Counters {
    debited: AtomicU64,
    rolled_back: AtomicU64,
    half_messages_resent: AtomicU64,
    check_backs_commit: AtomicU64,
    check_backs_rollback: AtomicU64,
    check_backs_unknown: AtomicU64,
    credited: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    reports_repeated: AtomicU64,
    redriven: AtomicU64,
    offsets_rewound: AtomicU64,
    redelivery_requests: AtomicU64,
    settlements: AtomicU64,
    set_aside: [AtomicU64; SetAside::ALL.len()],
    debit_to_credit: Histogram,
    db_calls: [Histogram; DbCall::ALL.len()],
    broker_calls: [Histogram; BrokerCall::ALL.len()],
    commits: [CommitWork; CommitQueue::ALL.len()],
}

/// What happened, as the counters count it.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A local transaction debited.
    Debited,
    /// A local transaction was refused or failed, and its message rolled back.
    RolledBack,
    /// A half message the broker did not store was sent again.
    HalfMessageResent,
    /// A check-back answered COMMIT, ROLLBACK or UNKNOWN (`Some(true)`, `Some(false)`,
    /// `None`).
    CheckBack(Option<bool>),
    /// A transfer was credited.
    Credited,
    /// A transfer was refused for good (its money goes back).
    Refused,
    /// A redelivered message was absorbed by `de_duplication`.
    Duplicate,
    /// A transfer received before was received again, and its settlement report queued
    /// again from what this bank recorded.
    ReportRepeated,
    /// An unsettled transfer's message was sent again from the sender's books.
    Redriven,
    /// A consumer offset past the end of its queue (the broker lost its store) was
    /// rewound to the queue's start.
    OffsetRewound,
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
            Event::HalfMessageResent => &self.half_messages_resent,
            Event::CheckBack(Some(true)) => &self.check_backs_commit,
            Event::CheckBack(Some(false)) => &self.check_backs_rollback,
            Event::CheckBack(None) => &self.check_backs_unknown,
            Event::Credited => &self.credited,
            Event::Refused => &self.refused,
            Event::Duplicate => &self.duplicates,
            Event::ReportRepeated => &self.reports_repeated,
            Event::Redriven => &self.redriven,
            Event::OffsetRewound => &self.offsets_rewound,
            Event::RedeliveryRequested => &self.redelivery_requests,
            Event::Settled => &self.settlements,
            Event::SetAside(reason) => &self.set_aside[reason as usize],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one observation of `elapsed` to the histogram of `timing`.
    pub fn observe(&self, timing: Timing, elapsed: Duration) {
        let histogram = match timing {
            Timing::DebitToCredit => &self.debit_to_credit,
            Timing::Database(call) => &self.db_calls[call as usize],
            Timing::Broker(call) => &self.broker_calls[call as usize],
        };
        histogram.observe(elapsed);
    }

    /// Counts a batch of `requests` that a task of `queue` applied in `busy`.
    pub fn committed(&self, queue: CommitQueue, requests: usize, busy: Duration) {
        let work = &self.commits[queue as usize];
        work.batches.fetch_add(1, Ordering::Relaxed);
        work.requests.fetch_add(requests as u64, Ordering::Relaxed);
        work.busy_micros.fetch_add(micros(busy), Ordering::Relaxed);
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
            "txbank_half_messages_resent_total",
            "Half messages sent again after the broker did not store them (busy, paused, unreachable).",
            &[("", get(&self.half_messages_resent))],
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
            "txbank_reports_repeated_total",
            "Settlement reports queued again because a transfer applied before was received again.",
            &[("", get(&self.reports_repeated))],
        );
        family(
            "txbank_transfers_redriven_total",
            "Unsettled transfers whose message this bank sent again from its own books.",
            &[("", get(&self.redriven))],
        );
        family(
            "txbank_consumer_offsets_rewound_total",
            "Queues whose committed offset lay past their end (the broker lost its store), consumed again from their start.",
            &[("", get(&self.offsets_rewound))],
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
        family(
            "txbank_messages_set_aside_total",
            "Messages never applied (bound for the dead-letter queue), by reason; alert on any.",
            &samples(&set_aside),
        );
        let per_queue = |value: fn(&CommitWork) -> u64| -> Vec<(String, u64)> {
            CommitQueue::ALL
                .iter()
                .map(|queue| {
                    let labels = format!(",queue=\"{}\"", queue.as_str());
                    (labels, value(&self.commits[*queue as usize]))
                })
                .collect()
        };
        let batches = per_queue(|work| work.batches.load(Ordering::Relaxed));
        let requests = per_queue(|work| work.requests.load(Ordering::Relaxed));
        family(
            "txbank_group_commit_batches_total",
            "Database transactions each group commit queue applied.",
            &samples(&batches),
        );
        family(
            "txbank_group_commit_requests_total",
            "Requests (transfers, messages, deliveries) those transactions applied.",
            &samples(&requests),
        );
        let _ = writeln!(
            out,
            "# HELP txbank_group_commit_busy_seconds_total Time each group commit queue's tasks spent applying, \
             summed: near a second a second per task, the queue is what holds the bank back.\n\
             # TYPE txbank_group_commit_busy_seconds_total counter"
        );
        for (labels, micros) in per_queue(|work| work.busy_micros.load(Ordering::Relaxed)) {
            let seconds = micros as f64 / 1e6;
            let _ = writeln!(
                out,
                "txbank_group_commit_busy_seconds_total{{bank=\"{bank}\"{labels}}} {seconds}"
            );
        }
        let histograms: [HistogramFamily; 3] = [
            (
                "txbank_debit_to_credit_seconds",
                "From the sender's half message to this bank's credit commit.",
                vec![(String::new(), &self.debit_to_credit)],
            ),
            (
                "txbank_database_call_seconds",
                "Database transactions on the hot path, by operation.",
                DbCall::ALL
                    .iter()
                    .map(|call| {
                        (
                            format!(",operation=\"{}\"", call.as_str()),
                            &self.db_calls[*call as usize],
                        )
                    })
                    .collect(),
            ),
            (
                "txbank_broker_call_seconds",
                "Broker calls, by operation (a transactional send without its local transaction).",
                BrokerCall::ALL
                    .iter()
                    .map(|call| {
                        (
                            format!(",operation=\"{}\"", call.as_str()),
                            &self.broker_calls[*call as usize],
                        )
                    })
                    .collect(),
            ),
        ];
        for (name, help, series) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, histogram) in series {
                histogram.render(&mut out, name, &format!("bank=\"{bank}\"{labels}"));
            }
        }
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

    #[test]
    fn group_commit_queues_count_their_transactions_requests_and_busy_time() {
        let counters = Counters::default();
        counters.committed(CommitQueue::Deliveries, 3, Duration::from_millis(2));
        counters.committed(CommitQueue::Deliveries, 5, Duration::from_micros(3500));
        let text = counters.render("bank2");
        for line in [
            "txbank_group_commit_batches_total{bank=\"bank2\",queue=\"deliveries\"} 2",
            "txbank_group_commit_requests_total{bank=\"bank2\",queue=\"deliveries\"} 8",
            "txbank_group_commit_busy_seconds_total{bank=\"bank2\",queue=\"deliveries\"} 0.0055",
            "txbank_group_commit_batches_total{bank=\"bank2\",queue=\"message_debits\"} 0",
            "# TYPE txbank_group_commit_busy_seconds_total counter",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn histograms_count_each_observation_in_its_bucket_and_all_above() {
        let counters = Counters::default();
        counters.observe(Timing::DebitToCredit, Duration::from_millis(3));
        counters.observe(Timing::DebitToCredit, Duration::from_millis(40));
        counters.observe(Timing::DebitToCredit, Duration::from_secs(100));
        counters.observe(Timing::Database(DbCall::Credit), Duration::from_micros(700));
        let text = counters.render("bank2");
        for line in [
            "txbank_debit_to_credit_seconds_bucket{bank=\"bank2\",le=\"0.0025\"} 0",
            "txbank_debit_to_credit_seconds_bucket{bank=\"bank2\",le=\"0.005\"} 1",
            "txbank_debit_to_credit_seconds_bucket{bank=\"bank2\",le=\"0.05\"} 2",
            "txbank_debit_to_credit_seconds_bucket{bank=\"bank2\",le=\"60\"} 2",
            "txbank_debit_to_credit_seconds_bucket{bank=\"bank2\",le=\"+Inf\"} 3",
            "txbank_debit_to_credit_seconds_sum{bank=\"bank2\"} 100.043",
            "txbank_debit_to_credit_seconds_count{bank=\"bank2\"} 3",
            "txbank_database_call_seconds_bucket{bank=\"bank2\",operation=\"credit\",le=\"0.001\"} 1",
            "txbank_database_call_seconds_count{bank=\"bank2\",operation=\"debit\"} 0",
            "# TYPE txbank_broker_call_seconds histogram",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in\n{text}");
        }
    }
}
