//! The storage guarantees, each checked on SQLite, MySQL/MariaDB
//! (`TXBANK_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`) and PostgreSQL
//! (`TXBANK_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432`).

use txbank_domain::{
    AccountName, AccountNo, Amount, BankId, IdempotencyKey, Money, Party, Settlement, Transfer, TransferState, TxNo,
};
use txbank_storage::{CreditOutcome, DebitOutcome, Delivery, DeliveryOutcome, SettlementOutcome, StorageError, Store};
use txbank_test_support::{fresh_mysql_database, fresh_postgres_database};

/// A fresh, empty database of each engine, each bank1's, with Zhang San (1, 10000.00)
/// and Li Si (2, 0.00). A test may play bank2's side of a transfer on the same database:
/// the store itself does not check which bank a transfer is for.
async fn stores() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let mut all = Vec::new();
    for (engine, url, dir) in databases().await {
        all.push((engine, Store::connect(bank("bank1"), &url, 4).await.unwrap(), dir));
    }
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

/// A fresh, empty database of each engine: the engine's name, its URL, and the folder
/// holding it.
async fn databases() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
    vec![
        ("sqlite", sqlite, Some(dir)),
        ("mysql", fresh_mysql_database().await, None),
        ("postgres", fresh_postgres_database().await, None),
    ]
}

fn no(text: &str) -> AccountNo {
    AccountNo::parse(text).unwrap()
}

fn money(text: &str) -> Money {
    Money::parse(text).unwrap()
}

fn bank(id: &str) -> BankId {
    BankId::parse(id).unwrap()
}

fn party(bank_id: &str, account: &str) -> Party {
    Party {
        bank: bank(bank_id),
        account: no(account),
    }
}

/// A transfer of `amount` from `from` in bank1 to `to` in bank2.
fn transfer_between(from: &str, to: &str, amount: &str) -> Transfer {
    Transfer::new(
        TxNo::generate(),
        party("bank1", from),
        party("bank2", to),
        Amount::parse(amount).unwrap(),
    )
    .unwrap()
}

/// A transfer from account 1 in bank1 to `to` in bank2.
fn transfer_to(to: &str, amount: &str) -> Transfer {
    transfer_between("1", to, amount)
}

