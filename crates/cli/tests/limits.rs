//! A bank answers at most `max_concurrent_requests` requests at once: past that, a
//! request is refused at once with `503 overloaded` and moves nothing, while liveness
//! is still answered.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Cluster, Db};

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
