//! What every handler shares.

use std::sync::Arc;

use txbank_domain::{BankId, Party};
use txbank_messaging::metrics::Counters;
use txbank_messaging::{BrokerProbe, Tasks, TransferProducer};
use txbank_storage::Store;

use crate::Auth;

/// The bank's database, producer and broker probe, and the seed's default destination.
#[derive(Clone)]
pub struct AppState {
    /// This bank's identifier, shown in responses and logs.
    pub bank: BankId,
    /// This bank's database.
    pub store: Store,
    /// The transactional producer that debits and sends to other banks.
    pub producer: Arc<TransferProducer>,
    /// What the seed's `GET /transfer` credits (Li Si, `2` in bank2); its bank is also
    /// where `POST /transfers` sends when the request names no `to_bank`.
    pub seed_destination: Party,
    /// Who may call, and the memory of failed logins.
    pub auth: Arc<Auth>,
    /// What the producer and consumer did, for `GET /metrics`.
    pub counters: Arc<Counters>,
    /// Whether the broker answers, for `GET /readyz`.
    pub broker: Arc<BrokerProbe>,
    /// Most payments that may wait, debited, for a broker to take their message.
    pub most_queued: u64,
    /// Who may move money with the seed's `GET /transfer`.
    pub seed_get_transfer: SeedGetTransfer,
    /// Most requests answered at once; more are refused with `503 overloaded`.
    pub max_concurrent_requests: usize,
    /// The sends requests began, each on a task of its own so that a client that goes
    /// away cannot cut one off midway; a draining bank waits for them.
    pub sends: Tasks,
}

/// Who may call the seed's `GET /transfer`, a route that moves money on a GET: a page a
/// logged-in holder's browser opens elsewhere could make it send one with the holder's
/// Basic login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedGetTransfer {
    /// Operators and account holders, as in the seed.
    #[default]
    Open,
    /// Operators only: a bearer token, which no browser sends by itself.
    Operators,
    /// Nobody: the route answers 404 and `POST /transfers` is the way to pay.
    Off,
}

impl std::str::FromStr for SeedGetTransfer {
    type Err = String;

    fn from_str(text: &str) -> Result<SeedGetTransfer, String> {
        match text {
            "open" => Ok(SeedGetTransfer::Open),
            "operators" => Ok(SeedGetTransfer::Operators),
            "off" => Ok(SeedGetTransfer::Off),
            other => Err(format!("{other:?}: expected open, operators or off")),
        }
    }
}