/// A transfer from Zhang San (1 in bank1) to Li Si (2 in bank2).
fn transfer(amount: &str) -> Transfer {
    transfer_to("2", amount)
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
        let ghost = Transfer::new(
            TxNo::generate(),
            party("bank1", "404"),
            party("bank2", "2"),
            Amount::parse("1").unwrap(),
        )
        .unwrap();
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
async fn a_group_of_new_transfers_is_debited_together() {
    for (engine, store, _dir) in stores().await {
        let group: Vec<_> = ["1.10", "2.20", "3.30"].map(|a| (transfer(a), None)).into();
        let outcomes = store.debit_all(&group).await;
        assert!(
            outcomes.iter().all(|o| matches!(o, Ok(DebitOutcome::Debited))),
            "{engine}: {outcomes:?}"
        );
        assert_eq!(balance(&store, "1").await, "9993.40", "{engine}");
        for (t, _) in &group {
            let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
            assert_eq!(
                (record.state, &record.transfer),
                (TransferState::Debited, t),
                "{engine}"
            );
        }
        let repeated = store.debit_all(&group).await;
        assert!(
            repeated.iter().all(|o| matches!(o, Ok(DebitOutcome::AlreadyDebited))),
            "{engine}: a repeated group changes nothing: {repeated:?}"
        );
        assert_eq!(balance(&store, "1").await, "9993.40", "{engine}");
    }
}

/// Opens each of `accounts` with `opening` on `store`.
async fn open_all(store: &Store, accounts: &[&str], opening: &str) {
    for account in accounts {
        let name = AccountName::parse(&format!("account {account}")).unwrap();
        store
            .open_account_if_absent(&no(account), &name, money(opening))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_group_over_many_accounts_moves_each_accounts_own_sum_or_nothing() {
    let (sources, destinations) = (["a1", "a2", "a3", "a4", "a5"], ["b1", "b2", "b3"]);
    for (engine, store, _dir) in stores().await {
        open_all(&store, &sources, "100").await;
        open_all(&store, &destinations, "0").await;
        store.close_account(&no("b3")).await.unwrap();
        let amounts = [
            ("a1", "10"),
            ("a1", "5.50"),
            ("a2", "20"),
            ("a3", "30"),
            ("a4", "40"),
            ("a5", "50"),
        ];
        let group: Vec<_> = amounts
            .iter()
            .map(|(from, amount)| (transfer_between(from, "b1", amount), None))
            .collect();
        assert!(store.debit_together(&group).await.unwrap(), "{engine}");
        let left = ["84.50", "80.00", "70.00", "60.00", "50.00"];
        for (account, expected) in sources.iter().zip(left) {
            assert_eq!(balance(&store, account).await, expected, "{engine}: {account}");
        }

        // One source of five cannot cover its part: no source moves.
        let short: Vec<_> = ["a1", "a2", "a3", "a4", "a5"]
            .iter()
            .zip(["1", "1", "1", "1", "50.01"])
            .map(|(from, amount)| (transfer_between(from, "b1", amount), None))
            .collect();
        assert!(!store.debit_together(&short).await.unwrap(), "{engine}");
        for (account, expected) in sources.iter().zip(left) {
            assert_eq!(
                balance(&store, account).await,
                expected,
                "{engine}: {account} unchanged"
            );
        }

        // Credits to several accounts: each takes its own sum; the closed one refuses
        // its transfer alone.
        let credits = [("b1", "1.25"), ("b2", "2"), ("b1", "0.75"), ("b2", "3"), ("b3", "4")];
        let batch: Vec<_> = credits
            .iter()
            .map(|(to, amount)| Delivery::Transfer(transfer_between("a1", to, amount)))
            .collect();
        let outcomes = store.apply_deliveries(&batch).await.unwrap();
        let refused: Vec<bool> = outcomes
            .iter()
            .map(|outcome| matches!(outcome, DeliveryOutcome::Credit(CreditOutcome::Refused(_))))
            .collect();
        assert_eq!(refused, [false, false, false, false, true], "{engine}: {outcomes:?}");
        assert_eq!(balance(&store, "b1").await, "2.00", "{engine}");
        assert_eq!(balance(&store, "b2").await, "5.00", "{engine}");
        assert_eq!(balance(&store, "b3").await, "0.00", "{engine}");
    }
}

/// Groups of any size, past what one statement covers (on SQLite up to 128 rows, in a
/// text with room for the next power of two), move each account's own sum, or nothing.
#[tokio::test]
async fn a_group_of_any_size_over_hundreds_of_accounts_moves_each_accounts_own_sum_or_nothing() {
    let sources: Vec<String> = (0..150).map(|n| format!("s{n}")).collect();
    let destinations: Vec<String> = (0..133).map(|n| format!("d{n}")).collect();
    let (sources, destinations): (Vec<&str>, Vec<&str>) = (
        sources.iter().map(String::as_str).collect(),
        destinations.iter().map(String::as_str).collect(),
    );
    for (engine, store, _dir) in stores().await {
        open_all(&store, &sources, "10").await;
        open_all(&store, &destinations, "0").await;
        // 300 transfers: two from each source; three to each of the first 34
        // destinations, two to the others.
        let group: Vec<_> = (0..300)
            .map(|i| (transfer_between(sources[i % 150], destinations[i % 133], "1.25"), None))
            .collect();
        assert!(store.debit_together(&group).await.unwrap(), "{engine}");
        for source in &sources {
            assert_eq!(balance(&store, source).await, "7.50", "{engine}: {source}");
        }
        for (t, _) in &group {
            let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
            assert_eq!(record.state, TransferState::Debited, "{engine}");
        }

        // 200 more, of which the last asks its source for a cent more than it holds.
        let mut short: Vec<_> = (1..200)
            .map(|i| (transfer_between(sources[i % 150], destinations[0], "0.01"), None))
            .collect();
        short.push((transfer_between(sources[0], destinations[0], "7.51"), None));
        assert!(!store.debit_together(&short).await.unwrap(), "{engine}");
        for source in &sources {
            assert_eq!(balance(&store, source).await, "7.50", "{engine}: {source} unchanged");
        }
        for (t, _) in &short {
            assert_eq!(
                store.transfer_out(&t.tx_no).await.unwrap(),
                None,
                "{engine}: none recorded"
            );
        }

        // 300 transfers received, credited together with the 300 reports on those sent,
        // then received again.
        let received: Vec<_> = (0..300)
            .map(|i| transfer_between(sources[i % 150], destinations[i % 133], "1.25"))
            .collect();
        let mut batch: Vec<Delivery> = received.iter().cloned().map(Delivery::Transfer).collect();
        batch.extend(group.iter().map(|(t, _)| credited_report(t)));
        let outcomes = store.apply_deliveries(&batch).await.unwrap();
        assert!(
            outcomes[..300]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Credit(CreditOutcome::Credited))),
            "{engine}: {outcomes:?}"
        );
        assert!(
            outcomes[300..]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Settlement(SettlementOutcome::Applied))),
            "{engine}: {outcomes:?}"
        );
        for (index, destination) in destinations.iter().enumerate() {
            let expected = if index < 34 { "3.75" } else { "2.50" };
            assert_eq!(balance(&store, destination).await, expected, "{engine}: {destination}");
        }
        for (t, _) in &group {
            let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
            assert_eq!(record.state, TransferState::Credited, "{engine}");
        }
        assert_eq!(store.pending_settlements(1000).await.unwrap().len(), 300, "{engine}");
        let again = store.apply_deliveries(&batch[..300]).await.unwrap();
        assert!(
            again
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Credit(CreditOutcome::Duplicate { .. }))),
            "{engine}: {again:?}"
        );
        assert_eq!(
            balance(&store, destinations[0]).await,
            "3.75",
            "{engine}: credited once"
        );
    }
}

#[tokio::test]
async fn messages_debited_in_one_commit_each_move_whole_or_not_at_all() {
    for (engine, store, _dir) in stores().await {
        let seen = transfer("1");
        store.debit_and_record(&seen, None).await.unwrap();
        let first: Vec<_> = ["100", "200"].map(|a| (transfer(a), None)).into();
        let short = vec![(transfer("300"), None), (transfer("9500"), None)];
        let repeated = vec![(transfer("5"), None), (seen.clone(), None)];
        let last: Vec<_> = ["400"].map(|a| (transfer(a), None)).into();
        let debited = store.debit_messages(&[&first, &short, &repeated, &last]).await.unwrap();
        assert_eq!(debited, [true, false, false, true], "{engine}");
        assert_eq!(
            balance(&store, "1").await,
            "9299.00",
            "{engine}: 1 + 100 + 200 + 400 debited"
        );
        for (t, _) in short.iter().chain(&repeated[..1]) {
            assert_eq!(
                store.transfer_out(&t.tx_no).await.unwrap(),
                None,
                "{engine}: undone whole"
            );
        }
        for (t, _) in first.iter().chain(&last) {
            let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
            assert_eq!(record.state, TransferState::Debited, "{engine}");
        }
    }
}

