//! The handlers behind every event of the wire contract (docs/PROTOCOL.md), one free
//! async function per event. Each reads its typed request, checks it, and does its work
//! through the shared state: names (`identities`), rooms, the batcher, storage. Order,
//! rate limits and answering are `request.rs`'s.

use std::sync::Arc;
use std::time::Instant;

use app::protocol::{
    self, event, DeleteRequest, EditRequest, EmptyReply, ErrorCode, HistoryReply, HistoryRequest,
    JoinReply, JoinRequest, LeaveRequest, ProtocolError, ReactRequest, RoomActivity, RoomInfo,
    RoomsReply, RoomsRequest, SearchReply, SearchRequest, SendReply, SendRequest, TypingRequest,
    WatchReply, WatchRequest, CATCH_UP_LIMIT, JOIN_HISTORY, MAX_COUNTED_UNREAD, MAX_HISTORY_PAGE,
    MAX_REPLY_BYTES, MAX_ROOMS_PAGE, MAX_SEARCH_RESULTS, MAX_WATCHED_ROOMS, ROOMS_PAGE,
    SEARCH_RESULTS,
};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::value::RawValue;
use socketioxide::extract::{Event, State};
use socketioxide::socket::DisconnectReason;

use super::connection::{connection_of, Peer, SocketArc, Speaker};
use super::limits::{retry_after_ms, ClientBudget};
use super::request::{Cost, Payload, Request};
use super::rooms::{Departure, JoinRefusal, ListedMembers};
use super::{now_ms, unavailable, Chat, ChatState};
use crate::storage::{Applied, Change, ChangeKind, ChangeRefusal, ReadLimit, RoomCursor};

fn bad_request(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadRequest, message)
}

fn not_joined(room: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotJoined,
        format!("You have not joined the room \"{room}\"."),
    )
}

/// The speaker of a connection that is in `room`.
fn member_of(peer: &Peer, room: &str) -> Result<Speaker, ProtocolError> {
    match peer.conn.speaker() {
        Some(speaker) if peer.conn.is_in(room) => Ok(speaker),
        _ => Err(not_joined(room)),
    }
}

async fn on_join(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(chat, event::JOIN, Cost::Request, |chat, peer| async move {
            join(&chat, &peer, &payload).await
        })
        .await;
}

async fn join(
    chat: &Chat,
    peer: &Peer,
    payload: &Payload,
) -> Result<JoinReply<ListedMembers>, ProtocolError> {
    let req: JoinRequest = payload.decode()?;
    let name = protocol::validate_name(&req.name)?;
    protocol::validate_room(&req.room)?;
    let max_rooms = chat.options.max_rooms_per_socket;
    if !peer.conn.is_in(&req.room) && peer.conn.room_count() >= max_rooms {
        return Err(too_many_rooms(max_rooms));
    }

    // A new room (nobody in it, no message) costs its creator from a budget per address,
    // so that one address cannot fill the server with rooms.
    let has_messages = if chat.rooms.is_live(&req.room) {
        false
    } else {
        let exists = chat
            .storage
            .room_exists(&req.room)
            .await
            .map_err(unavailable)?;
        if !exists && !chat.rooms.is_live(&req.room) {
            if let Err((wait, _)) = chat
                .take_client_budget(peer.conn.client, ClientBudget::RoomCreation, Instant::now())
                .await
            {
                let retry_after = retry_after_ms(wait);
                return Err(ProtocolError::rate_limited(
                    format!(
                        "Too many new rooms from your address; try again in {retry_after} ms, \
                         or join an existing room."
                    ),
                    retry_after,
                ));
            }
        }
        exists
    };

    let speaker = identify(chat, peer, &name, req.session.as_deref()).await?;

    // Admit first, then read history: a change committed in between reaches the client
    // both live and in history, which it merges by id and rev. The other order could
    // lose it.
    let joined = chat
        .rooms
        .join(
            peer,
            &speaker,
            &req.room,
            req.resume,
            max_rooms,
            has_messages,
        )
        .map_err(|refusal| match refusal {
            JoinRefusal::TooManyRooms(max) => too_many_rooms(max),
            JoinRefusal::Closed => {
                ProtocolError::new(ErrorCode::Unavailable, "The connection closed.")
            }
        })?;
    // With several nodes: changes up to the room's head are in the history read below;
    // later ones reach this node's members through the room's feed, in order.
    if let Some(cluster) = chat.cluster() {
        if !cluster.is_tracked(&req.room) {
            let head = chat
                .storage
                .last_seq(&req.room)
                .await
                .map_err(unavailable)?;
            cluster.track(&req.room, head);
        }
    }
    let limit = ReadLimit {
        limit: CATCH_UP_LIMIT,
        max_bytes: MAX_REPLY_BYTES,
    };
    let mut reply = JoinReply {
        room: req.room.clone(),
        name: speaker.name,
        members: joined.members,
        online: joined.online,
        history: Vec::new(),
        truncated: false,
        session: speaker.token,
        updates: Vec::new(),
        reset: false,
    };
    let catch_up = match req.since {
        Some(since) => Some(
            chat.storage
                .catch_up(&req.room, since, limit)
                .await
                .map_err(unavailable)?,
        ),
        None => None,
    };
    match catch_up {
        Some(catch_up) if !catch_up.too_many_updates => {
            reply.history = catch_up.history;
            reply.truncated = catch_up.truncated;
            reply.updates = catch_up.updates;
        }
        too_many => {
            let page = chat
                .storage
                .before(
                    &req.room,
                    u64::MAX,
                    ReadLimit {
                        limit: JOIN_HISTORY,
                        max_bytes: MAX_REPLY_BYTES,
                    },
                )
                .await
                .map_err(unavailable)?;
            reply.history = page.messages;
            reply.reset = too_many.is_some();
        }
    }
    Ok(reply)
}

