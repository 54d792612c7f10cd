//! `txbank up` starts the whole system, the client commands talk to it, Ctrl-C stops
//! it cleanly, and a second `up` resumes from the same data.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{eventually, free_broker_port, free_port};

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

struct Up {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Up {
    async fn start(args: &[String], out: std::path::PathBuf) -> Up {
        let log = std::fs::File::create(&out).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_txbank"))
            .arg("up")
            .args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let up = Up { child, out };
        let started = eventually(|| async {
            std::fs::read_to_string(&up.out)
                .unwrap_or_default()
                .contains("txbank is up")
        })
        .await;
        assert!(
            started,
            "up did not start:\n{}",
            std::fs::read_to_string(&up.out).unwrap_or_default()
        );
        up
    }

    /// Ctrl-C, then the exit status and what `up` printed.
    fn interrupt(mut self) -> (bool, String) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = self.child.wait().unwrap();
        (status.success(), std::fs::read_to_string(&self.out).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_everything_stops_cleanly_and_resumes_from_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (bank1, bank2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let args: Vec<String> = [
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
        "--namesrv",
        &format!("127.0.0.1:{}", free_port()),
        "--broker",
        &format!("127.0.0.1:{}", free_broker_port()),
        "--bank1",
        &bank1,
        "--bank2",
        &bank2,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (bank1_url, bank2_url) = (format!("http://{bank1}"), format!("http://{bank2}"));

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

    let (clean, printed) = up.interrupt();
    assert!(clean, "up did not exit cleanly:\n{printed}");
    for part in ["bank2 stopped", "bank1 stopped", "broker stopped", "namesrv stopped"] {
        assert!(printed.contains(part), "missing {part:?} in:\n{printed}");
    }

    let up = Up::start(&args, dir.path().join("up2.out")).await;
    assert!(balance(&data, &bank1_url, "1").contains("\"9900.00\""));
    assert!(balance(&data, &bank2_url, "2").contains("\"100.00\""));
    up.interrupt();
}
