//! The broker's raw transactional-send rate: transactional messages whose local
//! transaction does nothing and commits, sent as fast as `concurrency` senders can. The
//! benchmark measures the whole system against it.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_client_rust::{LocalTransactionState, TransactionListener, TransactionMQProducer};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::MessageTrait;

use txbank_domain::BankId;

use crate::{MessagingError, MqClient, MqSettings};

/// A body the size of a transfer's.
const BODY: &[u8] = br#"{"accountChange":{"accountNo":"1","amount":0.01,"txNo":"00000000000000000000000000000000"},"fromBank":"bank1","toBank":"bank2","toAccountNo":"2","version":1}"#;

/// The destination the reference messages are signed for: nobody consumes them.
fn reference_bank() -> BankId {
    BankId::parse("reference").expect("a valid bank identifier")
}

/// Sends to `topic` from `concurrency` tasks spread over `producers` producers for
/// `duration` and returns how many transactional messages were sent and committed
/// (failed sends are not counted).
pub async fn transactional_sends(
    client: &MqClient,
    settings: &MqSettings,
    topic: &str,
    (producers, concurrency): (usize, usize),
    duration: Duration,
) -> Result<u64, MessagingError> {
    let mut started = Vec::new();
    for n in 0..producers.max(1) {
        let mut producer = TransactionMQProducer::builder(client.runtime())
            .client_config(settings.client_config())
            .producer_group(format!("txbank_reference_{}_{n}", std::process::id()))
            .name_server_addr(settings.namesrv_addr.clone())
            .send_msg_timeout(settings.send_timeout.as_millis() as u32)
            .topics(vec![topic.to_string()])
            .transaction_listener(EmptyLocalTransaction)
            .build();
        producer
            .start()
            .await
            .map_err(|e| MessagingError::client("producer start", e))?;
        started.push(Arc::new(producer));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let senders: Vec<_> = (0..concurrency)
        .map(|sender| {
            let producer = Arc::clone(&started[sender % started.len()]);
            let (sent, topic, to_bank) = (Arc::clone(&sent), topic.to_string(), reference_bank());
            let signer = settings.signer.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let key = format!("reference-{sender}-{n}");
                    let message = signer.message(&to_bank, &topic, &key, BODY.to_vec())?;
                    if producer
                        .send_message_in_transaction::<(), _>(message, None)
                        .await
                        .is_ok()
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, MessagingError>(())
            })
        })
        .collect();
    let mut outcome = Ok(());
    for sender in senders {
        if let Ok(Err(error)) = sender.await {
            outcome = Err(error);
        }
    }
    for producer in started {
        if let Ok(mut producer) = Arc::try_unwrap(producer) {
            producer.shutdown().await;
        }
    }
    outcome.map(|()| sent.load(Ordering::Relaxed))
}

/// A local transaction that does nothing and commits; so do its check-backs.
struct EmptyLocalTransaction;

impl TransactionListener for EmptyLocalTransaction {
    fn execute_local_transaction(
        &self,
        _msg: &dyn MessageTrait,
        _arg: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        LocalTransactionState::CommitMessage
    }

    fn check_local_transaction(&self, _msg: &MessageExt) -> LocalTransactionState {
        LocalTransactionState::CommitMessage
    }
}