fn too_many_rooms(max: usize) -> ProtocolError {
    bad_request(format!(
        "A connection can be in at most {max} rooms at once; leave one first."
    ))
}

/// The name this connection speaks under: the one it already has, or the requested one
/// if it is free or the client proves it owns it with its session token.
async fn identify(
    chat: &Chat,
    peer: &Peer,
    name: &str,
    token: Option<&str>,
) -> Result<Speaker, ProtocolError> {
    let key = protocol::name_key(name);
    if let Some(own) = peer.conn.speaker() {
        if own.key == key {
            return Ok(own);
        }
        if peer.conn.room_count() > 0 {
            return Err(ProtocolError::new(
                ErrorCode::InvalidName,
                format!(
                    "This connection already uses the name \"{}\"; leave its rooms to change it.",
                    own.name
                ),
            ));
        }
    }
    let claim = chat.claim_name(&key, name, token).await?;
    let speaker = Speaker {
        name: name.to_owned(),
        key,
        token: claim.token,
        owner: claim.owner,
    };
    // Bound under the membership lock, so a disconnect that ran meanwhile (and gave back
    // the name this connection had) cannot leave this claim held for ever.
    let previous = {
        let mut membership = peer.conn.membership();
        if membership.closed {
            drop(membership);
            chat.release_name(&speaker.key);
            return Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "The connection closed.",
            ));
        }
        membership.speaker.replace(speaker.clone())
    };
    // A connection in no room may change its name; the old one stays held for its token.
    if let Some(previous) = previous {
        chat.identities.release(&previous.key, Instant::now());
    }
    Ok(speaker)
}

async fn on_message(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(
            chat,
            event::MESSAGE,
            Cost::Message,
            |chat, peer| async move {
                // Unknown fields such as a client-supplied `author` or `id` are ignored.
                let req: SendRequest = payload.decode()?;
                protocol::validate_client_id(&req.client_id)?;
                let text = protocol::validate_text(&req.text)?;
                let speaker = member_of(&peer, &req.room)?;
                // Sending ends typing: the others are told at once.
                chat.rooms.end_typing(&req.room, &peer);
                let kind = ChangeKind::Post {
                    text,
                    reply_to: req.reply_to,
                };
                change(&chat, &peer, speaker, req.room, req.client_id, kind).await
            },
        )
        .await;
}

async fn on_edit(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(chat, event::EDIT, Cost::Message, |chat, peer| async move {
            let req: EditRequest = payload.decode()?;
            protocol::validate_client_id(&req.client_id)?;
            let text = protocol::validate_text(&req.text)?;
            let speaker = member_of(&peer, &req.room)?;
            let kind = ChangeKind::Edit { id: req.id, text };
            change(&chat, &peer, speaker, req.room, req.client_id, kind).await
        })
        .await;
}

