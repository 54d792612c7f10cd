//! A transfer between two accounts and the states it moves through.

use std::fmt;
use std::str::FromStr;

use crate::{AccountNo, Amount, DomainError, TxNo};

/// One transfer: `amount` moves from `from` (in the sending bank) to `to` (in the
/// receiving bank), identified everywhere by `tx_no`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The transaction number shared by both banks and the message.
    pub tx_no: TxNo,
    /// The account debited.
    pub from: AccountNo,
    /// The account credited.
    pub to: AccountNo,
    /// How much moves.
    pub amount: Amount,
}

impl Transfer {
    /// A transfer, refused when source and destination are the same account.
    pub fn new(tx_no: TxNo, from: AccountNo, to: AccountNo, amount: Amount) -> Result<Self, DomainError> {
        if from == to {
            return Err(DomainError::SameAccount {
                account_no: from.to_string(),
            });
        }
        Ok(Transfer {
            tx_no,
            from,
            to,
            amount,
        })
    }
}

/// Where a transfer stands, as the sending bank records it.
///
/// ```text
/// (none) ──local transaction commits──────────────────────▶ Debited
///    └──local transaction fails / check-back finds nothing──▶ RolledBack
/// ```
/// Both are final: the row that records one makes the other impossible, which is what
/// lets check-back answer definitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferState {
    /// The source was debited and the message committed (or about to be, by check-back).
    Debited,
    /// The local transaction did not happen; the message was rolled back; nothing moved.
    RolledBack,
}

impl TransferState {
    /// The state's stable name, as stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Debited => "debited",
            TransferState::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for TransferState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransferState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "debited" => Ok(TransferState::Debited),
            "rolled_back" => Ok(TransferState::RolledBack),
            other => Err(format!("unknown transfer state {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TransferState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in [Debited, RolledBack] {
            assert_eq!(state.as_str().parse::<TransferState>().unwrap(), state);
        }
    }

    #[test]
    fn a_transfer_to_the_same_account_is_refused() {
        let one = AccountNo::parse("1").unwrap();
        let amount = Amount::parse("1").unwrap();
        assert!(Transfer::new(TxNo::generate(), one.clone(), one, amount).is_err());
    }
}
