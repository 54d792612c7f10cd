//! `txbank bench`: the real system (name server, broker, bank1, bank2 as processes,
//! SQLite with durable commits) under transfers from bank1 to bank2 through the HTTP API
//! at a chosen concurrency for a chosen time. It reports the throughput credited in
//! bank2, HTTP and debit-to-credit latencies, and each process's peak resident memory,
//! then checks with the auditor that every transfer was credited exactly once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::chaos::{run_folder, System};

/// Options of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Folder for the run's data and logs (default: a new one under the temp folder,
    /// removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the run measured.
#[derive(Debug, Serialize)]
struct BenchReport {
    duration_s: u64,
    concurrency: usize,
    requests: usize,
    /// Requests answered 201 (debited and committed).
    debited: usize,
    /// Requests answered otherwise (202 pending, 503, cut off).
    failed: usize,
    credited: usize,
    credited_per_s: f64,
    http_latency_ms: Percentiles,
    debit_to_credit_ms: Percentiles,
    peak_memory_mib: HashMap<&'static str, f64>,
    audit_clean: bool,
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

/// Runs the benchmark and prints its report; fails when the books do not balance.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.duration == 0 || args.concurrency == 0 {
        bail!("--duration and --concurrency must be at least 1");
    }
    let dir = run_folder(args.data_dir.as_deref(), "bench")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let mut system = System::start(&dir, 1).await?;
        let outcome = measure(&system, args).await;
        system.stop_all().await;
        outcome
    })?;
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

async fn measure(system: &System, args: &BenchArgs) -> Result<BenchReport> {
    let url = format!("{}/transfers", system.url("bank1a").context("no bank1")?);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let progress = crate::progress::bar(args.duration, "s");
    let debited_so_far = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.clone(), system.token().to_string());
            let debited_so_far = Arc::clone(&debited_so_far);
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let sent = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"from": "1", "to": "2", "amount": "0.01"}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status().as_u16() == 201 => {
                            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                            debited_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
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
    let (mut http_latencies, mut failed) = (Vec::new(), 0);
    for client in clients {
        let (latencies, failures) = client.await?;
        http_latencies.extend(latencies);
        failed += failures;
    }
    let debited = http_latencies.len();

    // Wait until bank2 credited everything bank1 debited.
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let waiting = crate::progress::spinner("waiting for bank2 to credit everything");
    let mut audit = system.audit().await?;
    while audit.in_flight > 0 && Instant::now() < settle_deadline {
        waiting.set_message(format!("waiting for bank2: {} transfers in flight", audit.in_flight));
        tokio::time::sleep(Duration::from_millis(250)).await;
        audit = system.audit().await?;
    }
    waiting.finish_and_clear();
    let (bank1, bank2) = (system.store("bank1").await?, system.store("bank2").await?);
    let sent: HashMap<String, i64> = bank1.recorded_times(true).await?.into_iter().collect();
    let received = bank2.recorded_times(false).await?;
    bank1.close().await;
    bank2.close().await;
    let debit_to_credit: Vec<f64> = received
        .iter()
        .filter_map(|(tx_no, credited_at)| Some((credited_at - sent.get(tx_no)?) as f64))
        .collect();
    let first = received.iter().map(|(_, at)| *at).min().unwrap_or(0);
    let last = received.iter().map(|(_, at)| *at).max().unwrap_or(0);
    let span_s = ((last - first) as f64 / 1000.0).max(0.001);
    Ok(BenchReport {
        duration_s: args.duration,
        concurrency: args.concurrency,
        requests: debited + failed,
        debited,
        failed,
        credited: received.len(),
        credited_per_s: received.len() as f64 / span_s,
        http_latency_ms: Percentiles::of(http_latencies),
        debit_to_credit_ms: Percentiles::of(debit_to_credit),
        peak_memory_mib: system
            .peak_memory_kib()
            .into_iter()
            .map(|(part, kib)| (part, kib as f64 / 1024.0))
            .collect(),
        audit_clean: audit.is_clean() && audit.in_flight == 0,
    })
}

fn print_report(report: &BenchReport) {
    println!(
        "{} s at concurrency {}: {} requests, {} debited, {} failed",
        report.duration_s, report.concurrency, report.requests, report.debited, report.failed
    );
    println!(
        "credited in bank2     {} ({:.0}/s sustained)",
        report.credited, report.credited_per_s
    );
    let show = |p: &Percentiles| format!("p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms", p.p50, p.p95, p.p99);
    println!("HTTP latency          {}", show(&report.http_latency_ms));
    println!("debit → credit        {}", show(&report.debit_to_credit_ms));
    let mut memory: Vec<_> = report.peak_memory_mib.iter().collect();
    memory.sort_by_key(|(part, _)| **part);
    for (part, mib) in memory {
        println!("peak memory {part:<9} {mib:.1} MiB");
    }
    println!(
        "audit                 {}",
        if report.audit_clean {
            "every transfer credited exactly once"
        } else {
            "VIOLATIONS"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99), (51.0, 95.0, 99.0));
        assert_eq!(Percentiles::of(Vec::new()).p99, 0.0);
    }
}
