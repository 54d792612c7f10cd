//! The receiving side of every bank: consume the inbound topic, credit each transfer
//! exactly once, and apply the settlement reports about transfers this bank sent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQAdminExt,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::{error, info, info_span, warn};
use txbank_domain::{BankId, Settlement, Transfer, TxNo};
use txbank_storage::{CreditOutcome, SettlementOutcome, StorageError, Store};

use crate::group_commit::{Answer, GroupCommit};
use crate::metrics::{Counters, DbCall, Event, SetAside, Timing};
use crate::offsets;
use crate::signing::{
    MessageVerifier, Signatures, Verdict, BANK_SIGNATURE_PROPERTY, KEY_ID_PROPERTY, SIGNATURE_PROPERTY,
};
use crate::tasks::{PartTask, Tasks};
use crate::topics::start_admin;
use crate::wire::{Inbound, SeedDefaults};
use crate::{wire, MessagingError, MqClient, MqSettings, Routes};
use txbank_storage::faults::{crash_point, AFTER_CREDIT_COMMIT};

/// Most messages handed to one listener callback.
const CALLBACK_BATCH: u32 = 32;
/// Most messages pulled ahead of the callbacks, per queue.
const PULLED_PER_QUEUE: u32 = 256;
/// Most mebibytes of messages pulled ahead of the callbacks, per queue (RocketMQ's
/// default is 100): 256 messages of 128 transfers would be about 5 MiB.
const PULLED_MIB_PER_QUEUE: u32 = 2;
/// Listener callbacks running at once. Each waits for its group commit (about 8 ms under
/// load), so RocketMQ's default of 20 capped a bank near 2,500 callbacks a second and
/// made pulled messages queue behind the callbacks: at 1,800 transfers/s, 20 were
/// running for over half the time and a message waited 25 ms (p50) to 150 ms (p99)
/// between the broker and its callback.
const CONCURRENT_CALLBACKS: u32 = 64;
/// Milliseconds a queue waits after a pull that found messages before pulling again.
const PULL_INTERVAL_MS: u64 = 5;

/// How long a stopping consumer lets the callbacks under way finish (RocketMQ's default,
/// 0, aborts them and warns twice at every stop); what is not acknowledged by then is
/// delivered again later.
const CALLBACKS_FINISH_WITHIN_MS: u64 = 3_000;

/// Consumes a bank's inbound topic (consumer group `consumer_group_txmsg_bank2` for
/// bank2 by default). A transfer's credit (or refusal), its `de_duplication` row and its
/// settlement report commit together (with the other messages received meanwhile: group
/// commit), and the message is acknowledged only after that commit.
///
/// Every five seconds it looks for committed offsets of its group past the
/// end of their queues (a broker lost its store; see `offsets.rs`). When it finds
/// some, it stops its RocketMQ consumer (which holds the old offsets), rewinds those
/// offsets to the queues' start, and starts a new consumer that reads them from there.
pub struct CreditConsumer {
    task: PartTask,
}

/// How often a bank checks its group's committed offsets against its queues' ends.
const OFFSETS_CHECKED_EVERY: Duration = Duration::from_secs(5);

/// What a bank accepts on its inbound topic.
#[derive(Debug, Clone)]
pub struct Acceptance {
    /// Transfers are taken only from the banks these routes reach (the settlement
    /// report must find its way back).
    pub routes: Routes,
    /// What a body without our fields (the seed's) means.
    pub seed: SeedDefaults,
    /// What every message's signatures are checked with.
    pub verifier: Arc<MessageVerifier>,
    /// Apply unsigned messages shaped as the seed's Java bank1 sends them (a bare
    /// `accountChange`, credited to `seed`'s account); any other unsigned message is
    /// set aside. Forged signatures are refused either way.
    pub accept_unsigned: bool,
    /// Redeliveries of a message the bank refuses before RocketMQ moves it to the
    /// consumer group's dead-letter queue.
    pub max_redeliveries: i32,
}

