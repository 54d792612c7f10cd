//! The live dashboard: a page served by the binary itself that shows every bank's
//! accounts, transfers in flight and the latest transfers, the conservation check,
//! throughput and debit-to-credit latency, redeliveries and dead letters, and sends a
//! transfer from a form.
//!
//! It works against any deployment: it reads the banks' HTTP APIs (never their files)
//! with the operators' API token, once a second, and pushes each reading to the open
//! pages as server-sent events. The page asks for the same token once and keeps a
//! session cookie (HttpOnly, SameSite=Strict) that lasts [`SESSION_LIFETIME`] or until
//! the page logs out; the token never reaches the browser's scripts.

pub mod prometheus;
mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch as channel;
use txbank_domain::secret::same_secret;

use watch::Watcher;

/// The page, with its script and style.
const PAGE: &str = include_str!("page.html");
/// The login form.
const LOGIN: &str = include_str!("login.html");
/// The session cookie's name.
const COOKIE: &str = "txbank_dashboard";
/// How long a session lasts after its login; the page then asks for the token again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);
/// How long a wrong token costs its sender.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(500);

/// One bank the dashboard reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankEndpoint {
    /// Its name, as the page shows it and as transfers name it (`bank1`).
    pub name: String,
    /// Its API, without a trailing slash (`http://127.0.0.1:56081`).
    pub url: String,
}

impl BankEndpoint {
    /// Reads `NAME=URL`.
    pub fn parse(text: &str) -> Result<BankEndpoint, String> {
        let (name, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NAME=URL"))?;
        if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{text:?} is not NAME=URL with an http:// or https:// URL"));
        }
        Ok(BankEndpoint {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
        })
    }
}

/// What the dashboard needs to run.
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    /// The banks, in the order the page shows them.
    pub banks: Vec<BankEndpoint>,
    /// The operators' API token: the banks ask for it, and so does the page.
    pub api_token: String,
    /// How often the banks are read.
    pub poll_every: Duration,
}

#[derive(Clone)]
struct Shared {
    settings: Arc<DashboardSettings>,
    snapshots: channel::Receiver<Arc<String>>,
    sessions: Arc<Mutex<Sessions>>,
    http: reqwest::Client,
}

/// Serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    settings: DashboardSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (publish, snapshots) = channel::channel(Arc::new(String::from("{}")));
    let mut watcher = Watcher::new(settings.banks.clone(), settings.api_token.clone());
    let poll_every = settings.poll_every;
    let poller = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(poll_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let snapshot = watcher.tick().await;
            let text = serde_json::to_string(&snapshot).expect("a snapshot always serialises");
            if publish.send(Arc::new(text)).is_err() {
                break;
            }
        }
    });
    let shared = Shared {
        settings: Arc::new(settings),
        snapshots,
        sessions: Arc::default(),
        http: reqwest::Client::new(),
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .route("/api/transfers", post(transfer))
        .route("/api/transfers/batch", post(batch))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .with_state(shared);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    poller.abort();
    served
}

/// The page for a logged-in browser, the login form otherwise.
async fn index(State(shared): State<Shared>, headers: HeaderMap) -> Html<&'static str> {
    Html(if shared.has_session(&headers) { PAGE } else { LOGIN })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token and opens a session.
