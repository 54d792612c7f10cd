//! The message bodies. A transfer stays wire-compatible with the seed's Java services:
//!
//! ```json
//! {"accountChange":{"accountNo":"1","amount":100.00,"txNo":"…"},
//!  "fromBank":"bank1","toBank":"bank2","toAccountNo":"2","version":1}
//! ```
//! `accountChange` is the seed's event; the other fields are ours and sit beside it. A
//! seed message has none of them: it comes from the configured seed sender and credits
//! the receiving bank's default account, as the seed's bank2 does. The amount is read
//! from its exact JSON text, never through a float.
//!
//! Under load bank1 carries several transfers to the same bank in one message (version
//! 3), each element a transfer's `accountChange` and destination account; a lone transfer
//! still goes in the seed's shape:
//!
//! ```json
//! {"transfers":[{"accountChange":{"accountNo":"1","amount":0.01,"txNo":"…"},"toAccountNo":"2"},
//!               {"accountChange":{"accountNo":"3","amount":5,"txNo":"…"},"toAccountNo":"2"}],
//!  "fromBank":"bank1","toBank":"bank2","version":3}
//! ```
//!
//! Settlement reports go back from the destination to the sender on the sender's inbound
//! topic, as many as the relay has for that bank in one message (version 2):
//!
//! ```json
//! {"settlements":[{"txNo":"…","outcome":"credited"},
//!                 {"txNo":"…","outcome":"returned","reason":"account 9 does not exist"}],
//!  "fromBank":"bank2","version":2}
//! ```
//! Earlier builds sent one report per message (version 1), which is still read:
//! `{"settlement":{"txNo":"…","outcome":"credited"},"fromBank":"bank2","version":1}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use txbank_domain::{AccountNo, Amount, BankId, Party, Settlement, Transfer, TxNo};

/// The highest body format version this build reads.
pub const VERSION: u32 = TRANSFERS_VERSION;
/// The version of a transfer's body (the seed's shape and our fields beside it).
const TRANSFER_VERSION: u32 = 1;
/// The version of a body holding a list of settlement reports; builds that read only
/// version 1 refuse it as too new instead of misreading it.
const SETTLEMENTS_VERSION: u32 = 2;
/// The version of a body holding several transfers; builds that read only versions 1
/// and 2 refuse it as too new.
const TRANSFERS_VERSION: u32 = 3;

/// Why a message body was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape.
    #[error("message body is not a transfer or settlement: {0}")]
    Malformed(String),
    /// A field holds a value the domain refuses.
    #[error("message field {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Written by a newer version than this build understands.
    #[error("message version {0} is newer than the supported {VERSION}")]
    UnknownVersion(u32),
}

/// What a message without our fields (one of the seed's Java bank1) means.
#[derive(Debug, Clone)]
pub struct SeedDefaults {
    /// The bank that sent it.
    pub sender: BankId,
    /// The bank it is for.
    pub receiver: BankId,
    /// The account it credits.
    pub account: AccountNo,
}

/// A message a bank receives on its inbound topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Money for this bank's accounts: one transfer, or several from one bank (at least
    /// one).
    Transfers(Vec<Transfer>),
    /// What a destination did with transfers this bank sent.
    Settlements {
        /// The bank that reports.
        from_bank: BankId,
        /// Each transfer and what became of it, at least one.
        reports: Vec<(TxNo, Settlement)>,
    },
}

