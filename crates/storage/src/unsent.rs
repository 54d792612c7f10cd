//! Payments accepted while no broker answers: the transfer is debited and recorded as
//! still to be sent, in one database transaction, and its message goes out as a plain
//! message once a broker answers (see the messaging crate's re-drive sweeper). The
//! sender's books are the outbox; a lease in `unsent_transfer` makes one instance of a
//! bank send each.

use std::time::Duration;

use txbank_domain::{IdempotencyKey, Transfer, TxNo};

use crate::script::placeholders;
use crate::sending::DebitOutcome;
use crate::store::{now_ms, query, query_as, rows, StorageResult, Store};
use crate::transfers::TransferRow;

impl Store {
    /// Debits `transfer` as [`Store::debit_and_record`] does and, in the same
    /// transaction, records that its message is still to be sent. Refuses with
    /// [`crate::StorageError::QueueFull`], changing nothing, while `most` transfers
    /// already wait.
    pub async fn debit_and_queue(
        &self,
        transfer: &Transfer,
        key: Option<&IdempotencyKey>,
        most: u64,
    ) -> StorageResult<DebitOutcome> {
        self.record_debit(transfer, key, Some(most)).await
    }

    /// The oldest transfers still to be sent that no instance is sending now, at most
    /// `limit`.
    pub async fn unsent(&self, limit: u32) -> StorageResult<Vec<Transfer>> {
        let rows: Vec<TransferRow> = query_as(
            self.engine,
            "SELECT t.tx_no, t.from_account, t.to_bank, t.to_account, t.amount_cents, t.state, t.reason,
                    t.idempotency_key, t.create_time
             FROM unsent_transfer u JOIN transfer_out t ON t.tx_no = u.tx_no
             WHERE u.claimed_until < ? ORDER BY u.create_time LIMIT ?",
        )
        .bind(now_ms())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| Ok(row.into_record(&self.bank)?.transfer))
            .collect()
    }

    /// Claims the sending of `tx_no` for `lease`: true when this caller is to send it,
    /// false when another instance claimed it first or it was sent.
    pub async fn claim_unsent(&self, tx_no: &TxNo, lease: Duration) -> StorageResult<bool> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let claimed = query(
            self.engine,
            "UPDATE unsent_transfer SET claimed_until = ? WHERE tx_no = ? AND claimed_until < ?",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(tx_no.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(rows(&claimed) == 1)
    }

    /// Gives up the claims on `tx_nos` (their send failed), so that the next try need
    /// not wait for the lease to end.
    pub async fn release_unsent(&self, tx_nos: &[TxNo]) -> StorageResult<()> {
        self.on_unsent("UPDATE unsent_transfer SET claimed_until = 0", tx_nos)
            .await
    }

    /// Forgets `tx_nos`: a broker stored their message.
    pub async fn unsent_delivered(&self, tx_nos: &[TxNo]) -> StorageResult<()> {
        self.on_unsent("DELETE FROM unsent_transfer", tx_nos).await
    }

    async fn on_unsent(&self, statement: &str, tx_nos: &[TxNo]) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        for chunk in tx_nos.chunks(500) {
            let sql = format!("{statement} WHERE tx_no IN ({})", placeholders(chunk.len()));
            let mut changing = query(self.engine, &sql).persistent(false);
            for tx_no in chunk {
                changing = changing.bind(tx_no.as_str());
            }
            changing.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// How many transfers are still to be sent, and the oldest one's age in
    /// milliseconds (0 when none).
    pub async fn unsent_backlog(&self) -> StorageResult<(i64, i64)> {
        let (count, oldest): (i64, Option<i64>) =
            query_as(self.engine, "SELECT COUNT(*), MIN(create_time) FROM unsent_transfer")
                .fetch_one(&self.pool)
                .await?;
        Ok((count, oldest.map_or(0, |oldest| (now_ms() - oldest).max(0))))
    }
}
