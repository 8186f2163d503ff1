//! The Socket.IO side of Banter: the shared state behind every handler, and the wiring.
//!
//! - `handlers.rs`: one function per event of the wire contract;
//! - `request.rs`: the order, rate limits and answer of every request;
//! - `connection.rs`: one connection's state; `outlet.rs`: everything sent to it;
//! - `rooms.rs`: membership, presence, typing (`typing.rs`) and fan-out;
//! - `identities.rs`: names and sessions; `watchers.rs`: `watch` and `activity`;
//! - `batcher.rs`: group commit of changes, delivered in order once stored;
//! - `limits.rs`: token buckets and connection caps; `turnstile.rs`: per-connection order.

mod batcher;
mod connection;
mod handlers;
mod identities;
pub mod limits;
mod ok_reply;
mod outlet;
mod request;
mod rooms;
mod turnstile;
mod typing;
mod watchers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use app::protocol::{self, event, ConnectAuth, ErrorCode, Message, ProtocolError};
use serde_json::value::RawValue;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::SocketIo;
use tokio::sync::mpsc;

use batcher::Batcher;
use connection::{Connection, Peer, SocketArc};
use identities::Identities;
use limits::{AbuseLimits, ClientLimits, ConnectRefusal};
use outlet::{shared_json, Outgoing, SendLimits};
use rooms::{Departure, Rooms};
use watchers::Watchers;

use crate::cluster::Cluster;
use crate::storage::{Storage, StorageError};

/// Tunables of the chat service.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Packets socketioxide queues per connection; what does not fit waits in the
    /// connection's outlet, counted in bytes (see `outlet.rs`).
    pub socket_buffer: usize,
    /// Bytes that may wait for one connection before it is cut loose as a slow consumer.
    pub send_buffer_bytes: usize,
    /// Bytes that may wait for all connections together.
    pub send_buffer_total: usize,
    /// Rooms one socket may be in at once.
    pub max_rooms_per_socket: usize,
    /// How long someone whose last connection to a room dropped still counts as there
    /// (see `rooms.rs`).
    pub departure_grace: Duration,
    /// How long a name stays its session's after its last connection closed.
    pub name_hold: Duration,
    /// Changes the batcher commits in one transaction at most.
    pub max_batch: usize,
    /// Origins besides the server's own whose pages may connect.
    pub allowed_origins: Vec<String>,
    /// The address people open Banter at (`--public-url`): then only its host, and
    /// `allowed_hosts`, are accepted in the Host header of a Socket.IO handshake.
    pub public_url: Option<String>,
    pub allowed_hosts: Vec<String>,
    /// Rate limits and connection caps.
    pub limits: AbuseLimits,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            socket_buffer: 32,
            send_buffer_bytes: 2 * 1024 * 1024,
            send_buffer_total: 512 * 1024 * 1024,
            max_rooms_per_socket: 32,
            departure_grace: Duration::from_millis(protocol::DEPARTURE_GRACE_MS),
            name_hold: Duration::from_millis(protocol::NAME_HOLD_MS),
            max_batch: 512,
            allowed_origins: Vec::new(),
            public_url: None,
            allowed_hosts: Vec::new(),
            limits: AbuseLimits::default(),
        }
    }
}

impl ChatOptions {
    /// The defaults without rate limits or connection caps: for load tests and for
    /// tests about something else.
    pub fn unlimited() -> Self {
        Self {
            limits: AbuseLimits::unlimited(),
            ..Self::default()
        }
    }
}

/// State shared by every handler.
pub struct Chat {
    options: ChatOptions,
    rooms: Arc<Rooms>,
    identities: Identities,
    clients: Arc<ClientLimits>,
    storage: Arc<dyn Storage>,
    batcher: Batcher,
    watchers: Arc<Watchers>,
    send_limits: Arc<SendLimits>,
    /// Set when shutdown began: no new connection or request is taken.
    draining: AtomicBool,
    /// Requests being handled, for shutdown to wait on.
    requests: Activity,
    pub metrics: crate::metrics::Metrics,
    /// The other nodes, with `--redis`.
    cluster: Option<Arc<Cluster>>,
}

