//! `txbank chaos`: the whole system as separate processes (a name server, a broker, and
//! two instances of each bank sharing its database), concurrent transfers in both
//! directions between several accounts, and SIGKILLs of random parts at seeded moments.
//! When the faults stop it waits until nothing is in flight and audits the books: no
//! money may be lost or duplicated.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::Child;
use txbank_domain::audit::{AuditReport, Violation};
use txbank_domain::BankId;
use txbank_storage::Store;

use crate::audit::read_and_audit;
use crate::config::{create_secret_file, defaults, API_TOKEN_FILE, MESSAGE_KEY_FILE};
use crate::up::part_command;

/// Options of `chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Transfers to request.
    #[arg(long, default_value_t = 2000)]
    pub transfers: usize,
    /// Seed of the fault schedule and of the transfers' parameters.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Processes to kill (and restart) while the transfers run.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds allowed to converge once the faults stop.
    #[arg(long, default_value_t = 300)]
    pub converge_timeout: u64,
    /// Folder for the run's data and logs (default: a new one under the temp folder,
    /// removed after a clean run).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The accounts each bank's preset opens, by bank.
const ACCOUNTS: [(&str, [&str; 2]); 2] = [("bank1", ["1", "3"]), ("bank2", ["2", "4"])];

/// What the run did and found.
#[derive(Debug, Serialize)]
struct ChaosReport {
    seed: u64,
    requested: usize,
    accepted: usize,
    refused: usize,
    unavailable: usize,
    unexpected: usize,
    rolled_back: usize,
    credited: usize,
    returned: usize,
    lost: usize,
    duplicated: usize,
    seconds_to_converge: f64,
    kills: Vec<Kill>,
    audit: AuditReport,
}

/// One fault: which part was killed, when, and for how long it stayed down.
#[derive(Debug, Clone, Serialize)]
struct Kill {
    at_ms: u64,
    part: &'static str,
    down_ms: u64,
}

