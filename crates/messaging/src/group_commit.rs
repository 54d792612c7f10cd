//! Group commit. RocketMQ hands each local transaction and each received message to its
//! own callback thread, and each would pay for its own durable commit; here the
//! callbacks queue their work and wait, while a task applies whatever is queued in a
//! single database transaction and answers each callback with its own outcome (on MySQL
//! and PostgreSQL several tasks per queue, each taking what queued while the others
//! apply). A message is still acknowledged (or its transaction committed) one by one,
//! only after the commit that applied it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::metrics::{CommitQueue, Counters};
use crate::Tasks;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, Mutex};
use txbank_domain::{BankId, IdempotencyKey, Settlement, Transfer, TxNo};
use txbank_storage::{
    CreditOutcome, DebitOutcome, Delivery, DeliveryOutcome, Engine, SettlementOutcome, StorageError, Store,
};

/// Most requests applied in one transaction: two full messages' transfers (128 each).
const MAX_BATCH: usize = 256;

/// Most messages whose debits commit in one transaction: 4 messages of 128 transfers
/// hold a transaction's size near two full delivery batches'.
const MAX_MESSAGES: usize = 4;

/// Transactions each queue applies at once on `store`'s database. One on SQLite, which
/// writes one transaction at a time. On MySQL and PostgreSQL, which lock rows, a quarter
/// of the bank's connections (two of the default eight): the three queues then leave a
/// quarter for reads, the relay and check-backs. One at a time held a PostgreSQL bank's
/// queues over 90 % busy with the machine's cores idle (docs/PERFORMANCE.md).
fn appliers(store: &Store) -> usize {
    match store.engine() {
        Engine::Sqlite => 1,
        Engine::MySql | Engine::Postgres => (store.max_connections() / 4).max(1),
    }
}

/// Where the queues of `store` apply: on SQLite, on the bank's writer thread; elsewhere,
/// on the bank's workers (`None`).
///
/// A SQLite bank writes one transaction at a time, and while its turn lasts each
/// statement goes to the connection's thread and its answer wakes the applying task. On
/// the bank's workers that task then waits behind every task ready before it (HTTP
/// requests, messages), so the turn lasts that much longer for every statement. Its own
/// thread, asleep but for the turn, runs it as soon as the answer comes.
fn applying_runtime(store: &Store) -> Option<Handle> {
    static WRITERS: OnceLock<std::sync::Mutex<HashMap<BankId, Handle>>> = OnceLock::new();
    if store.engine() != Engine::Sqlite {
        return None;
    }
    let mut writers = WRITERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let writer = writers.entry(store.bank().clone()).or_insert_with(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the writer thread");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name(format!("{}-writer", store.bank()))
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("the writer thread");
        handle
    });
    Some(writer.clone())
}

/// Why a queued request got no answer.
const SHUTTING_DOWN: &str = "the bank is shutting down";

/// A queue whose requests its tasks apply in batches, answering each in turn.
struct Batches<R, O> {
    queue: mpsc::UnboundedSender<(R, oneshot::Sender<O>)>,
}

