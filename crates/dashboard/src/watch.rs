//! The watcher: reads every bank's API once a tick and turns what it read into one
//! [`Snapshot`], with the throughput and latency history the chart draws.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::prometheus::{self, Sample};
use crate::BankEndpoint;

/// How many ticks of history the chart gets (ten minutes at one a second).
const HISTORY: usize = 600;
/// Transfers listed per bank, latest and in flight.
const LISTED: u32 = 12;
/// Ticks between two readings of the banks' books: `GET /audit` reads a bank's whole
/// ledger, too much work to ask for every second.
const BOOKS_EVERY: u64 = 5;
/// How long one call to a bank may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the page shows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was read, Unix milliseconds.
    pub at_ms: i64,
    /// Each bank, in the configured order.
    pub banks: Vec<BankView>,
    /// The conservation check over every bank's books.
    pub audit: AuditView,
    /// Throughput and latency, oldest first.
    pub history: Vec<Point>,
}

/// One bank as its API showed it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BankView {
    /// The bank's name.
    pub name: String,
    /// Its API.
    pub url: String,
    /// Whether `GET /readyz` said ready (database and broker reachable).
    pub ready: bool,
    /// What went wrong reading it, if anything.
    pub error: Option<String>,
    /// `GET /accounts`.
    pub accounts: Vec<Value>,
    /// The latest transfers it sent.
    pub recent: Vec<Value>,
    /// The latest transfers it sent that are still in flight (debited, neither credited
    /// nor returned yet).
    pub in_flight: Vec<Value>,
    /// How many of its transfers are in flight.
    pub in_flight_count: f64,
    /// The oldest in-flight transfer's age.
    pub oldest_in_flight_seconds: f64,
    /// Transfers it credited since it started.
    pub credited_total: f64,
    /// Messages it set aside since it started (bound for the dead-letter queue).
    pub dead_lettered_total: f64,
    /// Messages it handed back for redelivery since it started.
    pub redeliveries_total: f64,
    /// Unsettled transfers it sent again from its books since it started (re-drive).
    pub redriven_total: f64,
    /// Redeliveries absorbed by de-duplication since it started.
    pub duplicates_total: f64,
    /// `GET /audit`: its own books.
    pub books: Option<Value>,
}

/// The conservation check the page shows green or red.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditView {
    /// True when every bank answered and no violation was found.
    pub ok: bool,
    /// What is wrong, in words.
    pub violations: Vec<String>,
    /// Money debited by senders and not yet credited by destinations, in cents.
    pub in_flight_cents: i64,
}

/// One tick of the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Transfers credited per second, over every bank, since the tick before.
    pub credited_per_s: f64,
    /// Debit-to-credit latency of the transfers credited since the tick before.
    pub p50_ms: Option<f64>,
    /// The same, 99th percentile.
    pub p99_ms: Option<f64>,
}

/// Reads the banks and remembers what it needs to turn counters into rates.
pub struct Watcher {
    banks: Vec<BankEndpoint>,
    api_token: String,
    http: reqwest::Client,
    history: VecDeque<Point>,
    last: Option<Reading>,
    /// Ticks so far.
    ticks: u64,
    /// Each bank's books as last read.
    books: Vec<Option<Value>>,
    /// Consecutive readings of the books that together showed money from nowhere.
    skewed_readings: u32,
}

/// The counters of the tick before.
struct Reading {
    at_ms: i64,
    credited: f64,
    latency_buckets: Vec<(f64, f64)>,
}

impl Watcher {
    /// A watcher of `banks`, calling them with the operators' `api_token`.
    pub fn new(banks: Vec<BankEndpoint>, api_token: String) -> Watcher {
        Watcher {
            books: vec![None; banks.len()],
            banks,
            api_token,
            http: reqwest::Client::new(),
            history: VecDeque::with_capacity(HISTORY),
            last: None,
            ticks: 0,
            skewed_readings: 0,
        }
    }

    /// Reads every bank at once (their books every [`BOOKS_EVERY`] ticks) and returns
    /// the new snapshot.
    pub async fn tick(&mut self) -> Snapshot {
        let fresh_books = self.ticks.is_multiple_of(BOOKS_EVERY);
        self.ticks += 1;
        let reads = self
            .banks
            .iter()
            .map(|bank| read_bank(&self.http, bank, &self.api_token, fresh_books));
        let read: Vec<(BankView, Vec<Sample>)> = futures_util::future::join_all(reads).await;
        let at_ms = now_ms();
        let samples: Vec<Sample> = read.iter().flat_map(|(_, samples)| samples.iter().cloned()).collect();
        let reading = Reading {
            at_ms,
            credited: credited(&samples),
            latency_buckets: prometheus::buckets(&samples, "txbank_debit_to_credit_seconds"),
        };
        let mut banks: Vec<BankView> = read.into_iter().map(|(view, _)| view).collect();
        for (view, books) in banks.iter_mut().zip(&mut self.books) {
            if fresh_books {
                books.clone_from(&view.books);
            } else {
                view.books.clone_from(books);
            }
        }
        if let Some(last) = &self.last {
            let seconds = (at_ms - last.at_ms) as f64 / 1000.0;
            let quantile = |q| {
                prometheus::quantile_between(&last.latency_buckets, &reading.latency_buckets, q).map(|s| s * 1000.0)
            };
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(Point {
                at_ms,
                // A restarted bank's counters start again from zero: never a negative rate.
                credited_per_s: ((reading.credited - last.credited) / seconds).max(0.0),
                p50_ms: quantile(0.5),
                p99_ms: quantile(0.99),
            });
        }
        self.last = Some(reading);
        let audit = self.audit(&banks, fresh_books);
        Snapshot {
            at_ms,
            banks,
            audit,
            history: self.history.iter().cloned().collect(),
        }
    }

