//! Comparing secrets (the operators' API token) without leaking where they differ.

use subtle::ConstantTimeEq;

/// True when `given` equals `expected`, in time that does not depend on where the first
/// difference is (`subtle` keeps the compiler from turning it into an early exit). The
/// one comparison of secrets in txbank.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"token-123", b"token-123"));
        assert!(!same_secret(b"token-124", b"token-123"));
        assert!(!same_secret(b"token-12", b"token-123"));
        assert!(!same_secret(b"", b"token-123"));
    }
}
