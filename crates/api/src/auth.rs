//! Who is calling. Operators present the API token (`Authorization: Bearer TOKEN`) and
//! may do everything; an account holder presents the account number and password
//! (`Authorization: Basic`, as `curl -u 1:PASSWORD` sends them) and may use that
//! account only. Passwords are stored only as salted Argon2 hashes. Wrong credentials
//! get one answer whatever was wrong. A right credential is always answered: repeated
//! failures slow down what they named (an account's password checks, and the wrong
//! answers to an address) with growing delays, and never lock anyone out.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine;
use txbank_domain::AccountNo;

use crate::{ApiError, AppState};

/// Failed attempts per address, and per account, within [`FAILURE_WINDOW`] that are
/// answered without delay.
const FREE_FAILURES: u32 = 5;
/// The delay after the first failure past [`FREE_FAILURES`]; it doubles with each one.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest delay.
const LONGEST_DELAY: Duration = Duration::from_secs(8);
/// How long failed attempts are remembered after the last one.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The fewest characters an API token or a password may have.
const MIN_SECRET_CHARS: usize = 8;
/// The most characters a password may have (Argon2 hashes any length; this bounds work).
const MAX_PASSWORD_CHARS: usize = 128;

/// The operators' API token. Never printed: its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ApiToken(String);

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[error("an API token must have at least {MIN_SECRET_CHARS} characters")]
pub struct TokenTooShort;

impl ApiToken {
    /// A token from its text (at least 8 characters; 32 random bytes are better).
    pub fn new(token: &str) -> Result<ApiToken, TokenTooShort> {
        if token.chars().count() < MIN_SECRET_CHARS {
            return Err(TokenTooShort);
        }
        Ok(ApiToken(token.to_string()))
    }

    /// Compares in time that does not depend on where the first difference is.
    fn matches(&self, presented: &str) -> bool {
        txbank_domain::secret::same_secret(presented.as_bytes(), self.0.as_bytes())
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken([redacted])")
    }
}

/// A caller whose credentials checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Holds the API token: may use every account and the administrative routes.
    Operator,
    /// Logged in with an account's password: may use that account only.
    Holder(AccountNo),
}

impl Caller {
    /// Refuses a holder who asks about another account.
    pub(crate) fn may_use(&self, account: &AccountNo) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Holder(own) if own == account => Ok(()),
            Caller::Holder(_) => Err(ApiError::Forbidden),
        }
    }

    /// Refuses anyone but an operator.
    pub(crate) fn must_be_operator(&self) -> Result<(), ApiError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Holder(_) => Err(ApiError::Forbidden),
        }
    }
}

/// The bank's authentication: its API token, the proxy it trusts to name clients, and
/// its memory of failed attempts.
pub struct Auth {
    token: Option<ApiToken>,
    trusted_proxy: Option<IpAddr>,
    failures: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    last: Instant,
}

