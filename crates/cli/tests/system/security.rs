//! Security: callers log in (operators with the API token, holders with their account's
//! password), wrong credentials learn nothing and slow down what they named without
//! locking anyone out, and only messages
//! signed with the banks' shared key are ever applied.

use std::process::Command;

use crate::support::{audit_report, eventually, send, Bank, Cluster, Db};
use serde_json::json;

/// Runs `txbank dlq ARGS`: success, and what it printed on standard output.
fn dlq(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txbank"))
        .arg("dlq")
        .args(args)
        .args(["--namesrv-addr", &cluster.namesrv_addr])
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_unsigned_messages_are_never_applied_and_a_replayed_one_credits_once() {
    let (cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start().await;
    bank2.start().await;
    let wrong_key = cluster.dir.path().join("wrong-key");
    std::fs::write(&wrong_key, "w".repeat(40)).unwrap();
    let body = |tx: &str, amount: &str| {
        format!(
            r#"{{"accountChange":{{"accountNo":"1","amount":{amount},"txNo":"{tx}"}},"fromBank":"bank1","toBank":"bank2","toAccountNo":"2","version":1}}"#
        )
    };

    cluster.publish(&body("unsigned", "1000"), "dead-1", None, 1);
    cluster.publish(&body("forged", "2000"), "dead-1", Some(&wrong_key), 1);
    cluster.publish_as("bank1", "bank2", &body("genuine", "3"), "dead-1", 3);

    assert!(
        bank2.balance_becomes("2", "3.00").await,
        "the signed message was not credited"
    );
    let set_aside = eventually(|| async {
        let log = bank2.log_text();
        log.contains("Unsigned") && log.contains("Forged") && log.matches("duplicate delivery absorbed").count() >= 2
    })
    .await;
    assert!(set_aside, "not every message was seen:\n{}", bank2.log_text());
    assert_eq!(
        bank2.balance("2").await,
        "3.00",
        "forged, unsigned and replayed messages moved nothing"
    );

    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", bank2.url()))
        .bearer_auth(crate::support::API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let set_aside = metrics
        .lines()
        .find(|line| line.starts_with("txbank_messages_set_aside_total{bank=\"bank2\",reason=\"unauthenticated\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(set_aside >= Some(2), "the alert metric did not count them:\n{metrics}");
    assert!(
        metrics.contains("txbank_duplicates_absorbed_total{bank=\"bank2\"} 2"),
        "{metrics}"
    );
    // The genuine message was made up by this test (no bank debited it), so the books do
    // not balance; what matters here is what the auditor counts as set aside: bank2's
    // unsigned and forged messages, and bank1's settlement reports about a transfer it
    // never sent (one, or more when a replay's repeated report went in a message of its
    // own).
    let counted = eventually(|| async { audit_report(&[&bank2, &bank1]).1["set_aside"].as_u64() >= Some(3) }).await;
    assert!(counted, "{}", audit_report(&[&bank2, &bank1]).1);
}

/// bank1 alone, started, with account 7 (50.00) whose holder's password is
/// "correct horse".
async fn bank1_with_a_holder() -> (Cluster, Bank) {
    let cluster = Cluster::start().await;
    let mut bank1 = cluster.bank("bank1", Db::Sqlite).await;
    bank1.start().await;
    let (status, opened) = bank1
        .post(
            "/accounts",
            json!({"no": "7", "name": "周八的账户", "opening_balance": "50", "password": "correct horse"}),
        )
        .await;
    assert_eq!(status, 201, "{opened}");
    (cluster, bank1)
}

#[tokio::test(flavor = "multi_thread")]
async fn holders_log_in_with_their_password_and_wrong_credentials_are_refused_and_lock_nobody_out() {
    let (_cluster, bank1) = bank1_with_a_holder().await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", bank1.url());
    let as_holder = |path: &str, password: &str| client.get(url(path)).basic_auth("7", Some(password));

    let (status, own) = send(as_holder("/accounts/7", "correct horse")).await;
    assert_eq!((status, own["balance"].clone()), (200, json!("50.00")), "{own}");
    let (status, paid) = send(
        client
            .post(url("/transfers"))
            .basic_auth("7", Some("correct horse"))
            .json(&json!({"from": "7", "to": "1", "to_bank": "bank1", "amount": "5"})),
    )
    .await;
    assert_eq!(status, 201, "{paid}");
    let (status, other) = send(as_holder("/accounts/1", "correct horse")).await;
    assert_eq!((status, other["error"]["code"].clone()), (403, json!("forbidden")));
    let (status, _) = send(as_holder("/accounts", "correct horse")).await;
    assert_eq!(status, 403, "listing accounts is for operators");
    let (status, _) = send(
        client
            .post(url("/transfers"))
            .basic_auth("7", Some("correct horse"))
            .json(&json!({"from": "1", "to": "2", "amount": "5"})),
    )
    .await;
    assert_eq!(status, 403, "a holder cannot pay from another account");

    // Every failure answers the same, whatever was wrong.
    let wrong = [
        client.get(url("/accounts/7")),
        client.get(url("/accounts/7")).basic_auth("7", Some("wrong horse")),
        client.get(url("/accounts/7")).basic_auth("404", Some("correct horse")),
        client.get(url("/accounts/7")).bearer_auth("not-the-token"),
    ];
    let mut answers = Vec::new();
    for request in wrong {
        answers.push(send(request).await);
    }
    assert!(answers.iter().all(|answer| *answer == answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 401);
    assert_eq!(answers[0].1["error"]["code"], "unauthorized");

    // Ten wrong tokens from one address (all of a proxy's clients share one): the right
    // token from that address is still answered.
    let wrong_tokens: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send(client.get(url("/accounts/7")).bearer_auth("not-the-token"))))
        .collect();
    for wrong in wrong_tokens {
        assert_eq!(wrong.await.unwrap().0, 401);
    }
    let (status, own) = bank1.get("/accounts/7").await;
    assert_eq!(
        status, 200,
        "the operator's token is answered after strangers' failures: {own}"
    );

    // Wrong guesses at one account's password slow its checks down; its holder still logs in.
    for _ in 0..4 {
        assert_eq!(send(as_holder("/accounts/7", "still wrong")).await.0, 401);
    }
    let (status, own) = send(as_holder("/accounts/7", "correct horse")).await;
    assert_eq!((status, own["balance"].clone()), (200, json!("45.00")), "{own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_lettered_message_is_listed_and_after_a_fix_replayed_exactly_once() {
    let (cluster, _bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start_with(&[("TXBANK_MAX_REDELIVERIES", "1")]).await;
    let (listed, nothing) = dlq(&cluster, &["list"]);
    assert!(listed && nothing.trim().is_empty(), "{nothing}");

    // The seed's Java bank1 signs nothing: refused, redelivered once, then dead-lettered.
    cluster.publish(
        r#"{"accountChange":{"accountNo":"1","amount":7,"txNo":"dead-1"}}"#,
        "dead-1",
        None,
        1,
    );
    let dead = eventually(|| async { dlq(&cluster, &["list"]).1.contains(r#""key":"dead-1""#) }).await;
    assert!(dead, "never dead-lettered:\n{}", bank2.log_text());
    assert_eq!(bank2.balance("2").await, "0.00");

    // The fix: bank2 now interoperates with unsigned seed messages.
    bank2.kill();
    bank2.start_with(&[("TXBANK_ACCEPT_UNSIGNED_MESSAGES", "true")]).await;
    let (replayed, printed) = dlq(&cluster, &["replay", "dead-1"]);
    assert!(replayed, "{printed}");
    assert!(bank2.balance_becomes("2", "7.00").await, "the replay was not applied");
    assert!(dlq(&cluster, &["replay", "dead-1"]).0);
    let absorbed = eventually(|| async { bank2.log_text().contains("duplicate delivery absorbed") }).await;
    assert!(absorbed, "the second replay was never seen");
    assert_eq!(bank2.balance("2").await, "7.00", "replays apply at most once");
    let (found, missing) = dlq(&cluster, &["replay", "no-such-tx"]);
    assert!(!found, "{missing}");
}

/// The seed's `GET /transfer` moves money on a GET, which a holder's browser could be
/// made to send: an operator lets only the bearer token use it, or turns it off.
#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_get_transfer_can_be_kept_for_operators_or_turned_off() {
    let (_cluster, mut bank1) = bank1_with_a_holder().await;
    let as_holder = |bank: &Bank| {
        reqwest::Client::new()
            .get(format!("{}/transfer?accountNo=7&amount=1", bank.url()))
            .basic_auth("7", Some("correct horse"))
    };
    let (status, _) = send(as_holder(&bank1)).await;
    assert!(status == 201 || status == 202, "open by default, as the seed: {status}");

    bank1.kill();
    bank1.start_with(&[("TXBANK_SEED_GET_TRANSFER", "operators")]).await;
    let (status, refused) = send(as_holder(&bank1)).await;
    assert_eq!((status, refused["error"]["code"].clone()), (403, json!("forbidden")));
    let (status, paid) = bank1.get("/transfer?accountNo=7&amount=1").await;
    assert!(status == 201 || status == 202, "an operator still pays: {paid}");

    bank1.kill();
    bank1.start_with(&[("TXBANK_SEED_GET_TRANSFER", "off")]).await;
    let (status, off) = bank1.get("/transfer?accountNo=7&amount=1").await;
    assert_eq!(
        (status, off["error"]["code"].clone()),
        (404, json!("not_found")),
        "{off}"
    );
    assert_eq!(bank1.balance("7").await, "48.00", "the refused requests moved nothing");
}
