//! Delivery that does not depend on the broker keeping every message: the sender's books
//! re-drive what stays unsettled, the receiver answers a transfer it already applied
//! again, and a receiver consumes a broker that lost its store from the start of its
//! queues.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{all_credited, audit_is_clean, counts, eventually, Cluster, Db};

/// Re-drive after two seconds, so that the tests see it soon.
const REDRIVE_SOON: (&str, &str) = ("TXBANK_REDRIVE_AFTER_SECS", "2");

#[tokio::test(flavor = "multi_thread")]
async fn transfers_stranded_by_a_broker_that_lost_its_store_are_redriven_and_credited_once() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1.start_with(&[REDRIVE_SOON]).await;

    bank2.pause();
    for _ in 0..10 {
        bank1.pay("1").await;
    }
    cluster.lose_broker_store().await;
    bank2.resume();

    assert!(
        bank2.balance_becomes("2", "10.00").await,
        "stranded transfers never arrived; bank1 log:\n{}",
        bank1.log_text()
    );
    assert!(all_credited(&bank1).await, "{:?}", bank1.outgoing().await);
    let redriven = bank1.metric("txbank_transfers_redriven_total{bank=\"bank1\"}").await;
    assert!(redriven.unwrap_or(0.0) >= 1.0, "{redriven:?}");
    assert!(bank1.log_text().contains("re-driving the transfer"));
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [10, 10, 0]);
}

/// bank2 had consumed 40 messages when the broker lost its store, so its first pull from
/// the new broker commits an offset past the end of the emptied queues. The transfers
/// sent after the loss arrive without any re-drive (it would come only after an hour):
/// bank2 consumes its queues again from their start.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_had_consumed_before_the_broker_lost_its_store_consumes_what_comes_after() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1
        .start_with(&[
            ("TXBANK_REDRIVE_AFTER_SECS", "3600"),
            ("TXBANK_TRANSFERS_PER_MESSAGE", "1"),
        ])
        .await;
    for _ in 0..40 {
        bank1.pay("1").await;
    }
    assert!(bank2.balance_becomes("2", "40.00").await);

    cluster.lose_broker_store().await;
    // Until the broker has the topic again, bank1 refuses transfers (503) and debits nothing.
    let paid = AtomicUsize::new(0);
    let all_paid = eventually(|| async {
        let (status, _) = bank1
            .post_transfer(serde_json::json!({"from": "1", "to": "2", "amount": "1"}))
            .await;
        status == 201 && paid.fetch_add(1, Ordering::SeqCst) + 1 == 4
    })
    .await;
    assert!(all_paid, "bank1 took only {paid:?} transfers after the loss");

    assert!(
        bank2.balance_becomes("2", "44.00").await,
        "transfers sent after the loss never arrived; bank2 log:\n{}",
        bank2.log_text()
    );
    assert!(bank2.log_text().contains("consumer offset past the end of its queue"));
    let rewound = bank2
        .metric("txbank_consumer_offsets_rewound_total{bank=\"bank2\"}")
        .await;
    assert!(rewound.unwrap_or(0.0) >= 1.0, "{rewound:?}");
    assert_eq!(
        bank1.metric("txbank_transfers_redriven_total{bank=\"bank1\"}").await,
        Some(0.0)
    );
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [44, 44, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_settlement_report_lost_on_its_way_back_heals() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    bank1.start_with(&[REDRIVE_SOON]).await;

    // bank2 credits only once bank1 has stopped, so bank1 cannot read the report before
    // the broker loses it.
    bank2.pause();
    bank1.pay("1").await;
    bank1.pause();
    bank2.resume();
    assert!(bank2.balance_becomes("2", "1.00").await);
    let repeated = || async { bank2.metric("txbank_reports_repeated_total{bank=\"bank2\"}").await };
    assert_eq!(repeated().await, Some(0.0));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    cluster.lose_broker_store().await;
    bank1.resume();

    assert!(all_credited(&bank1).await, "{:?}", bank1.outgoing().await);
    assert!(repeated().await.unwrap_or(0.0) >= 1.0);
    assert_eq!(bank2.balance("2").await, "1.00", "credited once");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_message_naming_a_real_transfer_is_refused_and_answered_with_nothing() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start().await;
    // Re-drive as configured (a minute): a re-driven copy of the transfer, which bank2
    // rightly answers again, must not arrive while the test counts the answers.
    bank1.start().await;
    let tx_no = bank1.pay("1").await;
    assert!(all_credited(&bank1).await);
    let repeated = || async { bank2.metric("txbank_reports_repeated_total{bank=\"bank2\"}").await };
    let repeated_before = repeated().await;

    let wrong_key = cluster.dir.path().join("wrong-key");
    std::fs::write(&wrong_key, "w".repeat(40)).unwrap();
    let forged = format!(
        r#"{{"accountChange":{{"accountNo":"1","amount":500,"txNo":"{tx_no}"}},"fromBank":"bank1","toBank":"bank2","toAccountNo":"2","version":1}}"#
    );
    cluster.publish(&forged, &tx_no, Some(&wrong_key), 1);
    let refused = eventually(|| async {
        let series = "txbank_messages_set_aside_total{bank=\"bank2\",reason=\"unauthenticated\"}";
        bank2.metric(series).await.unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(refused, "the forged message was not set aside");
    assert_eq!(bank2.balance("2").await, "1.00");
    assert_eq!(repeated().await, repeated_before, "a forged message is not answered");
}