async fn on_delete(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(
            chat,
            event::DELETE,
            Cost::Message,
            |chat, peer| async move {
                let req: DeleteRequest = payload.decode()?;
                protocol::validate_client_id(&req.client_id)?;
                let speaker = member_of(&peer, &req.room)?;
                let kind = ChangeKind::Delete { id: req.id };
                change(&chat, &peer, speaker, req.room, req.client_id, kind).await
            },
        )
        .await;
}

async fn on_react(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(chat, event::REACT, Cost::Message, |chat, peer| async move {
            let req: ReactRequest = payload.decode()?;
            protocol::validate_client_id(&req.client_id)?;
            protocol::validate_emoji(&req.emoji)?;
            let speaker = member_of(&peer, &req.room)?;
            let kind = ChangeKind::React {
                id: req.id,
                emoji: req.emoji,
                add: req.add,
            };
            change(&chat, &peer, speaker, req.room, req.client_id, kind).await
        })
        .await;
}

/// Hands a change to the batcher; the reply is the message as stored once committed.
async fn change(
    chat: &Chat,
    peer: &Peer,
    speaker: Speaker,
    room: String,
    client_id: String,
    kind: ChangeKind,
) -> Result<MessageReply, ProtocolError> {
    let change = Change {
        room,
        owner: speaker.owner,
        author: speaker.name,
        client_id,
        ts: now_ms(),
        kind,
    };
    let answer = chat.batcher.submit(change, Some(peer.sid())).await?;
    match (answer.applied, answer.shared) {
        (Applied::Stored(_), Some(json)) => Ok(MessageReply::Shared(json)),
        (
            Applied::Stored(message) | Applied::Duplicate(message) | Applied::Unchanged(message),
            _,
        ) => Ok(MessageReply::Typed(SendReply { message })),
        (Applied::Refused(refusal), _) => Err(refused(refusal)),
    }
}

/// The ack of `message`, `edit`, `delete` and `react`: a [`SendReply`], written from the
/// JSON the room's other members were sent when there is one, so that a message is
/// serialized once for everyone it reaches, its sender included.
// Lives only until the ack is written; boxing the large variant would cost every ack
// that goes to nobody else an allocation.
#[allow(clippy::large_enum_variant)]
pub enum MessageReply {
    Typed(SendReply),
    /// A `Message` as `shared_json` wrote it.
    Shared(Arc<RawValue>),
}

impl Serialize for MessageReply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageReply::Typed(reply) => reply.serialize(serializer),
            MessageReply::Shared(message) => {
                // SendReply's one field, under its name.
                let mut reply = serializer.serialize_struct("SendReply", 1)?;
                reply.serialize_field("message", &**message)?;
                reply.end()
            }
        }
    }
}

fn refused(refusal: ChangeRefusal) -> ProtocolError {
    let (code, message) = match refusal {
        ChangeRefusal::NotFound => (
            ErrorCode::NotFound,
            "There is no such message in this room.",
        ),
        ChangeRefusal::NotYours => (
            ErrorCode::NotYours,
            "Only the person who sent a message can edit or delete it.",
        ),
        ChangeRefusal::Gone => (ErrorCode::Gone, "That message was deleted."),
        ChangeRefusal::TooManyEdits => (
            ErrorCode::LimitReached,
            "This message has been edited as often as a message can be.",
        ),
        ChangeRefusal::TooManyReactionKinds => (
            ErrorCode::LimitReached,
            "This message has as many different reactions as it can have.",
        ),
        ChangeRefusal::TooManyReactions => (
            ErrorCode::LimitReached,
            "This message has as many reactions as it can have.",
        ),
    };
    ProtocolError::new(code, message)
}

async fn on_history(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(
            chat,
            event::HISTORY,
            Cost::Request,
            |chat, peer| async move {
                let req: HistoryRequest = payload.decode()?;
                if !peer.conn.is_in(&req.room) {
                    return Err(not_joined(&req.room));
                }
                if req.limit == 0 || req.limit > MAX_HISTORY_PAGE {
                    return Err(bad_request(format!(
                        "limit must be 1 to {MAX_HISTORY_PAGE}."
                    )));
                }
                let limit = ReadLimit {
                    limit: req.limit,
                    max_bytes: MAX_REPLY_BYTES,
                };
                let page = match (req.before, req.around) {
                    (Some(before), None) => chat.storage.before(&req.room, before, limit).await,
                    (None, Some(around)) => chat.storage.around(&req.room, around, limit).await,
                    _ => {
                        return Err(bad_request(
                            "history needs exactly one of \"before\" and \"around\".",
                        ))
                    }
                }
                .map_err(unavailable)?;
                Ok(HistoryReply {
                    messages: page.messages,
                    more: page.more,
                    newer: page.newer,
                })
            },
        )
        .await;
}

