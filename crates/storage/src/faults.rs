//! Fault points: named places on the transfer path where the lab can make this process
//! die at once (as with SIGKILL), make the current database transaction fail, or hold
//! it open for a while (as a stalled database or a long pause would).
//!
//! They exist only with the feature `lab`, and even then fire only in a process that
//! called [`arm_from_env`] (the `txbank-lab` binary does, `txbank` never does): then an
//! environment variable names the point (`TXBANK_CRASH_AT`, `TXBANK_FAIL_AT` or
//! `TXBANK_PAUSE_AT`, with `TXBANK_PAUSE_MS`, default 5000). The code around a point is
//! the production path; without the feature a point is an empty function.

/// Crash: after the half message is stored, before the local transaction runs.
pub const BEFORE_LOCAL_TRANSACTION: &str = "before-local-transaction";
/// Crash: after the local transaction commits, before COMMIT is sent to the broker.
pub const AFTER_LOCAL_COMMIT: &str = "after-local-commit";
/// Crash: after the local transaction of a message carrying several transfers commits,
/// before COMMIT is sent to the broker.
pub const AFTER_SHARED_LOCAL_COMMIT: &str = "after-shared-local-commit";
/// Crash: after the destination's credit commits, before the message is acknowledged.
pub const AFTER_CREDIT_COMMIT: &str = "after-credit-commit";
/// Crash or failure: inside the local transaction, after the debit, before its commit.
pub const INSIDE_LOCAL_TRANSACTION: &str = "inside-local-transaction";
/// Crash: while answering a check-back, after the verdict is settled in the database,
/// before the broker hears it.
pub const ANSWERING_CHECK_BACK: &str = "answering-check-back";

#[cfg(feature = "lab")]
pub use armed::{arm_from_env, crash_point};
#[cfg(feature = "lab")]
pub(crate) use armed::{fail_point, pause_point};

#[cfg(not(feature = "lab"))]
pub use compiled_out::crash_point;
#[cfg(not(feature = "lab"))]
pub(crate) use compiled_out::{fail_point, pause_point};

#[cfg(feature = "lab")]
mod armed {
    use std::sync::OnceLock;
    use std::time::Duration;

    /// Which points fire in this process; unset until [`arm_from_env`] runs.
    static PLAN: OnceLock<FaultPlan> = OnceLock::new();

    #[derive(Debug)]
    struct FaultPlan {
        crash_at: Option<String>,
        fail_at: Option<String>,
        pause_at: Option<String>,
        pause: Duration,
    }

    /// Arms the points named by `TXBANK_CRASH_AT`, `TXBANK_FAIL_AT` and
    /// `TXBANK_PAUSE_AT` (with `TXBANK_PAUSE_MS`) for the rest of this process.
    pub fn arm_from_env() {
        let plan = FaultPlan {
            crash_at: std::env::var("TXBANK_CRASH_AT").ok(),
            fail_at: std::env::var("TXBANK_FAIL_AT").ok(),
            pause_at: std::env::var("TXBANK_PAUSE_AT").ok(),
            pause: Duration::from_millis(
                std::env::var("TXBANK_PAUSE_MS")
                    .ok()
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(5000),
            ),
        };
        let _ = PLAN.set(plan);
    }

    fn armed(point: &str, named: impl Fn(&FaultPlan) -> &Option<String>) -> Option<&'static FaultPlan> {
        PLAN.get().filter(|plan| named(plan).as_deref() == Some(point))
    }

    /// Kills this process with SIGKILL when `point` is the armed crash point.
    pub fn crash_point(point: &str) {
        if armed(point, |plan| &plan.crash_at).is_some() {
            tracing::warn!(point, "crash point reached: killing this process");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }

    /// True when `point` is the armed failure point: the caller fails its transaction.
    pub(crate) fn fail_point(point: &str) -> bool {
        armed(point, |plan| &plan.fail_at).is_some()
    }

    /// Waits `TXBANK_PAUSE_MS` milliseconds when `point` is the armed pause point; the
    /// caller's transaction stays open meanwhile.
    pub(crate) async fn pause_point(point: &str) {
        if let Some(plan) = armed(point, |plan| &plan.pause_at) {
            tracing::warn!(
                point,
                millis = plan.pause.as_millis(),
                "pause point reached: holding the transaction open"
            );
            tokio::time::sleep(plan.pause).await;
        }
    }
}

#[cfg(not(feature = "lab"))]
mod compiled_out {
    /// Does nothing: fault points exist only in the lab.
    #[inline(always)]
    pub fn crash_point(_point: &str) {}

    /// Always false: fault points exist only in the lab.
    #[inline(always)]
    pub(crate) fn fail_point(_point: &str) -> bool {
        false
    }

    /// Does nothing: fault points exist only in the lab.
    #[inline(always)]
    pub(crate) async fn pause_point(_point: &str) {}
}
