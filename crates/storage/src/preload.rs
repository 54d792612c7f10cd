//! Books filled before a benchmark (`txbank bench --preload`): accounts opened in bulk,
//! and settled transfers recorded on both sides as the system would have recorded them,
//! with the balances they moved, so that the auditor finds the books clean.

use std::collections::BTreeMap;

use txbank_domain::{AccountName, AccountNo, Amount, Money, Transfer, TransferState, TxNo};

use crate::archive::Side;
use crate::script::{Script, Value};
use crate::store::{StorageResult, Store};
use crate::StorageError;

/// The most rows one statement inserts.
const ROWS_PER_STATEMENT: usize = 500;

/// A settled transfer and when it was made, Unix milliseconds.
pub type PastTransfer = (Transfer, i64);

/// The books [`fill_books`] makes.
#[derive(Debug, Clone, Copy)]
pub struct Preload {
    /// Settled transfers from the sending bank to the receiving one.
    pub transfers: u64,
    /// Accounts opened in each bank (`pre-1`, `pre-2`, ...), 1,000,000.00 each.
    pub accounts: u64,
    /// The transfers are made evenly over `from_ms..to_ms`, Unix milliseconds.
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// Picks the accounts and amounts (0.01 to 1.00), the same for the same seed.
    pub seed: u64,
}

/// Transfers recorded by one transaction of [`fill_books`].
const TRANSFERS_PER_TRANSACTION: usize = 20_000;

