//! The seed's flow end to end on real processes: bank1 debits and sends a transactional
//! message, bank2 credits it exactly once; refusals roll back and deliver nothing.

use crate::support::{audit_is_clean, counts, Cluster, Db};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn seed_transfer_moves_100_from_zhang_san_to_li_si() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    let (status, body) = bank1.get("/transfer?accountNo=1&amount=100").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "debited");

    assert_eq!(bank1.balance("1").await, "9900.00");
    assert!(bank2.balance_becomes("2", "100.00").await, "Li Si was never credited");
    let (_, account) = bank2.get("/accounts/2").await;
    assert_eq!(
        account,
        json!({"account_no": "2", "account_name": "李四的账户", "balance": "100.00"})
    );
}

/// A bank sets its allocator up inside the process: it never starts itself again with
/// an environment of its own (docs/PERFORMANCE.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_bank_runs_in_the_environment_it_was_started_with() {
    let (_cluster, mut bank1, _bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;

    let process = bank1.process.as_ref().unwrap();
    assert_eq!(
        process.environment_variable("GLIBC_TUNABLES"),
        std::env::var("GLIBC_TUNABLES").ok()
    );
    assert_eq!(bank1.balance("1").await, "10000.00");
}

/// The seed's flow, in two transfers, on a database server.
async fn the_whole_flow_runs_on(db: Db) {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(db).await;
    bank1.start().await;
    bank2.start().await;

    let tx_no = bank1.pay("0.10").await;
    bank1.pay("99.90").await;

    assert_eq!(bank1.balance("1").await, "9900.00");
    assert!(bank2.balance_becomes("2", "100.00").await);
    let transfer = bank1.transfer_becomes(&tx_no, "credited").await;
    assert_eq!(transfer["state"], "credited", "{transfer}");
    assert_eq!(transfer["amount"], "0.10");
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_flow_runs_on_mariadb_too() {
    the_whole_flow_runs_on(Db::MySql).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_flow_runs_on_postgres_too() {
    the_whole_flow_runs_on(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn overdraft_is_rolled_back_and_never_delivered() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    let (status, refused) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "10000.01"}))
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "insufficient_funds");
    let refused_tx = refused["tx_no"].as_str().unwrap();
    let (_, state) = bank1.get(&format!("/transfers/{refused_tx}")).await;
    assert_eq!(state["state"], "rolled_back");

    // A later transfer arrives; had the refused one been delivered, it would be there too.
    bank1.pay("1").await;
    assert!(bank2.balance_becomes("2", "1.00").await);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(bank2.balance("2").await, "1.00");
    assert_eq!(bank1.balance("1").await, "9999.00");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["rolled_back", "credited"]), [1, 1]);
}

/// Fault points belong to the lab (`txbank-lab`): banks of the product that inherit the
/// lab's variables pay as usual and stay up.
#[tokio::test(flavor = "multi_thread")]
async fn the_product_ignores_the_labs_fault_points() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1
        .start_with(&[
            ("TXBANK_CRASH_AT", "before-local-transaction"),
            ("TXBANK_FAIL_AT", "inside-local-transaction"),
        ])
        .await;
    bank2.start_with(&[("TXBANK_CRASH_AT", "after-credit-commit")]).await;

    let (status, body) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "50"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(bank2.balance_becomes("2", "50.00").await);
    assert_eq!(bank1.balance("1").await, "9950.00");
    for bank in [&mut bank1, &mut bank2] {
        assert!(bank.process.as_mut().unwrap().is_running(), "{}", bank.log_text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_request_with_the_same_idempotency_key_debits_once() {
    let cluster = Cluster::start().await;
    let mut bank1 = cluster.bank("bank1", Db::Sqlite).await;
    bank1.start().await;

    let request = json!({"from": "1", "to": "2", "amount": "7.25", "idempotency_key": "invoice-17"});
    let (first_status, first) = bank1.post_transfer(request.clone()).await;
    let (again_status, again) = bank1.post_transfer(request).await;
    assert_eq!((first_status, again_status), (201, 200));
    assert_eq!(first["tx_no"], again["tx_no"]);
    assert_eq!(bank1.balance("1").await, "9992.75");

    let (status, reused) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "8", "idempotency_key": "invoice-17"}))
        .await;
    assert_eq!(status, 409, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    assert_eq!(bank1.balance("1").await, "9992.75");
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_sent_at_the_same_moment_share_messages_and_a_refusal_stays_its_own() {
    share_messages_and_refuse_alone(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_share_messages_on_mariadb_too() {
    share_messages_and_refuse_alone(Db::MySql).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_share_messages_on_postgres_too() {
    share_messages_and_refuse_alone(Db::Postgres).await;
}

async fn share_messages_and_refuse_alone(db: Db) {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(db).await;
    bank1.start().await;
    bank2.start().await;

    // 40 transfers of 1.00 from Zhang San, and 4 of 2,000.00 from Wang Wu, whose
    // 5,000.00 cover only two of them.
    let small = (0..40).map(|_| json!({"from": "1", "to": "2", "amount": "1"}));
    let large = (0..4).map(|_| json!({"from": "3", "to": "2", "amount": "2000"}));
    let answers = bank1.post_transfers_at_once(small.chain(large).collect()).await;

    let (small, large) = answers.split_at(40);
    assert!(small.iter().all(|(status, _)| *status == 201), "{small:?}");
    let mut statuses: Vec<u16> = large.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 201, 422, 422], "{large:?}");
    for (_, refused) in large.iter().filter(|(status, _)| *status == 422) {
        assert_eq!(refused["error"]["code"], "insufficient_funds", "{refused}");
    }
    assert_eq!(bank1.balance("1").await, "9960.00");
    assert_eq!(bank1.balance("3").await, "1000.00");
    assert!(
        bank2.balance_becomes("2", "4040.00").await,
        "not every debit was credited"
    );

    let messages = bank1
        .metric("txbank_broker_call_seconds_count{bank=\"bank1\",operation=\"transactional_send\"}")
        .await
        .expect("bank1 counts its transactional sends");
    assert!(
        messages < 42.0,
        "42 debited transfers took {messages} messages: none were shared"
    );
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["rolled_back", "credited", "in_flight"]), [2, 42, 0]);
}
