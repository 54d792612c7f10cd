//! bank2 consuming messages as the seed's Java bank1 writes them, sent with
//! `txbank publish` (unsigned, so bank2 runs in seed-compatibility mode): wire
//! compatibility, duplicates, and unreadable messages.

use crate::support::{eventually, Cluster, Db};

/// bank2 in seed-compatibility mode: the seed's Java bank1 signs nothing.
const SEED_COMPATIBLE: &[(&str, &str)] = &[("TXBANK_ACCEPT_UNSIGNED_MESSAGES", "true")];

#[tokio::test(flavor = "multi_thread")]
async fn a_seed_message_delivered_twice_credits_li_si_once() {
    let (cluster, _bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start_with(SEED_COMPATIBLE).await;

    let seed_body = r#"{"accountChange":{"accountNo":"1","amount":100.0,"txNo":"seed-tx-1"}}"#;
    cluster.publish(seed_body, "seed-tx-1", None, 2);

    assert!(
        bank2.balance_becomes("2", "100.00").await,
        "the seed's message was not credited"
    );
    let absorbed = eventually(|| async { bank2.log_text().contains("duplicate delivery absorbed") }).await;
    assert!(absorbed, "the second delivery was never seen");
    assert_eq!(bank2.balance("2").await, "100.00");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_messages_are_set_aside_and_good_ones_behind_them_keep_flowing() {
    let (cluster, _bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start_with(SEED_COMPATIBLE).await;

    for garbage in [
        "not json",
        r#"{"accountChange":{"accountNo":"1","amount":100.0"#,
        r#"{"accountChange":{"accountNo":"1","amount":-5,"txNo":"neg"}}"#,
        r#"{"accountChange":{"accountNo":"1","amount":1,"txNo":"future"},"version":99}"#,
    ] {
        cluster.publish(garbage, "bad", None, 1);
    }
    cluster.publish(
        r#"{"accountChange":{"accountNo":"1","amount":5.5,"txNo":"good-1"}}"#,
        "good-1",
        None,
        1,
    );

    assert!(
        bank2.balance_becomes("2", "5.50").await,
        "a good message behind bad ones was not credited"
    );
    let set_aside =
        eventually(|| async { bank2.log_text().matches("unreadable message set aside").count() >= 4 }).await;
    assert!(set_aside, "bad messages were not reported:\n{}", bank2.log_text());
    assert!(
        bank2.process.as_mut().unwrap().is_running(),
        "bank2 must survive bad messages"
    );
}

/// Seed-compatibility mode takes unsigned only what the seed's Java bank1 sends. An
/// unsigned body naming another account, or a settlement report that could make a sender
/// refund money its destination credits, is set aside and moves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn unsigned_messages_other_than_the_seeds_are_set_aside_in_seed_compatibility_mode() {
    let (cluster, _bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank2.start_with(SEED_COMPATIBLE).await;

    for (body, key) in [
        (
            r#"{"accountChange":{"accountNo":"1","amount":9,"txNo":"aimed-1"},"fromBank":"bank1","toBank":"bank2","toAccountNo":"4"}"#,
            "aimed-1",
        ),
        (
            r#"{"settlements":[{"txNo":"0190a5b2-0000-7000-8000-000000000001","outcome":"returned"}],"fromBank":"bank1"}"#,
            "report-1",
        ),
        (
            r#"{"accountChange":{"accountNo":"1","amount":3,"txNo":"seed-2"}}"#,
            "seed-2",
        ),
    ] {
        cluster.publish(body, key, None, 1);
    }

    assert!(
        bank2.balance_becomes("2", "3.00").await,
        "the seed's own body is still credited"
    );
    let series = r#"txbank_messages_set_aside_total{bank="bank2",reason="unauthenticated"}"#;
    let set_aside = eventually(|| async { bank2.metric(series).await == Some(2.0) }).await;
    assert!(set_aside, "{:?}\n{}", bank2.metric(series).await, bank2.log_text());
    assert_eq!(bank2.balance("4").await, "5000.00", "an unsigned body chose no account");
}
