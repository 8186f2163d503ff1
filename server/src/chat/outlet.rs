//! Everything the server sends a connection goes through its outlet, which bounds what is
//! waiting for that connection in bytes, and cuts loose a connection that does not read.
//!
//! Why: socketioxide queues packets per connection and bounds the queue by count only
//! (`--socket-buffer`), and it cannot tell how much of it has been sent. A connection
//! that stops reading (a long-polling client that never fetches, a WebSocket whose peer
//! stopped reading) while it keeps asking for history would make the server queue
//! thousands of replies. So socketioxide's queue is kept short, and what does not fit
//! waits here, counted in bytes. When a connection's waiting bytes pass
//! `--send-buffer-bytes`, or all connections' together pass `--send-buffer-total`, the
//! connection is a slow consumer: it is taken out of every room and closed (one place
//! decides that, [`super::Chat::evict`]); it reconnects and catches up from history,
//! which beats dropping messages for it or buffering without bound.
//!
//! What is guaranteed: packets reach socketioxide in the order they were sent; what a
//! connection holds on the server is at most its byte budget here plus socketioxide's
//! queue (`--socket-buffer` packets, each at most one reply: replies are capped at
//! `MAX_REPLY_BYTES` of messages). What is not: that a connection whose socketioxide
//! queue is full when its Engine.IO heartbeat comes due stays connected (socketioxide
//! closes it; it reconnects).
//!
//! The fast path, a connection that keeps up, costs one uncontended lock and the emit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::AckSender;
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::Socket;
use tokio::sync::mpsc;

use super::connection::Peer;
use crate::lock;

/// One packet for a connection: an event (whose JSON may be shared by many
/// connections), or the answer to one of its requests.
pub enum Outgoing {
    Event {
        event: &'static str,
        json: Arc<RawValue>,
    },
    Ack {
        id: i64,
        json: Box<RawValue>,
    },
}

impl Outgoing {
    pub fn event(event: &'static str, json: Arc<RawValue>) -> Self {
        Outgoing::Event { event, json }
    }

    /// Serializes `data` for one connection.
    pub fn event_of<T: serde::Serialize + ?Sized>(event: &'static str, data: &T) -> Option<Self> {
        shared_json(data).map(|json| Outgoing::Event { event, json })
    }

    fn bytes(&self) -> usize {
        match self {
            Outgoing::Event { event, json } => event.len() + json.get().len() + 8,
            Outgoing::Ack { json, .. } => json.get().len() + 8,
        }
    }
}

/// JSON serialized once, to be sent to many connections.
pub fn shared_json<T: serde::Serialize + ?Sized>(data: &T) -> Option<Arc<RawValue>> {
    serde_json::value::to_raw_value(data).ok().map(Arc::from)
}

/// Byte budgets shared by every outlet, and where evictions are reported.
pub struct SendLimits {
    per_connection: usize,
    total_cap: usize,
    total: AtomicUsize,
    evictions: mpsc::UnboundedSender<Peer>,
}

impl SendLimits {
    pub fn new(
        per_connection: usize,
        total_cap: usize,
        evictions: mpsc::UnboundedSender<Peer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            per_connection,
            total_cap,
            total: AtomicUsize::new(0),
            evictions,
        })
    }

    /// Bytes waiting in all outlets.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Waiting {
    queue: VecDeque<Outgoing>,
    bytes: usize,
    draining: bool,
    /// Cut loose: nothing more is queued or sent.
    evicted: bool,
}

pub struct Outlet {
    waiting: Mutex<Waiting>,
    limits: Arc<SendLimits>,
}

/// What socketioxide made of one packet.
enum Sent {
    Yes,
    /// Its queue for the connection is full: try again later.
    Full,
    /// The connection is closing: nothing more will go out.
    Closed,
}

