//! Group commit for received messages. RocketMQ hands each message to its own
//! callback thread, and each would pay for its own durable commit; here the callbacks
//! queue their message and wait, while one task applies whatever is queued in a single
//! database transaction and answers each callback with its own outcome. A message is
//! still acknowledged one by one, only after the commit that applied it.

use tokio::sync::{mpsc, oneshot};
use txbank_storage::{Delivery, DeliveryOutcome, Store};

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

    /// Applies `delivery` with whatever else is queued; an error means the whole batch
    /// rolled back and nothing of it changed.
    pub(crate) async fn apply(&self, delivery: Delivery) -> Result<DeliveryOutcome, String> {
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
