//! The HTTP API of one bank, on axum: the seed's `GET /transfer`, the JSON transfer API,
//! accounts and health. Every route but health asks who calls ([`Caller`]). Handlers
//! parse input into domain types, call storage or the
//! producer, and map every failure to one status and one stable error code
//! ([`ApiError`]).

mod accounts;
mod auth;
mod error;
mod health;
mod state;
mod transfers;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use auth::{ApiToken, Auth, Caller};
pub use error::ApiError;
pub use state::AppState;

/// Request bodies larger than this are refused with 413 before they are read whole.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The bank's routes, ready to serve.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/transfer", get(transfers::seed_transfer))
        .route("/transfers", post(transfers::create))
        .route("/transfers/{tx_no}", get(transfers::show))
        .route("/accounts", get(accounts::list).post(accounts::open))
        .route("/accounts/{account_no}", get(accounts::show))
        .route("/accounts/{account_no}/close", post(accounts::close))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
