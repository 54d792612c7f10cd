//! Message authentication between banks: every message carries an HMAC-SHA256 of its
//! body, keyed with a secret the banks share, in the message property
//! [`SIGNATURE_PROPERTY`]. A receiver applies only messages whose signature checks; the
//! seed's Java services send none, so accepting unsigned messages is a switch, off by
//! default.

use std::fmt;

use hmac::{Hmac, Mac};
use rocketmq_model::common::message::message_single::Message;
use sha2::Sha256;

use crate::MessagingError;

/// The message property that holds a body's signature (hex).
pub const SIGNATURE_PROPERTY: &str = "TXBANK_SIGNATURE";

/// The fewest bytes a key may have.
pub const MIN_KEY_BYTES: usize = 32;

/// The secret shared by the banks. Never printed: its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct MessageKey(Vec<u8>);

/// Why a key was refused.
#[derive(Debug, thiserror::Error)]
#[error("a message key must have at least {MIN_KEY_BYTES} bytes, this one has {0}")]
pub struct KeyTooShort(usize);

/// What checking a message's signature found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Signed with the shared key.
    Authentic,
    /// No signature (the seed's Java services send none).
    Unsigned,
    /// A signature that does not match the body: forged, corrupted or another key.
    Forged,
}

impl MessageKey {
    /// A key from its secret bytes (surrounding white space, as in a key file, is
    /// ignored).
    pub fn new(secret: &[u8]) -> Result<MessageKey, KeyTooShort> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort(secret.len()));
        }
        Ok(MessageKey(secret.to_vec()))
    }

    /// The signature of `body`, as hex.
    pub fn sign(&self, body: &[u8]) -> String {
        hex::encode(self.mac(body).finalize().into_bytes())
    }

    /// Checks `signature` (the property's value, if any) against `body`, in constant
    /// time.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> Verdict {
        let Some(signature) = signature else {
            return Verdict::Unsigned;
        };
        match hex::decode(signature) {
            Ok(bytes) if self.mac(body).verify_slice(&bytes).is_ok() => Verdict::Authentic,
            _ => Verdict::Forged,
        }
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(body);
        mac
    }
}

/// A message to `topic`, keyed by `key` (the `tx_no` of its transfer, or of its reports,
/// space-separated), carrying `body`, and signed when `signer` is given.
pub(crate) fn message(
    topic: &str,
    key: &str,
    body: Vec<u8>,
    signer: Option<&MessageKey>,
) -> Result<Message, MessagingError> {
    let mut builder = Message::builder().topic(topic).key(key);
    if let Some(signer) = signer {
        builder = builder
            .raw_property(SIGNATURE_PROPERTY, signer.sign(&body))
            .map_err(|e| MessagingError::client("sign message", e))?;
    }
    builder
        .body(body)
        .build()
        .map_err(|e| MessagingError::client("build message", e))
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MessageKey {
        MessageKey::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_is_forged() {
        let body = br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"}}"#;
        let signature = key(7).sign(body);
        assert_eq!(key(7).verify(body, Some(&signature)), Verdict::Authentic);
        let tampered = br#"{"accountChange":{"accountNo":"1","amount":9,"txNo":"t"}}"#;
        assert_eq!(key(7).verify(tampered, Some(&signature)), Verdict::Forged);
        assert_eq!(key(8).verify(body, Some(&signature)), Verdict::Forged, "another key");
        assert_eq!(key(7).verify(body, Some("not hex")), Verdict::Forged);
        assert_eq!(key(7).verify(body, Some("")), Verdict::Forged);
        assert_eq!(key(7).verify(body, None), Verdict::Unsigned);
    }

    #[test]
    fn short_keys_are_refused_and_keys_are_never_printed() {
        assert!(MessageKey::new(b"short").is_err());
        assert!(MessageKey::new(b"   \n").is_err());
        let secret = "s".repeat(40);
        let debug = format!("{:?}", MessageKey::new(secret.as_bytes()).unwrap());
        assert!(!debug.contains('s'.to_string().repeat(5).as_str()), "{debug}");
    }
}
