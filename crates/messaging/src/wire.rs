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
pub const VERSION: u32 = SETTLEMENTS_VERSION;
/// The version of a transfer's body (the seed's shape and our fields beside it).
const TRANSFER_VERSION: u32 = 1;
/// The version of a body holding a list of settlement reports; builds that read only
/// version 1 refuse it as too new instead of misreading it.
const SETTLEMENTS_VERSION: u32 = 2;

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
    /// Money for one of this bank's accounts.
    Transfer(Transfer),
    /// What a destination did with transfers this bank sent.
    Settlements {
        /// The bank that reports.
        from_bank: BankId,
        /// Each transfer and what became of it, at least one.
        reports: Vec<(TxNo, Settlement)>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    account_change: Option<AccountChange<'a>>,
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

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettlementBody {
    tx_no: String,
    outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Encodes a transfer as a message body.
pub fn encode(transfer: &Transfer) -> Vec<u8> {
    let amount = RawValue::from_string(transfer.amount.to_string()).expect("a decimal is valid JSON");
    let body = Body {
        account_change: Some(AccountChange {
            account_no: transfer.from.to_string(),
            amount: &amount,
            tx_no: transfer.tx_no.to_string(),
        }),
        settlement: None,
        settlements: None,
        from_bank: Some(transfer.from_bank.to_string()),
        to_bank: Some(transfer.to_bank.to_string()),
        to_account_no: Some(transfer.to.to_string()),
        version: Some(TRANSFER_VERSION),
    };
    serde_json::to_vec(&body).expect("a transfer always serialises")
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
        account_change: None,
        settlement: None,
        settlements: Some(reports),
        from_bank: Some(from_bank.to_string()),
        to_bank: None,
        to_account_no: None,
        version: Some(SETTLEMENTS_VERSION),
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
    match (body.account_change, body.settlement, body.settlements) {
        (Some(change), None, None) => {
            let amount_text = change.amount.get();
            if amount_text.starts_with('"') {
                return Err(WireError::Invalid {
                    field: "amount",
                    reason: "must be a JSON number".into(),
                });
            }
            let to = Party {
                bank: match body.to_bank {
                    Some(bank) => BankId::parse(&bank).map_err(invalid("toBank"))?,
                    None => seed.receiver.clone(),
                },
                account: match body.to_account_no {
                    Some(to) => AccountNo::parse(&to).map_err(invalid("toAccountNo"))?,
                    None => seed.account.clone(),
                },
            };
            let from = Party {
                bank: from_bank,
                account: AccountNo::parse(&change.account_no).map_err(invalid("accountNo"))?,
            };
            let transfer = Transfer::new(
                TxNo::parse(&change.tx_no).map_err(invalid("txNo"))?,
                from,
                to,
                Amount::parse(amount_text).map_err(invalid("amount"))?,
            )
            .map_err(invalid("toAccountNo"))?;
            Ok(Inbound::Transfer(transfer))
        }
        (None, Some(report), None) => Ok(Inbound::Settlements {
            from_bank,
            reports: vec![decode_report(report)?],
        }),
        (None, None, Some(reports)) if !reports.is_empty() => Ok(Inbound::Settlements {
            from_bank,
            reports: reports.into_iter().map(decode_report).collect::<Result<_, _>>()?,
        }),
        _ => Err(WireError::Malformed(
            "expected exactly one of accountChange, settlement and a non-empty settlements".into(),
        )),
    }
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
            Inbound::Transfer(transfer) => transfer,
            other => panic!("not a transfer: {other:?}"),
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
        assert_eq!(decode(&bytes, &seed()).unwrap(), Inbound::Transfer(transfer));
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
            br#"{"settlements":[{"txNo":"t","outcome":"credited"}],"version":3}"#,
            br#"{"settlement":{"txNo":"t","outcome":"credited"},"accountChange":{"accountNo":"1","amount":1,"txNo":"t"}}"#,
            br#"{}"#,
        ];
        for body in cases {
            assert!(decode(body, &seed()).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
