//! The Socket.IO side of Banter: the handlers behind every event of the wire contract.

mod identities;
pub mod limits;
mod rooms;
mod session;
mod turnstile;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use app::protocol::{
    self, event, EmptyReply, ErrorCode, HistoryReply, HistoryRequest, JoinReply, JoinRequest,
    LeaveRequest, Message, Presence, ProtocolError, RoomInfo, RoomsReply, SendReply, SendRequest,
    TypingNotice, TypingRequest,
};
use serde::de::DeserializeOwned;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::ParserError;

use identities::{ClaimRefusal, Identities};
use limits::{retry_after_ms, AbuseLimits, ClientLimits, ConnectRefusal};
use rooms::{lock, Admission, Rooms};
use session::{session_of, Bucket, Identity, Request, Session};

use crate::storage::{Storage, StorageError};

/// Tunables of the chat service.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Packets buffered per socket before it counts as a slow consumer.
    pub socket_buffer: usize,
    /// Rooms one socket may be in at once.
    pub max_rooms_per_socket: usize,
    /// Messages the writer commits in one transaction at most.
    pub max_batch: usize,
    /// Origins besides the server's own whose pages may connect.
    pub allowed_origins: Vec<String>,
    /// Rate limits and connection caps.
    pub limits: AbuseLimits,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            socket_buffer: 4_096,
            max_rooms_per_socket: 32,
            max_batch: 512,
            allowed_origins: Vec::new(),
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
    rooms: Rooms,
    identities: Identities,
    clients: Arc<ClientLimits>,
    storage: Arc<dyn Storage>,
    writer: writer::WriterHandle,
}

pub type ChatState = Arc<Chat>;

impl Chat {
    /// The chat service and its writer task; needs a Tokio runtime.
    pub fn new(options: ChatOptions, storage: Arc<dyn Storage>) -> ChatState {
        Arc::new_cyclic(|chat| Chat {
            writer: writer::spawn(chat.clone(), storage.clone(), options.max_batch),
            clients: Arc::new(ClientLimits::new(
                options.limits.max_connections_per_client,
                options.limits.max_connections,
                options.limits.client_messages,
            )),
            options,
            rooms: Rooms::default(),
            identities: Identities::default(),
            storage,
        })
    }

    /// Applies the rate limits to one request, in arrival order (the caller holds the
    /// socket's turn). A socket that keeps sending after being refused is disconnected.
    fn throttle(&self, socket: &SocketRef, session: &Session, event: &str) -> Throttle {
        let now = Instant::now();
        let limits = &self.options.limits;
        let allowed = if event == protocol::event::MESSAGE {
            session
                .take(Bucket::Messages, limits.messages, now)
                .and_then(|()| self.clients.take_message(session.client(), now))
        } else {
            session.take(Bucket::Requests, limits.requests, now)
        };
        let Err(wait) = allowed else {
            return Throttle::Pass;
        };
        if session
            .take(Bucket::Refusals, limits.refusals, now)
            .is_err()
        {
            disconnect_flooder(socket, session, event);
            return Throttle::Drop;
        }
        if event == protocol::event::TYPING {
            // Typing is advisory and has no answer: extra updates are just dropped.
            return Throttle::Drop;
        }
        let retry_after = retry_after_ms(wait);
        Throttle::Refuse(ProtocolError::rate_limited(
            format!("You are sending too fast; try again in {retry_after} ms."),
            retry_after,
        ))
    }

