//! The sending side: the local transaction that debits an account and records the
//! outgoing transfer (one at a time or many together), the check-back's view of it,
//! and its rollback.

use std::collections::{BTreeMap, BTreeSet};

use txbank_domain::{IdempotencyKey, Transfer, TransferState, TxNo};

use crate::accounts::{account_in, lock_in_order, AccountRecord, DEBIT_ONE_ACCOUNT};
use crate::script::{Movement, Script, Value};
use crate::store::{is_unique_violation, now_ms, query, query_as, rows, Engine, StorageResult, Store, Transaction};
use crate::transfers::{
    credit, record_incoming, remember_all, select_transfer_out_anywhere, TransferRecord, TransferRow,
    SELECT_TRANSFER_OUT,
};
use crate::{faults, StorageError};

/// What [`Store::debit_and_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebitOutcome {
    /// The source was debited now.
    Debited,
    /// The same transaction number had already been debited; nothing changed.
    AlreadyDebited,
}

/// Debits the transfer's source inside `tx`, refusing an unknown or closed account and
/// insufficient funds.
pub(crate) async fn debit(tx: &mut Transaction, transfer: &Transfer) -> StorageResult<()> {
    let debited = query(Engine::of_connection(tx), DEBIT_ONE_ACCOUNT)
        .bind(transfer.amount.cents())
        .bind(transfer.from.as_str())
        .bind(transfer.amount.cents())
        .execute(&mut **tx)
        .await?;
    if rows(&debited) == 1 {
        return Ok(());
    }
    Err(match account_in(tx, &transfer.from).await? {
        None => StorageError::UnknownAccount(transfer.from.clone()),
        Some(account) if account.closed => StorageError::AccountClosed(account.account_no),
        Some(account) => StorageError::InsufficientFunds {
            account: account.account_no,
            balance: account.balance,
            requested: transfer.amount.money(),
        },
    })
}

/// The statements that record and debit `requests` together, at `now`: the transfers in
/// `transfer_out`, one debit per source covering its part of the sum, and their
/// `de_duplication` rows. They change what they aim at only when every one is new and
/// every source covers its part.
fn debit_script(engine: Engine, requests: &[(Transfer, Option<IdempotencyKey>)], now: i64) -> Script<'_> {
    let mut script = Script::new(engine);
    let rows = requests.iter().map(|(transfer, key)| {
        vec![
            Value::Text(transfer.tx_no.as_str()),
            Value::MaybeText(key.as_ref().map(IdempotencyKey::as_str)),
            Value::Text(transfer.from.as_str()),
            Value::Text(transfer.to_bank.as_str()),
            Value::Text(transfer.to.as_str()),
            Value::Int(transfer.amount.cents()),
            Value::Text(TransferState::Debited.as_str()),
            Value::Int(now),
        ]
    });
    script.insert_rows(
        "transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)",
        "(?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        rows,
    );
    let mut per_source: BTreeMap<&str, i64> = BTreeMap::new();
    for (transfer, _) in requests {
        *per_source.entry(transfer.from.as_str()).or_default() += transfer.amount.cents();
    }
    script.move_balances(Movement::Debit, &per_source);
    remember_all(&mut script, requests, |(transfer, _)| &transfer.tx_no, now);
    script
}

