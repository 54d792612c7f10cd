//! A limit on the requests a bank answers at once: past it, a request is refused at
//! once with `503 overloaded` (nothing moved), instead of waiting behind work the bank
//! cannot finish in time. Liveness (`/healthz`) and the API's document are answered
//! whatever the load.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::ApiError;

/// Answers `request` while fewer than the limit are being answered.
pub(crate) async fn admit(State(answering): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/openapi.json") {
        return next.run(request).await;
    }
    let Ok(_turn) = answering.try_acquire() else {
        return ApiError::Unavailable {
            code: "overloaded",
            message: "the bank answers as many requests as it may at once: nothing moved, try again".into(),
            tx_no: None,
        }
        .into_response();
    };
    next.run(request).await
}
