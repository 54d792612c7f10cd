//! Who owns a bank's tasks. Every task the messaging parts spawn runs on the bank's
//! [`Tasks`]: a tracker that knows which still run and a cancellation token that tells
//! them to end. A part that stops on its own (the consumer, the relay...) holds a child
//! of the token and cancels just that; what serves several parts (the group commits)
//! ends with the bank, once the parts it serves have stopped.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tasks of one bank, or of one of its parts (see [`Tasks::child`]).
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    ending: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` on the current runtime, tracked.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Runs `task` on the runtime of `runtime`, tracked.
    pub fn spawn_on<F>(&self, task: F, runtime: &Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, runtime)
    }

    /// The same tracker with a token of its own, cancelled when this one is or by
    /// itself: for a part that stops before the bank ends.
    pub fn child(&self) -> Tasks {
        Tasks {
            tracker: self.tracker.clone(),
            ending: self.ending.child_token(),
        }
    }

    /// Tells the tasks holding this token (or a child of it) to end.
    pub fn cancel(&self) {
        self.ending.cancel();
    }

    /// Resolves once [`Tasks::cancel`] was called here or on a parent.
    pub async fn cancelled(&self) {
        self.ending.cancelled().await;
    }

    /// True once [`Tasks::cancel`] was called here or on a parent.
    pub fn is_cancelled(&self) -> bool {
        self.ending.is_cancelled()
    }

    /// Tells every task to end, takes no new ones, and waits up to `within` for all to
    /// end: how many still run after that (0 when all ended).
    pub async fn end(&self, within: Duration) -> usize {
        self.ending.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(within, self.tracker.wait()).await;
        self.tracker.len()
    }
}

/// The task of a part that runs until the part is shut down (the consumer, the relay,
/// the re-drive, the topic keeper): its own token and its handle.
pub(crate) struct PartTask {
    stop: Tasks,
    task: JoinHandle<()>,
}

impl PartTask {
    /// Spawns `run` on `tasks`, handing it the token it ends at.
    pub(crate) fn spawn<F>(tasks: &Tasks, run: impl FnOnce(Tasks) -> F) -> PartTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = tasks.child();
        let task = tasks.spawn(run(stop.clone()));
        PartTask { stop, task }
    }

    /// Tells the task to end and waits until it has.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
