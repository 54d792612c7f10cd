//! The receiving side: crediting each transfer exactly once through `de_duplication`,
//! refusing what cannot be credited, queuing the settlement report, and setting aside
//! messages that cannot be read.

use std::collections::BTreeMap;

use txbank_domain::retention::may_be_archived;
use txbank_domain::{BankId, Settlement, Transfer, TransferState, TxNo};

use crate::script::{Movement, Script, Value};
use crate::settlement::{settle_in, settle_together, SettlementOutcome};
use crate::store::{
    insert_unless_present, is_unique_violation, now_ms, query, query_as, rows, Engine, StorageResult, Store,
    Transaction,
};
use crate::transfers::{credit, record_incoming, remember_all};
use crate::StorageError;

/// What [`Store::credit_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The destination was credited now.
    Credited,
    /// The destination cannot take it (unknown or closed account, balance at its
    /// maximum): recorded as refused, and the money's return to the sender queued.
    Refused(String),
    /// The transfer is older than the archive horizon and in no table of this bank, so
    /// that nothing proves it was never credited: nothing changed, and the message is to
    /// be set aside for an operator.
    PastArchiveHorizon,
    /// The transaction number was already applied; nothing changed but, when this bank
    /// recorded what it did with it, its settlement report was queued again
    /// (`reported_again`), so that a sender whose report was lost hears it.
    Duplicate {
        /// True when the report was queued again.
        reported_again: bool,
    },
}

/// A received message, for [`Store::apply_deliveries`].
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Money for one of this bank's accounts.
    Transfer(Transfer),
    /// A destination's report about a transfer this bank sent.
    Settlement {
        /// The transfer.
        tx_no: TxNo,
        /// The bank that reports.
        reporter: BankId,
        /// What it did.
        settlement: Settlement,
    },
}

impl Delivery {
    /// The outcome of a delivery applied as asked: credited, or the report applied.
    pub(crate) fn applied(&self) -> DeliveryOutcome {
        match self {
            Delivery::Transfer(_) => DeliveryOutcome::Credit(CreditOutcome::Credited),
            Delivery::Settlement { .. } => DeliveryOutcome::Settlement(SettlementOutcome::Applied),
        }
    }
}

/// What [`Store::apply_deliveries`] did with one delivery.
#[derive(Debug)]
pub enum DeliveryOutcome {
    /// What crediting the transfer did.
    Credit(CreditOutcome),
    /// What applying the report did.
    Settlement(SettlementOutcome),
    /// The report cannot apply (unknown transfer, another bank's, contradicting); nothing
    /// changed.
    BadSettlement(StorageError),
    /// Applying it failed, on its own, with nothing of it changed: for the caller to try
    /// again when [`StorageError::is_transient`], else to set aside.
    Failed(StorageError),
}

