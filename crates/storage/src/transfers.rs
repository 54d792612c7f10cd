//! What the sending, receiving and settlement sides share about transfers: the rows
//! of `transfer_out` and how they read, and the statements that credit an account and
//! record a transfer inside a caller's transaction.

use std::str::FromStr;

use txbank_domain::{AccountNo, Amount, BankId, Transfer, TransferState, TxNo};

use crate::accounts::{account_in, CREDIT_ONE_ACCOUNT};
use crate::script::{Script, Value};
use crate::store::{parse, query, rows, Engine, StorageResult, Transaction, MAX_BALANCE_CENTS};
use crate::StorageError;

/// An outgoing transfer as the sending bank recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The transfer itself.
    pub transfer: Transfer,
    /// Where it stands.
    pub state: TransferState,
    /// Why it was rolled back, when it was.
    pub reason: Option<String>,
    /// The client's idempotency key, when one was given.
    pub idempotency_key: Option<String>,
    /// When it was recorded, in Unix milliseconds.
    pub created_at_ms: i64,
}

pub(crate) const SELECT_TRANSFER_OUT: &str =
    "SELECT tx_no, from_account, to_bank, to_account, amount_cents, state, reason, idempotency_key, create_time FROM transfer_out";

/// The sent transfer whose `column` equals a value bound twice, live or archived: one
/// statement, so that it sees the transfer in one of the two even while it is archived.
pub(crate) fn select_transfer_out_anywhere(column: &str) -> String {
    format!("{SELECT_TRANSFER_OUT} WHERE {column} = ? UNION ALL {SELECT_TRANSFER_OUT}_archive WHERE {column} = ?")
}

#[derive(sqlx::FromRow)]
pub(crate) struct TransferRow {
    tx_no: String,
    from_account: String,
    to_bank: String,
    to_account: String,
    amount_cents: i64,
    state: String,
    reason: Option<String>,
    idempotency_key: Option<String>,
    create_time: i64,
}

impl TransferRow {
    /// The record of a transfer sent by `bank`.
    pub(crate) fn into_record(self, bank: &BankId) -> StorageResult<TransferRecord> {
        let transfer = Transfer {
            tx_no: parse(TxNo::parse(&self.tx_no))?,
            from_bank: bank.clone(),
            from: parse(AccountNo::parse(&self.from_account))?,
            to_bank: parse(BankId::parse(&self.to_bank))?,
            to: parse(AccountNo::parse(&self.to_account))?,
            amount: parse(Amount::from_cents(self.amount_cents))?,
        };
        let state = TransferState::from_str(&self.state).map_err(StorageError::Corrupt)?;
        Ok(TransferRecord {
            transfer,
            state,
            reason: self.reason,
            idempotency_key: self.idempotency_key,
            created_at_ms: self.create_time,
        })
    }
}

/// Adds to `script` the multi-row inserts of each item's transaction number into
/// `de_duplication`; a number seen before fails the script with a unique violation.
pub(crate) fn remember_all<'a, T>(
    script: &mut Script<'a>,
    items: &'a [T],
    tx_no: impl Fn(&'a T) -> &'a TxNo,
    now: i64,
) {
    let rows = items
        .iter()
        .map(|item| vec![Value::Text(tx_no(item).as_str()), Value::Int(now)]);
    script.insert_rows("de_duplication (tx_no, create_time)", "(?, ?)", rows);
}

/// Credits `amount` to `account` inside `tx`, refusing an unknown or closed account
/// and a balance that would pass its maximum.
pub(crate) async fn credit(tx: &mut Transaction, account: &AccountNo, amount: Amount) -> StorageResult<()> {
    let credited = query(Engine::of_connection(tx), CREDIT_ONE_ACCOUNT)
        .bind(amount.cents())
        .bind(account.as_str())
        .bind(MAX_BALANCE_CENTS - amount.cents())
        .execute(&mut **tx)
        .await?;
    if rows(&credited) == 1 {
        return Ok(());
    }
    Err(match account_in(tx, account).await? {
        None => StorageError::UnknownAccount(account.clone()),
        Some(found) if found.closed => StorageError::AccountClosed(found.account_no),
        Some(_) => StorageError::BalanceOverflow {
            account: account.clone(),
            amount: amount.money(),
        },
    })
}

/// Records a received transfer inside `tx`: credited, or refused for `refusal`.
pub(crate) async fn record_incoming(
    tx: &mut Transaction,
    transfer: &Transfer,
    refusal: Option<&str>,
    now: i64,
) -> StorageResult<()> {
    let state = if refusal.is_some() {
        "refused"
    } else {
        TransferState::Credited.as_str()
    };
    query(
        Engine::of_connection(tx),
        "INSERT INTO transfer_in (tx_no, from_bank, from_account, to_account, amount_cents, state, reason, create_time)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(transfer.tx_no.as_str())
    .bind(transfer.from_bank.as_str())
    .bind(transfer.from.as_str())
    .bind(transfer.to.as_str())
    .bind(transfer.amount.cents())
    .bind(state)
    .bind(refusal.map(|r| r.chars().take(255).collect::<String>()))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