impl Inbound {
    /// The bank the message says it comes from, when all of it comes from one bank.
    pub fn sender(&self) -> Option<&BankId> {
        match self {
            Inbound::Transfers(transfers) => {
                let first = &transfers.first()?.from_bank;
                transfers
                    .iter()
                    .all(|transfer| transfer.from_bank == *first)
                    .then_some(first)
            }
            Inbound::Settlements { from_bank, .. } => Some(from_bank),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    account_change: Option<AccountChange<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    transfers: Option<Vec<TransferItem<'a>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settlement: Option<SettlementBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settlements: Option<Vec<SettlementBody>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_bank: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_bank: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_account_no: Option<String>,
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountChange<'a> {
    account_no: String,
    #[serde(borrow)]
    amount: &'a RawValue,
    tx_no: String,
}

/// One transfer of a version 3 body.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferItem<'a> {
    #[serde(borrow)]
    account_change: AccountChange<'a>,
    to_account_no: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettlementBody {
    tx_no: String,
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Encodes a transfer as a message body, in the seed's shape.
pub fn encode(transfer: &Transfer) -> Vec<u8> {
    let amount = raw_amount(transfer);
    let body = Body {
        account_change: Some(account_change(transfer, &amount)),
        to_bank: Some(transfer.to_bank.to_string()),
        to_account_no: Some(transfer.to.to_string()),
        ..Body::empty(&transfer.from_bank, TRANSFER_VERSION)
    };
    serde_json::to_vec(&body).expect("a transfer always serialises")
}

/// Encodes transfers from one bank to one bank as one message body: a lone transfer in
/// the seed's shape, several as version 3.
///
/// # Panics
/// If `transfers` is empty or its transfers do not all go from and to the same banks.
pub fn encode_transfers(transfers: &[Transfer]) -> Vec<u8> {
    let [first, rest @ ..] = transfers else {
        panic!("a message carries at least one transfer");
    };
    if rest.is_empty() {
        return encode(first);
    }
    assert!(
        rest.iter()
            .all(|t| t.from_bank == first.from_bank && t.to_bank == first.to_bank),
        "the transfers of one message go from and to the same banks"
    );
    let amounts: Vec<Box<RawValue>> = transfers.iter().map(raw_amount).collect();
    let items = transfers
        .iter()
        .zip(&amounts)
        .map(|(transfer, amount)| TransferItem {
            account_change: account_change(transfer, amount),
            to_account_no: transfer.to.to_string(),
        })
        .collect();
    let body = Body {
        transfers: Some(items),
        to_bank: Some(first.to_bank.to_string()),
        ..Body::empty(&first.from_bank, TRANSFERS_VERSION)
    };
    serde_json::to_vec(&body).expect("transfers always serialise")
}

fn raw_amount(transfer: &Transfer) -> Box<RawValue> {
    RawValue::from_string(transfer.amount.to_string()).expect("a decimal is valid JSON")
}

fn account_change<'a>(transfer: &Transfer, amount: &'a RawValue) -> AccountChange<'a> {
    AccountChange {
        account_no: transfer.from.to_string(),
        amount,
        tx_no: transfer.tx_no.to_string(),
    }
}

impl Body<'_> {
    /// A body of `version` from `from_bank`, with nothing else in it yet.
    fn empty(from_bank: &BankId, version: u32) -> Self {
        Body {
            account_change: None,
            transfers: None,
            settlement: None,
            settlements: None,
            from_bank: Some(from_bank.to_string()),
            to_bank: None,
            to_account_no: None,
            version: Some(version),
        }
    }
}

/// Encodes settlement reports from `from_bank`, each a transfer and what became of it,
/// as one body.
pub fn encode_settlements<'a>(
    from_bank: &BankId,
    reports: impl IntoIterator<Item = (&'a TxNo, &'a Settlement)>,
) -> Vec<u8> {
    let reports = reports
        .into_iter()
        .map(|(tx_no, settlement)| {
            let (outcome, reason) = match settlement {
                Settlement::Credited => ("credited", None),
                Settlement::Returned { reason } => ("returned", Some(reason.clone())),
            };
            SettlementBody {
                tx_no: tx_no.to_string(),
                outcome: outcome.into(),
                reason,
            }
        })
        .collect();
    let body = Body {
        settlements: Some(reports),
        ..Body::empty(from_bank, SETTLEMENTS_VERSION)
    };
    serde_json::to_vec(&body).expect("settlement reports always serialise")
}

/// Decodes a message body; the fields a seed message lacks are taken from `seed`.
pub fn decode(bytes: &[u8], seed: &SeedDefaults) -> Result<Inbound, WireError> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if let Some(version) = body.version.filter(|v| *v > VERSION) {
        return Err(WireError::UnknownVersion(version));
    }
    let from_bank = match &body.from_bank {
        Some(bank) => BankId::parse(bank).map_err(invalid("fromBank"))?,
        None => seed.sender.clone(),
    };
    let to_bank = || match &body.to_bank {
        Some(bank) => BankId::parse(bank).map_err(invalid("toBank")),
        None => Ok(seed.receiver.clone()),
    };
    match (body.account_change, body.transfers, body.settlement, body.settlements) {
        (Some(change), None, None, None) => {
            let to_account = match &body.to_account_no {
                Some(to) => AccountNo::parse(to).map_err(invalid("toAccountNo"))?,
                None => seed.account.clone(),
            };
            let to = Party {
                bank: to_bank()?,
                account: to_account,
            };
            Ok(Inbound::Transfers(vec![decode_transfer(change, &from_bank, to)?]))
        }
        (None, Some(items), None, None) if !items.is_empty() && body.to_account_no.is_none() => {
            let to_bank = to_bank()?;
            let transfers = items
                .into_iter()
                .map(|item| {
                    let to = Party {
                        bank: to_bank.clone(),
                        account: AccountNo::parse(&item.to_account_no).map_err(invalid("toAccountNo"))?,
                    };
                    decode_transfer(item.account_change, &from_bank, to)
                })
                .collect::<Result<_, _>>()?;
            Ok(Inbound::Transfers(transfers))
        }
        (None, None, Some(report), None) => Ok(Inbound::Settlements {
            from_bank,
            reports: vec![decode_report(report)?],
        }),
        (None, None, None, Some(reports)) if !reports.is_empty() => Ok(Inbound::Settlements {
            from_bank,
            reports: reports.into_iter().map(decode_report).collect::<Result<_, _>>()?,
        }),
        _ => Err(WireError::Malformed(
            "expected exactly one of accountChange, a non-empty transfers, settlement and a non-empty settlements"
                .into(),
        )),
    }
}

