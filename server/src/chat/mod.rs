//! The Socket.IO side of Banter: the handlers behind every event of the wire contract.

mod rooms;
mod session;
mod turnstile;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::protocol::{
    self, event, EmptyReply, ErrorCode, JoinReply, JoinRequest, LeaveRequest, Message, Presence,
    ProtocolError, SendReply, SendRequest, TypingNotice, TypingRequest,
};
use serde::de::DeserializeOwned;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::ParserError;

use rooms::{lock, Admission, Rooms};
use session::{session_of, Request, Session};

/// Tunables of the chat service.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Messages each room keeps in memory for `join` history and `client_id` dedupe.
    pub history_capacity: usize,
    /// Messages a `join` reply carries.
    pub join_history: usize,
    /// Packets buffered per socket before it counts as a slow consumer.
    pub socket_buffer: usize,
    /// Rooms one socket may be in at once.
    pub max_rooms_per_socket: usize,
}

impl Default for ChatOptions {
    fn default() -> Self {
        Self {
            history_capacity: 1_000,
            join_history: 50,
            socket_buffer: 4_096,
            max_rooms_per_socket: 32,
        }
    }
}

/// State shared by every handler.
pub struct Chat {
    options: ChatOptions,
    rooms: Rooms,
}

pub type ChatState = Arc<Chat>;

impl Chat {
    pub fn new(options: ChatOptions) -> ChatState {
        Arc::new(Chat {
            options,
            rooms: Rooms::default(),
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

async fn on_join(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(&chat, event::JOIN, |socket, session| {
            join(&chat, socket, session, data)
        })
        .await;
}

fn join(
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

    let room = chat.rooms.get_or_create(&req.room);
    let mut room = lock(&room);
    let slow = match room.admit(socket, &name) {
        Admission::NameTaken => {
            return Err(ProtocolError::new(
                ErrorCode::NameTaken,
                format!("Someone called \"{name}\" is already in this room."),
            ))
        }
        Admission::AlreadyMember => Vec::new(),
        Admission::Joined => {
            session.set_name(&name);
            session.add_room(&req.room);
            let notice = Presence {
                room: req.room.clone(),
                name: name.clone(),
                ts: now_ms(),
            };
            room.broadcast(Some(socket.id), event::JOINED, &notice)
        }
    };
    let reply = JoinReply {
        room: req.room,
        name,
        members: room.member_names(),
        history: room.recent(chat.options.join_history),
    };
    drop(room);
    chat.drop_slow_consumers(slow);
    Ok(reply)
}

async fn on_message(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    request
        .handle(&chat, event::MESSAGE, |socket, session| {
            send(&chat, socket, session, data)
        })
        .await;
}

fn send(
    chat: &Chat,
    socket: &SocketRef,
    session: &Session,
    data: Result<serde_json::Value, ParserError>,
) -> Result<SendReply, ProtocolError> {
    // Unknown fields such as a client-supplied `author` or `id` are ignored by design.
    let req: SendRequest = parse(data)?;
    protocol::validate_client_id(&req.client_id)?;
    let text = protocol::validate_text(&req.text)?;
    let room = match (session.is_in(&req.room), chat.rooms.get(&req.room)) {
        (true, Some(room)) => room,
        _ => return Err(not_joined(&req.room)),
    };
    let mut room = lock(&room);
    let Some(member) = room.member_mut(socket.id) else {
        return Err(not_joined(&req.room));
    };
    let author = member.name.clone();
    let was_typing = std::mem::take(&mut member.typing);

    if let Some(original) = room.find_by_client_id(&author, &req.client_id) {
        return Ok(SendReply { message: original });
    }
    let message = room.append(
        Message {
            id: 0,
            room: req.room.clone(),
            author: author.clone(),
            text,
            ts: now_ms(),
            client_id: req.client_id,
        },
        chat.options.history_capacity,
    );
    let mut slow = Vec::new();
    if was_typing {
        let notice = TypingNotice {
            room: req.room,
            name: author,
            typing: false,
        };
        slow.extend(room.broadcast(Some(socket.id), event::TYPING, &notice));
    }
    slow.extend(room.broadcast(Some(socket.id), event::MESSAGE, &message));
    drop(room);
    chat.drop_slow_consumers(slow);
    Ok(SendReply { message })
}

async fn on_typing(
    State(chat): State<ChatState>,
    request: Request,
    TryData(data): TryData<serde_json::Value>,
) {
    // Typing needs no ack; a refusal still reaches the client as an `error` event.
    request
        .handle(&chat, event::TYPING, |socket, session| {
            typing(&chat, socket, session, data).map(|()| EmptyReply {})
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
        .handle(&chat, event::LEAVE, |socket, session| {
            let req: LeaveRequest = parse(data)?;
            let slow =
                leave(&chat, socket, session, &req.room).ok_or_else(|| not_joined(&req.room))?;
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
