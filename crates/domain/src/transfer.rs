//! A transfer between two accounts and the states it moves through.

use std::fmt;
use std::str::FromStr;

use crate::{AccountNo, Amount, BankId, DomainError, TxNo};

/// One transfer: `amount` moves from account `from` in bank `from_bank` to account `to`
/// in bank `to_bank`, identified everywhere by `tx_no`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The transaction number shared by both banks and the messages.
    pub tx_no: TxNo,
    /// The bank that debits.
    pub from_bank: BankId,
    /// The account debited.
    pub from: AccountNo,
    /// The bank that credits.
    pub to_bank: BankId,
    /// The account credited.
    pub to: AccountNo,
    /// How much moves.
    pub amount: Amount,
}

/// One side of a transfer: an account in a bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The bank holding the account.
    pub bank: BankId,
    /// The account.
    pub account: AccountNo,
}

impl Transfer {
    /// A transfer from `from` to `to`, refused when both are the same account.
    pub fn new(tx_no: TxNo, from: Party, to: Party, amount: Amount) -> Result<Self, DomainError> {
        if from == to {
            return Err(DomainError::SameAccount {
                account_no: from.account.to_string(),
            });
        }
        Ok(Transfer {
            tx_no,
            from_bank: from.bank,
            from: from.account,
            to_bank: to.bank,
            to: to.account,
            amount,
        })
    }

    /// True when both accounts are in the same bank (a book transfer, settled in one
    /// database transaction with no message).
    pub fn is_within_one_bank(&self) -> bool {
        self.from_bank == self.to_bank
    }
}

/// Where a transfer stands, as the sending bank records it.
///
/// ```text
/// (none) ──local transaction commits──────────────────────▶ Debited ──destination credits──▶ Credited
///    │                                                          └──destination refuses──▶ Returned
///    └──local transaction fails / check-back finds nothing──▶ RolledBack
/// ```
/// Debited and RolledBack exclude each other: the row that records one makes the other
/// impossible, which is what lets check-back answer definitively. Credited and Returned
/// are reported back by the destination and are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferState {
    /// The source was debited and the message committed (or about to be, by check-back).
    Debited,
    /// The local transaction did not happen; the message was rolled back; nothing moved.
    RolledBack,
    /// The destination bank credited the destination account.
    Credited,
    /// The destination bank could not credit it; the money went back to the source.
    Returned,
}

impl TransferState {
    /// The state's stable name, as stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Debited => "debited",
            TransferState::RolledBack => "rolled_back",
            TransferState::Credited => "credited",
            TransferState::Returned => "returned",
        }
    }

    /// True once the source was debited (whatever happened after).
    pub fn was_debited(self) -> bool {
        self != TransferState::RolledBack
    }

    /// The state a transfer in `state` (`None`: not recorded yet) moves to on `event`, or
    /// `None` when the event cannot move it (it changes nothing: a late debit after a
    /// rollback, a report about a transfer already settled or never debited).
    pub fn after(state: Option<TransferState>, event: TransferEvent) -> Option<TransferState> {
        use TransferEvent::*;
        use TransferState::*;
        match (state, event) {
            (None, LocalCommit) => Some(Debited),
            (None, RollBack) => Some(RolledBack),
            (Some(Debited), ReportedCredited) => Some(Credited),
            (Some(Debited), ReportedReturned) => Some(Returned),
            _ => None,
        }
    }
}

/// What the sending bank learns about a transfer: the events that move it from one
/// [`TransferState`] to the next ([`TransferState::after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferEvent {
    /// Its local transaction committed: the source was debited.
    LocalCommit,
    /// Its local transaction did not happen (refused, failed, or the check-back found
    /// nothing): its number is recorded as rolled back.
    RollBack,
    /// The destination reported it credited.
    ReportedCredited,
    /// The destination reported it refused: the money comes back.
    ReportedReturned,
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
            "credited" => Ok(TransferState::Credited),
            "returned" => Ok(TransferState::Returned),
            other => Err(format!("unknown transfer state {other:?}")),
        }
    }
}

/// What the destination bank did with a transfer, reported back to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The destination account was credited.
    Credited,
    /// The destination could not credit it (unknown or closed account, ...); the sender
    /// credits the money back to the source.
    Returned {
        /// Why the destination refused it.
        reason: String,
    },
}

impl Settlement {
    /// The state the sender's transfer ends in.
    pub fn final_state(&self) -> TransferState {
        match self {
            Settlement::Credited => TransferState::Credited,
            Settlement::Returned { .. } => TransferState::Returned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TransferState::*;
    use super::*;

    fn party(bank: &str, account: &str) -> Party {
        Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        }
    }

    #[test]
    fn each_event_moves_a_transfer_only_where_the_diagram_allows() {
        use TransferEvent::*;
        let table = [
            (None, LocalCommit, Some(Debited)),
            (None, RollBack, Some(RolledBack)),
            (None, ReportedCredited, None),
            (None, ReportedReturned, None),
            (Some(Debited), LocalCommit, None),
            (Some(Debited), RollBack, None),
            (Some(Debited), ReportedCredited, Some(Credited)),
            (Some(Debited), ReportedReturned, Some(Returned)),
            (Some(RolledBack), LocalCommit, None),
            (Some(RolledBack), RollBack, None),
            (Some(RolledBack), ReportedCredited, None),
            (Some(RolledBack), ReportedReturned, None),
        ];
        for (from, event, to) in table {
            assert_eq!(TransferState::after(from, event), to, "{from:?} on {event:?}");
        }
        for settled in [Credited, Returned] {
            for event in [LocalCommit, RollBack, ReportedCredited, ReportedReturned] {
                assert_eq!(TransferState::after(Some(settled), event), None, "{settled:?} is final");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in [Debited, RolledBack, Credited, Returned] {
            assert_eq!(state.as_str().parse::<TransferState>().unwrap(), state);
        }
    }

    #[test]
    fn a_transfer_to_the_same_account_is_refused() {
        let amount = Amount::parse("1").unwrap();
        assert!(Transfer::new(TxNo::generate(), party("bank1", "1"), party("bank1", "1"), amount).is_err());
    }

    #[test]
    fn the_same_number_in_another_bank_is_another_account() {
        let amount = Amount::parse("1").unwrap();
        let transfer = Transfer::new(TxNo::generate(), party("bank1", "1"), party("bank2", "1"), amount).unwrap();
        assert!(!transfer.is_within_one_bank());
    }
}