/// Two instances of a bank each debit two messages at the same moment, over the same two
/// sources taken in opposite orders: one waits for the other, and both commit, where
/// locking each message's source in turn deadlocked them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_debiting_messages_over_the_same_sources_wait_for_each_other_instead_of_deadlocking() {
    for (engine, url, _dir) in databases().await {
        if engine == "sqlite" {
            continue; // one transaction writes at a time
        }
        let first = Store::connect(bank("bank1"), &url, 2).await.unwrap();
        first.migrate().await.unwrap();
        open_all(&first, &["a", "b"], "100").await;
        let second = Store::connect(bank("bank1"), &url, 2).await.unwrap();
        // A third connection holds both sources, so that each instance takes its first
        // message's source the moment it lets go.
        let mut holder = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::Executor::execute(&mut holder, "BEGIN").await.unwrap();
        sqlx::Executor::execute(
            &mut holder,
            "UPDATE account_info SET closed = closed WHERE account_no IN ('a', 'b')",
        )
        .await
        .unwrap();
        let message = |from: &str| vec![(transfer_between(from, "2", "1"), None)];
        let (a_then_b, b_then_a) = ([message("a"), message("b")], [message("b"), message("a")]);
        let one = tokio::spawn(async move { first.debit_messages(&[&a_then_b[0], &a_then_b[1]]).await });
        let other = tokio::spawn(async move {
            let debited = second.debit_messages(&[&b_then_a[0], &b_then_a[1]]).await;
            (debited, second)
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::Executor::execute(&mut holder, "COMMIT").await.unwrap();

        assert_eq!(one.await.unwrap().unwrap(), [true, true], "{engine}");
        let (debited, store) = other.await.unwrap();
        assert_eq!(debited.unwrap(), [true, true], "{engine}");
        assert_eq!(balance(&store, "a").await, "98.00", "{engine}");
        assert_eq!(balance(&store, "b").await, "98.00", "{engine}");
    }
}

/// SQLite writes one transaction at a time: a SQLite bank counts how long its writers
/// held that one turn (the part of every write that cannot run in parallel, whatever the
/// cores) and how long they waited for it. MySQL and PostgreSQL lock rows: no such turn.
#[tokio::test]
async fn a_sqlite_bank_counts_how_long_its_one_writer_was_busy_and_waited_for() {
    for (engine, store, _dir) in stores().await {
        let before = store.writer_time();

        let transfers = [transfer("1"), transfer("1"), transfer("1")];
        let (a, b, c) = tokio::join!(
            store.credit_once(&transfers[0]),
            store.credit_once(&transfers[1]),
            store.credit_once(&transfers[2]),
        );
        for credited in [a, b, c] {
            assert_eq!(credited.unwrap(), CreditOutcome::Credited, "{engine}");
        }

        let after = store.writer_time();
        if engine == "sqlite" {
            let (before, after) = (before.unwrap(), after.unwrap());
            assert!(
                after.held > before.held,
                "three commits held the writer: {before:?} → {after:?}"
            );
            assert!(
                after.waited > before.waited,
                "two credits waited for the first: {before:?} → {after:?}"
            );
        } else {
            assert_eq!((before, after), (None, None), "{engine}");
        }
    }
}

#[tokio::test]
async fn a_group_that_cannot_be_debited_says_why_for_each_transfer() {
    for (engine, store, _dir) in stores().await {
        let key = IdempotencyKey::parse("rent-12").unwrap();
        store.debit_and_record(&transfer("1"), Some(&key)).await.unwrap();
        let unknown = Transfer::new(
            TxNo::generate(),
            party("bank1", "nobody"),
            party("bank2", "2"),
            Amount::parse("1").unwrap(),
        )
        .unwrap();
        let group = vec![
            (transfer("6000"), None),
            (transfer("3999"), None),
            (transfer("0.01"), None),
            (transfer("5"), Some(key)),
            (unknown, None),
        ];
        let refusals = store.group_refusals(&group).await.unwrap();
        assert!(refusals[0].is_none() && refusals[1].is_none(), "{engine}: {refusals:?}");
        assert!(
            matches!(refusals[2], Some(StorageError::InsufficientFunds { .. })),
            "{engine}: 6000 + 3999 + 0.01 is more than 9999.00: {refusals:?}"
        );
        assert!(
            matches!(refusals[3], Some(StorageError::IdempotencyKeyTaken { .. })),
            "{engine}: {refusals:?}"
        );
        assert!(
            matches!(refusals[4], Some(StorageError::UnknownAccount(_))),
            "{engine}: {refusals:?}"
        );
        assert_eq!(balance(&store, "1").await, "9999.00", "{engine}: nothing changed");
    }
}

#[tokio::test]
async fn in_a_group_each_refusal_stays_its_own_transfers() {
    for (engine, store, _dir) in stores().await {
        let seen = transfer("1");
        store.debit_and_record(&seen, None).await.unwrap();
        let key = IdempotencyKey::parse("order-7").unwrap();
        store.debit_and_record(&transfer("1"), Some(&key)).await.unwrap();
        let group = vec![
            (transfer("4000"), None),
            (seen.clone(), None),
            (transfer("6000"), None),
            (transfer("1"), Some(key)),
            (transfer("3"), None),
        ];
        let outcomes = store.debit_all(&group).await;
        assert!(
            matches!(outcomes[0], Ok(DebitOutcome::Debited)),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], Ok(DebitOutcome::AlreadyDebited)),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], Err(StorageError::InsufficientFunds { .. })),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[3], Err(StorageError::IdempotencyKeyTaken { .. })),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[4], Ok(DebitOutcome::Debited)),
            "{engine}: {outcomes:?}"
        );
        assert_eq!(
            balance(&store, "1").await,
            "5995.00",
            "{engine}: 10000 - 1 - 1 - 4000 - 3"
        );
        assert!(
            store.transfer_out(&group[2].0.tx_no).await.unwrap().is_none(),
            "{engine}: the refused transfer is not recorded"
        );
    }
}

