//! The message writer: one task that assigns ids, commits messages in batches, and only
//! then fans them out and acknowledges them.
//!
//! One writer means ids are assigned and broadcast in a single order, so every client sees
//! a room's messages in id order. Batching turns many concurrent senders into few
//! transactions (group commit), and acknowledging after the commit means a sender that
//! holds its ack can rely on the message surviving a crash.
//!
//! Fan-out and acks happen in a second task, in commit order, so that the next batch is
//! already committing while the last one is being sent.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use app::protocol::{event, ErrorCode, Message, ProtocolError};
use socketioxide::socket::Sid;
use tokio::sync::{mpsc, oneshot};

use super::rooms::lock;
use super::{unavailable, Chat};
use crate::storage::{Appended, Storage};

/// Messages waiting for the writer before senders have to wait for room in the queue.
const QUEUE: usize = 8_192;

/// Committed batches waiting to be sent before the writer waits for the sending.
const COMMITTED: usize = 16;

type Reply = oneshot::Sender<Result<Message, ProtocolError>>;

struct Pending {
    message: Message,
    sender: Sid,
    reply: Reply,
}

/// A batch that is in storage, for the delivering task.
struct Committed {
    messages: Vec<Message>,
    waiters: Vec<(Sid, Reply)>,
    results: Vec<Appended>,
}

pub struct WriterHandle {
    queue: mpsc::Sender<Pending>,
}

fn shutting_down() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        "The server is shutting down; try again.",
    )
}

impl WriterHandle {
    /// Stores a message (its id is assigned here) and returns it once committed and sent
    /// to the room's other members.
    pub async fn write(&self, message: Message, sender: Sid) -> Result<Message, ProtocolError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                message,
                sender,
                reply,
            })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

pub fn spawn(chat: Weak<Chat>, storage: Arc<dyn Storage>, max_batch: usize) -> WriterHandle {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let (committed, to_deliver) = mpsc::channel(COMMITTED);
    tokio::spawn(run(storage, receiver, committed, max_batch.max(1)));
    tokio::spawn(deliver(chat, to_deliver));
    WriterHandle { queue }
}

async fn run(
    storage: Arc<dyn Storage>,
    mut receiver: mpsc::Receiver<Pending>,
    committed: mpsc::Sender<Committed>,
    max_batch: usize,
) {
    // The last id given out per room, loaded from storage on first use.
    let mut last_ids: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let mut messages = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for Pending {
            mut message,
            sender,
            reply,
        } in batch.drain(..)
        {
            let last = match last_ids.get_mut(&message.room) {
                Some(last) => last,
                None => match storage.last_id(&message.room).await {
                    Ok(id) => last_ids.entry(message.room.clone()).or_insert(id),
                    Err(err) => {
                        let _ = reply.send(Err(unavailable(err)));
                        continue;
                    }
                },
            };
            *last += 1;
            message.id = *last;
            messages.push(message);
            waiters.push((sender, reply));
        }
        if messages.is_empty() {
            continue;
        }

        let results = match storage.append(&messages).await {
            Ok(results) => results,
            Err(err) => {
                // Nothing was stored. Reload ids next time so none is skipped for good.
                last_ids.clear();
                let error = unavailable(err);
                for (_, reply) in waiters {
                    let _ = reply.send(Err(error.clone()));
                }
                continue;
            }
        };

        let batch = Committed {
            messages,
            waiters,
            results,
        };
        if committed.send(batch).await.is_err() {
            return;
        }
    }
}

/// Sends committed batches to the rooms and answers their senders, in commit order.
async fn deliver(chat: Weak<Chat>, mut batches: mpsc::Receiver<Committed>) {
    while let Some(Committed {
        messages,
        waiters,
        results,
    }) = batches.recv().await
    {
        let Some(chat) = chat.upgrade() else { return };
        for ((message, (sender, reply)), result) in messages.into_iter().zip(waiters).zip(results) {
            let message = match result {
                Appended::Stored => {
                    fan_out(&chat, &message, sender);
                    message
                }
                // Sent twice at once (say, from two connections): stored and sent once.
                Appended::Duplicate(original) => original,
            };
            let _ = reply.send(Ok(message));
        }
    }
}

fn fan_out(chat: &Chat, message: &Message, sender: Sid) {
    let Some(room) = chat.rooms.get(&message.room) else {
        return;
    };
    // socketioxide serializes an event once per socket it goes to: hand it JSON that is
    // serialized already, so each member costs a copy rather than a serialization.
    let slow = match serde_json::value::to_raw_value(message) {
        Ok(json) => lock(&room).broadcast(Some(sender), event::MESSAGE, &*json),
        Err(_) => lock(&room).broadcast(Some(sender), event::MESSAGE, message),
    };
    chat.drop_slow_consumers(slow);
}
