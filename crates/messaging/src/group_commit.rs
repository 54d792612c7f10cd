//! Group commit. RocketMQ hands each local transaction and each received message to its
//! own callback thread, and each would pay for its own durable commit; here the
//! callbacks queue their work and wait, while one task applies whatever is queued in a
//! single database transaction and answers each callback with its own outcome. A
//! message is still acknowledged (or its transaction committed) one by one, only after
//! the commit that applied it.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};
use txbank_domain::{BankId, IdempotencyKey, Settlement, Transfer, TxNo};
use txbank_storage::{CreditOutcome, DebitOutcome, Delivery, DeliveryOutcome, SettlementOutcome, StorageError, Store};

/// Most requests applied in one transaction: a consumer callback's 32 messages of up to
/// 32 transfers each take four (64 took sixteen, docs/PERFORMANCE.md).
const MAX_BATCH: usize = 256;

/// Most messages whose debits commit in one transaction: 16 messages of 32 transfers
/// hold a transaction's size near a full delivery batch's.
const MAX_MESSAGES: usize = 16;

/// Why a queued request got no answer.
const SHUTTING_DOWN: &str = "the bank is shutting down";

/// A queue whose requests one task applies in batches, answering each in turn.
struct Batches<R, O> {
    queue: mpsc::UnboundedSender<(R, oneshot::Sender<O>)>,
}

impl<R: Send + 'static, O: Send + 'static> Batches<R, O> {
    /// Starts the applying task on the current runtime: it hands `apply` what is queued
    /// (up to `most` requests) and expects one outcome per request, in order. It ends
    /// when every handle is gone.
    fn start<F, Fut>(most: usize, mut apply: F) -> Batches<R, O>
    where
        F: FnMut(Vec<R>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send,
    {
        let (queue, mut queued) = mpsc::unbounded_channel::<(R, oneshot::Sender<O>)>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(most);
            while queued.recv_many(&mut batch, most).await > 0 {
                let (requests, replies): (Vec<R>, Vec<_>) = batch.drain(..).unzip();
                for (reply, outcome) in replies.into_iter().zip(apply(requests).await) {
                    let _ = reply.send(outcome);
                }
            }
        });
        Batches { queue }
    }

    /// Queues `request` now; its outcome comes through the returned [`Queued`].
    fn enqueue(&self, request: R) -> Queued<O> {
        let (reply, outcome) = oneshot::channel();
        Queued(
            self.queue
                .send((request, reply))
                .map(|()| outcome)
                .map_err(|_| SHUTTING_DOWN),
        )
    }
}

/// A request in the queue, whose outcome is on its way.
struct Queued<O>(Result<oneshot::Receiver<O>, &'static str>);

impl<O> Queued<O> {
    /// Waits for the outcome.
    async fn answer(self) -> Result<O, &'static str> {
        self.0?.await.map_err(|_| SHUTTING_DOWN)
    }
}

/// An outcome the group commit will give, for a request queued already.
pub(crate) type Answer<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

impl<R, O> Clone for Batches<R, O> {
    fn clone(&self) -> Self {
        Batches {
            queue: self.queue.clone(),
        }
    }
}

/// The handle consumer callbacks queue their deliveries through.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    deliveries: Batches<Delivery, Result<DeliveryOutcome, String>>,
}

impl GroupCommit {
    /// Starts applying deliveries to `store`; a failed batch rolls back whole, and each
    /// of its callbacks hears why.
    pub(crate) fn start(store: Store) -> GroupCommit {
        let deliveries = Batches::start(MAX_BATCH, move |deliveries: Vec<Delivery>| {
            let store = store.clone();
            async move {
                match store.apply_deliveries(&deliveries).await {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(error) => {
                        let error = error.to_string();
                        deliveries.iter().map(|_| Err(error.clone())).collect()
                    }
                }
            }
        });
        GroupCommit { deliveries }
    }

    /// Queues `transfer`'s credit at once, to commit with whatever else is queued: the
    /// answer is `Ok(Err(_))` when the credit fails the same way every time (nothing of
    /// it changed), `Err` when it may apply on another try.
    pub(crate) fn credit(&self, transfer: Transfer) -> Answer<Result<CreditOutcome, StorageError>> {
        let queued = self.deliveries.enqueue(Delivery::Transfer(transfer));
        Box::pin(async move {
            match queued.answer().await?? {
                DeliveryOutcome::Credit(outcome) => Ok(Ok(outcome)),
                DeliveryOutcome::Failed(error) => lasting(error),
                other => Err(format!("a credit was answered with {other:?}")),
            }
        })
    }

