//! The short seeded chaos runs: transfers in both directions between instances of each
//! bank while every kind of fault strikes (kills, pauses, network cuts and delays,
//! database outages, a broker's store lost, parts lost for good), on SQLite, MariaDB and
//! PostgreSQL, with one broker and with a cluster; afterwards nothing may be lost or
//! duplicated, and every debited transfer is settled without an operator.

use std::process::Command;

use serde_json::Value;

/// Runs `txbank-lab chaos` with `args` and returns its JSON report, failing on any loss,
/// duplicate or violation.
fn chaos(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_txbank-lab"))
        .arg("chaos")
        .args(args)
        .args(["--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run txbank-lab chaos");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report; stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "chaos found a problem: {report:#}");
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["unexpected"], 0, "every answer was one the API documents");
    assert_eq!(report["audit"]["violations"], serde_json::json!([]));
    let causes = &report["unavailable_by_cause"];
    let by_cause: u64 = ["broker", "database", "bank", "other"]
        .iter()
        .map(|cause| causes[*cause].as_u64().expect("a count per cause"))
        .sum();
    assert_eq!(Some(by_cause), report["unavailable"].as_u64(), "{report:#}");
    report
}

/// The MariaDB server the runs on MariaDB make their databases on.
fn mysql_server() -> String {
    std::env::var("TXBANK_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

#[test]
fn no_money_is_lost_or_duplicated_whatever_faults_strike() {
    let report = chaos(&["--transfers", "2000", "--faults", "15", "--seed", "42"]);
    assert_eq!(report["requested"], 2000);
    assert_eq!(report["faults"].as_array().unwrap().len(), 15);
    for kind in ["kill", "pause", "network", "db-outage", "store-loss"] {
        assert!(
            report["injected"][kind].as_u64() >= Some(1),
            "no {kind} fault: {report:#}"
        );
    }
    assert!(report["credited"].as_u64().unwrap() > 1000, "{report:#}");
}

/// The short run on fresh databases of a server: `--mysql-url` or `--postgres-url`.
fn no_money_is_lost_or_duplicated_on_a_server(flag: &str, server: &str) {
    let report = chaos(&["--transfers", "1000", "--faults", "10", "--seed", "7", flag, server]);
    assert_eq!(report["requested"], 1000);
    assert!(report["credited"].as_u64().unwrap() > 400, "{report:#}");
}

#[test]
fn no_money_is_lost_or_duplicated_on_mariadb_whatever_faults_strike() {
    no_money_is_lost_or_duplicated_on_a_server("--mysql-url", &mysql_server());
}

/// The PostgreSQL server the runs on PostgreSQL make their databases on.
fn postgres_server() -> String {
    std::env::var("TXBANK_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

#[test]
fn no_money_is_lost_or_duplicated_on_postgres_whatever_faults_strike() {
    no_money_is_lost_or_duplicated_on_a_server("--postgres-url", &postgres_server());
}

#[test]
fn a_cluster_loses_a_broker_a_name_server_and_a_bank_instance_for_good_and_no_money() {
    let server = mysql_server();
    let report = chaos(&[
        "--namesrvs",
        "2",
        "--brokers",
        "2",
        "--instances",
        "3",
        "--transfers",
        "1500",
        "--faults",
        "16",
        "--seed",
        CLUSTER_SEED,
        "--mysql-url",
        &server,
    ]);
    assert_eq!(report["requested"], 1500);
    assert_eq!(
        report["topology"],
        serde_json::json!({"namesrvs": 2, "brokers": 2, "instances": 3})
    );
    for kind in [
        "kill",
        "pause",
        "network",
        "db-outage",
        "store-loss",
        "broker-lost",
        "namesrv-lost",
        "instance-lost",
    ] {
        assert!(
            report["injected"][kind].as_u64() >= Some(1),
            "no {kind} fault: {report:#}"
        );
    }
    assert_eq!(report["audit"]["in_flight"], 0, "every debited transfer settled");
    assert!(report["credited"].as_u64().unwrap() > 600, "{report:#}");
}

/// A seed whose 16 faults on 2 name servers, 2 brokers and 3 instances of each bank
/// include every kind (`txbank-lab chaos`'s unit tests check it).
const CLUSTER_SEED: &str = "4";
