//! Message authentication between banks.
//!
//! Each bank signs what it sends with its own Ed25519 key ([`BankKey`]); the signature,
//! in [`BANK_SIGNATURE_PROPERTY`], covers the sending bank, the destination bank, the
//! topic and the body, and [`KEY_ID_PROPERTY`] names the key. A receiver checks it with
//! the public key its [`TrustedKeys`] hold under that id, and applies the message only
//! when the bank the message names as its sender owns that key. A key can be rotated:
//! the old public key stays trusted until its `until` time, so that both verify during
//! the overlap.
//!
//! Before key pairs, the banks shared one HMAC key ([`MessageKey`], in
//! [`SIGNATURE_PROPERTY`]), which lets any bank speak for any other. It remains for the
//! move from it: a bank configured with it signs with both and accepts either, so that
//! banks not yet moved keep exchanging messages; once every bank trusts the others'
//! public keys, the shared key is removed everywhere. The seed's Java services sign
//! nothing, so accepting unsigned messages is a switch, off by default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use rocketmq_model::common::message::message_single::Message;
use sha2::Sha256;
use txbank_domain::BankId;

use crate::MessagingError;

/// The message property that holds the shared key's HMAC of the body (hex).
pub const SIGNATURE_PROPERTY: &str = "TXBANK_SIGNATURE";
/// The message property that holds the sending bank's Ed25519 signature (hex).
pub const BANK_SIGNATURE_PROPERTY: &str = "TXBANK_BANK_SIGNATURE";
/// The message property that names the key of [`BANK_SIGNATURE_PROPERTY`].
pub const KEY_ID_PROPERTY: &str = "TXBANK_KEY_ID";

/// The fewest bytes a shared key may have.
pub const MIN_KEY_BYTES: usize = 32;

/// The first word of a bank's private key file.
const PRIVATE_KEY_TAG: &str = "txbank-ed25519-private-key";
/// How often a verifier looks at its trusted-keys file again when a key id is unknown.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Why a key or a trusted-keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A shared key shorter than [`MIN_KEY_BYTES`].
    #[error("a message key must have at least {MIN_KEY_BYTES} bytes, this one has {0}")]
    TooShort(usize),
    /// A private key file or a trusted key line that cannot be read.
    #[error("{0}")]
    Malformed(String),
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// The secret shared by the banks before key pairs (HMAC-SHA256). Never printed: its
/// `Debug` shows nothing of it.
#[derive(Clone)]
pub struct MessageKey(Vec<u8>);

impl MessageKey {
    /// A key from its secret bytes (surrounding white space, as in a key file, is
    /// ignored).
    pub fn new(secret: &[u8]) -> Result<MessageKey, KeyError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        Ok(MessageKey(secret.to_vec()))
    }

    /// The signature of `body`, as hex.
    pub fn sign(&self, body: &[u8]) -> String {
        hex::encode(self.mac(body).finalize().into_bytes())
    }

    /// True when `signature` (hex) is this key's signature of `body`, checked in
    /// constant time.
    fn verifies(&self, body: &[u8], signature: &str) -> bool {
        hex::decode(signature).is_ok_and(|bytes| self.mac(body).verify_slice(&bytes).is_ok())
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}

/// One bank's private signing key, with the id its messages name it by. Never printed:
/// its `Debug` shows the bank and the id only.
#[derive(Clone)]
pub struct BankKey {
    bank: BankId,
    id: String,
    key: SigningKey,
}

