//! `GET /accounts/{no}`: an account's balance.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use txbank_domain::AccountNo;

use crate::{ApiError, AppState};

/// An account as the API shows it; the balance is an exact decimal string.
#[derive(Serialize)]
pub(crate) struct AccountView {
    account_no: String,
    account_name: String,
    balance: String,
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Path(account_no): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let account_no = AccountNo::parse(&account_no)?;
    let account = state
        .store
        .account(&account_no)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("account {account_no} does not exist in {}", state.bank)))?;
    Ok(Json(AccountView {
        account_no: account.account_no.to_string(),
        account_name: account.account_name,
        balance: account.balance.to_string(),
    }))
}