/// Where a `rooms` page continues: among rooms with messages, or among the rest.
enum RoomsCursor {
    Stored(RoomCursor),
    Live(String),
}

fn parse_rooms_cursor(cursor: &str) -> Option<RoomsCursor> {
    if let Some(rest) = cursor.strip_prefix("t:") {
        let (ts, name) = rest.split_once(':')?;
        return Some(RoomsCursor::Stored(RoomCursor {
            last_ts: ts.parse().ok()?,
            name: name.to_owned(),
        }));
    }
    cursor
        .strip_prefix("m:")
        .map(|name| RoomsCursor::Live(name.to_owned()))
}

/// Rooms with people only on other nodes whose messages one `rooms` reply asks storage
/// about (in one query); a page stops before the next such room, to go on from there.
const REMOTE_ROOMS_CHECKED: usize = 256;

/// The second part of a `rooms` listing: rooms with people in them (on any node) but no
/// message yet, by name after `after`, at most `room_for`; and the name to continue
/// after when more may follow. This node knows which of its own live rooms have
/// messages; for rooms only other nodes have people in, storage says (their heads).
async fn rooms_without_messages(
    chat: &Chat,
    after: Option<&str>,
    room_for: usize,
) -> Result<(Vec<RoomInfo>, Option<String>), crate::storage::StorageError> {
    // (name, online, whether storage must say if it has messages)
    let mut candidates: Vec<(String, usize, bool)> = chat
        .rooms
        .without_messages()
        .into_iter()
        .map(|(name, online)| (name, online, false))
        .chain(
            chat.rooms
                .remote_only()
                .into_iter()
                .map(|(name, online)| (name, online, true)),
        )
        .filter(|(name, ..)| after.is_none_or(|after| name.as_str() > after))
        .collect();
    candidates.sort();
    let unknown: Vec<String> = candidates
        .iter()
        .filter(|(.., unknown)| *unknown)
        .map(|(name, ..)| name.clone())
        .take(REMOTE_ROOMS_CHECKED + 1)
        .collect();
    // The first remote-only room past those asked about, where this page must stop.
    let stop_at = unknown.get(REMOTE_ROOMS_CHECKED).cloned();
    let asked = &unknown[..unknown.len().min(REMOTE_ROOMS_CHECKED)];
    let with_messages: std::collections::HashSet<String> = if asked.is_empty() {
        Default::default()
    } else {
        chat.storage
            .heads(asked)
            .await?
            .into_iter()
            .filter(|(_, head)| *head > 0)
            .map(|(name, _)| name)
            .collect()
    };
    let mut page: Vec<RoomInfo> = Vec::new();
    // The cursor goes on after this name ("" for the very first: `m:` lists them all).
    let mut examined: Option<&str> = None;
    for (name, online, unknown) in &candidates {
        if stop_at.as_deref() == Some(name.as_str()) {
            return Ok((page, Some(examined.unwrap_or_default().to_owned())));
        }
        if *unknown && with_messages.contains(name) {
            // Listed with the rooms that have messages.
            examined = Some(name);
            continue;
        }
        if page.len() == room_for {
            return Ok((page, Some(examined.unwrap_or_default().to_owned())));
        }
        page.push(RoomInfo {
            name: name.clone(),
            online: *online,
            last_id: 0,
            last_ts: None,
        });
        examined = Some(name);
    }
    Ok((page, None))
}

