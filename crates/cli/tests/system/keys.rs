//! A key per bank: a bank's messages verify only with its own public key, for the bank
//! and topic they were signed for; a rotated key verifies during its overlap and not
//! after; and banks move from the shared key without a flag day.

use std::process::Command;

use crate::support::{audit_is_clean, bank_key, counts, eventually, Bank, Cluster, Db, Signing};
use serde_json::json;

/// A transfer body from bank1's account 1 to bank2's account 2.
fn transfer_body(tx_no: &str, amount: &str) -> String {
    format!(
        r#"{{"accountChange":{{"accountNo":"1","amount":{amount},"txNo":"{tx_no}"}},"fromBank":"bank1","toBank":"bank2","toAccountNo":"2","version":1}}"#
    )
}

/// Waits until `bank` has set aside the message keyed `key` as unauthenticated.
async fn set_aside_unauthenticated(bank: &Bank, key: &str) -> bool {
    let line = "unauthenticated message set aside";
    let keyed = format!("key={key} ");
    eventually(|| async {
        bank.log_text()
            .lines()
            .any(|entry| entry.contains(line) && entry.contains(&keyed))
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bank_cannot_speak_for_another_nor_a_message_be_replayed_to_another_bank() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    let tx_no = bank1.pay("1.00").await;
    assert!(bank2.balance_becomes("2", "1.00").await);

    // bank3 is trusted, but its key speaks for bank3 only.
    cluster.publish_as(
        "bank3",
        "bank2",
        &transfer_body("claims-bank1", "500"),
        "claims-bank1",
        1,
    );
    // bank1's own message, signed for bank3, delivered to bank2.
    cluster.publish_as(
        "bank1",
        "bank3",
        &transfer_body("meant-for-bank3", "600"),
        "meant-for-bank3",
        1,
    );
    // A genuine message of bank1's behind them is credited.
    cluster.publish_as("bank1", "bank2", &transfer_body("genuine-1", "2"), "genuine-1", 1);

    assert!(
        bank2.balance_becomes("2", "3.00").await,
        "the genuine message was not credited"
    );
    for key in ["claims-bank1", "meant-for-bank3"] {
        assert!(
            set_aside_unauthenticated(&bank2, key).await,
            "{key}: {}",
            bank2.log_text()
        );
    }
    let log = bank2.log_text();
    assert!(
        log.contains("signed with bank3's key, but claims to come from bank1"),
        "{log}"
    );
    assert_eq!(bank2.balance("2").await, "3.00", "neither moved money");
    assert_eq!(bank1.transfer_becomes(&tx_no, "credited").await["state"], "credited");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_verifies_during_its_overlap_and_not_after() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    let old_key = cluster.dir.path().join("bank1-old.key");
    std::fs::copy(bank_key(cluster.dir.path(), "bank1"), &old_key).unwrap();

    let rotated = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .args(["keys", "rotate", "--bank", "bank1", "--overlap-secs", "6", "--dir"])
        .arg(cluster.dir.path().join("keys"))
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    // bank1 restarts to sign with its new key; bank2 reads the new public key from the
    // trusted keys when the first message names it, without a restart.
    bank1.stop();
    bank1.start().await;
    bank1.pay("1.00").await;
    assert!(bank2.balance_becomes("2", "1.00").await, "{}", bank2.log_text());
    assert!(bank2.log_text().contains("trusted keys read again"));

    // A message signed with the old key during the overlap is taken.
    cluster.publish_with_key_file(&old_key, "bank2", &transfer_body("old-key-1", "2"), "old-key-1", 1);
    assert!(bank2.balance_becomes("2", "3.00").await, "{}", bank2.log_text());

    // After it, refused.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    cluster.publish_with_key_file(&old_key, "bank2", &transfer_body("old-key-2", "4"), "old-key-2", 1);
    assert!(
        set_aside_unauthenticated(&bank2, "old-key-2").await,
        "{}",
        bank2.log_text()
    );
    assert_eq!(bank2.balance("2").await, "3.00");
    bank1.pay("1.00").await;
    assert!(bank2.balance_becomes("2", "4.00").await, "the new key still verifies");
}

/// One transfer each way: bank1's Zhang San pays bank2's Li Si, bank2's 赵六 pays
/// bank1's 王五.
async fn both_ways(bank1: &Bank, bank2: &Bank, step: &str) {
    let (status, body) = bank1
        .post_transfer(json!({"from": "1", "to": "2", "amount": "1"}))
        .await;
    assert_eq!(status, 201, "{step}: {body}");
    let (status, body) = bank2
        .post_transfer(json!({"from": "4", "to": "3", "amount": "1"}))
        .await;
    assert_eq!(status, 201, "{step}: {body}");
}

/// Waits until `rounds` of [`both_ways`] are credited on both sides.
async fn settled(bank1: &Bank, bank2: &Bank, rounds: u32) {
    let to_bank2 = format!("{rounds}.00");
    assert!(
        bank2.balance_becomes("2", &to_bank2).await,
        "bank2 log:\n{}",
        bank2.log_text()
    );
    let to_bank1 = format!("{}.00", 5000 + rounds);
    assert!(
        bank1.balance_becomes("3", &to_bank1).await,
        "bank1 log:\n{}",
        bank1.log_text()
    );
}

/// Moving from the shared key, one bank at a time, with transfers both ways at each step:
/// bank1 not moved (shared key only, as txbank signed before key pairs), bank2 moving
/// (both); then bank1 moving too; then both moved, the shared key gone, and a message
/// signed with it alone refused.
#[tokio::test(flavor = "multi_thread")]
async fn banks_move_from_the_shared_key_one_at_a_time_and_keep_exchanging_money() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.signing = Signing::SharedOnly;
    bank2.signing = Signing::OwnAndShared;
    bank1.start().await;
    bank2.start().await;
    both_ways(&bank1, &bank2, "bank1 not moved").await;
    settled(&bank1, &bank2, 1).await;

    bank1.stop();
    bank1.signing = Signing::OwnAndShared;
    bank1.start().await;
    both_ways(&bank1, &bank2, "both moving").await;
    settled(&bank1, &bank2, 2).await;

    for bank in [&mut bank1, &mut bank2] {
        bank.stop();
        bank.signing = Signing::OwnKey;
        bank.start().await;
    }
    both_ways(&bank1, &bank2, "both moved").await;
    settled(&bank1, &bank2, 3).await;
    cluster.publish(
        &transfer_body("shared-key-only", "50"),
        "shared-key-only",
        Some(&cluster.message_key_file()),
        1,
    );
    assert!(
        set_aside_unauthenticated(&bank2, "shared-key-only").await,
        "{}",
        bank2.log_text()
    );
    assert_eq!(bank2.balance("2").await, "3.00");

    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(counts(&report, &["debited", "credited", "in_flight"]), [6, 6, 0]);
}
