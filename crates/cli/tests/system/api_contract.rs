//! The API description is the contract: a spec-driven fuzzer (schemathesis, installed by
//! `scripts/test.sh`) generates requests from a running bank's `/openapi.json` and finds
//! no server error, no answer the document does not list, no answer off its schema, and
//! no schema-valid request refused as malformed.

use std::process::Command;

use crate::support::{Cluster, Db, API_TOKEN};

/// The answers a schema-valid request may get: done, or refused for what it names (no
/// such account, funds, a closed account, a taken key), never 400 `malformed`.
const SCHEMATHESIS_CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "503"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_request_the_openapi_document_allows_is_answered_as_it_says() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1.start_in_process().await;
    let config = cluster.dir.path().join("schemathesis.toml");
    std::fs::write(&config, SCHEMATHESIS_CONFIG).unwrap();
    let schemathesis = std::env::var("TXBANK_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", bank1.url())])
        .args(["--header", &format!("Authorization: Bearer {API_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,positive_data_acceptance",
        ])
        .args(["--mode", "positive", "--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "40", "--seed", "2026", "--workers", "2", "--no-color"])
        .current_dir(cluster.dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {schemathesis} (scripts/test.sh installs it): {e}"));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the fuzzer found answers off the document:\n{printed}\n{}\nbank1 log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        bank1.log_text()
    );
    assert!(printed.contains("passed"), "{printed}");
}
