//! Every way a request can fail, each with one HTTP status and one stable code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use txbank_domain::{DomainError, TxNo};
use txbank_messaging::MessagingError;
use txbank_storage::StorageError;

/// A request that could not be served. The JSON body is
/// `{"error": {"code": "...", "message": "..."}}`, plus `tx_no` where a transfer exists.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter was missing, malformed or out of range.
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: String },
    /// The request body was not acceptable JSON (malformed, wrong type, too large).
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// The route or the named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The transfer was refused and rolled back; nothing moved.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        tx_no: TxNo,
    },
    /// The idempotency key was already used for a different transfer.
    #[error("idempotency key already used for transfer {existing} with different parameters")]
    KeyReused { existing: TxNo },
    /// No credentials, or wrong ones; the answer never says which part was wrong.
    #[error("authentication required: an API token or the account's number and password")]
    Unauthorized,
    /// The credentials are for another account, or an operator's route was asked.
    #[error("these credentials do not allow this")]
    Forbidden,
    /// Something failed inside this bank (not the caller's fault).
    #[error("{0}")]
    Internal(String),
    /// The resource to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// The database or the broker is unavailable; nothing moved unless `tx_no` says so.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        tx_no: Option<TxNo>,
    },
}

impl ApiError {
    /// A malformed request, with the code of the parameter at fault.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            code,
            message: message.into(),
        }
    }

    /// A well-formed request that cannot be done as asked (a bank this one does not
    /// send to, a transfer to its own source account): 422, and nothing changed.
    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Rejected {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
        }
    }

    /// A failure inside this bank.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error");
        ApiError::Internal(message)
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Rejected { status, code, .. } => (*status, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Refused { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::KeyReused { .. } => (StatusCode::CONFLICT, "idempotency_key_reused"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "already_exists"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
        }
    }

    fn tx_no(&self) -> Option<&TxNo> {
        match self {
            ApiError::Refused { tx_no, .. } => Some(tx_no),
            ApiError::KeyReused { existing } => Some(existing),
            ApiError::Unavailable { tx_no, .. } => tx_no.as_ref(),
            _ => None,
        }
    }

    /// The refusal for a transfer whose local transaction failed with `error`.
    pub(crate) fn refused(tx_no: TxNo, error: StorageError) -> Self {
        let code = match &error {
            StorageError::UnknownAccount(_) => "unknown_account",
            StorageError::AccountClosed(_) => "account_closed",
            StorageError::InsufficientFunds { .. } => "insufficient_funds",
            StorageError::RolledBack(_) => "rolled_back",
            StorageError::IdempotencyKeyTaken { .. } => "idempotency_key_reused",
            StorageError::BalanceOverflow { .. } => "balance_overflow",
            StorageError::Corrupt(_)
            | StorageError::AccountExists(_)
            | StorageError::UnknownTransfer(_)
            | StorageError::ForeignSettlement { .. }
            | StorageError::SettlementConflict { .. }
            // Schema and archive refusals come from commands, never from a transfer.
            | StorageError::NotTxbank { .. }
            | StorageError::NoDatabase(_)
            | StorageError::OtherBank { .. }
            | StorageError::SchemaTooNew { .. }
            | StorageError::SchemaBehind { .. }
            | StorageError::MigrationFailed { .. }
            | StorageError::Migration(_)
            | StorageError::ArchiveCutsInFlight { .. } => "corrupt_data",
            StorageError::QueueFull { .. } => {
                return ApiError::Unavailable {
                    code: "broker_unavailable",
                    message: format!("nothing was debited: {error}"),
                    tx_no: None,
                }
            }
            StorageError::Database(_) => {
                return ApiError::Unavailable {
                    code: "database_unavailable",
                    message: format!("transfer rolled back: {error}"),
                    tx_no: Some(tx_no),
                }
            }
        };
        ApiError::Refused {
            code,
            message: error.to_string(),
            tx_no,
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let code = match error {
            DomainError::MalformedAmount { .. }
            | DomainError::NonPositiveAmount { .. }
            | DomainError::AmountOutOfRange { .. } => "invalid_amount",
            DomainError::InvalidAccountNo { .. } | DomainError::InvalidAccountName => "invalid_account",
            DomainError::InvalidTxNo { .. } => "invalid_tx_no",
            DomainError::InvalidBankId { .. } => "invalid_bank",
            DomainError::InvalidIdempotencyKey => "invalid_idempotency_key",
            DomainError::SameAccount { .. } => return ApiError::unprocessable("same_account", error.to_string()),
        };
        ApiError::invalid(code, error.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        tracing::error!(%error, "storage failure");
        ApiError::Unavailable {
            code: "database_unavailable",
            message: error.to_string(),
            tx_no: None,
        }
    }
}

impl From<MessagingError> for ApiError {
    fn from(error: MessagingError) -> Self {
        if let MessagingError::Overloaded(_) = error {
            return ApiError::Unavailable {
                code: "overloaded",
                message: error.to_string(),
                tx_no: None,
            };
        }
        tracing::error!(%error, "broker failure");
        ApiError::Unavailable {
            code: "broker_unavailable",
            message: format!("nothing was debited: {error}"),
            tx_no: None,
        }
    }
}

impl ApiError {
    /// The status and the JSON body this error answers with.
    pub(crate) fn status_and_body(&self) -> (StatusCode, serde_json::Value) {
        let (status, code) = self.status_and_code();
        let mut body = json!({ "error": { "code": code, "message": self.to_string() } });
        if let Some(tx_no) = self.tx_no() {
            body["tx_no"] = json!(tx_no.as_str());
        }
        (status, body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"txbank\", Bearer"),
            );
        }
        response
    }
}

/// The answer for routes that do not exist.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
