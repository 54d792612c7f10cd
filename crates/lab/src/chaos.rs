//! `txbank chaos`: the whole system as separate processes (name servers, the brokers of
//! one RocketMQ cluster, and several instances of each bank sharing its database),
//! concurrent transfers in both directions between several accounts, spread over each
//! bank's instances as a load balancer would, and faults at seeded moments: parts
//! killed (SIGKILL) or paused (SIGSTOP), a bank instance cut off from the brokers or
//! slowed down, a bank's database taken away, a broker's store lost, and a broker, a
//! name server or a bank instance lost for good. When the faults stop it waits until
//! nothing is in flight (re-drive included) and audits the books: no money may be lost
//! or duplicated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use txbank_domain::audit::{AuditReport, Violation};

use crate::netns::Link;
use crate::system::{run_folder, sqlite_url, CheckBack, System, Topology};

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
    /// The kinds of fault to draw from, comma-separated (by default every kind the run's
    /// parts allow: a part is lost for good only when another of its kind remains).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<FaultKind>,
    /// Name servers; every part is given the whole list.
    #[arg(long, default_value_t = 1)]
    pub namesrvs: usize,
    /// Brokers of the RocketMQ cluster, each with its own name and store; every bank's
    /// topics get queues on all of them.
    #[arg(long, default_value_t = 1)]
    pub brokers: usize,
    /// Instances of each bank, sharing the bank's database.
    #[arg(long, default_value_t = 2)]
    pub instances: usize,
    /// Run the banks on fresh databases of this MySQL/MariaDB server
    /// (`mysql://root@127.0.0.1:3306`) instead of SQLite files.
    #[arg(long, conflicts_with = "postgres_url")]
    pub mysql_url: Option<String>,
    /// Run the banks on fresh databases of this PostgreSQL server
    /// (`postgres://postgres@127.0.0.1:5432`) instead of SQLite files.
    #[arg(long)]
    pub postgres_url: Option<String>,
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
    /// A broker killed, its store folder deleted, and started again empty: every half
    /// message and unconsumed message on it is lost; re-drive brings them home.
    StoreLoss,
    /// A broker killed and never started again (needs 2 brokers or more; at most once
    /// a run): new transfers flow through the others, and re-drive brings home what was
    /// stranded on it.
    BrokerLost,
    /// A name server killed and never started again (needs 2 or more; at most once a
    /// run): every part turns to the others.
    NamesrvLost,
    /// A bank instance killed and never started again (needs 2 instances of each bank
    /// or more; at most once a run): the others take its consumer queues and answer its
    /// check-backs, and clients turn to them.
    InstanceLost,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Network,
        FaultKind::DbOutage,
        FaultKind::StoreLoss,
        FaultKind::BrokerLost,
        FaultKind::NamesrvLost,
        FaultKind::InstanceLost,
    ];

    /// True for a part lost for good, which happens at most once a run.
    fn is_loss(self) -> bool {
        matches!(
            self,
            FaultKind::BrokerLost | FaultKind::NamesrvLost | FaultKind::InstanceLost
        )
    }

    /// Why `topology` cannot take this kind of fault, if it cannot: a part is lost for
    /// good only when another of its kind remains.
    fn unfit_for(self, topology: &Topology) -> Option<&'static str> {
        match self {
            FaultKind::BrokerLost if topology.brokers < 2 => Some("broker-lost needs --brokers 2 or more"),
            FaultKind::NamesrvLost if topology.namesrvs < 2 => Some("namesrv-lost needs --namesrvs 2 or more"),
            FaultKind::InstanceLost if topology.instances < 2 => Some("instance-lost needs --instances 2 or more"),
            _ => None,
        }
    }
}

