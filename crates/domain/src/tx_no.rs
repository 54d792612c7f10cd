//! Identifiers of transfers: the transaction number and the client's idempotency key.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::account::is_identifier;
use crate::DomainError;

/// A transfer's transaction number (the seed's `txNo`, a UUID when we make it):
/// 1 to 64 of `[A-Za-z0-9_-]`, so messages from the seed's Java services parse too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxNo(String);

impl TxNo {
    /// A fresh transaction number: a UUID v7, which begins with the time it was made in
    /// milliseconds and goes on with 74 random bits. Numbers made later sort later, so
    /// the databases' indexes on them grow at one end instead of at random places
    /// (docs/PERFORMANCE.md).
    pub fn generate() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::generate_at(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// A fresh transaction number made as if at `unix_ms` (for books filled with past
    /// transfers, as `txbank bench --preload` does).
    pub fn generate_at(unix_ms: i64) -> Self {
        // A v4 UUID's bytes are random but for 6 and 8, which hold its version and variant.
        let v4 = uuid::Uuid::new_v4().into_bytes();
        let random = [v4[0], v4[1], v4[2], v4[3], v4[4], v4[5], v4[9], v4[10], v4[11], v4[12]];
        TxNo(
            uuid::Builder::from_unix_timestamp_millis(unix_ms.max(0) as u64, &random)
                .into_uuid()
                .to_string(),
        )
    }

    /// When the number was made, Unix milliseconds, for a UUID v7 (which txbank makes);
    /// `None` for other numbers (the seed's, a client's), which carry no time.
    pub fn made_at_ms(&self) -> Option<i64> {
        let text = self.0.as_bytes();
        let v7 = text.len() == 36
            && text[14] == b'7'
            && [8, 13, 18, 23].iter().all(|&dash| text[dash] == b'-')
            && text.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
        if !v7 {
            return None;
        }
        let hex = format!("{}{}", &self.0[..8], &self.0[9..13]);
        i64::from_str_radix(&hex, 16).ok()
    }

    /// Parses a transaction number received from a client or a message.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if is_identifier(input, 64) {
            Ok(TxNo(input.to_string()))
        } else {
            Err(DomainError::InvalidTxNo {
                input: input.to_string(),
            })
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TxNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen key that makes a retried transfer request return the first
/// request's transfer instead of debiting twice: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a key, refusing empty, long or non-printable text.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let printable = input.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if !input.is_empty() && input.len() <= 128 && printable {
            Ok(IdempotencyKey(input.to_string()))
        } else {
            Err(DomainError::InvalidIdempotencyKey)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_numbers_parse_back() {
        let tx = TxNo::generate();
        assert_eq!(TxNo::parse(tx.as_str()).unwrap(), tx);
    }

    #[test]
    fn numbers_made_later_sort_later() {
        for _ in 0..20 {
            let earlier = TxNo::generate();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(earlier < TxNo::generate());
        }
    }

    #[test]
    fn a_generated_number_tells_when_it_was_made_and_others_do_not() {
        let made_at = 1_764_547_200_123;
        assert_eq!(TxNo::generate_at(made_at).made_at_ms(), Some(made_at));
        let v4 = uuid::Uuid::new_v4().to_string();
        for timeless in ["TX-1001", "0190f6c1-2b3c-4d5e-8f60-718293a4b5c6", v4.as_str()] {
            assert_eq!(TxNo::parse(timeless).unwrap().made_at_ms(), None, "{timeless}");
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_numbers_and_keys() {
        for bad in ["", "a b", "x".repeat(65).as_str(), "ä"] {
            assert!(TxNo::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a b", "x".repeat(129).as_str(), "\u{202e}abc"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