impl Auth {
    /// Authentication with the operators' `token`, if any; requests that come through
    /// `trusted_proxy` are known by the address its `X-Forwarded-For` names.
    pub fn new(token: Option<ApiToken>, trusted_proxy: Option<IpAddr>) -> Auth {
        Auth {
            token,
            trusted_proxy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The client's address: the peer's, or the last one the trusted proxy appended to
    /// `X-Forwarded-For` when the peer is that proxy.
    fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if Some(peer) != self.trusted_proxy {
            return peer;
        }
        // The proxy appends the address it saw last; earlier ones are the client's word.
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .and_then(|address| address.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// How long an attempt naming `key` waits now: nothing for the first
    /// [`FREE_FAILURES`] failures within the window, then [`FIRST_DELAY`], doubling
    /// with each failure, up to [`LONGEST_DELAY`].
    fn delay(&self, key: &str) -> Duration {
        let failures = self.failures.lock().expect("failures lock");
        match failures.get(key) {
            Some(f) if f.count > FREE_FAILURES && f.last.elapsed() < FAILURE_WINDOW => {
                let doublings = (f.count - FREE_FAILURES - 1).min(16);
                FIRST_DELAY.saturating_mul(1 << doublings).min(LONGEST_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn record_failure(&self, keys: &[String]) {
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() > 10_000 {
            failures.retain(|_, f| f.last.elapsed() < FAILURE_WINDOW);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: Instant::now(),
            });
            if entry.last.elapsed() >= FAILURE_WINDOW {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = Instant::now();
        }
    }

    /// Records a failed attempt against each of `keys` and answers it after the longest
    /// of their delays.
    async fn refuse(&self, keys: &[String]) -> ApiError {
        self.record_failure(keys);
        let delay = keys.iter().map(|key| self.delay(key)).max().unwrap_or_default();
        tokio::time::sleep(delay).await;
        ApiError::Unauthorized
    }

    fn forget(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }
}

/// Hashes a new password with Argon2id and a random salt, off the async workers.
pub(crate) async fn hash_password(password: String) -> Result<String, ApiError> {
    let chars = password.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::invalid(
            "invalid_password",
            format!("a password must have {MIN_SECRET_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(|e| ApiError::internal(format!("password hashing task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against a stored hash (empty: the account has no password, and
/// nothing matches), off the async workers. An unknown account is checked against a
/// dummy hash so that its answer takes as long.
async fn verify_password(stored: Option<String>, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let stored = stored.filter(|hash| !hash.is_empty());
        let hash = stored.as_deref().unwrap_or_else(|| dummy_hash());
        let matches = PasswordHash::new(hash)
            .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false);
        matches && stored.is_some()
    })
    .await
    .unwrap_or(false)
}

/// The Argon2id hash of a random password nobody has, checked for unknown accounts.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(salt.as_str().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let auth = &state.auth;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let address_key = format!("address:{}", auth.client_address(peer, &parts.headers));
        let Some(header) = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return Err(ApiError::Unauthorized);
        };
        if let Some(presented) = header.strip_prefix("Bearer ") {
            if auth.token.as_ref().is_some_and(|token| token.matches(presented.trim())) {
                return Ok(Caller::Operator);
            }
            return Err(auth.refuse(&[address_key]).await);
        }
        let Some((account, password)) = header.strip_prefix("Basic ").and_then(decode_basic) else {
            return Err(auth.refuse(&[address_key]).await);
        };
        // Guessing one account's password gets slower with each wrong guess, from any
        // address; its holder's right password still logs in, after the same wait.
        let account_key = format!("account:{account}");
        tokio::time::sleep(auth.delay(&account_key)).await;
        let account_no = AccountNo::parse(&account).ok();
        let stored = match &account_no {
            Some(no) => state.store.password_hash(no).await?,
            None => None,
        };
        match account_no {
            Some(no) if verify_password(stored, password).await => {
                auth.forget(&account_key);
                Ok(Caller::Holder(no))
            }
            _ => Err(auth.refuse(&[address_key, account_key]).await),
        }
    }
}

/// `base64(account:password)` as its two parts.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (account, password) = text.split_once(':')?;
    Some((account.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_are_never_printed() {
        let token = ApiToken::new("correct horse battery").unwrap();
        assert!(token.matches("correct horse battery"));
        assert!(!token.matches("correct horse batterx"));
        assert!(!token.matches("correct horse"));
        assert!(!format!("{token:?}").contains("horse"));
        assert!(ApiToken::new("short").is_err());
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_nothing_else_does() {
        let hash = hash_password("s3cret-pass".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(Some(hash.clone()), "s3cret-pass".into()).await);
        assert!(!verify_password(Some(hash), "s3cret-pasS".into()).await);
        assert!(
            !verify_password(Some(String::new()), "".into()).await,
            "no password set"
        );
        assert!(!verify_password(None, "anything".into()).await, "unknown account");
        assert!(hash_password("short".into()).await.is_err());
    }

    #[test]
    fn failures_past_the_free_ones_wait_longer_each_time_up_to_the_longest_delay() {
        let auth = Auth::new(None, None);
        let key = "address:127.0.0.1".to_string();
        let mut delays = Vec::new();
        for _ in 0..12 {
            auth.record_failure(std::slice::from_ref(&key));
            delays.push(auth.delay(&key).as_millis());
        }
        assert_eq!(delays, [0, 0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(
            auth.delay("address:10.0.0.9"),
            Duration::ZERO,
            "other keys keep their pace"
        );
        auth.forget(&key);
        assert_eq!(auth.delay(&key), Duration::ZERO);
    }

    #[test]
    fn only_the_trusted_proxy_names_the_client_by_its_forwarded_for_header() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
        let auth = Auth::new(None, Some(proxy));
        assert_eq!(
            auth.client_address(proxy, &headers),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            auth.client_address(stranger, &headers),
            stranger,
            "anyone can write the header"
        );
        assert_eq!(auth.client_address(proxy, &HeaderMap::new()), proxy);
        let untrusting = Auth::new(None, None);
        assert_eq!(untrusting.client_address(proxy, &headers), proxy);
    }

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(decode_basic("MTpwYXNzOndvcmQ="), Some(("1".into(), "pass:word".into())));
        assert_eq!(decode_basic("not base64!"), None);
    }
}
