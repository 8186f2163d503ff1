//! Per-socket state, kept in the socket's extensions, and the extractor that hands a
//! handler everything it needs to answer one request in order.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use app::protocol::{self, ErrorCode, ErrorNotice, ProtocolError};
use serde::Serialize;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::Socket;

use super::limits::{ClientKey, ConnectionSlot, RateLimit, TokenBucket};
use super::rooms::lock;
use super::turnstile::Turnstile;
use super::{Chat, ChatState, Throttle};

/// The name a socket speaks under, and the session token that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    /// `name_key(name)`: what collisions are decided on.
    pub key: String,
    pub token: String,
}

#[derive(Default)]
pub struct Session {
    /// Set by the first successful join; one socket keeps one name.
    identity: Mutex<Option<Identity>>,
    rooms: Mutex<BTreeSet<String>>,
    /// Set once the socket is being dropped as a slow consumer.
    evicted: AtomicBool,
    /// Set once the socket is being dropped for flooding: nothing more it sent is handled.
    flooded: AtomicBool,
    pub turnstile: Turnstile,
    /// This connection's place in the connection caps; given back on disconnect.
    slot: Mutex<Option<ConnectionSlot>>,
    client: Mutex<Option<ClientKey>>,
    /// Token buckets: messages, other requests, and refusals (a socket that keeps
    /// sending after being refused runs out of these and is disconnected).
    buckets: Mutex<Buckets>,
}

#[derive(Default)]
struct Buckets {
    messages: Option<TokenBucket>,
    requests: Option<TokenBucket>,
    refusals: Option<TokenBucket>,
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Messages,
    Requests,
    Refusals,
}

impl Session {
    pub fn identity(&self) -> Option<Identity> {
        lock(&self.identity).clone()
    }

    /// Binds the socket to a name; returns the one it replaces.
    pub fn set_identity(&self, identity: Identity) -> Option<Identity> {
        lock(&self.identity).replace(identity)
    }

    /// Counts the connection in the caps for as long as the session holds the slot.
    pub fn hold_slot(&self, slot: ConnectionSlot) {
        *lock(&self.client) = slot.client();
        *lock(&self.slot) = Some(slot);
    }

    /// Gives back the connection slot and the name; called once, on disconnect.
    pub fn release(&self) -> Option<Identity> {
        lock(&self.slot).take();
        lock(&self.identity).take()
    }

    pub fn client(&self) -> Option<ClientKey> {
        *lock(&self.client)
    }

    /// Takes a token from one of this socket's buckets, or says how long to wait.
    pub fn take(
        &self,
        bucket: Bucket,
        limit: Option<RateLimit>,
        now: Instant,
    ) -> Result<(), std::time::Duration> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let mut buckets = lock(&self.buckets);
        let slot = match bucket {
            Bucket::Messages => &mut buckets.messages,
            Bucket::Requests => &mut buckets.requests,
            Bucket::Refusals => &mut buckets.refusals,
        };
        slot.get_or_insert_with(|| TokenBucket::new(limit, now))
            .take(now)
    }

    pub fn is_in(&self, room: &str) -> bool {
        lock(&self.rooms).contains(room)
    }

    pub fn rooms(&self) -> Vec<String> {
        lock(&self.rooms).iter().cloned().collect()
    }

    pub fn add_room(&self, room: &str) {
        lock(&self.rooms).insert(room.to_owned());
    }

    pub fn remove_room(&self, room: &str) {
        lock(&self.rooms).remove(room);
    }

    /// Marks the session as evicted; false if it already was.
    pub fn evict(&self) -> bool {
        !self.evicted.swap(true, Ordering::AcqRel)
    }

    /// Marks the session as being closed for flooding; false if it already was.
    pub fn stop_for_flooding(&self) -> bool {
        !self.flooded.swap(true, Ordering::AcqRel)
    }

    pub fn is_flooding(&self) -> bool {
        self.flooded.load(Ordering::Acquire)
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }
}

/// Looks up the session a socket was given when it connected.
pub fn session_of(socket: &SocketRef) -> Arc<Session> {
    socket.extensions.get::<Arc<Session>>().unwrap_or_else(|| {
        // Every socket gets its session in the connect middleware, before any handler can
        // run; this only guards against that invariant breaking.
        let session = Arc::new(Session::default());
        socket.extensions.insert(session.clone());
        session
    })
}

/// One incoming request: the socket, its session, how to answer, and its place in line.
pub struct Request {
    socket: SocketRef,
    session: Arc<Session>,
    ack: AckSender,
    wants_ack: bool,
    /// The packet carried binary attachments, which no event of the contract takes.
    binary: bool,
    ticket: u64,
}

impl FromMessageParts<LocalAdapter> for Request {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut PacketValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let socket = SocketRef::from_message_parts(s, v, ack_id)?;
        let ack = AckSender::from_message_parts(s, v, ack_id)?;
        let session = session_of(&socket);
        let ticket = session.turnstile.ticket();
        let binary = match v {
            PacketValue::Str(_, attachments) => attachments.as_ref().is_some_and(|a| !a.is_empty()),
            PacketValue::Bytes(_) => true,
        };
        Ok(Request {
            socket,
            session,
            ack,
            wants_ack: ack_id.is_some(),
            binary,
            ticket,
        })
    }
}

impl Request {
    /// Waits for this socket's earlier requests to finish, does the work, and answers.
    pub async fn handle<T, F, Fut>(self, chat: ChatState, event: &str, work: F)
    where
        T: Serialize,
        F: FnOnce(ChatState, SocketRef, Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, ProtocolError>>,
    {
        let session = self.session.clone();
        let _turn = session.turnstile.wait(self.ticket).await;
        if session.is_flooding() {
            return;
        }
        let result = if session.is_evicted() {
            Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "This connection fell too far behind and is being closed; reconnect.",
            ))
        } else {
            match chat.throttle(&self.socket, &session, event) {
                Throttle::Drop => return,
                Throttle::Refuse(refusal) => Err(refusal),
                Throttle::Pass if self.binary => Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    "Binary attachments are not accepted; send JSON text.",
                )),
                Throttle::Pass => work(chat.clone(), self.socket.clone(), session.clone()).await,
            }
        };
        self.respond(&chat, event, result);
    }

    /// Answers the request: on its ack when the client asked for one; a refusal without
    /// an ack becomes an `error` event so the client still learns why.
    fn respond<T: Serialize>(self, chat: &Chat, event: &str, result: Result<T, ProtocolError>) {
        let sent = match (&result, self.wants_ack) {
            (Ok(body), true) => self.ack.send(&protocol::ok_reply(body)),
            (Err(error), true) => self.ack.send(&protocol::err_reply(error)),
            (Ok(_), false) => Ok(()),
            (Err(error), false) => self.socket.emit(
                protocol::event::ERROR,
                &ErrorNotice {
                    event: event.to_owned(),
                    code: error.code,
                    message: error.message.clone(),
                    retry_after_ms: error.retry_after_ms,
                },
            ),
        };
        if let Err(err) = sent {
            if super::rooms::is_buffer_full(&err) {
                // The client cannot hear its answer: let it reconnect and catch up.
                chat.drop_slow_consumers(vec![self.socket]);
            } else {
                tracing::debug!(%err, "could not answer a request");
            }
        }
    }
}