/// Fills `sender`'s and `receiver`'s books as `plan` says: opens its accounts in both,
/// then records its transfers, from a random account of `sender` to a random one of
/// `receiver`, as sent and credited; `progress` hears the transfers recorded so far.
pub async fn fill_books(sender: &Store, receiver: &Store, plan: &Preload, progress: impl Fn(u64)) -> StorageResult<()> {
    if plan.accounts == 0 {
        return Err(StorageError::Corrupt("books need at least one account to fill".into()));
    }
    let numbers: Vec<AccountNo> = (1..=plan.accounts)
        .map(|i| AccountNo::parse(&format!("pre-{i}")))
        .collect::<Result<_, _>>()
        .map_err(|error| StorageError::Corrupt(error.to_string()))?;
    let name = AccountName::parse("preloaded").map_err(|error| StorageError::Corrupt(error.to_string()))?;
    let opening = Money::from_cents(100_000_000).map_err(|error| StorageError::Corrupt(error.to_string()))?;
    for store in [sender, receiver] {
        for chunk in numbers.chunks(TRANSFERS_PER_TRANSACTION) {
            store.open_accounts_in_bulk(chunk, &name, opening).await?;
        }
    }
    let mut random = plan.seed;
    let mut next = move || {
        // SplitMix64: fast, and the same books for the same seed.
        random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = random;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let span = (plan.to_ms - plan.from_ms).max(0) as u64;
    let mut made = 0;
    while made < plan.transfers {
        let count = (plan.transfers - made).min(TRANSFERS_PER_TRANSACTION as u64);
        let batch: Vec<PastTransfer> = (made..made + count)
            .map(|i| {
                let at = plan.from_ms + (span * i / plan.transfers.max(1)) as i64;
                let transfer = Transfer {
                    tx_no: TxNo::generate_at(at),
                    from_bank: sender.bank().clone(),
                    from: numbers[(next() % plan.accounts) as usize].clone(),
                    to_bank: receiver.bank().clone(),
                    to: numbers[(next() % plan.accounts) as usize].clone(),
                    amount: Amount::from_cents(1 + (next() % 100) as i64).expect("1 to 100 cents"),
                };
                (transfer, at)
            })
            .collect();
        sender.preload_sent(&batch).await?;
        receiver.preload_received(&batch).await?;
        made += count;
        progress(made);
    }
    Ok(())
}

impl Store {
    /// Opens an account for each of `numbers`, all named `name` with `opening` each, in
    /// one transaction; refuses (changing nothing) when any number exists.
    pub async fn open_accounts_in_bulk(
        &self,
        numbers: &[AccountNo],
        name: &AccountName,
        opening: Money,
    ) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        for chunk in numbers.chunks(ROWS_PER_STATEMENT) {
            let mut script = Script::new(self.engine);
            script.insert_rows_at_once(
                "account_info (account_name, account_no, account_password, account_balance_cents, opening_balance_cents)",
                "(?, ?, '', ?, ?)",
                chunk.iter().map(|no| {
                    vec![
                        Value::Text(name.as_str()),
                        Value::Text(no.as_str()),
                        Value::Int(opening.cents()),
                        Value::Int(opening.cents()),
                    ]
                }),
            );
            script.execute_all(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records `transfers`, sent by this bank, as debited and credited by their
    /// destination long ago: a `transfer_out` row in state `credited` and a
    /// `de_duplication` row each, and their sources debited, in one transaction.
    pub async fn preload_sent(&self, transfers: &[PastTransfer]) -> StorageResult<()> {
        self.preload(transfers, Side::Sent).await
    }

    /// Records `transfers`, received by this bank, as credited long ago: a `transfer_in`
    /// row and a `de_duplication` row each, and their destinations credited, in one
    /// transaction (their reports long sent).
    pub async fn preload_received(&self, transfers: &[PastTransfer]) -> StorageResult<()> {
        self.preload(transfers, Side::Received).await
    }

    async fn preload(&self, transfers: &[PastTransfer], side: Side) -> StorageResult<()> {
        let credited = TransferState::Credited.as_str();
        let mut moved: BTreeMap<&str, i64> = BTreeMap::new();
        for (transfer, _) in transfers {
            let account = match side {
                Side::Sent => transfer.from.as_str(),
                Side::Received => transfer.to.as_str(),
            };
            *moved.entry(account).or_default() += transfer.amount.cents();
        }
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        for chunk in transfers.chunks(ROWS_PER_STATEMENT) {
            let mut script = Script::new(self.engine);
            let into = format!("{} ({})", side.table(), side.columns());
            match side {
                Side::Sent => script.insert_rows_at_once(
                    &into,
                    "(?, NULL, ?, ?, ?, ?, ?, NULL, ?)",
                    chunk.iter().map(|(transfer, at)| {
                        vec![
                            Value::Text(transfer.tx_no.as_str()),
                            Value::Text(transfer.from.as_str()),
                            Value::Text(transfer.to_bank.as_str()),
                            Value::Text(transfer.to.as_str()),
                            Value::Int(transfer.amount.cents()),
                            Value::Text(credited),
                            Value::Int(*at),
                        ]
                    }),
                ),
                Side::Received => script.insert_rows_at_once(
                    &into,
                    "(?, ?, ?, ?, ?, ?, NULL, ?)",
                    chunk.iter().map(|(transfer, at)| {
                        vec![
                            Value::Text(transfer.tx_no.as_str()),
                            Value::Text(transfer.from_bank.as_str()),
                            Value::Text(transfer.from.as_str()),
                            Value::Text(transfer.to.as_str()),
                            Value::Int(transfer.amount.cents()),
                            Value::Text(credited),
                            Value::Int(*at),
                        ]
                    }),
                ),
            }
            script.insert_rows_at_once(
                "de_duplication (tx_no, create_time)",
                "(?, ?)",
                chunk
                    .iter()
                    .map(|(transfer, at)| vec![Value::Text(transfer.tx_no.as_str()), Value::Int(*at)]),
            );
            script.execute_all(&mut tx).await?;
        }
        let sign = match side {
            Side::Sent => "-",
            Side::Received => "+",
        };
        let accounts: Vec<(&str, i64)> = moved.into_iter().collect();
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let mut script = Script::new(self.engine);
            for (account, cents) in chunk {
                script.push(
                    format!("UPDATE account_info SET account_balance_cents = account_balance_cents {sign} ? WHERE account_no = ?"),
                    vec![Value::Int(*cents), Value::Text(account)],
                    1,
                );
            }
            if !script.run_and_check(&mut tx).await? {
                return Err(StorageError::Corrupt(
                    "a preloaded transfer names an account that does not exist".into(),
                ));
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
