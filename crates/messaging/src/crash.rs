//! Crash points: named places on the transfer path where a test can make the process
//! die at once, as if killed with SIGKILL.
//!
//! A point is armed only by the `TXBANK_CRASH_AT` environment variable naming it; the
//! code path around it is the production one. Unarmed, a point costs one comparison.

use std::sync::OnceLock;

/// After the half message is stored, before the local transaction runs.
pub const BEFORE_LOCAL_TRANSACTION: &str = "before-local-transaction";
/// After the local transaction commits, before COMMIT is sent to the broker.
pub const AFTER_LOCAL_COMMIT: &str = "after-local-commit";
/// After the destination's credit commits, before the message is acknowledged.
pub const AFTER_CREDIT_COMMIT: &str = "after-credit-commit";

/// Kills this process with SIGKILL when `point` is the armed crash point.
pub fn crash_point(point: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("TXBANK_CRASH_AT").ok());
    if armed.as_deref() == Some(point) {
        tracing::warn!(point, "crash point reached: killing this process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
