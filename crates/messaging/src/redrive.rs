//! Re-drive: delivery that does not depend on the broker keeping every message. A
//! transfer debited here stays `debited` until its destination reports on it; when no
//! report came within `redrive_after` (the message was lost with a broker's store,
//! expired, dead-lettered, or its report was lost on the way back), its message is sent
//! again from this bank's own books, same `tx_no` and body, signed, with pauses that
//! double up to [`LONGEST_PAUSE`], until the report arrives. The destination absorbs a
//! transfer it already applied and reports on it again. The same sweeper sends the
//! messages of payments debited while no broker answered (`Store::debit_and_queue`),
//! within half a second of a broker answering again, without waiting for re-drive.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::MessageConst;
use tracing::{debug, info, warn};
use txbank_domain::{BankId, Transfer};
use txbank_storage::{DueRedrive, Store};

use crate::consumer::since_unix_ms;
use crate::metrics::{Counters, Event};
use crate::publish::start_plain_producer;
use crate::signing::MessageSigner;
use crate::tasks::{PartTask, Tasks};
use crate::{wire, MessagingError, MqClient, MqSettings, Routes};

/// The longest pause between two re-drives of one transfer (or `redrive_after`, when
/// that is longer): once the faults end, every transfer is sent again within it.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(60);

/// Most overdue transfers read from the database in one sweep.
const SWEEP_LIMIT: u32 = 1024;

/// How long an instance holds the sending of a queued payment's message.
const UNSENT_LEASE: Duration = Duration::from_secs(30);

/// How soon the sweeper looks again while payments wait for a broker.
const UNSENT_EVERY: Duration = Duration::from_millis(500);

/// How often settled transfers' claims are removed from the `redrive` table.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The pause before the re-drive that follows the `attempt`-th (1 for the first):
/// `after`, doubling with every attempt, at most [`LONGEST_PAUSE`] (or `after`).
pub fn pause_after(after: Duration, attempt: u32) -> Duration {
    let longest = after.max(LONGEST_PAUSE);
    let doublings = attempt.saturating_sub(1).min(20);
    after.saturating_mul(1 << doublings).min(longest)
}

/// The running re-drive of one bank.
pub struct Redriver {
    task: PartTask,
}

impl Redriver {
    /// Starts re-driving `store`'s transfers to the reporting banks of `routes` that
    /// stay unsettled for `after`, counting each in `counters`.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        routes: Routes,
        store: Store,
        after: Duration,
        counters: Arc<Counters>,
    ) -> Result<Redriver, MessagingError> {
        let producer = start_plain_producer(client, settings, &format!("txbank_redrive_{}", store.bank())).await?;
        let sweeper = Sweeper {
            producer,
            routes,
            store,
            after,
            per_message: settings.transfers_per_message.max(1),
            signer: settings.signer.clone(),
            counters,
            queueing: AtomicBool::new(false),
        };
        let task = PartTask::spawn(&settings.tasks, |stop| sweeper.run(stop));
        Ok(Redriver { task })
    }

    /// Stops after the sweep under way.
    pub async fn shutdown(self) {
        self.task.stop().await;
    }
}

struct Sweeper {
    producer: DefaultMQProducer,
    routes: Routes,
    store: Store,
    after: Duration,
    per_message: usize,
    signer: MessageSigner,
    counters: Arc<Counters>,
    /// Whether payments were waiting for a broker at the last sweep.
    queueing: AtomicBool,
}

