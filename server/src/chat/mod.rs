//! The Socket.IO side of Banter: the handlers behind every event of the wire contract.

mod rooms;
mod session;
mod turnstile;
mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::protocol::{
    self, event, EmptyReply, ErrorCode, HistoryReply, HistoryRequest, JoinReply, JoinRequest,
    LeaveRequest, Message, Presence, ProtocolError, RoomInfo, RoomsReply, SendReply, SendRequest,
    TypingNotice, TypingRequest,
};
use serde::de::DeserializeOwned;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::ParserError;

use rooms::{lock, Admission, Rooms};
use session::{session_of, Request, Session};

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
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            socket_buffer: 4_096,
            max_rooms_per_socket: 32,
            max_batch: 512,
            allowed_origins: Vec::new(),
        }
    }
}

/// State shared by every handler.
pub struct Chat {
    options: ChatOptions,
    rooms: Rooms,
    storage: Arc<dyn Storage>,
    writer: writer::WriterHandle,
}

pub type ChatState = Arc<Chat>;

impl Chat {
    /// The chat service and its writer task; needs a Tokio runtime.
    pub fn new(options: ChatOptions, storage: Arc<dyn Storage>) -> ChatState {
        Arc::new_cyclic(|chat| Chat {
            writer: writer::spawn(chat.clone(), storage.clone(), options.max_batch),
            options,
            rooms: Rooms::default(),
            storage,
        })
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

/// Connect middleware: registers the handlers before socketioxide sends CONNECT.
///
/// socketioxide sends CONNECT before it runs the connect handler itself, in a spawned
/// task; handlers registered there miss any event a client sends right after connecting.
/// Middlewares are awaited before CONNECT goes out, so nothing can arrive unhandled.
pub async fn register_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.extensions.insert(Arc::new(Session::default()));
    socket.on(event::JOIN, on_join);
    socket.on(event::MESSAGE, on_message);
    socket.on(event::TYPING, on_typing);
    socket.on(event::LEAVE, on_leave);
    socket.on(event::HISTORY, on_history);
    socket.on(event::ROOMS, on_rooms);
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
    // serde would also fill a struct from an array, by position; the contract says object.
    if !value.is_object() {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            "the request needs a JSON object payload",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ProtocolError::new(ErrorCode::BadRequest, format!("malformed payload: {e}")))
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
    if let Some(own) = session.name() {
        if own != name {
            return Err(ProtocolError::new(
                ErrorCode::InvalidName,
                format!("This connection already uses the name \"{own}\"."),
            ));
        }
    }
    if !session.is_in(&req.room) && session.room_count() >= chat.options.max_rooms_per_socket {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            format!(
                "A connection can be in at most {} rooms at once; leave one first.",
                chat.options.max_rooms_per_socket
            ),
        ));
    }

    // Admit first, then read history: a message committed in between reaches the client
    // both live and in history, which it merges by id. The other order could lose it.
    let (newly_joined, members) = admit(chat, socket, session, &req.room, &name)?;
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
        name,
        members,
        history,
        truncated,
    })
}

/// Adds the socket to the room's members and tells the others; returns whether it is
/// new there and who is online.
fn admit(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    room_name: &str,
    name: &str,
) -> Result<(bool, Vec<String>), ProtocolError> {
    let room = chat.rooms.get_or_create(room_name);
    let mut room = lock(&room);
    let (newly_joined, slow) = match room.admit(socket, name) {
        Admission::NameTaken => {
            return Err(ProtocolError::new(
                ErrorCode::NameTaken,
                format!("Someone called \"{name}\" is already in this room."),
            ))
        }
        Admission::AlreadyMember => (false, Vec::new()),
        Admission::Joined => {
            session.set_name(name);
            session.add_room(room_name);
            let notice = Presence {
                room: room_name.to_owned(),
                name: name.to_owned(),
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
    let slow = if std::mem::take(&mut member.typing) {
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
                .before(&req.room, req.before, req.limit + 1)
                .await
                .map_err(unavailable)?;
            // One extra row tells whether anything older exists; it is not returned.
            let more = messages.len() > req.limit as usize;
            if more {
                messages.remove(0);
            }
            Ok(HistoryReply { messages, more })
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
            Ok(RoomsReply { rooms })
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
    // Only changes are relayed: a refresh just extends the indicator's life.
    let changed = member.typing != req.typing;
    member.typing = req.typing;
    let notice = TypingNotice {
        room: req.room.clone(),
        name: member.name.clone(),
        typing: req.typing,
    };
    let slow = if changed {
        room.broadcast(Some(socket.id), event::TYPING, &notice)
    } else {
        Vec::new()
    };
    drop(room);
    chat.drop_slow_consumers(slow);

    if req.typing {
        let sid = socket.id;
        let chat = chat.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(protocol::TYPING_TTL_MS)).await;
            let mut room = lock(&room_arc);
            let Some(member) = room.member_mut(sid) else {
                return;
            };
            if member.typing_generation != generation || !member.typing {
                return;
            }
            member.typing = false;
            let notice = TypingNotice {
                typing: false,
                ..notice
            };
            let slow = room.broadcast(Some(sid), event::TYPING, &notice);
            drop(room);
            chat.drop_slow_consumers(slow);
        });
    }
    Ok(())
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
    if member.typing {
        let notice = TypingNotice {
            room: room_name.to_owned(),
            name: member.name.clone(),
            typing: false,
        };
        slow.extend(room.broadcast(None, event::TYPING, &notice));
    }
    let notice = Presence {
        room: room_name.to_owned(),
        name: member.name,
        ts: now_ms(),
    };
    slow.extend(room.broadcast(None, event::LEFT, &notice));
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
}
