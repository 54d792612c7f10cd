//! Transfers: the seed's `GET /transfer`, `POST /transfers`, `GET /transfers` and
//! `GET /transfers/{tx_no}` (`POST /transfers/batch` is in `batch`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use txbank_domain::{AccountNo, Amount, BankId, IdempotencyKey, Party, Transfer, TransferState, TxNo};
use txbank_messaging::{MessagingError, SendOutcome};
use txbank_storage::{DebitOutcome, StorageError, TransferRecord};

use crate::{ApiError, AppState, Caller, SeedGetTransfer};

/// A transfer as the API shows it.
#[derive(Serialize)]
pub(crate) struct TransferView {
    tx_no: String,
    state: &'static str,
    from: String,
    to_bank: String,
    to: String,
    amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// When the sender recorded it, Unix milliseconds (known once it is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at_ms: Option<i64>,
}

impl TransferView {
    pub(crate) fn new(transfer: &Transfer, state: &'static str, reason: Option<String>) -> Self {
        TransferView {
            tx_no: transfer.tx_no.to_string(),
            state,
            from: transfer.from.to_string(),
            to_bank: transfer.to_bank.to_string(),
            to: transfer.to.to_string(),
            amount: transfer.amount.to_string(),
            reason,
            created_at_ms: None,
        }
    }

    /// Where the transfer stands (`debited`, `credited`, ...).
    pub(crate) fn state(&self) -> &'static str {
        self.state
    }

    pub(crate) fn of(record: &TransferRecord) -> Self {
        TransferView {
            created_at_ms: Some(record.created_at_ms),
            ..TransferView::new(&record.transfer, record.state.as_str(), record.reason.clone())
        }
    }
}

pub(crate) type Created = (StatusCode, Json<TransferView>);

/// The body of `POST /transfers`. The amount may be a decimal string (`"100.50"`) or a
/// JSON number (`100.50`); either way it is read from its exact text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTransfer {
    from: String,
    to: String,
    #[serde(default)]
    to_bank: Option<String>,
    amount: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /transfers`: debit `from` and send the transfer to account `to` in `to_bank`
/// (this bank, another, or by default the seed's destination bank), at most once per
/// idempotency key (given in the body or the `Idempotency-Key` header).
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<CreateTransfer>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(request) = body.map_err(reject_body)?;
    let key = idempotency_key(&headers, request.idempotency_key.as_deref())?;
    let transfer = request.transfer(&state, &caller)?;
    submit(&state, transfer, key).await
}

impl CreateTransfer {
    /// The transfer asked for, with a new transaction number, if `caller` may send it.
    pub(crate) fn transfer(&self, state: &AppState, caller: &Caller) -> Result<Transfer, ApiError> {
        let to_bank = match &self.to_bank {
            Some(bank) => BankId::parse(bank)?,
            None => state.seed_destination.bank.clone(),
        };
        if to_bank != state.bank && !state.producer.routes().reaches(&to_bank) {
            return Err(ApiError::unprocessable(
                "unknown_bank",
                format!("bank {to_bank} is not among the banks {} sends to", state.bank),
            ));
        }
        let from = AccountNo::parse(&self.from)?;
        caller.may_use(&from)?;
        Ok(Transfer::new(
            TxNo::generate(),
            Party {
                bank: state.bank.clone(),
                account: from,
            },
            Party {
                bank: to_bank,
                account: AccountNo::parse(&self.to)?,
            },
            parse_amount(&self.amount)?,
        )?)
    }

    /// The idempotency key in the body, if any.
    pub(crate) fn key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        Ok(self.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose()?)
    }
}

/// The seed's `GET /transfer?accountNo=1&amount=100`: Zhang San pays Li Si, for the
/// callers `seed_get_transfer` lets through.
pub(crate) async fn seed_transfer(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Created, ApiError> {
    match (state.seed_get_transfer, &caller) {
        (SeedGetTransfer::Off, _) => {
            return Err(ApiError::NotFound(
                "GET /transfer is turned off on this bank; pay with POST /transfers".into(),
            ))
        }
        (SeedGetTransfer::Operators, Caller::Holder(_)) => return Err(ApiError::Forbidden),
        _ => {}
    }
    let param = |name: &'static str| {
        query
            .get(name)
            .ok_or_else(|| ApiError::invalid("missing_parameter", format!("query parameter {name} is required")))
    };
    let from = AccountNo::parse(param("accountNo")?)?;
    caller.may_use(&from)?;
    let transfer = Transfer::new(
        TxNo::generate(),
        Party {
            bank: state.bank.clone(),
            account: from,
        },
        state.seed_destination.clone(),
        Amount::parse(param("amount")?)?,
    )?;
    submit(&state, transfer, None).await
}

/// Most transfers `GET /transfers` lists at once.
const MAX_LISTED: u32 = 100;

/// The query of `GET /transfers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