    /// Cuts loose sockets whose send buffer is full. They leave every room at once, so
    /// nothing more is queued for them and the others see them go; the connection is
    /// closed as soon as socketioxide lets us. They reconnect and catch up from history,
    /// which beats dropping messages for them silently or buffering without bound.
    fn drop_slow_consumers(&self, mut slow: Vec<SocketRef>) {
        while let Some(socket) = slow.pop() {
            let session = session_of(&socket);
            if !session.evict() {
                continue; // already being dropped
            }
            tracing::warn!(sid = %socket.id, "disconnecting a slow consumer: its send buffer is full");
            for room in session.rooms() {
                // Telling the others may find more slow consumers: handle them too.
                slow.extend(leave(self, &socket, &session, &room).into_iter().flatten());
            }
            tokio::spawn(close_when_possible(socket));
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

/// The outcome of the rate limits for one request.
enum Throttle {
    Pass,
    Refuse(ProtocolError),
    /// Neither handled nor answered.
    Drop,
}

/// Tells a socket why, then closes it: it kept sending after being told to wait.
fn disconnect_flooder(socket: &SocketRef, session: &Session, event: &str) {
    if !session.stop_for_flooding() {
        return;
    }
    tracing::warn!(sid = %socket.id, client = ?session.client(), "disconnecting a socket that kept flooding");
    let notice = protocol::ErrorNotice {
        event: event.to_owned(),
        code: ErrorCode::RateLimited,
        message: "Disconnected: too many requests after being asked to slow down.".to_owned(),
        retry_after_ms: None,
    };
    let _ = socket.emit(event::ERROR, &notice);
    tokio::spawn(close_when_possible(socket.clone()));
}

/// Connect middleware: applies the connection caps and registers the handlers before
/// socketioxide sends CONNECT.
///
/// socketioxide sends CONNECT before it runs the connect handler itself, in a spawned
/// task; handlers registered there miss any event a client sends right after connecting.
/// Middlewares are awaited before CONNECT goes out, so nothing can arrive unhandled. A
/// refusal here reaches the client as CONNECT_ERROR with the reason.
pub async fn register_handlers(
    socket: SocketRef,
    State(chat): State<ChatState>,
) -> Result<(), ConnectRefusal> {
    let client = limits::client_key(&socket, chat.options.limits.client_ip_header.as_deref());
    let slot = chat.clients.admit(client).inspect_err(|refusal| {
        tracing::info!(sid = %socket.id, ?client, %refusal, "connection refused");
    })?;
    let session = Session::default();
    session.hold_slot(slot);
    socket.extensions.insert(Arc::new(session));
    socket.on(event::JOIN, on_join);
    socket.on(event::MESSAGE, on_message);
    socket.on(event::TYPING, on_typing);
    socket.on(event::LEAVE, on_leave);
    socket.on(event::HISTORY, on_history);
    socket.on(event::ROOMS, on_rooms);
    // socketioxide drops events nobody handles, so a client waiting on an ack for a
    // misspelt event would wait for ever: refuse them like any other bad request.
    socket.on_fallback(on_unknown_event);
    socket.on_disconnect(on_disconnect);
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

/// Reads a payload into its request type; any other shape is `bad_request`.
fn parse<T: DeserializeOwned>(
    data: Result<serde_json::Value, ParserError>,
) -> Result<T, ProtocolError> {
    let value = data.map_err(|_| {
        ProtocolError::new(
            ErrorCode::BadRequest,
            "the request needs a JSON object payload",
        )
    })?;
    protocol::decode_request(value)
}

/// Any event the contract does not have.
async fn on_unknown_event(
    State(chat): State<ChatState>,
    request: Request,
    socketioxide::extract::Event(name): socketioxide::extract::Event,
) {
    // The name goes back in the answer: keep a hostile one short.
    let shown: String = name.chars().take(64).collect();
    let refusal = ProtocolError::new(
        ErrorCode::BadRequest,
        format!("There is no event \"{shown}\"; see docs/PROTOCOL.md for the events."),
    );
    request
        .handle(chat, &shown, |_, _, _| async move {
            Err::<EmptyReply, _>(refusal)
        })
        .await;
}

fn not_joined(room: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotJoined,
        format!("You have not joined the room \"{room}\"."),
    )
}

fn unavailable(err: StorageError) -> ProtocolError {
    tracing::error!(%err, "storage failed");
    ProtocolError::new(
        ErrorCode::Unavailable,
        "The server could not reach its database; try again.",
    )
}

async fn on_join(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(chat, event::JOIN, |chat, socket, session| async move {
            join(&chat, &socket, &session, data).await
        })
        .await;
}

async fn join(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    data: Result<serde_json::Value, ParserError>,
) -> Result<JoinReply, ProtocolError> {
    let req: JoinRequest = parse(data)?;
    let name = protocol::validate_name(&req.name)?;
    protocol::validate_room(&req.room)?;
    if !session.is_in(&req.room) && session.room_count() >= chat.options.max_rooms_per_socket {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            format!(
                "A connection can be in at most {} rooms at once; leave one first.",
                chat.options.max_rooms_per_socket
            ),
        ));
    }

    let identity = identify(chat, session, &name, req.session.as_deref())?;

    // Admit first, then read history: a message committed in between reaches the client
    // both live and in history, which it merges by id. The other order could lose it.
    let (newly_joined, members) = admit(chat, socket, session, &req.room, &identity)?;
    if newly_joined {
        chat.storage
            .touch_room(&req.room, now_ms())
            .await
            .map_err(unavailable)?;
    }
    let (history, truncated) = match req.since {
        Some(since) => {
            let mut history = chat
                .storage
                .after(&req.room, since, protocol::CATCH_UP_LIMIT + 1)
                .await
                .map_err(unavailable)?;
            let truncated = history.len() > protocol::CATCH_UP_LIMIT as usize;
            history.truncate(protocol::CATCH_UP_LIMIT as usize);
            (history, truncated)
        }
        None => {
            let history = chat
                .storage
                .before(&req.room, u64::MAX, protocol::JOIN_HISTORY)
                .await
                .map_err(unavailable)?;
            (history, false)
        }
    };
    Ok(JoinReply {
        room: req.room,
        name: identity.name,
        online: members.len(),
        updates: Vec::new(),
        reset: false,
        members,
        history,
        truncated,
        session: identity.token,
    })
}

/// The name this socket speaks under: the one it already has, or the requested one if
/// it is free or the client proves it owns it with its session token.
fn identify(
    chat: &Chat,
    session: &Session,
    name: &str,
    token: Option<&str>,
) -> Result<Identity, ProtocolError> {
    let key = protocol::name_key(name);
    if let Some(own) = session.identity() {
        if own.key == key {
            return Ok(own);
        }
        if session.room_count() > 0 {
            return Err(ProtocolError::new(
                ErrorCode::InvalidName,
                format!(
                    "This connection already uses the name \"{}\"; leave its rooms to change it.",
                    own.name
                ),
            ));
        }
    }
    let token =
        chat.identities
            .claim(&key, token, Instant::now())
            .map_err(|ClaimRefusal::Held| {
                ProtocolError::new(
                    ErrorCode::NameTaken,
                    format!("Someone is already using the name \"{name}\"; pick another."),
                )
            })?;
    let identity = Identity {
        name: name.to_owned(),
        key,
        token,
    };
    // A connection in no room may change its name; the old one stays held for its token.
    if let Some(previous) = session.set_identity(identity.clone()) {
        chat.identities.release(&previous.key, Instant::now());
    }
    Ok(identity)
}

/// Adds the socket to the room's members and tells the others; returns whether it is
/// new there and who is online.
fn admit(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    room_name: &str,
    identity: &Identity,
) -> Result<(bool, Vec<String>), ProtocolError> {
    let name = &identity.name;
    let room = chat.rooms.get_or_create(room_name);
    let mut room = lock(&room);
    let (newly_joined, slow) = match room.admit(socket, name, &identity.token) {
        Admission::NameTaken => {
            return Err(ProtocolError::new(
                ErrorCode::NameTaken,
                format!("Someone called \"{name}\" is already in this room."),
            ));
        }
        Admission::AlreadyMember => (false, Vec::new()),
        Admission::AnotherConnection => {
            session.add_room(room_name);
            (true, Vec::new())
        }
        Admission::Joined => {
            session.add_room(room_name);
            let notice = Presence {
                room: room_name.to_owned(),
                name: name.clone(),
                ts: now_ms(),
            };
            (
                true,
                room.broadcast(Some(socket.id), event::JOINED, &notice),
            )
        }
    };
    let members = room.member_names();
    drop(room);
    chat.drop_slow_consumers(slow);
    Ok((newly_joined, members))
}

async fn on_message(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(chat, event::MESSAGE, |chat, socket, session| async move {
            send(&chat, &socket, &session, data).await
        })
        .await;
}

async fn send(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    data: Result<serde_json::Value, ParserError>,
) -> Result<SendReply, ProtocolError> {
    // Unknown fields such as a client-supplied `author` or `id` are ignored by design.
    let req: SendRequest = parse(data)?;
    protocol::validate_client_id(&req.client_id)?;
    let text = protocol::validate_text(&req.text)?;
    let author = author_in(chat, socket, session, &req.room)?;
    // A resend of a message already stored gets the original back, stored and sent once:
    // the writer's insert detects it, so the common case costs no extra query.
    let message = Message {
        id: 0,
        room: req.room,
        author,
        text,
        ts: now_ms(),
        client_id: req.client_id,
        ..Message::default()
    };
    // The writer commits it, then fans it out, then answers: the ack means it is stored.
    let message = chat.writer.write(message, socket.id).await?;
    Ok(SendReply { message })
}

/// The sender's name in the room; also ends its typing indicator, as the server does
/// whenever someone sends.
fn author_in(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    room_name: &str,
) -> Result<String, ProtocolError> {
    let room = match (session.is_in(room_name), chat.rooms.get(room_name)) {
        (true, Some(room)) => room,
        _ => return Err(not_joined(room_name)),
    };
    let mut room = lock(&room);
    let Some(member) = room.member_mut(socket.id) else {
        return Err(not_joined(room_name));
    };
    let author = member.name.clone();
    // Sending ends typing: the others are told at once (a message is not coalesced).
    member.typing = false;
    member.typing_generation += 1;
    let slow = if std::mem::take(&mut member.typing_relayed) {
        member.typing_relayed_at = Some(Instant::now());
        let notice = TypingNotice {
            room: room_name.to_owned(),
            name: author.clone(),
            typing: false,
        };
        room.broadcast(Some(socket.id), event::TYPING, &notice)
    } else {
        Vec::new()
    };
    drop(room);
    chat.drop_slow_consumers(slow);
    Ok(author)
}

async fn on_history(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(chat, event::HISTORY, |chat, _socket, session| async move {
            let req: HistoryRequest = parse(data)?;
            if !session.is_in(&req.room) {
                return Err(not_joined(&req.room));
            }
            if req.limit == 0 || req.limit > protocol::MAX_HISTORY_PAGE {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!("limit must be 1 to {}.", protocol::MAX_HISTORY_PAGE),
                ));
            }
            let mut messages = chat
                .storage
                .before(
                    &req.room,
                    req.before.ok_or_else(|| {
                        ProtocolError::new(ErrorCode::BadRequest, "history needs \"before\".")
                    })?,
                    req.limit + 1,
                )
                .await
                .map_err(unavailable)?;
            // One extra row tells whether anything older exists; it is not returned.
            let more = messages.len() > req.limit as usize;
            if more {
                messages.remove(0);
            }
            Ok(HistoryReply {
                messages,
                more,
                newer: false,
            })
        })
        .await;
}