#[tokio::test]
async fn recent_transfers_out_are_newest_first_and_filter_by_state() {
    for (engine, store, _dir) in stores().await {
        let mut sent = Vec::new();
        for amount in ["1", "2", "3"] {
            let t = transfer(amount);
            store.debit_and_record(&t, None).await.unwrap();
            sent.push(t.tx_no);
            // Distinct milliseconds, so that "newest first" has one answer.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let refused = transfer("5");
        store.roll_back_unless_debited(&refused, "refused").await.unwrap();

        let latest = store.recent_transfers_out(None, 2).await.unwrap();
        let latest: Vec<_> = latest.iter().map(|r| (r.transfer.tx_no.clone(), r.state)).collect();
        assert_eq!(
            latest,
            [
                (refused.tx_no.clone(), TransferState::RolledBack),
                (sent[2].clone(), TransferState::Debited)
            ],
            "{engine}"
        );
        let debited = store
            .recent_transfers_out(Some(TransferState::Debited), 10)
            .await
            .unwrap();
        let debited: Vec<_> = debited.iter().map(|r| r.transfer.tx_no.clone()).collect();
        assert_eq!(debited, [sent[2].clone(), sent[1].clone(), sent[0].clone()], "{engine}");
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
            CreditOutcome::Duplicate { reported_again: true },
            "{engine}"
        );
        assert_eq!(balance(&store, "2").await, "100.00", "{engine}");
    }
}

#[tokio::test]
async fn a_transfer_received_again_has_its_report_queued_again_from_what_was_recorded() {
    for (engine, store, _dir) in stores().await {
        let credited = transfer("7");
        let refused = transfer_to("missing", "8");
        for t in [&credited, &refused] {
            store.credit_once(t).await.unwrap();
        }
        let sent: Vec<TxNo> = store
            .pending_settlements(10)
            .await
            .unwrap()
            .into_iter()
            .map(|report| report.tx_no)
            .collect();
        store.settlements_sent(&sent).await.unwrap();
        assert!(store.pending_settlements(10).await.unwrap().is_empty(), "{engine}");

        for t in [&credited, &refused] {
            assert_eq!(
                store.credit_once(t).await.unwrap(),
                CreditOutcome::Duplicate { reported_again: true },
                "{engine}"
            );
        }
        let again = store.pending_settlements(10).await.unwrap();
        let outcome_of = |t: &Transfer| again.iter().find(|r| r.tx_no == t.tx_no).map(|r| r.settlement.clone());
        assert_eq!(outcome_of(&credited), Some(Settlement::Credited), "{engine}");
        assert!(
            matches!(outcome_of(&refused), Some(Settlement::Returned { reason }) if reason.contains("missing")),
            "{engine}: {again:?}"
        );
        assert!(again.iter().all(|r| r.to_bank == bank("bank1")), "{engine}");
        assert_eq!(balance(&store, "2").await, "7.00", "{engine}: nothing credited twice");
    }
}

#[tokio::test]
async fn only_unsettled_committed_debits_are_due_for_redrive_and_each_attempt_is_claimed_once() {
    use std::time::Duration;
    for (engine, store, _dir) in stores().await {
        let unsettled = transfer("1");
        let settled = transfer("2");
        let rolled_back = transfer("3");
        store.debit_and_record(&unsettled, None).await.unwrap();
        store.debit_and_record(&settled, None).await.unwrap();
        store
            .apply_settlement(&settled.tx_no, &bank("bank2"), &Settlement::Credited)
            .await
            .unwrap();
        store.roll_back_unless_debited(&rolled_back, "test").await.unwrap();
        let to_bank2 = [bank("bank2")];

        let not_yet = store
            .due_redrives(&to_bank2, Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert!(not_yet.is_empty(), "{engine}: not overdue yet");
        let due = store.due_redrives(&to_bank2, Duration::ZERO, 10).await.unwrap();
        assert_eq!(due.len(), 1, "{engine}: {due:?}");
        assert_eq!((&due[0].transfer, due[0].attempts), (&unsettled, 0), "{engine}");
        assert!(
            store
                .due_redrives(&[bank("bank3")], Duration::ZERO, 10)
                .await
                .unwrap()
                .is_empty(),
            "{engine}: other banks' only"
        );

        let pause = Duration::from_millis(300);
        assert!(
            store.claim_redrive(&unsettled.tx_no, 0, pause).await.unwrap(),
            "{engine}: first claim"
        );
        assert!(
            !store.claim_redrive(&unsettled.tx_no, 0, pause).await.unwrap(),
            "{engine}: another instance's claim of the same attempt"
        );
        assert!(
            store
                .due_redrives(&to_bank2, Duration::ZERO, 10)
                .await
                .unwrap()
                .is_empty(),
            "{engine}: pausing"
        );
        tokio::time::sleep(pause * 2).await;
        let due = store.due_redrives(&to_bank2, Duration::ZERO, 10).await.unwrap();
        assert_eq!(due.iter().map(|d| d.attempts).collect::<Vec<_>>(), [1], "{engine}");
        assert!(
            store.claim_redrive(&unsettled.tx_no, 1, pause).await.unwrap(),
            "{engine}: second attempt"
        );
        assert!(
            !store.claim_redrive(&unsettled.tx_no, 1, pause).await.unwrap(),
            "{engine}: claimed once"
        );

        store
            .apply_settlement(&unsettled.tx_no, &bank("bank2"), &Settlement::Credited)
            .await
            .unwrap();
        assert_eq!(store.forget_settled_redrives().await.unwrap(), 1, "{engine}");
        tokio::time::sleep(pause * 2).await;
        assert!(
            store
                .due_redrives(&to_bank2, Duration::ZERO, 10)
                .await
                .unwrap()
                .is_empty(),
            "{engine}: settled"
        );
    }
}

#[tokio::test]
async fn a_credit_to_a_missing_or_closed_account_is_refused_for_good_and_its_return_queued() {
    for (engine, store, _dir) in stores().await {
        store.close_account(&no("2")).await.unwrap();
        for t in [transfer_to("missing", "3"), transfer("4")] {
            let outcome = store.credit_once(&t).await.unwrap();
            assert!(matches!(outcome, CreditOutcome::Refused(_)), "{engine}: {outcome:?}");
            assert_eq!(
                store.credit_once(&t).await.unwrap(),
                CreditOutcome::Duplicate { reported_again: true },
                "{engine}: a refusal is final"
            );
        }
        assert_eq!(balance(&store, "2").await, "0.00", "{engine}");
        let queued = store.pending_settlements(10).await.unwrap();
        assert_eq!(queued.len(), 2, "{engine}");
        assert!(queued
            .iter()
            .all(|report| report.to_bank == bank("bank1") && matches!(report.settlement, Settlement::Returned { .. })));
        store.settlements_sent(&[queued[0].tx_no.clone()]).await.unwrap();
        assert_eq!(store.pending_settlements(10).await.unwrap().len(), 1, "{engine}");
        let both = [queued[0].tx_no.clone(), queued[1].tx_no.clone()];
        store.settlements_sent(&both).await.unwrap();
        assert!(store.pending_settlements(10).await.unwrap().is_empty(), "{engine}");
    }
}

#[tokio::test]
async fn a_credit_queues_its_credited_report_in_the_same_transaction() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("7");
        store.credit_once(&t).await.unwrap();
        let queued = store.pending_settlements(10).await.unwrap();
        assert_eq!(queued.len(), 1, "{engine}");
        assert_eq!(
            (&queued[0].tx_no, &queued[0].settlement),
            (&t.tx_no, &Settlement::Credited),
            "{engine}"
        );
    }
}