impl CreditConsumer {
    /// Starts consuming `topic` in `group` through `store`, applying what `acceptance`
    /// lets through, counting what happens in `counters`. `settled` is notified whenever
    /// a settlement report was queued, so the relay sends it at once.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        (group, topic): (&str, &str),
        store: Store,
        acceptance: Acceptance,
        settled: Arc<Notify>,
        counters: Arc<Counters>,
    ) -> Result<CreditConsumer, MessagingError> {
        let recipe = Recipe {
            runtime: client.runtime(),
            settings: settings.clone(),
            group: group.to_string(),
            topic: topic.to_string(),
            store,
            acceptance,
            settled,
            counters,
        };
        let consumer = recipe.start().await?;
        let admin = start_admin(client, settings, "offsets").await?;
        let task = PartTask::spawn(&settings.tasks, |stop| recipe.run(consumer, admin, stop));
        Ok(CreditConsumer { task })
    }

    /// Stops consuming; messages not yet acknowledged are delivered again later.
    pub async fn shutdown(self) {
        self.task.stop().await;
    }
}

/// Everything a RocketMQ consumer of the inbound topic is made from, kept to start it
/// again.
struct Recipe {
    runtime: Arc<ClientRuntime>,
    settings: MqSettings,
    group: String,
    topic: String,
    store: Store,
    acceptance: Acceptance,
    settled: Arc<Notify>,
    counters: Arc<Counters>,
}

impl Recipe {
    /// A started consumer of the inbound topic.
    async fn start(&self) -> Result<DefaultMQPushConsumer, MessagingError> {
        let mut consumer = DefaultMQPushConsumer::builder(Arc::clone(&self.runtime))
            .client_config(self.settings.client_config())
            .consumer_group(self.group.clone())
            .name_server_addr(self.settings.namesrv_addr.clone())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .max_reconsume_times(self.acceptance.max_redeliveries)
            // Up to this many messages reach one callback, and commit together.
            .consume_message_batch_max_size(CALLBACK_BATCH)
            // A bank that falls behind holds at most this many pulled messages, and
            // mebibytes of them, per queue in memory (RocketMQ's default is 1,000).
            .pull_threshold_for_queue(PULLED_PER_QUEUE)
            .pull_threshold_size_for_queue(PULLED_MIB_PER_QUEUE)
            .consume_thread_min(CONCURRENT_CALLBACKS)
            .consume_thread_max(CONCURRENT_CALLBACKS)
            .pull_interval(PULL_INTERVAL_MS)
            .await_termination_millis_when_shutdown(CALLBACKS_FINISH_WITHIN_MS)
            .build();
        consumer
            .subscribe(self.topic.as_str(), "*")
            .await
            .map_err(|e| MessagingError::client("subscribe", e))?;
        consumer.register_message_listener_concurrently(InboundListener {
            commits: GroupCommit::start(self.store.clone(), &self.settings.tasks, Arc::clone(&self.counters)),
            store: self.store.clone(),
            runtime: Handle::current(),
            acceptance: self.acceptance.clone(),
            settled: Arc::clone(&self.settled),
            counters: Arc::clone(&self.counters),
        });
        consumer
            .start()
            .await
            .map_err(|e| MessagingError::client("consumer start", e))?;
        Ok(consumer)
    }

    /// Keeps `consumer` (or its replacement) consuming until `stop` is cancelled, then
    /// stops it.
    async fn run(self, consumer: DefaultMQPushConsumer, mut admin: DefaultMQAdminExt, stop: Tasks) {
        let mut consumer = Some(consumer);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(OFFSETS_CHECKED_EVERY) => {}
                () = stop.cancelled() => break,
            }
            if consumer.is_none() || !offsets::past_the_end(&admin, &self.group).await.is_empty() {
                if let Some(mut running) = consumer.take() {
                    running.shutdown().await;
                }
                self.rewind_past_the_end(&admin).await;
                match self.start().await {
                    Ok(started) => consumer = Some(started),
                    Err(error) => error!(%error, "cannot start consuming again; will retry"),
                }
            }
        }
        if let Some(mut running) = consumer {
            running.shutdown().await;
        }
        admin.shutdown().await;
    }

    /// Rewinds every committed offset of the group past its queue's end, read after the
    /// consumer stopped (it commits what it held as it stops).
    async fn rewind_past_the_end(&self, admin: &DefaultMQAdminExt) {
        for past in offsets::past_the_end(admin, &self.group).await {
            match offsets::rewind(admin, &self.group, &past).await {
                Ok(true) => {
                    self.counters.record(Event::OffsetRewound);
                    warn!(
                        topic = %past.queue.topic(),
                        queue = past.queue.queue_id(),
                        committed = past.committed,
                        end = past.end,
                        "consumer offset past the end of its queue (the broker lost its store): consuming the queue again from its start"
                    );
                }
                Ok(false) => {}
                Err(error) => warn!(%error, queue = %past.queue, "cannot rewind a consumer offset now; will retry"),
            }
        }
    }
}