async fn on_rooms(State(chat): State<ChatState>, request: Request) {
    request
        .handle(chat, event::ROOMS, |chat, _socket, _session| async move {
            let stored = chat.storage.rooms().await.map_err(unavailable)?;
            let rooms = stored
                .into_iter()
                .map(|room| RoomInfo {
                    online: chat.rooms.online(&room.name),
                    name: room.name,
                    last_id: room.last_id,
                    last_ts: room.last_ts,
                })
                .collect();
            Ok(RoomsReply {
                rooms,
                more: false,
                next: None,
            })
        })
        .await;
}

async fn on_typing(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    // Typing needs no ack; a refusal still reaches the client as an `error` event.
    request
        .handle(chat, event::TYPING, |chat, socket, session| async move {
            typing(&chat, &socket, &session, data).map(|()| EmptyReply {})
        })
        .await;
}

fn typing(
    chat: &ChatState,
    socket: &SocketRef,
    session: &Session,
    data: Result<serde_json::Value, ParserError>,
) -> Result<(), ProtocolError> {
    let req: TypingRequest = parse(data)?;
    let room_arc = match (session.is_in(&req.room), chat.rooms.get(&req.room)) {
        (true, Some(room)) => room,
        _ => return Err(not_joined(&req.room)),
    };
    let mut room = lock(&room_arc);
    let Some(member) = room.member_mut(socket.id) else {
        return Err(not_joined(&req.room));
    };
    member.typing_generation += 1;
    let generation = member.typing_generation;
    member.typing = req.typing;
    let name = member.name.clone();
    drop(room);
    relay_typing(chat, &room_arc, socket.id, &req.room);

    if req.typing {
        let sid = socket.id;
        let chat = chat.clone();
        let room_name = req.room;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(protocol::TYPING_TTL_MS)).await;
            {
                let mut room = lock(&room_arc);
                let Some(member) = room.member_mut(sid) else {
                    return;
                };
                if member.typing_generation != generation || !member.typing {
                    return;
                }
                tracing::trace!(%sid, %name, "typing indicator expired");
                member.typing = false;
            }
            relay_typing(&chat, &room_arc, sid, &room_name);
        });
    }
    Ok(())
}

