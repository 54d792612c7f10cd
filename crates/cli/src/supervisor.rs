//! Starting the system's parts as processes of this binary, and the one way every
//! part learns it should stop: what `up`, the parts and the lab's runs share.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// This binary again, with its output going to `logs/NAME.log`, in its own process
/// group (so Ctrl-C reaches only `up`, which stops the parts in order), and killed if
/// `up` dies.
pub fn part_command(logs: &Path, name: &str) -> Result<Command> {
    part_command_via(logs, name, &[])
}

/// [`part_command`] run through `wrapper` (a program and its first arguments, such as
/// `ip netns exec NAME`), which then runs this binary with the part's arguments.
pub fn part_command_via(logs: &Path, name: &str, wrapper: &[String]) -> Result<Command> {
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(command)
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment [`StopRequest::listen`] returns.
pub struct StopRequest {
    interrupt: Signal,
    terminate: Signal,
}

impl StopRequest {
    /// Catches both signals from now on (inside a Tokio runtime).
    pub fn listen() -> Result<StopRequest> {
        Ok(StopRequest {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM after it is first polled: how a bank and the
/// dashboard know to drain.
pub async fn stop_requested() {
    match StopRequest::listen() {
        Ok(mut stop) => stop.requested().await,
        Err(error) => {
            tracing::error!(%error, "stop this process with SIGKILL");
            std::future::pending().await
        }
    }
}
