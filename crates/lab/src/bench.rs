//! `txbank bench`: the real system (name servers, brokers, and instances of bank1 and
//! bank2, as processes; SQLite with durable commits, or MySQL/MariaDB) under transfers
//! from bank1 to bank2 through the HTTP API, spread over bank1's instances, at a chosen
//! concurrency for a chosen time.
//!
//! In the same run it measures the two limits the system is held against: (a) the
//! database's raw durable commit rate for the least a transfer costs it (a
//! de-duplication insert and a one-row update), same engine and settings, on a scratch
//! database; (b) the broker's raw transactional-send rate with an empty local
//! transaction. It reports throughput credited in bank2 and its ratio to each limit,
//! HTTP and debit-to-credit latencies, each process's peak resident memory and CPU time
//! per transfer, and (c) the rate the machine's cores would allow at that CPU cost. It
//! checks with the auditor that every transfer was credited exactly once, and can write
//! the figures as JSON and draw them as an SVG chart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use txbank_dashboard::prometheus;
use txbank_domain::{AccountName, AccountNo, BankId, Money, TxNo};
use txbank_messaging::{ensure_topic, MqClient, MqSettings};
use txbank_storage::{create_database, drop_database, fill_books, Engine, Preload, Store};

use crate::process_stats::{cpu_seconds, peak_memory_kib, MachineCpu};
use crate::system::{run_folder, sqlite_url, CheckBack, System, Topology};

/// The topic the broker's reference sends go to; nothing consumes it.
const REFERENCE_TOPIC: &str = "txbank_bench_reference";
/// Connections of the reference database's pool: a bank's default.
const REFERENCE_CONNECTIONS: u32 = 8;
/// The bank1 account the transfers come from, opened by the run with the most a balance
/// holds (99,999,999.99: ten billion transfers of 0.01). Account 1's 10,000.00 ran out
/// after a million, within ten minutes at 16 clients.
const SOURCE_ACCOUNT: &str = "bench-source";
/// This process's part in the CPU figures: the HTTP clients, which are not the system.
const LOAD_GENERATOR: &str = "load generator";

/// Options of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent HTTP clients (and concurrent senders of the reference runs).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each reference run (database, broker) lasts.
    #[arg(long, default_value_t = 5)]
    pub reference_seconds: u64,
    /// Producers (each its own producer group) the broker's reference sends are spread
    /// over; a bank uses one.
    #[arg(long, default_value_t = 1)]
    pub reference_producers: usize,
    /// Put the banks on fresh databases of this MySQL/MariaDB server
    /// (`mysql://root@127.0.0.1:3306`) instead of SQLite files.
    #[arg(
        long,
        env = "TXBANK_BENCH_MYSQL_URL",
        hide_env_values = true,
        conflicts_with = "postgres_url"
    )]
    pub mysql_url: Option<String>,
    /// Put the banks on fresh databases of this PostgreSQL server
    /// (`postgres://postgres@127.0.0.1:5432`) instead of SQLite files.
    #[arg(long, env = "TXBANK_BENCH_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Folder for the run's data and logs (default: a new one under the temp folder,
    /// removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report, with its per-second series, to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Draw throughput and latency per second as an SVG chart in this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Before the run, fill the books with this many settled transfers from bank1 to
    /// bank2, made over the year before the last 8 days (needs --accounts).
    #[arg(long, default_value_t = 0)]
    pub preload: u64,
    /// Before the run, open this many accounts in each bank (`pre-1`, ...), 1,000,000.00
    /// each, and spread the load over them: each transfer goes from one of them, picked
    /// at random, to another in the other bank (and so do the preloaded transfers).
    /// Without it every transfer debits one account and credits one: the hot case.
    #[arg(long, default_value_t = 0)]
    pub accounts: u64,
    /// Send from bank2 to bank1 too: half the clients send each way.
    #[arg(long)]
    pub both_ways: bool,
    /// Send every transfer from the one hot account to one even with --accounts (books
    /// preloaded over many accounts, load on one).
    #[arg(long, conflicts_with = "both_ways")]
    pub hot: bool,
    /// Each client sends batches of this many transfers through `POST /transfers/batch`
    /// (at most 1,000) instead of one transfer a request.
    #[arg(long, default_value_t = 0)]
    pub batch: usize,
    /// Name servers; every part is given the whole list.
    #[arg(long, default_value_t = 1)]
    pub namesrvs: usize,
    /// Brokers of the RocketMQ cluster; every bank's topics get queues on all of them.
    #[arg(long, default_value_t = 1)]
    pub brokers: usize,
    /// Instances of each bank, sharing the bank's database; the clients are spread
    /// over bank1's.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
}

