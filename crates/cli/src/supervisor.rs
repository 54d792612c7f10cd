//! Starting the system's parts as processes, waiting until each is ready, watching them
//! and stopping them in reverse order; and the one way every part learns it should stop.
//! `up`, the lab's runs and the system tests all start their parts here.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How often a waiting supervisor looks at its parts again.
const POLL: Duration = Duration::from_millis(100);

/// This binary again as the part `name`, its output going to `logs/NAME.log`.
pub fn part_command(logs: &Path, name: &str) -> Result<Command> {
    part_command_via(logs, name, &[])
}

/// [`part_command`] run through `wrapper` (a program and its first arguments, such as
/// `ip netns exec NAME`), which then runs this binary with the part's arguments.
pub fn part_command_via(logs: &Path, name: &str, wrapper: &[String]) -> Result<Command> {
    program_command(&std::env::current_exe()?, &log_file(logs, name), wrapper)
}

/// Where the part `name` started with `logs` writes its output.
pub fn log_file(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{name}.log"))
}

/// `program` (through `wrapper`, when given) with its output appended to `log`, in its
/// own process group (so Ctrl-C reaches only the supervisor, which stops the parts in
/// order), and sent SIGTERM when the thread that started it ends.
pub fn program_command(program: &Path, log: &Path, wrapper: &[String]) -> Result<Command> {
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut command = match wrapper.split_first() {
        Some((wrapping, args)) => {
            let mut command = Command::new(wrapping);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output))
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

/// How a started part shows that it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Its port accepts connections (a name server, a broker).
    Accepts(SocketAddr),
    /// It serves HTTP: `GET /healthz` answers 200 (a bank, the dashboard; a proxy in
    /// front of a bank accepts connections before the bank serves).
    Serves(SocketAddr),
    /// `GET /readyz` answers 200: a bank whose database and broker answer.
    ReachesItsBroker(SocketAddr),
}

impl Ready {
    /// True when the part is ready now, asking over `http`.
    async fn now(self, http: &reqwest::Client) -> bool {
        let (addr, path) = match self {
            Ready::Accepts(addr) => return tokio::net::TcpStream::connect(addr).await.is_ok(),
            Ready::Serves(addr) => (addr, "healthz"),
            Ready::ReachesItsBroker(addr) => (addr, "readyz"),
        };
        let answer = http.get(format!("http://{addr}/{path}")).send().await;
        answer.is_ok_and(|answer| answer.status().is_success())
    }
}

/// One running part: a child process, its name and its log.
pub struct Part {
    name: String,
    log: PathBuf,
    child: Child,
}

impl Part {
    /// Starts `command` as the part `name`, whose output goes to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Part> {
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Part {
            name: name.to_string(),
            log,
            child,
        })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log, or why they cannot be read.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(error) => format!("({error})"),
        }
    }

    /// How it ended, once it has.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("cannot see whether {} runs", self.name))
    }

    /// Sends it `signal` (SIGSTOP, SIGCONT, SIGTERM...), unless it has ended.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) only sends a signal to our own child, not yet reaped.
            unsafe {
                libc::kill(self.child.id() as i32, signal);
            }
        }
    }

    /// Waits until it ends by itself.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("cannot wait for {}", self.name))
    }

    /// SIGKILL, as a crash, and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and up to `within` for it to finish what it began; SIGKILL after that.
    pub async fn stop(&mut self, within: Duration) -> Stopped {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !matches!(self.exited(), Ok(None)) {
                return Stopped::Cleanly;
            }
            tokio::time::sleep(POLL).await;
        }
        self.kill();
        Stopped::Killed
    }

    /// Waits until it is `ready`, at most `within`. Fails with the end of its log when
    /// it ends first or is not ready in time (killing it then), or when one of
    /// `others` ends meanwhile.
    pub async fn wait_ready(&mut self, ready: Ready, within: Duration, others: &mut [Part]) -> Result<()> {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        while !ready.now(&http).await {
            for other in others.iter_mut() {
                if let Some(status) = other.exited()? {
                    bail!(
                        "{} exited ({status}) while {} was starting; the end of {}:\n{}",
                        other.name,
                        self.name,
                        other.log.display(),
                        other.log_tail(30)
                    );
                }
            }
            let ended = self.exited()?;
            if ended.is_some() || Instant::now() > deadline {
                let what = match ended {
                    Some(status) => format!("{} ended ({status}) before it was ready", self.name),
                    None => format!("{} was not ready within {within:?}", self.name),
                };
                self.kill();
                bail!("{what}; the end of {}:\n{}", self.log.display(), self.log_tail(30));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

impl Drop for Part {
    /// A part never outlives whoever started it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// How a part stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited after SIGTERM.
    Cleanly,
    /// It was killed after its time to stop ran out.
    Killed,
}

/// Parts started one after another, each once the ones before it are ready, and
/// stopped in reverse order: the banks drain while their broker still runs.
pub struct Supervisor {
    parts: Vec<Part>,
    start_within: Duration,
}

impl Supervisor {
    /// No parts yet; each may take up to `start_within` to become ready.
    pub fn new(start_within: Duration) -> Supervisor {
        Supervisor {
            parts: Vec::new(),
            start_within,
        }
    }

    /// Starts `command` as part `name` (its output in `log`) and waits until it is
    /// `ready`; fails if it or any part started before it ends first.
    pub async fn start(&mut self, name: &str, command: Command, log: PathBuf, ready: Ready) -> Result<()> {
        let mut part = Part::spawn(name, command, log)?;
        part.wait_ready(ready, self.start_within, &mut self.parts).await?;
        self.parts.push(part);
        Ok(())
    }

    /// Starts part `name` again (or for the first time), as [`Supervisor::start`] does,
    /// minding only this part while it starts: the others may be down on purpose, as in
    /// the lab's runs. A process of that name still running is killed first.
    pub async fn restart(&mut self, name: &str, command: Command, log: PathBuf, ready: Ready) -> Result<()> {
        self.kill(name);
        let mut part = Part::spawn(name, command, log)?;
        part.wait_ready(ready, self.start_within, &mut []).await?;
        self.parts.push(part);
        Ok(())
    }

    /// The running part `name`.
    pub fn part(&mut self, name: &str) -> Option<&mut Part> {
        self.parts.iter_mut().find(|part| part.name == name)
    }

    /// Each running part's name and process id, in start order.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.parts.iter().map(|part| (part.name.clone(), part.id())).collect()
    }

    /// Resolves when a part ends by itself: its name and how it ended.
    pub async fn first_exit(&mut self) -> Result<(String, ExitStatus)> {
        loop {
            for part in &mut self.parts {
                if let Some(status) = part.exited()? {
                    return Ok((part.name.clone(), status));
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills part `name` (SIGKILL, as a crash) and forgets it, if it runs.
    pub fn kill(&mut self, name: &str) {
        if let Some(index) = self.parts.iter().position(|part| part.name == name) {
            self.parts.remove(index).kill();
        }
    }

    /// Kills every part at once.
    pub fn kill_all(&mut self) {
        for mut part in self.parts.drain(..) {
            part.kill();
        }
    }

    /// Stops the parts in reverse start order, each given `within` to finish what it
    /// began; tells `stopped` how each went.
    pub async fn stop_all(&mut self, within: Duration, mut stopped: impl FnMut(&str, Stopped)) {
        while let Some(mut part) = self.parts.pop() {
            let how = part.stop(within).await;
            stopped(&part.name, how);
        }
    }
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
