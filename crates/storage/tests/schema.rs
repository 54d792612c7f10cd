//! Versioned migrations, the bank a database belongs to, and the archive, each checked on
//! SQLite, MySQL/MariaDB (`TXBANK_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`)
//! and PostgreSQL (`TXBANK_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432`).

use txbank_domain::{AccountNo, Amount, BankId, Party, Transfer, TransferState, TxNo};
use txbank_storage::{fill_books, CreditOutcome, Preload, StorageError, Store};
use txbank_test_support::{fresh_mysql_database, fresh_postgres_database};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// An empty database of each engine: its engine's name, its URL, and the folder holding it.
async fn empty_databases() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
    vec![
        ("sqlite", sqlite, Some(dir)),
        ("mysql", fresh_mysql_database().await, None),
        ("postgres", fresh_postgres_database().await, None),
    ]
}

async fn open(bank: &str, url: &str) -> Store {
    Store::connect(BankId::parse(bank).unwrap(), url, 2).await.unwrap()
}

fn versions(list: &[txbank_storage::SchemaVersion]) -> Vec<i64> {
    list.iter().map(|migration| migration.version).collect()
}

#[tokio::test]
async fn a_fresh_database_is_migrated_once_and_claimed_by_its_bank() {
    for (engine, url, _dir) in empty_databases().await {
        let store = open("bank1", &url).await;
        let fresh = store.schema_status().await.unwrap();
        assert_eq!(
            (versions(&fresh.pending), fresh.owner),
            (vec![1, 2, 3, 4], None),
            "{engine}"
        );
        assert_eq!(versions(&store.migrate().await.unwrap()), [1, 2, 3, 4], "{engine}");
        assert_eq!(store.migrate().await.unwrap(), [], "{engine}: nothing left to apply");
        let status = store.schema_status().await.unwrap();
        assert!(status.is_current(), "{engine}: {status:?}");
        assert_eq!(status.owner.as_deref(), Some("bank1"), "{engine}");
        store.require_current_schema().await.unwrap();
    }
}