async fn login(State(shared): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    if !same_secret(form.token.trim().as_bytes(), shared.settings.api_token.as_bytes()) {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        tracing::warn!("dashboard login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN.replace("<!--error-->", "Wrong token.")),
        )
            .into_response();
    }
    let mut id = [0u8; 32];
    getrandom::getrandom(&mut id).expect("the system's random source");
    let id = hex::encode(id);
    shared
        .sessions
        .lock()
        .expect("sessions lock")
        .open(id.clone(), Instant::now());
    let max_age = SESSION_LIFETIME.as_secs();
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Ends the session.
async fn logout(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        shared.sessions.lock().expect("sessions lock").close(id);
    }
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// The snapshots, as server-sent events: the latest at once, then each new one.
async fn events(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if !shared.has_session(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut snapshots = shared.snapshots.clone();
    snapshots.mark_changed();
    let stream = futures_util::stream::unfold(snapshots, |mut snapshots| async move {
        snapshots.changed().await.ok()?;
        let text = Arc::clone(&snapshots.borrow_and_update());
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(text.as_str())),
            snapshots,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// The form's transfer.
#[derive(Deserialize)]
struct TransferForm {
    bank: String,
    from: String,
    to_bank: String,
    to: String,
    amount: String,
}

/// Sends the form's transfer through the sending bank's API, with a fresh idempotency
/// key, and answers with the bank's own status and body.
async fn transfer(State(shared): State<Shared>, headers: HeaderMap, Json(form): Json<TransferForm>) -> Response {
    let body = json!({ "from": form.from, "to_bank": form.to_bank, "to": form.to, "amount": form.amount });
    let key = uuid::Uuid::new_v4().to_string();
    shared
        .forward(&headers, &form.bank, "/transfers", Some(&key), body)
        .await
}

/// The bulk payments form: transfers as read from a payments file.
#[derive(Deserialize)]
struct BatchForm {
    bank: String,
    transfers: Vec<serde_json::Map<String, Value>>,
    #[serde(default)]
    all_or_nothing: bool,
}

/// Sends the bulk payments form through the sending bank's `POST /transfers/batch`,
/// each transfer with a fresh idempotency key unless its line named one, and answers
/// with the bank's own status and body.
async fn batch(State(shared): State<Shared>, headers: HeaderMap, Json(form): Json<BatchForm>) -> Response {
    let transfers: Vec<Value> = form
        .transfers
        .into_iter()
        .map(|mut transfer| {
            transfer
                .entry("idempotency_key")
                .or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
            Value::Object(transfer)
        })
        .collect();
    let body = json!({ "transfers": transfers, "all_or_nothing": form.all_or_nothing });
    shared
        .forward(&headers, &form.bank, "/transfers/batch", None, body)
        .await
}

impl Shared {
    fn has_session(&self, headers: &HeaderMap) -> bool {
        session_id(headers).is_some_and(|id| {
            let sessions = self.sessions.lock().expect("sessions lock");
            sessions.is_open(id, Instant::now())
        })
    }

    /// Posts `body` to `path` of the bank named `bank` for a logged-in caller, and
    /// answers with the bank's own status and body.
    async fn forward(&self, headers: &HeaderMap, bank: &str, path: &str, key: Option<&str>, body: Value) -> Response {
        if !self.has_session(headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let Some(bank) = self.settings.banks.iter().find(|b| b.name == bank) else {
            let error = json!({ "error": { "code": "unknown_bank", "message": format!("no bank named {bank:?}") } });
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        };
        let mut request = self
            .http
            .post(format!("{}{path}", bank.url))
            .bearer_auth(&self.settings.api_token)
            .json(&body)
            .timeout(Duration::from_secs(30));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        relay_answer(request.send().await, &bank.name).await
    }
}

/// The open sessions: each id and when its login opened it.
#[derive(Default)]
struct Sessions(HashMap<String, Instant>);

impl Sessions {
    /// Opens session `id` at `now`, forgetting those that have expired.
    fn open(&mut self, id: String, now: Instant) {
        self.0
            .retain(|_, opened| now.duration_since(*opened) < SESSION_LIFETIME);
        self.0.insert(id, now);
    }

    /// True when `id` was opened less than [`SESSION_LIFETIME`] before `now` and not
    /// closed. An id is 256 random bits: looking it up leaks nothing worth a guess.
    fn is_open(&self, id: &str, now: Instant) -> bool {
        self.0
            .get(id)
            .is_some_and(|opened| now.duration_since(*opened) < SESSION_LIFETIME)
    }

    /// Ends session `id` (logging out).
    fn close(&mut self, id: &str) {
        self.0.remove(id);
    }
}

/// The bank's answer as the dashboard's, or `502 bank_unreachable`.
async fn relay_answer(sent: reqwest::Result<reqwest::Response>, bank: &str) -> Response {
    match sent {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, Json(body)).into_response()
        }
        Err(error) => {
            let error = json!({ "error": { "code": "bank_unreachable", "message": format!("{bank} did not answer: {error}") } });
            (StatusCode::BAD_GATEWAY, Json(error)).into_response()
        }
    }
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bank_is_named_with_its_url() {
        assert_eq!(
            BankEndpoint::parse("bank1=http://127.0.0.1:56081/"),
            Ok(BankEndpoint {
                name: "bank1".into(),
                url: "http://127.0.0.1:56081".into()
            })
        );
        assert!(BankEndpoint::parse("bank1").is_err());
        assert!(BankEndpoint::parse("=http://x").is_err());
        assert!(BankEndpoint::parse("bank1=ftp://x").is_err());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; txbank_dashboard=abc; b=2".parse().unwrap());
        assert_eq!(session_id(&headers), Some("abc"));
        headers.insert(header::COOKIE, "txbank_dashboardx=abc".parse().unwrap());
        assert_eq!(session_id(&headers), None);
    }

    #[test]
    fn a_session_lasts_its_lifetime_or_until_it_logs_out() {
        let (mut sessions, opened) = (Sessions::default(), Instant::now());
        sessions.open("abc".into(), opened);
        assert!(sessions.is_open("abc", opened));
        assert!(!sessions.is_open("abd", opened));
        let almost = opened + SESSION_LIFETIME - Duration::from_secs(1);
        assert!(sessions.is_open("abc", almost));
        assert!(!sessions.is_open("abc", opened + SESSION_LIFETIME), "expired");
        sessions.open("xyz".into(), opened + SESSION_LIFETIME);
        assert_eq!(sessions.0.len(), 1, "expired sessions are forgotten");
        sessions.close("xyz");
        assert!(!sessions.is_open("xyz", opened + SESSION_LIFETIME), "logged out");
    }
}
