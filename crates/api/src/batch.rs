//! `POST /transfers/batch`: up to [`MAX_BATCH_TRANSFERS`] transfers in one request. Each
//! is sent as `POST /transfers` would send it alone, with its own idempotency key and
//! its own outcome (transfers waiting at the same moment share messages and commits all
//! the same), or, with `all_or_nothing`, as one group whose transfers are all debited in
//! one database transaction or none is.

use std::collections::{BTreeMap, HashSet};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use txbank_domain::{IdempotencyKey, Transfer};
use txbank_messaging::GroupOutcome;

use crate::transfers::{reject_body, replay, submit, CreateTransfer, Created, TransferView};
use crate::{ApiError, AppState, Caller};

/// Most transfers one batch may hold.
pub(crate) const MAX_BATCH_TRANSFERS: usize = 1000;

/// The largest batch body: room for [`MAX_BATCH_TRANSFERS`] transfers of about 250
/// bytes each.
pub(crate) const MAX_BATCH_BODY_BYTES: usize = 256 * 1024;

/// The body of `POST /transfers/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBatch {
    transfers: Vec<CreateTransfer>,
    /// Debit every transfer or none (transfers to other banks only).
    #[serde(default)]
    all_or_nothing: bool,
}

/// The answer of `POST /transfers/batch`: one result per transfer, in the order asked.
#[derive(Serialize)]
pub(crate) struct BatchAnswer {
    all_or_nothing: bool,
    /// How many transfers ended each way, by outcome.
    outcomes: BTreeMap<&'static str, usize>,
    results: Vec<ItemResult>,
}

/// What became of one transfer of a batch.
#[derive(Serialize)]
pub(crate) struct ItemResult {
    /// The status `POST /transfers` would have answered for this transfer alone.
    status: u16,
    /// `credited`, `debited`, `pending`, `replayed`, `refused` or `unavailable`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<TransferView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl ItemResult {
    /// The result of a transfer sent alone: what `POST /transfers` answered.
    fn of(answer: Result<Created, ApiError>) -> ItemResult {
        match answer {
            Ok((status, Json(view))) => ItemResult {
                status: status.as_u16(),
                outcome: match status {
                    StatusCode::OK => "replayed",
                    StatusCode::ACCEPTED => "pending",
                    _ => view.state(),
                },
                transfer: Some(view),
                error: None,
            },
            Err(error) => ItemResult::failed(&error),
        }
    }

    /// The result of a transfer that did not move.
    fn failed(error: &ApiError) -> ItemResult {
        let (status, body) = error.status_and_body();
        ItemResult {
            status: status.as_u16(),
            outcome: if status.is_server_error() {
                "unavailable"
            } else {
                "refused"
            },
            transfer: None,
            error: Some(body),
        }
    }

    /// A refusal (422) with `body` as its error.
    fn refused(body: serde_json::Value) -> ItemResult {
        ItemResult {
            status: StatusCode::UNPROCESSABLE_ENTITY.as_u16(),
            outcome: "refused",
            transfer: None,
            error: Some(body),
        }
    }

    /// The result of a transfer of an all-or-nothing group that moved as the group did.
    fn in_group(status: StatusCode, transfer: &Transfer, state: &'static str) -> ItemResult {
        ItemResult::of(Ok((status, Json(TransferView::new(transfer, state, None)))))
    }
}

/// `POST /transfers/batch`: sends each transfer of the batch, or all of them as one
/// all-or-nothing group, and answers 200 with each one's outcome. A body that is not a
/// batch of 1 to 1,000 transfers is refused whole, and nothing is sent.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<CreateBatch>, JsonRejection>,
) -> Result<Json<BatchAnswer>, ApiError> {
    let Json(batch) = body.map_err(reject_body)?;
    if batch.transfers.is_empty() || batch.transfers.len() > MAX_BATCH_TRANSFERS {
        return Err(ApiError::invalid(
            "invalid_batch",
            format!(
                "a batch holds 1 to {MAX_BATCH_TRANSFERS} transfers, not {}",
                batch.transfers.len()
            ),
        ));
    }
    let parsed: Vec<Result<(Transfer, Option<IdempotencyKey>), ApiError>> = batch
        .transfers
        .iter()
        .map(|request| Ok((request.transfer(&state, &caller)?, request.key()?)))
        .collect();
    let results = if batch.all_or_nothing {
        send_group(&state, parsed).await?
    } else {
        send_each(&state, parsed).await
    };
    let mut outcomes = BTreeMap::new();
    for result in &results {
        *outcomes.entry(result.outcome).or_default() += 1;
    }
    Ok(Json(BatchAnswer {
        all_or_nothing: batch.all_or_nothing,
        outcomes,
        results,
    }))
}

/// Sends each transfer as `POST /transfers` would, all at once.
async fn send_each(
    state: &AppState,
    parsed: Vec<Result<(Transfer, Option<IdempotencyKey>), ApiError>>,
) -> Vec<ItemResult> {
    let sending: Vec<_> = parsed
        .into_iter()
        .map(|item| {
            item.map(|(transfer, key)| {
                let owned = state.clone();
                state.sends.spawn(async move { submit(&owned, transfer, key).await })
            })
        })
        .collect();
    let mut results = Vec::with_capacity(sending.len());
    for item in sending {
        results.push(match item {
            Ok(task) => ItemResult::of(
                task.await
                    .unwrap_or_else(|error| Err(ApiError::internal(format!("a transfer's task failed: {error}")))),
            ),
            Err(error) => ItemResult::failed(&error),
        });
    }
    results
}

