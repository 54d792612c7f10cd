//! Beyond the seed: every bank sends and receives, the sender sees the end of each
//! transfer, a credit that cannot apply comes back as `returned`, and accounts are
//! opened, listed, closed and paid within one bank.

use crate::support::{audit_all_clean, audit_is_clean, counts, Cluster, Db};
use serde_json::json;

/// The configuration file of bank `name` in a three-bank system: its inbound topic is
/// `topic_<name>`, and it routes to the two others.
fn three_bank_config(name: &str, peers: [&str; 2], account: &str, balance: &str) -> String {
    format!(
        r#"
name = "{name}"
listen = "127.0.0.1:1"
database_url = "sqlite://unused"
namesrv_addr = "unused:9876"

[messaging]
producer_group = "producer_group_{name}"
consumer_group = "consumer_group_{name}"
inbound_topic = "topic_{name}"

[routes]
{p0} = "topic_{p0}"
{p1} = "topic_{p1}"

[seed]
destination_bank = "{p0}"
destination_account = "1"
sender_bank = "{p0}"
default_account = "{account}"

[[accounts]]
no = "{account}"
name = "{name} holder"
balance = "{balance}"
"#,
        p0 = peers[0],
        p1 = peers[1],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bank2_pays_bank1_with_the_same_guarantees_and_each_sender_sees_credited() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;

    let (status, back) = bank2
        .post_transfer(json!({"from": "4", "to": "1", "amount": "50.25"}))
        .await;
    assert_eq!(status, 201, "{back}");
    assert_eq!(back["to_bank"], "bank1");
    let forth = bank1.pay("0.25").await;

    assert!(
        bank1.balance_becomes("1", "10050.00").await,
        "bank2 → bank1 never arrived"
    );
    assert!(bank2.balance_becomes("2", "0.25").await);
    assert_eq!(bank2.balance("4").await, "4949.75");
    for (sender, tx_no) in [(&bank2, back["tx_no"].as_str().unwrap()), (&bank1, forth.as_str())] {
        let view = sender.transfer_becomes(tx_no, "credited").await;
        assert_eq!(view["state"], "credited", "{view}");
    }
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [2, 2, 0]);
    for bank in [&bank1, &bank2] {
        let (status, books) = bank.get("/audit").await;
        assert_eq!((status, books["balanced"].clone()), (200, json!(true)), "{books}");
        assert_eq!(books["awaiting_report"], 0, "{books}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_to_a_missing_or_closed_account_is_returned_to_its_source() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::MySql).await;
    bank1.start().await;
    bank2.start().await;
    let (status, closed) = bank2.post("/accounts/4/close", json!({})).await;
    assert_eq!((status, closed["closed"].clone()), (200, json!(true)), "{closed}");

    let (status, to_missing) = bank1
        .post_transfer(json!({"from": "1", "to": "404", "amount": "30"}))
        .await;
    assert_eq!(status, 201, "{to_missing}");
    let (status, to_closed) = bank1
        .post_transfer(json!({"from": "3", "to": "4", "amount": "20"}))
        .await;
    assert_eq!(status, 201, "{to_closed}");

    for (tx, reason) in [(&to_missing, "does not exist"), (&to_closed, "is closed")] {
        let view = bank1.transfer_becomes(tx["tx_no"].as_str().unwrap(), "returned").await;
        assert_eq!(view["state"], "returned", "{view}");
        assert!(view["reason"].as_str().unwrap_or("").contains(reason), "{view}");
    }
    assert_eq!(bank1.balance("1").await, "10000.00", "the money came back");
    assert_eq!(bank1.balance("3").await, "5000.00", "the money came back");
    assert_eq!(bank2.balance("4").await, "5000.00", "a closed account takes nothing");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(
        counts(&report, &["debited", "refused", "returned", "credited", "in_flight"]),
        [2, 2, 2, 0, 0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_are_opened_listed_and_paid_within_one_bank() {
    let cluster = Cluster::start().await;
    let mut bank1 = cluster.bank("bank1", Db::Sqlite).await;
    bank1.start().await;

    let (status, opened) = bank1
        .post(
            "/accounts",
            json!({"no": "5", "name": "孙七的账户", "opening_balance": "10.00"}),
        )
        .await;
    assert_eq!(status, 201, "{opened}");
    assert_eq!(opened["balance"], "10.00");
    let (status, again) = bank1.post("/accounts", json!({"no": "5", "name": "again"})).await;
    assert_eq!((status, again["error"]["code"].clone()), (409, json!("already_exists")));
    for bad in [
        json!({"no": "a b", "name": "x"}),
        json!({"no": "6", "name": ""}),
        json!({"no": "6", "name": "x", "opening_balance": "-1"}),
        json!({"no": "6", "name": "x", "opening_balance": "0.001"}),
    ] {
        let (status, refused) = bank1.post("/accounts", bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {refused}");
    }
    let (_, accounts) = bank1.get("/accounts").await;
    let numbers: Vec<_> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_no"].clone())
        .collect();
    assert_eq!(numbers, [json!("1"), json!("3"), json!("5")]);

    let (status, within) = bank1
        .post_transfer(json!({"from": "1", "to": "5", "to_bank": "bank1", "amount": "0.99"}))
        .await;
    assert_eq!((status, within["state"].clone()), (201, json!("credited")), "{within}");
    assert_eq!(bank1.balance("5").await, "10.99");
    assert_eq!(bank1.balance("1").await, "9999.01");
    let (status, unknown) = bank1
        .post_transfer(json!({"from": "1", "to": "5", "to_bank": "bank9", "amount": "1"}))
        .await;
    assert_eq!((status, unknown["error"]["code"].clone()), (422, json!("unknown_bank")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_bank_is_just_a_third_configuration_file() {
    let cluster = Cluster::start().await;
    let mut banks = Vec::new();
    for (name, peers, account, balance) in [
        ("bank1", ["bank2", "bank3"], "1", "100.00"),
        ("bank2", ["bank3", "bank1"], "2", "0.00"),
        ("bank3", ["bank1", "bank2"], "3", "0.00"),
    ] {
        let config = three_bank_config(name, peers, account, balance);
        let mut bank = cluster.bank_from_config(name, &config, Db::Sqlite).await;
        bank.start().await;
        banks.push(bank);
    }
    let [bank1, bank2, bank3] = &banks[..] else {
        unreachable!()
    };

    let (status, to_bank3) = bank1
        .post_transfer(json!({"from": "1", "to": "3", "to_bank": "bank3", "amount": "60"}))
        .await;
    assert_eq!(status, 201, "{to_bank3}");
    assert!(bank3.balance_becomes("3", "60.00").await, "bank1 → bank3 never arrived");
    let (status, onward) = bank3
        .post_transfer(json!({"from": "3", "to": "2", "to_bank": "bank2", "amount": "25.50"}))
        .await;
    assert_eq!(status, 201, "{onward}");
    assert!(bank2.balance_becomes("2", "25.50").await, "bank3 → bank2 never arrived");

    for (sender, transfer) in [(bank1, &to_bank3), (bank3, &onward)] {
        let view = sender
            .transfer_becomes(transfer["tx_no"].as_str().unwrap(), "credited")
            .await;
        assert_eq!(view["state"], "credited", "{view}");
    }
    let report = audit_all_clean(&[bank2, bank3, bank1]);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [2, 2, 0]);
}
