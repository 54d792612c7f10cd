//! Bulk payments through `POST /transfers/batch` on real processes: each transfer with its
//! own outcome and idempotency key, or an all-or-nothing group that moves whole or not
//! at all.

use crate::support::{audit_is_clean, Cluster, Db};
use serde_json::{json, Value};

/// `count` transfers of `amount` from Zhang San (`1`) to Li Si (`2` in bank2), keyed
/// `{key}-0`, `{key}-1`, ...
fn payroll(count: usize, amount: &str, key: &str) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"from": "1", "to": "2", "to_bank": "bank2", "amount": amount, "idempotency_key": format!("{key}-{i}")}))
        .collect()
}

fn outcomes(answer: &Value) -> Vec<&str> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["outcome"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_transfer_of_a_batch_has_its_own_outcome_and_a_retry_pays_nobody_twice() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    let mut transfers = payroll(300, "1.00", "june");
    transfers.push(json!({"from": "1", "to": "2", "to_bank": "bank2", "amount": "20000.00"}));
    transfers.push(json!({"from": "1", "to": "2", "to_bank": "bank2", "amount": "0.001"}));
    transfers.push(json!({"from": "1", "to": "3", "to_bank": "bank1", "amount": "5.00"}));
    let (status, answer) = bank1.post("/transfers/batch", json!({"transfers": transfers})).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 303);
    assert!(
        results[..300]
            .iter()
            .all(|r| r["outcome"] == "debited" && r["status"] == 201),
        "{answer}"
    );
    assert_eq!(results[300]["outcome"], "refused");
    assert_eq!(results[300]["error"]["error"]["code"], "insufficient_funds");
    assert_eq!(results[301]["status"], 400);
    assert_eq!(results[301]["error"]["error"]["code"], "invalid_amount");
    assert_eq!(results[302]["outcome"], "credited", "a book transfer within bank1");
    assert_eq!(answer["outcomes"], json!({"debited": 300, "refused": 2, "credited": 1}));

    assert!(
        bank2.balance_becomes("2", "300.00").await,
        "Li Si was not paid 300 times"
    );
    assert_eq!(bank1.balance("1").await, "9695.00");

    // The same payroll again: every transfer is answered from the first, nothing moves.
    let (status, again) = bank1
        .post("/transfers/batch", json!({"transfers": payroll(300, "1.00", "june")}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert!(outcomes(&again).iter().all(|o| *o == "replayed"), "{again}");
    assert_eq!(
        again["results"][7]["transfer"]["tx_no"],
        answer["results"][7]["transfer"]["tx_no"]
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(bank1.balance("1").await, "9695.00");
    assert_eq!(bank2.balance("2").await, "300.00");
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_or_nothing_group_moves_whole_or_not_at_all() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    // 100 transfers to two accounts of bank2, more than one message's worth: all move.
    let mut group = payroll(99, "10.00", "bonus");
    group.push(json!({"from": "3", "to": "4", "to_bank": "bank2", "amount": "1000.00"}));
    let (status, answer) = bank1
        .post("/transfers/batch", json!({"transfers": group, "all_or_nothing": true}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(outcomes(&answer).iter().all(|o| *o == "debited"), "{answer}");
    assert!(bank2.balance_becomes("2", "990.00").await);
    assert!(bank2.balance_becomes("4", "6000.00").await);

    // One transfer short of funds: nothing of the group moves, and it says which.
    let mut group = payroll(50, "1.00", "refused");
    group.insert(
        20,
        json!({"from": "3", "to": "4", "to_bank": "bank2", "amount": "4000.01"}),
    );
    let (status, answer) = bank1
        .post("/transfers/batch", json!({"transfers": group, "all_or_nothing": true}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["results"][20]["error"]["error"]["code"], "insufficient_funds",
        "{answer}"
    );
    assert_eq!(answer["results"][0]["error"]["error"]["code"], "group_refused");
    assert_eq!(answer["outcomes"], json!({"refused": 51}));

    // A book transfer cannot join a group; nothing of that group moves either.
    let mut group = payroll(3, "1.00", "book");
    group.push(json!({"from": "1", "to": "3", "to_bank": "bank1", "amount": "1.00"}));
    let (_, answer) = bank1
        .post("/transfers/batch", json!({"transfers": group, "all_or_nothing": true}))
        .await;
    assert_eq!(
        answer["results"][3]["error"]["error"]["code"], "book_transfer_in_group",
        "{answer}"
    );
    assert_eq!(answer["outcomes"], json!({"refused": 4}));

    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(bank1.balance("1").await, "9010.00");
    assert_eq!(bank1.balance("3").await, "4000.00");
    assert_eq!(bank2.balance("2").await, "990.00");
    assert_eq!(bank2.balance("4").await, "6000.00");
    audit_is_clean(&bank2, &bank1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_is_not_one_is_refused_whole() {
    let (_cluster, mut bank1, _bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start_in_process().await;

    let (status, refused) = bank1.post("/transfers/batch", json!({"transfers": []})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
    let (status, refused) = bank1
        .post("/transfers/batch", json!({"transfers": payroll(1001, "0.01", "big")}))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_batch"))
    );
    let (status, _) = bank1.post("/transfers/batch", json!({"payments": []})).await;
    assert_eq!(status, 400);
    assert_eq!(bank1.balance("1").await, "10000.00");
}