/// Counts work in progress, and wakes whoever waits for there to be none.
#[derive(Clone, Default)]
pub struct Activity {
    count: Arc<std::sync::atomic::AtomicUsize>,
    idle: Arc<tokio::sync::Notify>,
}

/// One piece of work counted by an [`Activity`] until dropped.
pub struct Busy(Activity);

impl Activity {
    pub fn begin(&self) -> Busy {
        self.count.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Waits until nothing is in progress.
    pub async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

pub type ChatState = Arc<Chat>;

impl Chat {
    /// The chat service and its tasks (batcher, evictions, name holds); needs a Tokio
    /// runtime.
    pub fn new(options: ChatOptions, storage: Arc<dyn Storage>) -> ChatState {
        Self::with_cluster(options, storage, None)
    }

    /// The chat service of one node of several, sharing state through `cluster`.
    pub fn with_cluster(
        options: ChatOptions,
        storage: Arc<dyn Storage>,
        cluster: Option<Arc<Cluster>>,
    ) -> ChatState {
        let (evictions, evicted) = mpsc::unbounded_channel();
        let chat = Arc::new_cyclic(|chat| Chat {
            batcher: Batcher::spawn(chat.clone(), storage.clone(), options.max_batch),
            clients: Arc::new(ClientLimits::new(&options.limits)),
            send_limits: SendLimits::new(
                options.send_buffer_bytes,
                options.send_buffer_total,
                evictions,
            ),
            rooms: Arc::new(Rooms::new(options.departure_grace, cluster.clone())),
            identities: Identities::new(options.name_hold),
            options,
            watchers: Arc::default(),
            storage,
            draining: AtomicBool::new(false),
            requests: Activity::default(),
            metrics: Default::default(),
            cluster: cluster.clone(),
        });
        tokio::spawn(evict_slow_consumers(Arc::downgrade(&chat), evicted));
        match &cluster {
            // Names live in Redis, for every node.
            Some(cluster) => {
                cluster.attach(Arc::downgrade(&chat));
                chat.identities.restore(Vec::new(), Instant::now());
            }
            None => {
                tokio::spawn(keep_names(Arc::downgrade(&chat)));
            }
        }
        chat
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// `/metrics`: counters, latencies and the gauges read now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&[
            (
                "banter_connections",
                "Open Socket.IO connections.",
                self.clients.total() as u64,
            ),
            (
                "banter_rooms",
                "Rooms with someone in them.",
                self.rooms.live() as u64,
            ),
            (
                "banter_send_buffer_bytes",
                "Bytes waiting to be sent, all connections together.",
                self.send_limits.total() as u64,
            ),
            (
                "banter_draining",
                "1 while shutting down.",
                u64::from(self.is_draining()),
            ),
        ])
    }

