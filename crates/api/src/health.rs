//! Liveness, readiness and metrics.

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use txbank_domain::audit::{books, BankBooks, DEFAULT_STUCK_AFTER_MS};

use crate::{ApiError, AppState, Caller};

/// Always answers while the process serves HTTP.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Answers 200 only while both the database and the broker answer; 503 names the one
/// that does not.
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    state.broker.check().await.map_err(|error| ApiError::Unavailable {
        code: "broker_unavailable",
        message: error.to_string(),
        tx_no: None,
    })?;
    Ok(Json(json!({ "status": "ready", "bank": state.bank.as_str() })))
}

/// Prometheus metrics (operators only): the messaging counters, the database's view of
/// transfers in flight, and on SQLite how busy its one writer was.
pub(crate) async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.must_be_operator()?;
    let mut text = state.counters.render(state.bank.as_str());
    let (in_flight, oldest_ms) = state.store.in_flight().await?;
    let (queued, oldest_queued_ms) = state.store.unsent_backlog().await?;
    let bank = state.bank.as_str();
    text.push_str(&format!(
        "# HELP txbank_transfers_in_flight Transfers sent and debited, not yet credited or returned.\n\
         # TYPE txbank_transfers_in_flight gauge\ntxbank_transfers_in_flight{{bank=\"{bank}\"}} {in_flight}\n\
         # HELP txbank_oldest_in_flight_seconds Age of the oldest transfer in flight.\n\
         # TYPE txbank_oldest_in_flight_seconds gauge\ntxbank_oldest_in_flight_seconds{{bank=\"{bank}\"}} {:.3}\n",
        oldest_ms as f64 / 1000.0
    ));
    text.push_str(&format!(
        "# HELP txbank_transfers_queued Payments debited while no broker answered, their message not yet taken.\n\
         # TYPE txbank_transfers_queued gauge\ntxbank_transfers_queued{{bank=\"{bank}\"}} {queued}\n\
         # HELP txbank_oldest_queued_seconds Age of the oldest queued payment.\n\
         # TYPE txbank_oldest_queued_seconds gauge\ntxbank_oldest_queued_seconds{{bank=\"{bank}\"}} {:.3}\n",
        oldest_queued_ms as f64 / 1000.0
    ));
    if let Some(writer) = state.store.writer_time() {
        text.push_str(&format!(
            "# HELP txbank_sqlite_writer_busy_seconds_total Time this process held SQLite's one write turn: \
             near a second a second, the writer bounds the bank, whatever its cores.\n\
             # TYPE txbank_sqlite_writer_busy_seconds_total counter\n\
             txbank_sqlite_writer_busy_seconds_total{{bank=\"{bank}\"}} {}\n\
             # HELP txbank_sqlite_writer_wait_seconds_total Time writers waited for the turn, summed over writers.\n\
             # TYPE txbank_sqlite_writer_wait_seconds_total counter\n\
             txbank_sqlite_writer_wait_seconds_total{{bank=\"{bank}\"}} {}\n",
            writer.held.as_secs_f64(),
            writer.waited.as_secs_f64()
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The query of `GET /audit`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct AuditQuery {
    /// Seconds a transfer may await its report before the books call it stuck.
    stuck_after_secs: Option<u32>,
}

/// `GET /audit` (operators): this bank's own books, checked alone. The checks across
/// banks are `txbank audit`'s, which reads every bank.
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BankBooks>, ApiError> {
    caller.must_be_operator()?;
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let ledger = state.store.ledger().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let stuck_after_ms = query
        .stuck_after_secs
        .map_or(DEFAULT_STUCK_AFTER_MS, |secs| i64::from(secs) * 1000);
    Ok(Json(books(&ledger, now_ms).stuck_after(stuck_after_ms)))
}
