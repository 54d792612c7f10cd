//! Topics txbank creates: how many queues they get, and that an existing topic never
//! loses queues (messages in a queue taken away would no longer be consumed).

use crate::support::Cluster;
use txbank_messaging::{ensure_topic, ensure_topic_queues, topic_queues, MqClient, MqSettings};

#[test]
fn a_new_topic_gets_two_queues_and_an_existing_one_keeps_more() {
    let mq = MqClient::build(1, 8).unwrap();
    mq.block_on(async {
        let cluster = Cluster::start().await;
        let settings = MqSettings::new(cluster.namesrv_addr.clone(), Default::default());

        ensure_topic(&mq, &settings, "txbank_test_fresh").await.unwrap();
        assert_eq!(topic_queues(&mq, &settings, "txbank_test_fresh").await.unwrap(), 2);

        ensure_topic_queues(&mq, &settings, "txbank_test_wide", 8)
            .await
            .unwrap();
        ensure_topic(&mq, &settings, "txbank_test_wide").await.unwrap();
        assert_eq!(
            topic_queues(&mq, &settings, "txbank_test_wide").await.unwrap(),
            8,
            "ensure_topic took queues away from an existing topic"
        );

        assert_eq!(topic_queues(&mq, &settings, "txbank_test_absent").await.unwrap(), 0);
    });
    mq.shutdown();
}
