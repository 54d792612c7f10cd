//! `txbank up`: the whole system on loopback and its dashboard, each part its own process (this binary
//! again), started in order, watched, and stopped in reverse order on Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::cli::UpArgs;
use crate::config::{create_secret_file, API_TOKEN_FILE, KEYS_DIR};
use crate::listen;
use crate::supervisor::{part_command, StopRequest};

/// How long a part may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a part may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One running part.
struct Part {
    name: &'static str,
    child: Child,
}

/// Starts the name server, the broker, bank1, bank2 and the dashboard; runs until
/// Ctrl-C (or SIGTERM) or until a part dies, then stops the rest. Ctrl-C during
/// start-up stops what started so far.
pub fn run(args: &UpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // Listening from the start: a shell that starts `up` in the background leaves
        // SIGINT ignored until a handler is installed.
        let mut stop = StopRequest::listen()?;
        let mut parts = Vec::new();
        let outcome = tokio::select! {
            started = start_all(args, &mut parts) => match started {
                Ok(()) => {
                    print_summary(args);
                    watch(&mut parts, &mut stop).await
                }
                Err(error) => Err(error),
            },
            () = stop.requested() => {
                println!("stopping...");
                Ok(())
            }
        };
        stop_all(parts).await;
        outcome
    })
}

/// The sockets of the parts whose ports lie in the ephemeral range, bound before any
/// part starts (see [`crate::listen`]); the name server's and broker's ports are only
/// checked (the RocketMQ crates bind their own).
struct Sockets {
    bank1: std::net::TcpListener,
    bank2: std::net::TcpListener,
    dashboard: std::net::TcpListener,
}

impl Sockets {
    fn claim(args: &UpArgs) -> Result<Sockets> {
        let broker = |port| SocketAddr::new(args.broker.ip(), port);
        let (fast, ha) = (args.broker.port() - 2, args.broker.port() + 1);
        for addr in [args.namesrv, broker(fast), args.broker, broker(ha)] {
            drop(listen::bind(addr)?);
        }
        Ok(Sockets {
            bank1: listen::bind(args.bank1)?,
            bank2: listen::bind(args.bank2)?,
            dashboard: listen::bind(args.dashboard)?,
        })
    }
}

async fn start_all(args: &UpArgs, parts: &mut Vec<Part>) -> Result<()> {
    let sockets = Sockets::claim(args)?;
    let data = &args.data_dir;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Each bank's key pair, the public keys they trust, and the operators' API token,
    // made once and kept.
    crate::keys::ensure_bank_keys(&data.join(KEYS_DIR), &["bank1", "bank2"])?;
    create_secret_file(&data.join(API_TOKEN_FILE))?;
    let namesrv = args.namesrv.to_string();
    let rocketmq_home = data.join("rocketmq");

    let mut namesrv_cmd = part_command(&logs, "namesrv")?;
    namesrv_cmd
        .args(["namesrv", "--listen", &namesrv, "--home"])
        .arg(&rocketmq_home);
    parts.push(spawn("namesrv", namesrv_cmd)?);
    wait_listening("namesrv", args.namesrv, parts, &logs).await?;

    let mut broker_cmd = part_command(&logs, "broker")?;
    broker_cmd
        .args([
            "broker",
            "--listen",
            &args.broker.to_string(),
            "--namesrv-addr",
            &namesrv,
            "--store",
        ])
        .arg(rocketmq_home.join("store"));
    parts.push(spawn("broker", broker_cmd)?);
    wait_listening("broker", args.broker, parts, &logs).await?;

    for (name, listen, socket) in [
        ("bank1", args.bank1, sockets.bank1),
        ("bank2", args.bank2, sockets.bank2),
    ] {
        let mut bank_cmd = part_command(&logs, name)?;
        bank_cmd
            .args([
                "bank",
                "--preset",
                name,
                "--listen",
                &listen.to_string(),
                "--namesrv-addr",
                &namesrv,
                "--data-dir",
            ])
            .arg(data);
        listen::hand_down(&mut bank_cmd, &socket);
        parts.push(spawn(name, bank_cmd)?);
        drop(socket);
        wait_listening(name, listen, parts, &logs).await?;
    }

    let mut dashboard_cmd = part_command(&logs, "dashboard")?;
    dashboard_cmd
        .args(["dashboard", "--listen", &args.dashboard.to_string()])
        .args(["--bank", &format!("bank1=http://{}", args.bank1)])
        .args(["--bank", &format!("bank2=http://{}", args.bank2)])
        .arg("--token-file")
        .arg(data.join(API_TOKEN_FILE));
    listen::hand_down(&mut dashboard_cmd, &sockets.dashboard);
    parts.push(spawn("dashboard", dashboard_cmd)?);
    drop(sockets.dashboard);
    wait_listening("dashboard", args.dashboard, parts, &logs).await?;
    Ok(())
}

