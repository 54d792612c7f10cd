//! The sending side of every bank: the transactional producer, the local transaction it
//! runs, and the answer to the broker's check-back.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{
    ClientError, DefaultMQProducer, LocalTransactionState, SendResult, SendStatus, TransactionListener,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::{MessageConst, MessageTrait};
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, info_span, warn, Instrument};
use txbank_domain::{BankId, IdempotencyKey, Transfer};
use txbank_storage::{DebitOutcome, StorageError, Store};

use crate::group_commit::{DebitGroup, MessageDebits};
use crate::metrics::{BrokerCall, Counters, DbCall, Event, Timing};
use crate::publish::NEVER_COMPRESS;
use crate::signing::MessageSigner;
use crate::wire::{Inbound, SeedDefaults};
use crate::{wire, MessagingError, MqClient, MqSettings, Routes, Tasks};
use txbank_storage::faults::{
    crash_point, AFTER_LOCAL_COMMIT, AFTER_SHARED_LOCAL_COMMIT, ANSWERING_CHECK_BACK, BEFORE_LOCAL_TRANSACTION,
};

/// How a transfer ended from the sender's point of view, once `send` returns.
#[derive(Debug)]
pub enum SendOutcome {
    /// The source was debited and the message committed: the destination will be credited.
    Debited(DebitOutcome),
    /// The local transaction refused or failed; the message was rolled back; nothing moved.
    RolledBack(StorageError),
    /// The local transaction's outcome is not known yet (the database did not answer);
    /// the broker's check-back will settle it, and `GET /transfers/{tx_no}` will show it.
    Pending,
}

/// How an all-or-nothing group of transfers ended, once `send_group` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Every transfer was debited, in one database transaction, and every message of the
    /// group committed: every destination will be credited.
    Debited,
    /// Not every transfer could be debited, so none was; every message was rolled back.
    Refused,
    /// The local transaction's outcome is not known (the database did not answer); the
    /// broker's check-backs settle the group's messages, all one way.
    Pending,
}

/// Messages on their way at once, per bank process, whatever their size. A request that
/// finds them all on their way waits for the next, and goes with the others waiting
/// then: the more load, the more transfers per message. With 2, one message's local
/// transaction runs while the next one's half message is sent.
const MESSAGES_ALWAYS_IN_FLIGHT: usize = 2;

/// Messages on their way at once per core, counting only well-filled ones beyond
/// [`MESSAGES_ALWAYS_IN_FLIGHT`]. A fixed 2 held a bank to 2 messages' transfers per
/// round trip of a message, whatever its cores: on 16 cores it stopped near 15,000
/// transfers/s with the machine half idle (docs/PERFORMANCE.md). Further messages go only
/// when [`WELL_FILLED`] transfers wait, so they do not make messages small, and their
/// debits commit together ([`MessageDebits`]).
const FULL_MESSAGES_PER_CORE: usize = 2;

/// Transfers that must wait before a message beyond [`MESSAGES_ALWAYS_IN_FLIGHT`] goes
/// (or all a message takes, if fewer). Waiting for a message's largest size (128) instead
/// kept 64 clients to two messages on their way, which halved a bank's throughput on
/// PostgreSQL, whose local transactions take longer.
const WELL_FILLED: usize = 32;

/// The most messages a bank process keeps on their way, from its cores.
fn most_in_flight() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * FULL_MESSAGES_PER_CORE).max(MESSAGES_ALWAYS_IN_FLIGHT)
}

/// Most transfers that wait for a message at once; more are refused at once
/// ([`MessagingError::Overloaded`]), nothing moved. At the ~6,000 transfers/s of two cores
/// they are nearly three seconds of work.
const MOST_WAITING: usize = 16_384;

