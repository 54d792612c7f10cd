//! Every edge of the books ends in a final state an operator can see: a return its
//! source cannot take back is held on the books, and a transfer stuck in flight makes
//! the audit say so in its exit status.

use crate::support::{audit_report, counts, eventually, Cluster, Db};
use serde_json::json;

/// A return to an account that filled up meanwhile ends: the transfer is returned, the
/// money held on bank1's books (not lost, not looping), and credited back once the
/// account has room.
#[tokio::test(flavor = "multi_thread")]
async fn a_return_to_an_account_at_its_maximum_is_held_and_the_transfer_ends() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    let (status, body) = bank1
        .post(
            "/accounts",
            json!({"no": "rich", "name": "Rich", "opening_balance": "99999998.00"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // bank2 is paused while the transfer to its unknown account is on its way.
    bank2.pause();
    let (status, sent) = bank1
        .post_transfer(json!({"from": "rich", "to": "nobody", "amount": "1.00"}))
        .await;
    assert_eq!(status, 201, "{sent}");
    let tx_no = sent["tx_no"].as_str().unwrap().to_string();
    // A book transfer fills the account to its maximum meanwhile.
    let (status, filled) = bank1
        .post_transfer(json!({"from": "1", "to": "rich", "to_bank": "bank1", "amount": "2.99"}))
        .await;
    assert_eq!(status, 201, "{filled}");
    assert_eq!(bank1.balance("rich").await, "99999999.99");
    bank2.resume();

    let returned = bank1.transfer_becomes(&tx_no, "returned").await;
    assert_eq!(returned["state"], "returned", "{returned}");
    assert_eq!(bank1.balance("rich").await, "99999999.99");
    let (status, books) = bank1.get("/audit").await;
    assert_eq!(status, 200, "{books}");
    assert_eq!(
        (books["held"].clone(), books["held_cents"].clone()),
        (json!(1), json!(100)),
        "{books}"
    );
    assert_eq!(books["balanced"], true, "{books}");
    let (clean, report) = audit_report(&[&bank2, &bank1]);
    assert!(clean, "{report:#}");
    assert_eq!(counts(&report, &["returned", "held", "held_cents"]), [1, 1, 100]);

    // Once the account has room, the held money goes back to it.
    let (status, spent) = bank1
        .post_transfer(json!({"from": "rich", "to": "1", "to_bank": "bank1", "amount": "10.00"}))
        .await;
    assert_eq!(status, 201, "{spent}");
    assert!(
        bank1.balance_becomes("rich", "99999990.99").await,
        "the held return was never credited back"
    );
    let (_, books) = bank1.get("/audit").await;
    assert_eq!(
        (books["held"].clone(), books["balanced"].clone()),
        (json!(0), json!(true)),
        "{books}"
    );
}

/// The auditor's exit status tells a cron job that the books balance but a transfer
/// waits too long: 2, with 0 for the same books under a longer threshold.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_exits_2_when_a_transfer_is_stuck_in_flight() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    // bank2 is paused: the transfer stays in flight.
    bank2.pause();
    bank1.pay("1.00").await;
    let stuck = crate::support::audit_status(&[&bank2, &bank1], &["--stuck-after-secs", "0"]);
    assert_eq!(stuck, 2);
    assert!(
        eventually(|| async { crate::support::audit_status(&[&bank2, &bank1], &["--stuck-after-secs", "3600"]) == 0 })
            .await
    );
    let (_, books) = bank1.get("/audit?stuck_after_secs=0").await;
    assert_eq!(
        (books["balanced"].clone(), books["stuck"].clone()),
        (json!(true), json!(true)),
        "{books}"
    );
    let (_, books) = bank1.get("/audit").await;
    assert_eq!(books["stuck"], false, "{books}");
    let (status, refused) = bank1.get("/audit?stuck_after_secs=soon").await;
    assert_eq!(status, 400, "{refused}");
    bank2.resume();
}