/// On InnoDB, removing reports with one `DELETE ... IN (...)` at `REPEATABLE READ`
/// deadlocked with the credits here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_reports_are_removed_while_credits_queue_new_ones() {
    for (engine, store, _dir) in stores().await {
        let crediting = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..150 {
                    let batch: Vec<Delivery> = (0..20).map(|_| Delivery::Transfer(transfer("0.01"))).collect();
                    store.apply_deliveries(&batch).await.unwrap();
                }
            })
        };
        let mut removed = 0;
        while removed < 3000 {
            let sent: Vec<TxNo> = store
                .pending_settlements(100)
                .await
                .unwrap()
                .into_iter()
                .map(|report| report.tx_no)
                .collect();
            store
                .settlements_sent(&sent)
                .await
                .unwrap_or_else(|error| panic!("{engine}: {error}"));
            removed += sent.len();
        }
        crediting.await.unwrap();
        assert!(store.pending_settlements(10).await.unwrap().is_empty(), "{engine}");
        assert_eq!(balance(&store, "2").await, "30.00", "{engine}");
    }
}

/// A "credited" report from bank2 about `t`.
fn credited_report(t: &Transfer) -> Delivery {
    Delivery::Settlement {
        tx_no: t.tx_no.clone(),
        reporter: bank("bank2"),
        settlement: Settlement::Credited,
    }
}

#[tokio::test]
async fn a_batch_of_deliveries_is_applied_together_and_once() {
    for (engine, store, _dir) in stores().await {
        let sent = [transfer("5"), transfer("6")];
        for t in &sent {
            store.debit_and_record(t, None).await.unwrap();
        }
        let received = [transfer("1.25"), transfer("2.50"), transfer_to("1", "0.25")];
        let mut batch: Vec<Delivery> = received.iter().cloned().map(Delivery::Transfer).collect();
        batch.extend(sent.iter().map(credited_report));

        let outcomes = store.apply_deliveries(&batch).await.unwrap();
        assert!(
            outcomes[..3]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Credit(CreditOutcome::Credited))),
            "{engine}: {outcomes:?}"
        );
        assert!(
            outcomes[3..]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Settlement(SettlementOutcome::Applied))),
            "{engine}: {outcomes:?}"
        );
        assert_eq!(balance(&store, "2").await, "3.75", "{engine}");
        assert_eq!(balance(&store, "1").await, "9989.25", "{engine}: 10000 - 5 - 6 + 0.25");
        for t in &sent {
            let state = store.transfer_out(&t.tx_no).await.unwrap().unwrap().state;
            assert_eq!(state, TransferState::Credited, "{engine}");
        }
        let queued = store.pending_settlements(10).await.unwrap();
        assert_eq!(queued.len(), 3, "{engine}: one credited report per transfer received");
        assert!(queued.iter().all(|r| r.settlement == Settlement::Credited), "{engine}");

        let again = store.apply_deliveries(&batch).await.unwrap();
        assert!(
            again[..3]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Credit(CreditOutcome::Duplicate { .. }))),
            "{engine}: {again:?}"
        );
        assert!(
            again[3..]
                .iter()
                .all(|o| matches!(o, DeliveryOutcome::Settlement(SettlementOutcome::AlreadyApplied))),
            "{engine}: {again:?}"
        );
        assert_eq!(
            balance(&store, "2").await,
            "3.75",
            "{engine}: a redelivered batch changes nothing"
        );
        assert_eq!(store.pending_settlements(10).await.unwrap().len(), 3, "{engine}");
    }
}