/// How long a half message the broker did not store is sent again before the transfers
/// it carries fail (each attempt itself gives up after the send timeout).
const HALF_MESSAGE_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// The pause before a half message's second attempt; it doubles with every further one.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two attempts.
const LAST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Sends transfers as RocketMQ transactional messages to their destination bank's
/// topic and runs the debit as their local transaction (producer group
/// `producer_group_txmsg_bank1` for bank1 by default).
///
/// The steps are RocketMQ's own (`TransactionMQProducer::send_message_in_transaction`):
/// a half message, then the local transaction, then COMMIT or ROLLBACK, and a listener
/// that answers the broker's check-backs. Two things differ. RocketMQ's producer would
/// run the local transaction as a synchronous callback on one of its blocking threads,
/// which would wait for the group commit; here the sending task awaits it, which spares
/// two thread hand-overs per transfer. And transfers that wait for a message at the same
/// time (up to [`MqSettings::transfers_per_message`]) go to their bank in one message,
/// whose local transaction debits them all or none (see `Sender::send_together`).
pub struct TransferProducer {
    queue: mpsc::Sender<Request>,
    batching: JoinHandle<()>,
    sender: Arc<Sender>,
    per_message: usize,
    /// Where the groups' sends run, apart from their callers.
    tasks: Tasks,
}

/// A transfer waiting for its message, and where its outcome goes.
struct Request {
    transfer: Transfer,
    key: Option<IdempotencyKey>,
    reply: oneshot::Sender<Result<SendOutcome, MessagingError>>,
}

impl TransferProducer {
    /// Starts a producer in `group` sending along `routes`, whose local transactions and
    /// check-backs use `store`. `seed` says what a body without our fields means.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        group: &str,
        routes: Routes,
        store: Store,
        seed: SeedDefaults,
        counters: Arc<Counters>,
    ) -> Result<TransferProducer, MessagingError> {
        let local = Arc::new(LocalTransaction {
            debits: DebitGroup::start(store.clone(), &settings.tasks, Arc::clone(&counters)),
            messages: MessageDebits::start(store.clone(), &settings.tasks, Arc::clone(&counters)),
            store,
            runtime: Handle::current(),
            seed,
            counters: Arc::clone(&counters),
        });
        let mut producer = DefaultMQProducer::builder(client.runtime())
            .client_config(settings.client_config())
            .producer_group(group.to_string())
            .name_server_addr(settings.namesrv_addr.clone())
            .send_msg_timeout(settings.send_timeout.as_millis() as u32)
            .compress_msg_body_over_howmuch(NEVER_COMPRESS)
            .topics(routes.topics().map(CheetahString::from).collect())
            .build();
        // What `TransactionMQProducer::start` does with its default settings: the
        // listener answers check-backs, one at a time, up to 2,000 held.
        let inner = producer
            .default_mq_producer_impl()
            .ok_or_else(|| MessagingError::client("producer start", "the producer has no implementation"))?;
        inner.set_transaction_listener(Arc::clone(&local) as Arc<dyn TransactionListener>);
        inner
            .init_transaction_env(1, 1, 2000)
            .map_err(|e| MessagingError::client("producer start", e))?;
        producer
            .start()
            .await
            .map_err(|e| MessagingError::client("producer start", e))?;
        let sender = Arc::new(Sender {
            producer,
            local,
            routes,
            signer: settings.signer.clone(),
            counters,
        });
        let (queue, queued) = mpsc::channel(MOST_WAITING);
        let per_message = settings.transfers_per_message.max(1);
        let batching = settings.tasks.spawn(send_as_queued(
            Arc::clone(&sender),
            queued,
            per_message,
            most_in_flight(),
        ));
        Ok(TransferProducer {
            queue,
            batching,
            sender,
            per_message,
            tasks: settings.tasks.clone(),
        })
    }

    /// Where this producer can send.
    pub fn routes(&self) -> &Routes {
        &self.sender.routes
    }

    /// Sends `transfer`, alone or with others that wait at the same moment: half message
    /// first, then the local debit, then COMMIT or ROLLBACK. An error means the half
    /// message was not stored and nothing moved.
    pub async fn send(&self, transfer: &Transfer, key: Option<&IdempotencyKey>) -> Result<SendOutcome, MessagingError> {
        self.sender.routes.topic(&transfer.to_bank)?;
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            transfer: transfer.clone(),
            key: key.cloned(),
            reply,
        };
        self.queue.try_send(request).map_err(|refused| match refused {
            TrySendError::Full(_) => MessagingError::Overloaded(MOST_WAITING),
            TrySendError::Closed(_) => MessagingError::client("transactional send", "the producer is shutting down"),
        })?;
        // No answer means its sending task ended midway: the check-back settles it.
        outcome.await.unwrap_or(Ok(SendOutcome::Pending))
    }

    /// Sends `transfers` as one all-or-nothing group: a half message for each destination
    /// bank's transfers (in messages of up to `transfers_per_message`), then one local
    /// transaction that debits them all or none, then COMMIT or ROLLBACK for every
    /// message alike. A check-back on any of them commits only when its transfers were
    /// debited, which the one transaction made true for all or for none. An error means
    /// some half message was not stored and nothing moved.
    pub async fn send_group(
        &self,
        transfers: Vec<(Transfer, Option<IdempotencyKey>)>,
    ) -> Result<GroupOutcome, MessagingError> {
        for (transfer, _) in &transfers {
            self.sender.routes.topic(&transfer.to_bank)?;
        }
        // In a task of its own, so that a caller gone midway does not cut the group off
        // between its half messages and its local transaction.
        let sender = Arc::clone(&self.sender);
        let per_message = self.per_message;
        self.tasks
            .spawn(async move { sender.send_group(transfers, per_message).await })
            .await
            .unwrap_or(Ok(GroupOutcome::Pending))
    }

    /// Stops the producer; in-flight sends finish first.
    pub async fn shutdown(self) {
        let TransferProducer {
            queue,
            batching,
            sender,
            ..
        } = self;
        drop(queue);
        let _ = batching.await;
        let Ok(Sender { mut producer, .. }) = Arc::try_unwrap(sender) else {
            warn!("a transfer is still being sent; the producer is left running");
            return;
        };
        producer.shutdown().await;
        if let Some(inner) = producer.default_mq_producer_impl() {
            inner.destroy_transaction_env().await;
        }
    }
}