/// True when `bytes` is exactly what the seed's Java bank1 sends: a bare `accountChange`,
/// with none of our fields, which means a transfer from the seed's sender to the seed's
/// account. The only body a bank in seed-compatibility mode takes unsigned.
pub fn is_seed_body(bytes: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<Body>(bytes),
        Ok(Body {
            account_change: Some(_),
            transfers: None,
            settlement: None,
            settlements: None,
            from_bank: None,
            to_bank: None,
            to_account_no: None,
            version: None,
        })
    )
}

/// One transfer from `from_bank`'s account in `change` to `to`.
fn decode_transfer(change: AccountChange, from_bank: &BankId, to: Party) -> Result<Transfer, WireError> {
    let amount_text = change.amount.get();
    if amount_text.starts_with('"') {
        return Err(WireError::Invalid {
            field: "amount",
            reason: "must be a JSON number".into(),
        });
    }
    let from = Party {
        bank: from_bank.clone(),
        account: AccountNo::parse(&change.account_no).map_err(invalid("accountNo"))?,
    };
    Transfer::new(
        TxNo::parse(&change.tx_no).map_err(invalid("txNo"))?,
        from,
        to,
        Amount::parse(amount_text).map_err(invalid("amount"))?,
    )
    .map_err(invalid("toAccountNo"))
}

fn decode_report(report: SettlementBody) -> Result<(TxNo, Settlement), WireError> {
    let settlement = match (report.outcome.as_str(), report.reason) {
        ("credited", _) => Settlement::Credited,
        ("returned", reason) => Settlement::Returned {
            reason: reason.unwrap_or_default(),
        },
        (other, _) => {
            return Err(WireError::Invalid {
                field: "outcome",
                reason: format!("{other:?} is neither credited nor returned"),
            })
        }
    };
    Ok((TxNo::parse(&report.tx_no).map_err(invalid("txNo"))?, settlement))
}