#[tokio::test]
async fn a_bank_that_migrates_separately_refuses_a_database_behind() {
    for (engine, url, _dir) in empty_databases().await {
        let store = open("bank1", &url).await;
        let refused = store.require_current_schema().await;
        assert!(
            matches!(&refused, Err(StorageError::SchemaBehind { pending }) if pending == &[1, 2, 3, 4]),
            "{engine}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn another_banks_database_is_refused_and_left_as_it_is() {
    for (engine, url, _dir) in empty_databases().await {
        open("bank1", &url).await.migrate().await.unwrap();
        let intruder = open("bank2", &url).await;
        for refused in [
            intruder.migrate().await.map(|_| ()),
            intruder.require_current_schema().await,
        ] {
            let message = refused.unwrap_err().to_string();
            assert_eq!(message, "this database belongs to bank1, not bank2", "{engine}");
        }
        assert_eq!(intruder.schema_status().await.unwrap().owner.as_deref(), Some("bank1"));
    }
}

#[tokio::test]
async fn a_database_newer_than_this_binary_is_refused() {
    for (engine, url, _dir) in empty_databases().await {
        let store = open("bank1", &url).await;
        store.migrate().await.unwrap();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let checksum = match engine {
            "postgres" => "'\\x00'::bytea",
            _ => "X'00'",
        };
        sqlx::query(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'from a newer txbank', TRUE, {checksum}, 0)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(store.schema_status().await.unwrap().unknown, [99], "{engine}");
        let refused = store.migrate().await;
        assert!(
            matches!(&refused, Err(StorageError::SchemaTooNew { unknown }) if unknown == &[99]),
            "{engine}: {refused:?}"
        );
        pool.close().await;
    }
}

#[tokio::test]
async fn a_database_of_other_tables_is_not_a_banks() {
    for (engine, url, _dir) in empty_databases().await {
        let store = open("bank1", &url).await;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id BIGINT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        let refused = store.migrate().await;
        assert!(
            matches!(refused, Err(StorageError::NotTxbank { .. })),
            "{engine}: {refused:?}"
        );
        let (tables,): (i64,) = sqlx::query_as(match engine {
            "sqlite" => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            "postgres" => "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()",
            _ => "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
        })
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(tables, 1, "{engine}: nothing created");
        pool.close().await;
    }
}

#[tokio::test]
async fn a_missing_sqlite_file_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bank1.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let refused = Store::connect_existing(BankId::parse("bank1").unwrap(), &url, 1).await;
    assert!(matches!(refused, Err(StorageError::NoDatabase(_))), "{refused:?}");
    assert!(!file.exists());
}

/// bank1 and bank2, migrated, on fresh databases of each engine, with books of
/// `transfers` settled transfers from bank1 to bank2, one a day from 100 days ago.
async fn old_books(transfers: u64) -> Vec<(&'static str, Store, Store, Vec<tempfile::TempDir>)> {
    let mut all = Vec::new();
    for ((engine, url1, dir1), (_, url2, dir2)) in empty_databases().await.into_iter().zip(empty_databases().await) {
        let (bank1, bank2) = (open("bank1", &url1).await, open("bank2", &url2).await);
        bank1.migrate().await.unwrap();
        bank2.migrate().await.unwrap();
        let first = now_ms() - 100 * DAY_MS;
        let plan = Preload {
            transfers,
            accounts: 3,
            from_ms: first,
            to_ms: first + transfers as i64 * DAY_MS,
            seed: 1,
        };
        fill_books(&bank1, &bank2, &plan, |_| {}).await.unwrap();
        all.push((engine, bank1, bank2, dir1.into_iter().chain(dir2).collect()));
    }
    all
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn filled_books_balance_and_archiving_keeps_them_balanced() {
    for (engine, bank1, bank2, _dirs) in old_books(60).await {
        let ledgers = [bank2.ledger().await.unwrap(), bank1.ledger().await.unwrap()];
        let before = txbank_domain::audit::audit(&ledgers, now_ms());
        assert!(before.is_clean(), "{engine}: {before:?}");
        assert_eq!((before.debited, before.credited), (60, 60), "{engine}");

        // The first 30 transfers were made 100 to 71 days ago.
        let horizon = now_ms() - 70 * DAY_MS - DAY_MS / 2;
        let sent = bank1.archive_before(horizon).await.unwrap();
        let received = bank2.archive_before(horizon).await.unwrap();
        assert_eq!((sent.sent, sent.received, sent.de_duplication), (30, 0, 30), "{engine}");
        assert_eq!((received.sent, received.received), (0, 30), "{engine}");
        assert_eq!(bank2.archive_horizon().await.unwrap(), horizon, "{engine}");

        let ledgers = [bank2.ledger().await.unwrap(), bank1.ledger().await.unwrap()];
        assert_eq!(
            (ledgers[1].outgoing.len(), ledgers[0].incoming.len()),
            (30, 30),
            "{engine}"
        );
        let after = txbank_domain::audit::audit(&ledgers, now_ms());
        assert!(after.is_clean(), "{engine}: {after:?}");
        assert_eq!(
            (after.debited, after.credited, after.balance_cents),
            (60, 60, before.balance_cents)
        );
        for ledger in &ledgers {
            assert!(
                txbank_domain::audit::books(ledger, now_ms()).balanced,
                "{engine}: {}",
                ledger.bank
            );
        }
    }
}

#[tokio::test]
async fn an_archived_transfer_is_still_found_and_never_credited_again() {
    for (engine, bank1, bank2, _dirs) in old_books(10).await {
        let archived = bank1.recorded_times(true, 0).await.unwrap()[0].0.clone();
        let archived = TxNo::parse(&archived).unwrap();
        let record = bank1.transfer_out(&archived).await.unwrap().unwrap();
        let horizon = now_ms() - 80 * DAY_MS;
        bank1.archive_before(horizon).await.unwrap();
        bank2.archive_before(horizon).await.unwrap();

        let found = bank1.transfer_out(&archived).await.unwrap();
        assert_eq!(
            found.map(|found| found.state),
            Some(TransferState::Credited),
            "{engine}"
        );
        let late = record.transfer.clone();
        assert_eq!(
            bank2.credit_once(&late).await.unwrap(),
            CreditOutcome::Duplicate { reported_again: true },
            "{engine}: a late duplicate is absorbed, its report queued again"
        );
        let mut unknown = late.clone();
        unknown.tx_no = TxNo::generate_at(now_ms() - 90 * DAY_MS);
        assert_eq!(
            bank2.credit_once(&unknown).await.unwrap(),
            CreditOutcome::PastArchiveHorizon,
            "{engine}: an old transfer found nowhere is not credited"
        );
        let mut recent = late.clone();
        recent.tx_no = TxNo::generate();
        assert_eq!(
            bank2.credit_once(&recent).await.unwrap(),
            CreditOutcome::Credited,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn an_archive_that_would_cut_into_transfers_in_flight_is_refused() {
    for (engine, bank1, _bank2, _dirs) in old_books(3).await {
        let party = |bank: &str, account: &str| Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        };
        let in_flight = Transfer::new(
            TxNo::generate(),
            party("bank1", "pre-1"),
            party("bank2", "pre-2"),
            Amount::parse("1.00").unwrap(),
        )
        .unwrap();
        bank1.debit_and_record(&in_flight, None).await.unwrap();
        let refused = bank1.archive_before(now_ms() + 1_000).await;
        assert!(
            matches!(refused, Err(StorageError::ArchiveCutsInFlight { in_flight: 1, .. })),
            "{engine}: {refused:?}"
        );
        assert_eq!(bank1.archive_horizon().await.unwrap(), 0, "{engine}: nothing changed");
        assert_eq!(bank1.ledger().await.unwrap().outgoing.len(), 4, "{engine}");
    }
}

#[tokio::test]
async fn a_check_back_about_an_archived_transfer_finds_it_settled_not_rolled_back() {
    for (engine, bank1, bank2, _dirs) in old_books(3).await {
        let archived = bank1.recorded_times(true, 0).await.unwrap()[0].0.clone();
        let archived = TxNo::parse(&archived).unwrap();
        let record = bank1.transfer_out(&archived).await.unwrap().unwrap();
        let horizon = now_ms() - 10 * DAY_MS;
        bank1.archive_before(horizon).await.unwrap();
        bank2.archive_before(horizon).await.unwrap();

        let state = bank1
            .roll_back_unless_debited(&record.transfer, "check-back found no local transaction")
            .await
            .unwrap();
        assert_eq!(state, TransferState::Credited, "{engine}");
        let found = bank1.transfer_out(&archived).await.unwrap().unwrap();
        assert_eq!(
            found.state,
            TransferState::Credited,
            "{engine}: no live rolled_back row"
        );
        bank1.archive_before(horizon).await.unwrap();
        let ledgers = [bank2.ledger().await.unwrap(), bank1.ledger().await.unwrap()];
        let report = txbank_domain::audit::audit(&ledgers, now_ms());
        assert!(report.is_clean() && report.rolled_back == 0, "{engine}: {report:?}");
    }
}

/// The receiver archives by its own clock; a late copy is checked against the archive by
/// the time in its number, the sender's clock. With the sender's clock ahead, the copy
/// of a transfer archived near the horizon is still absorbed.
#[tokio::test]
async fn a_late_copy_from_a_sender_whose_clock_runs_ahead_is_never_credited_twice() {
    for (engine, url, _dir) in empty_databases().await {
        let bank2 = open("bank2", &url).await;
        bank2.migrate().await.unwrap();
        let account = AccountNo::parse("2").unwrap();
        let holder = txbank_domain::AccountName::parse("李四的账户").unwrap();
        bank2
            .open_account_if_absent(&account, &holder, txbank_domain::Money::parse("0").unwrap())
            .await
            .unwrap();
        let party = |bank: &str, account: &str| Party {
            bank: BankId::parse(bank).unwrap(),
            account: AccountNo::parse(account).unwrap(),
        };
        // Numbered an hour ahead of this bank's clock.
        let ahead = Transfer::new(
            TxNo::generate_at(now_ms() + 60 * 60 * 1000),
            party("bank1", "1"),
            party("bank2", "2"),
            Amount::parse("5.00").unwrap(),
        )
        .unwrap();
        assert_eq!(
            bank2.credit_once(&ahead).await.unwrap(),
            CreditOutcome::Credited,
            "{engine}"
        );
        bank2
            .settlements_sent(std::slice::from_ref(&ahead.tx_no))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let archived = bank2.archive_before(now_ms()).await.unwrap();
        assert_eq!(archived.received, 1, "{engine}");

        assert_eq!(
            bank2.credit_once(&ahead).await.unwrap(),
            CreditOutcome::Duplicate { reported_again: true },
            "{engine}"
        );
        let ledger = bank2.ledger().await.unwrap();
        assert!(txbank_domain::audit::books(&ledger, now_ms()).balanced, "{engine}");
        assert_eq!(
            bank2.account(&account).await.unwrap().unwrap().balance.to_string(),
            "5.00"
        );
    }
}