/// Sends the transfers as one all-or-nothing group. Any transfer refused before it is
/// sent (malformed, a book transfer, a key given twice, a key used before) refuses the
/// group; a group whose every key names a transfer it sent before is answered as
/// replayed.
async fn send_group(
    state: &AppState,
    parsed: Vec<Result<(Transfer, Option<IdempotencyKey>), ApiError>>,
) -> Result<Vec<ItemResult>, ApiError> {
    let mut seen_keys = HashSet::new();
    let checked: Vec<Result<(Transfer, Option<IdempotencyKey>), ApiError>> = parsed
        .into_iter()
        .map(|item| {
            let (transfer, key) = item?;
            if transfer.is_within_one_bank() {
                return Err(ApiError::unprocessable(
                    "book_transfer_in_group",
                    "an all-or-nothing group holds transfers to other banks only",
                ));
            }
            if let Some(key) = &key {
                if !seen_keys.insert(key.as_str().to_string()) {
                    return Err(ApiError::unprocessable(
                        "duplicate_idempotency_key",
                        format!(
                            "idempotency key {} is given to more than one transfer of the group",
                            key.as_str()
                        ),
                    ));
                }
            }
            Ok((transfer, key))
        })
        .collect();
    if checked.iter().any(Result::is_err) {
        return Ok(refused_before_sending(checked));
    }
    let group: Vec<(Transfer, Option<IdempotencyKey>)> = checked.into_iter().flatten().collect();
    if let Some(replayed) = replayed_group(state, &group).await? {
        return Ok(replayed);
    }
    Ok(match state.producer.send_group(group.clone()).await {
        Ok(GroupOutcome::Debited) => group
            .iter()
            .map(|(transfer, _)| ItemResult::in_group(StatusCode::CREATED, transfer, "debited"))
            .collect(),
        Ok(GroupOutcome::Pending) => group
            .iter()
            .map(|(transfer, _)| ItemResult::in_group(StatusCode::ACCEPTED, transfer, "pending"))
            .collect(),
        Ok(GroupOutcome::Refused) => refused_group(state, &group).await?,
        Err(error) => {
            let error = ApiError::from(error);
            group.iter().map(|_| ItemResult::failed(&error)).collect()
        }
    })
}

/// The answer to a group whose every transfer names, by its key, a transfer sent
/// before (a retried group), or `None` when none does. A group only part of whose keys
/// were used before is refused: it was not sent as this group.
async fn replayed_group(
    state: &AppState,
    group: &[(Transfer, Option<IdempotencyKey>)],
) -> Result<Option<Vec<ItemResult>>, ApiError> {
    let mut existing = Vec::with_capacity(group.len());
    for (_, key) in group {
        existing.push(match key {
            Some(key) => state.store.transfer_out_by_key(key).await?,
            None => None,
        });
    }
    if existing.iter().all(Option::is_none) {
        return Ok(None);
    }
    if existing.iter().all(Option::is_some) {
        let results = group
            .iter()
            .zip(existing)
            .filter_map(|((transfer, _), record)| Some(ItemResult::of(replay(record?, transfer))))
            .collect();
        return Ok(Some(results));
    }
    let results = existing
        .iter()
        .map(|record| match record {
            Some(record) => ItemResult::failed(&ApiError::invalid(
                "idempotency_key_used",
                format!(
                    "this transfer's idempotency key names transfer {}, sent without the rest of this group",
                    record.transfer.tx_no
                ),
            )),
            None => group_refused(),
        })
        .collect();
    Ok(Some(results))
}

/// The results of a group refused before anything was sent: each transfer's own
/// refusal, or that the group was refused.
fn refused_before_sending(checked: Vec<Result<(Transfer, Option<IdempotencyKey>), ApiError>>) -> Vec<ItemResult> {
    checked
        .iter()
        .map(|item| match item {
            Err(error) => ItemResult::failed(error),
            Ok(_) => group_refused(),
        })
        .collect()
}

/// The results of a group the local transaction could not debit whole: each transfer's
/// refusal as the books stand, or that the group was refused.
async fn refused_group(
    state: &AppState,
    group: &[(Transfer, Option<IdempotencyKey>)],
) -> Result<Vec<ItemResult>, ApiError> {
    let refusals = state.store.group_refusals(group).await?;
    Ok(group
        .iter()
        .zip(refusals)
        .map(|((transfer, _), refusal)| match refusal {
            Some(refusal) => {
                let (status, mut body) = ApiError::refused(transfer.tx_no.clone(), refusal).status_and_body();
                // Nothing of the group was recorded: there is no transfer to look up.
                if let Some(body) = body.as_object_mut() {
                    body.remove("tx_no");
                }
                ItemResult {
                    status: status.as_u16(),
                    ..ItemResult::refused(body)
                }
            }
            None => group_refused(),
        })
        .collect())
}

/// A transfer of an all-or-nothing group that was fine on its own, but did not move.
fn group_refused() -> ItemResult {
    ItemResult::refused(json!({"error": {
        "code": "group_refused",
        "message": "not sent: another transfer of the all-or-nothing group was refused",
    }}))
}