async fn on_rooms(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(
            chat,
            event::ROOMS,
            Cost::Request,
            |chat, _peer| async move {
                // The payload used to be ignored: anything but an object still means "{}".
                let req: RoomsRequest = if payload.is_object() {
                    payload.decode()?
                } else {
                    RoomsRequest::default()
                };
                let limit = req.limit.unwrap_or(ROOMS_PAGE);
                if limit == 0 || limit > MAX_ROOMS_PAGE {
                    return Err(bad_request(format!("limit must be 1 to {MAX_ROOMS_PAGE}.")));
                }
                let cursor = match req.cursor.as_deref() {
                    None => None,
                    Some(cursor) => Some(parse_rooms_cursor(cursor).ok_or_else(|| {
                        bad_request("cursor must be the \"next\" of an earlier rooms reply.")
                    })?),
                };
                let mut rooms = Vec::new();
                let mut next = None;
                if !matches!(cursor, Some(RoomsCursor::Live(_))) {
                    let after = match &cursor {
                        Some(RoomsCursor::Stored(c)) => Some(c),
                        _ => None,
                    };
                    let stored = chat
                        .storage
                        .rooms(after, limit + 1)
                        .await
                        .map_err(unavailable)?;
                    for room in stored.into_iter().take(limit as usize + 1) {
                        if rooms.len() == limit as usize {
                            // One more exists: continue after the last one listed.
                            next = rooms.last().map(|last: &RoomInfo| {
                                format!("t:{}:{}", last.last_ts.unwrap_or(0), last.name)
                            });
                            break;
                        }
                        rooms.push(RoomInfo {
                            online: chat.rooms.online(&room.name),
                            name: room.name,
                            last_id: room.last_id,
                            last_ts: room.last_ts,
                        });
                    }
                }
                if next.is_none() {
                    let after = match &cursor {
                        Some(RoomsCursor::Live(name)) => Some(name.as_str()),
                        _ => None,
                    };
                    let room_for = limit as usize - rooms.len();
                    let (live, live_next) = rooms_without_messages(&chat, after, room_for)
                        .await
                        .map_err(unavailable)?;
                    rooms.extend(live);
                    next = live_next.map(|name| format!("m:{name}"));
                }
                Ok(RoomsReply {
                    more: next.is_some(),
                    rooms,
                    next,
                })
            },
        )
        .await;
}

async fn on_watch(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(chat, event::WATCH, Cost::Request, |chat, peer| async move {
            let req: WatchRequest = payload.decode()?;
            if req.rooms.len() > MAX_WATCHED_ROOMS {
                return Err(bad_request(format!(
                    "A connection can watch at most {MAX_WATCHED_ROOMS} rooms."
                )));
            }
            for watched in &req.rooms {
                protocol::validate_room(&watched.room)?;
            }
            let mut names: Vec<String> = req.rooms.iter().map(|w| w.room.clone()).collect();
            names.dedup();
            chat.watchers.watch(&peer, names);
            let mention_key = peer
                .conn
                .speaker()
                .map(|speaker| app::mentions::mention_key(&speaker.name));
            let mut rooms = Vec::with_capacity(req.rooms.len());
            for watched in req.rooms {
                let (newest, unread, mentions) = chat
                    .storage
                    .activity(
                        &watched.room,
                        watched.read,
                        mention_key.as_deref(),
                        MAX_COUNTED_UNREAD,
                    )
                    .await
                    .map_err(unavailable)?;
                rooms.push(RoomActivity {
                    online: chat.rooms.online(&watched.room),
                    room: watched.room,
                    last_id: newest.last_id,
                    last_ts: newest.last_ts,
                    unread,
                    mentions,
                });
            }
            Ok(WatchReply { rooms })
        })
        .await;
}

async fn on_search(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(
            chat,
            event::SEARCH,
            Cost::Search,
            |chat, _peer| async move {
                let req: SearchRequest = payload.decode()?;
                let query = protocol::validate_query(&req.query)?;
                if let Some(room) = &req.room {
                    protocol::validate_room(room)?;
                }
                let limit = req.limit.unwrap_or(SEARCH_RESULTS);
                if limit == 0 || limit > MAX_SEARCH_RESULTS {
                    return Err(bad_request(format!(
                        "limit must be 1 to {MAX_SEARCH_RESULTS}."
                    )));
                }
                if req
                    .cursor
                    .as_deref()
                    .is_some_and(|c| c.parse::<i64>().is_err())
                {
                    return Err(bad_request(
                        "cursor must be the \"next\" of an earlier search reply.",
                    ));
                }
                let limit = ReadLimit {
                    limit,
                    max_bytes: MAX_REPLY_BYTES,
                };
                let found = chat
                    .storage
                    .search(&query, req.room.as_deref(), limit, req.cursor.as_deref())
                    .await
                    .map_err(unavailable)?;
                Ok(SearchReply {
                    more: found.next.is_some(),
                    results: found.messages,
                    next: found.next,
                })
            },
        )
        .await;
}