fn spawn(name: &'static str, mut command: Command) -> Result<Part> {
    let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
    Ok(Part { name, child })
}

/// Waits until `name` serves on `addr` (an HTTP answer from a bank or the dashboard,
/// whose socket listens before they serve; a connection for the others), failing early
/// if any part has exited.
async fn wait_listening(name: &str, addr: SocketAddr, parts: &mut [Part], logs: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    loop {
        let serving = match name {
            "namesrv" | "broker" => tokio::net::TcpStream::connect(addr).await.is_ok(),
            _ => http.get(format!("http://{addr}/readyz")).send().await.is_ok(),
        };
        if serving {
            return Ok(());
        }
        for part in parts.iter_mut() {
            if let Some(status) = part.child.try_wait()? {
                bail!(
                    "{} exited ({status}) while {name} was starting; see {}",
                    part.name,
                    logs.join(format!("{}.log", part.name)).display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not listen on {addr} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_summary(args: &UpArgs) {
    println!("txbank is up (data in {}):", args.data_dir.display());
    println!("  name server  {}", args.namesrv);
    println!("  broker       {}", args.broker);
    println!("  bank1        http://{}   (Zhang San, account 1)", args.bank1);
    println!("  bank2        http://{}   (Li Si, account 2)", args.bank2);
    let token = args.data_dir.join(API_TOKEN_FILE);
    println!("  dashboard    http://{}   (log in with the API token)", args.dashboard);
    println!("  logs         {}", args.data_dir.join("logs").display());
    println!("  API token    {} (Authorization: Bearer ...)", token.display());
    println!(
        "Try: curl -H \"Authorization: Bearer $(cat {})\" 'http://{}/transfer?accountNo=1&amount=100'",
        token.display(),
        args.bank1
    );
    println!("Ctrl-C stops everything.");
}

/// Runs until Ctrl-C/SIGTERM (Ok) or until a part exits by itself (Err).
async fn watch(parts: &mut [Part], stop: &mut StopRequest) -> Result<()> {
    loop {
        tokio::select! {
            () = stop.requested() => {
                println!("stopping...");
                return Ok(());
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for part in parts.iter_mut() {
                    if let Some(status) = part.child.try_wait()? {
                        bail!("{} exited ({status}); stopping the rest", part.name);
                    }
                }
            }
        }
    }
}

/// Stops the parts in reverse start order: banks drain before the broker goes.
async fn stop_all(parts: Vec<Part>) {
    for mut part in parts.into_iter().rev() {
        if let Some(pid) = part.child.id() {
            // SAFETY: sending a signal to our own child has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(STOP_TIMEOUT, part.child.wait()).await {
            Ok(_) => println!("  {} stopped", part.name),
            Err(_) => {
                let _ = part.child.kill().await;
                println!("  {} killed after {STOP_TIMEOUT:?}", part.name);
            }
        }
    }
}