    /// Takes a token from an address' shared budget: here, or for the whole cluster.
    pub async fn take_client_budget(
        &self,
        client: Option<limits::ClientKey>,
        budget: limits::ClientBudget,
        arrived: Instant,
    ) -> Result<(), (Duration, bool)> {
        let now = Instant::now();
        let (Some(cluster), Some(client)) = (&self.cluster, client) else {
            return self.clients.take(client, budget, arrived, now);
        };
        let limits = &self.options.limits;
        let (limit, shared) = match budget {
            limits::ClientBudget::Messages => {
                (limits.client_messages, crate::cluster::Budget::Messages)
            }
            limits::ClientBudget::Requests => {
                (limits.client_requests, crate::cluster::Budget::Requests)
            }
            limits::ClientBudget::RoomCreation => {
                (limits.room_creation, crate::cluster::Budget::RoomCreation)
            }
        };
        let Some(limit) = limit else { return Ok(()) };
        let wall = now_ms();
        let arrived_ms = wall - now.saturating_duration_since(arrived).as_millis() as i64;
        match cluster
            .take(
                shared,
                &client.to_string(),
                limit.per_second,
                limit.burst,
                wall,
                arrived_ms,
            )
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some((wait_ms, early))) => Err((Duration::from_millis(wait_ms), early)),
            Err(err) => {
                // Redis unreachable: fall back to this node's own count rather than stop.
                tracing::warn!(%err, "Redis failed a budget; counting on this node");
                self.clients.take(Some(client), budget, arrived, now)
            }
        }
    }

    /// Gives back one connection's hold on a name.
    fn release_name(&self, key: &str) {
        match &self.cluster {
            None => self.identities.release(key, Instant::now()),
            Some(cluster) => {
                let (cluster, key, hold) =
                    (cluster.clone(), key.to_owned(), self.options.name_hold);
                tokio::spawn(async move {
                    if let Err(err) = cluster
                        .release_name(&key, now_ms(), hold.as_millis() as u64)
                        .await
                    {
                        tracing::warn!(%err, "could not release a name in Redis");
                    }
                });
            }
        }
    }

    /// Takes a name for one more connection: locally, or for the whole cluster.
    async fn claim_name(
        &self,
        key: &str,
        name: &str,
        token: Option<&str>,
    ) -> Result<identities::Claim, ProtocolError> {
        let held = || {
            ProtocolError::new(
                ErrorCode::NameTaken,
                format!("Someone is already using the name \"{name}\"; pick another."),
            )
        };
        let Some(cluster) = &self.cluster else {
            self.identities.ready().await;
            return self
                .identities
                .claim(key, name, token, Instant::now())
                .map_err(|refusal| match refusal {
                    identities::ClaimRefusal::Held => held(),
                    identities::ClaimRefusal::LooksLike(other) => looks_like(name, &other),
                });
        };
        let looks = identities::looks(name);
        let hold_ms = self.options.name_hold.as_millis() as u64;
        match cluster.looks_taken(key, &looks, now_ms(), hold_ms).await {
            Ok(Some(other)) => return Err(looks_like(name, &other)),
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "Redis failed a look-alike check"),
        }
        let presented = token.filter(|t| identities::is_well_formed(t));
        let fresh = identities::new_token();
        let take_token = presented.map_or(fresh.clone(), str::to_owned);
        let take = crate::storage::Owner::of_token(&take_token);
        let presented_owner = token.map(crate::storage::Owner::of_token);
        let granted = cluster
            .claim_name(
                key,
                name,
                presented_owner.as_ref(),
                &take,
                now_ms(),
                self.options.name_hold.as_millis() as u64,
            )
            .await
            .map_err(|err| {
                tracing::error!(%err, "Redis failed claiming a name");
                ProtocolError::new(
                    ErrorCode::Unavailable,
                    "The server could not reach Redis; try again.",
                )
            })?;
        match granted {
            crate::cluster::NameClaim::Held => Err(held()),
            crate::cluster::NameClaim::Granted(owner) => {
                if let Err(err) = cluster.record_looks(key, &looks).await {
                    tracing::warn!(%err, "Redis failed recording a name's looks");
                }
                let token = if Some(&owner) == presented_owner.as_ref() {
                    token.unwrap_or_default().to_owned()
                } else {
                    take_token
                };
                Ok(identities::Claim { token, owner })
            }
        }
    }

    /// `/readyz`: the database (and Redis) answer and the server is not shutting down.
    pub async fn ready(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("shutting down".into());
        }
        if let Some(cluster) = &self.cluster {
            if !cluster.is_connected() {
                return Err("Redis is not reachable".into());
            }
        }
        self.storage
            .ping()
            .await
            .map_err(|err| format!("database: {err}"))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Counts a request as in progress until the guard drops; see [`Chat::shut_down`].
    pub fn begin_request(&self) -> Busy {
        self.requests.begin()
    }

    /// Sends a committed change to its room (and its watchers): `message` for a new
    /// message, `updated` for a change to one; not to the connection that made it.
    /// Delivers a committed change; returns the message's JSON when this node sent it to
    /// anyone now (see [`Chat::deliver_here`]).
    fn deliver(
        &self,
        message: &Message,
        is_post: bool,
        from: Option<socketioxide::socket::Sid>,
    ) -> Option<Arc<RawValue>> {
        if is_post {
            self.watchers.posted(&self.rooms, message);
        }
        match &self.cluster {
            // In sequence with the other nodes' changes, through the room's feed.
            Some(cluster) => {
                cluster.committed(message, is_post, from);
                None
            }
            None => self.deliver_here(message, is_post, from),
        }
    }

    /// Sends a change to this node's members of its room, now.
    ///
    /// Returns the message's JSON when any member was sent it: the sender's ack is written
    /// from the same text, so a message is serialized once however it is answered.
    pub fn deliver_here(
        &self,
        message: &Message,
        is_post: bool,
        from: Option<socketioxide::socket::Sid>,
    ) -> Option<Arc<RawValue>> {
        let event = if is_post {
            event::MESSAGE
        } else {
            event::UPDATED
        };
        self.rooms
            .with(&message.room, |room| {
                room.has_messages = true;
                // Serialized once for every member.
                room.send_all(from, event, message)
            })
            .flatten()
    }

    /// A message posted on another node, for this node's watchers of its room.
    pub fn watch_posted(&self, message: &Message) {
        self.watchers.posted(&self.rooms, message);
    }

    /// Another node's typing notice.
    pub fn remote_typing(&self, notice: &app::protocol::TypingNotice) {
        self.rooms.remote_typing(notice);
    }

    /// Another node's person arrived in or left a room.
    pub fn remote_presence(
        &self,
        room: &str,
        key: &str,
        name: &str,
        arrived: bool,
        announce: bool,
    ) {
        self.rooms
            .remote_presence(room, key, name, arrived, announce);
    }

    /// This node's people, room by room, for the other nodes.
    pub fn local_people(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.rooms.local_people()
    }

    /// Everything a connection leaves behind when it goes: rooms, watches, its name.
    fn forget(&self, peer: &Peer) {
        if let Some(speaker) = self.rooms.leave_all(peer, Departure::Dropped) {
            // The name stays reserved for its session token a while, for a reconnect.
            self.release_name(&speaker.key);
        }
        self.watchers.forget(peer);
        peer.conn.outlet.close();
    }

    /// Shutdown: takes no new connection or request, lets the batcher commit and answer
    /// what it holds, then tells every connection why and closes it.
    pub async fn shut_down(&self, io: &SocketIo) {
        self.draining.store(true, Ordering::Release);
        // Requests that began before are finished and answered; later ones are refused.
        self.requests.idle().await;
        self.batcher.drain().await;
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        let notice = protocol::ErrorNotice {
            event: String::new(),
            code: ErrorCode::Unavailable,
            message: "The server is shutting down; reconnect in a moment.".to_owned(),
            retry_after_ms: None,
        };
        if let Some(json) = shared_json(&notice) {
            for socket in io.sockets() {
                let _ = socket.emit(event::ERROR, &*json);
            }
        }
        // Give the notices a moment to leave before the sockets close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        io.close().await;
    }
}

