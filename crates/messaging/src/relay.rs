//! The settlement relay: sends the reports a bank's credits and refusals queued in its
//! outbox to the sending banks, a batch per bank, every bank at once, and removes them once the broker
//! stored them (see [`Store::relay_outbox`] for how a bank's instances share the
//! outbox). A crash between the send and the removal sends reports twice; their
//! receiver absorbs that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::MessageConst;
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use txbank_domain::BankId;
use txbank_storage::{PendingSettlement, Store};

use crate::metrics::{BrokerCall, Counters, Timing};
use crate::publish::start_plain_producer;
use crate::signing::MessageSigner;
use crate::tasks::{PartTask, Tasks};
use crate::{wire, MessagingError, MqClient, MqSettings, Routes};

/// Most reports to one bank read from the outbox at once, and sent in one message.
const BATCH: u32 = 256;
/// How long the relay sleeps when nothing told it about new reports.
const IDLE: Duration = Duration::from_secs(1);
/// How long the relay waits, once told about a new report, for more to join it: each
/// round costs a read, a broker request and a durable commit here, and a consumer
/// callback and a write transaction in the sender, whatever its size. 20 ms rather than
/// 5 made the sender's one SQLite writer free for its debits more often: +12 % at 64
/// clients (docs/PERFORMANCE.md).
const LINGER: Duration = Duration::from_millis(20);

/// The running relay of one bank.
pub struct SettlementRelay {
    queued: Arc<Notify>,
    task: PartTask,
}

impl SettlementRelay {
    /// Starts relaying `store`'s outbox along `routes`, timing each send in `counters`.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        routes: Routes,
        store: Store,
        counters: Arc<Counters>,
    ) -> Result<SettlementRelay, MessagingError> {
        let producer = start_plain_producer(client, settings, &format!("txbank_settlements_{}", store.bank())).await?;
        let queued = Arc::new(Notify::new());
        let relay = Relay {
            producer,
            routes,
            store,
            signer: settings.signer.clone(),
            counters,
        };
        let notified = Arc::clone(&queued);
        let task = PartTask::spawn(&settings.tasks, |stop| relay.run(notified, stop));
        Ok(SettlementRelay { queued, task })
    }

    /// What to notify when a report was queued, so the relay sends it at once.
    pub fn queued(&self) -> Arc<Notify> {
        Arc::clone(&self.queued)
    }

    /// Stops the relay after the report it is sending; the rest stay queued.
    pub async fn shutdown(self) {
        self.task.stop().await;
    }
}

struct Relay {
    producer: DefaultMQProducer,
    routes: Routes,
    store: Store,
    signer: MessageSigner,
    counters: Arc<Counters>,
}

impl Relay {
    async fn run(mut self, queued: Arc<Notify>, stop: Tasks) {
        loop {
            let full_batch_sent = self.send_batch().await;
            if stop.is_cancelled() {
                break;
            }
            if full_batch_sent {
                continue;
            }
            tokio::select! {
                _ = queued.notified() => tokio::time::sleep(LINGER).await,
                _ = tokio::time::sleep(IDLE) => {}
                () = stop.cancelled() => break,
            }
        }
        self.producer.shutdown().await;
    }

    /// Sends the oldest reports to every bank at once, each bank's on its own, so that
    /// a destination that cannot take them holds back no other; true when a whole batch
    /// went out to some bank (more may wait).
    async fn send_batch(&self) -> bool {
        // A book transfer settles in its one transaction: no report goes to this bank.
        let mut banks = self.routes.banks();
        banks.retain(|bank| bank != self.store.bank());
        let relayed = join_all(banks.iter().map(|to_bank| self.send_batch_to(to_bank))).await;
        relayed.into_iter().any(|full| full)
    }

    /// Sends the oldest reports to `to_bank`; true when a whole batch went out.
    async fn send_batch_to(&self, to_bank: &BankId) -> bool {
        let relayed = self
            .store
            .relay_outbox(to_bank, BATCH, |pending| async move {
                if pending.is_empty() {
                    return Vec::new();
                }
                match self.send(&pending).await {
                    Ok(()) => pending.into_iter().map(|report| report.tx_no).collect(),
                    Err(error) => {
                        warn!(%to_bank, reports = pending.len(), %error, "settlement reports not sent; will retry");
                        Vec::new()
                    }
                }
            })
            .await;
        match relayed {
            Ok(removed) => removed == BATCH as usize,
            Err(error) => {
                warn!(%to_bank, %error, "cannot relay the settlement outbox now; will retry");
                false
            }
        }
    }

    /// Sends reports bound for one bank as one message (one for the broker to store and
    /// deliver, however many reports), keyed by every report's `tx_no`.
    async fn send(&self, reports: &[PendingSettlement]) -> Result<(), MessagingError> {
        let Some(first) = reports.first() else {
            return Ok(());
        };
        let topic = self.routes.topic(&first.to_bank)?;
        let body = wire::encode_settlements(
            self.store.bank(),
            reports.iter().map(|report| (&report.tx_no, &report.settlement)),
        );
        let keys: Vec<&str> = reports.iter().map(|report| report.tx_no.as_str()).collect();
        let message = self
            .signer
            .message(&first.to_bank, topic, &keys.join(MessageConst::KEY_SEPARATOR), body)?;
        let started = Instant::now();
        self.producer
            .send(message)
            .await
            .map_err(|e| MessagingError::client("send", e))?;
        self.counters
            .observe(Timing::Broker(BrokerCall::SettlementSend), started.elapsed());
        for report in reports {
            debug!(tx_no = %report.tx_no, to_bank = %report.to_bank, state = %report.settlement.final_state(), "settlement reported");
        }
        info!(to_bank = %first.to_bank, reports = reports.len(), "settlement reports sent");
        Ok(())
    }
}
