//! The client commands: `txbank transfer`, `txbank balance` and `txbank accounts` ask a
//! bank's HTTP API, logged in as an operator or an account holder.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cli::{AccountsAction, Login};
use crate::config::defaults;

/// `txbank transfer`: asks the sending bank to transfer, prints its answer.
pub fn transfer(
    url: &str,
    (from, to, to_bank): (&str, &str, Option<&str>),
    amount: &str,
    key: Option<&str>,
    login: &Login,
) -> Result<()> {
    let mut body = json!({ "from": from, "to": to, "amount": amount });
    if let Some(to_bank) = to_bank {
        body["to_bank"] = json!(to_bank);
    }
    if let Some(key) = key {
        body["idempotency_key"] = json!(key);
    }
    let request = reqwest::Client::new()
        .post(format!("{}/transfers", url.trim_end_matches('/')))
        .json(&body);
    print_answer(authenticate(request, login)?)
}

/// `txbank balance`: prints an account's balance.
pub fn balance(bank: &str, account: &str, url: Option<&str>, login: &Login) -> Result<()> {
    let base = base_url(bank, url)?;
    let request = reqwest::Client::new().get(format!("{base}/accounts/{account}"));
    print_answer(authenticate(request, login)?)
}

/// `txbank accounts ...`: lists, opens or closes accounts.
pub fn accounts(action: &AccountsAction, bank: &str, url: Option<&str>, login: &Login) -> Result<()> {
    let base = base_url(bank, url)?;
    let client = reqwest::Client::new();
    let request = match action {
        AccountsAction::List => client.get(format!("{base}/accounts")),
        AccountsAction::Open {
            no,
            name,
            opening_balance,
        } => {
            let mut body = json!({ "no": no, "name": name });
            if let Some(balance) = opening_balance {
                body["opening_balance"] = json!(balance);
            }
            if let Ok(password) = std::env::var("TXBANK_ACCOUNT_PASSWORD") {
                body["password"] = json!(password);
            }
            client.post(format!("{base}/accounts")).json(&body)
        }
        AccountsAction::Close { no } => client.post(format!("{base}/accounts/{no}/close")),
    };
    print_answer(authenticate(request, login)?)
}

fn base_url(bank: &str, url: Option<&str>) -> Result<String> {
    Ok(match (url, bank) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, "bank1") => format!("http://{}", defaults::BANK1),
        (None, "bank2") => format!("http://{}", defaults::BANK2),
        (None, other) => bail!("unknown bank {other:?}: use bank1, bank2 or --url"),
    })
}

/// Adds the credentials: an account holder's (`--as` with TXBANK_PASSWORD), else the
/// operators' token (TXBANK_API_TOKEN, else the token file).
fn authenticate(request: reqwest::RequestBuilder, login: &Login) -> Result<reqwest::RequestBuilder> {
    if let Some(account) = &login.as_account {
        let password =
            std::env::var("TXBANK_PASSWORD").context("--as ACCOUNT needs the password in TXBANK_PASSWORD")?;
        return Ok(request.basic_auth(account, Some(password)));
    }
    let token = match std::env::var("TXBANK_API_TOKEN") {
        Ok(token) => token,
        Err(_) => std::fs::read_to_string(&login.token_file).with_context(|| {
            format!(
                "no API token: set TXBANK_API_TOKEN, or --token-file (cannot read {})",
                login.token_file.display()
            )
        })?,
    };
    Ok(request.bearer_auth(token.trim()))
}

/// Sends the request, prints the JSON answer, and fails on an error status.
fn print_answer(request: reqwest::RequestBuilder) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let response = request.send().await.context("the bank did not answer")?;
        let status = response.status();
        let body: Value = response.json().await.context("the bank's answer is not JSON")?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        if !status.is_success() {
            bail!("the bank answered {status}");
        }
        Ok(())
    })
}
