//! Account numbers and holders' names.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// An account's number (the seed's `account_no`): 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountNo(String);

impl AccountNo {
    /// Parses an account number, refusing empty, long or unusual text.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if is_identifier(input, 64) {
            Ok(AccountNo(input.to_string()))
        } else {
            Err(DomainError::InvalidAccountNo {
                input: input.to_string(),
            })
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bank's identifier (`bank1`), by which transfers are routed: 1 to 32 of
/// `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BankId(String);

impl BankId {
    /// Parses a bank identifier, refusing empty, long or unusual text.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        if is_identifier(input, 32) {
            Ok(BankId(input.to_string()))
        } else {
            Err(DomainError::InvalidBankId {
                input: input.to_string(),
            })
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account holder's name (the seed's `account_name`), such as `张三的账户`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// Parses a name of 1 to 100 characters without control characters.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let length = input.chars().count();
        if (1..=100).contains(&length) && !input.chars().any(char::is_control) && !input.trim().is_empty() {
            Ok(AccountName(input.to_string()))
        } else {
            Err(DomainError::InvalidAccountName)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `input` is 1..=`max` ASCII letters, digits, `-` or `_`.
pub(crate) fn is_identifier(input: &str, max: usize) -> bool {
    !input.is_empty()
        && input.len() <= max
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_seed_accounts_and_refuses_odd_text() {
        assert_eq!(AccountNo::parse("1").unwrap().as_str(), "1");
        for bad in [
            "",
            " 1",
            "1'; DROP TABLE account_info; --",
            "１",
            "a/b",
            &"9".repeat(65),
        ] {
            assert!(AccountNo::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_may_be_chinese_but_not_blank_or_control() {
        assert!(AccountName::parse("张三的账户").is_ok());
        for bad in ["", "   ", "a\u{0}b", &"x".repeat(101)] {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::text_form!(AccountNo, BankId, AccountName);