/// Takes the transfers queued for messages, up to `per_message` at a time, and sends
/// them: any take while fewer than [`MESSAGES_ALWAYS_IN_FLIGHT`] messages are on their
/// way, and only well-filled ones ([`WELL_FILLED`]) beyond, up to `most_in_flight`. Ends
/// when the queue is closed and every take is sent.
async fn send_as_queued(
    sender: Arc<Sender>,
    mut queued: mpsc::Receiver<Request>,
    per_message: usize,
    most_in_flight: usize,
) {
    let well_filled = WELL_FILLED.min(per_message);
    let mut in_flight = JoinSet::new();
    let mut taken = Vec::with_capacity(per_message);
    let mut open = true;
    while open || !taken.is_empty() {
        let room = per_message - taken.len();
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            received = queued.recv_many(&mut taken, room), if open && room > 0 => open = received > 0,
            else => {}
        }
        while !taken.is_empty()
            && (in_flight.len() < MESSAGES_ALWAYS_IN_FLIGHT
                || (taken.len() >= well_filled && in_flight.len() < most_in_flight))
        {
            in_flight.spawn(Arc::clone(&sender).send_all(std::mem::take(&mut taken)));
            taken.reserve(per_message);
            let more = per_message.min(queued.len());
            if open && more > 0 {
                queued.recv_many(&mut taken, more).await;
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The producer and what its sends need, shared by the sending tasks.
struct Sender {
    producer: DefaultMQProducer,
    local: Arc<LocalTransaction>,
    routes: Routes,
    signer: MessageSigner,
    counters: Arc<Counters>,
}

impl Sender {
    /// Sends `requests` in one message per destination bank, answering each.
    async fn send_all(self: Arc<Self>, requests: Vec<Request>) {
        let mut per_bank: BTreeMap<BankId, Vec<Request>> = BTreeMap::new();
        for request in requests {
            per_bank
                .entry(request.transfer.to_bank.clone())
                .or_default()
                .push(request);
        }
        let mut messages = JoinSet::new();
        for requests in per_bank.into_values() {
            messages.spawn(Arc::clone(&self).send_message(requests));
        }
        while messages.join_next().await.is_some() {}
    }

    /// Sends `requests` (all to one bank) in one message, or each in its own when they
    /// cannot be debited together.
    async fn send_message(self: Arc<Self>, requests: Vec<Request>) {
        let (mut debits, mut replies): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .map(|Request { transfer, key, reply }| ((transfer, key), reply))
            .unzip();
        if debits.len() == 1 {
            if let (Some((transfer, key)), Some(reply)) = (debits.pop(), replies.pop()) {
                let _ = reply.send(self.send_one(&transfer, key).await);
            }
            return;
        }
        match self.send_together(&debits).await {
            Ok(true) => {
                for reply in replies {
                    let _ = reply.send(Ok(SendOutcome::Debited(DebitOutcome::Debited)));
                }
            }
            Ok(false) => {
                let mut alone = JoinSet::new();
                for ((transfer, key), reply) in debits.into_iter().zip(replies) {
                    let sender = Arc::clone(&self);
                    alone.spawn(async move {
                        let _ = reply.send(sender.send_one(&transfer, key).await);
                    });
                }
                while alone.join_next().await.is_some() {}
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Sends one transfer in a message of its own, in the seed's shape; its local
    /// transaction is queued with the other lone transfers' debits (group commit).
    async fn send_one(&self, transfer: &Transfer, key: Option<IdempotencyKey>) -> Result<SendOutcome, MessagingError> {
        let message = self.half_message(std::slice::from_ref(transfer))?;
        let started = Instant::now();
        let half = self
            .send_half(&message)
            .instrument(info_span!("transfer.send", tx_no = %transfer.tx_no))
            .await?;
        let mut broker_time = started.elapsed();
        let (state, outcome) = self.local.run(transfer, key).await;
        let ending = Instant::now();
        self.end(&message, &half, state).await;
        broker_time += ending.elapsed();
        self.counters
            .observe(Timing::Broker(BrokerCall::TransactionalSend), broker_time);
        Ok(outcome)
    }

    /// Sends the transfers of `debits` in one message whose local transaction debits
    /// them all in one database transaction: true when it committed and the message with
    /// it. False when it did not (a transfer refused, a conflict, a failure, or an
    /// outcome not known): the message is rolled back, and each transfer is then to be
    /// sent on its own, whose local transaction finds out whether it was debited, so a
    /// refusal stays the refused transfer's alone and no debit is left without its
    /// message. An error means the half message was not stored and nothing moved.
    ///
    /// Should the broker check back on such a message, it is committed if every one of
    /// its transfers is debited (by it, or each in its own message: the destination
    /// absorbs the second delivery), and rolled back otherwise.
    async fn send_together(&self, debits: &[(Transfer, Option<IdempotencyKey>)]) -> Result<bool, MessagingError> {
        let transfers: Vec<Transfer> = debits.iter().map(|(transfer, _)| transfer.clone()).collect();
        let message = self.half_message(&transfers)?;
        let started = Instant::now();
        let half = self
            .send_half(&message)
            .instrument(info_span!("transfers.send", transfers = transfers.len()))
            .await?;
        let mut broker_time = started.elapsed();
        crash_point(BEFORE_LOCAL_TRANSACTION);
        let debiting = Instant::now();
        let debited = self.local.messages.debit(debits.to_vec()).await;
        self.counters
            .observe(Timing::Database(DbCall::Debit), debiting.elapsed());
        let committed = match debited {
            Ok(committed) => committed,
            Err(error) => {
                warn!(%error, transfers = transfers.len(), "debit of a message's transfers failed; sending each alone");
                false
            }
        };
        if committed {
            crash_point(AFTER_LOCAL_COMMIT);
            crash_point(AFTER_SHARED_LOCAL_COMMIT);
        }
        let state = match committed {
            true => LocalTransactionState::CommitMessage,
            false => LocalTransactionState::RollbackMessage,
        };
        let ending = Instant::now();
        self.end(&message, &half, state).await;
        broker_time += ending.elapsed();
        self.counters
            .observe(Timing::Broker(BrokerCall::TransactionalSend), broker_time);
        if committed {
            for transfer in &transfers {
                self.counters.record(Event::Debited);
                info!(tx_no = %transfer.tx_no, from = %transfer.from, to = %transfer.to, amount = %transfer.amount, "debited");
            }
        }
        Ok(committed)
    }

    /// Sends `debits` as one all-or-nothing group (see [`TransferProducer::send_group`]).
    async fn send_group(
        self: Arc<Self>,
        debits: Vec<(Transfer, Option<IdempotencyKey>)>,
        per_message: usize,
    ) -> Result<GroupOutcome, MessagingError> {
        let mut per_bank: BTreeMap<&BankId, Vec<Transfer>> = BTreeMap::new();
        for (transfer, _) in &debits {
            per_bank.entry(&transfer.to_bank).or_default().push(transfer.clone());
        }
        let mut messages = Vec::new();
        for transfers in per_bank.values() {
            for chunk in transfers.chunks(per_message) {
                messages.push(self.half_message(chunk)?);
            }
        }
        let started = Instant::now();
        let mut storing = JoinSet::new();
        for message in messages {
            let sender = Arc::clone(&self);
            storing.spawn(async move {
                let half = sender.send_half(&message).await;
                (message, half)
            });
        }
        let (mut stored, mut failure) = (Vec::new(), None);
        while let Some(joined) = storing.join_next().await {
            match joined {
                Ok((message, Ok(half))) => stored.push((message, half)),
                Ok((_, Err(error))) => failure = Some(error),
                Err(error) => failure = Some(MessagingError::client("transactional send", error)),
            }
        }
        if let Some(error) = failure {
            // Nothing is debited yet: the stored half messages go back.
            for (message, half) in &stored {
                self.end(message, half, LocalTransactionState::RollbackMessage).await;
            }
            return Err(error);
        }
        let mut broker_time = started.elapsed();
        crash_point(BEFORE_LOCAL_TRANSACTION);
        let debiting = Instant::now();
        let debited = self.local.store.debit_together(&debits).await;
        self.counters
            .observe(Timing::Database(DbCall::Debit), debiting.elapsed());
        let (state, outcome) = match debited {
            Ok(true) => (LocalTransactionState::CommitMessage, GroupOutcome::Debited),
            Ok(false) => (LocalTransactionState::RollbackMessage, GroupOutcome::Refused),
            Err(error) => {
                warn!(%error, transfers = debits.len(), "debit of an all-or-nothing group not answered; the broker will check back");
                (LocalTransactionState::Unknown, GroupOutcome::Pending)
            }
        };
        if outcome == GroupOutcome::Debited {
            crash_point(AFTER_LOCAL_COMMIT);
        }
        let ending = Instant::now();
        for (message, half) in &stored {
            self.end(message, half, state).await;
        }
        broker_time += ending.elapsed();
        self.counters
            .observe(Timing::Broker(BrokerCall::TransactionalSend), broker_time);
        for (transfer, _) in &debits {
            match outcome {
                GroupOutcome::Debited => {
                    self.counters.record(Event::Debited);
                    info!(tx_no = %transfer.tx_no, from = %transfer.from, to = %transfer.to, amount = %transfer.amount, "debited");
                }
                GroupOutcome::Refused => self.counters.record(Event::RolledBack),
                GroupOutcome::Pending => {}
            }
        }
        Ok(outcome)
    }

    /// The half message carrying `transfers` (at least one, all to one bank), keyed by
    /// each one's `tx_no`.
    fn half_message(&self, transfers: &[Transfer]) -> Result<Message, MessagingError> {
        let keys: Vec<&str> = transfers.iter().map(|transfer| transfer.tx_no.as_str()).collect();
        let to_bank = &transfers[0].to_bank;
        let mut message = self.signer.message(
            to_bank,
            self.routes.topic(to_bank)?,
            &keys.join(MessageConst::KEY_SEPARATOR),
            wire::encode_transfers(transfers),
        )?;
        message.put_property(
            CheetahString::from_static_str(MessageConst::PROPERTY_TRANSACTION_PREPARED),
            CheetahString::from_static_str("true"),
        );
        message.put_property(
            CheetahString::from_static_str(MessageConst::PROPERTY_PRODUCER_GROUP),
            self.producer.producer_group(),
        );
        Ok(message)
    }

    /// Stores `message` as a half message. A failure RocketMQ says may pass (a broker
    /// busy, paused or restarting, a connection lost, an answer late) is tried again
    /// after a growing pause for up to [`HALF_MESSAGE_RETRY_WINDOW`], so a broker's
    /// hiccup costs the transfers time, not a failure: until a half message is stored,
    /// nothing is debited.
    ///
    /// An attempt whose answer was late may still have stored its half message. That
    /// extra half message is never committed by this producer; the broker checks back
    /// on it, and the check-back answers from the transfers' state like any other: COMMIT
    /// when they were debited (the destination absorbs the second delivery), ROLLBACK
    /// otherwise.
    async fn send_half(&self, message: &Message) -> Result<SendResult, MessagingError> {
        let started = Instant::now();
        let mut pause = FIRST_RETRY_PAUSE;
        let half = loop {
            // RocketMQ's send is a future of tens of kilobytes: boxed, this one stays small.
            match Box::pin(self.producer.send(message.clone())).await {
                Ok(Some(half)) => break half,
                Ok(None) => {
                    return Err(MessagingError::client(
                        "transactional send",
                        "the broker gave no send result",
                    ))
                }
                Err(error) if may_pass(&error) && started.elapsed() + pause < HALF_MESSAGE_RETRY_WINDOW => {
                    warn!(%error, broker_code = ?error.broker_response_code(), retry_in_ms = pause.as_millis() as u64,
                        "half message not stored; sending it again");
                    self.counters.record(Event::HalfMessageResent);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LAST_RETRY_PAUSE);
                }
                Err(error) => {
                    warn!(%error, broker_code = ?error.broker_response_code(), "half message not stored");
                    return Err(MessagingError::client("transactional send", error));
                }
            }
        };
        if half.send_status != SendStatus::SendOk {
            // Stored, but not as durably as asked: RocketMQ rolls such a half message back
            // without running the local transaction, and so does this.
            self.end(message, &half, LocalTransactionState::RollbackMessage).await;
            return Err(MessagingError::client(
                "transactional send",
                format!("{:?}", half.send_status),
            ));
        }
        Ok(half)
    }

    /// Tells the broker to commit or roll back the half message `half` answered, as
    /// RocketMQ's producer does (one way; a lost answer leaves it to the check-back).
    async fn end(&self, message: &Message, half: &SendResult, state: LocalTransactionState) {
        let Some(inner) = self.producer.default_mq_producer_impl() else {
            warn!("producer has no implementation; the broker will check back");
            return;
        };
        shared(message);
        shared(half);
        shared(&**inner);
        if let Err(error) = CheckedSend(Box::pin(inner.end_transaction(message, half, state, None))).await {
            warn!(%error, verdict = ?state, "cannot end the transaction now; the broker will check back");
        }
    }
}

/// The local transaction (the debit, with whatever other debits are queued, in one
/// database transaction), and RocketMQ's transaction listener answering check-backs.
struct LocalTransaction {
    debits: DebitGroup,
    messages: MessageDebits,
    store: Store,
    runtime: Handle,
    seed: SeedDefaults,
    counters: Arc<Counters>,
}

impl LocalTransaction {
    /// Debits `transfer` and says whether its half message is to be committed, and what
    /// `send` answers.
    async fn run(&self, transfer: &Transfer, key: Option<IdempotencyKey>) -> (LocalTransactionState, SendOutcome) {
        crash_point(BEFORE_LOCAL_TRANSACTION);
        let started = Instant::now();
        let debited = self.debits.debit(transfer.clone(), key).await;
        self.counters
            .observe(Timing::Database(DbCall::Debit), started.elapsed());
        let debited = match debited {
            Ok(debited) => debited,
            Err(reason) => {
                warn!(tx_no = %transfer.tx_no, reason, "debit not answered; the broker will check back");
                return (LocalTransactionState::Unknown, SendOutcome::Pending);
            }
        };
        match debited {
            Ok(debit) => {
                crash_point(AFTER_LOCAL_COMMIT);
                self.counters.record(Event::Debited);
                info!(tx_no = %transfer.tx_no, from = %transfer.from, to = %transfer.to, amount = %transfer.amount, "debited");
                (LocalTransactionState::CommitMessage, SendOutcome::Debited(debit))
            }
            Err(refusal) => {
                let state = self.settle(transfer, &refusal.to_string()).await;
                if state == LocalTransactionState::RollbackMessage {
                    self.counters.record(Event::RolledBack);
                }
                info!(tx_no = %transfer.tx_no, verdict = ?state, reason = %refusal, "local transaction did not debit");
                let outcome = match state {
                    LocalTransactionState::RollbackMessage => SendOutcome::RolledBack(refusal),
                    LocalTransactionState::CommitMessage => SendOutcome::Debited(DebitOutcome::Debited),
                    LocalTransactionState::Unknown => SendOutcome::Pending,
                };
                (state, outcome)
            }
        }
    }

    /// Settles a transfer whose debit did not (or may not have) committed, and turns the
    /// final state into the broker's answer.
    async fn settle(&self, transfer: &Transfer, reason: &str) -> LocalTransactionState {
        match self.store.roll_back_unless_debited(transfer, reason).await {
            Ok(state) if state.was_debited() => LocalTransactionState::CommitMessage,
            Ok(_) => LocalTransactionState::RollbackMessage,
            Err(error) => {
                warn!(tx_no = %transfer.tx_no, %error, "cannot settle transfer now; the broker will check back");
                LocalTransactionState::Unknown
            }
        }
    }
}

impl TransactionListener for LocalTransaction {
    /// Never called: `TransferProducer::send` runs the local transaction itself. Should
    /// RocketMQ call it, the broker's check-back settles the transfer.
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        error!(topic = %msg.topic(), "local-transaction callback called; leaving it to the check-back");
        LocalTransactionState::Unknown
    }

    /// Settles each transfer of the message: COMMIT when every one is debited, ROLLBACK
    /// when none can be any more (a transfer rolled back is not debited later), UNKNOWN
    /// when one cannot be settled now.
    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let body = msg.get_body().map(|b| b.as_ref()).unwrap_or_default();
        let transfers = match wire::decode(body, &self.seed) {
            Ok(Inbound::Transfers(transfers)) => transfers,
            Ok(Inbound::Settlements { .. }) => {
                error!(msg_id = %msg.msg_id(), "check-back for settlement reports, which are never sent as a half message; rolling back");
                return LocalTransactionState::RollbackMessage;
            }
            Err(error) => {
                // Only this producer writes to its group, and it never debits for a body
                // it cannot read back, so there is nothing to commit.
                error!(msg_id = %msg.msg_id(), %error, "check-back for an unreadable message; rolling back");
                return LocalTransactionState::RollbackMessage;
            }
        };
        let started = Instant::now();
        let states: Vec<LocalTransactionState> = transfers
            .iter()
            .map(|transfer| {
                self.runtime
                    .block_on(self.settle(transfer, "no local commit when the broker checked back"))
            })
            .collect();
        let state = if states.iter().all(|s| *s == LocalTransactionState::CommitMessage) {
            LocalTransactionState::CommitMessage
        } else if states.contains(&LocalTransactionState::Unknown) {
            LocalTransactionState::Unknown
        } else {
            LocalTransactionState::RollbackMessage
        };
        self.counters
            .observe(Timing::Database(DbCall::CheckBack), started.elapsed());
        self.counters.record(Event::CheckBack(match state {
            LocalTransactionState::CommitMessage => Some(true),
            LocalTransactionState::RollbackMessage => Some(false),
            LocalTransactionState::Unknown => None,
        }));
        crash_point(ANSWERING_CHECK_BACK);
        for (transfer, own) in transfers.iter().zip(&states) {
            info!(tx_no = %transfer.tx_no, verdict = ?state, debited = (*own == LocalTransactionState::CommitMessage), "answered check-back");
        }
        state
    }
}

/// True when RocketMQ says `error` may pass by itself, after a pause or on another try
/// (a broker busy or unreachable, an answer late), rather than needing a different
/// message, configuration or operator.
fn may_pass(error: &ClientError) -> bool {
    // The hint's stable names: its type is not exported by the client crate.
    !matches!(
        error.descriptor().recovery_hint().as_str(),
        "never" | "operator_action" | "refresh_credentials"
    )
}

/// A future the compiler cannot see is `Send`, which the caller has checked is.
struct CheckedSend<F>(Pin<Box<F>>);

// SAFETY: only `end` builds one, around the future of RocketMQ's
// `DefaultMQProducerImpl::end_transaction`. That future is not `Send` as a type only
// because it holds its `&dyn MessageTrait` argument, a trait without `Sync`; the message
// behind it is a `Message`, which is `Sync`, as are the `SendResult` and the producer it
// borrows (`end` has the compiler check these three). What it awaits is
// `end_transaction_owned`, whose future RocketMQ's own `send_message_in_transaction`
// awaits in a future that is `Send`.
unsafe impl<F> Send for CheckedSend<F> {}

impl<F: Future> Future for CheckedSend<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Compiles only for `T: Sync`.
fn shared<T: Sync + ?Sized>(_: &T) {}