/// Cuts loose the connections outlets report as not reading: they leave every room at
/// once (so nothing more is queued for them and the others see them go) and are closed
/// as soon as socketioxide lets us. They reconnect and catch up from history.
async fn evict_slow_consumers(
    chat: std::sync::Weak<Chat>,
    mut evicted: mpsc::UnboundedReceiver<Peer>,
) {
    while let Some(peer) = evicted.recv().await {
        let Some(chat) = chat.upgrade() else { return };
        tracing::warn!(sid = %peer.sid(), "disconnecting a slow consumer");
        chat.metrics
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        chat.forget(&peer);
        tokio::spawn(close_when_possible(peer.socket_ref()));
    }
}

/// Writes name holds to storage behind the claims (about once a second), refreshing the
/// names in use now and then; first restores the holds storage kept.
async fn keep_names(chat: std::sync::Weak<Chat>) {
    let Some(strong) = chat.upgrade() else { return };
    let window = identities::NAME_HOLD + identities::REFRESH + Duration::from_secs(60);
    let since = now_ms() - window.as_millis() as i64;
    let kept = match strong.storage.load_names(since).await {
        Ok(kept) => kept,
        Err(err) => {
            tracing::error!(%err, "could not read the names kept in the database");
            Vec::new()
        }
    };
    tracing::debug!(names = kept.len(), "restored name holds");
    strong.identities.restore(kept, Instant::now());
    drop(strong);
    let mut last_refresh = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(chat) = chat.upgrade() else { return };
        let refresh = last_refresh.elapsed() >= identities::REFRESH;
        if refresh {
            last_refresh = Instant::now();
        }
        let dirty = chat.identities.take_dirty(refresh);
        if !dirty.is_empty() {
            if let Err(err) = chat.storage.save_names(dirty).await {
                tracing::warn!(%err, "could not write name holds");
            }
        }
    }
}