/// Tells the room a member's typing state if it changed since they were last told.
/// Notices about one member go out at most once per `TYPING_RELAY_INTERVAL`: a client
/// toggling on every keystroke costs the room one notice per interval, the latest state
/// winning, and the last change is never lost.
fn relay_typing(
    chat: &ChatState,
    room_arc: &Arc<std::sync::Mutex<rooms::Room>>,
    sid: socketioxide::socket::Sid,
    room_name: &str,
) {
    let now = Instant::now();
    let mut room = lock(room_arc);
    let Some(member) = room.member_mut(sid) else {
        return;
    };
    if member.typing == member.typing_relayed || member.typing_relay_queued {
        return;
    }
    let next_allowed = member
        .typing_relayed_at
        .map(|at| at + rooms::TYPING_RELAY_INTERVAL);
    if let Some(at) = next_allowed.filter(|at| *at > now) {
        member.typing_relay_queued = true;
        drop(room);
        let (chat, room_arc, room_name) = (chat.clone(), room_arc.clone(), room_name.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            if let Some(member) = lock(&room_arc).member_mut(sid) {
                member.typing_relay_queued = false;
            }
            relay_typing(&chat, &room_arc, sid, &room_name);
        });
        return;
    }
    member.typing_relayed = member.typing;
    member.typing_relayed_at = Some(now);
    let notice = TypingNotice {
        room: room_name.to_owned(),
        name: member.name.clone(),
        typing: member.typing,
    };
    let slow = room.broadcast(Some(sid), event::TYPING, &notice);
    drop(room);
    chat.drop_slow_consumers(slow);
}

