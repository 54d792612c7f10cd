//! `txbank chaos`: the whole system as separate processes (a name server, a broker, and
//! two instances of each bank sharing its database), concurrent transfers in both
//! directions between several accounts, and faults at seeded moments: parts killed
//! (SIGKILL) or paused (SIGSTOP), a bank instance cut off from the broker or slowed
//! down, a bank's database taken away, and the broker's store lost for good. When the
//! faults stop it waits until nothing is in flight (re-drive included) and audits the
//! books: no money may be lost or duplicated.

use std::collections::BTreeMap;
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
use crate::netns::{Link, Namespace};
use crate::up::part_command_via;

/// Options of `chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Transfers to request.
    #[arg(long, default_value_t = 2000)]
    pub transfers: usize,
    /// Seed of the fault schedule and of the transfers' parameters.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Faults to inject while the transfers run, one after another.
    #[arg(long, alias = "kills", default_value_t = 10)]
    pub faults: usize,
    /// The kinds of fault to draw from, comma-separated (all by default).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = FaultKind::ALL)]
    pub kinds: Vec<FaultKind>,
    /// Run the banks on fresh databases of this MySQL/MariaDB server
    /// (`mysql://root@127.0.0.1:3306`) instead of SQLite files.
    #[arg(long)]
    pub mysql_url: Option<String>,
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

/// A kind of fault the run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A part killed with SIGKILL, restarted 0.2 to 3 s later.
    Kill,
    /// A part stopped with SIGSTOP for 0.5 to 10 s, then continued: longer than the
    /// broker's transaction timeout, check-backs race paused local transactions.
    Pause,
    /// A bank instance cut off from the name server and the broker (its connections
    /// closed, new ones refused), or its traffic to them delayed, for 1 to 8 s.
    Network,
    /// A bank's database taken away for 1 to 12 s: on MariaDB its connections are
    /// closed and the server is unreachable; on SQLite another process holds the write
    /// lock (past the bank's 10 s busy timeout, its writes fail).
    DbOutage,
    /// The broker killed, its store folder deleted, and started again empty: every half
    /// message and unconsumed message on it is lost; re-drive brings them home.
    StoreLoss,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Network,
        FaultKind::DbOutage,
        FaultKind::StoreLoss,
    ];
}

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
    /// How many faults of each kind were injected.
    injected: BTreeMap<FaultKind, usize>,
    faults: Vec<Fault>,
    audit: AuditReport,
}

/// One fault: what, to which part, when, and for how long.
#[derive(Debug, Clone, Serialize)]
struct Fault {
    at_ms: u64,
    kind: FaultKind,
    /// A process (`broker`, `bank1a`...) or, for a database outage, a bank.
    part: &'static str,
    for_ms: u64,
    /// For a network fault: the delay added to each chunk of traffic instead of a cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
}

/// Runs the chaos run and prints its report; fails when money was lost or duplicated.
pub fn run(args: &ChaosArgs) -> Result<()> {
    if args.transfers == 0 || args.concurrency == 0 {
        bail!("--transfers and --concurrency must be at least 1");
    }
    if args.faults > 0 && args.kinds.is_empty() {
        bail!("--kinds names no fault kind");
    }
    let dir = run_folder(args.data_dir.as_deref(), &format!("chaos-{}", args.seed))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let databases = match &args.mysql_url {
            Some(server) => mysql_databases(server).await?,
            None => ["bank2", "bank1"]
                .map(|bank| format!("{bank}={}", sqlite_url(&dir, bank)))
                .to_vec(),
        };
        // Network faults, and database outages on a server, act on links that pass
        // through this process: the banks then run in network namespaces.
        let isolated = args.kinds.contains(&FaultKind::Network)
            || (args.mysql_url.is_some() && args.kinds.contains(&FaultKind::DbOutage));
        let mut system = System::start_with(&dir, 2, databases, CheckBack::FAST, isolated).await?;
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
    if let Some(server) = &args.mysql_url {
        runtime.block_on(drop_mysql_databases(server))?;
    }
    Ok(())
}

