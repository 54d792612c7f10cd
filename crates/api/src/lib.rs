//! The HTTP API of one bank, on axum: the seed's `GET /transfer`, the JSON transfer API,
//! accounts, health and metrics, described by an OpenAPI document at `/openapi.json`.
//! Every route but health and the document asks who calls ([`Caller`]). Handlers parse
//! input into domain types, call storage or the producer, and map every failure to one
//! status and one stable error code ([`ApiError`]).

mod accounts;
mod admission;
mod auth;
mod batch;
mod error;
mod health;
mod openapi;
mod state;
mod transfers;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::sync::Semaphore;

pub use auth::{ApiToken, Auth, Caller};
pub use error::ApiError;
pub use state::{AppState, SeedGetTransfer};

/// Request bodies larger than this are refused with 413 before they are read whole.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Declares every route once: the router is built from this list, and
/// [`ROUTES`] lists the same routes for the test that holds the OpenAPI document to them.
/// A route may name a larger body limit than [`MAX_BODY_BYTES`] in brackets.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path $([$limit:expr])?,)*) => {
        /// Every route as `(method, path)`, in axum's path syntax.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path),)*];

        fn routes() -> Router<AppState> {
            Router::new()$(.route(
                $path,
                axum::routing::$method($handler).layer(DefaultBodyLimit::max(body_limit(&[$($limit)?]))),
            ))*
        }
    };
}

/// The body limit of a route: the one it names, else [`MAX_BODY_BYTES`].
const fn body_limit(named: &[usize]) -> usize {
    match named {
        [limit] => *limit,
        _ => MAX_BODY_BYTES,
    }
}

routes! {
    get "/transfer" => transfers::seed_transfer,
    post "/transfers" => transfers::create,
    post "/transfers/batch" => batch::create [batch::MAX_BATCH_BODY_BYTES],
    get "/transfers" => transfers::list,
    get "/transfers/{tx_no}" => transfers::show,
    get "/accounts" => accounts::list,
    post "/accounts" => accounts::open,
    get "/accounts/{account_no}" => accounts::show,
    post "/accounts/{account_no}/close" => accounts::close,
    get "/healthz" => health::live,
    get "/readyz" => health::ready,
    get "/metrics" => health::metrics,
    get "/audit" => health::audit,
    get "/openapi.json" => openapi::document,
}

/// The bank's routes, ready to serve, answering at most `state.max_concurrent_requests`
/// requests at once.
pub fn router(state: AppState) -> Router {
    let answering = Arc::new(Semaphore::new(state.max_concurrent_requests));
    routes()
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(answering, admission::admit))
}