/// socketioxide 0.18.9 refuses `disconnect()` while the socket's buffer is full, which is
/// exactly when a slow consumer must go (its DISCONNECT packet has no room). Retry until
/// the buffer drains or the transport closes; if the client never reads again, the
/// Engine.IO heartbeat times it out.
async fn close_when_possible(socket: SocketRef) {
    for _ in 0..600 {
        match socket.clone().disconnect() {
            Err(socketioxide::SocketError::InternalChannelFull) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return,
        }
    }
}

/// Tells a socket why, then closes it: it kept sending after being told to wait.
fn disconnect_flooder(peer: &Peer, event: &str) {
    if !peer.conn.stop_for_flooding() {
        return;
    }
    tracing::warn!(sid = %peer.sid(), client = ?peer.conn.client, "disconnecting a socket that kept flooding");
    crate::metrics::FLOODERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let notice = protocol::ErrorNotice {
        event: event.to_owned(),
        code: ErrorCode::RateLimited,
        message: "Disconnected: too many requests after being asked to slow down.".to_owned(),
        retry_after_ms: None,
    };
    if let Some(packet) = Outgoing::event_of(event::ERROR, &notice) {
        peer.send(packet);
    }
    tokio::spawn(close_when_possible(peer.socket_ref()));
}

/// Connect middleware: applies the connection caps, sets up the connection's state and
/// registers the handlers before socketioxide sends CONNECT.
///
/// socketioxide sends CONNECT before it runs the connect handler itself, in a spawned
/// task; handlers registered there miss any event a client sends right after connecting.
/// Middlewares are awaited before CONNECT goes out, so nothing can arrive unhandled. A
/// refusal here reaches the client as CONNECT_ERROR with the reason.
pub async fn register_handlers(
    SocketArc(socket): SocketArc,
    State(chat): State<ChatState>,
    TryData(auth): TryData<ConnectAuth>,
) -> Result<(), ConnectRefusal> {
    if chat.is_draining() {
        return Err(ConnectRefusal::ShuttingDown);
    }
    let socket_ref = SocketRef::from(socket.clone());
    let client = limits::client_key(&socket_ref, chat.options.limits.client_ip_header.as_deref())
        .inspect_err(
        |refusal| tracing::warn!(sid = %socket.id, %refusal, "connection refused"),
    )?;
    let mut slot = chat.clients.admit(client).inspect_err(|refusal| {
        tracing::info!(sid = %socket.id, ?client, %refusal, "connection refused");
    })?;
    // With several nodes, an address' connections are counted on all of them.
    if let (Some(cluster), Some(client)) = (&chat.cluster, client) {
        let max = chat.options.limits.max_connections_per_client;
        match cluster.admit(&client.to_string(), max).await {
            Ok(true) => slot.counted_in(cluster.clone()),
            Ok(false) => return Err(ConnectRefusal::PerClient(max)),
            Err(err) => {
                tracing::error!(%err, "Redis failed counting a connection");
                return Err(ConnectRefusal::Unavailable);
            }
        }
    }
    // A payload that is not `{"protocol": n}` (or none, as stock clients send) is 1.
    let protocol = auth.map_or(1, |auth| auth.protocol.max(1));
    let conn = Connection::new(
        socket.id,
        protocol,
        slot,
        chat.send_limits.clone(),
        chat.options.limits.max_queued_requests,
    );
    socket.extensions.insert(Arc::new(conn));
    // Every event goes through one handler that dispatches by name (see there why).
    socket_ref.on_fallback(handlers::on_event);
    socket_ref.on_disconnect(handlers::on_disconnect);
    Ok(())
}

/// The namespace's connect handler; all the work happened in [`register_handlers`].
pub async fn on_connect(socket: SocketRef) {
    tracing::debug!(sid = %socket.id, "socket connected");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn looks_like(name: &str, other: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NameTaken,
        format!("\"{name}\" looks too much like \"{other}\", a name in use; pick another."),
    )
}

fn unavailable(err: StorageError) -> ProtocolError {
    tracing::error!(%err, "storage failed");
    ProtocolError::new(
        ErrorCode::Unavailable,
        "The server could not reach its database; try again.",
    )
}