impl<R: Send + 'static, O: Send + 'static> Batches<R, O> {
    /// Starts `appliers` applying tasks on `tasks`: each in turn takes what is queued (up
    /// to `most` requests), hands it to `apply` and expects one outcome per request, in
    /// order, counting each batch and the time it took in `counters` as `kind`'s. While
    /// one applies, the next takes what queued meanwhile. Once `tasks` is cancelled they
    /// take no new request, apply those queued already, and end; they also end when every
    /// handle is gone.
    fn start<F, Fut>(
        tasks: &Tasks,
        runtime: Option<&Handle>,
        most: usize,
        appliers: usize,
        kind: CommitQueue,
        counters: Arc<Counters>,
        apply: F,
    ) -> Batches<R, O>
    where
        F: Fn(Vec<R>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send,
    {
        let (queue, queued) = mpsc::unbounded_channel::<(R, oneshot::Sender<O>)>();
        let queued = Arc::new(Mutex::new(queued));
        for _ in 0..appliers.max(1) {
            let (queued, ending, counters, apply) =
                (Arc::clone(&queued), tasks.clone(), Arc::clone(&counters), apply.clone());
            let applier = async move {
                let mut batch = Vec::with_capacity(most);
                loop {
                    let taken = {
                        let mut queued = queued.lock().await;
                        tokio::select! {
                            taken = queued.recv_many(&mut batch, most) => taken,
                            () = ending.cancelled() => {
                                queued.close();
                                queued.recv_many(&mut batch, most).await
                            }
                        }
                    };
                    if taken == 0 {
                        break;
                    }
                    let (requests, replies): (Vec<R>, Vec<_>) = batch.drain(..).unzip();
                    let applying = Instant::now();
                    let outcomes = apply(requests).await;
                    counters.committed(kind, taken, applying.elapsed());
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
            };
            match runtime {
                Some(runtime) => tasks.spawn_on(applier, runtime),
                None => tasks.spawn(applier),
            };
        }
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
    pub(crate) fn start(store: Store, tasks: &Tasks, counters: Arc<Counters>) -> GroupCommit {
        let (appliers, runtime) = (appliers(&store), applying_runtime(&store));
        let deliveries = Batches::start(
            tasks,
            runtime.as_ref(),
            MAX_BATCH,
            appliers,
            CommitQueue::Deliveries,
            counters,
            move |deliveries: Vec<Delivery>| {
                let store = store.clone();
                async move { each_or_failed(store.apply_deliveries(&deliveries).await, deliveries.len()) }
            },
        );
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

/// The outcome of each of a batch's `requests` requests: its own when the batch's
/// transaction ran, else the transaction's error for every one.
fn each_or_failed<T>(applied: Result<Vec<T>, StorageError>, requests: usize) -> Vec<Result<T, String>> {
    match applied {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) => {
            let error = error.to_string();
            (0..requests).map(|_| Err(error.clone())).collect()
        }
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
    pub(crate) fn start(store: Store, tasks: &Tasks, counters: Arc<Counters>) -> DebitGroup {
        let (appliers, runtime) = (appliers(&store), applying_runtime(&store));
        let debits = Batches::start(
            tasks,
            runtime.as_ref(),
            MAX_BATCH,
            appliers,
            CommitQueue::Debits,
            counters,
            move |requests: Vec<(Transfer, Option<IdempotencyKey>)>| {
                let store = store.clone();
                async move { store.debit_all(&requests).await }
            },
        );
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
    pub(crate) fn start(store: Store, tasks: &Tasks, counters: Arc<Counters>) -> MessageDebits {
        let (appliers, runtime) = (appliers(&store), applying_runtime(&store));
        let debits = Batches::start(
            tasks,
            runtime.as_ref(),
            MAX_MESSAGES,
            appliers,
            CommitQueue::MessageDebits,
            counters,
            move |messages: Vec<MessageDebit>| {
                let store = store.clone();
                async move {
                    let each: Vec<&[(Transfer, Option<IdempotencyKey>)]> = messages.iter().map(Vec::as_slice).collect();
                    each_or_failed(store.debit_messages(&each).await, messages.len())
                }
            },
        );
        MessageDebits { debits }
    }

    /// Debits the transfers of one message with the other messages queued: true when all
    /// were debited, false when none was (one of them must be debited on its own), `Err`
    /// when the transaction failed and nothing changed.
    pub(crate) async fn debit(&self, message: MessageDebit) -> Result<bool, String> {
        self.debits.enqueue(message).answer().await?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A group commit that doubles each request, a batch at a time.
    fn doubling(tasks: &Tasks) -> Batches<u32, u32> {
        Batches::start(
            tasks,
            None,
            4,
            1,
            CommitQueue::Deliveries,
            Arc::default(),
            |requests: Vec<u32>| async move { requests.into_iter().map(|request| request * 2).collect() },
        )
    }

    #[tokio::test]
    async fn while_one_applier_waits_on_its_transaction_another_applies_what_queued_meanwhile() {
        let tasks = Tasks::new();
        let (started, mut applying) = mpsc::unbounded_channel();
        let held = Arc::new(tokio::sync::Semaphore::new(0));
        let release = Arc::clone(&held);
        let commits = Batches::start(
            &tasks,
            None,
            4,
            2,
            CommitQueue::Deliveries,
            Arc::default(),
            move |requests: Vec<u32>| {
                let (started, held) = (started.clone(), Arc::clone(&held));
                async move {
                    if requests.contains(&1) {
                        let _ = started.send(());
                        let _ = held.acquire().await;
                    }
                    requests.into_iter().map(|request| request * 2).collect()
                }
            },
        );

        let first = commits.enqueue(1);
        applying.recv().await;
        let second = commits.enqueue(2);

        let meanwhile = tokio::time::timeout(Duration::from_secs(10), second.answer()).await;
        assert_eq!(meanwhile, Ok(Ok(4)), "answered while the first is held");
        release.add_permits(1);
        assert_eq!(first.answer().await, Ok(2));
    }

    #[tokio::test]
    async fn a_sqlite_banks_queues_apply_on_its_writer_thread_not_on_its_workers() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
        let store = Store::connect(BankId::parse("bank7").unwrap(), &url, 2).await.unwrap();
        let tasks = Tasks::new();
        let applying_on = Batches::start(
            &tasks,
            applying_runtime(&store).as_ref(),
            4,
            appliers(&store),
            CommitQueue::Deliveries,
            Arc::default(),
            |requests: Vec<u32>| async move {
                let thread = std::thread::current().name().map(str::to_string);
                requests.iter().map(|_| thread.clone()).collect()
            },
        );
        let thread = applying_on.enqueue(1).answer().await.unwrap();
        assert_eq!(thread.as_deref(), Some("bank7-writer"));
    }

    #[tokio::test]
    async fn a_group_commit_answers_what_was_queued_before_its_bank_ends_and_then_refuses() {
        let tasks = Tasks::new();
        let commits = doubling(&tasks);
        let queued: Vec<Queued<u32>> = (1..=10).map(|request| commits.enqueue(request)).collect();

        let still_running = tasks.end(Duration::from_secs(5)).await;

        assert_eq!(still_running, 0, "the group commit ended with its bank");
        let mut answers = Vec::new();
        for answer in queued {
            answers.push(answer.answer().await);
        }
        assert_eq!(answers, (1..=10).map(|request| Ok(request * 2)).collect::<Vec<_>>());
        assert_eq!(commits.enqueue(11).answer().await, Err(SHUTTING_DOWN));
    }
}
