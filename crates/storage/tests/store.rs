//! The storage guarantees, each checked on SQLite and on MySQL/MariaDB
//! (`TXBANK_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`).

use txbank_domain::{AccountName, AccountNo, Amount, IdempotencyKey, Money, Transfer, TransferState, TxNo};
use txbank_storage::test_support::fresh_mysql_database;
use txbank_storage::{CreditOutcome, DebitOutcome, StorageError, Store};

/// A fresh, empty database of each engine, with Zhang San (10000.00) and Li Si (0.00).
async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(
        &format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display()),
        4,
    )
    .await
    .unwrap();
    let mysql = Store::connect(&fresh_mysql_database().await, 4).await.unwrap();
    let mut all = vec![("sqlite", sqlite, Some(dir)), ("mysql", mysql, None)];
    for (_, store, _) in &mut all {
        store.migrate().await.unwrap();
        store
            .open_account_if_absent(&no("1"), &AccountName::parse("张三的账户").unwrap(), money("10000"))
            .await
            .unwrap();
        store
            .open_account_if_absent(&no("2"), &AccountName::parse("李四的账户").unwrap(), money("0"))
            .await
            .unwrap();
    }
    all
}

fn no(text: &str) -> AccountNo {
    AccountNo::parse(text).unwrap()
}

fn money(text: &str) -> Money {
    Money::parse(text).unwrap()
}

fn transfer(amount: &str) -> Transfer {
    Transfer::new(TxNo::generate(), no("1"), no("2"), Amount::parse(amount).unwrap()).unwrap()
}

async fn balance(store: &Store, account: &str) -> String {
    store.account(&no(account)).await.unwrap().unwrap().balance.to_string()
}

#[tokio::test]
async fn debit_moves_exact_cents_and_records_the_transfer() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("100.10");
        assert_eq!(
            store.debit_and_record(&t, None).await.unwrap(),
            DebitOutcome::Debited,
            "{engine}"
        );
        assert_eq!(balance(&store, "1").await, "9899.90", "{engine}");
        let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
        assert_eq!(
            (record.state, record.transfer),
            (TransferState::Debited, t.clone()),
            "{engine}"
        );
        assert_eq!(
            store.debit_and_record(&t, None).await.unwrap(),
            DebitOutcome::AlreadyDebited,
            "{engine}"
        );
        assert_eq!(
            balance(&store, "1").await,
            "9899.90",
            "{engine}: a repeated debit changes nothing"
        );
    }
}

#[tokio::test]
async fn overdraft_and_unknown_accounts_are_refused_and_change_nothing() {
    for (engine, store, _dir) in stores().await {
        let err = store.debit_and_record(&transfer("10000.01"), None).await.unwrap_err();
        assert!(matches!(err, StorageError::InsufficientFunds { .. }), "{engine}: {err}");
        let ghost = Transfer::new(TxNo::generate(), no("404"), no("2"), Amount::parse("1").unwrap()).unwrap();
        let err = store.debit_and_record(&ghost, None).await.unwrap_err();
        assert!(matches!(err, StorageError::UnknownAccount(_)), "{engine}: {err}");
        assert_eq!(balance(&store, "1").await, "10000.00", "{engine}");
        assert!(
            store.transfer_out(&ghost.tx_no).await.unwrap().is_none(),
            "{engine}: nothing recorded"
        );
    }
}

#[tokio::test]
async fn a_rollback_marker_makes_a_late_debit_impossible() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("5");
        let state = store
            .roll_back_unless_debited(&t, "check-back found nothing")
            .await
            .unwrap();
        assert_eq!(state, TransferState::RolledBack, "{engine}");
        let err = store.debit_and_record(&t, None).await.unwrap_err();
        assert!(matches!(err, StorageError::RolledBack(_)), "{engine}: {err}");
        assert_eq!(balance(&store, "1").await, "10000.00", "{engine}");
    }
}

