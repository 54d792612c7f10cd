//! A few-second smoke run of `txbank bench`: it measures (nothing here asserts on
//! speed), reports memory and CPU time of every part, and every transfer it made must
//! be credited exactly once.

use std::process::Command;

use serde_json::Value;

#[test]
fn a_short_benchmark_credits_every_transfer_exactly_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args(["bench", "--duration", "3", "--concurrency", "4", "--json"])
        .output()
        .expect("run txbank bench");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["audit_clean"], true, "{report:#}");
    let debited = report["debited"].as_u64().unwrap();
    assert!(debited > 0, "{report:#}");
    assert!(report["credited"].as_u64().unwrap() >= debited, "{report:#}");
    for part in ["bank1a", "bank2a", "broker"] {
        assert!(
            report["peak_memory_mib"][part].as_f64().unwrap_or(0.0) > 0.0,
            "no memory for {part}: {report:#}"
        );
        assert!(
            report["cpu_ms_per_transfer"][part].as_f64().unwrap_or(0.0) > 0.0,
            "no CPU time for {part}: {report:#}"
        );
    }
    let cpu_bound = report["cpu_bound_per_s"].as_f64().unwrap();
    assert!(cpu_bound > 0.0, "{report:#}");
    let busy = report["machine_busy"].as_f64().unwrap();
    assert!(busy > 0.0 && busy <= 1.0, "{report:#}");
}
