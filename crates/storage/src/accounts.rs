//! Accounts: opening, reading and closing them, and the account row every debit and
//! credit reads.

use std::collections::BTreeSet;

use txbank_domain::{AccountName, AccountNo, Money};

use crate::script::{in_runs, placeholders};
use crate::store::{is_unique_violation, parse, query, query_as, rows, Engine, StorageResult, Store, Transaction};
use crate::StorageError;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// The account's number.
    pub account_no: AccountNo,
    /// The holder's name.
    pub account_name: String,
    /// The current balance.
    pub balance: Money,
    /// True once closed: it neither sends nor receives.
    pub closed: bool,
}

pub(crate) const SELECT_ACCOUNT: &str =
    "SELECT account_no, account_name, account_balance_cents, closed FROM account_info";

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    account_no: String,
    account_name: String,
    account_balance_cents: i64,
    closed: i64,
}

impl AccountRow {
    pub(crate) fn into_record(self) -> StorageResult<AccountRecord> {
        Ok(AccountRecord {
            account_no: parse(AccountNo::parse(&self.account_no))?,
            account_name: self.account_name,
            balance: parse(Money::from_cents(self.account_balance_cents))?,
            closed: self.closed != 0,
        })
    }
}

/// The account as `tx` sees it.
pub(crate) async fn account_in(tx: &mut Transaction, no: &AccountNo) -> StorageResult<Option<AccountRecord>> {
    let row: Option<AccountRow> = query_as(
        Engine::of_connection(tx),
        &format!("{SELECT_ACCOUNT} WHERE account_no = ?"),
    )
    .bind(no.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(AccountRow::into_record).transpose()
}

/// Debits one account, bound to (sum, account, sum): it changes the row only when the
/// account is open and holds the sum.
pub(crate) const DEBIT_ONE_ACCOUNT: &str = "UPDATE account_info SET account_balance_cents = account_balance_cents - ?
     WHERE account_no = ? AND closed = 0 AND account_balance_cents >= ?";

/// Credits one account, bound to (sum, account, the largest balance less the sum): it
/// changes the row only when the account is open and stays within the largest balance.
pub(crate) const CREDIT_ONE_ACCOUNT: &str = "UPDATE account_info SET account_balance_cents = account_balance_cents + ?
     WHERE account_no = ? AND closed = 0 AND account_balance_cents <= ?";

/// Locks the rows of `accounts` inside `tx`, in their order, on MySQL or PostgreSQL
/// (SQLite writes one transaction at a time and has no `FOR UPDATE`): a transaction whose
/// statements would otherwise take them out of order (several messages' debits, each
/// message's sorted alone) then waits for another instead of deadlocking with it.
pub(crate) async fn lock_in_order(tx: &mut Transaction, accounts: &BTreeSet<&str>) -> StorageResult<()> {
    let engine = Engine::of_connection(tx);
    let accounts: Vec<&str> = accounts.iter().copied().collect();
    for run in in_runs(&accounts) {
        let sql = format!(
            "SELECT account_no FROM account_info WHERE account_no IN ({}) ORDER BY account_no FOR UPDATE",
            placeholders(run.len())
        );
        let mut locking = query(engine, &sql);
        for account in run {
            locking = locking.bind(*account);
        }
        locking.fetch_all(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Opens an account with an opening balance unless one with this number exists.
    /// Returns true when it was created now.
    pub async fn open_account_if_absent(
        &self,
        no: &AccountNo,
        name: &AccountName,
        opening: Money,
    ) -> StorageResult<bool> {
        match self.open_account(no, name, opening, "").await {
            Ok(()) => Ok(true),
            Err(StorageError::AccountExists(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Opens an account with an opening balance (money entering the system, as the
    /// auditor counts it) and a password hash (empty: no password login); refuses a
    /// number that exists.
    pub async fn open_account(
        &self,
        no: &AccountNo,
        name: &AccountName,
        opening: Money,
        password_hash: &str,
    ) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let inserted = query(self.engine,
            "INSERT INTO account_info (account_name, account_no, account_password, account_balance_cents, opening_balance_cents)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name.as_str())
        .bind(no.as_str())
        .bind(password_hash)
        .bind(opening.cents())
        .bind(opening.cents())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Err(StorageError::AccountExists(no.clone())),
            Err(error) => Err(error.into()),
        }
    }

    /// The account with this number, if any.
    pub async fn account(&self, no: &AccountNo) -> StorageResult<Option<AccountRecord>> {
        let row: Option<AccountRow> = query_as(self.engine, &format!("{SELECT_ACCOUNT} WHERE account_no = ?"))
            .bind(no.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(AccountRow::into_record).transpose()
    }

    /// The stored password hash of an account (empty when it has none), if the account
    /// exists.
    pub async fn password_hash(&self, no: &AccountNo) -> StorageResult<Option<String>> {
        let row: Option<(String,)> = query_as(
            self.engine,
            "SELECT account_password FROM account_info WHERE account_no = ?",
        )
        .bind(no.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(hash,)| hash))
    }

    /// Every account, by number.
    pub async fn accounts(&self) -> StorageResult<Vec<AccountRecord>> {
        let rows: Vec<AccountRow> = query_as(self.engine, &format!("{SELECT_ACCOUNT} ORDER BY account_no"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AccountRow::into_record).collect()
    }

    /// Closes an account: from now on it neither sends nor receives, and transfers to it
    /// are returned to their senders. Its balance stays where it is.
    pub async fn close_account(&self, no: &AccountNo) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let closed = query(self.engine, "UPDATE account_info SET closed = 1 WHERE account_no = ?")
            .bind(no.as_str())
            .execute(&self.pool)
            .await?;
        if rows(&closed) == 0 {
            return Err(StorageError::UnknownAccount(no.clone()));
        }
        Ok(())
    }
}