/// What the run measured.
#[derive(Debug, Serialize)]
struct BenchReport {
    database: &'static str,
    topology: Topology,
    duration_s: u64,
    concurrency: usize,
    requests: usize,
    /// Requests answered 201 (debited and committed).
    debited: usize,
    /// Requests answered otherwise (202 pending, 503, cut off).
    failed: usize,
    credited: usize,
    credited_per_s: f64,
    /// (a) and (b): the limits measured in the same run.
    reference: Reference,
    /// End-to-end throughput over each limit.
    ratio_to_database: f64,
    ratio_to_broker: f64,
    /// (c) The transfers per second the machine's cores allow the system at the CPU time
    /// it spent per transfer in this run: cores × 1000 / the system's milliseconds per
    /// transfer (the load generator's not counted). 0 when the CPU time is unknown.
    cpu_bound_per_s: f64,
    ratio_to_cpu_bound: f64,
    /// Cores of the machine.
    cores: usize,
    /// CPU time (user + system) each process used per credited transfer, in
    /// milliseconds, from the start of the load until bank2 had credited everything.
    cpu_ms_per_transfer: BTreeMap<String, f64>,
    /// The share of that time the machine's cores were busy (0 to 1).
    machine_busy: f64,
    /// The share of that time each bank instance's group commit queues spent applying,
    /// summed over a queue's transactions at once (by `instance/queue`, from each
    /// instance's `GET /metrics`): near the transactions it may run at once (1 on
    /// SQLite), that queue is what holds the bank back.
    group_commit_busy: BTreeMap<String, f64>,
    /// The share of that time each SQLite bank instance held its database's one write
    /// turn (from `GET /metrics`): near 1, the writer is what holds the bank back,
    /// whatever the cores.
    sqlite_writer_busy: BTreeMap<String, f64>,
    /// Milliseconds each SQLite bank instance held the write turn per credited transfer:
    /// the serial part of a transfer's path there, at this run's batch sizes.
    sqlite_writer_ms_per_transfer: BTreeMap<String, f64>,
    http_latency_ms: Percentiles,
    debit_to_credit_ms: Percentiles,
    peak_memory_mib: BTreeMap<String, f64>,
    audit_clean: bool,
    /// Seconds the auditor took to read both banks and check them, at the end.
    audit_s: f64,
    /// Accounts per bank the load was spread over (0: every transfer from one hot
    /// account to one), and whether it went both ways.
    spread_over_accounts: u64,
    both_ways: bool,
    /// Transfers per batch request (0: one transfer a request).
    batch: usize,
    /// Settled transfers and accounts the books held before the run.
    preloaded_transfers: u64,
    preloaded_accounts: u64,
    /// Seconds filling the books took.
    preload_s: f64,
    /// Each bank's database size after the run over the transfers it holds, in bytes.
    disk_bytes_per_transfer: BTreeMap<&'static str, f64>,
    /// Transfers still in flight when the wait for bank2 gave up (0 when all arrived).
    in_flight_at_end: usize,
    /// What the auditor found wrong, if anything.
    violations: Vec<String>,
    /// Per second of crediting: transfers credited and their debit-to-credit latency.
    series: Vec<SecondPoint>,
}

