//! Group commit for received messages. RocketMQ hands each message to its own
//! callback thread, and each would pay for its own durable commit; here the callbacks
//! queue their message and wait, while one task applies whatever is queued in a single
//! database transaction and answers each callback with its own outcome. A message is
//! still acknowledged one by one, only after the commit that applied it.

use tokio::sync::{mpsc, oneshot};
use txbank_domain::{BankId, Settlement, Transfer, TxNo};
use txbank_storage::{CreditOutcome, Delivery, DeliveryOutcome, SettlementOutcome, StorageError, Store};

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 64;

/// What a callback waits for: its delivery's outcome, or why the batch failed.
type Reply = oneshot::Sender<Result<DeliveryOutcome, String>>;

/// The handle callbacks queue their deliveries through.
#[derive(Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<(Delivery, Reply)>,
}

impl GroupCommit {
    /// Starts the applying task on the current runtime; it ends when every handle is gone.
    pub(crate) fn start(store: Store) -> GroupCommit {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(apply_batches(store, queued));
        GroupCommit { queue }
    }

    /// Credits `transfer` with whatever else is queued; an error means the whole batch
    /// rolled back and nothing of it changed.
    pub(crate) async fn credit(&self, transfer: Transfer) -> Result<CreditOutcome, String> {
        match self.apply(Delivery::Transfer(transfer)).await? {
            DeliveryOutcome::Credit(outcome) => Ok(outcome),
            other => Err(format!("a credit was answered with {other:?}")),
        }
    }

    /// Applies a settlement report with whatever else is queued: `Ok(Err(_))` when the
    /// report cannot apply (nothing changed), `Err` when the whole batch rolled back.
    pub(crate) async fn settle(
        &self,
        tx_no: TxNo,
        reporter: BankId,
        settlement: Settlement,
    ) -> Result<Result<SettlementOutcome, StorageError>, String> {
        let delivery = Delivery::Settlement {
            tx_no,
            reporter,
            settlement,
        };
        match self.apply(delivery).await? {
            DeliveryOutcome::Settlement(outcome) => Ok(Ok(outcome)),
            DeliveryOutcome::BadSettlement(refusal) => Ok(Err(refusal)),
            other => Err(format!("a settlement report was answered with {other:?}")),
        }
    }

    async fn apply(&self, delivery: Delivery) -> Result<DeliveryOutcome, String> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((delivery, reply))
            .map_err(|_| "the bank is shutting down".to_string())?;
        outcome.await.map_err(|_| "the bank is shutting down".to_string())?
    }
}

async fn apply_batches(store: Store, mut queued: mpsc::UnboundedReceiver<(Delivery, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (deliveries, replies): (Vec<Delivery>, Vec<Reply>) = batch.drain(..).unzip();
        match store.apply_deliveries(&deliveries).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = error.to_string();
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