async fn on_leave(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(chat, event::LEAVE, |chat, socket, session| async move {
            let req: LeaveRequest = parse(data)?;
            let slow =
                leave(&chat, &socket, &session, &req.room).ok_or_else(|| not_joined(&req.room))?;
            chat.drop_slow_consumers(slow);
            Ok(EmptyReply {})
        })
        .await;
}

/// Takes the socket out of a room and tells the others. `None` if it was not there;
/// otherwise the slow consumers found while telling them.
#[must_use]
fn leave(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    room_name: &str,
) -> Option<Vec<SocketRef>> {
    session.remove_room(room_name);
    let room = chat.rooms.get(room_name)?;
    let mut room = lock(&room);
    let member = room.remove(socket.id)?;
    let mut slow = Vec::new();
    if member.typing_relayed {
        let notice = TypingNotice {
            room: room_name.to_owned(),
            name: member.name.clone(),
            typing: false,
        };
        slow.extend(room.broadcast(None, event::TYPING, &notice));
    }
    // Someone with another connection here (a second tab) has not left.
    if !room.has_name(&member.name) {
        let notice = Presence {
            room: room_name.to_owned(),
            name: member.name,
            ts: now_ms(),
        };
        slow.extend(room.broadcast(None, event::LEFT, &notice));
    }
    Some(slow)
}

async fn on_disconnect(socket: SocketRef, State(chat): State<ChatState>, reason: DisconnectReason) {
    tracing::debug!(sid = %socket.id, %reason, "socket disconnected");
    let session = session_of(&socket);
    for room in session.rooms() {
        if let Some(slow) = leave(&chat, &socket, &session, &room) {
            chat.drop_slow_consumers(slow);
        }
    }
    // The name stays reserved for its session token a while, for a reconnect.
    if let Some(identity) = session.release() {
        chat.identities.release(&identity.key, Instant::now());
    }
}