fn try_send(socket: &Arc<Socket<LocalAdapter>>, packet: &Outgoing) -> Sent {
    let result = match packet {
        Outgoing::Event { event, json } => socket.emit(*event, &**json),
        Outgoing::Ack { id, json } => {
            // An AckSender is spent by sending, also when the send fails: make one per try.
            let Ok(ack) = AckSender::from_message_parts(
                socket,
                &mut PacketValue::Bytes(Default::default()),
                &Some(*id),
            );
            ack.send(&**json)
        }
    };
    match result {
        Ok(()) => Sent::Yes,
        Err(socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)) => {
            Sent::Full
        }
        Err(err) => {
            tracing::debug!(sid = %socket.id, %err, "not sent: the connection is closing");
            Sent::Closed
        }
    }
}

impl Outlet {
    pub fn new(limits: Arc<SendLimits>) -> Self {
        Self {
            waiting: Mutex::new(Waiting::default()),
            limits,
        }
    }

    /// Sends `packet` to `peer` now, or after what is waiting; see the module docs.
    pub fn send(&self, peer: &Peer, packet: Outgoing) {
        let mut waiting = lock(&self.waiting);
        if waiting.evicted {
            return;
        }
        if waiting.queue.is_empty() {
            match try_send(&peer.socket, &packet) {
                Sent::Yes | Sent::Closed => return,
                Sent::Full => {}
            }
        }
        let bytes = packet.bytes();
        waiting.bytes += bytes;
        waiting.queue.push_back(packet);
        let total = self.limits.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if waiting.bytes > self.limits.per_connection || total > self.limits.total_cap {
            tracing::warn!(
                sid = %peer.socket.id,
                waiting_bytes = waiting.bytes,
                all_bytes = total,
                "a connection is not reading what it is sent: cutting it loose"
            );
            self.discard(&mut waiting);
            waiting.evicted = true;
            let _ = self.limits.evictions.send(peer.clone());
            return;
        }
        if !waiting.draining {
            waiting.draining = true;
            tokio::spawn(drain(peer.clone()));
        }
    }

    /// Stops sending: whatever waits is dropped. For a connection that is going away.
    pub fn close(&self) {
        let mut waiting = lock(&self.waiting);
        self.discard(&mut waiting);
        waiting.evicted = true;
    }

    pub fn is_evicted(&self) -> bool {
        lock(&self.waiting).evicted
    }

    fn discard(&self, waiting: &mut Waiting) {
        self.limits
            .total
            .fetch_sub(waiting.bytes, Ordering::Relaxed);
        waiting.bytes = 0;
        waiting.queue.clear();
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        let mut waiting = lock(&self.waiting);
        self.limits
            .total
            .fetch_sub(waiting.bytes, Ordering::Relaxed);
        waiting.bytes = 0;
    }
}

/// Feeds waiting packets to socketioxide as its queue empties. socketioxide does not say
/// when that is, so this looks again after a short sleep, backing off while the
/// connection does not read.
async fn drain(peer: Peer) {
    let outlet = &peer.conn.outlet;
    let mut delay = Duration::from_millis(1);
    loop {
        tokio::time::sleep(delay).await;
        let mut waiting = lock(&outlet.waiting);
        let mut sent_any = false;
        while let Some(front) = waiting.queue.front() {
            match try_send(&peer.socket, front) {
                Sent::Yes => {
                    let bytes = front.bytes();
                    waiting.queue.pop_front();
                    waiting.bytes -= bytes;
                    outlet.limits.total.fetch_sub(bytes, Ordering::Relaxed);
                    sent_any = true;
                }
                Sent::Full => break,
                Sent::Closed => {
                    outlet.discard(&mut waiting);
                    break;
                }
            }
        }
        if waiting.queue.is_empty() || waiting.evicted {
            waiting.draining = false;
            return;
        }
        delay = if sent_any {
            Duration::from_millis(1)
        } else {
            (delay * 2).min(Duration::from_millis(50))
        };
    }
}
