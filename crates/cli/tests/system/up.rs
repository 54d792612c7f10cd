//! `txbank up` starts the whole system on loopback only, the client commands talk to it,
//! Ctrl-C stops it cleanly, start-up included, a taken port is named with its holder,
//! a second `up` resumes from the same data, and an idle system's logs are quiet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{eventually, up_args, Up};

/// Runs a client command with the API token `up` wrote under `data`.
fn txbank(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args(args)
        .env("TXBANK_API_TOKEN_FILE", data.join("api-token"))
        .output()
        .expect("run txbank")
}

fn balance(data: &Path, url: &str, account: &str) -> String {
    let out = txbank(data, &["balance", "--account", account, "--url", url]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `::1` as `/proc/net/tcp6` writes it.
const IPV6_LOOPBACK: &str = "00000000000000000000000001000000:";

/// The local addresses (as `/proc/net/tcp{,6}` write them, `0100007F:2694` for
/// 127.0.0.1:9876) of every TCP socket that `root` or a process it started listens on.
fn listening_addresses(root: u32) -> Vec<String> {
    let mut pids = vec![root];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let parent = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1));
        if parent == Some(root.to_string().as_str()) {
            pids.push(pid);
        }
    }
    let mut sockets = Vec::new();
    for pid in pids {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if let Some(inode) = target.to_string_lossy().strip_prefix("socket:[") {
                sockets.push(inode.trim_end_matches(']').to_string());
            }
        }
    }
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Local address, state (0A: LISTEN) and inode.
            if fields.len() > 9 && fields[3] == "0A" && sockets.iter().any(|inode| inode == fields[9]) {
                listening.push(fields[1].to_string());
            }
        }
    }
    listening
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_everything_stops_cleanly_and_resumes_from_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (args, urls) = up_args(&dir.path().join("data"));
    let (bank1_url, bank2_url) = (urls.bank1, urls.bank2);

    let data = dir.path().join("data");
    let up = Up::start(&args, dir.path().join("up1.out")).await;
    let unauthenticated = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args([
            "balance",
            "--account",
            "1",
            "--url",
            &bank1_url,
            "--token-file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!unauthenticated.status.success(), "no token, no balance");
    let paid = txbank(
        &data,
        &[
            "transfer", "--from", "1", "--to", "2", "--amount", "100", "--url", &bank1_url,
        ],
    );
    assert!(paid.status.success(), "{}", String::from_utf8_lossy(&paid.stdout));
    assert!(String::from_utf8_lossy(&paid.stdout).contains("\"debited\""));
    let refused = txbank(
        &data,
        &[
            "transfer", "--from", "1", "--to", "2", "--amount", "0", "--url", &bank1_url,
        ],
    );
    assert!(!refused.status.success(), "a refused transfer must fail the command");
    assert!(eventually(|| async { balance(&data, &bank2_url, "2").contains("\"100.00\"") }).await);
    let listening = listening_addresses(up.pid());
    assert!(
        listening.len() >= 5,
        "name server, broker, banks, dashboard: {listening:?}"
    );
    let loopback = |address: &String| address.starts_with("0100007F:") || address.starts_with(IPV6_LOOPBACK);
    assert!(
        listening.iter().all(loopback),
        "up listens beyond loopback: {listening:?}"
    );

    let (clean, printed) = up.interrupt();
    assert!(clean, "up did not exit cleanly:\n{printed}");
    for part in [
        "dashboard stopped",
        "bank2 stopped",
        "bank1 stopped",
        "broker stopped",
        "namesrv stopped",
    ] {
        assert!(printed.contains(part), "missing {part:?} in:\n{printed}");
    }

    let up = Up::start(&args, dir.path().join("up2.out")).await;
    assert!(balance(&data, &bank1_url, "1").contains("\"9900.00\""));
    assert!(balance(&data, &bank2_url, "2").contains("\"100.00\""));
    up.interrupt();
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let child = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let parent = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u32>()
                .ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_start_up_stops_what_started_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (args, _) = up_args(&data);
    let up = Up::spawn(&args, dir.path().join("up.out"));
    // Interrupted as soon as its first part runs, long before the banks are ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut parts = children_of(up.pid());
    while parts.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        parts = children_of(up.pid());
    }
    assert!(!parts.is_empty(), "up started no part");

    let (clean, printed) = up.interrupt();
    assert!(clean, "up did not exit cleanly:\n{printed}");
    assert!(printed.contains("stopping..."), "{printed}");
    assert!(
        !printed.contains("txbank is up"),
        "interrupted too late to test start-up:\n{printed}"
    );
    for part in parts {
        assert!(
            !std::path::Path::new(&format!("/proc/{part}")).exists(),
            "part {part} still runs:\n{printed}"
        );
    }
}

