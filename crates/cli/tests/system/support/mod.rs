//! Test support: starts the real parts (name server, broker, banks) as separate
//! processes of the `txbank` binary (of `txbank-lab`, whose fault points are armed, in
//! the lab's tests), on free loopback ports and in their own temporary folders, so tests
//! run in parallel and beside a running `txbank up`.

#![allow(dead_code)] // the lab's tests use a part of this module

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::{Duration, Instant};
use txbank::supervisor::{program_command, Part, Ready};

use clap::Parser;
use serde_json::{json, Value};
use txbank_test_support::{fresh_mysql_database, fresh_postgres_database};

pub mod browser;

/// The binary the parts run: the lab's tests have `txbank-lab`, the others `txbank`.
pub const PROGRAM: &str = match (
    option_env!("CARGO_BIN_EXE_txbank-lab"),
    option_env!("CARGO_BIN_EXE_txbank"),
) {
    (Some(lab), _) => lab,
    (None, Some(product)) => product,
    (None, None) => panic!("the system tests run in the txbank or the txbank-lab crate"),
};

/// Waits until every transfer `bank` sent is credited.
pub async fn all_credited(bank: &Bank) -> bool {
    eventually(|| async { bank.outgoing().await.iter().all(|(_, state)| state == "credited") }).await
}

/// How long a test waits for the system to settle.
pub const SETTLE: Duration = Duration::from_secs(90);

/// Which database the banks use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the test's folder.
    Sqlite,
    /// A fresh database on the MySQL/MariaDB server (`TXBANK_TEST_MYSQL_URL`).
    MySql,
    /// A fresh database on the PostgreSQL server (`TXBANK_TEST_POSTGRES_URL`).
    Postgres,
}

/// A running process of the `txbank` binary, started by txbank's own supervisor and
/// killed when dropped.
pub struct Process {
    part: Part,
}

impl Process {
    /// Starts `txbank ARGS` as the part `name`, its output going to `log`.
    fn spawn(name: &str, args: &[String], env: &[(&str, &str)], log: PathBuf) -> Process {
        let mut command = program_command(Path::new(PROGRAM), &log, &[]).expect("the part's command");
        command.args(args).env("RUST_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        Process {
            part: Part::spawn(name, command, log).expect("start txbank"),
        }
    }

    /// Waits until the process is `ready`, failing the test with its log when it ends
    /// first or is not ready within [`SETTLE`].
    async fn wait_ready(&mut self, ready: Ready) {
        if let Err(error) = self.part.wait_ready(ready, SETTLE, &mut []).await {
            panic!("{error:#}");
        }
    }

    /// The value of `name` in the process's environment as it runs now, which is what
    /// it started itself with when it replaced its own program (`exec`).
    pub fn environment_variable(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.part.id())).ok()?;
        let prefix = format!("{name}=");
        environ
            .split(|byte| *byte == 0)
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.part.kill();
    }

    /// SIGTERM (a clean stop), and wait for the process to exit.
    pub fn terminate(&mut self) {
        self.part.signal(libc::SIGTERM);
        let _ = self.part.wait();
    }

    /// SIGSTOP: the process stays, answering nothing, until `resume`.
    pub fn pause(&mut self) {
        self.part.signal(libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&mut self) {
        self.part.signal(libc::SIGCONT);
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.part.exited().unwrap().is_none()
    }

    /// Waits for the process to exit by itself (a crash point fired).
    pub async fn wait_exit(&mut self) {
        assert!(
            eventually(|| {
                let running = self.is_running();
                async move { !running }
            })
            .await,
            "process did not exit"
        );
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.part.log()).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A name server and a broker, each its own process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub namesrv_addr: String,
    namesrv: Process,
    broker_listen: SocketAddr,
    pub broker: Option<Process>,
}