struct InboundListener {
    commits: GroupCommit,
    store: Store,
    runtime: Handle,
    acceptance: Acceptance,
    settled: Arc<Notify>,
    counters: Arc<Counters>,
}

/// A message on its way through the group commit, or already answered.
enum Pending {
    /// Nothing to commit: applied (true) or to be delivered again (false).
    Done(bool),
    /// A message's credits, queued at `started`.
    Credits {
        credits: Vec<(Transfer, Answer<Result<CreditOutcome, StorageError>>)>,
        started: Instant,
    },
    /// A message's settlement reports from `reporter`, queued at `started`.
    Settle {
        reporter: BankId,
        reports: Vec<QueuedReport>,
        started: Instant,
    },
}

/// One settlement report on its way through the group commit.
struct QueuedReport {
    tx_no: TxNo,
    settlement: Settlement,
    applied: Answer<Result<SettlementOutcome, StorageError>>,
}

impl InboundListener {
    /// Checks one message and queues what it asks for with the group commit, without
    /// waiting: a batch's messages then commit together.
    fn start(&self, msg: &MessageExt) -> Pending {
        let body = msg.body().unwrap_or_default();
        let property = |name| msg.property(&CheetahString::from_static_str(name));
        let (bank_signature, key_id, shared) = (
            property(BANK_SIGNATURE_PROPERTY),
            property(KEY_ID_PROPERTY),
            property(SIGNATURE_PROPERTY),
        );
        let verdict = self.acceptance.verifier.verify(
            &body,
            Signatures {
                bank: bank_signature.as_deref(),
                key_id: key_id.as_deref(),
                shared: shared.as_deref(),
            },
        );
        let seed_compatible = verdict == Verdict::Unsigned && self.acceptance.accept_unsigned;
        if !matches!(verdict, Verdict::SignedBy(_) | Verdict::SharedKey) && !seed_compatible {
            return Pending::Done(self.set_aside(msg, SetAside::Unauthenticated, &format!("{verdict:?}")));
        }
        let inbound = match wire::decode(&body, &self.acceptance.seed) {
            Ok(inbound) => inbound,
            Err(error) => return Pending::Done(self.set_aside(msg, SetAside::Unreadable, &error.to_string())),
        };
        // Unsigned, only what the seed's Java bank1 sends is taken: a bare accountChange,
        // credited to the configured account. Reports and our own bodies, which can name
        // any bank and any transfer, must be signed.
        if seed_compatible && !wire::is_seed_body(&body) {
            let detail = "Unsigned, and not the seed's bare accountChange";
            return Pending::Done(self.set_aside(msg, SetAside::Unauthenticated, detail));
        }
        // A bank's key speaks for that bank alone.
        if let Verdict::SignedBy(signer) = &verdict {
            if inbound.sender() != Some(signer) {
                let claimed = inbound.sender().map_or("several banks".into(), BankId::to_string);
                let detail = format!("signed with {signer}'s key, but claims to come from {claimed}");
                return Pending::Done(self.set_aside(msg, SetAside::Unauthenticated, &detail));
            }
        }
        match inbound {
            Inbound::Transfers(transfers) => self.start_credits(transfers, msg),
            Inbound::Settlements { from_bank, reports } => self.start_settle(from_bank, reports),
        }
    }

    /// Waits for a queued message's commit and tells what became of it; false means
    /// "deliver it again later" (and, after RocketMQ's retries, to the dead-letter queue).
    fn finish(&self, pending: Pending, msg: &MessageExt) -> bool {
        match pending {
            Pending::Done(applied) => applied,
            Pending::Credits { credits, started } => {
                let mut applied = true;
                for (transfer, credited) in credits {
                    let credited = self.runtime.block_on(credited);
                    applied &= self.credited(&transfer, credited, msg);
                }
                self.counters
                    .observe(Timing::Database(DbCall::Credit), started.elapsed());
                applied
            }
            Pending::Settle {
                reporter,
                reports,
                started,
            } => self.finish_settle(&reporter, reports, started, msg),
        }
    }

