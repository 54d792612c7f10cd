//! bank2's side: consume transfers and credit each exactly once.

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use tokio::runtime::Handle;
use tracing::{error, info, warn};
use txbank_domain::AccountNo;
use txbank_storage::{CreditOutcome, Store};

use crate::{wire, MessagingError, MqClient, MqSettings};
use txbank_storage::faults::{crash_point, AFTER_CREDIT_COMMIT};

/// Consumes transfer messages (consumer group `consumer_group_txmsg_bank2` by default)
/// and credits each destination exactly once: the credit and the `de_duplication` insert
/// commit together, and the message is acknowledged only after that commit.
pub struct CreditConsumer {
    consumer: DefaultMQPushConsumer,
}

impl CreditConsumer {
    /// Starts consuming `topic` in `group`, crediting through `store`. A message with no
    /// destination (the seed's) credits `default_to`.
    pub async fn start(
        client: &MqClient,
        settings: &MqSettings,
        group: &str,
        topic: &str,
        store: Store,
        default_to: AccountNo,
    ) -> Result<CreditConsumer, MessagingError> {
        let mut consumer = DefaultMQPushConsumer::builder(client.runtime())
            .client_config(settings.client_config())
            .consumer_group(group.to_string())
            .name_server_addr(settings.namesrv_addr.clone())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .build();
        consumer
            .subscribe(topic, "*")
            .await
            .map_err(|e| MessagingError::client("subscribe", e))?;
        consumer.register_message_listener_concurrently(CreditListener {
            store,
            runtime: Handle::current(),
            default_to,
        });
        consumer
            .start()
            .await
            .map_err(|e| MessagingError::client("consumer start", e))?;
        Ok(CreditConsumer { consumer })
    }

    /// Stops consuming; messages not yet acknowledged are delivered again later.
    pub async fn shutdown(mut self) {
        self.consumer.shutdown().await;
    }
}

struct CreditListener {
    store: Store,
    runtime: Handle,
    default_to: AccountNo,
}

impl CreditListener {
    /// Applies one message; false means "deliver it again later".
    fn apply(&self, msg: &MessageExt) -> bool {
        let body = msg.body().unwrap_or_default();
        let transfer = match wire::decode(&body, &self.default_to) {
            Ok(transfer) => transfer,
            Err(error) => {
                // Never applied; RocketMQ's retry path takes it to the dead-letter queue.
                error!(msg_id = %msg.msg_id(), reconsumed = msg.reconsume_times(), %error, "unreadable transfer message set aside");
                return false;
            }
        };
        match self.runtime.block_on(self.store.credit_once(&transfer)) {
            Ok(CreditOutcome::Credited) => {
                crash_point(AFTER_CREDIT_COMMIT);
                info!(tx_no = %transfer.tx_no, to = %transfer.to, amount = %transfer.amount, "credited");
                true
            }
            Ok(CreditOutcome::Duplicate) => {
                info!(tx_no = %transfer.tx_no, "duplicate delivery absorbed");
                true
            }
            Err(error) => {
                warn!(tx_no = %transfer.tx_no, reconsumed = msg.reconsume_times(), %error, "credit failed; will be redelivered");
                false
            }
        }
    }
}

impl MessageListenerConcurrently for CreditListener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        // Every message is applied (each is idempotent); one failure redelivers the batch.
        let failures = msgs.iter().filter(|msg| !self.apply(msg)).count();
        Ok(if failures == 0 {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        } else {
            ConsumeConcurrentlyStatus::ReconsumeLater
        })
    }
}
