//! Crashes, failures and pauses at the fault points of the transfer path, with real
//! `txbank-lab` processes: check-back settles every half message, redelivery credits
//! once, and nothing is lost.

#[path = "../../cli/tests/system/support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;
use support::{all_credited, audit_is_clean, counts, eventually, send, Cluster, Db, API_TOKEN};

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_half_message_and_local_commit_is_rolled_back_by_check_back() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1
        .start_with(&[("TXBANK_CRASH_AT", "before-local-transaction")])
        .await;

    bank1.pay_and_die("100").await;
    assert!(bank1.outgoing().await.is_empty(), "nothing was debited");

    bank1.start().await;
    let settled = eventually(|| async { bank1.outgoing().await.iter().any(|(_, state)| state == "rolled_back") }).await;
    assert!(
        settled,
        "check-back never settled the half message; bank1 log:\n{}",
        bank1.log_text()
    );
    assert_eq!(bank1.balance("1").await, "10000.00");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bank2.balance("2").await,
        "0.00",
        "a rolled-back message must never be delivered"
    );
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["rolled_back", "credited"]), [1, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_local_commit_and_commit_is_committed_by_check_back() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1.start_with(&[("TXBANK_CRASH_AT", "after-local-commit")]).await;

    bank1.pay_and_die("100").await;

    bank1.start().await;
    assert_eq!(bank1.balance("1").await, "9900.00", "the debit had committed");
    assert!(
        bank2.balance_becomes("2", "100.00").await,
        "check-back never committed the message"
    );
    let outgoing = bank1.outgoing().await;
    assert_eq!(outgoing.len(), 1);
    let settled = bank1.transfer_becomes(&outgoing[0].0, "credited").await;
    assert_eq!(settled["state"], "credited", "bank2 reports the credit back: {settled}");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_a_shared_local_commit_and_commit_is_committed_by_check_back() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1
        .start_with(&[("TXBANK_CRASH_AT", "after-shared-local-commit")])
        .await;

    // Enough at once that several share a message; bank1 dies once such a message's
    // transfers are debited, before it commits the message.
    let answers = bank1
        .post_transfers_at_once(
            (0..40)
                .map(|_| json!({"from": "1", "to": "2", "amount": "1"}))
                .collect(),
        )
        .await;
    assert!(answers.iter().any(|(status, _)| *status == 0), "bank1 never died");
    bank1.kill();
    bank1.start().await;

    let outgoing = bank1.outgoing().await;
    let debited = outgoing.iter().filter(|(_, state)| state != "rolled_back").count();
    assert!(
        debited >= 2,
        "the shared message's transfers were not debited: {outgoing:?}"
    );
    assert!(
        bank2.balance_becomes("2", &format!("{debited}.00")).await,
        "check-back never committed the shared message"
    );
    let settled = eventually(|| async {
        let report = audit_is_clean(&bank2, &bank1);
        counts(&report, &["in_flight"]) == [0]
    })
    .await;
    assert!(settled, "transfers stayed in flight");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["credited"]), [debited as u64]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_credit_before_acknowledgement_credits_once() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start_with(&[("TXBANK_CRASH_AT", "after-credit-commit")]).await;

    bank1.pay("100").await;
    bank2.process.as_mut().unwrap().wait_exit().await;

    bank2.start().await;
    let redelivered = eventually(|| async { bank2.log_text().contains("duplicate delivery absorbed") }).await;
    assert!(
        redelivered,
        "the unacknowledged message was never delivered again; log:\n{}",
        bank2.log_text()
    );
    assert_eq!(
        bank2.balance("2").await,
        "100.00",
        "the same message delivered twice credits once"
    );
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_made_while_bank2_is_down_are_credited_after_it_starts() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;

    for amount in ["10", "20.50", "0.01"] {
        bank1.pay(amount).await;
    }
    assert_eq!(bank1.balance("1").await, "9969.49");

    bank2.start().await;
    assert!(bank2.balance_becomes("2", "30.51").await, "bank2 did not catch up");
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_loses_nothing() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    bank1.pay("1").await;
    assert!(bank2.balance_becomes("2", "1.00").await);

    // Messages stored while bank2 is down must survive the broker being killed.
    bank2.kill();
    for _ in 0..5 {
        bank1.pay("2").await;
    }
    cluster.kill_broker();
    cluster.start_broker().await;
    bank2.start().await;
    assert!(
        bank2.balance_becomes("2", "11.00").await,
        "messages stored before the broker restart were lost"
    );

    // And bank1 keeps sending through the restarted broker.
    let sent_again = eventually(|| async {
        let (status, _) = bank1
            .post_transfer(json!({"from": "1", "to": "2", "amount": "4"}))
            .await;
        status == 201
    })
    .await;
    assert!(sent_again, "bank1 never reconnected to the restarted broker");
    assert!(bank2.balance_becomes("2", "15.00").await);
    assert_eq!(bank1.balance("1").await, "9985.00");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited"]), [7, 7]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_inside_the_local_transaction_loses_the_debit_and_check_back_rolls_back() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1
        .start_with(&[("TXBANK_CRASH_AT", "inside-local-transaction")])
        .await;
    bank1.pay_and_die("100").await;

    bank1.start().await;
    assert_eq!(
        bank1.balance("1").await,
        "10000.00",
        "the uncommitted debit must be gone"
    );
    let settled = eventually(|| async { bank1.outgoing().await.iter().any(|(_, state)| state == "rolled_back") }).await;
    assert!(settled, "check-back never settled the half message");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["rolled_back", "debited", "credited"]), [1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_while_answering_a_check_back_is_answered_the_same_way_next_time() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1.start_with(&[("TXBANK_CRASH_AT", "after-local-commit")]).await;
    bank1.pay_and_die("100").await;

    // The broker's check-back finds the debit committed, and kills bank1 before it answers.
    bank1.start_with(&[("TXBANK_CRASH_AT", "answering-check-back")]).await;
    bank1.process.as_mut().unwrap().wait_exit().await;

    bank1.start().await;
    assert!(
        bank2.balance_becomes("2", "100.00").await,
        "the next check-back never committed the message"
    );
    assert_eq!(bank1.balance("1").await, "9900.00");
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_broker_in_the_middle_of_a_burst_leaves_every_transfer_settled() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    let url = bank1.url();
    let burst = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let sends = (0..60).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let _ = client
                    .post(format!("{url}/transfers"))
                    .bearer_auth(API_TOKEN)
                    .json(&json!({"from": "1", "to": "2", "amount": "1"}))
                    .send()
                    .await;
            }
        });
        futures_join_all(sends).await;
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.kill_broker();
    burst.await.unwrap();
    cluster.start_broker().await;

    // Every transfer ends debited-and-credited or rolled back; nothing stays in flight.
    let settled = eventually(|| async {
        let report = audit_is_clean(&bank2, &bank1);
        counts(&report, &["in_flight"]) == [0]
    })
    .await;
    assert!(settled, "transfers stayed in flight after the broker came back");
    let report = audit_is_clean(&bank2, &bank1);
    let [debited, credited] = counts(&report, &["debited", "credited"])[..] else {
        unreachable!()
    };
    assert!(debited > 0, "no transfer went through before the broker was killed");
    assert_eq!(debited, credited);
    assert_eq!(bank2.balance("2").await, format!("{debited}.00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_pause_longer_than_the_send_timeout_delays_a_transfer_but_does_not_fail_it() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    bank1.pay("1").await;
    assert!(bank2.balance_becomes("2", "1.00").await);

    // The half message's first attempt waits in the paused broker past the 3 s send
    // timeout; a later one is stored once the broker goes on.
    cluster.pause_broker();
    let url = bank1.url();
    let transfer = tokio::spawn(async move {
        send(
            reqwest::Client::new()
                .post(format!("{url}/transfers"))
                .bearer_auth(API_TOKEN)
                .json(&json!({"from": "1", "to": "2", "amount": "2"})),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.resume_broker();

    let (status, body) = transfer.await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(bank1.metric("txbank_half_messages_resent_total{bank=\"bank1\"}").await >= Some(1.0));
    assert!(bank2.balance_becomes("2", "3.00").await);
    assert_eq!(bank1.balance("1").await, "9997.00");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited"]), [2, 2]);
}

/// Runs the futures concurrently and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_inside_the_local_transaction_rolls_back_and_delivers_nothing() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1
        .start_with(&[("TXBANK_FAIL_AT", "inside-local-transaction")])
        .await;
    bank2.start().await;

    let (status, failed) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "50"}))
        .await;
    assert_eq!(status, 503, "{failed}");
    assert_eq!(failed["error"]["code"], "database_unavailable");
    let (_, state) = bank1
        .get(&format!("/transfers/{}", failed["tx_no"].as_str().unwrap()))
        .await;
    assert_eq!(state["state"], "rolled_back");
    assert_eq!(bank1.balance("1").await, "10000.00");

    bank1.kill();
    bank1.start().await;
    bank1.pay("2").await;
    assert!(bank2.balance_becomes("2", "2.00").await);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        bank2.balance("2").await,
        "2.00",
        "the failed transfer must never arrive"
    );
}