    /// Queues the credits of a message's transfers, unless one is not for this bank or
    /// comes from a bank with no route back (the message is then set aside whole).
    fn start_credits(&self, transfers: Vec<Transfer>, msg: &MessageExt) -> Pending {
        for transfer in &transfers {
            if transfer.to_bank != *self.store.bank() {
                return Pending::Done(self.set_aside(
                    msg,
                    SetAside::Misrouted,
                    &format!("transfer {} is for bank {}", transfer.tx_no, transfer.to_bank),
                ));
            }
            if !self.acceptance.routes.reaches(&transfer.from_bank) {
                let detail = format!(
                    "transfer {} comes from bank {}, which has no route",
                    transfer.tx_no, transfer.from_bank
                );
                return Pending::Done(self.set_aside(msg, SetAside::Misrouted, &detail));
            }
        }
        Pending::Credits {
            started: Instant::now(),
            credits: transfers
                .into_iter()
                .map(|transfer| {
                    let credited = self.commits.credit(transfer.clone());
                    (transfer, credited)
                })
                .collect(),
        }
    }

    fn credited(
        &self,
        transfer: &Transfer,
        credited: Result<Result<CreditOutcome, StorageError>, String>,
        msg: &MessageExt,
    ) -> bool {
        let _span = info_span!("transfer.credit", tx_no = %transfer.tx_no).entered();
        let credited = match credited {
            Ok(Err(error)) => {
                let detail = format!("transfer {}: {error}", transfer.tx_no);
                return self.set_aside_transfer(msg, transfer, SetAside::Failed, &detail);
            }
            Ok(Ok(outcome)) => Ok(outcome),
            Err(error) => Err(error),
        };
        match credited {
            Ok(CreditOutcome::Credited) => {
                crash_point(AFTER_CREDIT_COMMIT);
                self.settled.notify_one();
                self.counters.record(Event::Credited);
                self.counters
                    .observe(Timing::DebitToCredit, since_unix_ms(msg.born_timestamp()));
                info!(tx_no = %transfer.tx_no, to = %transfer.to, amount = %transfer.amount, "credited");
                true
            }
            Ok(CreditOutcome::Refused(reason)) => {
                self.settled.notify_one();
                self.counters.record(Event::Refused);
                warn!(tx_no = %transfer.tx_no, to = %transfer.to, %reason, "refused; returning the money to its sender");
                true
            }
            Ok(CreditOutcome::PastArchiveHorizon) => {
                let detail = format!(
                    "transfer {} is older than the archive horizon and in neither the live tables nor the archive",
                    transfer.tx_no
                );
                self.set_aside_transfer(msg, transfer, SetAside::PastArchiveHorizon, &detail)
            }
            Ok(CreditOutcome::Duplicate { reported_again }) => {
                self.counters.record(Event::Duplicate);
                if reported_again {
                    self.counters.record(Event::ReportRepeated);
                    self.settled.notify_one();
                }
                info!(tx_no = %transfer.tx_no, reported_again, "duplicate delivery absorbed");
                true
            }
            Err(error) => {
                self.counters.record(Event::RedeliveryRequested);
                warn!(tx_no = %transfer.tx_no, reconsumed = msg.reconsume_times(), %error, "credit failed; will be redelivered");
                false
            }
        }
    }

    fn start_settle(&self, reporter: BankId, reports: Vec<(TxNo, Settlement)>) -> Pending {
        let started = Instant::now();
        let reports = reports
            .into_iter()
            .map(|(tx_no, settlement)| QueuedReport {
                applied: self.commits.settle(tx_no.clone(), reporter.clone(), settlement.clone()),
                tx_no,
                settlement,
            })
            .collect();
        Pending::Settle {
            reporter,
            reports,
            started,
        }
    }