#[tokio::test]
async fn in_a_batch_each_delivery_gets_its_own_answer() {
    for (engine, store, _dir) in stores().await {
        let seen = transfer("1");
        store.credit_once(&seen).await.unwrap();
        let debited = transfer("10");
        store.debit_and_record(&debited, None).await.unwrap();
        let batch = vec![
            Delivery::Transfer(transfer("2")),
            Delivery::Transfer(seen.clone()),
            Delivery::Transfer(transfer_to("missing", "3")),
            Delivery::Settlement {
                tx_no: debited.tx_no.clone(),
                reporter: bank("bank3"),
                settlement: Settlement::Credited,
            },
            Delivery::Settlement {
                tx_no: TxNo::generate(),
                reporter: bank("bank2"),
                settlement: Settlement::Credited,
            },
            credited_report(&debited),
        ];
        let outcomes = store.apply_deliveries(&batch).await.unwrap();
        assert!(
            matches!(outcomes[0], DeliveryOutcome::Credit(CreditOutcome::Credited)),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[1], DeliveryOutcome::Credit(CreditOutcome::Duplicate { .. })),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], DeliveryOutcome::Credit(CreditOutcome::Refused(_))),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(
                outcomes[3],
                DeliveryOutcome::BadSettlement(StorageError::ForeignSettlement { .. })
            ),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(
                outcomes[4],
                DeliveryOutcome::BadSettlement(StorageError::UnknownTransfer(_))
            ),
            "{engine}: {outcomes:?}"
        );
        assert!(
            matches!(outcomes[5], DeliveryOutcome::Settlement(SettlementOutcome::Applied)),
            "{engine}: {outcomes:?}"
        );
        assert_eq!(
            balance(&store, "2").await,
            "3.00",
            "{engine}: 1 before, 2 now; nothing for the missing account"
        );
        let state = store.transfer_out(&debited.tx_no).await.unwrap().unwrap().state;
        assert_eq!(state, TransferState::Credited, "{engine}");
    }
}

#[tokio::test]
async fn a_returned_transfer_credits_the_source_back_exactly_once() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("250");
        store.debit_and_record(&t, None).await.unwrap();
        let returned = Settlement::Returned {
            reason: "account 2 is closed".into(),
        };
        let bank2 = bank("bank2");
        let apply = || store.apply_settlement(&t.tx_no, &bank2, &returned);
        assert_eq!(apply().await.unwrap(), SettlementOutcome::Applied, "{engine}");
        assert_eq!(apply().await.unwrap(), SettlementOutcome::AlreadyApplied, "{engine}");
        assert_eq!(balance(&store, "1").await, "10000.00", "{engine}");
        let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
        assert_eq!(record.state, TransferState::Returned, "{engine}");
        assert_eq!(record.reason.as_deref(), Some("account 2 is closed"), "{engine}");

        let err = store
            .apply_settlement(&t.tx_no, &bank("bank2"), &Settlement::Credited)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::SettlementConflict { .. }),
            "{engine}: {err}"
        );
    }
}

