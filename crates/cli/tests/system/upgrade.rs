//! A bank upgrades in place: databases made by txbank before it had versioned migrations
//! (tests/fixtures/before-migrations, made by scripts/make-upgrade-fixtures.sh) are
//! migrated on start, on SQLite and on MariaDB, and keep every cent, transfer, key and
//! password they held.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{audit_is_clean, counts, Bank, Cluster, Db};
use serde_json::json;

/// The fixtures' transfers.
const CREDITED_WITH_KEY: &str = "01a22fd7-c794-7e51-87af-08a4565e460b";
const IN_FLIGHT: &str = "01a22fd7-dbdc-76db-a72e-9d867801f4f9";
const RETURNED: &str = "01a22fd7-c7b5-7741-acfa-af2fa5db212a";
const ROLLED_BACK: &str = "01a22fd7-c7bc-78cc-8921-6e3c123cfa10";

/// The in-flight transfer's message died with the fixtures' broker: re-drive sends it.
const REDRIVE_SOON: (&str, &str) = ("TXBANK_REDRIVE_AFTER_SECS", "2");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/before-migrations")
        .join(name)
}

/// Puts the fixture of `bank` in place of its empty database.
async fn load_fixture(bank: &Bank, db: Db) {
    match db {
        Db::Sqlite => {
            let file = bank
                .database_url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap();
            std::fs::copy(fixture(&format!("{}.db", bank.preset)), file).unwrap();
        }
        Db::MySql => {
            use sqlx::Connection;
            let dump = std::fs::read_to_string(fixture(&format!("{}.mariadb.sql", bank.preset))).unwrap();
            let mut conn = sqlx::MySqlConnection::connect(&bank.database_url).await.unwrap();
            sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Db::Postgres => panic!("txbank came to PostgreSQL with versioned migrations: no older books exist"),
    }
}

/// `txbank migrate ACTION` over `banks` (`NAME=URL`).
fn migrate(action: &str, banks: &[String]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_txbank"));
    command.args(["migrate", action]);
    for bank in banks {
        command.arg("--bank").arg(bank);
    }
    command.output().unwrap()
}

/// `txbank migrate status` over the banks' databases.
fn migrate_status(banks: &[&Bank]) -> String {
    let named: Vec<String> = banks
        .iter()
        .map(|bank| format!("{}={}", bank.preset, bank.database_url))
        .collect();
    let out = migrate("status", &named);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn upgrades_in_place(db: Db) {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(db).await;
    load_fixture(&bank1, db).await;
    load_fixture(&bank2, db).await;
    let before = migrate_status(&[&bank1, &bank2]);
    assert!(before.contains("made before versioned migrations"), "{before}");
    // Run against a wrong URL beside a good one, nothing is migrated.
    let missing = format!("bank2=sqlite://{}", fixture("missing.db").display());
    let out = migrate("run", &[format!("bank1={}", bank1.database_url), missing]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && error.contains("no database at"), "{error}");
    assert_eq!(migrate_status(&[&bank1, &bank2]), before, "nothing changed");

    bank2.start_with(&[REDRIVE_SOON]).await;
    bank1.start_with(&[REDRIVE_SOON]).await;
    let after = migrate_status(&[&bank1, &bank2]);
    assert_eq!(after.matches("pending     none").count(), 2, "{after}");
    assert!(
        after.contains("belongs to  bank1") && after.contains("belongs to  bank2"),
        "{after}"
    );

    // Every balance as it was; the transfer in flight lands, and only it moves money.
    for (bank, account, balance) in [
        (&bank1, "1", "9903.50"),
        (&bank1, "3", "5000.00"),
        (&bank1, "5", "299.00"),
    ] {
        assert_eq!(
            bank.balance(account).await,
            balance,
            "{} account {account}",
            bank.preset
        );
    }
    assert_eq!(bank2.balance("2").await, "101.00");
    assert_eq!(bank1.transfer_becomes(IN_FLIGHT, "credited").await["state"], "credited");
    assert!(bank2.balance_becomes("4", "4996.50").await);
    for (tx_no, state) in [
        (CREDITED_WITH_KEY, "credited"),
        (RETURNED, "returned"),
        (ROLLED_BACK, "rolled_back"),
    ] {
        assert_eq!(
            bank1.get(&format!("/transfers/{tx_no}")).await.1["state"],
            state,
            "{tx_no}"
        );
    }

    // The old idempotency key replays its transfer; the old password still logs in.
    let (status, replayed) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "100.00", "idempotency_key": "fixture-credited"}))
        .await;
    assert_eq!(
        (status, replayed["tx_no"].as_str()),
        (200, Some(CREDITED_WITH_KEY)),
        "{replayed}"
    );
    assert_eq!(bank1.balance("1").await, "9903.50");
    let holder = reqwest::Client::new()
        .get(format!("{}/accounts/5", bank1.url()))
        .basic_auth("5", Some("fixture-password-5"));
    let (status, account) = crate::support::send(holder).await;
    assert_eq!(
        (status, account["balance"].as_str()),
        (200, Some("299.00")),
        "{account}"
    );

    // New transfers both ways; the closed account still refuses.
    let sent = bank1.pay("1.00").await;
    assert_eq!(bank1.transfer_becomes(&sent, "credited").await["state"], "credited");
    let (status, back) = bank2
        .post_transfer(json!({"from": "4", "to": "1", "to_bank": "bank1", "amount": "2.00"}))
        .await;
    assert_eq!(status, 201, "{back}");
    let back = back["tx_no"].as_str().unwrap().to_string();
    assert_eq!(bank2.transfer_becomes(&back, "credited").await["state"], "credited");
    let (status, refused) = bank1
        .post_transfer(json!({"from": "1", "to": "6", "amount": "3.00"}))
        .await;
    assert_eq!(status, 201, "{refused}");
    let refused = refused["tx_no"].as_str().unwrap().to_string();
    assert_eq!(bank1.transfer_becomes(&refused, "returned").await["state"], "returned");
    assert!(bank1.balance_becomes("1", "9904.50").await);

    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(
        counts(
            &report,
            &["debited", "credited", "returned", "rolled_back", "in_flight"]
        ),
        [8, 6, 2, 1, 0],
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_bank_made_before_migrations_upgrades_in_place() {
    upgrades_in_place(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_bank_made_before_migrations_upgrades_in_place() {
    upgrades_in_place(Db::MySql).await;
}