impl Cluster {
    /// Starts a name server and a broker and waits until both listen.
    pub async fn start() -> Cluster {
        // TXBANK_TEST_KEEP=1 keeps the folder (logs, databases, broker store) for a look.
        let keep = std::env::var_os("TXBANK_TEST_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("txbank-test-")
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        if keep {
            eprintln!("test folder: {}", dir.path().display());
        }
        std::fs::write(
            dir.path().join("message-key"),
            "k".repeat(32) + "-shared-by-the-test-banks",
        )
        .unwrap();
        std::fs::write(dir.path().join("api-token"), "test-operator-token").unwrap();
        let namesrv_listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut namesrv = Process::spawn(
            "namesrv",
            &args(&[
                "namesrv",
                "--listen",
                &namesrv_listen.to_string(),
                "--home",
                &path(&dir.path().join("rocketmq")),
            ]),
            &[],
            dir.path().join("namesrv.log"),
        );
        namesrv.wait_ready(Ready::Accepts(namesrv_listen)).await;
        let broker_listen = format!("127.0.0.1:{}", free_broker_port()).parse().unwrap();
        let mut cluster = Cluster {
            dir,
            namesrv_addr: namesrv_listen.to_string(),
            namesrv,
            broker_listen,
            broker: None,
        };
        cluster.start_broker().await;
        cluster
    }

    /// (Re)starts the broker on the same port and store.
    pub async fn start_broker(&mut self) {
        let store = self.dir.path().join("rocketmq").join("store");
        let mut broker = Process::spawn(
            "broker",
            &args(&[
                "broker",
                "--listen",
                &self.broker_listen.to_string(),
                "--namesrv-addr",
                &self.namesrv_addr,
                "--store",
                &path(&store),
                "--transaction-timeout-ms",
                "1000",
                "--transaction-check-interval-ms",
                "1000",
                "--transaction-check-max",
                "600",
            ]),
            &[],
            self.dir.path().join("broker.log"),
        );
        broker.wait_ready(Ready::Accepts(self.broker_listen)).await;
        self.broker = Some(broker);
    }

    /// Kills the broker with SIGKILL.
    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill();
        }
    }

    /// Loses the broker's store for good, as a lost disk would: the broker is killed, its
    /// store folder deleted (every half message, message and consumer offset in it), and
    /// it starts again empty on the same address.
    pub async fn lose_broker_store(&mut self) {
        self.kill_broker();
        std::fs::remove_dir_all(self.dir.path().join("rocketmq").join("store")).unwrap();
        self.start_broker().await;
    }

    /// Stops the broker answering (SIGSTOP), as a stalled disk or machine would; its
    /// connections stay open and what is sent to it waits.
    pub fn pause_broker(&mut self) {
        self.broker.as_mut().expect("broker running").pause();
    }

    /// Lets a paused broker go on.
    pub fn resume_broker(&mut self) {
        self.broker.as_mut().expect("broker running").resume();
    }

    /// A cluster with bank1 and bank2 on `db`, not started yet.
    pub async fn with_banks(db: Db) -> (Cluster, Bank, Bank) {
        let cluster = Cluster::start().await;
        let (bank1, bank2) = (cluster.bank("bank1", db).await, cluster.bank("bank2", db).await);
        (cluster, bank1, bank2)
    }

    /// A bank process (`bank1` sends, `bank2` receives) on `db`, not started yet.
    pub async fn bank(&self, preset: &'static str, db: Db) -> Bank {
        self.bank_with(preset, None, db).await
    }

    /// A bank configured by the TOML `config` (its listen address, database and name
    /// server are given on the command line), not started yet.
    pub async fn bank_from_config(&self, name: &'static str, config: &str, db: Db) -> Bank {
        let file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        self.bank_with(name, Some(file), db).await
    }

    async fn bank_with(&self, preset: &'static str, config: Option<PathBuf>, db: Db) -> Bank {
        let database_url = match db {
            Db::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                path(&self.dir.path().join(format!("{preset}.db")))
            ),
            Db::MySql => fresh_mysql_database().await,
            Db::Postgres => fresh_postgres_database().await,
        };
        bank_key(self.dir.path(), preset);
        Bank {
            preset,
            signing: Signing::default(),
            config,
            database_url,
            listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            namesrv_addr: self.namesrv_addr.clone(),
            dir: self.dir.path().to_path_buf(),
            log: self.dir.path().join(format!("{preset}.log")),
            process: None,
            in_process: None,
        }
    }

    /// The file with the message key every bank of this cluster shares.
    pub fn message_key_file(&self) -> PathBuf {
        self.dir.path().join("message-key")
    }

    /// `txbank publish`: sends `body` `times` times as plain messages keyed `key` to the
    /// seed's topic, signed with the shared key in `key_file` or, without one, unsigned.
    pub fn publish(&self, body: &str, key: &str, key_file: Option<&Path>, times: u32) {
        let key_file = key_file.map(|file| ["--key-file".to_string(), path(file)]);
        self.txbank_publish(body, key, key_file.as_ref().map_or(&[][..], |args| &args[..]), times);
    }

    /// `txbank publish`: sends `body` `times` times as plain messages keyed `key` to
    /// bank2's topic (the seed's), signed with `bank`'s own key for `to_bank`.
    pub fn publish_as(&self, bank: &str, to_bank: &str, body: &str, key: &str, times: u32) {
        self.publish_with_key_file(&bank_key(self.dir.path(), bank), to_bank, body, key, times);
    }

    /// `txbank publish`: as [`Cluster::publish_as`], signed with the private key in
    /// `key_file`.
    pub fn publish_with_key_file(&self, key_file: &Path, to_bank: &str, body: &str, key: &str, times: u32) {
        let signing = [
            "--signing-key".to_string(),
            path(key_file),
            "--to-bank".into(),
            to_bank.into(),
        ];
        self.txbank_publish(body, key, &signing, times);
    }

    fn txbank_publish(&self, body: &str, key: &str, signing: &[String], times: u32) {
        let mut command = Command::new(PROGRAM);
        command
            .args([
                "publish",
                "--namesrv-addr",
                &self.namesrv_addr,
                "--body",
                body,
                "--key",
                key,
            ])
            .args(["--times", &times.to_string()])
            .args(signing);
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `bank`'s private key file in the test folder `dir`, made with its public key in the
/// folder's trusted keys on first use, as `txbank keys new` makes them.
pub fn bank_key(dir: &Path, bank: &str) -> PathBuf {
    let keys = dir.join("keys");
    let file = keys.join(format!("{bank}.key"));
    if !file.exists() {
        let out = Command::new(PROGRAM)
            .args(["keys", "new", "--bank", bank, "--dir"])
            .arg(&keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    file
}

/// The operators' API token of every test bank.
pub const API_TOKEN: &str = "test-operator-token";

/// What a test bank signs its messages with, and checks others' with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Signing {
    /// Its own key pair, checking the other banks' public keys (`keys/` of the test's
    /// folder).
    #[default]
    OwnKey,
    /// Its own key pair and the key the test banks share: a bank moving from it.
    OwnAndShared,
    /// Only the key the test banks share: a bank not moved yet, as txbank was before
    /// key pairs.
    SharedOnly,
}

/// One bank service.
pub struct Bank {
    pub preset: &'static str,
    /// What it signs with (at its next start).
    pub signing: Signing,
    config: Option<PathBuf>,
    pub database_url: String,
    pub listen: SocketAddr,
    namesrv_addr: String,
    dir: PathBuf,
    log: PathBuf,
    pub process: Option<Process>,
    /// The bank when it runs in the test's own process.
    in_process: Option<txbank::bank::RunningBank>,
}

impl Bank {
    /// The arguments of `txbank bank` for this bank, and the environment naming its
    /// secrets' files.
    fn arguments(&self) -> (Vec<String>, Vec<(&'static str, String)>) {
        let mut env = vec![("TXBANK_API_TOKEN_FILE", path(&self.dir.join("api-token")))];
        if self.signing != Signing::SharedOnly {
            env.push(("TXBANK_SIGNING_KEY_FILE", path(&bank_key(&self.dir, self.preset))));
            env.push(("TXBANK_TRUSTED_KEYS_FILE", path(&self.dir.join("keys").join("trusted"))));
        }
        if self.signing != Signing::OwnKey {
            env.push(("TXBANK_MESSAGE_KEY_FILE", path(&self.dir.join("message-key"))));
        }
        let config = self.config.as_deref().map(path);
        let (how, what) = match &config {
            Some(file) => ("--config", file.as_str()),
            None => ("--preset", self.preset),
        };
        let arguments = args(&[
            "bank",
            how,
            what,
            "--listen",
            &self.listen.to_string(),
            "--database-url",
            &self.database_url,
            "--namesrv-addr",
            &self.namesrv_addr,
        ]);
        (arguments, env)
    }

    /// Starts the bank in the test's own process (`txbank::bank::spawn`), listening on
    /// a port it picks, and waits until its API answers. Its logs go nowhere.
    pub async fn start_in_process(&mut self) {
        let (mut arguments, env) = self.arguments();
        for (variable, value) in env {
            // Each variable has its flag: TXBANK_API_TOKEN_FILE is --api-token-file.
            let flag = variable.trim_start_matches("TXBANK_").to_lowercase().replace('_', "-");
            arguments.extend([format!("--{flag}"), value]);
        }
        let cli = txbank::cli::Cli::try_parse_from(std::iter::once("txbank".to_string()).chain(arguments))
            .expect("the arguments of txbank bank");
        let txbank::cli::Command::Bank(source) = cli.command else {
            unreachable!("parsed as txbank bank")
        };
        let mut config = source.load().expect("the bank's configuration");
        config.listen = "127.0.0.1:0".parse().unwrap();
        let running = tokio::task::spawn_blocking(move || txbank::bank::spawn(config))
            .await
            .unwrap()
            .expect("the bank starts in this process");
        self.listen = running.address();
        self.in_process = Some(running);
        self.wait_answering().await;
    }

    /// Starts the bank with extra environment (such as an armed fault point) and waits
    /// until its API answers.
    pub async fn start_with(&mut self, extra_env: &[(&str, &str)]) {
        let (arguments, env) = self.arguments();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
        env.extend_from_slice(extra_env);
        let mut process = Process::spawn(self.preset, &arguments, &env, self.log.clone());
        process.wait_ready(Ready::ReachesItsBroker(self.listen)).await;
        self.process = Some(process);
    }

    /// Waits until the bank running in this process answers.
    async fn wait_answering(&self) {
        let url = format!("{}/readyz", self.url());
        let ready = eventually(|| {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(ready, "{} did not become ready; log:\n{}", self.preset, self.log_text());
    }

    /// Starts the bank and waits until its API answers.
    pub async fn start(&mut self) {
        self.start_with(&[]).await;
    }

    /// Stops the bank cleanly (SIGTERM: it finishes what it has begun) and waits for it
    /// to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate();
        }
        if let Some(bank) = self.in_process.take() {
            bank.stop().expect("the bank stops cleanly");
        }
    }

    /// Kills the bank with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops the bank (SIGSTOP): it answers nothing and consumes nothing until `resume`.
    pub fn pause(&mut self) {
        self.process.as_mut().expect("bank running").pause();
    }

    /// Lets a paused bank go on (SIGCONT).
    pub fn resume(&mut self) {
        self.process.as_mut().expect("bank running").resume();
    }

    /// The bank's API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The bank's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` as an operator, returning status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(
            reqwest::Client::new()
                .get(format!("{}{path}", self.url()))
                .bearer_auth(API_TOKEN),
        )
        .await
    }

    /// `POST path` with a JSON body as an operator, returning status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = reqwest::Client::new().post(format!("{}{path}", self.url())).json(&body);
        send(request.bearer_auth(API_TOKEN)).await
    }

    /// `POST /transfers` with a JSON body.
    pub async fn post_transfer(&self, body: Value) -> (u16, Value) {
        self.post("/transfers", body).await
    }

    /// `POST /transfers` with each of `bodies`, all at once; the answers in order, each
    /// `(0, null)` when the bank did not answer.
    pub async fn post_transfers_at_once(&self, bodies: Vec<Value>) -> Vec<(u16, Value)> {
        self.post_at_once("/transfers", bodies).await
    }

    /// `POST path` with each of `bodies`, all at once, as an operator; the answers in
    /// order, each `(0, null)` when the bank did not answer.
    pub async fn post_at_once(&self, path: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
        let client = reqwest::Client::new();
        let sends: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let request = client.post(format!("{}{path}", self.url())).json(&body);
                tokio::spawn(async move {
                    match request.bearer_auth(API_TOKEN).send().await {
                        Ok(response) => (response.status().as_u16(), response.json().await.unwrap_or(Value::Null)),
                        Err(_) => (0, Value::Null),
                    }
                })
            })
            .collect();
        let mut answers = Vec::new();
        for sent in sends {
            answers.push(sent.await.expect("the request's task"));
        }
        answers
    }

    /// The value of the Prometheus series that `series` names exactly (name and
    /// labels), as `GET /metrics` shows it.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let metrics = reqwest::Client::new()
            .get(format!("{}/metrics", self.url()))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("bank answers")
            .text()
            .await
            .expect("metrics are text");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the transfer `tx_no` this bank sent is in `state`; its last view
    /// either way.
    pub async fn transfer_becomes(&self, tx_no: &str, state: &str) -> Value {
        let path = format!("/transfers/{tx_no}");
        eventually(|| {
            let path = path.clone();
            async move { self.get(&path).await.1["state"] == state }
        })
        .await;
        self.get(&path).await.1
    }

    /// Transfers `amount` from 1 to 2 where an armed crash point kills the bank
    /// mid-request; returns once the process is gone.
    /// A 503 `broker_unavailable` (nothing moved: the producer had no route yet, just
    /// after its start) is asked again.
    pub async fn pay_and_die(&mut self, amount: &str) {
        for _ in 0..20 {
            let sent = reqwest::Client::new()
                .post(format!("{}/transfers", self.url()))
                .bearer_auth(API_TOKEN)
                .json(&json!({"from": "1", "to": "2", "amount": amount}))
                .send()
                .await;
            let Ok(answer) = sent else {
                self.process.as_mut().expect("started").wait_exit().await;
                return;
            };
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or_default();
            assert!(
                status == 503 && body["error"]["code"] == "broker_unavailable",
                "{} should have died mid-request, answered {status} {body}",
                self.preset
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{}: the broker stayed unavailable", self.preset);
    }

    /// Transfers `amount` from account 1 to account 2 and expects it debited.
    pub async fn pay(&self, amount: &str) -> String {
        let (status, body) = self
            .post_transfer(json!({"from": "1", "to": "2", "amount": amount}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["tx_no"].as_str().unwrap().to_string()
    }

    /// An account's balance as the API shows it.
    pub async fn balance(&self, account: &str) -> String {
        let (status, body) = self.get(&format!("/accounts/{account}")).await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_str().unwrap().to_string()
    }

    /// Waits until `account` shows `expected`; false if it never does.
    pub async fn balance_becomes(&self, account: &str, expected: &str) -> bool {
        eventually(|| async move { self.balance(account).await == expected }).await
    }

    /// Rows of `transfer_out` as (tx_no, state), read straight from the database.
    pub async fn outgoing(&self) -> Vec<(String, String)> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.database_url).await.unwrap();
        let rows = sqlx::query_as("SELECT tx_no, state FROM transfer_out ORDER BY create_time")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }
}

/// Sends `request`, returning status and JSON body.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("bank answers");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Runs `txbank audit` over the banks (receivers first) and returns its JSON report,
/// failing the test when the books do not balance.
pub fn audit_is_clean(receiver: &Bank, sender: &Bank) -> Value {
    audit_all_clean(&[receiver, sender])
}

/// Runs `txbank audit` over `banks` (each named by its preset or configuration name)
/// and returns its JSON report, failing the test when the books do not balance.
pub fn audit_all_clean(banks: &[&Bank]) -> Value {
    let (clean, report) = audit_report(banks);
    assert!(clean, "audit found violations: {report:#}");
    report
}

/// Runs `txbank audit` over `banks`: whether it found the books clean, and its report.
pub fn audit_report(banks: &[&Bank]) -> (bool, Value) {
    let out = audit_command(banks, &["--json"]).output().expect("run txbank audit");
    let report: Value = serde_json::from_slice(&out.stdout).expect("audit prints JSON");
    (out.status.success(), report)
}

/// Runs `txbank audit` over `banks` with `extra` arguments: its exit status.
pub fn audit_status(banks: &[&Bank], extra: &[&str]) -> i32 {
    let out = audit_command(banks, extra).output().expect("run txbank audit");
    out.status.code().expect("txbank audit exits")
}

fn audit_command(banks: &[&Bank], extra: &[&str]) -> Command {
    let mut command = Command::new(PROGRAM);
    command.arg("audit").args(extra);
    for bank in banks {
        command
            .arg("--bank")
            .arg(format!("{}={}", bank.preset, bank.database_url));
    }
    command
}

/// The audit report's counters named by `keys`.
pub fn counts(report: &Value, keys: &[&str]) -> Vec<u64> {
    keys.iter()
        .map(|key| report[*key].as_u64().unwrap_or_else(|| panic!("no {key} in {report}")))
        .collect()
}

/// Polls `check` every 250 ms until it is true or [`SETTLE`] has passed.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that no
/// outgoing connection takes it before its server binds it.
pub fn free_port() -> u16 {
    free_ports(0, 0)
}

/// A port P such that P-2 (the broker's fast listener), P and P+1 (HA) are all free.
pub fn free_broker_port() -> u16 {
    free_ports(2, 1)
}

fn free_ports(below: u16, above: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 20_000 + (random % 12_000) as u16;
        if (port - below..=port + above).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return port;
        }
    }
}

