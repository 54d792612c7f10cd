//! bank1's side: the transactional producer, the local transaction it runs, and the
//! answer to the broker's check-back.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{LocalTransactionState, TransactionListener, TransactionMQProducer};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;
use tokio::runtime::Handle;
use tracing::{error, info, info_span, warn, Instrument};
use txbank_domain::{IdempotencyKey, Transfer};
use txbank_storage::{DebitOutcome, StorageError, Store};

use crate::group_commit::DebitGroup;
use crate::metrics::{BrokerCall, Counters, DbCall, Event, Timing};
use crate::signing::{self, MessageKey};
use crate::wire::{Inbound, SeedDefaults};
use crate::{wire, MessagingError, MqClient, MqSettings, Routes};
use txbank_storage::faults::{crash_point, AFTER_LOCAL_COMMIT, ANSWERING_CHECK_BACK, BEFORE_LOCAL_TRANSACTION};

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

/// Sends transfers as RocketMQ transactional messages to their destination bank's
/// topic and runs the debit as their local transaction (producer group
/// `producer_group_txmsg_bank1` for bank1 by default).
pub struct TransferProducer {
    producer: TransactionMQProducer,
    routes: Routes,
    signer: Option<MessageKey>,
    counters: Arc<Counters>,
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
        let listener = LocalTransaction {
            debits: DebitGroup::start(store.clone()),
            store,
            runtime: Handle::current(),
            seed,
            counters: Arc::clone(&counters),
        };
        let mut producer = TransactionMQProducer::builder(client.runtime())
            .client_config(settings.client_config())
            .producer_group(group.to_string())
            .name_server_addr(settings.namesrv_addr.clone())
            .send_msg_timeout(settings.send_timeout.as_millis() as u32)
            .topics(routes.topics().map(str::to_string).collect())
            .transaction_listener(listener)
            .build();
        producer
            .start()
            .await
            .map_err(|e| MessagingError::client("producer start", e))?;
        Ok(TransferProducer {
            producer,
            routes,
            signer: settings.signing_key.clone(),
            counters,
        })
    }

    /// Where this producer can send.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Sends `transfer`: half message first, then the local debit, then COMMIT or
    /// ROLLBACK. An error means the half message was not stored and nothing moved.
    pub async fn send(&self, transfer: &Transfer, key: Option<&IdempotencyKey>) -> Result<SendOutcome, MessagingError> {
        let message = signing::message(
            self.routes.topic(&transfer.to_bank)?,
            transfer.tx_no.as_str(),
            wire::encode(transfer),
            self.signer.as_ref(),
        )?;
        let request = Arc::new(LocalRequest {
            transfer: transfer.clone(),
            key: key.cloned(),
            outcome: Mutex::new(None),
        });
        let started = Instant::now();
        self.producer
            .send_message_in_transaction(message, Some(Arc::clone(&request)))
            .instrument(info_span!("transfer.send", tx_no = %transfer.tx_no))
            .await
            .map_err(|e| MessagingError::client("transactional send", e))?;
        let local = request.outcome.lock().expect("outcome lock").take();
        let local_elapsed = local.as_ref().map_or(Duration::ZERO, |(_, elapsed)| *elapsed);
        self.counters.observe(
            Timing::Broker(BrokerCall::TransactionalSend),
            started.elapsed().saturating_sub(local_elapsed),
        );
        Ok(local.map_or(SendOutcome::Pending, |(outcome, _)| outcome))
    }

    /// Stops the producer; in-flight sends finish first.
    pub async fn shutdown(mut self) {
        self.producer.shutdown().await;
    }
}

/// What `send` hands to the local-transaction callback, and where the callback leaves
/// the outcome for `send` to return, with the time the local transaction took.
struct LocalRequest {
    transfer: Transfer,
    key: Option<IdempotencyKey>,
    outcome: Mutex<Option<(SendOutcome, Duration)>>,
}

/// RocketMQ's transaction listener: runs the debit (with whatever other debits are
/// queued, in one database transaction), and answers check-backs.
struct LocalTransaction {
    debits: DebitGroup,
    store: Store,
    runtime: Handle,
    seed: SeedDefaults,
    counters: Arc<Counters>,
}

impl LocalTransaction {
    /// Settles a transfer whose debit did not (or may not have) committed, and turns the
    /// final state into the broker's answer.
    fn settle(&self, transfer: &Transfer, reason: &str) -> LocalTransactionState {
        match self
            .runtime
            .block_on(self.store.roll_back_unless_debited(transfer, reason))
        {
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
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let Some(request) = arg.and_then(|arg| arg.downcast_ref::<Arc<LocalRequest>>()) else {
            error!(topic = %msg.topic(), "local transaction called without its request; rolling back");
            return LocalTransactionState::RollbackMessage;
        };
        let transfer = &request.transfer;
        crash_point(BEFORE_LOCAL_TRANSACTION);
        let started = Instant::now();
        let debited = self
            .runtime
            .block_on(self.debits.debit(transfer.clone(), request.key.clone()));
        self.counters
            .observe(Timing::Database(DbCall::Debit), started.elapsed());
        let debited = match debited {
            Ok(debited) => debited,
            Err(reason) => {
                warn!(tx_no = %transfer.tx_no, reason, "debit not answered; the broker will check back");
                *request.outcome.lock().expect("outcome lock") = Some((SendOutcome::Pending, started.elapsed()));
                return LocalTransactionState::Unknown;
            }
        };
        let (state, outcome) = match debited {
            Ok(debit) => {
                crash_point(AFTER_LOCAL_COMMIT);
                self.counters.record(Event::Debited);
                info!(tx_no = %transfer.tx_no, from = %transfer.from, to = %transfer.to, amount = %transfer.amount, "debited");
                (LocalTransactionState::CommitMessage, SendOutcome::Debited(debit))
            }
            Err(refusal) => {
                let state = self.settle(transfer, &refusal.to_string());
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
        };
        *request.outcome.lock().expect("outcome lock") = Some((outcome, started.elapsed()));
        state
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let body = msg.get_body().map(|b| b.as_ref()).unwrap_or_default();
        let transfer = match wire::decode(body, &self.seed) {
            Ok(Inbound::Transfer(transfer)) => transfer,
            Ok(Inbound::Settlement { tx_no, .. }) => {
                error!(%tx_no, "check-back for a settlement report, which is never sent as a half message; rolling back");
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
        let state = self.settle(&transfer, "no local commit when the broker checked back");
        self.counters
            .observe(Timing::Database(DbCall::CheckBack), started.elapsed());
        self.counters.record(Event::CheckBack(match state {
            LocalTransactionState::CommitMessage => Some(true),
            LocalTransactionState::RollbackMessage => Some(false),
            LocalTransactionState::Unknown => None,
        }));
        crash_point(ANSWERING_CHECK_BACK);
        info!(tx_no = %transfer.tx_no, verdict = ?state, "answered check-back");
        state
    }
}