fn invalid(field: &'static str) -> impl Fn(txbank_domain::DomainError) -> WireError {
    move |e| WireError::Invalid {
        field,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> SeedDefaults {
        SeedDefaults {
            sender: BankId::parse("bank1").unwrap(),
            receiver: BankId::parse("bank2").unwrap(),
            account: AccountNo::parse("2").unwrap(),
        }
    }

    fn transfer_in(inbound: Inbound) -> Transfer {
        match inbound {
            Inbound::Transfers(mut transfers) if transfers.len() == 1 => transfers.remove(0),
            other => panic!("not one transfer: {other:?}"),
        }
    }

    fn party(bank: &str, account: &str) -> Party {
        Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        }
    }

    #[test]
    fn reads_the_seed_java_body_and_credits_the_default_account() {
        let body = br#"{"accountChange":{"accountNo":"1","amount":100.0,"txNo":"a1b2"}}"#;
        let transfer = transfer_in(decode(body, &seed()).unwrap());
        assert_eq!((transfer.from_bank.as_str(), transfer.from.as_str()), ("bank1", "1"));
        assert_eq!((transfer.to_bank.as_str(), transfer.to.as_str()), ("bank2", "2"));
        assert_eq!(transfer.amount.cents(), 10_000);
        assert_eq!(transfer.tx_no.as_str(), "a1b2");
    }

    #[test]
    fn only_a_bare_account_change_is_a_seed_body() {
        assert!(is_seed_body(
            br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"}}"#
        ));
        for ours in [
            r#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"fromBank":"bank3"}"#,
            r#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"toAccountNo":"4"}"#,
            r#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"version":1}"#,
            r#"{"settlements":[{"txNo":"t","outcome":"returned"}],"fromBank":"bank2"}"#,
            r#"{"settlement":{"txNo":"t","outcome":"credited"}}"#,
            r#"{"transfers":[{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"toAccountNo":"2"}]}"#,
            "not json",
        ] {
            assert!(!is_seed_body(ours.as_bytes()), "{ours}");
        }
    }

    #[test]
    fn round_trips_our_own_body_keeping_the_seed_shape() {
        let transfer = Transfer::new(
            TxNo::generate(),
            party("bank2", "1"),
            party("bank3", "7"),
            Amount::parse("0.10").unwrap(),
        )
        .unwrap();
        let bytes = encode(&transfer);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["accountChange"]["accountNo"], "1");
        assert!(json["accountChange"]["amount"].is_number());
        assert_eq!(
            decode(&bytes, &seed()).unwrap(),
            Inbound::Transfers(vec![transfer.clone()])
        );
        assert_eq!(
            encode_transfers(&[transfer]),
            bytes,
            "a lone transfer keeps the seed's shape"
        );
    }

    #[test]
    fn round_trips_several_transfers_in_one_body() {
        let transfers: Vec<Transfer> = [("1", "2", "0.01"), ("3", "9", "12345.67")]
            .into_iter()
            .map(|(from, to, amount)| {
                Transfer::new(
                    TxNo::generate(),
                    party("bank1", from),
                    party("bank2", to),
                    Amount::parse(amount).unwrap(),
                )
                .unwrap()
            })
            .collect();
        let bytes = encode_transfers(&transfers);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["version"], 3);
        assert!(json["transfers"][1]["accountChange"]["amount"].is_number());
        assert_eq!(decode(&bytes, &seed()).unwrap(), Inbound::Transfers(transfers));
    }

    #[test]
    fn round_trips_settlement_reports_in_one_body() {
        let bank2 = BankId::parse("bank2").unwrap();
        let reports = vec![
            (TxNo::generate(), Settlement::Credited),
            (
                TxNo::generate(),
                Settlement::Returned {
                    reason: "account 9 does not exist".into(),
                },
            ),
        ];
        let bytes = encode_settlements(&bank2, reports.iter().map(|(tx_no, settlement)| (tx_no, settlement)));
        let expected = Inbound::Settlements {
            from_bank: bank2,
            reports,
        };
        assert_eq!(decode(&bytes, &seed()).unwrap(), expected);
    }

    #[test]
    fn reads_the_one_report_bodies_of_earlier_builds() {
        let body =
            br#"{"settlement":{"txNo":"t1","outcome":"returned","reason":"closed"},"fromBank":"bank2","version":1}"#;
        let expected = Inbound::Settlements {
            from_bank: BankId::parse("bank2").unwrap(),
            reports: vec![(
                TxNo::parse("t1").unwrap(),
                Settlement::Returned {
                    reason: "closed".into(),
                },
            )],
        };
        assert_eq!(decode(body, &seed()).unwrap(), expected);
    }

    #[test]
    fn refuses_bodies_that_must_never_move_money() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            br#"{"accountChange":{"accountNo":"1","amount":100.0}"#,
            br#"{"accountChange":{"accountNo":"1","amount":-5,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":0,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1.001,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":"100","txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1e400,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"","amount":1,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":""}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"version":99}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"fromBank":"b a"}"#,
            br#"{"settlement":{"txNo":"t","outcome":"lost"}}"#,
            br#"{"settlements":[],"fromBank":"bank2","version":2}"#,
            br#"{"settlements":[{"txNo":"t","outcome":"credited"},{"txNo":"u","outcome":"lost"}],"version":2}"#,
            br#"{"settlements":[{"txNo":"t","outcome":"credited"}],"settlement":{"txNo":"u","outcome":"credited"}}"#,
            br#"{"settlements":[{"txNo":"t","outcome":"credited"}],"version":4}"#,
            br#"{"transfers":[],"fromBank":"bank1","toBank":"bank2","version":3}"#,
            br#"{"transfers":[{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"}}],"version":3}"#,
            br#"{"transfers":[{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"toAccountNo":"2"},{"accountChange":{"accountNo":"1","amount":-1,"txNo":"u"},"toAccountNo":"2"}],"version":3}"#,
            br#"{"transfers":[{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"toAccountNo":"2"}],"toAccountNo":"2","version":3}"#,
            br#"{"transfers":[{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"toAccountNo":"2"}],"accountChange":{"accountNo":"1","amount":1,"txNo":"u"}}"#,
            br#"{"settlement":{"txNo":"t","outcome":"credited"},"accountChange":{"accountNo":"1","amount":1,"txNo":"t"}}"#,
            br#"{}"#,
        ];
        for body in cases {
            assert!(decode(body, &seed()).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