/// Runs the chaos run and prints its report; fails when money was lost or duplicated.
pub fn run(args: &ChaosArgs) -> Result<()> {
    if args.transfers == 0 || args.concurrency == 0 {
        bail!("--transfers and --concurrency must be at least 1");
    }
    let dir = run_folder(args.data_dir.as_deref(), &format!("chaos-{}", args.seed))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let mut system = System::start(&dir, 2).await?;
        let outcome = drive(&mut system, args).await;
        system.stop_all().await;
        outcome
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    let clean = report.lost == 0 && report.duplicated == 0 && report.audit.is_clean();
    if !clean {
        bail!("money was lost or duplicated; data and logs kept in {}", dir.display());
    }
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn drive(system: &mut System, args: &ChaosArgs) -> Result<ChaosReport> {
    let schedule = plan(args.seed, args.kills);
    let run_length = Duration::from_millis(schedule.iter().map(|k| k.at_ms + k.down_ms).max().unwrap_or(0) + 2_000);
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let clients: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let client = Client {
                seed: args.seed,
                total: args.transfers,
                run_length,
                started,
                urls: system.bank_urls(),
                token: system.token.clone(),
                http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
                counts: Arc::clone(&counts),
            };
            Ok(tokio::spawn(client.run()))
        })
        .collect::<Result<_>>()?;
    let progress = crate::progress::bar(args.transfers as u64, "transfers");
    let watch = {
        let (progress, counts) = (progress.clone(), Arc::clone(&counts));
        tokio::spawn(async move {
            loop {
                progress.set_position(counts.requested.load(Ordering::Relaxed) as u64);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for (done, kill) in schedule.iter().enumerate() {
        tokio::time::sleep_until((started + Duration::from_millis(kill.at_ms)).into()).await;
        progress.set_message(format!("kill {}/{}: {}", done + 1, schedule.len(), kill.part));
        system.kill(kill.part).await?;
        tokio::time::sleep(Duration::from_millis(kill.down_ms)).await;
        system.restart(kill.part).await?;
    }
    for client in clients {
        client.await?;
    }
    watch.abort();
    progress.finish_and_clear();

    let converging = Instant::now();
    let deadline = converging + Duration::from_secs(args.converge_timeout);
    let waiting = crate::progress::spinner("converging");
    let mut report = system.audit().await?;
    while (report.in_flight > 0 || !report.is_clean()) && Instant::now() < deadline {
        waiting.set_message(format!("converging: {} transfers in flight", report.in_flight));
        tokio::time::sleep(Duration::from_millis(500)).await;
        report = system.audit().await?;
    }
    waiting.finish_and_clear();
    let duplicated = report
        .violations
        .iter()
        .filter(|v| {
            matches!(
                v,
                Violation::CreditedTwice { .. } | Violation::CreditedAndReturned { .. }
            )
        })
        .count();
    Ok(ChaosReport {
        seed: args.seed,
        requested: counts.requested.load(Ordering::Relaxed),
        accepted: counts.accepted.load(Ordering::Relaxed),
        refused: counts.refused.load(Ordering::Relaxed),
        unavailable: counts.unavailable.load(Ordering::Relaxed),
        unexpected: counts.unexpected.load(Ordering::Relaxed),
        rolled_back: report.rolled_back,
        credited: report.credited,
        returned: report.returned,
        lost: report.in_flight,
        duplicated,
        seconds_to_converge: converging.elapsed().as_secs_f64(),
        kills: schedule,
        audit: report,
    })
}

/// The folder of a run with its `logs` folder: `data_dir`, or a new one named after
/// `what` under the temp folder.
pub(crate) fn run_folder(data_dir: Option<&Path>, what: &str) -> Result<PathBuf> {
    let dir = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("txbank-{what}-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The kills of a run: the same seed always gives the same schedule. A kill comes 0.3 to
/// 2.3 s after the previous part came back, and the part stays down 0.2 to 3 s.
fn plan(seed: u64, kills: usize) -> Vec<Kill> {
    const PARTS: [&str; 6] = ["broker", "namesrv", "bank1a", "bank1b", "bank2a", "bank2b"];
    let mut rng = SplitMix(seed);
    let mut at_ms = 1_000;
    (0..kills)
        .map(|_| {
            at_ms += 300 + rng.below(2_000);
            let kill = Kill {
                at_ms,
                part: PARTS[rng.below(PARTS.len() as u64) as usize],
                down_ms: 200 + rng.below(2_800),
            };
            at_ms += kill.down_ms;
            kill
        })
        .collect()
}

/// A small seeded generator (SplitMix64): the schedule and the transfers must repeat
/// exactly for a seed, and need no more than this.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[derive(Default)]
struct Counts {
    next: AtomicUsize,
    requested: AtomicUsize,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    unavailable: AtomicUsize,
    unexpected: AtomicUsize,
}

/// One concurrent client: takes the next transfer number, waits for its moment (the
/// transfers are spread over the fault schedule), and asks one of the sending bank's
/// instances, the other if the first does not answer.
struct Client {
    seed: u64,
    total: usize,
    run_length: Duration,
    started: Instant,
    urls: [[String; 2]; 2],
    token: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
}

impl Client {
    async fn run(self) {
        loop {
            let n = self.counts.next.fetch_add(1, Ordering::Relaxed);
            if n >= self.total {
                return;
            }
            let due = self.started + self.run_length.mul_f64(n as f64 / self.total as f64);
            tokio::time::sleep_until(due.into()).await;
            self.transfer(n).await;
        }
    }

    async fn transfer(&self, n: usize) {
        let mut rng = SplitMix(self.seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let from_bank = rng.below(2) as usize;
        let to_bank = rng.below(2) as usize;
        let from = ACCOUNTS[from_bank].1[rng.below(2) as usize];
        let mut to = ACCOUNTS[to_bank].1[rng.below(2) as usize];
        if from_bank == to_bank && from == to {
            to = ACCOUNTS[to_bank].1.iter().find(|a| **a != from).expect("two accounts");
        }
        let cents = 1 + rng.below(2_000);
        let body = json!({
            "from": from,
            "to": to,
            "to_bank": ACCOUNTS[to_bank].0,
            "amount": format!("{}.{:02}", cents / 100, cents % 100),
        });
        self.counts.requested.fetch_add(1, Ordering::Relaxed);
        let first = rng.below(2) as usize;
        for instance in [first, 1 - first] {
            let sent = self
                .http
                .post(format!("{}/transfers", self.urls[from_bank][instance]))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await;
            let counter = match sent.map(|response| response.status().as_u16()) {
                Ok(200..=202) => &self.counts.accepted,
                Ok(422) => &self.counts.refused,
                Ok(503) => &self.counts.unavailable,
                Ok(_) => &self.counts.unexpected,
                // Refused connection: that instance is down; a timeout: it may have died
                // mid-request, and the auditor tells what became of the transfer.
                Err(error) if error.is_connect() && instance == first => continue,
                Err(_) => &self.counts.unavailable,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// The running processes, each restartable on the same address and data.
pub(crate) struct System {
    dir: PathBuf,
    token: String,
    /// Each bank's database as `NAME=URL`, the receiving bank first.
    databases: Vec<String>,
    namesrv: SocketAddr,
    broker: SocketAddr,
    banks: Vec<(&'static str, &'static str, SocketAddr)>,
    check_back: CheckBack,
    children: Vec<(&'static str, Child)>,
}

/// How soon the broker checks back on a half message nobody committed or rolled back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckBack {
    timeout_ms: u64,
    interval_ms: u64,
}

impl CheckBack {
    /// Within a second or two, so that a chaos run converges quickly after each kill.
    pub(crate) const FAST: CheckBack = CheckBack {
        timeout_ms: 1000,
        interval_ms: 1000,
    };
    /// As `txbank broker` and `up` do by default.
    pub(crate) const DEFAULT: CheckBack = CheckBack {
        timeout_ms: defaults::TRANSACTION_TIMEOUT_MS,
        interval_ms: defaults::TRANSACTION_CHECK_INTERVAL_MS,
    };
}

impl System {
    /// Starts a name server, a broker checking back fast, and `instances` (1 or 2) of
    /// each bank in `dir`, on SQLite files there.
    pub(crate) async fn start(dir: &Path, instances: usize) -> Result<System> {
        let banks = ["bank2", "bank1"].map(|bank| format!("{bank}={}", sqlite_url(dir, bank)));
        System::start_on(dir, instances, banks.to_vec(), CheckBack::FAST).await
    }

    /// [`System::start`] with each bank's database given as `NAME=URL` (bank2 first),
    /// and the broker checking back as `check_back` says.
    pub(crate) async fn start_on(
        dir: &Path,
        instances: usize,
        databases: Vec<String>,
        check_back: CheckBack,
    ) -> Result<System> {
        for secret in [MESSAGE_KEY_FILE, API_TOKEN_FILE] {
            create_secret_file(&dir.join(secret))?;
        }
        let token = std::fs::read_to_string(dir.join(API_TOKEN_FILE))?.trim().to_string();
        let mut system = System {
            dir: dir.to_path_buf(),
            token,
            databases,
            namesrv: free_address(false)?,
            broker: free_address(true)?,
            banks: Vec::new(),
            check_back,
            children: Vec::new(),
        };
        for (instance, preset) in [
            ("bank1a", "bank1"),
            ("bank1b", "bank1"),
            ("bank2a", "bank2"),
            ("bank2b", "bank2"),
        ] {
            if instances > 1 || instance.ends_with('a') {
                system.banks.push((instance, preset, free_address(false)?));
            }
        }
        let parts: Vec<&'static str> = system.banks.iter().map(|(name, _, _)| *name).collect();
        for part in ["namesrv", "broker"].into_iter().chain(parts) {
            system.restart(part).await?;
        }
        Ok(system)
    }

    /// The name server's address.
    pub(crate) fn namesrv(&self) -> String {
        self.namesrv.to_string()
    }

    /// The operators' API token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The URL of `instance` (`bank1a`...).
    pub(crate) fn url(&self, instance: &str) -> Option<String> {
        self.banks
            .iter()
            .find(|(name, _, _)| *name == instance)
            .map(|(_, _, listen)| format!("http://{listen}"))
    }

    /// The process id of each running part.
    pub(crate) fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children
            .iter()
            .filter_map(|(name, child)| Some((*name, child.id()?)))
            .collect()
    }

    /// Each bank's two instances' URLs, bank1's first.
    fn bank_urls(&self) -> [[String; 2]; 2] {
        let url = |i: usize| format!("http://{}", self.banks[i].2);
        [[url(0), url(1)], [url(2), url(3)]]
    }

    /// SIGKILL, as a crash, and wait until the process is gone.
    async fn kill(&mut self, part: &str) -> Result<()> {
        if let Some(index) = self.children.iter().position(|(name, _)| *name == part) {
            let (_, mut child) = self.children.swap_remove(index);
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts `part` and waits until it listens.
    async fn restart(&mut self, part: &'static str) -> Result<()> {
        let logs = self.dir.join("logs");
        let namesrv = self.namesrv.to_string();
        let mut command = part_command(&logs, part)?;
        let listen = match part {
            "namesrv" => {
                command
                    .args(["namesrv", "--listen", &namesrv, "--home"])
                    .arg(self.dir.join("rocketmq"));
                self.namesrv
            }
            "broker" => {
                command
                    .args([
                        "broker",
                        "--listen",
                        &self.broker.to_string(),
                        "--namesrv-addr",
                        &namesrv,
                    ])
                    .args([
                        "--transaction-timeout-ms",
                        &self.check_back.timeout_ms.to_string(),
                        "--transaction-check-interval-ms",
                        &self.check_back.interval_ms.to_string(),
                    ])
                    .args(["--transaction-check-max", "600", "--store"])
                    .arg(self.dir.join("rocketmq").join("store"));
                self.broker
            }
            instance => {
                let (_, preset, listen) = *self
                    .banks
                    .iter()
                    .find(|(name, _, _)| *name == instance)
                    .with_context(|| format!("no part {instance}"))?;
                command
                    .args(["bank", "--preset", preset, "--listen", &listen.to_string()])
                    .args(["--namesrv-addr", &namesrv, "--data-dir"])
                    .arg(&self.dir)
                    // In the environment, so that no password shows in the process list.
                    .env("TXBANK_DATABASE_URL", self.database(preset)?);
                listen
            }
        };
        let child = command.spawn().with_context(|| format!("cannot start {part}"))?;
        self.children.push((part, child));
        // A bank listens once its topics are ready, which needs a broker registered with
        // the name server: after a name-server restart, up to the broker's next
        // registration.
        let deadline = Instant::now() + Duration::from_secs(120);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{part} did not listen on {listen}; see {}",
                    logs.join(format!("{part}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The database URL of `bank` (`bank1`, `bank2`).
    fn database(&self, bank: &str) -> Result<&str> {
        self.databases
            .iter()
            .find_map(|entry| entry.strip_prefix(bank)?.strip_prefix('='))
            .with_context(|| format!("no database for {bank}"))
    }

    /// The database of `bank` (`bank1`, `bank2`).
    pub(crate) async fn store(&self, bank: &str) -> Result<Store> {
        Ok(Store::connect(BankId::parse(bank)?, self.database(bank)?, 1).await?)
    }

    /// The auditor over both banks' databases.
    pub(crate) async fn audit(&self) -> Result<AuditReport> {
        read_and_audit(&self.databases).await
    }

    pub(crate) async fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill().await;
        }
        self.children.clear();
    }
}

/// The URL of the SQLite file `NAME.db` in `dir`, created when missing.
pub(crate) fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(format!("{name}.db")).display())
}

/// Where the processes started here listen: below Linux's ephemeral range (32768 and
/// up), from which the kernel picks the local port of every outgoing connection: a port
/// found free in that range can be taken by a connection opened before its server binds
/// it.
const LISTEN_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback address in [`LISTEN_PORTS`]; for a broker, one whose port two below
/// and one above are free too (the broker listens there as well).
fn free_address(broker: bool) -> Result<SocketAddr> {
    let (below, above) = if broker { (2, 1) } else { (0, 0) };
    let mut random = [0u8; 2];
    for _ in 0..1_000 {
        getrandom::getrandom(&mut random).context("no randomness from the operating system")?;
        let port = LISTEN_PORTS.start + u16::from_le_bytes(random) % LISTEN_PORTS.len() as u16;
        if (port - below..=port + above).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    bail!("no free loopback port in {LISTEN_PORTS:?}")
}

fn print_report(report: &ChaosReport) {
    let line = |label: &str, value: &dyn std::fmt::Display| println!("{label:<22}{value}");
    line("seed", &report.seed);
    line("requested", &report.requested);
    line("accepted", &report.accepted);
    line("refused", &report.refused);
    line("unavailable", &report.unavailable);
    line("unexpected answers", &report.unexpected);
    line("rolled back", &report.rolled_back);
    line("credited", &report.credited);
    line("returned", &report.returned);
    line("lost", &report.lost);
    line("duplicated", &report.duplicated);
    line("seconds to converge", &format!("{:.1}", report.seconds_to_converge));
    println!("kill schedule ({} kills):", report.kills.len());
    for kill in &report.kills {
        println!("  at {:>6} ms  {:<8} down {} ms", kill.at_ms, kill.part, kill.down_ms);
    }
    let audit: Value = serde_json::to_value(&report.audit).unwrap_or_default();
    if report.audit.is_clean() {
        println!("audit: conserved, no violations");
    } else {
        println!("audit: {audit}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let schedule = |seed| {
            plan(seed, 12)
                .iter()
                .map(|k| (k.at_ms, k.part, k.down_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        assert_eq!(schedule(7).len(), 12);
    }
}