/// The local transaction stays open 5 s, past the broker's 1 s transaction timeout: the
/// check-back comes while it is open, waits for it (the check-back's rollback marker
/// conflicts with the open debit's row), and answers COMMIT once it commits: the
/// transfer is debited and credited once, never also rolled back.
async fn a_paused_local_transaction_ends_in_one_outcome(db: Db) {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(db).await;
    bank2.start().await;
    bank1
        .start_with(&[
            ("TXBANK_PAUSE_AT", "inside-local-transaction"),
            ("TXBANK_PAUSE_MS", "5000"),
        ])
        .await;

    let (status, body) = bank1
        .post_transfer(serde_json::json!({"from": "1", "to": "2", "amount": "1"}))
        .await;
    assert_eq!(status, 201, "a debit held open still commits: {body}");
    let checked_back = eventually(|| async {
        let series = "txbank_check_backs_total{bank=\"bank1\",verdict=\"commit\"}";
        bank1.metric(series).await.unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(checked_back, "the broker checked back while the debit was open");
    assert!(bank2.balance_becomes("2", "1.00").await);
    assert!(all_credited(&bank1).await);
    assert_eq!(bank1.balance("1").await, "9999.00");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "rolled_back"]), [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_transaction_paused_past_the_check_back_ends_in_one_outcome_on_sqlite() {
    a_paused_local_transaction_ends_in_one_outcome(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_transaction_paused_past_the_check_back_ends_in_one_outcome_on_mysql() {
    a_paused_local_transaction_ends_in_one_outcome(Db::MySql).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_transaction_paused_past_the_check_back_ends_in_one_outcome_on_postgres() {
    a_paused_local_transaction_ends_in_one_outcome(Db::Postgres).await;
}