/// The answer of `GET /transfers`.
#[derive(Serialize)]
pub(crate) struct TransferList {
    transfers: Vec<TransferView>,
}

/// `GET /transfers?state=debited&limit=20` (operators): the latest transfers this bank
/// sent, newest first, optionally only those in one state (`debited` = in flight).
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TransferList>, ApiError> {
    caller.must_be_operator()?;
    let Query(query) = query.map_err(|e| ApiError::invalid("invalid_query", e.body_text()))?;
    let wanted = query
        .state
        .map(|text| text.parse::<TransferState>())
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_state", e))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LISTED}"),
        ));
    }
    let records = state.store.recent_transfers_out(wanted, limit).await?;
    Ok(Json(TransferList {
        transfers: records.iter().map(TransferView::of).collect(),
    }))
}

/// `GET /transfers/{tx_no}`: where a transfer this bank sent stands.
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(tx_no): Path<String>,
) -> Result<Json<TransferView>, ApiError> {
    let tx_no = TxNo::parse(&tx_no)?;
    let unknown = || ApiError::NotFound(format!("transfer {tx_no} is unknown to {}", state.bank));
    let record = state.store.transfer_out(&tx_no).await?.ok_or_else(unknown)?;
    // A holder learns nothing of other accounts' transfers, not even that they exist.
    caller.may_use(&record.transfer.from).map_err(|_| unknown())?;
    Ok(Json(TransferView::of(&record)))
}

/// Sends the transfer unless its idempotency key already names one, and answers with
/// where it stands: 201 debited (or credited, within this bank), 202 pending
/// (check-back will settle it), 200 replayed.
///
/// The send runs in its own task, so a client that hangs up does not cut a transfer off
/// between its half message and its local transaction.
pub(crate) async fn submit(
    state: &AppState,
    transfer: Transfer,
    key: Option<IdempotencyKey>,
) -> Result<Created, ApiError> {
    if let Some(key) = &key {
        if let Some(existing) = state.store.transfer_out_by_key(key).await? {
            return replay(existing, &transfer);
        }
    }
    if transfer.is_within_one_bank() {
        return match state.store.transfer_within(&transfer, key.as_ref()).await {
            Ok(_) => Ok((
                StatusCode::CREATED,
                Json(TransferView::new(&transfer, "credited", None)),
            )),
            Err(StorageError::IdempotencyKeyTaken { existing }) => replay_key(state, existing, &transfer).await,
            Err(error) => Err(ApiError::refused(transfer.tx_no, error)),
        };
    }
    let sending = {
        let (transfer, key, producer) = (transfer.clone(), key.clone(), Arc::clone(&state.producer));
        state
            .sends
            .spawn(async move { producer.send(&transfer, key.as_ref()).await })
    };
    let sent = sending.await.map_err(|error| ApiError::Unavailable {
        code: "internal_error",
        message: format!("the transfer's task failed: {error}"),
        tx_no: Some(transfer.tx_no.clone()),
    })?;
    let sent = match sent {
        // No broker stored the half message within the send window, whatever the reason
        // (none answers, or one answers without a route yet, just after a start): the
        // payment is debited and queued, and its message goes once a broker takes it.
        Err(error @ MessagingError::Client { .. })
            if state.producer.routes().queues_when_broker_away(&transfer.to_bank) =>
        {
            return queue(state, transfer, key, &error).await;
        }
        other => other,
    }?;
    match sent {
        SendOutcome::Debited(_) => Ok((StatusCode::CREATED, Json(TransferView::new(&transfer, "debited", None)))),
        SendOutcome::Pending => Ok((
            StatusCode::ACCEPTED,
            Json(TransferView::new(&transfer, "pending", None)),
        )),
        SendOutcome::RolledBack(StorageError::IdempotencyKeyTaken { existing }) => {
            replay_key(state, existing, &transfer).await
        }
        SendOutcome::RolledBack(error) => Err(ApiError::refused(transfer.tx_no, error)),
    }
}

