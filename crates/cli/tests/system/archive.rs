//! Retention: `txbank archive` moves settled transfers older than a date out of the hot
//! tables, while the auditor stays exact, idempotency holds for late messages, and bad
//! requests change nothing.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{audit_is_clean, counts, eventually, Bank, Cluster, Db};
use txbank_domain::{BankId, TxNo};
use txbank_storage::{fill_books, Preload, Store};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Midnight UTC `days` days from today (back when negative), Unix milliseconds.
fn midnight(days: i64) -> i64 {
    (now_ms().div_euclid(DAY_MS) + days) * DAY_MS
}

/// `unix_ms` as `YYYY-MM-DD` (UTC).
fn date(unix_ms: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", unix_ms / 1000), "+%F"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn txbank_archive(before: &str, banks: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_txbank"));
    command.args(["archive", "--before", before]);
    for (name, url) in banks {
        command.arg("--bank").arg(format!("{name}={url}"));
    }
    command.output().unwrap()
}

async fn store(bank: &Bank) -> Store {
    Store::connect(BankId::parse(bank.preset).unwrap(), &bank.database_url, 1)
        .await
        .unwrap()
}

/// Rows of `table` in `bank`'s database.
async fn rows(bank: &Bank, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&bank.database_url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    count
}

async fn archives_old_books(db: Db) {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(db).await;
    // Old books: 300 transfers an hour apart, the first 100 before the archive date,
    // midnight 20 days ago, the last 12 days ago.
    let (sender, receiver) = (store(&bank1).await, store(&bank2).await);
    sender.migrate().await.unwrap();
    receiver.migrate().await.unwrap();
    const HOUR_MS: i64 = DAY_MS / 24;
    let archive_date = midnight(-20);
    let plan = Preload {
        transfers: 300,
        accounts: 20,
        from_ms: archive_date - 100 * HOUR_MS,
        to_ms: archive_date + 200 * HOUR_MS,
        seed: 7,
    };
    fill_books(&sender, &receiver, &plan, |_| {}).await.unwrap();
    let oldest_received: (String,) = sqlx::query_as("SELECT tx_no FROM transfer_in ORDER BY create_time LIMIT 1")
        .fetch_one(&sqlx::AnyPool::connect(&bank2.database_url).await.unwrap())
        .await
        .unwrap();
    sender.close().await;
    receiver.close().await;
    bank2.start().await;
    bank1.start().await;
    let fresh = bank1.pay("1.00").await;
    assert_eq!(bank1.transfer_becomes(&fresh, "credited").await["state"], "credited");
    let before = audit_is_clean(&bank2, &bank1);

    let banks = [
        ("bank2", bank2.database_url.as_str()),
        ("bank1", bank1.database_url.as_str()),
    ];
    let out = txbank_archive(&date(archive_date), &banks);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("bank2: archived 0 sent and 100 received"), "{printed}");
    assert!(printed.contains("bank1: archived 100 sent and 0 received"), "{printed}");
    assert_eq!(
        (
            rows(&bank1, "transfer_out").await,
            rows(&bank1, "transfer_out_archive").await
        ),
        (201, 100)
    );
    assert_eq!(
        (
            rows(&bank2, "transfer_in").await,
            rows(&bank2, "transfer_in_archive").await
        ),
        (201, 100)
    );
    assert_eq!(rows(&bank2, "de_duplication").await, 201);

    // The auditor carries the archive: the same figures as before.
    let after = audit_is_clean(&bank2, &bank1);
    let figures = ["debited", "credited", "opened_cents", "balance_cents", "in_flight"];
    assert_eq!(counts(&after, &figures), counts(&before, &figures));

    // A late duplicate of an archived transfer is absorbed and reported again, never
    // credited; an old transfer found nowhere is set aside for an operator.
    let late = |tx_no: &str| format!(r#"{{"accountChange":{{"accountNo":"1","amount":1,"txNo":"{tx_no}"}}}}"#);
    cluster.publish_as("bank1", "bank2", &late(&oldest_received.0), &oldest_received.0, 1);
    let unknown = TxNo::generate_at(now_ms() - 30 * DAY_MS);
    cluster.publish_as("bank1", "bank2", &late(unknown.as_str()), unknown.as_str(), 1);
    let absorbed = eventually(|| async {
        let set_aside = bank2
            .metric(r#"txbank_messages_set_aside_total{bank="bank2",reason="past_archive_horizon"}"#)
            .await;
        bank2.log_text().contains("duplicate delivery absorbed") && set_aside >= Some(1.0)
    })
    .await;
    assert!(absorbed, "late messages not recognised:\n{}", bank2.log_text());
    assert_eq!(bank2.balance("2").await, "1.00");
    audit_is_clean(&bank2, &bank1);

    // Bad requests: a future date, a date too recent, another bank's database, a missing
    // file. Each says why and changes nothing.
    let sqlite_missing = "sqlite:///nonexistent/bank1.db".to_string();
    for (before, banks, why) in [
        (date(midnight(2)), banks.to_vec(), "in the future"),
        (date(midnight(-3)), banks.to_vec(), "less than 7 days ago"),
        (
            date(midnight(-15)),
            vec![("bank1", bank2.database_url.as_str())],
            "belongs to bank2",
        ),
        (
            date(midnight(-15)),
            vec![("bank1", sqlite_missing.as_str())],
            "no database at",
        ),
    ] {
        let out = txbank_archive(&before, &banks);
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && error.contains(why), "{before}: {error}");
    }
    assert_eq!(rows(&bank1, "transfer_out_archive").await, 100);
    assert_eq!(rows(&bank2, "transfer_in_archive").await, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_old_books_on_sqlite_keeps_the_audit_exact_and_late_messages_idempotent() {
    archives_old_books(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_old_books_on_mariadb_keeps_the_audit_exact_and_late_messages_idempotent() {
    archives_old_books(Db::MySql).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_old_books_on_postgres_keeps_the_audit_exact_and_late_messages_idempotent() {
    archives_old_books(Db::Postgres).await;
}