/// Where the parts of a `txbank up` started with [`up_args`] answer.
pub struct UpUrls {
    pub bank1: String,
    pub bank2: String,
    pub dashboard: String,
}

/// Arguments for `txbank up` with its data in `data` and every part on a free port.
pub fn up_args(data: &Path) -> (Vec<String>, UpUrls) {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let (bank1, bank2, dashboard) = (addr(free_port()), addr(free_port()), addr(free_port()));
    let args = [
        "--data-dir",
        &path(data),
        "--namesrv",
        &addr(free_port()),
        "--broker",
        &addr(free_broker_port()),
        "--bank1",
        &bank1,
        "--bank2",
        &bank2,
        "--dashboard",
        &dashboard,
    ];
    let urls = UpUrls {
        bank1: format!("http://{bank1}"),
        bank2: format!("http://{bank2}"),
        dashboard: format!("http://{dashboard}"),
    };
    (self::args(&args), urls)
}

/// A running `txbank up`, its output going to a file.
pub struct Up {
    process: Part,
}

impl Up {
    /// The process id of `up` itself.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Starts `txbank up ARGS`, its output going to `out`, without waiting.
    pub fn spawn(args: &[String], out: PathBuf) -> Up {
        let mut command = program_command(Path::new(PROGRAM), &out, &[]).expect("the command of up");
        command.arg("up").args(args);
        Up {
            process: Part::spawn("up", command, out).expect("start txbank up"),
        }
    }

    /// What `up` printed so far.
    fn printed(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// Starts `txbank up ARGS` and waits until it says it is up.
    pub async fn start(args: &[String], out: PathBuf) -> Up {
        let up = Up::spawn(args, out);
        let started = eventually(|| async { up.printed().contains("txbank is up") }).await;
        assert!(started, "up did not start:\n{}", up.printed());
        up
    }

    /// Ctrl-C, then the exit status and what `up` printed.
    pub fn interrupt(mut self) -> (bool, String) {
        self.process.signal(libc::SIGINT);
        let status = self.process.wait().unwrap();
        (status.success(), self.printed())
    }
}

impl Drop for Up {
    /// A failed test stops its `up` too, which stops every part.
    fn drop(&mut self) {
        if let Ok(None) = self.process.exited() {
            self.process.signal(libc::SIGINT);
            let _ = self.process.wait();
        }
    }
}