    /// Each bank's books must balance; together, no destination may have credited more
    /// than the senders debited. Banks are read at slightly different moments, so money
    /// from nowhere counts only when two readings in a row (`fresh` ones) show it.
    fn audit(&mut self, banks: &[BankView], fresh: bool) -> AuditView {
        let mut violations = Vec::new();
        let (mut sent, mut received) = (0, 0);
        for bank in banks {
            let Some(books) = &bank.books else {
                violations.push(format!("{}: books not readable", bank.name));
                continue;
            };
            let cents = |field: &str| books.get(field).and_then(Value::as_i64).unwrap_or(0);
            if books.get("balanced").and_then(Value::as_bool) != Some(true) {
                violations.push(format!(
                    "{}: came in {} but on accounts + held + went out {} (cents)",
                    bank.name,
                    cents("opened_cents") + cents("received_cents"),
                    cents("balance_cents") + cents("held_cents") + cents("sent_cents")
                ));
            }
            sent += cents("sent_cents");
            received += cents("received_cents");
        }
        let in_flight_cents = sent - received;
        if fresh {
            self.skewed_readings = if in_flight_cents < 0 {
                self.skewed_readings + 1
            } else {
                0
            };
        }
        if self.skewed_readings >= 2 {
            violations.push(format!(
                "destinations credited {} cents more than senders debited",
                -in_flight_cents
            ));
        }
        AuditView {
            ok: violations.is_empty(),
            violations,
            in_flight_cents,
        }
    }
}

/// Reads one bank, with its books when `with_books`; a bank that does not answer shows
/// as not ready with its error.
async fn read_bank(
    http: &reqwest::Client,
    bank: &BankEndpoint,
    token: &str,
    with_books: bool,
) -> (BankView, Vec<Sample>) {
    let get = |path: String| {
        let request = http
            .get(format!("{}{path}", bank.url))
            .bearer_auth(token)
            .timeout(CALL_TIMEOUT);
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(text)
            } else {
                Err(format!("{path}: {status} {text}"))
            }
        }
    };
    let (ready, accounts, recent, in_flight, metrics, books) = tokio::join!(
        get("/readyz".into()),
        get("/accounts".into()),
        get(format!("/transfers?limit={LISTED}")),
        get(format!("/transfers?state=debited&limit={LISTED}")),
        get("/metrics".into()),
        async {
            if with_books {
                Some(get("/audit".into()).await)
            } else {
                None
            }
        },
    );
    let mut view = BankView {
        name: bank.name.clone(),
        url: bank.url.clone(),
        ready: ready.is_ok(),
        ..BankView::default()
    };
    let mut errors = Vec::new();
    let mut json = |read: Result<String, String>| match read
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
    {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let list = |value: Option<Value>, field: Option<&str>| {
        let value = match field {
            Some(field) => value.and_then(|mut v| v.get_mut(field).map(Value::take)),
            None => value,
        };
        value.and_then(|v| v.as_array().cloned()).unwrap_or_default()
    };
    view.accounts = list(json(accounts), None);
    view.recent = list(json(recent), Some("transfers"));
    view.in_flight = list(json(in_flight), Some("transfers"));
    view.books = books.and_then(&mut json);
    if let Err(error) = ready {
        errors.push(error);
    }
    let samples = match metrics {
        Ok(text) => prometheus::parse(&text),
        Err(error) => {
            errors.push(error);
            Vec::new()
        }
    };
    view.in_flight_count = prometheus::total(&samples, "txbank_transfers_in_flight");
    view.oldest_in_flight_seconds = prometheus::total(&samples, "txbank_oldest_in_flight_seconds");
    view.credited_total = credited(&samples);
    view.dead_lettered_total = prometheus::total(&samples, "txbank_messages_set_aside_total");
    view.redeliveries_total = prometheus::total(&samples, "txbank_redeliveries_requested_total");
    view.duplicates_total = prometheus::total(&samples, "txbank_duplicates_absorbed_total");
    view.redriven_total = prometheus::total(&samples, "txbank_transfers_redriven_total");
    errors.dedup();
    view.error = (!errors.is_empty()).then(|| errors.join("; "));
    (view, samples)
}

/// Transfers credited, by the counters in `samples`.
fn credited(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "txbank_transfers_received_total")
        .filter(|s| s.labels.get("outcome").map(String::as_str) == Some("credited"))
        .map(|s| s.value)
        .sum()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
