//! Few-second smoke runs of `txbank-lab bench`, on one broker and on a cluster: each
//! measures (nothing here asserts on speed), reports memory and CPU time of every part
//! and the time each bank instance spent applying deliveries and holding SQLite's writer,
//! and every transfer it made must be credited exactly once.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_benchmark_credits_every_transfer_exactly_once() {
    bench(&[], &["bank1a", "bank2a", "broker-a"]);
}

#[test]
fn on_a_cluster_every_broker_and_every_instance_takes_a_share_of_the_work() {
    let parts = ["bank1a", "bank1b", "bank2a", "bank2b", "broker-a", "broker-b"];
    let report = bench(&["--brokers", "2", "--instances", "2", "--namesrvs", "2"], &parts);
    assert_eq!(
        report["topology"],
        serde_json::json!({"namesrvs": 2, "brokers": 2, "instances": 2})
    );
}

/// Runs a short `txbank-lab bench` with `args`, checks its books and that each of `parts`
/// used memory and CPU time, and returns its report.
fn bench(args: &[&str], parts: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_txbank-lab"))
        .args(["bench", "--duration", "3", "--concurrency", "4", "--json"])
        .args(args)
        .output()
        .expect("run txbank-lab bench");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["audit_clean"], true, "{report:#}");
    let debited = report["debited"].as_u64().unwrap();
    assert!(debited > 0, "{report:#}");
    assert!(report["credited"].as_u64().unwrap() >= debited, "{report:#}");
    for part in parts {
        assert!(
            report["peak_memory_mib"][part].as_f64().unwrap_or(0.0) > 0.0,
            "no memory for {part}: {report:#}"
        );
        assert!(
            report["cpu_ms_per_transfer"][part].as_f64().unwrap_or(0.0) > 0.0,
            "no CPU time for {part}: {report:#}"
        );
    }
    for instance in parts.iter().filter(|part| part.starts_with("bank")) {
        let applying = report["group_commit_busy"][format!("{instance}/deliveries")]
            .as_f64()
            .unwrap_or(0.0);
        assert!(
            applying > 0.0 && applying <= 1.0,
            "no time applying deliveries for {instance}: {report:#}"
        );
        if report["database"] == "sqlite" {
            let writing = report["sqlite_writer_busy"][instance].as_f64().unwrap_or(0.0);
            assert!(
                writing > 0.0 && writing <= 1.0,
                "no time in SQLite's writer for {instance}: {report:#}"
            );
            let per_transfer = report["sqlite_writer_ms_per_transfer"][instance].as_f64();
            assert!(per_transfer.unwrap_or(0.0) > 0.0, "{report:#}");
        }
    }
    let cpu_bound = report["cpu_bound_per_s"].as_f64().unwrap();
    assert!(cpu_bound > 0.0, "{report:#}");
    let busy = report["machine_busy"].as_f64().unwrap();
    assert!(busy > 0.0 && busy <= 1.0, "{report:#}");
    report
}