#[tokio::test]
async fn settling_a_debited_transfer_reports_it_debited() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("5");
        store.debit_and_record(&t, None).await.unwrap();
        assert_eq!(
            store.roll_back_unless_debited(&t, "late").await.unwrap(),
            TransferState::Debited,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_names_one_transfer() {
    for (engine, store, _dir) in stores().await {
        let key = IdempotencyKey::parse("order-42").unwrap();
        let first = transfer("1");
        store.debit_and_record(&first, Some(&key)).await.unwrap();
        let err = store.debit_and_record(&transfer("1"), Some(&key)).await.unwrap_err();
        assert!(
            matches!(err, StorageError::IdempotencyKeyTaken { ref existing } if *existing == first.tx_no),
            "{engine}: {err}"
        );
        assert_eq!(
            store.transfer_out_by_key(&key).await.unwrap().unwrap().transfer,
            first,
            "{engine}"
        );
        assert_eq!(balance(&store, "1").await, "9999.00", "{engine}");
    }
}

#[tokio::test]
async fn credit_applies_once_when_message_is_delivered_twice() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("100");
        assert_eq!(
            store.credit_once(&t).await.unwrap(),
            CreditOutcome::Credited,
            "{engine}"
        );
        assert_eq!(
            store.credit_once(&t).await.unwrap(),
            CreditOutcome::Duplicate,
            "{engine}"
        );
        assert_eq!(balance(&store, "2").await, "100.00", "{engine}");
    }
}

#[tokio::test]
async fn a_credit_to_a_missing_account_changes_nothing_and_can_be_retried() {
    for (engine, store, _dir) in stores().await {
        let t = Transfer::new(TxNo::generate(), no("1"), no("missing"), Amount::parse("3").unwrap()).unwrap();
        let err = store.credit_once(&t).await.unwrap_err();
        assert!(matches!(err, StorageError::UnknownAccount(_)), "{engine}: {err}");
        store
            .open_account_if_absent(&no("missing"), &AccountName::parse("late").unwrap(), money("0"))
            .await
            .unwrap();
        assert_eq!(
            store.credit_once(&t).await.unwrap(),
            CreditOutcome::Credited,
            "{engine}: not marked as applied before"
        );
    }
}

#[tokio::test]
async fn concurrent_debits_never_overdraw() {
    for (engine, store, _dir) in stores().await {
        let attempts: Vec<_> = (0..40)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.debit_and_record(&transfer("300"), None).await })
            })
            .collect();
        let mut debited = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => debited += 1,
                Err(StorageError::InsufficientFunds { .. }) => {}
                Err(other) => panic!("{engine}: {other}"),
            }
        }
        assert_eq!(debited, 33, "{engine}: 33 × 300 fits in 10000, 34 do not");
        assert_eq!(balance(&store, "1").await, "100.00", "{engine}");
    }
}

#[tokio::test]
async fn the_ledgers_of_a_sqlite_bank_and_a_mysql_bank_account_for_every_cent() {
    let all = stores().await;
    let (bank1, bank2) = (&all[0].1, &all[1].1);
    let (sent, refused) = (transfer("100"), transfer("20000"));
    bank1.debit_and_record(&sent, None).await.unwrap();
    bank1.debit_and_record(&refused, None).await.unwrap_err();
    bank1
        .roll_back_unless_debited(&refused, "insufficient funds")
        .await
        .unwrap();
    let in_flight = txbank_domain::audit::audit(
        &[
            bank2.ledger("bank2").await.unwrap(),
            bank1.ledger("bank1").await.unwrap(),
        ],
        0,
    );
    assert!(in_flight.is_clean(), "{in_flight:?}");
    assert_eq!((in_flight.in_flight, in_flight.in_flight_cents), (1, 10_000));

    bank2.credit_once(&sent).await.unwrap();
    let ledgers = [
        bank2.ledger("bank2").await.unwrap(),
        bank1.ledger("bank1").await.unwrap(),
    ];
    assert_eq!(
        (ledgers[1].opened_cents, ledgers[1].balance_cents),
        (1_000_000, 990_000)
    );
    let settled = txbank_domain::audit::audit(&ledgers, 0);
    assert!(settled.is_clean(), "{settled:?}");
    assert_eq!(
        (
            settled.debited,
            settled.rolled_back,
            settled.credited,
            settled.in_flight
        ),
        (1, 1, 1, 0)
    );
}
