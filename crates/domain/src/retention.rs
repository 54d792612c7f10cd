//! How long a settled transfer stays in a bank's hot tables: long enough that no message
//! about it can still arrive, after which it may move to the archive.

use crate::TxNo;

/// The youngest a settled transfer may be when it is archived: 7 days. A message about
/// a transfer arrives at the latest when the broker's last redelivery does: RocketMQ
/// keeps messages 72 hours by default (`fileReservedTime`) and redelivers a refused one
/// 16 times over 4 h 46 min; a transfer still in flight is never archived, and re-drive
/// sends only those. A week covers all of it with days to spare.
pub const MIN_ARCHIVE_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// True when a message about `tx_no`, received at `now_ms`, may concern a transfer that
/// was archived, so that the archive must be consulted before applying it: its number
/// is older than [`MIN_ARCHIVE_AGE_MS`], or carries no time (the seed's numbers).
pub fn may_be_archived(tx_no: &TxNo, now_ms: i64) -> bool {
    tx_no
        .made_at_ms()
        .is_none_or(|made_at| made_at <= now_ms - MIN_ARCHIVE_AGE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_or_timeless_numbers_may_be_archived() {
        let now = 1_800_000_000_000;
        assert!(!may_be_archived(&TxNo::generate_at(now - 1_000), now));
        assert!(!may_be_archived(&TxNo::generate_at(now - MIN_ARCHIVE_AGE_MS + 1), now));
        assert!(may_be_archived(&TxNo::generate_at(now - MIN_ARCHIVE_AGE_MS), now));
        assert!(may_be_archived(&TxNo::parse("TX-1001").unwrap(), now));
    }
}
