//! What every handler shares.

use std::sync::Arc;

use txbank_domain::AccountNo;
use txbank_messaging::TransferProducer;
use txbank_storage::Store;

/// The bank's database, and its producer when this bank sends transfers.
#[derive(Clone)]
pub struct AppState {
    /// This bank's name, shown in responses and logs.
    pub bank: Arc<str>,
    /// This bank's database.
    pub store: Store,
    /// Present when this bank sends transfers.
    pub outbound: Option<Arc<Outbound>>,
}

/// The sending side of a bank.
pub struct Outbound {
    /// The transactional producer that debits and sends.
    pub producer: TransferProducer,
    /// The destination the seed's `GET /transfer` credits (Li Si, `2`).
    pub seed_destination: AccountNo,
}