async fn on_typing(State(chat): State<ChatState>, request: Request, payload: Payload) {
    // Typing needs no ack; a refusal still reaches the client as an `error` event.
    request
        .handle(chat, event::TYPING, Cost::Typing, |chat, peer| async move {
            let req: TypingRequest = payload.decode()?;
            if !peer.conn.is_in(&req.room) || !chat.rooms.typing(&req.room, &peer, req.typing) {
                return Err(not_joined(&req.room));
            }
            Ok(EmptyReply {})
        })
        .await;
}

async fn on_leave(State(chat): State<ChatState>, request: Request, payload: Payload) {
    request
        .handle(chat, event::LEAVE, Cost::Request, |chat, peer| async move {
            let req: LeaveRequest = payload.decode()?;
            if !chat.rooms.leave(&peer, &req.room, Departure::Leave) {
                return Err(not_joined(&req.room));
            }
            Ok(EmptyReply {})
        })
        .await;
}

/// Any event the contract does not have.
/// Every event of a connection comes here and goes to its handler by name.
///
/// One handler per socket, rather than one registered per event: socketioxide keeps a map
/// of a socket's handlers for as long as the socket lives, and eleven events made it about
/// 700 bytes of every idle connection (docs/PERFORMANCE.md, "What stays after the crowd
/// settles"). The fallback handler is a single field.
pub async fn on_event(
    State(chat): State<ChatState>,
    request: Request,
    payload: Payload,
    Event(name): Event,
) {
    let chat = State(chat);
    match name.as_str() {
        event::JOIN => on_join(chat, request, payload).await,
        event::MESSAGE => on_message(chat, request, payload).await,
        event::EDIT => on_edit(chat, request, payload).await,
        event::DELETE => on_delete(chat, request, payload).await,
        event::REACT => on_react(chat, request, payload).await,
        event::TYPING => on_typing(chat, request, payload).await,
        event::LEAVE => on_leave(chat, request, payload).await,
        event::HISTORY => on_history(chat, request, payload).await,
        event::ROOMS => on_rooms(chat, request, payload).await,
        event::WATCH => on_watch(chat, request, payload).await,
        event::SEARCH => on_search(chat, request, payload).await,
        _ => on_unknown_event(chat, request, name).await,
    }
}

/// An event the contract does not have: socketioxide would drop it, and a client waiting
/// on an ack for a misspelt event would wait for ever, so it is refused like any other
/// bad request.
async fn on_unknown_event(State(chat): State<ChatState>, request: Request, name: String) {
    // The name goes back in the answer: keep a hostile one short.
    let shown: String = name.chars().take(64).collect();
    let refusal = bad_request(format!(
        "There is no event \"{shown}\"; see docs/PROTOCOL.md for the events."
    ));
    request
        .handle(chat, &shown, Cost::Request, |_, _| async move {
            Err::<EmptyReply, _>(refusal)
        })
        .await;
}

pub async fn on_disconnect(
    SocketArc(socket): SocketArc,
    State(chat): State<ChatState>,
    reason: DisconnectReason,
) {
    tracing::debug!(sid = %socket.id, %reason, "socket disconnected");
    let Some(conn) = connection_of(&socket) else {
        return;
    };
    chat.forget(&Peer { socket, conn });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ok_reply::ok_reply;
    use crate::chat::outlet::shared_json;
    use app::protocol::Message;

    #[test]
    fn an_ack_from_the_shared_json_is_the_typed_ack() {
        let message = Message {
            id: 12,
            room: "general".into(),
            author: "Zoë \"z\"".into(),
            text: "**hi** <b>\u{1F600}</b>\n".into(),
            ts: 1_700_000_000_000,
            client_id: "c-12".into(),
            reply_to: Some(app::protocol::ReplyPreview {
                id: 3,
                author: "ann".into(),
                excerpt: "earlier".into(),
                deleted: false,
            }),
            ..Message::default()
        };
        let shared = MessageReply::Shared(shared_json(&message).unwrap());
        let typed = MessageReply::Typed(SendReply { message });
        assert_eq!(
            ok_reply(&shared).unwrap().get(),
            ok_reply(&typed).unwrap().get()
        );
    }
}
