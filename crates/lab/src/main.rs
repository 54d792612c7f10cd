//! `txbank-lab`: txbank's test and measurement lab, apart from the product. It runs
//! seeded chaos and the benchmark against the real system, and every command of
//! `txbank` with its fault points armed (`TXBANK_CRASH_AT`, `TXBANK_FAIL_AT`,
//! `TXBANK_PAUSE_AT`): the parts of its runs and of the fault tests are processes of
//! this binary.

// RocketMQ's client futures are deeply nested.
#![recursion_limit = "512"]

mod bench;
mod chaos;
mod chart;
mod netns;
mod process_stats;
mod system;

use anyhow::Result;
use clap::{Parser, Subcommand};
use txbank::cli::LogFormat;

/// txbank-lab: seeded chaos, the benchmark, and txbank's commands with fault points armed.
#[derive(Debug, Parser)]
#[command(name = "txbank-lab", version, about)]
struct LabCli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TXBANK_LOG_FORMAT")]
    log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Run the system as separate processes, transfer in both directions while faults
    /// strike (kills, pauses, network cuts and delays, database outages, the broker's
    /// store lost), then check that no money was lost or duplicated.
    Chaos(chaos::ChaosArgs),
    /// Measure the real system under load: throughput credited, latencies, memory.
    Bench(bench::BenchArgs),
    /// Any command of `txbank`, with the fault points the environment names armed.
    #[command(flatten)]
    Product(txbank::cli::Command),
}

fn main() -> Result<()> {
    txbank::limit_malloc_arenas();
    txbank_storage::faults::arm_from_env();
    let cli = LabCli::parse();
    match cli.command {
        LabCommand::Chaos(args) => {
            txbank::init_logging(cli.log_format, txbank::DEFAULT_LOG_FILTER);
            chaos::run(&args)
        }
        LabCommand::Bench(args) => {
            txbank::init_logging(cli.log_format, txbank::DEFAULT_LOG_FILTER);
            bench::run(&args)
        }
        LabCommand::Product(command) => txbank::run(cli.log_format, command),
    }
}
