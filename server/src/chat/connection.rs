//! One Socket.IO connection's state, kept in the socket's extensions: who it speaks as,
//! which rooms it is in, its rate-limit buckets, its request queue and its outlet.
//!
//! Room membership has one source of truth, `rooms.rs`: the list of rooms here is its
//! index by connection, written only there, under this connection's membership lock,
//! which is also what makes closing race-free (see [`Membership`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::{Sid, Socket};

use super::limits::{ClientKey, ConnectionSlot, RateLimit, TokenBucket};
use super::outlet::{Outgoing, Outlet, SendLimits};
use super::turnstile::Turnstile;
use crate::lock;
use crate::storage::Owner;

/// The name a connection speaks under, and the session token that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    pub name: String,
    /// `name_key(name)`: what collisions are decided on.
    pub key: String,
    /// The session token, as handed to the client.
    pub token: String,
    /// Its hash: who the storage says made a change.
    pub owner: Owner,
}

/// The rooms a connection is in, the name it speaks under, and whether it has closed.
/// They live under one lock so that a join still queued when the connection closes
/// cannot add it to a room, or bind a name to it, after its disconnect took it out of
/// every room and gave its name back: the disconnect sets `closed` under this lock, and
/// a join checks it under the same lock before adding.
#[derive(Debug, Default)]
pub struct Membership {
    pub closed: bool,
    pub rooms: Vec<String>,
    /// Set by the first successful join; one connection keeps one name.
    pub speaker: Option<Speaker>,
}

/// Token buckets of one connection.
#[derive(Default)]
struct Buckets {
    messages: Option<TokenBucket>,
    requests: Option<TokenBucket>,
    searches: Option<TokenBucket>,
    refusals: Option<TokenBucket>,
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Messages,
    Requests,
    Searches,
    Refusals,
}

pub struct Connection {
    pub sid: Sid,
    /// 2 when the client asked for protocol 2 in its CONNECT payload, else 1.
    pub protocol: u32,
    /// Where the per-address limits count it; `None` without connection info.
    pub client: Option<ClientKey>,
    /// Requests it may have waiting before it is disconnected as a flooder.
    pub max_queued: u64,
    /// This connection's place in the connection caps; given back when it is dropped.
    _slot: ConnectionSlot,
    membership: Mutex<Membership>,
    /// Set once it is being dropped for flooding: nothing more it sent is handled.
    flooded: AtomicBool,
    pub turnstile: Turnstile,
    buckets: Mutex<Buckets>,
    pub outlet: Outlet,
    /// The rooms it watches (see `watchers.rs`).
    pub watching: Mutex<Vec<String>>,
}

impl Connection {
    pub fn new(
        sid: Sid,
        protocol: u32,
        slot: ConnectionSlot,
        send_limits: Arc<SendLimits>,
        max_queued: u64,
    ) -> Self {
        Self {
            sid,
            protocol,
            max_queued,
            client: slot.client(),
            _slot: slot,
            membership: Mutex::new(Membership::default()),
            flooded: AtomicBool::new(false),
            turnstile: Turnstile::default(),
            buckets: Mutex::new(Buckets::default()),
            outlet: Outlet::new(send_limits),
            watching: Mutex::new(Vec::new()),
        }
    }

    pub fn speaker(&self) -> Option<Speaker> {
        self.membership().speaker.clone()
    }

    /// The membership lock: for `rooms.rs`, and for binding a name (`handlers.rs`).
    pub(super) fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        lock(&self.membership)
    }

    pub fn is_closed(&self) -> bool {
        self.membership().closed
    }

    pub fn is_in(&self, room: &str) -> bool {
        self.membership().rooms.iter().any(|r| r == room)
    }

    pub fn room_count(&self) -> usize {
        self.membership().rooms.len()
    }

    /// Takes a token from one of this connection's buckets. On refusal: how long to wait,
    /// and whether the request arrived before a wait this bucket had announced.
    pub fn take(
        &self,
        bucket: Bucket,
        limit: Option<RateLimit>,
        arrived: Instant,
        now: Instant,
    ) -> Result<(), (Duration, bool)> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let mut buckets = lock(&self.buckets);
        let slot = match bucket {
            Bucket::Messages => &mut buckets.messages,
            Bucket::Requests => &mut buckets.requests,
            Bucket::Searches => &mut buckets.searches,
            Bucket::Refusals => &mut buckets.refusals,
        };
        let bucket = slot.get_or_insert_with(|| TokenBucket::new(limit, now));
        let early = bucket.arrived_early(arrived);
        bucket.take(now).map_err(|wait| (wait, early))
    }

    /// Marks the connection as being closed for flooding; false if it already was.
    pub fn stop_for_flooding(&self) -> bool {
        !self.flooded.swap(true, Ordering::AcqRel)
    }

    pub fn is_flooding(&self) -> bool {
        self.flooded.load(Ordering::Acquire)
    }
}

/// A connection as the rest of the server addresses it: its socket and its state.
#[derive(Clone)]
pub struct Peer {
    pub socket: Arc<Socket<LocalAdapter>>,
    pub conn: Arc<Connection>,
}

impl Peer {
    pub fn sid(&self) -> Sid {
        self.conn.sid
    }

    /// Sends through the connection's outlet (see `outlet.rs`).
    pub fn send(&self, packet: Outgoing) {
        self.conn.outlet.send(self, packet);
    }

    pub fn socket_ref(&self) -> SocketRef {
        SocketRef::from(self.socket.clone())
    }
}

/// The state a socket was given when it connected, if it was admitted.
pub fn connection_of(socket: &Socket<LocalAdapter>) -> Option<Arc<Connection>> {
    socket.extensions.get::<Arc<Connection>>()
}

/// Extractor for the connect middleware and the disconnect handler: the socket itself,
/// as the rest of the server holds it.
pub struct SocketArc(pub Arc<Socket<LocalAdapter>>);

impl socketioxide::handler::FromConnectParts<LocalAdapter> for SocketArc {
    type Error = std::convert::Infallible;

    fn from_connect_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: &Option<socketioxide::handler::Value>,
    ) -> Result<Self, Self::Error> {
        Ok(Self(s.clone()))
    }
}

impl socketioxide::handler::FromDisconnectParts<LocalAdapter> for SocketArc {
    type Error = std::convert::Infallible;

    fn from_disconnect_parts(
        s: &Arc<Socket<LocalAdapter>>,
        _: socketioxide::socket::DisconnectReason,
    ) -> Result<Self, Self::Error> {
        Ok(Self(s.clone()))
    }
}
