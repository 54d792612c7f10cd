//! `txbank up`: the whole system on loopback and its dashboard, each part its own process (this binary
//! again), started in order, watched, and stopped in reverse order on Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::UpArgs;
use crate::config::{create_secret_file, API_TOKEN_FILE, KEYS_DIR};
use crate::listen;
use crate::supervisor::{log_file, part_command, Ready, StopRequest, Stopped, Supervisor};

/// How long a part may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a part may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the name server, the broker, bank1, bank2 and the dashboard; runs until
/// Ctrl-C (or SIGTERM) or until a part dies, then stops the rest. Ctrl-C during
/// start-up stops what started so far.
pub fn run(args: &UpArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        // Listening from the start: a shell that starts `up` in the background leaves
        // SIGINT ignored until a handler is installed.
        let mut stop = StopRequest::listen()?;
        let mut parts = Supervisor::new(START_TIMEOUT);
        let outcome = tokio::select! {
            started = start_all(args, &mut parts) => match started {
                Ok(()) => {
                    print_summary(args);
                    tokio::select! {
                        () = stop.requested() => Ok(()),
                        exited = parts.first_exit() => match exited {
                            Ok((name, status)) => Err(anyhow::anyhow!("{name} exited ({status}); stopping the rest")),
                            Err(error) => Err(error),
                        },
                    }
                }
                Err(error) => Err(error),
            },
            () = stop.requested() => Ok(()),
        };
        println!("stopping...");
        parts
            .stop_all(STOP_TIMEOUT, |name, how| match how {
                Stopped::Cleanly => println!("  {name} stopped"),
                Stopped::Killed => println!("  {name} killed after {STOP_TIMEOUT:?}"),
            })
            .await;
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

async fn start_all(args: &UpArgs, parts: &mut Supervisor) -> Result<()> {
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
    let log = log_file(&logs, "namesrv");
    parts
        .start("namesrv", namesrv_cmd, log, Ready::Accepts(args.namesrv))
        .await?;

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
    let log = log_file(&logs, "broker");
    parts
        .start("broker", broker_cmd, log, Ready::Accepts(args.broker))
        .await?;

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
        parts
            .start(name, bank_cmd, log_file(&logs, name), Ready::Serves(listen))
            .await?;
        drop(socket);
    }

    let mut dashboard_cmd = part_command(&logs, "dashboard")?;
    dashboard_cmd
        .args(["dashboard", "--listen", &args.dashboard.to_string()])
        .args(["--bank", &format!("bank1=http://{}", args.bank1)])
        .args(["--bank", &format!("bank2=http://{}", args.bank2)])
        .arg("--token-file")
        .arg(data.join(API_TOKEN_FILE));
    listen::hand_down(&mut dashboard_cmd, &sockets.dashboard);
    let log = log_file(&logs, "dashboard");
    parts
        .start("dashboard", dashboard_cmd, log, Ready::Serves(args.dashboard))
        .await
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