    /// Queues a settlement report at once, to apply with whatever else is queued: the
    /// answer is `Ok(Err(_))` when the report cannot apply or fails the same way every
    /// time (nothing changed), `Err` when it may apply on another try.
    pub(crate) fn settle(
        &self,
        tx_no: TxNo,
        reporter: BankId,
        settlement: Settlement,
    ) -> Answer<Result<SettlementOutcome, StorageError>> {
        let queued = self.deliveries.enqueue(Delivery::Settlement {
            tx_no,
            reporter,
            settlement,
        });
        Box::pin(async move {
            match queued.answer().await?? {
                DeliveryOutcome::Settlement(outcome) => Ok(Ok(outcome)),
                DeliveryOutcome::BadSettlement(refusal) => Ok(Err(refusal)),
                DeliveryOutcome::Failed(error) => lasting(error),
                other => Err(format!("a settlement report was answered with {other:?}")),
            }
        })
    }
}

/// A delivery's own failure: `Ok(Err(_))` when it fails the same way every time,
/// `Err` when another try may apply it.
fn lasting<T>(error: StorageError) -> Result<Result<T, StorageError>, String> {
    if error.is_transient() {
        Err(error.to_string())
    } else {
        Ok(Err(error))
    }
}

/// The handle local-transaction callbacks queue their debits through.
#[derive(Clone)]
pub(crate) struct DebitGroup {
    debits: Batches<(Transfer, Option<IdempotencyKey>), Result<DebitOutcome, StorageError>>,
}

impl DebitGroup {
    /// Starts debiting in `store` (see [`Store::debit_all`]).
    pub(crate) fn start(store: Store) -> DebitGroup {
        let debits = Batches::start(MAX_BATCH, move |requests: Vec<(Transfer, Option<IdempotencyKey>)>| {
            let store = store.clone();
            async move { store.debit_all(&requests).await }
        });
        DebitGroup { debits }
    }

    /// Debits `transfer` with whatever else is queued, answering as
    /// [`Store::debit_and_record`] would; `Err` when the bank is shutting down and the
    /// debit's fate is for the check-back to find.
    pub(crate) async fn debit(
        &self,
        transfer: Transfer,
        key: Option<IdempotencyKey>,
    ) -> Result<Result<DebitOutcome, StorageError>, &'static str> {
        self.debits.enqueue((transfer, key)).answer().await
    }
}

/// The debits of a message's transfers, all or none.
type MessageDebit = Vec<(Transfer, Option<IdempotencyKey>)>;

/// The handle a producer's messages queue their local transactions through: the debits
/// of the messages waiting at the same moment commit in one database transaction, each
/// message's all or none (see [`Store::debit_messages`]), so that more messages on their
/// way do not cost a durable commit each.
#[derive(Clone)]
pub(crate) struct MessageDebits {
    debits: Batches<MessageDebit, Result<bool, String>>,
}

impl MessageDebits {
    /// Starts debiting messages' transfers in `store`.
    pub(crate) fn start(store: Store) -> MessageDebits {
        let debits = Batches::start(MAX_MESSAGES, move |messages: Vec<MessageDebit>| {
            let store = store.clone();
            async move {
                let each: Vec<&[(Transfer, Option<IdempotencyKey>)]> = messages.iter().map(Vec::as_slice).collect();
                match store.debit_messages(&each).await {
                    Ok(debited) => debited.into_iter().map(Ok).collect(),
                    Err(error) => {
                        let error = error.to_string();
                        messages.iter().map(|_| Err(error.clone())).collect()
                    }
                }
            }
        });
        MessageDebits { debits }
    }

    /// Debits the transfers of one message with the other messages queued: true when all
    /// were debited, false when none was (one of them must be debited on its own), `Err`
    /// when the transaction failed and nothing changed.
    pub(crate) async fn debit(&self, message: MessageDebit) -> Result<bool, String> {
        self.debits.enqueue(message).answer().await?
    }
}