#[tokio::test]
async fn only_the_destination_bank_can_settle_a_transfer() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("1");
        store.debit_and_record(&t, None).await.unwrap();
        let err = store
            .apply_settlement(&t.tx_no, &bank("bank3"), &Settlement::Credited)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::ForeignSettlement { .. }), "{engine}: {err}");
        let err = store
            .apply_settlement(&TxNo::generate(), &bank("bank2"), &Settlement::Credited)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::UnknownTransfer(_)), "{engine}: {err}");
        assert_eq!(
            store
                .apply_settlement(&t.tx_no, &bank("bank2"), &Settlement::Credited)
                .await
                .unwrap(),
            SettlementOutcome::Applied,
            "{engine}"
        );
        assert_eq!(
            store.transfer_out(&t.tx_no).await.unwrap().unwrap().state,
            TransferState::Credited,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn a_transfer_within_one_bank_moves_money_in_one_transaction() {
    for (engine, store, _dir) in stores().await {
        let (from, to) = (party("bank1", "1"), party("bank1", "2"));
        let t = Transfer::new(
            TxNo::generate(),
            from.clone(),
            to.clone(),
            Amount::parse("12.34").unwrap(),
        )
        .unwrap();
        store.transfer_within(&t, None).await.unwrap();
        assert_eq!(balance(&store, "1").await, "9987.66", "{engine}");
        assert_eq!(balance(&store, "2").await, "12.34", "{engine}");
        assert_eq!(
            store.transfer_out(&t.tx_no).await.unwrap().unwrap().state,
            TransferState::Credited,
            "{engine}"
        );

        store.close_account(&no("2")).await.unwrap();
        let refused = Transfer::new(TxNo::generate(), from, to, Amount::parse("1").unwrap()).unwrap();
        let err = store.transfer_within(&refused, None).await.unwrap_err();
        assert!(matches!(err, StorageError::AccountClosed(_)), "{engine}: {err}");
        assert_eq!(balance(&store, "1").await, "9987.66", "{engine}: nothing moved");
        assert!(store.transfer_out(&refused.tx_no).await.unwrap().is_none(), "{engine}");
        let ledger = store.ledger().await.unwrap();
        assert!(txbank_domain::audit::audit(&[ledger], 0).is_clean(), "{engine}");
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
    let in_flight = txbank_domain::audit::audit(&[bank2.ledger().await.unwrap(), bank1.ledger().await.unwrap()], 0);
    assert!(in_flight.is_clean(), "{in_flight:?}");
    assert_eq!((in_flight.in_flight, in_flight.in_flight_cents), (1, 10_000));

    bank2.credit_once(&sent).await.unwrap();
    let ledgers = [bank2.ledger().await.unwrap(), bank1.ledger().await.unwrap()];
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

/// On an engine that locks rows, each report goes to one relay of the bank.
async fn each_report_in_the_outbox_goes_to_one_relay_of_the_bank(url: String) {
    let first = Store::connect(bank("bank2"), &url, 2).await.unwrap();
    first.migrate().await.unwrap();
    first
        .open_account_if_absent(&no("2"), &AccountName::parse("李四的账户").unwrap(), money("0"))
        .await
        .unwrap();
    let second = Store::connect(bank("bank2"), &url, 2).await.unwrap();
    for amount in ["1", "2", "3"] {
        first.credit_once(&transfer(amount)).await.unwrap();
    }
    let other_instance = &second;
    let removed = first
        .relay_outbox(&bank("bank1"), 10, |pending| async move {
            assert_eq!(pending.len(), 3);
            // Another instance's relay, meanwhile, finds nothing to send.
            let others = other_instance
                .relay_outbox(&bank("bank1"), 10, |theirs| async move {
                    assert!(theirs.is_empty(), "sent twice: {theirs:?}");
                    Vec::new()
                })
                .await
                .unwrap();
            assert_eq!(others, 0);
            // One report's send failed: it stays for the next round.
            pending.iter().skip(1).map(|report| report.tx_no.clone()).collect()
        })
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left = second.pending_settlements(10).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test]
async fn each_report_in_the_outbox_goes_to_one_relay_of_the_bank_on_mysql() {
    each_report_in_the_outbox_goes_to_one_relay_of_the_bank(fresh_mysql_database().await).await;
}

#[tokio::test]
async fn each_report_in_the_outbox_goes_to_one_relay_of_the_bank_on_postgres() {
    each_report_in_the_outbox_goes_to_one_relay_of_the_bank(fresh_postgres_database().await).await;
}

/// A book transfer of `amount` from `from` to `to` in bank1.
async fn move_within(store: &Store, from: &str, to: &str, amount: &str) {
    let t = Transfer::new(
        TxNo::generate(),
        party("bank1", from),
        party("bank1", to),
        Amount::parse(amount).unwrap(),
    )
    .unwrap();
    store.transfer_within(&t, None).await.unwrap();
}

#[tokio::test]
async fn a_return_its_source_cannot_take_back_is_held_on_the_books_until_it_can() {
    for (engine, store, _dir) in stores().await {
        store
            .open_account_if_absent(&no("rich"), &AccountName::parse("Rich").unwrap(), money("99999998.00"))
            .await
            .unwrap();
        let mut t = transfer("1");
        t.from = no("rich");
        store.debit_and_record(&t, None).await.unwrap();
        // The account fills to its maximum while the transfer is on its way.
        move_within(&store, "1", "rich", "2.99").await;
        let returned = Settlement::Returned {
            reason: "account 2 does not exist".into(),
        };
        let applied = store.apply_settlement(&t.tx_no, &bank("bank2"), &returned).await;
        assert_eq!(applied.unwrap(), SettlementOutcome::Applied, "{engine}");
        let record = store.transfer_out(&t.tx_no).await.unwrap().unwrap();
        assert_eq!(record.state, TransferState::Returned, "{engine}");
        assert_eq!(balance(&store, "rich").await, "99999999.99", "{engine}");
        let held = store.held_returns().await.unwrap();
        assert_eq!(held.len(), 1, "{engine}");
        assert_eq!(
            (&held[0].tx_no, held[0].amount.to_string()),
            (&t.tx_no, "1.00".into()),
            "{engine}"
        );
        assert!(held[0].reason.contains("maximum"), "{engine}: {}", held[0].reason);
        let ledger = store.ledger().await.unwrap();
        assert_eq!((ledger.held, ledger.held_cents), (1, 100), "{engine}");
        let report = txbank_domain::audit::audit(&[ledger], 0);
        assert!(report.is_clean(), "{engine}: {report:?}");

        // Applying the report again changes nothing; nothing is released while full.
        let again = store.apply_settlement(&t.tx_no, &bank("bank2"), &returned).await;
        assert_eq!(again.unwrap(), SettlementOutcome::AlreadyApplied, "{engine}");
        assert_eq!(store.release_held_returns().await.unwrap(), 0, "{engine}");

        move_within(&store, "rich", "1", "10").await;
        assert_eq!(store.release_held_returns().await.unwrap(), 1, "{engine}");
        assert_eq!(balance(&store, "rich").await, "99999990.99", "{engine}");
        assert!(store.held_returns().await.unwrap().is_empty(), "{engine}");
        let report = txbank_domain::audit::audit(&[store.ledger().await.unwrap()], 0);
        assert!(report.is_clean() && report.held == 0, "{engine}: {report:?}");
    }
}

#[tokio::test]
async fn a_return_to_a_closed_account_is_held() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("3");
        store.debit_and_record(&t, None).await.unwrap();
        move_within(&store, "1", "2", "9997").await;
        store.close_account(&no("1")).await.unwrap();
        let returned = Settlement::Returned {
            reason: "account 2 is closed".into(),
        };
        let applied = store.apply_settlement(&t.tx_no, &bank("bank2"), &returned).await;
        assert_eq!(applied.unwrap(), SettlementOutcome::Applied, "{engine}");
        let held = store.held_returns().await.unwrap();
        assert_eq!(held.len(), 1, "{engine}");
        assert!(held[0].reason.contains("closed"), "{engine}: {}", held[0].reason);
        assert_eq!(store.release_held_returns().await.unwrap(), 0, "{engine}");
        let report = txbank_domain::audit::audit(&[store.ledger().await.unwrap()], 0);
        assert!(report.is_clean(), "{engine}: {report:?}");
    }
}

/// One delivery the schema refuses (here a constraint planted for the test) fails on its
/// own: the others of its batch are applied.
#[tokio::test]
async fn a_delivery_that_cannot_apply_never_holds_back_the_rest_of_its_batch() {
    for (engine, url, _dir) in databases().await {
        let store = Store::connect(bank("bank1"), &url, 4).await.unwrap();
        store.migrate().await.unwrap();
        for account in ["2", "poison"] {
            store
                .open_account_if_absent(&no(account), &AccountName::parse("李四的账户").unwrap(), money("0"))
                .await
                .unwrap();
        }
        sqlx::any::install_default_drivers();
        let mut raw = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
        let plant = match engine {
            "sqlite" => {
                "CREATE TRIGGER poison BEFORE INSERT ON transfer_in WHEN NEW.to_account = 'poison'
                 BEGIN SELECT RAISE(ABORT, 'poison'); END"
            }
            _ => "ALTER TABLE transfer_in ADD CONSTRAINT poison CHECK (to_account <> 'poison')",
        };
        sqlx::Executor::execute(&mut raw, plant).await.unwrap();

        let batch: Vec<Delivery> = [transfer("1"), transfer_to("poison", "2"), transfer("3")]
            .into_iter()
            .map(Delivery::Transfer)
            .collect();
        let outcomes = store.apply_deliveries(&batch).await.unwrap();
        assert!(
            matches!(
                outcomes[..],
                [
                    DeliveryOutcome::Credit(CreditOutcome::Credited),
                    DeliveryOutcome::Failed(_),
                    DeliveryOutcome::Credit(CreditOutcome::Credited)
                ]
            ),
            "{engine}: {outcomes:?}"
        );
        if let DeliveryOutcome::Failed(error) = &outcomes[1] {
            // A constraint fails the same way every time, where the driver names it.
            assert!(engine == "sqlite" || !error.is_transient(), "{engine}: {error}");
        }
        assert_eq!(balance(&store, "2").await, "4.00", "{engine}");
        assert_eq!(
            balance(&store, "poison").await,
            "0.00",
            "{engine}: nothing of it changed"
        );
    }
}

#[tokio::test]
async fn reports_to_one_bank_never_wait_behind_reports_to_another() {
    for (engine, store, _dir) in stores().await {
        let mut stuck = Vec::new();
        for amount in ["1", "2", "3"] {
            let mut t = transfer(amount);
            t.from_bank = bank("bank3");
            store.credit_once(&t).await.unwrap();
            stuck.push(t);
        }
        let t = transfer("4");
        store.credit_once(&t).await.unwrap();
        let to_bank1 = store
            .relay_outbox(&bank("bank1"), 2, |pending| async move {
                pending.into_iter().map(|report| report.tx_no).collect()
            })
            .await
            .unwrap();
        assert_eq!(to_bank1, 1, "{engine}: bank1's report went out past bank3's older ones");
        let left = store.pending_settlements(10).await.unwrap();
        assert!(
            left.iter().all(|report| report.to_bank == bank("bank3")),
            "{engine}: {left:?}"
        );
        assert_eq!(left.len(), 3, "{engine}");
    }
}

/// Two processes' worth of connections on one SQLite file: a transaction that reads
/// before it writes (a seed-format number is checked against the archive horizon first)
/// waits for the other writer instead of failing at once with `SQLITE_BUSY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_credit_that_reads_first_waits_for_another_processs_writer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
    let first = Store::connect(bank("bank2"), &url, 2).await.unwrap();
    first.migrate().await.unwrap();
    first
        .open_account_if_absent(&no("2"), &AccountName::parse("李四的账户").unwrap(), money("0"))
        .await
        .unwrap();
    let second = Store::connect(bank("bank2"), &url, 2).await.unwrap();
    let holding = tokio::spawn(async move { first.hold_write_lock(std::time::Duration::from_millis(500)).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut seed = transfer("1");
    seed.tx_no = TxNo::parse("TX-1001").unwrap();
    let credited = second.credit_once(&seed).await;
    holding.await.unwrap().unwrap();
    assert_eq!(credited.unwrap(), CreditOutcome::Credited);
    assert_eq!(balance(&second, "2").await, "1.00");
}

#[tokio::test]
async fn a_payment_queued_while_the_broker_is_away_is_debited_and_sent_by_one_instance() {
    for (engine, store, _dir) in stores().await {
        let t = transfer("10");
        assert_eq!(
            store.debit_and_queue(&t, None, 2).await.unwrap(),
            DebitOutcome::Debited,
            "{engine}"
        );
        assert_eq!(balance(&store, "1").await, "9990.00", "{engine}");
        assert_eq!(
            store.transfer_out(&t.tx_no).await.unwrap().unwrap().state,
            TransferState::Debited
        );
        store.debit_and_queue(&transfer("1"), None, 2).await.unwrap();
        let refused = store.debit_and_queue(&transfer("1"), None, 2).await;
        assert!(
            matches!(refused, Err(StorageError::QueueFull { waiting: 2 })),
            "{engine}: {refused:?}"
        );
        assert_eq!(
            balance(&store, "1").await,
            "9989.00",
            "{engine}: the refused payment moved nothing"
        );

        let unsent = store.unsent(10).await.unwrap();
        assert_eq!(unsent.len(), 2, "{engine}");
        assert_eq!(unsent[0], t, "{engine}: oldest first");
        let lease = std::time::Duration::from_secs(30);
        assert!(store.claim_unsent(&t.tx_no, lease).await.unwrap(), "{engine}");
        assert!(
            !store.claim_unsent(&t.tx_no, lease).await.unwrap(),
            "{engine}: claimed once"
        );
        assert_eq!(
            store.unsent(10).await.unwrap().len(),
            1,
            "{engine}: a claimed one is not offered"
        );
        store.release_unsent(std::slice::from_ref(&t.tx_no)).await.unwrap();
        assert!(
            store.claim_unsent(&t.tx_no, lease).await.unwrap(),
            "{engine}: released, claimable again"
        );
        store.unsent_delivered(std::slice::from_ref(&t.tx_no)).await.unwrap();
        assert_eq!(store.unsent_backlog().await.unwrap().0, 1, "{engine}");
        let ledger = store.ledger().await.unwrap();
        assert_eq!(ledger.queued, 1, "{engine}");
        assert!(txbank_domain::audit::audit(&[ledger], 0).is_clean(), "{engine}");
    }
}