/// The name of this run's database of `bank` on a MySQL/MariaDB server.
fn mysql_database_name(bank: &str) -> String {
    format!("txbank_chaos_{}_{bank}", std::process::id())
}

/// Fresh databases for this run on the MySQL/MariaDB server, as `NAME=URL`, the
/// receiving bank first; a clean run drops them, a failed one keeps them.
async fn mysql_databases(server: &str) -> Result<Vec<String>> {
    let mut databases = Vec::new();
    for bank in ["bank2", "bank1"] {
        let name = mysql_database_name(bank);
        txbank_storage::drop_mysql_database(server, &name).await?;
        let url = txbank_storage::create_mysql_database(server, &name)
            .await
            .with_context(|| format!("cannot create database {name} on {}", txbank_storage::redact(server)))?;
        databases.push(format!("{bank}={url}"));
    }
    Ok(databases)
}

/// Drops this run's databases from the MySQL/MariaDB server.
async fn drop_mysql_databases(server: &str) -> Result<()> {
    for bank in ["bank2", "bank1"] {
        txbank_storage::drop_mysql_database(server, &mysql_database_name(bank)).await?;
    }
    Ok(())
}

async fn drive(system: &mut System, args: &ChaosArgs) -> Result<ChaosReport> {
    let schedule = plan(args.seed, args.faults, &args.kinds);
    let run_length = Duration::from_millis(schedule.iter().map(|f| f.at_ms + f.for_ms).max().unwrap_or(0) + 2_000);
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
    for (done, fault) in schedule.iter().enumerate() {
        tokio::time::sleep_until((started + Duration::from_millis(fault.at_ms)).into()).await;
        progress.set_message(format!(
            "fault {}/{}: {:?} {}",
            done + 1,
            schedule.len(),
            fault.kind,
            fault.part
        ));
        system.inject(fault).await?;
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
    let mut injected: BTreeMap<FaultKind, usize> = args.kinds.iter().map(|kind| (*kind, 0)).collect();
    for fault in &schedule {
        *injected.entry(fault.kind).or_default() += 1;
    }
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
        injected,
        faults: schedule,
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

/// The faults of a run: the same seed and kinds always give the same schedule. A fault
/// comes 0.3 to 2.3 s after the previous one ended; each kind draws its part and its
/// length as [`FaultKind`] says.
fn plan(seed: u64, faults: usize, kinds: &[FaultKind]) -> Vec<Fault> {
    const PARTS: [&str; 6] = ["broker", "namesrv", "bank1a", "bank1b", "bank2a", "bank2b"];
    const INSTANCES: [&str; 4] = ["bank1a", "bank1b", "bank2a", "bank2b"];
    const BANKS: [&str; 2] = ["bank1", "bank2"];
    let mut rng = SplitMix(seed);
    let mut at_ms = 1_000;
    let pick = |rng: &mut SplitMix, parts: &[&'static str]| parts[rng.below(parts.len() as u64) as usize];
    (0..faults)
        .map(|_| {
            at_ms += 300 + rng.below(2_000);
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let (part, for_ms, delay_ms) = match kind {
                FaultKind::Kill => (pick(&mut rng, &PARTS), 200 + rng.below(2_800), None),
                FaultKind::Pause => (pick(&mut rng, &PARTS), 500 + rng.below(9_500), None),
                FaultKind::Network => {
                    let part = pick(&mut rng, &INSTANCES);
                    let delay = (rng.below(2) == 1).then(|| 50 + rng.below(350));
                    (part, 1_000 + rng.below(7_000), delay)
                }
                FaultKind::DbOutage => (pick(&mut rng, &BANKS), 1_000 + rng.below(11_000), None),
                FaultKind::StoreLoss => ("broker", 200 + rng.below(1_800), None),
            };
            let fault = Fault {
                at_ms,
                kind,
                part,
                for_ms,
                delay_ms,
            };
            at_ms += fault.for_ms;
            fault
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
    /// Each bank instance's network namespace, when the run isolates them.
    namespaces: BTreeMap<&'static str, Namespace>,
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
    /// Starts a name server, a broker checking back as `check_back` says, and
    /// `instances` (1 or 2) of each bank in `dir`, each on its database given as
    /// `NAME=URL` (bank2 first).
    pub(crate) async fn start_on(
        dir: &Path,
        instances: usize,
        databases: Vec<String>,
        check_back: CheckBack,
    ) -> Result<System> {
        System::start_with(dir, instances, databases, check_back, false).await
    }

    /// [`System::start_on`], with each bank instance in a network namespace of its own
    /// when `isolated` (see [`crate::netns`]).
    async fn start_with(
        dir: &Path,
        instances: usize,
        databases: Vec<String>,
        check_back: CheckBack,
        isolated: bool,
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
            namespaces: BTreeMap::new(),
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
        if isolated {
            system.isolate(&parts)?;
        }
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

    /// Puts each bank instance of `instances` in a network namespace of its own, which
    /// reaches the name server, the broker and a database server through proxies.
    fn isolate(&mut self, instances: &[&'static str]) -> Result<()> {
        let database_ports: std::collections::BTreeSet<u16> =
            self.databases.iter().filter_map(|entry| server_port(entry)).collect();
        for instance in instances {
            let listen = self
                .banks
                .iter()
                .find(|(name, ..)| name == instance)
                .map(|(.., listen)| *listen);
            let mut namespace = Namespace::create(&format!("txbank-{}-{instance}", std::process::id()))?;
            for port in [self.namesrv.port(), self.broker.port(), self.broker.port() - 2] {
                namespace.forward_out(port, Link::Broker)?;
            }
            for port in &database_ports {
                namespace.forward_out(*port, Link::Database)?;
            }
            if let Some(listen) = listen {
                namespace.forward_in(listen.port())?;
            }
            self.namespaces.insert(instance, namespace);
        }
        Ok(())
    }

    /// Injects `fault`, holds it for its time, and ends it.
    async fn inject(&mut self, fault: &Fault) -> Result<()> {
        let length = Duration::from_millis(fault.for_ms);
        match fault.kind {
            FaultKind::Kill => {
                self.kill(fault.part).await?;
                tokio::time::sleep(length).await;
                self.restart(fault.part).await?;
            }
            FaultKind::Pause => {
                self.signal(fault.part, libc::SIGSTOP);
                tokio::time::sleep(length).await;
                self.signal(fault.part, libc::SIGCONT);
            }
            FaultKind::Network => {
                let namespace = self
                    .namespaces
                    .get(fault.part)
                    .context("network faults need isolated banks")?;
                match fault.delay_ms {
                    Some(delay) => namespace.delay(Link::Broker, Duration::from_millis(delay)),
                    None => namespace.cut(Link::Broker, true),
                }
                tokio::time::sleep(length).await;
                namespace.delay(Link::Broker, Duration::ZERO);
                namespace.cut(Link::Broker, false);
            }
            FaultKind::DbOutage if self.database(fault.part)?.starts_with("sqlite:") => {
                self.store(fault.part).await?.hold_write_lock(length).await?;
            }
            FaultKind::DbOutage => {
                let instances: Vec<&Namespace> = self
                    .namespaces
                    .iter()
                    .filter(|(instance, _)| instance.starts_with(fault.part))
                    .map(|(_, namespace)| namespace)
                    .collect();
                for namespace in &instances {
                    namespace.cut(Link::Database, true);
                }
                tokio::time::sleep(length).await;
                for namespace in &instances {
                    namespace.cut(Link::Database, false);
                }
            }
            FaultKind::StoreLoss => {
                self.kill("broker").await?;
                let store = self.dir.join("rocketmq").join("store");
                std::fs::remove_dir_all(&store).with_context(|| format!("cannot delete {}", store.display()))?;
                tokio::time::sleep(length).await;
                self.restart("broker").await?;
            }
        }
        Ok(())
    }

    /// Sends `signal` to `part`'s process, if it runs.
    fn signal(&self, part: &str, signal: libc::c_int) {
        if let Some(pid) = self
            .children
            .iter()
            .find(|(name, _)| *name == part)
            .and_then(|(_, child)| child.id())
        {
            // SAFETY: kill(2) only sends a signal to our own child.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
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
        let wrapper = self
            .namespaces
            .get(part)
            .map(Namespace::exec_prefix)
            .unwrap_or_default();
        let mut command = part_command_via(&logs, part, &wrapper)?;
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
                    .env("TXBANK_DATABASE_URL", self.database(preset)?)
                    // Soon after the faults, so that the run converges quickly.
                    .env("TXBANK_REDRIVE_AFTER_SECS", REDRIVE_AFTER_SECS.to_string());
                listen
            }
        };
        let child = command.spawn().with_context(|| format!("cannot start {part}"))?;
        self.children.push((part, child));
        // A bank listens once its topics are ready, which needs a broker registered with
        // the name server: after a name-server restart, up to the broker's next
        // registration.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !answers(part, listen).await {
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

/// Seconds a chaos run's banks wait for a settlement before re-driving a transfer.
const REDRIVE_AFTER_SECS: u64 = 5;

/// True when `part` answers on `listen`: a bank's HTTP API (which a proxy may stand in
/// front of, accepting for it), any other part's port.
async fn answers(part: &str, listen: SocketAddr) -> bool {
    if !part.starts_with("bank") {
        return tokio::net::TcpStream::connect(listen).await.is_ok();
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build();
    match client {
        Ok(client) => client.get(format!("http://{listen}/readyz")).send().await.is_ok(),
        Err(_) => false,
    }
}

/// The port of the database server that `NAME=URL` names, if it is a server's.
fn server_port(entry: &str) -> Option<u16> {
    let url = entry.split_once('=')?.1;
    let authority = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))?;
    let host = authority.split(['/', '?']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    Some(
        host.rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(3306),
    )
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
    for (kind, count) in &report.injected {
        line(&format!("{kind:?} faults"), count);
    }
    println!("fault schedule ({} faults):", report.faults.len());
    for fault in &report.faults {
        let delay = fault.delay_ms.map(|ms| format!(", {ms} ms delay")).unwrap_or_default();
        println!(
            "  at {:>6} ms  {:<10} {:<8} for {} ms{delay}",
            fault.at_ms,
            format!("{:?}", fault.kind),
            fault.part,
            fault.for_ms
        );
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
            plan(seed, 12, &FaultKind::ALL)
                .iter()
                .map(|f| (f.at_ms, f.kind, f.part, f.for_ms, f.delay_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        assert_eq!(schedule(7).len(), 12);
    }

    #[test]
    fn a_schedule_draws_only_the_chosen_kinds_and_each_acts_on_its_kind_of_part() {
        let faults = plan(3, 200, &[FaultKind::Network, FaultKind::DbOutage, FaultKind::StoreLoss]);
        for fault in &faults {
            match fault.kind {
                FaultKind::Network => assert!(fault.part.starts_with("bank") && fault.part.len() == 6),
                FaultKind::DbOutage => assert!(["bank1", "bank2"].contains(&fault.part)),
                FaultKind::StoreLoss => assert_eq!(fault.part, "broker"),
                other => panic!("{other:?} was not chosen"),
            }
        }
        let kinds: std::collections::BTreeSet<_> = faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 3, "every chosen kind comes up in 200 faults");
    }

    #[test]
    fn a_database_server_port_is_read_from_its_url() {
        assert_eq!(server_port("bank1=mysql://root:pw@127.0.0.1:3307/db"), Some(3307));
        assert_eq!(server_port("bank1=mysql://root@localhost/db"), Some(3306));
        assert_eq!(server_port("bank1=sqlite://x.db?mode=rwc"), None);
    }
}
