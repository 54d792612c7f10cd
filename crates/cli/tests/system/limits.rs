//! A bank answers at most `max_concurrent_requests` requests at once, and holds at most
//! 16,384 transfers waiting for a message: past either, a transfer is refused at once
//! with `503 overloaded` and moves nothing, while liveness is still answered.

use std::time::Duration;

use crate::support::{audit_is_clean, Cluster, Db};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_limit_is_refused_at_once_and_moves_nothing() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start_with(&[("TXBANK_MAX_CONCURRENT_REQUESTS", "1")]).await;
    bank2.start().await;
    // With the broker stopped, a payment waits seconds for its half message to be
    // stored (then it is queued): the one request the bank answers meanwhile.
    cluster.pause_broker();
    let (first, (second, live)) = tokio::join!(
        bank1.post_transfer(json!({"from": "1", "to": "2", "amount": "1"})),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let second = bank1
                .post_transfer(json!({"from": "1", "to": "2", "amount": "2"}))
                .await;
            (second, bank1.get("/healthz").await)
        }
    );
    cluster.resume_broker();

    assert_eq!(second.0, 503, "{}", second.1);
    assert_eq!(second.1["error"]["code"], "overloaded");
    assert_eq!(live.0, 200, "liveness is answered whatever the load");
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(bank1.balance("1").await, "9999.00", "only the first payment moved");
    assert!(bank2.balance_becomes("2", "1.00").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_transfers_waiting_for_a_message_a_transfer_is_refused_and_moves_nothing() {
    let (mut cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    // With the broker stopped, the messages on their way wait for their half message to
    // be stored, and the transfers behind them wait in the producer's queue. The broker
    // comes back well within the half messages' 10 s of retries, once every transfer
    // has reached the queue or been refused (a fraction of a second).
    cluster.pause_broker();
    let batch = |_| -> Value {
        let transfers: Vec<Value> = (0..1000)
            .map(|_| json!({"from": "1", "to": "2", "amount": "0.01"}))
            .collect();
        json!({ "transfers": transfers })
    };
    let flood = bank1.post_at_once("/transfers/batch", (0..17).map(batch).collect());
    let (answers, ()) = tokio::join!(flood, async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.resume_broker();
    });

    let mut results = Vec::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        results.extend(answer["results"].as_array().unwrap().iter().cloned());
    }
    let overloaded = results
        .iter()
        .filter(|result| result["status"] == 503 && result["error"]["error"]["code"] == "overloaded")
        .count();
    let accepted = results
        .iter()
        .filter(|result| matches!(result["status"].as_u64(), Some(201 | 202)))
        .count();
    assert!(overloaded > 0, "17,000 transfers at once fit: {:?}", results.first());
    assert_eq!(
        accepted + overloaded,
        17_000,
        "every transfer was accepted or refused as overloaded"
    );
    let moved = format!("{}.{:02}", accepted / 100, accepted % 100);
    assert!(
        bank2.balance_becomes("2", &moved).await,
        "bank2 holds {}",
        bank2.balance("2").await
    );
    let left = 1_000_000 - accepted;
    assert_eq!(bank1.balance("1").await, format!("{}.{:02}", left / 100, left % 100));
    audit_is_clean(&bank2, &bank1);
}
