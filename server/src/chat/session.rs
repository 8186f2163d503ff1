//! Per-socket state, kept in the socket's extensions, and the extractor that hands a
//! handler everything it needs to answer one request in order.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use app::protocol::{self, ErrorCode, ErrorNotice, ProtocolError};
use serde::Serialize;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::Socket;

use super::rooms::lock;
use super::turnstile::Turnstile;
use super::{Chat, ChatState};

#[derive(Default)]
pub struct Session {
    /// Set by the first successful join; one socket keeps one name.
    name: Mutex<Option<String>>,
    rooms: Mutex<BTreeSet<String>>,
    /// Set once the socket is being dropped as a slow consumer.
    evicted: AtomicBool,
    pub turnstile: Turnstile,
}

impl Session {
    pub fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }

    pub fn set_name(&self, name: &str) {
        lock(&self.name).get_or_insert_with(|| name.to_owned());
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
        Ok(Request {
            socket,
            session,
            ack,
            wants_ack: ack_id.is_some(),
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
        let result = if session.is_evicted() {
            Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "This connection fell too far behind and is being closed; reconnect.",
            ))
        } else {
            work(chat.clone(), self.socket.clone(), session.clone()).await
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
