//! Payments taken while the broker is away: debited and queued in the sender's books,
//! their messages sent the moment a broker answers, each credited once; past the bound
//! nothing moves; a bank killed with payments queued sends them after its restart.

use crate::support::{audit_is_clean, counts, eventually, Bank, Cluster, Db};
use serde_json::json;

/// `amount` from Zhang San to Li Si, `times` times at once.
async fn pay_at_once(bank: &Bank, amount: &str, times: usize) -> Vec<(u16, serde_json::Value)> {
    let body = json!({"from": "1", "to": "2", "amount": amount});
    bank.post_transfers_at_once(vec![body; times]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_taken_while_the_broker_is_away_are_credited_once_it_is_back() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    bank1.pay("1.00").await;
    assert!(bank2.balance_becomes("2", "1.00").await);

    cluster.kill_broker();
    let answers = pay_at_once(&bank1, "2.50", 100).await;
    for (status, body) in &answers {
        assert_eq!((*status, body["state"].as_str()), (201, Some("queued")), "{body}");
    }
    assert_eq!(bank1.balance("1").await, "9749.00", "every queued payment is debited");
    let (_, books) = bank1.get("/audit").await;
    assert_eq!(
        (books["queued"].clone(), books["balanced"].clone()),
        (json!(100), json!(true)),
        "{books}"
    );
    assert_eq!(
        bank1.metric(r#"txbank_transfers_queued{bank="bank1"}"#).await,
        Some(100.0)
    );

    cluster.start_broker().await;
    assert!(
        bank2.balance_becomes("2", "251.00").await,
        "the queued payments were not all credited: {}",
        bank2.balance("2").await
    );
    for (_, body) in &answers {
        let tx_no = body["tx_no"].as_str().unwrap();
        assert_eq!(bank1.transfer_becomes(tx_no, "credited").await["state"], "credited");
    }
    assert!(eventually(|| async { bank1.get("/audit").await.1["queued"] == json!(0) }).await);
    assert!(
        bank1.log_text().contains("debited and queued"),
        "no log line says a payment was queued"
    );
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["credited", "in_flight"]), [101, 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_bound_a_payment_is_refused_and_a_restarted_bank_sends_what_it_queued() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start_with(&[("TXBANK_MOST_QUEUED", "2")]).await;
    bank2.start().await;
    bank1.pay("1.00").await;
    assert!(bank2.balance_becomes("2", "1.00").await);

    cluster.kill_broker();
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.extend(pay_at_once(&bank1, "5.00", 1).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [201, 201, 503], "{answers:?}");
    assert_eq!(answers[2].1["error"]["code"], "broker_unavailable", "{answers:?}");
    assert_eq!(bank1.balance("1").await, "9989.00", "the refused payment moved nothing");

    bank1.kill();
    cluster.start_broker().await;
    bank1.start_with(&[("TXBANK_MOST_QUEUED", "2")]).await;
    assert!(
        bank2.balance_becomes("2", "11.00").await,
        "the payments queued before the kill were not credited: {}",
        bank2.balance("2").await
    );
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["credited", "in_flight"]), [3, 0]);
}
