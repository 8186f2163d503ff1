//! The batcher: one task that gathers the changes every connection sends (messages,
//! edits, deletes, reactions), hands them to storage in batches, and only then delivers
//! them to their rooms and answers their senders.
//!
//! One batcher means a room's changes are committed and delivered in a single order, so
//! every connection sees a room's `message` and `updated` events in sequence order.
//! Batching turns many concurrent senders into few transactions (group commit), and
//! answering after the commit means a sender that holds its ack can rely on the change
//! surviving a crash. Storage checks each change and numbers it (see `storage/mod.rs`);
//! nothing here hands out numbers.
//!
//! Delivery and answers run in a second task, in commit order, so that the next batch is
//! already committing while the last one is being sent.
//!
//! Shutdown: [`Batcher::drain`] waits until every change handed in has been committed (or
//! refused) and answered; the caller stops handing in new ones first.

use std::sync::{Arc, Weak};

use app::protocol::{ErrorCode, ProtocolError};
use serde_json::value::RawValue;
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};

use super::{unavailable, Activity, Chat};
use crate::storage::{Applied, Change, ChangeKind, Storage};

/// Changes waiting for the batcher before senders have to wait for room in the queue.
const QUEUE: usize = 8_192;

/// Committed batches waiting to be delivered before the batcher waits for delivery.
const COMMITTED: usize = 16;

type Reply = oneshot::Sender<Result<Answer, ProtocolError>>;

/// What became of a change, for its sender.
pub struct Answer {
    pub applied: Applied,
    /// The message's JSON as its room's other members on this node were sent it, when
    /// they were: the sender's ack reuses the text instead of serializing it again.
    pub shared: Option<Arc<RawValue>>,
}

struct Pending {
    change: Change,
    /// The connection that sent it: it gets the ack, not the event.
    from: Option<Sid>,
    reply: Reply,
}

/// A batch that is in storage, for the delivering task.
struct Committed {
    results: Vec<Applied>,
    waiters: Vec<(bool, Option<Sid>, Reply)>,
}

pub struct Batcher {
    queue: mpsc::Sender<Pending>,
    /// Changes handed in and not yet answered.
    in_flight: Activity,
}

fn shutting_down() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        "The server is shutting down; try again.",
    )
}

impl Batcher {
    pub fn spawn(chat: Weak<Chat>, storage: Arc<dyn Storage>, max_batch: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (committed, to_deliver) = mpsc::channel(COMMITTED);
        tokio::spawn(run(
            chat.clone(),
            storage,
            receiver,
            committed,
            max_batch.max(1),
        ));
        tokio::spawn(deliver(chat, to_deliver));
        Self {
            queue,
            in_flight: Activity::default(),
        }
    }

    /// Commits a change and returns what became of it, once it is delivered to the room.
    pub async fn submit(&self, change: Change, from: Option<Sid>) -> Result<Answer, ProtocolError> {
        let _in_flight = self.in_flight.begin();
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                change,
                from,
                reply,
            })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Waits until every change handed in so far has been answered.
    pub async fn drain(&self) {
        self.in_flight.idle().await;
    }
}

async fn run(
    chat: Weak<Chat>,
    storage: Arc<dyn Storage>,
    mut receiver: mpsc::Receiver<Pending>,
    committed: mpsc::Sender<Committed>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let mut changes = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for Pending {
            change,
            from,
            reply,
        } in batch.drain(..)
        {
            waiters.push((matches!(change.kind, ChangeKind::Post { .. }), from, reply));
            changes.push(change);
        }
        let started = std::time::Instant::now();
        let appended = storage.append(changes).await;
        if let Some(chat) = chat.upgrade() {
            chat.metrics.storage_latency.observe(started.elapsed());
        }
        match appended {
            Ok(results) => {
                if committed
                    .send(Committed { results, waiters })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(err) => {
                // Nothing was stored, and no number was used: every sender may resend.
                let error = unavailable(err);
                for (_, _, reply) in waiters {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Delivers committed batches to the rooms and answers their senders, in commit order.
async fn deliver(chat: Weak<Chat>, mut batches: mpsc::Receiver<Committed>) {
    while let Some(Committed { results, waiters }) = batches.recv().await {
        let Some(chat) = chat.upgrade() else { return };
        for (applied, (is_post, from, reply)) in results.into_iter().zip(waiters) {
            let mut shared = None;
            if let Applied::Stored(message) = &applied {
                let counter = if is_post {
                    &chat.metrics.messages_stored
                } else {
                    &chat.metrics.changes_stored
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared = chat.deliver(message, is_post, from);
            }
            let _ = reply.send(Ok(Answer { applied, shared }));
        }
    }
}
