//! Fault points: named places on the transfer path where a test can make this process
//! die at once (as with SIGKILL), make the current database transaction fail, or hold
//! it open for a while (as a stalled database or a long pause would).
//!
//! A point is armed only by an environment variable naming it (`TXBANK_CRASH_AT`,
//! `TXBANK_FAIL_AT` or `TXBANK_PAUSE_AT`, with `TXBANK_PAUSE_MS`, default 5000); the code
//! around it is the production path. Unarmed, a point costs one comparison.

use std::sync::OnceLock;

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

/// Kills this process with SIGKILL when `point` is the armed crash point.
pub fn crash_point(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if is_armed(&ARMED, "TXBANK_CRASH_AT", point) {
        tracing::warn!(point, "crash point reached: killing this process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// True when `point` is the armed failure point: the caller fails its transaction.
pub(crate) fn fail_point(point: &str) -> bool {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    is_armed(&ARMED, "TXBANK_FAIL_AT", point)
}

/// Waits `TXBANK_PAUSE_MS` milliseconds (5000 by default) when `point` is the armed
/// pause point; the caller's transaction stays open meanwhile.
pub(crate) async fn pause_point(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    if is_armed(&ARMED, "TXBANK_PAUSE_AT", point) {
        let millis = std::env::var("TXBANK_PAUSE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(5000);
        tracing::warn!(point, millis, "pause point reached: holding the transaction open");
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    }
}

fn is_armed(armed: &OnceLock<Option<String>>, variable: &str, point: &str) -> bool {
    armed.get_or_init(|| std::env::var(variable).ok()).as_deref() == Some(point)
}
