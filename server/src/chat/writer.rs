//! The message writer: one task that assigns ids, commits messages in batches, and only
//! then fans them out and acknowledges them.
//!
//! One writer means ids are assigned and broadcast in a single order, so every client sees
//! a room's messages in id order. Batching turns many concurrent senders into few
//! transactions (group commit), and acknowledging after the commit means a sender that
//! holds its ack can rely on the message surviving a crash.

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

struct Pending {
    message: Message,
    sender: Sid,
    reply: oneshot::Sender<Result<Message, ProtocolError>>,
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
    tokio::spawn(run(chat, storage, receiver, max_batch.max(1)));
    WriterHandle { queue }
}

async fn run(
    chat: Weak<Chat>,
    storage: Arc<dyn Storage>,
    mut receiver: mpsc::Receiver<Pending>,
    max_batch: usize,
) {
    // The last id given out per room, loaded from storage on first use.
    let mut last_ids: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let mut accepted = Vec::with_capacity(batch.len());
        for mut pending in batch.drain(..) {
            let last = match last_ids.get_mut(&pending.message.room) {
                Some(last) => last,
                None => match storage.last_id(&pending.message.room).await {
                    Ok(id) => last_ids.entry(pending.message.room.clone()).or_insert(id),
                    Err(err) => {
                        let _ = pending.reply.send(Err(unavailable(err)));
                        continue;
                    }
                },
            };
            *last += 1;
            pending.message.id = *last;
            accepted.push(pending);
        }
        if accepted.is_empty() {
            continue;
        }

        let messages: Vec<Message> = accepted.iter().map(|p| p.message.clone()).collect();
        let results = match storage.append(&messages).await {
            Ok(results) => results,
            Err(err) => {
                // Nothing was stored. Reload ids next time so none is skipped for good.
                last_ids.clear();
                let error = unavailable(err);
                for pending in accepted {
                    let _ = pending.reply.send(Err(error.clone()));
                }
                continue;
            }
        };

        let Some(chat) = chat.upgrade() else { return };
        for (pending, result) in accepted.into_iter().zip(results) {
            let message = match result {
                Appended::Stored(message) => {
                    fan_out(&chat, &message, pending.sender);
                    message
                }
                // Sent twice at once (say, from two connections): stored and sent once.
                Appended::Duplicate(original) => original,
            };
            let _ = pending.reply.send(Ok(message));
        }
    }
}

fn fan_out(chat: &Chat, message: &Message, sender: Sid) {
    let Some(room) = chat.rooms.get(&message.room) else {
        return;
    };
    let slow = lock(&room).broadcast(Some(sender), event::MESSAGE, message);
    chat.drop_slow_consumers(slow);
}