/// The raw rates the system is measured against.
#[derive(Debug, Default, Serialize)]
struct Reference {
    /// (a) Durable commits of a de-duplication insert and a one-row update, per second.
    database_commits_per_s: f64,
    /// (b) Transactional sends with an empty local transaction, per second.
    broker_transactional_sends_per_s: f64,
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (milliseconds); zeros when there are none.
    fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// One second of the run, counted from the first credit.
#[derive(Debug, Serialize)]
struct SecondPoint {
    second: i64,
    credited: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs the benchmark and prints its report; fails when the books do not balance.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.duration == 0 || args.concurrency == 0 || args.reference_seconds == 0 {
        bail!("--duration, --concurrency and --reference-seconds must be at least 1");
    }
    if args.batch > 1000 {
        bail!("--batch is at most 1000, the most one batch request holds");
    }
    if args.both_ways && args.accounts == 0 {
        bail!("--both-ways needs --accounts: the transfers from bank2 come from those accounts");
    }
    if args.preload > 0 && args.accounts == 0 {
        bail!("--preload needs --accounts: the preloaded transfers go between those accounts");
    }
    let topology = Topology::new(args.namesrvs, args.brokers, args.instances)?;
    let dir = run_folder(args.data_dir.as_deref(), "bench")?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mq = MqClient::build(workers, 64)?;
    let report = mq.block_on(async {
        let server = args.mysql_url.as_deref().or(args.postgres_url.as_deref());
        let databases = databases(&dir, server).await?;
        let report = run_on(&mq, &dir, args, topology, &databases).await;
        databases.drop(server).await;
        report
    });
    mq.shutdown();
    let report = report?;
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    if let Some(chart) = &args.chart {
        std::fs::write(chart, crate::chart::svg(&report_chart(&report)))
            .with_context(|| format!("cannot write {}", chart.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !report.audit_clean {
        bail!("the auditor found violations");
    }
    Ok(())
}

/// (a), then the system with (b) and the end-to-end run, on `databases`.
async fn run_on(
    mq: &MqClient,
    dir: &Path,
    args: &BenchArgs,
    topology: Topology,
    databases: &Databases,
) -> Result<BenchReport> {
    let preload_s = preload(databases, args).await?;
    let database_rate = reference_database(&databases.reference, args).await?;
    let mut system = System::start(dir, topology, databases.banks.clone(), CheckBack::DEFAULT, false).await?;
    let outcome = async {
        let broker_rate = reference_broker(mq, dir, &system, args).await?;
        let reference = Reference {
            database_commits_per_s: database_rate,
            broker_transactional_sends_per_s: broker_rate,
        };
        measure(&system, args, reference, databases.engine).await
    }
    .await;
    system.kill_all();
    let mut report = outcome?;
    report.preload_s = preload_s;
    for bank in ["bank1", "bank2"] {
        let store = system.store(bank).await?;
        let bytes = store.size_on_disk().await?;
        let transfers = store.transfers_held().await?;
        store.close().await;
        report
            .disk_bytes_per_transfer
            .insert(bank, bytes as f64 / transfers.max(1) as f64);
    }
    Ok(report)
}

/// Fills the banks' books as --preload and --accounts say, before the system starts;
/// answers the seconds it took.
async fn preload(databases: &Databases, args: &BenchArgs) -> Result<f64> {
    if args.preload == 0 && args.accounts == 0 {
        return Ok(0.0);
    }
    let started = Instant::now();
    let mut stores = BTreeMap::new();
    for bank in ["bank1", "bank2"] {
        let url = databases.url(bank)?;
        let store = Store::connect(BankId::parse(bank)?, url, 1).await?;
        store.migrate().await?;
        stores.insert(bank, store);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let plan = Preload {
        transfers: args.preload,
        accounts: args.accounts,
        from_ms: now - 373 * DAY_MS,
        to_ms: now - 8 * DAY_MS,
        seed: 2026,
    };
    let filling = txbank::progress::bar(args.preload, "transfers");
    fill_books(&stores["bank1"], &stores["bank2"], &plan, |made| {
        filling.set_position(made)
    })
    .await
    .context("cannot fill the books")?;
    filling.finish_and_clear();
    for store in stores.values() {
        store.close().await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The run's databases: each bank's (`NAME=URL`, bank2 first) and the reference's.
struct Databases {
    engine: &'static str,
    banks: Vec<String>,
    reference: String,
    /// The databases made on a MySQL/MariaDB or PostgreSQL server for this run, dropped
    /// after it.
    created: Vec<String>,
}

impl Databases {
    /// The database URL of `bank`.
    fn url(&self, bank: &str) -> Result<&str> {
        self.banks
            .iter()
            .find_map(|entry| entry.strip_prefix(bank)?.strip_prefix('='))
            .with_context(|| format!("no database for {bank}"))
    }

    /// Drops the databases this run made on `server` (SQLite files go with the run folder).
    async fn drop(&self, server: Option<&str>) {
        let Some(server) = server else { return };
        for name in &self.created {
            if let Err(error) = drop_database(server, name).await {
                eprintln!("cannot drop the benchmark's database {name}: {error}");
            }
        }
    }
}

/// The run's databases: SQLite files in `dir`, or fresh databases on `server`.
async fn databases(dir: &Path, server: Option<&str>) -> Result<Databases> {
    let Some(server) = server else {
        let sqlite = |name: &str| sqlite_url(dir, name);
        return Ok(Databases {
            engine: "sqlite",
            banks: vec![
                format!("bank2={}", sqlite("bank2")),
                format!("bank1={}", sqlite("bank1")),
            ],
            reference: sqlite("reference"),
            created: Vec::new(),
        });
    };
    let run = TxNo::generate().as_str().replace('-', "");
    let names: Vec<String> = ["bank2", "bank1", "reference"]
        .iter()
        .map(|part| format!("txbank_bench_{run}_{part}"))
        .collect();
    let mut urls = Vec::new();
    for name in &names {
        let url = create_database(server, name)
            .await
            .context("cannot create the benchmark's databases")?;
        urls.push(url);
    }
    Ok(Databases {
        engine: match Engine::of(server) {
            Some(Engine::Postgres) => "postgres",
            _ => "mysql",
        },
        banks: vec![format!("bank2={}", urls[0]), format!("bank1={}", urls[1])],
        reference: urls[2].clone(),
        created: names,
    })
}

/// (a): the reference transaction from `concurrency` tasks on a scratch database.
async fn reference_database(url: &str, args: &BenchArgs) -> Result<f64> {
    let store = Store::connect(BankId::parse("reference")?, url, REFERENCE_CONNECTIONS).await?;
    store.migrate().await?;
    let account = AccountNo::parse("1")?;
    store
        .open_account_if_absent(&account, &AccountName::parse("reference")?, Money::parse("0")?)
        .await?;
    let duration = Duration::from_secs(args.reference_seconds);
    let spinner = txbank::progress::spinner("measuring the database's raw commit rate");
    let committed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (store, account, committed) = (store.clone(), account.clone(), Arc::clone(&committed));
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    store.reference_commit(&TxNo::generate(), &account).await?;
                    committed.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, txbank_storage::StorageError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let rate = committed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    spinner.finish_and_clear();
    store.close().await;
    Ok(rate)
}

/// (b): transactional sends with an empty local transaction, from `concurrency` tasks.
async fn reference_broker(mq: &MqClient, dir: &Path, system: &System, args: &BenchArgs) -> Result<f64> {
    // Signed as bank1 signs its transfers, so that the reference pays what a bank pays.
    let keys = dir.join(txbank::config::KEYS_DIR);
    let own = txbank_messaging::BankKey::read(&txbank::keys::private_key_file(&keys, "bank1"))?;
    let signer = txbank_messaging::MessageSigner {
        own: Some(own),
        shared: None,
    };
    let settings = MqSettings::new(system.namesrv_addr(), signer);
    ensure_topic(mq, &settings, REFERENCE_TOPIC).await?;
    let spinner = txbank::progress::spinner("measuring the broker's raw transactional-send rate");
    let duration = Duration::from_secs(args.reference_seconds);
    let started = Instant::now();
    let sent = txbank_messaging::reference::transactional_sends(
        mq,
        &settings,
        REFERENCE_TOPIC,
        (args.reference_producers, args.concurrency),
        duration,
    )
    .await?;
    spinner.finish_and_clear();
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

async fn measure(
    system: &System,
    args: &BenchArgs,
    reference: Reference,
    database: &'static str,
) -> Result<BenchReport> {
    let senders = [system.instance_urls("bank1"), system.instance_urls("bank2")];
    let bank1 = senders[0].first().context("no bank1")?;
    let http = reqwest::Client::new();
    let opened = http
        .post(format!("{bank1}/accounts"))
        .bearer_auth(system.token())
        .json(&json!({"no": SOURCE_ACCOUNT, "name": "txbank bench", "opening_balance": Money::MAX.to_string()}))
        .send()
        .await
        .context("cannot open the bench's source account")?;
    if !opened.status().is_success() {
        bail!("cannot open the bench's source account: {}", opened.text().await?);
    }
    let load_started_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let progress = txbank::progress::bar(args.duration, "s");
    let debited_so_far = Arc::new(AtomicUsize::new(0));
    let cpu_at_start = CpuReading::take(system);
    let busy_at_start = BusyReading::take(&http, system).await;
    let clients: Vec<_> = (0..args.concurrency)
        .map(|client| {
            let reverse = args.both_ways && client % 2 == 1;
            let instances = &senders[usize::from(reverse)];
            let base = &instances[client / 2 % instances.len()];
            let batch = args.batch;
            let url = match batch {
                0 => format!("{base}/transfers"),
                _ => format!("{base}/transfers/batch"),
            };
            let to_bank = if reverse { "bank1" } else { "bank2" };
            let mut pick = Picker::new(client as u64, spread_over(args), to_bank);
            let (http, token) = (http.clone(), system.token().to_string());
            let debited_so_far = Arc::clone(&debited_so_far);
            tokio::spawn(async move {
                let (mut latencies, mut debited, mut failed) = (Vec::new(), 0usize, 0usize);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let body = match batch {
                        0 => pick.next_transfer(),
                        _ => json!({"transfers": (0..batch).map(|_| pick.next_transfer()).collect::<Vec<_>>()}),
                    };
                    let sent = http.post(&url).bearer_auth(&token).json(&body).send().await;
                    let (moved, asked) = match sent {
                        Ok(response) if batch == 0 => (usize::from(response.status().as_u16() == 201), 1),
                        Ok(response) => (debited_in_batch(response).await, batch),
                        Err(_) => (0, batch.max(1)),
                    };
                    if moved > 0 {
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    debited += moved;
                    failed += asked - moved;
                    debited_so_far.fetch_add(moved, Ordering::Relaxed);
                }
                (latencies, debited, failed)
            })
        })
        .collect();
    let load_started = Instant::now();
    while Instant::now() < deadline {
        progress.set_position(load_started.elapsed().as_secs());
        progress.set_message(format!("{} debited", debited_so_far.load(Ordering::Relaxed)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress.finish_and_clear();
    let (mut http_latencies, mut debited, mut failed) = (Vec::new(), 0, 0);
    for client in clients {
        let (latencies, moved, failures) = client.await?;
        http_latencies.extend(latencies);
        debited += moved;
        failed += failures;
    }

    // Wait until bank2 credited everything bank1 debited (bank1 heard of each), asking
    // bank1's database for the count only: reading whole ledgers meanwhile would slow
    // bank2 down. Then audit. The auditor reads bank2, then bank1: a credit committed
    // between the two reads, and reported back at once, shows as credited in bank1 and
    // missing in bank2. Such a reading is taken again; a real violation stays.
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let waiting = txbank::progress::spinner("waiting for bank2 to credit everything");
    let stores = [system.store("bank1").await?, system.store("bank2").await?];
    loop {
        let mut in_flight = 0;
        for store in &stores {
            in_flight += store.in_flight().await?.0;
        }
        if in_flight == 0 || Instant::now() > settle_deadline {
            break;
        }
        waiting.set_message(format!("waiting for the banks: {in_flight} transfers in flight"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cpu_at_end = CpuReading::take(system);
    let busy_at_end = BusyReading::take(&http, system).await;
    let auditing = Instant::now();
    let mut audit = system.audit().await?;
    let mut audit_s = auditing.elapsed().as_secs_f64();
    while !audit.is_clean() && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let auditing = Instant::now();
        audit = system.audit().await?;
        audit_s = auditing.elapsed().as_secs_f64();
    }
    waiting.finish_and_clear();
    let peak_memory_mib = system
        .pids()
        .into_iter()
        .filter_map(|(part, pid)| Some((part, peak_memory_kib(pid)? as f64 / 1024.0)))
        .collect();
    let mut sent: HashMap<String, i64> = HashMap::new();
    let mut received = Vec::new();
    for store in &stores {
        sent.extend(store.recorded_times(true, load_started_ms).await?);
        received.extend(store.recorded_times(false, load_started_ms).await?);
    }
    for store in stores {
        store.close().await;
    }
    // (credited at, debit-to-credit ms) of each transfer.
    let credits: Vec<(i64, f64)> = received
        .iter()
        .filter_map(|(tx_no, credited_at)| Some((*credited_at, (credited_at - sent.get(tx_no)?) as f64)))
        .collect();
    let first = received.iter().map(|(_, at)| *at).min().unwrap_or(0);
    let last = received.iter().map(|(_, at)| *at).max().unwrap_or(0);
    let span_s = ((last - first) as f64 / 1000.0).max(0.001);
    let credited_per_s = received.len() as f64 / span_s;
    let ratio = |limit: f64| if limit > 0.0 { credited_per_s / limit } else { 0.0 };
    let cpu_ms_per_transfer = cpu_at_end.ms_per_transfer_since(&cpu_at_start, received.len());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let system_ms: f64 = cpu_ms_per_transfer
        .iter()
        .filter(|(part, _)| **part != LOAD_GENERATOR)
        .map(|(_, ms)| ms)
        .sum();
    let (sqlite_writer_busy, sqlite_writer_ms_per_transfer) =
        busy_at_end.writers_busy_since(&busy_at_start, received.len());
    let cpu_bound_per_s = if system_ms > 0.0 {
        cores as f64 * 1000.0 / system_ms
    } else {
        0.0
    };
    Ok(BenchReport {
        database,
        topology: system.topology(),
        duration_s: args.duration,
        concurrency: args.concurrency,
        requests: debited + failed,
        debited,
        failed,
        credited: received.len(),
        credited_per_s,
        ratio_to_database: ratio(reference.database_commits_per_s),
        ratio_to_broker: ratio(reference.broker_transactional_sends_per_s),
        reference,
        cpu_bound_per_s,
        ratio_to_cpu_bound: ratio(cpu_bound_per_s),
        cores,
        cpu_ms_per_transfer,
        machine_busy: match (cpu_at_start.machine, cpu_at_end.machine) {
            (Some(start), Some(end)) => end.busy_since(&start),
            _ => 0.0,
        },
        group_commit_busy: busy_at_end.queues_busy_since(&busy_at_start),
        sqlite_writer_busy,
        sqlite_writer_ms_per_transfer,
        http_latency_ms: Percentiles::of(http_latencies),
        debit_to_credit_ms: Percentiles::of(credits.iter().map(|(_, ms)| *ms).collect()),
        peak_memory_mib,
        audit_clean: audit.is_clean() && audit.in_flight == 0,
        in_flight_at_end: audit.in_flight,
        audit_s,
        spread_over_accounts: spread_over(args),
        both_ways: args.both_ways,
        batch: args.batch,
        preloaded_transfers: args.preload,
        preloaded_accounts: args.accounts,
        preload_s: 0.0,
        disk_bytes_per_transfer: BTreeMap::new(),
        violations: audit.violations.iter().map(|v| format!("{v:?}")).collect(),
        series: per_second(&credits, first),
    })
}

/// The accounts per bank the load goes over: 0 for the hot account.
fn spread_over(args: &BenchArgs) -> u64 {
    if args.hot {
        0
    } else {
        args.accounts
    }
}

/// How many transfers of a batch request's answer were debited.
async fn debited_in_batch(response: reqwest::Response) -> usize {
    let Ok(answer) = response.json::<serde_json::Value>().await else {
        return 0;
    };
    answer["outcomes"]["debited"].as_u64().unwrap_or(0) as usize
}

/// The transfers one client sends to `to_bank`: 0.01 from the hot source to account 2,
/// or, over `accounts` accounts, from one at random to another at random (xorshift, seeded by
/// the client, so that each run sends the same).
struct Picker {
    state: u64,
    accounts: u64,
    to_bank: &'static str,
}

impl Picker {
    fn new(client: u64, accounts: u64, to_bank: &'static str) -> Picker {
        Picker {
            state: (client + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            accounts,
            to_bank,
        }
    }

    fn account(&mut self) -> String {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        format!("pre-{}", self.state % self.accounts + 1)
    }

    fn next_transfer(&mut self) -> serde_json::Value {
        if self.accounts == 0 {
            return json!({"from": SOURCE_ACCOUNT, "to": "2", "to_bank": self.to_bank, "amount": "0.01"});
        }
        json!({"from": self.account(), "to": self.account(), "to_bank": self.to_bank, "amount": "0.01"})
    }
}

/// CPU time used so far by each part of the system and by this process, and by the
/// whole machine.
struct CpuReading {
    seconds: Vec<(String, f64)>,
    machine: Option<MachineCpu>,
}

impl CpuReading {
    fn take(system: &System) -> CpuReading {
        let mut seconds: Vec<_> = system
            .pids()
            .into_iter()
            .filter_map(|(part, pid)| Some((part, cpu_seconds(pid)?)))
            .collect();
        seconds.extend(cpu_seconds(std::process::id()).map(|own| (LOAD_GENERATOR.to_string(), own)));
        CpuReading {
            seconds,
            machine: MachineCpu::now(),
        }
    }

    /// Milliseconds of CPU time each part used since `earlier`, per transfer of
    /// `transfers` (parts missing from either reading, such as a restarted process, are
    /// left out).
    fn ms_per_transfer_since(&self, earlier: &CpuReading, transfers: usize) -> BTreeMap<String, f64> {
        if transfers == 0 {
            return BTreeMap::new();
        }
        self.seconds
            .iter()
            .filter_map(|(part, now)| {
                let (_, before) = earlier.seconds.iter().find(|(name, _)| name == part)?;
                Some((part.clone(), (now - before).max(0.0) * 1000.0 / transfers as f64))
            })
            .collect()
    }
}

/// The seconds each bank instance had spent where it may be held back, read from each
/// instance's `GET /metrics` (an instance that does not answer is left out): each group
/// commit queue applying, by `instance/queue`, and on SQLite its one writer holding the
/// write turn, by instance.
struct BusyReading {
    queues: BTreeMap<String, f64>,
    writers: BTreeMap<String, f64>,
    at: Instant,
}

impl BusyReading {
    async fn take(http: &reqwest::Client, system: &System) -> BusyReading {
        let (mut queues, mut writers) = (BTreeMap::new(), BTreeMap::new());
        for bank in ["bank1", "bank2"] {
            let names = system.topology().instance_names(bank);
            for (instance, url) in names.iter().zip(system.instance_urls(bank)) {
                let metrics = match http
                    .get(format!("{url}/metrics"))
                    .bearer_auth(system.token())
                    .send()
                    .await
                {
                    Ok(answer) => answer.text().await.unwrap_or_default(),
                    Err(_) => continue,
                };
                let (by_queue, writer) = busy_seconds(&metrics);
                for (queue, seconds) in by_queue {
                    queues.insert(format!("{instance}/{queue}"), seconds);
                }
                if let Some(seconds) = writer {
                    writers.insert(instance.clone(), seconds);
                }
            }
        }
        BusyReading {
            queues,
            writers,
            at: Instant::now(),
        }
    }

    /// The share of the time since `earlier` each queue spent applying.
    fn queues_busy_since(&self, earlier: &BusyReading) -> BTreeMap<String, f64> {
        let elapsed = self.at.duration_since(earlier.at).as_secs_f64().max(0.001);
        growth(&earlier.queues, &self.queues, |seconds| seconds / elapsed)
    }

    /// The share of the time since `earlier` each SQLite writer was busy, and its
    /// milliseconds per transfer of `transfers`.
    fn writers_busy_since(
        &self,
        earlier: &BusyReading,
        transfers: usize,
    ) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
        let elapsed = self.at.duration_since(earlier.at).as_secs_f64().max(0.001);
        let transfers = transfers.max(1) as f64;
        (
            growth(&earlier.writers, &self.writers, |seconds| seconds / elapsed),
            growth(&earlier.writers, &self.writers, |seconds| seconds * 1000.0 / transfers),
        )
    }
}

/// A bank instance's busy seconds in its Prometheus text: each group commit queue's
/// (`txbank_group_commit_busy_seconds_total{queue="…"}`), by queue, and its SQLite
/// writer's (`txbank_sqlite_writer_busy_seconds_total`), if it has one.
fn busy_seconds(metrics: &str) -> (Vec<(String, f64)>, Option<f64>) {
    let (mut queues, mut writer) = (Vec::new(), None);
    for sample in prometheus::parse(metrics) {
        match sample.name.as_str() {
            "txbank_group_commit_busy_seconds_total" => {
                if let Some(queue) = sample.labels.get("queue") {
                    queues.push((queue.clone(), sample.value));
                }
            }
            "txbank_sqlite_writer_busy_seconds_total" => writer = Some(sample.value),
            _ => {}
        }
    }
    (queues, writer)
}

/// `scale` of how much each counter in `now` grew since `then` (counters in one only
/// are left out).
fn growth(
    then: &BTreeMap<String, f64>,
    now: &BTreeMap<String, f64>,
    scale: impl Fn(f64) -> f64,
) -> BTreeMap<String, f64> {
    now.iter()
        .filter_map(|(name, now)| Some((name.clone(), scale(now - then.get(name)?))))
        .collect()
}

/// Groups `credits` by the second (from `first`) they were credited in.
fn per_second(credits: &[(i64, f64)], first: i64) -> Vec<SecondPoint> {
    let mut seconds: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (at, latency) in credits {
        seconds.entry((at - first) / 1000).or_default().push(*latency);
    }
    seconds
        .into_iter()
        .map(|(second, latencies)| {
            let credited = latencies.len();
            let p = Percentiles::of(latencies);
            SecondPoint {
                second,
                credited,
                p50_ms: p.p50,
                p99_ms: p.p99,
            }
        })
        .collect()
}

/// The chart of a report: throughput against the two limits, and latency.
fn report_chart(report: &BenchReport) -> crate::chart::Chart {
    crate::chart::Chart {
        title: format!(
            "txbank bench: {} clients, {} s, {} ({:.0} credited/s)",
            report.concurrency, report.duration_s, report.database, report.credited_per_s
        ),
        seconds: report.series.iter().map(|p| p.second as f64).collect(),
        throughput: report.series.iter().map(|p| p.credited as f64).collect(),
        limits: vec![
            ("(a) database raw commits", report.reference.database_commits_per_s),
            (
                "(b) broker raw sends",
                report.reference.broker_transactional_sends_per_s,
            ),
            ("(c) CPU bound", report.cpu_bound_per_s),
        ],
        p50_ms: report.series.iter().map(|p| p.p50_ms).collect(),
        p99_ms: report.series.iter().map(|p| p.p99_ms).collect(),
    }
}

fn print_report(report: &BenchReport) {
    match (report.spread_over_accounts, report.both_ways) {
        (0, _) => println!("load                  one hot account to one, bank1 to bank2"),
        (accounts, false) => println!("load                  over {accounts} accounts per bank, bank1 to bank2"),
        (accounts, true) => println!("load                  over {accounts} accounts per bank, both ways"),
    }
    if report.batch > 0 {
        println!(
            "                      in batches of {} (POST /transfers/batch)",
            report.batch
        );
    }
    if report.preloaded_transfers > 0 || report.preloaded_accounts > 0 {
        println!(
            "books preloaded       {} settled transfers, {} accounts per bank, in {:.0} s",
            report.preloaded_transfers, report.preloaded_accounts, report.preload_s
        );
    }
    println!(
        "{} s at concurrency {} on {}: {} requests, {} debited, {} failed",
        report.duration_s, report.concurrency, report.database, report.requests, report.debited, report.failed
    );
    let credited_in = if report.both_ways { "both banks" } else { "bank2" };
    println!(
        "credited in {credited_in:<10}{} ({:.0}/s sustained)",
        report.credited, report.credited_per_s
    );
    println!(
        "(a) database raw      {:.0} commits/s   end-to-end / (a) = {:.2}",
        report.reference.database_commits_per_s, report.ratio_to_database
    );
    println!(
        "(b) broker raw        {:.0} transactional sends/s   end-to-end / (b) = {:.2}",
        report.reference.broker_transactional_sends_per_s, report.ratio_to_broker
    );
    let parts: Vec<String> = report
        .cpu_ms_per_transfer
        .iter()
        .filter(|(part, _)| **part != LOAD_GENERATOR)
        .map(|(part, ms)| format!("{part} {ms:.3}"))
        .collect();
    println!(
        "CPU per transfer      {} ms; {LOAD_GENERATOR} {:.3} ms",
        parts.join(", "),
        report.cpu_ms_per_transfer.get(LOAD_GENERATOR).unwrap_or(&0.0)
    );
    println!(
        "(c) CPU bound         {:.0} transfers/s on {} cores (machine {:.0} % busy)   end-to-end / (c) = {:.2}",
        report.cpu_bound_per_s,
        report.cores,
        report.machine_busy * 100.0,
        report.ratio_to_cpu_bound
    );
    let busy: Vec<String> = report
        .group_commit_busy
        .iter()
        .filter(|(_, share)| **share >= 0.005)
        .map(|(queue, share)| format!("{queue} {:.0} %", share * 100.0))
        .collect();
    println!("group commits busy    {}", busy.join(", "));
    if !report.sqlite_writer_busy.is_empty() {
        let writers: Vec<String> = report
            .sqlite_writer_busy
            .iter()
            .map(|(instance, share)| {
                let ms = report.sqlite_writer_ms_per_transfer.get(instance).unwrap_or(&0.0);
                format!("{instance} {:.0} % ({ms:.3} ms a transfer)", share * 100.0)
            })
            .collect();
        println!("SQLite writer busy    {}", writers.join(", "));
    }
    let show = |p: &Percentiles| format!("p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms", p.p50, p.p95, p.p99);
    println!("HTTP latency          {}", show(&report.http_latency_ms));
    println!("debit → credit        {}", show(&report.debit_to_credit_ms));
    for (part, mib) in &report.peak_memory_mib {
        println!("peak memory {part:<9} {mib:.1} MiB");
    }
    for (bank, bytes) in &report.disk_bytes_per_transfer {
        println!("disk {bank:<16} {bytes:.0} bytes per transfer held");
    }
    println!(
        "audit                 {} ({:.1} s)",
        if report.audit_clean {
            "every transfer credited exactly once"
        } else {
            "VIOLATIONS"
        },
        report.audit_s
    );
    if report.in_flight_at_end > 0 {
        println!("  {} transfers still in flight after the wait", report.in_flight_at_end);
    }
    for violation in report.violations.iter().take(10) {
        println!("  {violation}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_seconds_are_read_by_queue_and_for_the_sqlite_writer_from_a_banks_metrics() {
        let metrics = "# TYPE txbank_group_commit_busy_seconds_total counter\n\
            txbank_group_commit_busy_seconds_total{bank=\"bank1\",queue=\"debits\"} 0\n\
            txbank_group_commit_busy_seconds_total{bank=\"bank1\",queue=\"deliveries\"} 12.5\n\
            txbank_group_commit_batches_total{bank=\"bank1\",queue=\"deliveries\"} 40\n\
            txbank_sqlite_writer_busy_seconds_total{bank=\"bank1\"} 7.25\n\
            txbank_sqlite_writer_wait_seconds_total{bank=\"bank1\"} 30\n";

        let (queues, writer) = busy_seconds(metrics);

        assert_eq!(queues, [("debits".to_string(), 0.0), ("deliveries".to_string(), 12.5)]);
        assert_eq!(writer, Some(7.25));
        assert_eq!(busy_seconds(metrics.split("txbank_sqlite").next().unwrap()).1, None);
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99), (51.0, 95.0, 99.0));
        assert_eq!(Percentiles::of(Vec::new()).p99, 0.0);
    }

    #[test]
    fn credits_are_grouped_by_the_second_they_happened_in() {
        let credits = [(1_000, 5.0), (1_999, 7.0), (3_100, 9.0)];
        let series = per_second(&credits, 1_000);
        let seconds: Vec<(i64, usize)> = series.iter().map(|p| (p.second, p.credited)).collect();
        assert_eq!(seconds, [(0, 2), (2, 1)]);
        assert_eq!(series[0].p99_ms, 7.0);
    }
}