    /// Waits for every report of a message; the reports that apply stay applied when
    /// another is refused (the message is then set aside) or fails (it is delivered
    /// again, and the applied ones are absorbed as duplicates).
    fn finish_settle(&self, reporter: &BankId, reports: Vec<QueuedReport>, started: Instant, msg: &MessageExt) -> bool {
        let mut failed = false;
        let (mut refusals, mut failures) = (Vec::new(), Vec::new());
        for report in reports {
            let tx_no = &report.tx_no;
            let _span = info_span!("transfer.settle", %tx_no).entered();
            match self.runtime.block_on(report.applied) {
                Ok(Ok(SettlementOutcome::Applied)) => {
                    self.counters.record(Event::Settled);
                    info!(%tx_no, state = %report.settlement.final_state(), "settled");
                }
                Ok(Ok(SettlementOutcome::AlreadyApplied)) => {
                    self.counters.record(Event::Duplicate);
                    info!(%tx_no, "duplicate settlement absorbed");
                }
                Ok(Err(error @ StorageError::Database(_))) => failures.push(format!("{tx_no}: {error}")),
                Ok(Err(refusal)) => refusals.push(refusal.to_string()),
                Err(error) => {
                    self.counters.record(Event::RedeliveryRequested);
                    warn!(%tx_no, reconsumed = msg.reconsume_times(), %error, "settlement failed; will be redelivered");
                    failed = true;
                }
            }
        }
        self.counters
            .observe(Timing::Database(DbCall::Settle), started.elapsed());
        if !failures.is_empty() {
            let detail = format!("from {reporter}: {}", failures.join("; "));
            return self.set_aside(msg, SetAside::Failed, &detail);
        }
        if !refusals.is_empty() {
            let detail = format!("from {reporter}: {}", refusals.join("; "));
            return self.set_aside(msg, SetAside::BadSettlement, &detail);
        }
        !failed
    }

    /// Refuses to apply `msg`: logs it, counts it, and records it in the database for
    /// the auditor (best effort: the log line and RocketMQ's dead-letter queue remain
    /// if that fails). RocketMQ's retry path takes it to the dead-letter queue.
    fn set_aside(&self, msg: &MessageExt, reason: SetAside, detail: &str) -> bool {
        // The producer's unique id survives redeliveries; the broker's ids do not.
        let id = msg
            .property(&CheetahString::from_static_str("UNIQ_KEY"))
            .unwrap_or_else(|| msg.msg_id().clone());
        self.record_set_aside(msg, &id, reason, detail)
    }

    /// Refuses to apply `transfer` of `msg`, as [`Self::set_aside`] does, recorded under
    /// its transaction number: the copies its sender sends again (re-drive) count as
    /// deliveries of one set-aside transfer, not as new messages.
    fn set_aside_transfer(&self, msg: &MessageExt, transfer: &Transfer, reason: SetAside, detail: &str) -> bool {
        self.record_set_aside(msg, transfer.tx_no.as_str(), reason, detail)
    }

    fn record_set_aside(&self, msg: &MessageExt, id: &str, reason: SetAside, detail: &str) -> bool {
        self.counters.record(Event::SetAside(reason));
        let key = msg
            .property(&CheetahString::from_static_str("KEYS"))
            .unwrap_or_default();
        error!(msg_id = %id, key = %key, reconsumed = msg.reconsume_times(), %detail, "{} message set aside", reason.as_str());
        let recorded = self
            .runtime
            .block_on(self.store.record_set_aside(id, &key, reason.as_str(), detail));
        if let Err(error) = recorded {
            warn!(msg_id = %id, %error, "cannot record the set-aside message");
        }
        false
    }
}

/// The time since `unix_ms` (zero if that is in the future, as another machine's clock
/// may say).
pub(crate) fn since_unix_ms(unix_ms: i64) -> Duration {
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    SystemTime::now().duration_since(then).unwrap_or_default()
}

impl MessageListenerConcurrently for InboundListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        // Every message is queued first, so that the batch commits together; each is
        // idempotent, and one failure redelivers the batch.
        let pending: Vec<Pending> = msgs.iter().map(|msg| self.start(msg)).collect();
        let failures = pending
            .into_iter()
            .zip(msgs)
            .map(|(pending, msg)| self.finish(pending, msg))
            .filter(|applied| !applied)
            .count();
        Ok(if failures == 0 {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        } else {
            ConsumeConcurrentlyStatus::ReconsumeLater
        })
    }
}
