//! The client commands: `txbank transfer`, `txbank balance` and `txbank accounts` ask a
//! bank's HTTP API, logged in as an operator or an account holder.

use std::collections::BTreeMap;
use std::path::Path;

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

/// Most transfers in one `POST /transfers/batch`.
const BATCH_TRANSFERS: usize = 1000;

/// The columns a payments file may have.
const PAYMENT_COLUMNS: [&str; 5] = ["from", "to", "amount", "to_bank", "idempotency_key"];

/// `txbank transfer --file payments.csv`: sends the file's transfers in batches of up to
/// 1,000 (one all-or-nothing group with `all_or_nothing`), prints how many ended each
/// way and each one that did not move, and fails unless every transfer moved.
pub fn transfer_file(url: &str, file: &Path, all_or_nothing: bool, login: &Login) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let payments = payments_from_csv(&text).with_context(|| format!("{} is not a payments file", file.display()))?;
    if all_or_nothing && payments.len() > BATCH_TRANSFERS {
        bail!(
            "an all-or-nothing file holds at most {BATCH_TRANSFERS} transfers, {} has {}",
            file.display(),
            payments.len()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::Client::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_moved = 0;
    for (batch_index, batch) in payments.chunks(BATCH_TRANSFERS).enumerate() {
        let body = json!({ "transfers": batch.iter().map(|(_, payment)| payment).collect::<Vec<_>>(), "all_or_nothing": all_or_nothing });
        let request = client
            .post(format!("{}/transfers/batch", url.trim_end_matches('/')))
            .json(&body);
        let request = authenticate(request, login)?;
        let answer: Value = runtime.block_on(async {
            let response = request.send().await.context("the bank did not answer")?;
            let status = response.status();
            let answer: Value = response.json().await.context("the bank's answer is not JSON")?;
            if !status.is_success() {
                bail!("the bank refused batch {}: {status} {answer}", batch_index + 1);
            }
            Ok(answer)
        })?;
        let results = answer["results"]
            .as_array()
            .context("the bank's answer has no results")?;
        for ((line, _), result) in batch.iter().zip(results) {
            let outcome = result["outcome"].as_str().unwrap_or("unknown").to_string();
            if matches!(outcome.as_str(), "refused" | "unavailable" | "unknown") {
                not_moved += 1;
                let error = &result["error"]["error"];
                println!(
                    "line {line}: {outcome}: {}: {}",
                    error["code"].as_str().unwrap_or("?"),
                    error["message"].as_str().unwrap_or("?")
                );
            }
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    for (outcome, count) in &outcomes {
        println!("{outcome:<12} {count}");
    }
    if not_moved > 0 {
        bail!("{not_moved} of {} transfers did not move", payments.len());
    }
    Ok(())
}

/// The transfers of a payments file, each with its line number: a header line names
/// the columns (`from`, `to`, `amount`, and optionally `to_bank` and
/// `idempotency_key`), and each further line that is not empty is one transfer.
fn payments_from_csv(text: &str) -> Result<Vec<(usize, Value)>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());
    let (_, header) = lines.next().context("the file is empty: it needs a header line")?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    for column in &columns {
        if !PAYMENT_COLUMNS.contains(column) {
            bail!(
                "line 1: unknown column {column:?}; the columns are {}",
                PAYMENT_COLUMNS.join(", ")
            );
        }
        if columns.iter().filter(|other| *other == column).count() > 1 {
            bail!("line 1: column {column:?} is named twice");
        }
    }
    for required in &PAYMENT_COLUMNS[..3] {
        if !columns.contains(required) {
            bail!("line 1: the header names no {required:?} column");
        }
    }
    let mut payments = Vec::new();
    for (line, row) in lines {
        if row.contains('"') {
            bail!("line {line}: quoted fields are not supported (no field holds a comma)");
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != columns.len() {
            bail!(
                "line {line}: {} fields, but the header names {}",
                fields.len(),
                columns.len()
            );
        }
        let mut payment = serde_json::Map::new();
        for (column, field) in columns.iter().zip(fields) {
            if !field.is_empty() {
                payment.insert(column.to_string(), json!(field));
            }
        }
        payments.push((line, Value::Object(payment)));
    }
    if payments.is_empty() {
        bail!("the file holds no transfers");
    }
    Ok(payments)
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

#[cfg(test)]
mod tests {
    use super::payments_from_csv;
    use serde_json::json;

    #[test]
    fn a_payments_file_gives_one_transfer_per_line_with_its_line_number() {
        let file = "from,to,amount,idempotency_key\n1,2,10.00,pay-1\n\n3, 4 ,0.01,\n";
        let payments = payments_from_csv(file).unwrap();
        assert_eq!(
            payments,
            [
                (
                    2,
                    json!({"from": "1", "to": "2", "amount": "10.00", "idempotency_key": "pay-1"})
                ),
                (4, json!({"from": "3", "to": "4", "amount": "0.01"})),
            ]
        );
    }

    #[test]
    fn a_payments_file_that_is_not_one_is_refused_with_the_line_at_fault() {
        let refusal = |file: &str| payments_from_csv(file).unwrap_err().to_string();
        assert!(refusal("").contains("empty"));
        assert!(refusal("from,to\n1,2\n").contains("no \"amount\" column"));
        assert!(refusal("from,to,amount,memo\n").contains("unknown column \"memo\""));
        assert!(refusal("from,to,amount\n1,2\n").starts_with("line 2:"));
        assert!(refusal("from,to,amount\n1,2,\"1,00\"\n").contains("quoted"));
        assert!(refusal("from,to,amount\n").contains("no transfers"));
    }
}