/// A payment no broker stores the half message of now: debited, with the record that
/// its message is still to be sent, in one database transaction (`201 queued`); its
/// message goes out once a broker answers. Refused as before (`503`) once
/// `most_queued` payments wait.
async fn queue(
    state: &AppState,
    transfer: Transfer,
    key: Option<IdempotencyKey>,
    error: &MessagingError,
) -> Result<Created, ApiError> {
    match state
        .store
        .debit_and_queue(&transfer, key.as_ref(), state.most_queued)
        .await
    {
        Ok(DebitOutcome::Debited) => {
            tracing::warn!(tx_no = %transfer.tx_no, %error, "no broker stores the half message: the payment is debited and queued");
            Ok((StatusCode::CREATED, Json(TransferView::new(&transfer, "queued", None))))
        }
        // Its local transaction ran after all (a half message stored late).
        Ok(DebitOutcome::AlreadyDebited) => {
            Ok((StatusCode::CREATED, Json(TransferView::new(&transfer, "debited", None))))
        }
        Err(StorageError::IdempotencyKeyTaken { existing }) => replay_key(state, existing, &transfer).await,
        Err(refusal) => Err(ApiError::refused(transfer.tx_no, refusal)),
    }
}

/// The answer to a request whose idempotency key names the transfer `existing`, which a
/// concurrent request with the same key recorded first.
async fn replay_key(state: &AppState, existing: TxNo, requested: &Transfer) -> Result<Created, ApiError> {
    let record = state
        .store
        .transfer_out(&existing)
        .await?
        .ok_or(ApiError::KeyReused { existing })?;
    replay(record, requested)
}

/// The answer to a retried request: the first transfer, if the parameters match.
pub(crate) fn replay(existing: TransferRecord, requested: &Transfer) -> Result<Created, ApiError> {
    let same = existing.transfer.from == requested.from
        && existing.transfer.to_bank == requested.to_bank
        && existing.transfer.to == requested.to
        && existing.transfer.amount == requested.amount;
    if !same {
        return Err(ApiError::KeyReused {
            existing: existing.transfer.tx_no,
        });
    }
    Ok((StatusCode::OK, Json(TransferView::of(&existing))))
}

/// The idempotency key from the header or the body; both given must agree.
fn idempotency_key(headers: &HeaderMap, in_body: Option<&str>) -> Result<Option<IdempotencyKey>, ApiError> {
    let in_header =
        match headers.get("idempotency-key") {
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be printable ASCII")
            })?),
            None => None,
        };
    match (in_header, in_body) {
        (Some(a), Some(b)) if a != b => Err(ApiError::unprocessable(
            "idempotency_keys_differ",
            "the Idempotency-Key header and the body's idempotency_key differ",
        )),
        (Some(key), _) | (None, Some(key)) => Ok(Some(IdempotencyKey::parse(key)?)),
        (None, None) => Ok(None),
    }
}

/// An amount given as a decimal string or a JSON number, read from its exact text.
fn parse_amount(raw: &RawValue) -> Result<Amount, ApiError> {
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text)
            .map_err(|_| ApiError::invalid("invalid_amount", "amount is not a valid string"))?;
        return Ok(Amount::parse(&inner)?);
    }
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Ok(Amount::parse(text)?);
    }
    Err(ApiError::invalid(
        "invalid_amount",
        format!("amount must be a decimal string or number, got {text}"),
    ))
}

/// Maps a body axum could not read as JSON to the matching status and code.
pub(crate) fn reject_body(rejection: JsonRejection) -> ApiError {
    let (status, code) = match &rejection {
        JsonRejection::MissingJsonContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        JsonRejection::BytesRejection(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        _ => (StatusCode::BAD_REQUEST, "invalid_json"),
    };
    ApiError::Rejected {
        status,
        code,
        message: rejection.body_text(),
    }
}
