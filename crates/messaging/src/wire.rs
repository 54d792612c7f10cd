//! The message body, wire-compatible with the seed's Java services:
//!
//! ```json
//! {"accountChange":{"accountNo":"1","amount":100.00,"txNo":"…"},"toAccountNo":"2","version":1}
//! ```
//! `accountChange` is the seed's event; `toAccountNo` and `version` are ours and sit
//! beside it. A seed message has neither: it credits the receiving bank's default
//! account, as the seed's bank2 does. The amount is read from its exact JSON text,
//! never through a float.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use txbank_domain::{AccountNo, Amount, Transfer, TxNo};

/// The body format version this build writes and the highest it reads.
pub const VERSION: u32 = 1;

/// Why a message body was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not JSON of the expected shape.
    #[error("message body is not a transfer: {0}")]
    Malformed(String),
    /// A field holds a value the domain refuses.
    #[error("message field {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Written by a newer version than this build understands.
    #[error("message version {0} is newer than the supported {VERSION}")]
    UnknownVersion(u32),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(borrow)]
    account_change: AccountChange<'a>,
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

/// Encodes a transfer as a message body.
pub fn encode(transfer: &Transfer) -> Vec<u8> {
    let amount = RawValue::from_string(transfer.amount.to_string()).expect("a decimal is valid JSON");
    let body = Body {
        account_change: AccountChange {
            account_no: transfer.from.to_string(),
            amount: &amount,
            tx_no: transfer.tx_no.to_string(),
        },
        to_account_no: Some(transfer.to.to_string()),
        version: Some(VERSION),
    };
    serde_json::to_vec(&body).expect("a transfer always serialises")
}

/// Decodes a message body; a body without a destination (the seed's) credits
/// `default_to`.
pub fn decode(bytes: &[u8], default_to: &AccountNo) -> Result<Transfer, WireError> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if let Some(version) = body.version.filter(|v| *v > VERSION) {
        return Err(WireError::UnknownVersion(version));
    }
    let change = body.account_change;
    let invalid = |field| {
        move |e: txbank_domain::DomainError| WireError::Invalid {
            field,
            reason: e.to_string(),
        }
    };
    let amount_text = change.amount.get();
    if amount_text.starts_with('"') {
        return Err(WireError::Invalid {
            field: "amount",
            reason: "must be a JSON number".into(),
        });
    }
    let from = AccountNo::parse(&change.account_no).map_err(invalid("accountNo"))?;
    let to = match body.to_account_no {
        Some(to) => AccountNo::parse(&to).map_err(invalid("toAccountNo"))?,
        None => default_to.clone(),
    };
    Transfer::new(
        TxNo::parse(&change.tx_no).map_err(invalid("txNo"))?,
        from,
        to,
        Amount::parse(amount_text).map_err(invalid("amount"))?,
    )
    .map_err(invalid("toAccountNo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_to() -> AccountNo {
        AccountNo::parse("2").unwrap()
    }

    #[test]
    fn reads_the_seed_java_body_and_credits_the_default_account() {
        let body = br#"{"accountChange":{"accountNo":"1","amount":100.0,"txNo":"a1b2"}}"#;
        let transfer = decode(body, &default_to()).unwrap();
        assert_eq!(transfer.from.as_str(), "1");
        assert_eq!(transfer.to.as_str(), "2");
        assert_eq!(transfer.amount.cents(), 10_000);
        assert_eq!(transfer.tx_no.as_str(), "a1b2");
    }

    #[test]
    fn round_trips_our_own_body_keeping_the_seed_shape() {
        let transfer = Transfer::new(
            TxNo::generate(),
            AccountNo::parse("1").unwrap(),
            AccountNo::parse("7").unwrap(),
            Amount::parse("0.10").unwrap(),
        )
        .unwrap();
        let bytes = encode(&transfer);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["accountChange"]["accountNo"], "1");
        assert!(json["accountChange"]["amount"].is_number());
        assert_eq!(decode(&bytes, &default_to()).unwrap(), transfer);
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
            br#"{"accountChange":{"accountNo":"2","amount":1,"txNo":"t"}}"#,
            br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"version":99}"#,
        ];
        for body in cases {
            assert!(
                decode(body, &default_to()).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
