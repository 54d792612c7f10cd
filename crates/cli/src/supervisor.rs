//! Starting the system's parts as processes of this binary: what `up` and the lab's
//! runs share.

use std::path::Path;
use std::process::Stdio;

use anyhow::Result;
use tokio::process::Command;

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
