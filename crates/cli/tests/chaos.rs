//! The short seeded chaos run: 2,000 transfers in both directions between two
//! instances of each bank while ten random parts are killed with SIGKILL and restarted;
//! afterwards nothing may be lost or duplicated.

use std::process::Command;

use serde_json::Value;

#[test]
fn no_money_is_lost_or_duplicated_while_parts_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args([
            "chaos",
            "--transfers",
            "2000",
            "--kills",
            "10",
            "--seed",
            "42",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run txbank chaos");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "chaos found a problem: {report:#}");
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["requested"], 2000);
    assert!(report["kills"].as_array().unwrap().len() >= 10);
    assert!(report["credited"].as_u64().unwrap() > 1000, "{report:#}");
    assert_eq!(report["unexpected"], 0, "every answer was one the API documents");
    assert_eq!(report["audit"]["violations"], serde_json::json!([]));
}