/// The kinds a run draws from: those `chosen`, or every kind `topology` takes when
/// none is; an error names a chosen kind the topology cannot take.
fn kinds_for(chosen: &[FaultKind], topology: &Topology) -> Result<Vec<FaultKind>> {
    if chosen.is_empty() {
        return Ok(FaultKind::ALL
            .into_iter()
            .filter(|kind| kind.unfit_for(topology).is_none())
            .collect());
    }
    if let Some(why) = chosen.iter().find_map(|kind| kind.unfit_for(topology)) {
        bail!("{why}");
    }
    let mut kinds = chosen.to_vec();
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// What the run did and found.
#[derive(Debug, Serialize)]
struct ChaosReport {
    seed: u64,
    topology: Topology,
    requested: usize,
    accepted: usize,
    /// Of the accepted, those debited and queued while no broker answered.
    queued: usize,
    refused: usize,
    unavailable: usize,
    /// The unavailable answers by cause.
    unavailable_by_cause: UnavailableByCause,
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
    /// A process (`broker-a`, `namesrv-1`, `bank1a`...) or, for a database outage, a
    /// bank.
    part: String,
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
    let topology = Topology::new(args.namesrvs, args.brokers, args.instances)?;
    let kinds = kinds_for(&args.kinds, &topology)?;
    let dir = run_folder(args.data_dir.as_deref(), &format!("chaos-{}", args.seed))?;
    let server = args.mysql_url.as_deref().or(args.postgres_url.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let databases = match server {
            Some(server) => server_databases(server).await?,
            None => ["bank2", "bank1"]
                .map(|bank| format!("{bank}={}", sqlite_url(&dir, bank)))
                .to_vec(),
        };
        // Network faults, and database outages on a server, act on links that pass
        // through this process: the banks then run in network namespaces.
        let isolated =
            kinds.contains(&FaultKind::Network) || (server.is_some() && kinds.contains(&FaultKind::DbOutage));
        let mut system = System::start(&dir, topology, databases, CheckBack::FAST, isolated).await?;
        let outcome = drive(&mut system, args, &kinds).await;
        system.kill_all();
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
    if let Some(server) = server {
        runtime.block_on(drop_server_databases(server))?;
    }
    Ok(())
}

/// The name of this run's database of `bank` on a database server.
fn server_database_name(bank: &str) -> String {
    format!("txbank_chaos_{}_{bank}", std::process::id())
}

/// Fresh databases for this run on the MySQL/MariaDB or PostgreSQL server, as
/// `NAME=URL`, the receiving bank first; a clean run drops them, a failed one keeps them.
async fn server_databases(server: &str) -> Result<Vec<String>> {
    let mut databases = Vec::new();
    for bank in ["bank2", "bank1"] {
        let name = server_database_name(bank);
        txbank_storage::drop_database(server, &name).await?;
        let url = txbank_storage::create_database(server, &name)
            .await
            .with_context(|| format!("cannot create database {name} on {}", txbank_storage::redact(server)))?;
        databases.push(format!("{bank}={url}"));
    }
    Ok(databases)
}

/// Drops this run's databases from the database server.
async fn drop_server_databases(server: &str) -> Result<()> {
    for bank in ["bank2", "bank1"] {
        txbank_storage::drop_database(server, &server_database_name(bank)).await?;
    }
    Ok(())
}

async fn drive(system: &mut System, args: &ChaosArgs, kinds: &[FaultKind]) -> Result<ChaosReport> {
    let schedule = plan(args.seed, args.faults, kinds, &system.topology());
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
                urls: ACCOUNTS.map(|(bank, _)| system.instance_urls(bank)),
                token: system.token().to_string(),
                http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
                counts: Arc::clone(&counts),
            };
            Ok(tokio::spawn(client.run()))
        })
        .collect::<Result<_>>()?;
    let progress = txbank::progress::bar(args.transfers as u64, "transfers");
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
        inject(system, fault).await?;
    }
    for client in clients {
        client.await?;
    }
    watch.abort();
    progress.finish_and_clear();

    let converging = Instant::now();
    let deadline = converging + Duration::from_secs(args.converge_timeout);
    let waiting = txbank::progress::spinner("converging");
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
    let mut injected: BTreeMap<FaultKind, usize> = kinds.iter().map(|kind| (*kind, 0)).collect();
    for fault in &schedule {
        *injected.entry(fault.kind).or_default() += 1;
    }
    Ok(ChaosReport {
        seed: args.seed,
        topology: system.topology(),
        requested: counts.requested.load(Ordering::Relaxed),
        accepted: counts.accepted.load(Ordering::Relaxed),
        queued: counts.queued.load(Ordering::Relaxed),
        refused: counts.refused.load(Ordering::Relaxed),
        unavailable: counts.unavailable.load(Ordering::Relaxed),
        unavailable_by_cause: UnavailableByCause {
            broker: counts.no_broker.load(Ordering::Relaxed),
            database: counts.no_database.load(Ordering::Relaxed),
            bank: counts.no_bank.load(Ordering::Relaxed),
            other: counts.unavailable_otherwise.load(Ordering::Relaxed),
        },
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

/// The faults of a run: the same seed, kinds and topology always give the same
/// schedule. A fault comes 0.3 to 2.3 s after the previous one ended; each kind draws
/// its part and its length as [`FaultKind`] says, among the parts not lost yet. A kind
/// of loss is drawn at most once; the schedule ends early when no kind is left.
fn plan(seed: u64, faults: usize, kinds: &[FaultKind], topology: &Topology) -> Vec<Fault> {
    const BANKS: [&str; 2] = ["bank1", "bank2"];
    let mut namesrvs = topology.namesrv_names();
    let mut brokers = topology.broker_names();
    let mut instances = BANKS.map(|bank| topology.instance_names(bank));
    let mut kinds = kinds.to_vec();
    let mut rng = SplitMix(seed);
    let mut at_ms = 1_000;
    let pick = |rng: &mut SplitMix, parts: &[String]| parts[rng.below(parts.len() as u64) as usize].clone();
    let take = |rng: &mut SplitMix, parts: &mut Vec<String>| parts.remove(rng.below(parts.len() as u64) as usize);
    let mut schedule = Vec::new();
    while schedule.len() < faults && !kinds.is_empty() {
        at_ms += 300 + rng.below(2_000);
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let every_instance: Vec<String> = instances.concat();
        let (part, for_ms, delay_ms) = match kind {
            FaultKind::Kill | FaultKind::Pause => {
                let parts = [namesrvs.clone(), brokers.clone(), every_instance].concat();
                let part = pick(&mut rng, &parts);
                let for_ms = match kind {
                    FaultKind::Kill => 200 + rng.below(2_800),
                    _ => 500 + rng.below(9_500),
                };
                (part, for_ms, None)
            }
            FaultKind::Network => {
                let part = pick(&mut rng, &every_instance);
                let delay = (rng.below(2) == 1).then(|| 50 + rng.below(350));
                (part, 1_000 + rng.below(7_000), delay)
            }
            FaultKind::DbOutage => (
                BANKS[rng.below(2) as usize].to_string(),
                1_000 + rng.below(11_000),
                None,
            ),
            FaultKind::StoreLoss => (pick(&mut rng, &brokers), 200 + rng.below(1_800), None),
            FaultKind::BrokerLost => (take(&mut rng, &mut brokers), 0, None),
            FaultKind::NamesrvLost => (take(&mut rng, &mut namesrvs), 0, None),
            FaultKind::InstanceLost => {
                let bank = rng.below(2) as usize;
                (take(&mut rng, &mut instances[bank]), 0, None)
            }
        };
        if kind.is_loss() {
            kinds.retain(|other| *other != kind);
        }
        let fault = Fault {
            at_ms,
            kind,
            part,
            for_ms,
            delay_ms,
        };
        at_ms += fault.for_ms;
        schedule.push(fault);
    }
    schedule
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

/// Why requests were answered "unavailable".
#[derive(Debug, Default, Serialize)]
struct UnavailableByCause {
    /// `503 broker_unavailable`: no broker took the half message (and the payment was not
    /// queued).
    broker: usize,
    /// `503 database_unavailable`.
    database: usize,
    /// No answer: every instance of the bank refused the connection, or the request timed
    /// out.
    bank: usize,
    /// Any other 503.
    other: usize,
}

#[derive(Default)]
struct Counts {
    next: AtomicUsize,
    requested: AtomicUsize,
    accepted: AtomicUsize,
    queued: AtomicUsize,
    refused: AtomicUsize,
    unavailable: AtomicUsize,
    no_broker: AtomicUsize,
    no_database: AtomicUsize,
    no_bank: AtomicUsize,
    unavailable_otherwise: AtomicUsize,
    unexpected: AtomicUsize,
}

/// One concurrent client: takes the next transfer number, waits for its moment (the
/// transfers are spread over the fault schedule), and asks one of the sending bank's
/// instances, drawn at random, and the next ones in turn while an instance refuses the
/// connection, as a load balancer that finds an instance down passes the request on.
struct Client {
    seed: u64,
    total: usize,
    run_length: Duration,
    started: Instant,
    /// The instances of bank1 and of bank2.
    urls: [Vec<String>; 2],
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
        let urls = &self.urls[from_bank];
        let first = rng.below(urls.len() as u64) as usize;
        for tried in 0..urls.len() {
            let last = tried + 1 == urls.len();
            let sent = self
                .http
                .post(format!("{}/transfers", urls[(first + tried) % urls.len()]))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await;
            let answer = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    Ok((status, body))
                }
                Err(error) => Err(error),
            };
            let counters: &[&AtomicUsize] = match &answer {
                Ok((201, body)) if body["state"] == "queued" => &[&self.counts.accepted, &self.counts.queued],
                Ok((200..=202, _)) => &[&self.counts.accepted],
                Ok((422, _)) => &[&self.counts.refused],
                Ok((503, body)) => match body["error"]["code"].as_str() {
                    Some("broker_unavailable") => &[&self.counts.unavailable, &self.counts.no_broker],
                    Some("database_unavailable") => &[&self.counts.unavailable, &self.counts.no_database],
                    _ => &[&self.counts.unavailable, &self.counts.unavailable_otherwise],
                },
                Ok(_) => &[&self.counts.unexpected],
                // Refused connection: that instance is down; a timeout: it may have died
                // mid-request, and the auditor tells what became of the transfer.
                Err(error) if error.is_connect() && !last => continue,
                Err(_) => &[&self.counts.unavailable, &self.counts.no_bank],
            };
            for counter in counters {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    }
}

/// Injects `fault`, holds it for its time, and ends it.
async fn inject(system: &mut System, fault: &Fault) -> Result<()> {
    let length = Duration::from_millis(fault.for_ms);
    match fault.kind {
        FaultKind::Kill => {
            system.kill(&fault.part);
            tokio::time::sleep(length).await;
            system.restart(&fault.part).await?;
        }
        FaultKind::Pause => {
            system.signal(&fault.part, libc::SIGSTOP);
            tokio::time::sleep(length).await;
            system.signal(&fault.part, libc::SIGCONT);
        }
        FaultKind::Network => {
            let namespace = system
                .namespace(&fault.part)
                .context("network faults need isolated banks")?;
            match fault.delay_ms {
                Some(delay) => namespace.delay(Link::Broker, Duration::from_millis(delay)),
                None => namespace.cut(Link::Broker, true),
            }
            tokio::time::sleep(length).await;
            namespace.delay(Link::Broker, Duration::ZERO);
            namespace.cut(Link::Broker, false);
        }
        FaultKind::DbOutage if system.database(&fault.part)?.starts_with("sqlite:") => {
            system.store(&fault.part).await?.hold_write_lock(length).await?;
        }
        FaultKind::DbOutage => {
            let instances = system.namespaces_of(&fault.part);
            for namespace in &instances {
                namespace.cut(Link::Database, true);
            }
            tokio::time::sleep(length).await;
            for namespace in &instances {
                namespace.cut(Link::Database, false);
            }
        }
        FaultKind::StoreLoss => {
            system.lose_broker_store(&fault.part, length).await?;
        }
        FaultKind::BrokerLost | FaultKind::NamesrvLost | FaultKind::InstanceLost => {
            system.kill(&fault.part);
        }
    }
    Ok(())
}

fn print_report(report: &ChaosReport) {
    let line = |label: &str, value: &dyn std::fmt::Display| println!("{label:<22}{value}");
    line("seed", &report.seed);
    let topology = &report.topology;
    line(
        "parts",
        &format!(
            "{} name servers, {} brokers, {} instances of each bank",
            topology.namesrvs, topology.brokers, topology.instances
        ),
    );
    line("requested", &report.requested);
    line("accepted", &report.accepted);
    line("of which queued", &report.queued);
    line("refused", &report.refused);
    let causes = &report.unavailable_by_cause;
    line(
        "unavailable",
        &format!(
            "{} (no broker {}, no database {}, bank down {}, other {})",
            report.unavailable, causes.broker, causes.database, causes.bank, causes.other
        ),
    );
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
            "  at {:>6} ms  {:<12} {:<10} for {} ms{delay}",
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

    const CLUSTER: Topology = Topology {
        namesrvs: 2,
        brokers: 2,
        instances: 3,
    };

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let schedule = |seed| {
            plan(seed, 12, &FaultKind::ALL, &CLUSTER)
                .into_iter()
                .map(|f| (f.at_ms, f.kind, f.part, f.for_ms, f.delay_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        assert_eq!(schedule(7).len(), 12);
    }

    #[test]
    fn a_schedule_draws_only_the_chosen_kinds_and_each_acts_on_its_kind_of_part() {
        let kinds = [FaultKind::Network, FaultKind::DbOutage, FaultKind::StoreLoss];
        let faults = plan(3, 200, &kinds, &CLUSTER);
        for fault in &faults {
            match fault.kind {
                FaultKind::Network => assert!(fault.part.starts_with("bank") && fault.part.len() == 6),
                FaultKind::DbOutage => assert!(["bank1", "bank2"].contains(&fault.part.as_str())),
                FaultKind::StoreLoss => assert!(["broker-a", "broker-b"].contains(&fault.part.as_str())),
                other => panic!("{other:?} was not chosen"),
            }
        }
        let drawn: std::collections::BTreeSet<_> = faults.iter().map(|f| f.kind).collect();
        assert_eq!(drawn.len(), 3, "every chosen kind comes up in 200 faults");
    }

    #[test]
    fn each_part_is_lost_at_most_once_and_no_fault_strikes_it_afterwards() {
        for seed in 0..50 {
            let faults = plan(seed, 40, &FaultKind::ALL, &CLUSTER);
            let lost: Vec<&Fault> = faults.iter().filter(|f| f.kind.is_loss()).collect();
            let kinds: std::collections::BTreeSet<_> = lost.iter().map(|f| f.kind).collect();
            assert_eq!(kinds.len(), lost.len(), "seed {seed}: a kind of loss came twice");
            for gone in &lost {
                let later = faults.iter().filter(|f| f.at_ms > gone.at_ms);
                assert!(
                    later.clone().all(|f| f.part != gone.part),
                    "seed {seed}: {} struck after it was lost",
                    gone.part
                );
            }
        }
    }

    #[test]
    fn the_suites_cluster_run_draws_every_kind() {
        // crates/lab/tests/chaos.rs runs seed 4 with 16 faults on this topology.
        let drawn: std::collections::BTreeSet<_> = plan(4, 16, &FaultKind::ALL, &CLUSTER)
            .into_iter()
            .map(|f| f.kind)
            .collect();
        assert_eq!(drawn.len(), FaultKind::ALL.len(), "{drawn:?}");
    }

    #[test]
    fn a_schedule_of_losses_alone_ends_when_every_loss_came() {
        let losses = [FaultKind::BrokerLost, FaultKind::NamesrvLost, FaultKind::InstanceLost];
        let faults = plan(5, 10, &losses, &CLUSTER);
        assert_eq!(faults.len(), 3);
    }

    #[test]
    fn a_part_is_lost_for_good_only_when_another_of_its_kind_remains() {
        let single = Topology::new(1, 1, 1).unwrap();
        let kinds = kinds_for(&[], &single).unwrap();
        assert!(kinds.iter().all(|kind| !kind.is_loss()), "{kinds:?}");
        assert_eq!(kinds_for(&[], &CLUSTER).unwrap(), FaultKind::ALL);
        let refused = kinds_for(&[FaultKind::BrokerLost], &single).unwrap_err();
        assert_eq!(refused.to_string(), "broker-lost needs --brokers 2 or more");
    }
}
