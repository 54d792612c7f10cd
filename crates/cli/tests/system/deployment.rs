//! The worked multi-host deployment in `deploy/` (docs/SCALING.md) is one this txbank
//! accepts: each bank's configuration file loads as its instances would load it, and
//! every flag the systemd units pass is one the part they start takes; the binary holds
//! the product alone, and it is what `cargo run` in the repository builds and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `deploy/` folder.
fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `KEY=VALUE` lines of an environment file, comments left out.
fn environment(file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(deploy().join(file))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=VALUE");
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn txbank(args: &[&str], env: &[(String, String)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args(args)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .expect("run txbank");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn each_bank_configuration_loads_with_every_name_server_and_a_queue_per_instance() {
    for bank in ["bank1", "bank2"] {
        let file = deploy().join(format!("{bank}.toml"));
        let env = environment(&format!("{bank}.env"));
        let (ok, printed) = txbank(&["config", "--print", "--config", file.to_str().unwrap()], &env);
        assert!(ok, "{bank}.toml is refused:\n{printed}");
        assert!(printed.contains(&format!("name = \"{bank}\"")), "{printed}");
        assert!(
            printed.contains("namesrv_addr = \"10.0.0.11:9876;10.0.0.12:9876\""),
            "{printed}"
        );
        assert!(printed.contains("topic_queues = 3"), "{printed}");
        // The password comes from the environment file, and is never printed.
        assert!(printed.contains("10.0.1.1"), "{printed}");
        assert!(!printed.contains("CHANGE-ME"), "{printed}");
    }
}

#[test]
fn every_flag_a_systemd_unit_passes_is_one_its_part_takes() {
    let units = std::fs::read_dir(deploy().join("systemd")).unwrap();
    let mut checked = 0;
    for unit in units {
        let path = unit.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text
            .lines()
            .find_map(|line| line.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{} has no ExecStart", path.display()));
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/txbank"), "{}", path.display());
        let part = words.next().unwrap();
        let (ok, help) = txbank(&[part, "--help"], &[]);
        assert!(ok, "txbank has no part {part}:\n{help}");
        for flag in words.filter(|word| word.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: txbank {part} takes no {flag}",
                path.display()
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "the name server's, the broker's and the bank's units");
}

#[test]
fn every_host_of_the_cluster_names_the_same_name_servers() {
    for host in ["mq-1.env", "mq-2.env"] {
        let env = environment(host);
        let value = |key: &str| {
            env.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{host} has no {key}"))
        };
        assert_eq!(value("TXBANK_NAMESRV_ADDR"), "10.0.0.11:9876;10.0.0.12:9876");
        assert!(value("TXBANK_NAMESRV_ADDR").contains(&value("NAMESRV_LISTEN")));
        assert!(value("BROKER_NAME").starts_with("broker-"));
    }
}

#[test]
fn the_product_runs_the_system_and_the_operators_commands_and_not_the_lab() {
    let (ok, help) = txbank(&["--help"], &[]);
    assert!(ok, "{help}");
    for command in [
        "up",
        "namesrv",
        "broker",
        "bank",
        "dashboard",
        "transfer",
        "audit",
        "dlq",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "txbank has no {command}:\n{help}"
        );
    }
    for lab in ["chaos", "bench"] {
        assert!(
            !help.contains(&format!("  {lab} ")),
            "{lab} belongs to txbank-lab:\n{help}"
        );
    }
}

#[test]
fn cargo_run_in_the_repository_runs_txbank_and_builds_nothing_of_the_lab() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        // From the repository's root, as the README runs it: inside a member's folder
        // cargo picks that member.
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // `cargo run --release -- up` (the README's first command) runs the one binary of
    // the workspace's default members, and builds only what that binary needs.
    let defaults = metadata["workspace_default_members"].as_array().unwrap();
    let binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| defaults.contains(&package["id"]))
        .flat_map(|package| package["targets"].as_array().unwrap())
        .filter(|target| target["kind"].as_array().unwrap().iter().any(|kind| kind == "bin"))
        .map(|target| target["name"].as_str().unwrap())
        .collect();
    assert_eq!(binaries, ["txbank"]);
}
