//! `txbank up` starts the whole system, the client commands talk to it, Ctrl-C stops
//! it cleanly, and a second `up` resumes from the same data.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{eventually, up_args, Up};

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