/// Commits a local transaction of debits, passing its fault points first: false when a
/// failure injected there rolled it back.
async fn commit_local_transaction(tx: Transaction) -> StorageResult<bool> {
    faults::crash_point(faults::INSIDE_LOCAL_TRANSACTION);
    faults::pause_point(faults::INSIDE_LOCAL_TRANSACTION).await;
    if faults::fail_point(faults::INSIDE_LOCAL_TRANSACTION) {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

impl Store {
    /// The bank1 side of a transfer, in one database transaction: record the transfer as
    /// debited, debit the source if its balance covers the amount, and insert the
    /// transaction number into `de_duplication`.
    ///
    /// Refuses (changing nothing) an unknown source, insufficient funds, a transaction
    /// number already rolled back, and an idempotency key that names another transfer.
    pub async fn debit_and_record(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
    ) -> StorageResult<DebitOutcome> {
        self.record_debit(transfer, key, None).await
    }

    /// [`Store::debit_and_record`], and with `queue` (the most transfers that may wait),
    /// the record in `unsent_transfer` that its message is still to be sent.
    pub(crate) async fn record_debit(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
        queue: Option<u64>,
    ) -> StorageResult<DebitOutcome> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut tx = match self.begin_recording(transfer, key, TransferState::Debited, now).await? {
            Ok(tx) => tx,
            Err(existing) => return Ok(existing),
        };
        if let Err(refusal) = debit(&mut tx, transfer).await {
            tx.rollback().await?;
            return Err(refusal);
        }
        faults::crash_point(faults::INSIDE_LOCAL_TRANSACTION);
        faults::pause_point(faults::INSIDE_LOCAL_TRANSACTION).await;
        if faults::fail_point(faults::INSIDE_LOCAL_TRANSACTION) {
            tx.rollback().await?;
            return Err(StorageError::Database(sqlx::Error::Protocol(
                "failure injected inside the local transaction".into(),
            )));
        }
        query(
            self.engine,
            "INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)",
        )
        .bind(transfer.tx_no.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(most) = queue {
            let (waiting,): (i64,) = query_as(self.engine, "SELECT COUNT(*) FROM unsent_transfer")
                .fetch_one(&mut *tx)
                .await?;
            let waiting = waiting.max(0) as u64;
            if waiting >= most {
                tx.rollback().await?;
                return Err(StorageError::QueueFull { waiting });
            }
            query(
                self.engine,
                "INSERT INTO unsent_transfer (tx_no, claimed_until, create_time) VALUES (?, 0, ?)",
            )
            .bind(transfer.tx_no.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(DebitOutcome::Debited)
    }

    /// Debits many transfers with one durable commit (group commit), each as
    /// [`Store::debit_and_record`] would, and answers each with its own outcome.
    ///
    /// The common case (new transfers, sources that cover their sum) takes one
    /// transaction of a few statements for the whole group (see [`Script`]). Anything
    /// else (a transfer or idempotency key seen before, a source that cannot cover the
    /// group, a database error) rolls that transaction back, and each transfer is then
    /// debited on its own, so that a refusal stays the refused transfer's alone.
    pub async fn debit_all(&self, requests: &[(Transfer, Option<IdempotencyKey>)]) -> Vec<StorageResult<DebitOutcome>> {
        if !requests.is_empty() {
            match self.debit_together(requests).await {
                Ok(true) => return requests.iter().map(|_| Ok(DebitOutcome::Debited)).collect(),
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, transfers = requests.len(), "group debit failed; debiting one by one")
                }
            }
        }
        let mut outcomes = Vec::with_capacity(requests.len());
        for (transfer, key) in requests {
            outcomes.push(self.debit_and_record(transfer, key.as_ref()).await);
        }
        outcomes
    }

    /// Debits every transfer of `requests` in one transaction, or none: true when
    /// committed, false (nothing changed) when any is refused or conflicts (a transfer
    /// or idempotency key seen before, a source that cannot cover its part of the sum)
    /// and needs to be debited on its own. The common case of [`Store::debit_all`].
    pub async fn debit_together(&self, requests: &[(Transfer, Option<IdempotencyKey>)]) -> StorageResult<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        if !debit_script(self.engine, requests, now_ms())
            .run_and_check(&mut tx)
            .await?
        {
            tx.rollback().await?;
            return Ok(false);
        }
        commit_local_transaction(tx).await
    }

    /// Debits the transfers of several messages with one durable commit (group commit
    /// across messages): each message's transfers all or none, as
    /// [`Store::debit_together`] would, each behind a savepoint of its own, so that a
    /// message refused is undone alone and the others commit. The sources are locked first,
    /// in order, so that two such transactions (two instances of the bank) wait for each
    /// other instead of deadlocking. Answers, per message, true
    /// when its transfers were debited. An error means the whole transaction rolled back
    /// and nothing of any message changed.
    pub async fn debit_messages(&self, messages: &[&[(Transfer, Option<IdempotencyKey>)]]) -> StorageResult<Vec<bool>> {
        if let [requests] = messages {
            // Alone, a message needs no savepoint: refused, its whole transaction goes.
            return Ok(vec![self.debit_together(requests).await?]);
        }
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if messages.len() > 1 && self.engine.locks_rows() {
            let sources: BTreeSet<&str> = messages
                .iter()
                .flat_map(|requests| requests.iter().map(|(transfer, _)| transfer.from.as_str()))
                .collect();
            lock_in_order(&mut tx, &sources).await?;
        }
        let mut debited = Vec::with_capacity(messages.len());
        for (index, requests) in messages.iter().enumerate() {
            let savepoint = format!("message_{index}");
            // On its own: SQLite counts a SAVEPOINT as changing the rows its connection's
            // previous statement changed, which would spoil the script's count.
            query(self.engine, &format!("SAVEPOINT {savepoint}"))
                .execute(&mut *tx)
                .await?;
            let whole = debit_script(self.engine, requests, now).run_and_check(&mut tx).await?;
            if !whole {
                query(self.engine, &format!("ROLLBACK TO SAVEPOINT {savepoint}"))
                    .execute(&mut *tx)
                    .await?;
            }
            debited.push(whole);
        }
        match commit_local_transaction(tx).await? {
            true => Ok(debited),
            false => Ok(vec![false; messages.len()]),
        }
    }

    /// Why `requests` cannot be debited together, read from the books as they stand: for
    /// each transfer, the refusal it meets with the group's earlier transfers from its
    /// source counted against that source's balance (an unknown or closed source, funds
    /// short of the running sum, an idempotency key taken), or `None` where it would go.
    /// Changes nothing.
    pub async fn group_refusals(
        &self,
        requests: &[(Transfer, Option<IdempotencyKey>)],
    ) -> StorageResult<Vec<Option<StorageError>>> {
        let mut sources: BTreeMap<&str, (Option<AccountRecord>, i64)> = BTreeMap::new();
        let mut refusals = Vec::with_capacity(requests.len());
        for (transfer, key) in requests {
            if let Some(key) = key {
                if let Some(existing) = self.transfer_out_by_key(key).await? {
                    refusals.push(Some(StorageError::IdempotencyKeyTaken {
                        existing: existing.transfer.tx_no,
                    }));
                    continue;
                }
            }
            let source = match sources.entry(transfer.from.as_str()) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert((self.account(&transfer.from).await?, 0))
                }
            };
            refusals.push(match &source.0 {
                None => Some(StorageError::UnknownAccount(transfer.from.clone())),
                Some(account) if account.closed => Some(StorageError::AccountClosed(account.account_no.clone())),
                Some(account) if source.1 + transfer.amount.cents() > account.balance.cents() => {
                    Some(StorageError::InsufficientFunds {
                        account: account.account_no.clone(),
                        balance: account.balance,
                        requested: transfer.amount.money(),
                    })
                }
                Some(_) => {
                    source.1 += transfer.amount.cents();
                    None
                }
            });
        }
        Ok(refusals)
    }

    /// A transfer between two accounts of this bank (a book transfer), in one database
    /// transaction: record it as credited, debit the source, credit the destination.
    /// No message is involved. Refuses what [`Store::debit_and_record`] refuses, and an
    /// unknown or closed destination, changing nothing.
    pub async fn transfer_within(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
    ) -> StorageResult<DebitOutcome> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut tx = match self
            .begin_recording(transfer, key, TransferState::Credited, now)
            .await?
        {
            Ok(tx) => tx,
            Err(existing) => return Ok(existing),
        };
        let moved = match debit(&mut tx, transfer).await {
            Ok(()) => credit(&mut tx, &transfer.to, transfer.amount).await,
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = moved {
            tx.rollback().await?;
            return Err(refusal);
        }
        record_incoming(&mut tx, transfer, None, now).await?;
        tx.commit().await?;
        Ok(DebitOutcome::Debited)
    }

    /// Opens a transaction whose first statement records `transfer` in `transfer_out` as
    /// `state`: the insert takes SQLite's write lock at once, and its primary key is what
    /// makes a concurrent check-back's rollback marker conflict. When the transfer or its
    /// idempotency key is recorded already, says what became of it instead (`Ok(Err(_))`).
    async fn begin_recording(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
        state: TransferState,
        now: i64,
    ) -> StorageResult<Result<Transaction, DebitOutcome>> {
        let mut tx = self.begin_write().await?;
        let recorded = query(self.engine,
            "INSERT INTO transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        )
        .bind(transfer.tx_no.as_str())
        .bind(key.map(|k| k.as_str().to_string()))
        .bind(transfer.from.as_str())
        .bind(transfer.to_bank.as_str())
        .bind(transfer.to.as_str())
        .bind(transfer.amount.cents())
        .bind(state.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match recorded {
            Ok(_) => Ok(Ok(tx)),
            Err(error) => {
                tx.rollback().await?;
                if !is_unique_violation(&error) {
                    return Err(error.into());
                }
                self.explain_conflict(transfer, key).await.map(Err)
            }
        }
    }

    /// Why recording a debit conflicted: the same transfer already exists, or its
    /// idempotency key belongs to another one.
    async fn explain_conflict(&self, transfer: &Transfer, key: Option<&IdempotencyKey>) -> StorageResult<DebitOutcome> {
        if let Some(existing) = self.transfer_out(&transfer.tx_no).await? {
            return match existing.state {
                TransferState::RolledBack => Err(StorageError::RolledBack(transfer.tx_no.clone())),
                _ => Ok(DebitOutcome::AlreadyDebited),
            };
        }
        if let Some(key) = key {
            if let Some(existing) = self.transfer_out_by_key(key).await? {
                return Err(StorageError::IdempotencyKeyTaken {
                    existing: existing.transfer.tx_no,
                });
            }
        }
        Err(StorageError::Corrupt(format!(
            "transfer {} conflicted with no visible row",
            transfer.tx_no
        )))
    }

    /// Settles a transfer whose local transaction did not (or may not have) committed:
    /// records it as rolled back unless it was debited, and returns the final state.
    ///
    /// The rollback row shares the debit's primary key, so once it exists a late debit
    /// can no longer commit; this is what lets check-back answer ROLLBACK for good.
    pub async fn roll_back_unless_debited(&self, transfer: &Transfer, reason: &str) -> StorageResult<TransferState> {
        let _turn = self.write_turn().await;
        let reason: String = reason.chars().take(255).collect();
        // An archived transfer was debited and settled: its number is never recorded
        // again as rolled back.
        let inserted = query(self.engine,
            "INSERT INTO transfer_out (tx_no, idempotency_key, from_account, to_bank, to_account, amount_cents, state, reason, create_time)
             SELECT ?, NULL, ?, ?, ?, ?, ?, ?, ? FROM archive_horizon
             WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM transfer_out_archive WHERE tx_no = ?)",
        )
        .bind(transfer.tx_no.as_str())
        .bind(transfer.from.as_str())
        .bind(transfer.to_bank.as_str())
        .bind(transfer.to.as_str())
        .bind(transfer.amount.cents())
        .bind(TransferState::RolledBack.as_str())
        .bind(reason)
        .bind(now_ms())
        .bind(transfer.tx_no.as_str())
        .execute(&self.pool)
        .await;
        let recorded = match inserted {
            Ok(inserted) if rows(&inserted) == 1 => return Ok(TransferState::RolledBack),
            Ok(_) => None,
            Err(error) if is_unique_violation(&error) => Some(error),
            Err(error) => return Err(error.into()),
        };
        match (self.transfer_out(&transfer.tx_no).await?, recorded) {
            (Some(existing), _) => Ok(existing.state),
            (None, Some(error)) => Err(error.into()),
            (None, None) => Err(StorageError::Corrupt("archive_horizon has no row".into())),
        }
    }

    /// The outgoing transfer with this transaction number, if any, live or archived.
    pub async fn transfer_out(&self, tx_no: &TxNo) -> StorageResult<Option<TransferRecord>> {
        let row: Option<TransferRow> = query_as(self.engine, &select_transfer_out_anywhere("tx_no"))
            .bind(tx_no.as_str())
            .bind(tx_no.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.into_record(&self.bank)).transpose()
    }

    /// The outgoing transfer made with this idempotency key, if any, live or archived.
    pub async fn transfer_out_by_key(&self, key: &IdempotencyKey) -> StorageResult<Option<TransferRecord>> {
        let row: Option<TransferRow> = query_as(self.engine, &select_transfer_out_anywhere("idempotency_key"))
            .bind(key.as_str())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.into_record(&self.bank)).transpose()
    }

    /// The latest `limit` transfers this bank sent, newest first; only those in `state`
    /// when one is given.
    pub async fn recent_transfers_out(
        &self,
        state: Option<TransferState>,
        limit: u32,
    ) -> StorageResult<Vec<TransferRecord>> {
        let sql = match state {
            Some(_) => format!("{SELECT_TRANSFER_OUT} WHERE state = ? ORDER BY create_time DESC LIMIT ?"),
            None => format!("{SELECT_TRANSFER_OUT} ORDER BY create_time DESC LIMIT ?"),
        };
        let mut query = query_as::<TransferRow>(self.engine, &sql);
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.into_iter().map(|row| row.into_record(&self.bank)).collect()
    }
}

#[cfg(test)]
mod tests {
    use txbank_domain::{AccountNo, Amount, BankId, Party, Transfer, TxNo};

    use super::debit_script;
    use crate::store::Engine;

    fn party(bank: &str, account: &str) -> Party {
        Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        }
    }

    /// On SQLite each statement is a trip to the connection's thread inside the bank's one
    /// write turn: a message's debit takes one per table, however many transfers and
    /// sources it has.
    #[test]
    fn on_sqlite_a_messages_debit_is_one_statement_per_table() {
        let requests: Vec<_> = (0..100)
            .map(|n| {
                let transfer = Transfer::new(
                    TxNo::generate(),
                    party("bank1", &format!("a{n}")),
                    party("bank2", "2"),
                    Amount::parse("1").unwrap(),
                );
                (transfer.unwrap(), None)
            })
            .collect();
        assert_eq!(debit_script(Engine::Sqlite, &requests, 0).statement_count(), 3);
        // Elsewhere: runs of 64, 32 and 4 rows into each of two tables, and one update per
        // source.
        assert_eq!(debit_script(Engine::Postgres, &requests, 0).statement_count(), 106);
    }
}