impl BankKey {
    /// A new random key for `bank`, named `id`.
    pub fn generate(bank: BankId, id: &str) -> Result<BankKey, KeyError> {
        check_key_id(id)?;
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| KeyError::Malformed(format!("no random source: {e}")))?;
        Ok(BankKey {
            bank,
            id: id.to_string(),
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads a private key file: `txbank-ed25519-private-key BANK KEY_ID SECRET_HEX`.
    pub fn parse(text: &str) -> Result<BankKey, KeyError> {
        let malformed = || {
            KeyError::Malformed(format!(
                "a private key file reads \"{PRIVATE_KEY_TAG} BANK KEY_ID SECRET_HEX\""
            ))
        };
        let [tag, bank, id, secret] = text.split_whitespace().collect::<Vec<_>>()[..] else {
            return Err(malformed());
        };
        if tag != PRIVATE_KEY_TAG {
            return Err(malformed());
        }
        let bank = BankId::parse(bank).map_err(|e| KeyError::Malformed(format!("bank: {e}")))?;
        check_key_id(id)?;
        let secret: [u8; 32] = hex::decode(secret)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(malformed)?;
        Ok(BankKey {
            bank,
            id: id.to_string(),
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Reads the private key file at `path`.
    pub fn read(path: &Path) -> Result<BankKey, KeyError> {
        BankKey::parse(&read_text(path)?)
    }

    /// The text of its private key file.
    pub fn to_file_text(&self) -> String {
        format!(
            "{PRIVATE_KEY_TAG} {} {} {}\n",
            self.bank,
            self.id,
            hex::encode(self.key.to_bytes())
        )
    }

    /// The bank it signs for.
    pub fn bank(&self) -> &BankId {
        &self.bank
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its public key, trusted without end.
    pub fn public(&self) -> TrustedKey {
        TrustedKey {
            bank: self.bank.clone(),
            id: self.id.clone(),
            key: self.key.verifying_key(),
            until: None,
        }
    }
}

impl fmt::Debug for BankKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BankKey({} {} [redacted])", self.bank, self.id)
    }
}

fn check_key_id(id: &str) -> Result<(), KeyError> {
    let fits = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fits {
        Ok(())
    } else {
        Err(KeyError::Malformed(format!(
            "key id {id:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|error| KeyError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

/// A bank's public key as others trust it: one line of a trusted-keys file,
/// `BANK KEY_ID PUBLIC_HEX [until=UNIX_SECONDS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The bank that holds the private key.
    pub bank: BankId,
    /// The id its messages carry.
    pub id: String,
    key: VerifyingKey,
    /// When it stops verifying (seconds since the Unix epoch): a rotated key's overlap.
    pub until: Option<u64>,
}

impl TrustedKey {
    /// Reads one line of a trusted-keys file.
    pub fn parse(line: &str) -> Result<TrustedKey, KeyError> {
        let malformed = || {
            KeyError::Malformed(format!(
                "a trusted key reads \"BANK KEY_ID PUBLIC_HEX [until=UNIX_SECONDS]\", not {line:?}"
            ))
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (bank, id, public, until) = match fields[..] {
            [bank, id, public] => (bank, id, public, None),
            [bank, id, public, until] => (bank, id, public, Some(until)),
            _ => return Err(malformed()),
        };
        let bank = BankId::parse(bank).map_err(|e| KeyError::Malformed(format!("bank: {e}")))?;
        check_key_id(id)?;
        let public: [u8; 32] = hex::decode(public)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(malformed)?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| malformed())?;
        let until = match until {
            Some(until) => Some(
                until
                    .strip_prefix("until=")
                    .and_then(|secs| secs.parse().ok())
                    .ok_or_else(malformed)?,
            ),
            None => None,
        };
        Ok(TrustedKey {
            bank,
            id: id.to_string(),
            key,
            until,
        })
    }

    /// The key as one line of a trusted-keys file.
    pub fn to_line(&self) -> String {
        let public = hex::encode(self.key.as_bytes());
        match self.until {
            Some(until) => format!("{} {} {public} until={until}", self.bank, self.id),
            None => format!("{} {} {public}", self.bank, self.id),
        }
    }

    fn verifies_at(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// The public keys a bank trusts: a trusted-keys file, one [`TrustedKey`] a line, `#`
/// starting a comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<TrustedKey>);

impl TrustedKeys {
    /// Reads a trusted-keys file's text.
    pub fn parse(text: &str) -> Result<TrustedKeys, KeyError> {
        let lines = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty());
        let keys = lines.map(TrustedKey::parse).collect::<Result<Vec<_>, _>>()?;
        for (n, key) in keys.iter().enumerate() {
            if keys[..n].iter().any(|earlier| earlier.id == key.id) {
                return Err(KeyError::Malformed(format!("key id {} is listed twice", key.id)));
            }
        }
        Ok(TrustedKeys(keys))
    }

    /// Reads the trusted-keys file at `path`.
    pub fn read(path: &Path) -> Result<TrustedKeys, KeyError> {
        TrustedKeys::parse(&read_text(path)?)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|key| key.to_line() + "\n").collect()
    }

    /// Every key.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.0
    }

    /// Adds `key`, replacing any with its id.
    pub fn insert(&mut self, key: TrustedKey) {
        self.0.retain(|known| known.id != key.id);
        self.0.push(key);
    }

    /// Makes every key of `bank` but `keep` stop verifying at `until` (or earlier, when
    /// it already stops then): the overlap of a rotation.
    pub fn retire(&mut self, bank: &BankId, keep: &str, until: u64) {
        for key in self.0.iter_mut().filter(|key| key.bank == *bank && key.id != keep) {
            key.until = Some(key.until.map_or(until, |earlier| earlier.min(until)));
        }
    }

    fn get(&self, id: &str) -> Option<&TrustedKey> {
        self.0.iter().find(|key| key.id == id)
    }
}

/// The bytes a bank signs: what the message is, from whom, for whom, through which
/// topic, so that it cannot be replayed to another bank or topic.
fn signed_bytes(from: &BankId, to: &BankId, topic: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64 + body.len());
    for part in [
        b"txbank-message-v1".as_slice(),
        from.as_str().as_bytes(),
        to.as_str().as_bytes(),
        topic.as_bytes(),
    ] {
        bytes.extend_from_slice(part);
        bytes.push(0);
    }
    bytes.extend_from_slice(body);
    bytes
}

/// How a bank signs what it sends: with its own key, with the shared key while banks
/// move from it, with both, or (only `txbank publish`, as the seed's Java bank1) with
/// neither.
#[derive(Debug, Clone, Default)]
pub struct MessageSigner {
    /// The bank's own key.
    pub own: Option<BankKey>,
    /// The key shared by the banks, while they move from it.
    pub shared: Option<MessageKey>,
}

impl MessageSigner {
    /// A message to `to_bank`'s `topic`, keyed by `key` (the `tx_no` of its transfer,
    /// or of its reports, space-separated), carrying `body`, with every signature this
    /// signer makes.
    pub fn message(&self, to_bank: &BankId, topic: &str, key: &str, body: Vec<u8>) -> Result<Message, MessagingError> {
        let property = |e| MessagingError::client("sign message", e);
        let mut builder = Message::builder().topic(topic).key(key);
        if let Some(own) = &self.own {
            let signature = own.key.sign(&signed_bytes(&own.bank, to_bank, topic, &body));
            builder = builder
                .raw_property(BANK_SIGNATURE_PROPERTY, hex::encode(signature.to_bytes()))
                .map_err(property)?
                .raw_property(KEY_ID_PROPERTY, own.id.clone())
                .map_err(property)?;
        }
        if let Some(shared) = &self.shared {
            builder = builder
                .raw_property(SIGNATURE_PROPERTY, shared.sign(&body))
                .map_err(property)?;
        }
        builder
            .body(body)
            .build()
            .map_err(|e| MessagingError::client("build message", e))
    }
}

/// What checking a message's signatures found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by this bank's key: the message must come from this bank.
    SignedBy(BankId),
    /// Signed with the shared key, which any bank holding it could have done.
    SharedKey,
    /// No signature (the seed's Java services send none).
    Unsigned,
    /// A signature that does not match: forged, corrupted, replayed to another bank or
    /// topic, or made with a key past its overlap.
    Forged,
    /// Signed with a key this bank does not trust (nor the shared key it holds).
    UnknownKey(String),
}

/// The signatures found on a message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signatures<'a> {
    /// [`BANK_SIGNATURE_PROPERTY`].
    pub bank: Option<&'a str>,
    /// [`KEY_ID_PROPERTY`].
    pub key_id: Option<&'a str>,
    /// [`SIGNATURE_PROPERTY`].
    pub shared: Option<&'a str>,
}

/// How a bank checks what reaches its inbound topic: the public keys it trusts (read
/// again from their file when a message names a key it does not know, at most once a
/// second, so that another bank's new key is taken without a restart) and the shared
/// key while banks move from it.
#[derive(Debug)]
pub struct MessageVerifier {
    bank: BankId,
    topic: String,
    trusted_file: Option<PathBuf>,
    trusted: RwLock<Loaded>,
    shared: Option<MessageKey>,
}

#[derive(Debug)]
struct Loaded {
    keys: TrustedKeys,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl MessageVerifier {
    /// Checks messages sent to `bank` through `topic` against the keys in
    /// `trusted_file` (none: no bank's key) and the `shared` key.
    pub fn new(
        bank: BankId,
        topic: &str,
        trusted_file: Option<PathBuf>,
        shared: Option<MessageKey>,
    ) -> Result<MessageVerifier, KeyError> {
        let (keys, modified) = match &trusted_file {
            Some(path) => (TrustedKeys::read(path)?, modified(path)),
            None => (TrustedKeys::default(), None),
        };
        Ok(MessageVerifier {
            bank,
            topic: topic.to_string(),
            trusted_file,
            trusted: RwLock::new(Loaded {
                keys,
                modified,
                checked: Instant::now(),
            }),
            shared,
        })
    }

    /// Checks `body`'s `signatures` now.
    pub fn verify(&self, body: &[u8], signatures: Signatures) -> Verdict {
        self.verify_at(body, signatures, unix_now())
    }

    fn verify_at(&self, body: &[u8], signatures: Signatures, now: u64) -> Verdict {
        if let (Some(signature), Some(id)) = (signatures.bank, signatures.key_id) {
            match self.trusted_key(id) {
                Some(key) => {
                    let signed = signed_bytes(&key.bank, &self.bank, &self.topic, body);
                    let valid = hex::decode(signature)
                        .ok()
                        .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
                        .is_some_and(|signature| key.key.verify(&signed, &signature).is_ok());
                    return if valid && key.verifies_at(now) {
                        Verdict::SignedBy(key.bank)
                    } else {
                        Verdict::Forged
                    };
                }
                None if self.shared.is_none() || signatures.shared.is_none() => {
                    return Verdict::UnknownKey(id.to_string())
                }
                None => {}
            }
        }
        match (&self.shared, signatures.shared, signatures.bank) {
            (Some(shared), Some(signature), _) if shared.verifies(body, signature) => Verdict::SharedKey,
            (_, Some(_), _) => Verdict::Forged,
            (_, None, Some(_)) => Verdict::Forged,
            (_, None, None) => Verdict::Unsigned,
        }
    }

    /// The trusted key named `id`, reading the file again first when it does not know
    /// it and the file changed.
    fn trusted_key(&self, id: &str) -> Option<TrustedKey> {
        if let Some(key) = self.trusted.read().expect("trusted keys lock").keys.get(id) {
            return Some(key.clone());
        }
        let path = self.trusted_file.as_deref()?;
        let mut loaded = self.trusted.write().expect("trusted keys lock");
        if loaded.checked.elapsed() >= RELOAD_AT_MOST_EVERY {
            loaded.checked = Instant::now();
            let now_modified = modified(path);
            if now_modified != loaded.modified {
                match TrustedKeys::read(path) {
                    Ok(keys) => {
                        tracing::info!(file = %path.display(), keys = keys.keys().len(), "trusted keys read again");
                        *loaded = Loaded {
                            keys,
                            modified: now_modified,
                            checked: Instant::now(),
                        };
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the trusted keys again; keeping the ones read before")
                    }
                }
            }
        }
        loaded.keys.get(id).cloned()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|meta| meta.modified()).ok()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"t"},"fromBank":"bank1"}"#;

    fn bank(name: &str) -> BankId {
        BankId::parse(name).unwrap()
    }

    fn shared(byte: u8) -> MessageKey {
        MessageKey::new(&[byte; 32]).unwrap()
    }

    /// A verifier for bank2's `topic_txmsg` trusting `keys` and holding `shared`.
    fn bank2_trusting(keys: &[TrustedKey], shared: Option<MessageKey>) -> MessageVerifier {
        let verifier = MessageVerifier::new(bank("bank2"), "topic_txmsg", None, shared).unwrap();
        for key in keys {
            verifier.trusted.write().unwrap().keys.insert(key.clone());
        }
        verifier
    }

    /// The signatures of a message `signer` makes for `to`'s `topic`.
    fn signed(signer: &MessageSigner, to: &str, topic: &str) -> (String, Option<String>, Option<String>) {
        let message = signer.message(&bank(to), topic, "t", BODY.to_vec()).unwrap();
        let property = |name: &str| message.property(name).map(|value| value.to_string());
        (
            property(BANK_SIGNATURE_PROPERTY).unwrap_or_default(),
            property(KEY_ID_PROPERTY),
            property(SIGNATURE_PROPERTY),
        )
    }

    fn check(
        verifier: &MessageVerifier,
        (bank_sig, key_id, shared): &(String, Option<String>, Option<String>),
    ) -> Verdict {
        let signatures = Signatures {
            bank: key_id.as_ref().map(|_| bank_sig.as_str()),
            key_id: key_id.as_deref(),
            shared: shared.as_deref(),
        };
        verifier.verify(BODY, signatures)
    }

    #[test]
    fn a_message_verifies_with_its_senders_public_key_only() {
        let bank1 = BankKey::generate(bank("bank1"), "bank1-a").unwrap();
        let bank3 = BankKey::generate(bank("bank3"), "bank3-a").unwrap();
        let signer = MessageSigner {
            own: Some(bank1.clone()),
            shared: None,
        };
        let verifier = bank2_trusting(&[bank1.public(), bank3.public()], None);
        let sent = signed(&signer, "bank2", "topic_txmsg");
        assert_eq!(check(&verifier, &sent), Verdict::SignedBy(bank("bank1")));

        let tampered = verifier.verify(
            &BODY[1..],
            Signatures {
                bank: Some(&sent.0),
                key_id: sent.1.as_deref(),
                shared: None,
            },
        );
        assert_eq!(tampered, Verdict::Forged);
        let untrusted = bank2_trusting(&[bank3.public()], None);
        assert_eq!(check(&untrusted, &sent), Verdict::UnknownKey("bank1-a".into()));
        // bank3 signing with its own key but naming bank1's key id.
        let impostor = MessageSigner {
            own: Some(BankKey {
                id: "bank1-a".into(),
                ..bank3
            }),
            shared: None,
        };
        assert_eq!(
            check(&verifier, &signed(&impostor, "bank2", "topic_txmsg")),
            Verdict::Forged
        );
    }

    #[test]
    fn a_message_signed_for_another_bank_or_topic_is_forged_here() {
        let bank1 = BankKey::generate(bank("bank1"), "bank1-a").unwrap();
        let signer = MessageSigner {
            own: Some(bank1.clone()),
            shared: None,
        };
        let verifier = bank2_trusting(&[bank1.public()], None);
        assert_eq!(
            check(&verifier, &signed(&signer, "bank3", "topic_txmsg")),
            Verdict::Forged
        );
        assert_eq!(
            check(&verifier, &signed(&signer, "bank2", "topic_other")),
            Verdict::Forged
        );
    }

    #[test]
    fn a_rotated_key_verifies_during_its_overlap_and_not_after() {
        let old = BankKey::generate(bank("bank1"), "bank1-old").unwrap();
        let new = BankKey::generate(bank("bank1"), "bank1-new").unwrap();
        let mut trusted = TrustedKeys::default();
        trusted.insert(old.public());
        trusted.insert(new.public());
        trusted.retire(&bank("bank1"), "bank1-new", 1_000);
        let verifier = bank2_trusting(trusted.keys(), None);
        let sent_with_old = signed(
            &MessageSigner {
                own: Some(old),
                shared: None,
            },
            "bank2",
            "topic_txmsg",
        );
        let verdict = |sent: &(String, Option<String>, Option<String>), now| {
            let signatures = Signatures {
                bank: Some(&sent.0),
                key_id: sent.1.as_deref(),
                shared: None,
            };
            verifier.verify_at(BODY, signatures, now)
        };
        assert_eq!(verdict(&sent_with_old, 999), Verdict::SignedBy(bank("bank1")));
        assert_eq!(verdict(&sent_with_old, 1_000), Verdict::Forged, "past the overlap");
        let sent_with_new = signed(
            &MessageSigner {
                own: Some(new),
                shared: None,
            },
            "bank2",
            "topic_txmsg",
        );
        assert_eq!(verdict(&sent_with_new, u64::MAX), Verdict::SignedBy(bank("bank1")));
    }

    #[test]
    fn while_banks_move_from_the_shared_key_either_signature_is_taken() {
        let bank1 = BankKey::generate(bank("bank1"), "bank1-a").unwrap();
        let both = MessageSigner {
            own: Some(bank1.clone()),
            shared: Some(shared(7)),
        };
        let old_bank = MessageSigner {
            own: None,
            shared: Some(shared(7)),
        };
        // A bank not yet moved: it trusts no key and checks the shared one.
        let not_moved = bank2_trusting(&[], Some(shared(7)));
        assert_eq!(
            check(&not_moved, &signed(&both, "bank2", "topic_txmsg")),
            Verdict::SharedKey
        );
        assert_eq!(
            check(&not_moved, &signed(&old_bank, "bank2", "topic_txmsg")),
            Verdict::SharedKey
        );
        // A bank moving: the sender's own key decides when it knows it.
        let moving = bank2_trusting(&[bank1.public()], Some(shared(7)));
        assert_eq!(
            check(&moving, &signed(&both, "bank2", "topic_txmsg")),
            Verdict::SignedBy(bank("bank1"))
        );
        assert_eq!(
            check(&moving, &signed(&old_bank, "bank2", "topic_txmsg")),
            Verdict::SharedKey
        );
        // Moved: the shared key is gone, and a message signed only with it is refused.
        let moved = bank2_trusting(&[bank1.public()], None);
        assert_eq!(
            check(&moved, &signed(&old_bank, "bank2", "topic_txmsg")),
            Verdict::Forged
        );
        assert_eq!(
            check(&moved, &signed(&both, "bank2", "topic_txmsg")),
            Verdict::SignedBy(bank("bank1"))
        );
        // Another shared key is forged; nothing at all is unsigned.
        let other = bank2_trusting(&[], Some(shared(8)));
        assert_eq!(
            check(&other, &signed(&old_bank, "bank2", "topic_txmsg")),
            Verdict::Forged
        );
        assert_eq!(other.verify(BODY, Signatures::default()), Verdict::Unsigned);
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused() {
        let key = BankKey::generate(bank("bank1"), "bank1-2026").unwrap();
        let read = BankKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(read.public(), key.public());
        assert!(!format!("{key:?}").contains(&hex::encode(key.key.to_bytes())));
        let mut trusted = TrustedKeys::default();
        trusted.insert(key.public());
        trusted.retire(&bank("bank1"), "another", 42);
        let text = format!("# bank1's keys\n{}", trusted.to_text());
        assert_eq!(TrustedKeys::parse(&text).unwrap(), trusted);
        assert!(text.contains("until=42"), "{text}");
        for bad in [
            "bank1 k1",
            "bank1 k1 00",
            "bank1 k1 zz",
            "bank 1 k1 abc",
            &format!("{} until=soon", key.public().to_line()),
            &format!("{}\n{}", key.public().to_line(), key.public().to_line()),
        ] {
            assert!(TrustedKeys::parse(bad).is_err(), "{bad}");
        }
        assert!(BankKey::parse("txbank-ed25519-private-key bank1 k1 00").is_err());
        assert!(BankKey::generate(bank("bank1"), "no spaces").is_err());
    }

    #[test]
    fn short_shared_keys_are_refused_and_keys_are_never_printed() {
        assert!(MessageKey::new(b"short").is_err());
        assert!(MessageKey::new(b"   \n").is_err());
        let secret = "s".repeat(40);
        let debug = format!("{:?}", MessageKey::new(secret.as_bytes()).unwrap());
        assert!(!debug.contains("sssss"), "{debug}");
    }
}