impl Sweeper {
    /// Sweeps until `stop` is cancelled; each sweep also credits held returns back to the
    /// accounts that can take them now.
    async fn run(mut self, stop: Tasks) {
        let every = (self.after / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut last_forget = Instant::now();
        loop {
            let more = match self.sweep().await {
                Ok(more) => more,
                Err(error) => {
                    warn!(%error, "cannot re-drive unsettled transfers now; will retry");
                    false
                }
            };
            if last_forget.elapsed() >= FORGET_EVERY {
                last_forget = Instant::now();
                if let Err(error) = self.store.forget_settled_redrives().await {
                    debug!(%error, "cannot forget settled re-drives now");
                }
            }
            if let Err(error) = self.store.release_held_returns().await {
                debug!(%error, "cannot release held returns now");
            }
            let queued = match self.send_unsent().await {
                Ok(waiting) => waiting,
                Err(error) => {
                    warn!(%error, "cannot send queued payments now; will retry");
                    true
                }
            };
            if stop.is_cancelled() {
                break;
            }
            if more {
                continue;
            }
            let pause = if queued { UNSENT_EVERY } else { every };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
        }
        self.producer.shutdown().await;
    }

    /// Claims the overdue transfers and sends them again; true when the sweep was full
    /// (more may be due).
    async fn sweep(&self) -> Result<bool, MessagingError> {
        let due = self
            .store
            .due_redrives(&self.routes.reporting(), self.after, SWEEP_LIMIT)
            .await
            .map_err(|e| MessagingError::client("re-drive", e))?;
        let full = due.len() == SWEEP_LIMIT as usize;
        let mut claimed: BTreeMap<BankId, Vec<Transfer>> = BTreeMap::new();
        for DueRedrive {
            transfer,
            attempts,
            debited_at_ms,
        } in due
        {
            let attempt = attempts + 1;
            let won = self
                .store
                .claim_redrive(&transfer.tx_no, attempts, pause_after(self.after, attempt))
                .await
                .map_err(|e| MessagingError::client("re-drive claim", e))?;
            if won {
                let age_s = since_unix_ms(debited_at_ms).as_secs_f64();
                warn!(tx_no = %transfer.tx_no, to_bank = %transfer.to_bank, attempt, age_s, "no settlement yet; re-driving the transfer");
                claimed.entry(transfer.to_bank.clone()).or_default().push(transfer);
            }
        }
        for (to_bank, transfers) in claimed {
            for message in transfers.chunks(self.per_message) {
                match self.send(&to_bank, message).await {
                    Ok(()) => {
                        for _ in message {
                            self.counters.record(Event::Redriven);
                        }
                    }
                    Err(error) => {
                        warn!(%to_bank, transfers = message.len(), %error, "re-drive not sent; will try again after its pause")
                    }
                }
            }
        }
        Ok(full)
    }

    /// Sends the messages of payments debited while no broker answered, oldest first,
    /// each claimed first so that one instance sends it; true while some still wait.
    /// Logs when payments start and stop waiting.
    async fn send_unsent(&self) -> Result<bool, MessagingError> {
        let storage = |e| MessagingError::client("queued payments", e);
        let mut claimed: BTreeMap<BankId, Vec<Transfer>> = BTreeMap::new();
        for transfer in self.store.unsent(SWEEP_LIMIT).await.map_err(storage)? {
            if self
                .store
                .claim_unsent(&transfer.tx_no, UNSENT_LEASE)
                .await
                .map_err(storage)?
            {
                claimed.entry(transfer.to_bank.clone()).or_default().push(transfer);
            }
        }
        for (to_bank, transfers) in claimed {
            for message in transfers.chunks(self.per_message) {
                let tx_nos: Vec<_> = message.iter().map(|transfer| transfer.tx_no.clone()).collect();
                match self.send(&to_bank, message).await {
                    Ok(()) => self.store.unsent_delivered(&tx_nos).await.map_err(storage)?,
                    Err(error) => {
                        debug!(%to_bank, transfers = message.len(), %error, "queued payments not sent yet");
                        self.store.release_unsent(&tx_nos).await.map_err(storage)?;
                    }
                }
            }
        }
        let (waiting, oldest_ms) = self.store.unsent_backlog().await.map_err(storage)?;
        let was_queueing = self.queueing.swap(waiting > 0, Ordering::Relaxed);
        if waiting > 0 && !was_queueing {
            warn!(
                waiting,
                "payments queued: no broker takes their messages; sending them the moment one does"
            );
        } else if waiting == 0 && was_queueing {
            info!("every queued payment's message was taken by a broker");
        }
        if waiting > 0 {
            debug!(waiting, oldest_s = oldest_ms as f64 / 1000.0, "payments still queued");
        }
        Ok(waiting > 0)
    }

    /// Sends `transfers` (all to `to_bank`) again as one plain message, keyed by each
    /// `tx_no`: their debits are committed, so no half message is needed.
    async fn send(&self, to_bank: &BankId, transfers: &[Transfer]) -> Result<(), MessagingError> {
        let keys: Vec<&str> = transfers.iter().map(|transfer| transfer.tx_no.as_str()).collect();
        let message = self.signer.message(
            to_bank,
            self.routes.topic(to_bank)?,
            &keys.join(MessageConst::KEY_SEPARATOR),
            wire::encode_transfers(transfers),
        )?;
        self.producer
            .send(message)
            .await
            .map_err(|e| MessagingError::client("re-drive send", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_redrive_after_up_to_a_minute() {
        let after = Duration::from_secs(5);
        let pauses: Vec<u64> = (1..=6).map(|n| pause_after(after, n).as_secs()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 60, 60]);
        assert_eq!(pause_after(after, u32::MAX), LONGEST_PAUSE);
    }

    #[test]
    fn a_redrive_after_longer_than_a_minute_is_its_own_pause() {
        let after = Duration::from_secs(300);
        assert_eq!(pause_after(after, 1), after);
        assert_eq!(pause_after(after, 9), after);
    }
}
