//! The `txbank` binary: parses the command line and runs the command.

use anyhow::Result;
use clap::Parser;
use txbank::cli::Cli;

fn main() -> Result<()> {
    txbank::limit_malloc_arenas();
    let cli = Cli::parse();
    txbank::run(cli.log_format, cli.command)
}