/// The receiving side of one transfer inside `tx` (see [`Store::credit_once`]). A
/// duplicate changes nothing: its `de_duplication` insert inserts nothing, and the
/// transaction goes on.
pub(crate) async fn credit_in(tx: &mut Transaction, transfer: &Transfer, now: i64) -> StorageResult<CreditOutcome> {
    let engine = Engine::of_connection(tx);
    if may_be_archived(&transfer.tx_no, now) {
        let (horizon,): (i64,) = query_as(engine, "SELECT before_ms FROM archive_horizon WHERE id = 1")
            .fetch_one(&mut **tx)
            .await?;
        let made_at = transfer.tx_no.made_at_ms();
        if horizon > 0 && made_at.is_none_or(|made_at| made_at < horizon) {
            // Its de-duplication row may be archived away: the archive says instead.
            if report_again(tx, &transfer.tx_no, now).await? {
                return Ok(CreditOutcome::Duplicate { reported_again: true });
            }
            if made_at.is_some() {
                return Ok(CreditOutcome::PastArchiveHorizon);
            }
        }
    }
    let first_time = insert_unless_present(engine, "INSERT INTO de_duplication (tx_no, create_time) VALUES (?, ?)")
        .bind(transfer.tx_no.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await;
    match first_time {
        Ok(inserted) if rows(&inserted) == 1 => {}
        Ok(_) => {
            let reported_again = report_again(tx, &transfer.tx_no, now).await?;
            return Ok(CreditOutcome::Duplicate { reported_again });
        }
        Err(error) if is_unique_violation(&error) => {
            let reported_again = report_again(tx, &transfer.tx_no, now).await?;
            return Ok(CreditOutcome::Duplicate { reported_again });
        }
        Err(error) => return Err(error.into()),
    }
    let (settlement, outcome) = match credit(tx, &transfer.to, transfer.amount).await {
        Ok(()) => (Settlement::Credited, CreditOutcome::Credited),
        Err(refusal) if !refusal.is_transient() => {
            let reason = refusal.to_string();
            (
                Settlement::Returned { reason: reason.clone() },
                CreditOutcome::Refused(reason),
            )
        }
        Err(error) => return Err(error),
    };
    let reason = match &settlement {
        Settlement::Credited => None,
        Settlement::Returned { reason } => Some(reason.as_str()),
    };
    record_incoming(tx, transfer, reason, now).await?;
    query(
        engine,
        "INSERT INTO settlement_outbox (tx_no, to_bank, outcome, reason, create_time) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(transfer.tx_no.as_str())
    .bind(transfer.from_bank.as_str())
    .bind(settlement.final_state().as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(outcome)
}

/// Queues again, inside `tx`, the settlement report of a transfer this bank received
/// before (live or archived), from what it recorded (credited or refused), to the bank
/// it recorded as the sender; true when there was one to queue. A report still waiting
/// in the outbox stays as it is.
pub(crate) async fn report_again(tx: &mut Transaction, tx_no: &TxNo, now: i64) -> StorageResult<bool> {
    let engine = Engine::of_connection(tx);
    let recorded: Option<(String, String, Option<String>)> = query_as(
        engine,
        "SELECT from_bank, state, reason FROM transfer_in WHERE tx_no = ?
         UNION ALL SELECT from_bank, state, reason FROM transfer_in_archive WHERE tx_no = ?",
    )
    .bind(tx_no.as_str())
    .bind(tx_no.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((from_bank, state, reason)) = recorded else {
        return Ok(false);
    };
    let outcome = match state.as_str() {
        "refused" => TransferState::Returned,
        _ => TransferState::Credited,
    };
    let queued = insert_unless_present(
        engine,
        "INSERT INTO settlement_outbox (tx_no, to_bank, outcome, reason, create_time) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(tx_no.as_str())
    .bind(from_bank)
    .bind(outcome.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await;
    match queued {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// Adds to `script` the statements that credit `transfers` as [`credit_in`] would each,
/// a few for all: a multi-row insert per table and one update per destination account.
/// They change every row they aim at only when no transfer needs its own answer (seen
/// before, or an account that cannot take its sum).
pub(crate) fn credit_together<'a>(script: &mut Script<'a>, transfers: &'a [&'a Transfer], now: i64) {
    remember_all(script, transfers, |transfer| &transfer.tx_no, now);
    let mut per_account: BTreeMap<&str, i64> = BTreeMap::new();
    for transfer in transfers {
        *per_account.entry(transfer.to.as_str()).or_default() += transfer.amount.cents();
    }
    script.move_balances(Movement::Credit, &per_account);
    let rows = transfers.iter().map(|transfer| {
        vec![
            Value::Text(transfer.tx_no.as_str()),
            Value::Text(transfer.from_bank.as_str()),
            Value::Text(transfer.from.as_str()),
            Value::Text(transfer.to.as_str()),
            Value::Int(transfer.amount.cents()),
            Value::Text(TransferState::Credited.as_str()),
            Value::Int(now),
        ]
    });
    script.insert_rows(
        "transfer_in (tx_no, from_bank, from_account, to_account, amount_cents, state, reason, create_time)",
        "(?, ?, ?, ?, ?, ?, NULL, ?)",
        rows,
    );
    let reports = transfers.iter().map(|transfer| {
        vec![
            Value::Text(transfer.tx_no.as_str()),
            Value::Text(transfer.from_bank.as_str()),
            Value::Text(Settlement::Credited.final_state().as_str()),
            Value::Int(now),
        ]
    });
    script.insert_rows(
        "settlement_outbox (tx_no, to_bank, outcome, reason, create_time)",
        "(?, ?, ?, NULL, ?)",
        reports,
    );
}

impl Store {
    /// The receiving side of a transfer, in one database transaction: insert the
    /// transaction number into `de_duplication` (a duplicate stops here and changes
    /// nothing), credit the destination, record the incoming transfer, and queue the
    /// "credited" report to the sender in `settlement_outbox`.
    ///
    /// A destination that cannot take the money (unknown, closed, at its maximum) is
    /// not retried: the transfer is recorded as refused and a "returned" report queued
    /// instead, so the sender credits its source back.
    pub async fn credit_once(&self, transfer: &Transfer) -> StorageResult<CreditOutcome> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let outcome = credit_in(&mut tx, transfer, now_ms()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a received message that was set aside (never applied): once per message
    /// id, counting its deliveries.
    pub async fn record_set_aside(&self, message_id: &str, key: &str, reason: &str, detail: &str) -> StorageResult<()> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let detail: String = detail.chars().take(255).collect();
        let key: String = key.chars().take(128).collect();
        let counted = query(self.engine,
            "UPDATE set_aside SET deliveries = deliveries + 1, last_seen = ?, reason = ?, detail = ? WHERE message_id = ?",
        )
        .bind(now)
        .bind(reason)
        .bind(detail.as_str())
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        if rows(&counted) == 1 {
            return Ok(());
        }
        let inserted = query(
            self.engine,
            "INSERT INTO set_aside (message_id, message_key, reason, detail, deliveries, first_seen, last_seen)
             VALUES (?, ?, ?, ?, 1, ?, ?)",
        )
        .bind(message_id)
        .bind(key)
        .bind(reason)
        .bind(detail)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            // A concurrent delivery of the same message inserted it first.
            Err(error) if is_unique_violation(&error) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Applies a batch of received messages in one database transaction, so that one
    /// durable commit covers them all (group commit): each transfer as
    /// [`Store::credit_once`] would, each settlement report as
    /// [`Store::apply_settlement`] would. A report that cannot apply is answered in its
    /// place and changes nothing. When the batch fails, each delivery is applied again in
    /// a transaction of its own, so that one that fails ([`DeliveryOutcome::Failed`])
    /// never holds back the others.
    pub async fn apply_deliveries(&self, deliveries: &[Delivery]) -> StorageResult<Vec<DeliveryOutcome>> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let late = deliveries.iter().any(|delivery| match delivery {
            Delivery::Transfer(transfer) => may_be_archived(&transfer.tx_no, now),
            Delivery::Settlement { .. } => false,
        });
        // A transfer that may be archived is checked against the archive, one by one.
        if !deliveries.is_empty() && !late {
            match self.apply_together(deliveries, now).await {
                Ok(true) => return Ok(deliveries.iter().map(Delivery::applied).collect()),
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, deliveries = deliveries.len(), "group apply failed; applying one by one")
                }
            }
        }
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut failure = None;
        for delivery in deliveries {
            match self.apply_in(&mut tx, delivery, now).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        match failure {
            None => {
                tx.commit().await?;
                return Ok(outcomes);
            }
            Some(error) if deliveries.len() == 1 => {
                tx.rollback().await?;
                return Ok(vec![DeliveryOutcome::Failed(error)]);
            }
            Some(error) => {
                tx.rollback().await?;
                tracing::debug!(%error, deliveries = deliveries.len(), "batch failed; applying each on its own");
            }
        }
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let mut tx = self.begin_write().await?;
            match self.apply_in(&mut tx, delivery, now).await {
                Ok(outcome) => {
                    tx.commit().await?;
                    outcomes.push(outcome);
                }
                Err(error) => {
                    tx.rollback().await?;
                    outcomes.push(DeliveryOutcome::Failed(error));
                }
            }
        }
        Ok(outcomes)
    }

    /// Applies one delivery inside `tx`; an error means `tx` is to be rolled back.
    async fn apply_in(&self, tx: &mut Transaction, delivery: &Delivery, now: i64) -> StorageResult<DeliveryOutcome> {
        Ok(match delivery {
            Delivery::Transfer(transfer) => DeliveryOutcome::Credit(credit_in(tx, transfer, now).await?),
            Delivery::Settlement {
                tx_no,
                reporter,
                settlement,
            } => match settle_in(tx, self.engine, &self.bank, tx_no, reporter, settlement).await {
                Ok(outcome) => DeliveryOutcome::Settlement(outcome),
                Err(error @ StorageError::Database(_)) => return Err(error),
                Err(refusal) => DeliveryOutcome::BadSettlement(refusal),
            },
        })
    }

    /// The common case of [`Store::apply_deliveries`] in one transaction of a few
    /// statements for the whole batch (a multi-row insert per table, one update per
    /// destination account and per reporting bank): new transfers to open accounts that
    /// can take their sum, and "credited" reports about transfers still debited. True when
    /// committed; false (nothing changed) when any delivery needs its own answer.
    async fn apply_together(&self, deliveries: &[Delivery], now: i64) -> StorageResult<bool> {
        let mut transfers = Vec::new();
        let mut reports: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for delivery in deliveries {
            match delivery {
                Delivery::Transfer(transfer) => transfers.push(transfer),
                Delivery::Settlement {
                    tx_no,
                    reporter,
                    settlement: Settlement::Credited,
                } => reports.entry(reporter.as_str()).or_default().push(tx_no.as_str()),
                // A return credits the source back: one by one.
                Delivery::Settlement { .. } => return Ok(false),
            }
        }
        let mut script = Script::new(self.engine);
        credit_together(&mut script, &transfers, now);
        settle_together(&mut script, &reports);
        let mut tx = self.begin_write().await?;
        let applied = script.run_and_check(&mut tx).await?;
        if applied {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(applied)
    }
}