/// Runs `txbank up ARGS`, which must fail: what it printed.
fn up_failing(args: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .arg("up")
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{printed}");
    printed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_port_stops_up_before_anything_starts_and_names_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (args, urls) = up_args(&dir.path().join("data"));
    let bank2 = urls.bank2.trim_start_matches("http://");
    let _holder = std::net::TcpListener::bind(bank2).unwrap();

    let printed = up_failing(&args);
    assert!(printed.contains(&format!("cannot listen on {bank2}")), "{printed}");
    assert!(
        printed.contains(&format!("held by {}", std::process::id())),
        "{printed}"
    );
    assert!(
        !dir.path().join("data").join("logs").join("namesrv.log").exists(),
        "a part started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_that_cannot_start_stops_up_which_shows_why_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (args, _) = up_args(&data);
    // The broker's store folder cannot be made: a file holds its name.
    let store = data.join("rocketmq").join("store");
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, "not a folder").unwrap();

    let printed = up_failing(&args);

    assert!(printed.contains("broker ended"), "{printed}");
    assert!(
        printed.contains(&format!("cannot create {}", store.display())),
        "up should show the broker's own words:\n{printed}"
    );
    assert!(printed.contains("namesrv stopped"), "{printed}");
}

/// A log line without its timestamp and with every number as `#`: the same message
/// written again reads the same.
fn message_of(line: &str) -> String {
    let message = match line.split_once(' ') {
        Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => line,
    };
    let mut shape = String::new();
    for c in message.trim().chars() {
        if !c.is_ascii_digit() {
            shape.push(c);
        } else if !shape.ends_with('#') {
            shape.push('#');
        }
    }
    shape
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_system_writes_no_log_line_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (args, urls) = up_args(&data);
    let up = Up::start(&args, dir.path().join("up.out")).await;
    // One transfer first: a broker whose store holds no message yet skips the clean-ups
    // that would otherwise speak every few seconds.
    let paid = txbank(
        &data,
        &[
            "transfer",
            "--from",
            "1",
            "--to",
            "2",
            "--amount",
            "1",
            "--url",
            &urls.bank1,
        ],
    );
    assert!(paid.status.success(), "{}", String::from_utf8_lossy(&paid.stdout));
    assert!(eventually(|| async { balance(&data, &urls.bank2, "2").contains("\"1.00\"") }).await);
    // The last lines of start-up and of the transfer come within seconds; what follows
    // is the idle system.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let logs: Vec<(PathBuf, usize)> = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .map(|entry| (entry.path(), std::fs::read(entry.path()).unwrap().len()))
        .collect();
    assert_eq!(logs.len(), 5, "one log for each part: {logs:?}");

    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut written: HashMap<String, usize> = HashMap::new();
    for (log, idle_from) in &logs {
        let text = std::fs::read(log).unwrap();
        let part = log.file_stem().unwrap().to_string_lossy();
        for line in String::from_utf8_lossy(&text[*idle_from..]).lines() {
            *written.entry(format!("{part}: {}", message_of(line))).or_default() += 1;
        }
    }
    let repeated: Vec<_> = written.iter().filter(|(_, times)| **times > 1).collect();
    assert!(repeated.is_empty(), "an idle system repeats itself: {repeated:#?}");
    up.interrupt();
}
