//! Accounts: list them, open one, close one (operators), show one's balance (its
//! holder or an operator).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use txbank_domain::{AccountName, AccountNo, Money};
use txbank_storage::{AccountRecord, StorageError};

use crate::auth::hash_password;
use crate::transfers::reject_body;
use crate::{ApiError, AppState, Caller};

/// An account as the API shows it; the balance is an exact decimal string.
#[derive(Serialize)]
pub(crate) struct AccountView {
    account_no: String,
    account_name: String,
    balance: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    closed: bool,
}

impl From<AccountRecord> for AccountView {
    fn from(account: AccountRecord) -> Self {
        AccountView {
            account_no: account.account_no.to_string(),
            account_name: account.account_name,
            balance: account.balance.to_string(),
            closed: account.closed,
        }
    }
}

/// The body of `POST /accounts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenAccount {
    no: String,
    name: String,
    /// Decimal string; money that enters the system with the account.
    #[serde(default)]
    opening_balance: Option<String>,
    /// The holder's password (8 to 128 characters), stored only as an Argon2 hash.
    /// Without one, only operators can use the account.
    #[serde(default)]
    password: Option<String>,
}

/// `GET /accounts`: every account of this bank.
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<AccountView>>, ApiError> {
    caller.must_be_operator()?;
    let accounts = state.store.accounts().await?;
    Ok(Json(accounts.into_iter().map(AccountView::from).collect()))
}

/// `POST /accounts`: opens an account, 201 with it; 409 when the number is taken.
pub(crate) async fn open(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<OpenAccount>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    caller.must_be_operator()?;
    let Json(request) = body.map_err(reject_body)?;
    let no = AccountNo::parse(&request.no)?;
    let name = AccountName::parse(&request.name)?;
    let opening = match &request.opening_balance {
        Some(balance) => Money::parse(balance)?,
        None => Money::ZERO,
    };
    let password_hash = match request.password {
        Some(password) => hash_password(password).await?,
        None => String::new(),
    };
    match state.store.open_account(&no, &name, opening, &password_hash).await {
        Ok(()) => {}
        Err(StorageError::AccountExists(no)) => {
            return Err(ApiError::Conflict(format!(
                "account {no} already exists in {}",
                state.bank
            )))
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(bank = %state.bank, account = %no, balance = %opening, "opened account");
    let account = AccountRecord {
        account_no: no,
        account_name: name.as_str().to_string(),
        balance: opening,
        closed: false,
    };
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// `POST /accounts/{no}/close`: from now on the account neither sends nor receives;
/// transfers to it are returned to their senders.
pub(crate) async fn close(
    State(state): State<AppState>,
    caller: Caller,
    Path(account_no): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    caller.must_be_operator()?;
    let no = AccountNo::parse(&account_no)?;
    match state.store.close_account(&no).await {
        Ok(()) => {}
        Err(StorageError::UnknownAccount(no)) => return Err(missing(&state, &no)),
        Err(error) => return Err(error.into()),
    }
    let account = state.store.account(&no).await?.ok_or_else(|| missing(&state, &no))?;
    Ok(Json(account.into()))
}

/// `GET /accounts/{no}`: one account and its balance.
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(account_no): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let no = AccountNo::parse(&account_no)?;
    caller.may_use(&no)?;
    let account = state.store.account(&no).await?.ok_or_else(|| missing(&state, &no))?;
    Ok(Json(account.into()))
}

fn missing(state: &AppState, no: &AccountNo) -> ApiError {
    ApiError::NotFound(format!("account {no} does not exist in {}", state.bank))
}
