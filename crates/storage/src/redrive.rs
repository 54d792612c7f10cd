//! Re-drive: the sender's books, not the broker, decide that a transfer is still owed
//! to its destination. A transfer that stays `debited` with no settlement report is
//! found here and claimed for one more send; a claim is a row in `redrive`, moved from
//! one attempt count to the next with a compare-and-set, so that of several instances
//! of a bank sharing the database exactly one sends each attempt.

use std::time::Duration;

use txbank_domain::{BankId, Transfer, TransferState, TxNo};

use crate::script::placeholders;
use crate::store::{is_unique_violation, now_ms, query, query_as, rows};
use crate::transfers::TransferRow;
use crate::{StorageError, Store};

/// A debited transfer whose settlement is overdue, to be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRedrive {
    /// The transfer, as debited.
    pub transfer: Transfer,
    /// How often it was sent again before.
    pub attempts: u32,
    /// When it was debited, in Unix milliseconds.
    pub debited_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct DueRow {
    #[sqlx(flatten)]
    transfer: TransferRow,
    attempts: i64,
}

impl Store {
    /// The oldest transfers to one of `to_banks` (at most `limit`) that were debited at
    /// least `overdue` ago, are still not settled, and whose next re-drive is due. Only
    /// committed debits are ever found: a transfer is `debited` only once its local
    /// transaction committed.
    pub async fn due_redrives(
        &self,
        to_banks: &[BankId],
        overdue: Duration,
        limit: u32,
    ) -> Result<Vec<DueRedrive>, StorageError> {
        if to_banks.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let sql = format!(
            "SELECT t.tx_no, t.from_account, t.to_bank, t.to_account, t.amount_cents, t.state, t.reason,
                    t.idempotency_key, t.create_time, COALESCE(r.attempts, 0) AS attempts
             FROM transfer_out t LEFT JOIN redrive r ON r.tx_no = t.tx_no
             WHERE t.state = ? AND t.create_time <= ? AND (r.next_at IS NULL OR r.next_at <= ?)
               AND t.to_bank IN ({})
             ORDER BY t.create_time LIMIT ?",
            placeholders(to_banks.len())
        );
        let mut query = query_as::<DueRow>(self.engine, &sql)
            .bind(TransferState::Debited.as_str())
            .bind(now - overdue.as_millis() as i64)
            .bind(now);
        for bank in to_banks {
            query = query.bind(bank.as_str());
        }
        let due = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        due.into_iter()
            .map(|row| {
                let record = row.transfer.into_record(&self.bank)?;
                Ok(DueRedrive {
                    transfer: record.transfer,
                    attempts: row.attempts.clamp(0, i64::from(u32::MAX)) as u32,
                    debited_at_ms: record.created_at_ms,
                })
            })
            .collect()
    }

    /// Claims the re-drive of `tx_no` after `attempts_seen` earlier ones, and puts the
    /// next one `pause` from now: true when this caller won the claim and is to send it;
    /// false when another instance claimed this attempt first.
    pub async fn claim_redrive(&self, tx_no: &TxNo, attempts_seen: u32, pause: Duration) -> Result<bool, StorageError> {
        let _turn = self.write_turn().await;
        let next_at = now_ms() + pause.as_millis() as i64;
        if attempts_seen == 0 {
            let claimed = query(
                self.engine,
                "INSERT INTO redrive (tx_no, attempts, next_at) VALUES (?, 1, ?)",
            )
            .bind(tx_no.as_str())
            .bind(next_at)
            .execute(&self.pool)
            .await;
            return match claimed {
                Ok(_) => Ok(true),
                Err(error) if is_unique_violation(&error) => Ok(false),
                Err(error) => Err(error.into()),
            };
        }
        let claimed = query(
            self.engine,
            "UPDATE redrive SET attempts = attempts + 1, next_at = ? WHERE tx_no = ? AND attempts = ?",
        )
        .bind(next_at)
        .bind(tx_no.as_str())
        .bind(i64::from(attempts_seen))
        .execute(&self.pool)
        .await?;
        Ok(rows(&claimed) == 1)
    }

    /// Forgets the re-drive claims of transfers that are settled now; answers how many.
    pub async fn forget_settled_redrives(&self) -> Result<u64, StorageError> {
        let _turn = self.write_turn().await;
        let forgotten = query(
            self.engine,
            "DELETE FROM redrive WHERE tx_no NOT IN (SELECT tx_no FROM transfer_out WHERE state = ?)",
        )
        .bind(TransferState::Debited.as_str())
        .execute(&self.pool)
        .await?;
        Ok(rows(&forgotten))
    }
}
