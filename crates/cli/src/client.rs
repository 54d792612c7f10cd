//! The client commands: `txbank transfer` and `txbank balance` ask a bank's HTTP API.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::config::defaults;

/// `txbank transfer`: asks the sending bank to transfer, prints its answer.
pub fn transfer(url: &str, from: &str, to: &str, amount: &str, key: Option<&str>) -> Result<()> {
    let mut body = json!({ "from": from, "to": to, "amount": amount });
    if let Some(key) = key {
        body["idempotency_key"] = json!(key);
    }
    let request = reqwest::Client::new()
        .post(format!("{}/transfers", url.trim_end_matches('/')))
        .json(&body);
    print_answer(request)
}

/// `txbank balance`: prints an account's balance.
pub fn balance(bank: &str, account: &str, url: Option<&str>) -> Result<()> {
    let base = match (url, bank) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, "bank1") => format!("http://{}", defaults::BANK1),
        (None, "bank2") => format!("http://{}", defaults::BANK2),
        (None, other) => bail!("unknown bank {other:?}: use bank1, bank2 or --url"),
    };
    print_answer(reqwest::Client::new().get(format!("{base}/accounts/{account}")))
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
