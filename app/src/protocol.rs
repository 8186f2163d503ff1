//! The Banter wire contract: event names, payloads, error codes and validation rules.
//!
//! One definition shared by the server and the browser client, so both sides are checked
//! by the compiler against the same types. `docs/PROTOCOL.md` documents it for clients in
//! other languages.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

/// Event names, client → server and server → client.
pub mod event {
    pub const JOIN: &str = "join";
    pub const MESSAGE: &str = "message";
    pub const EDIT: &str = "edit";
    pub const DELETE: &str = "delete";
    pub const REACT: &str = "react";
    pub const TYPING: &str = "typing";
    pub const LEAVE: &str = "leave";
    pub const HISTORY: &str = "history";
    pub const ROOMS: &str = "rooms";
    pub const WATCH: &str = "watch";
    pub const SEARCH: &str = "search";
    pub const JOINED: &str = "joined";
    pub const LEFT: &str = "left";
    /// A message changed: edited, deleted, or its reactions changed. Carries the whole
    /// message as it is now.
    pub const UPDATED: &str = "updated";
    /// Batched joins and departures, for protocol 2 connections (see [`ConnectAuth`]).
    pub const PRESENCE: &str = "presence";
    /// New messages in a watched room.
    pub const ACTIVITY: &str = "activity";
    /// Sent when a refused request carried no ack callback to answer on.
    pub const ERROR: &str = "error";
}

/// The room a page opens when its URL names none.
pub const DEFAULT_ROOM: &str = "general";
pub use crate::names::MAX_NAME_CHARS;
pub const MAX_ROOM_CHARS: usize = 64;
pub const MAX_TEXT_CHARS: usize = 4000;
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Messages a `join` without `since` returns.
pub const JOIN_HISTORY: u32 = 50;
/// Messages a `join` with `since` returns at most before it reports `truncated`; also
/// the most `updates` one join reply carries before it says `reset` instead.
pub const CATCH_UP_LIMIT: u32 = 500;
/// The largest page a `history` request may ask for.
pub const MAX_HISTORY_PAGE: u32 = 100;
/// The JSON size of the messages one reply (`join`, `history`, `search`) carries at
/// most, unless a single message is larger; a reply cut short says so (`truncated`,
/// `more`).
pub const MAX_REPLY_BYTES: usize = 48 * 1024;
/// Names a `join` reply lists at most in `members`; `online` says how many there are.
pub const MAX_MEMBERS_LISTED: usize = 500;
/// In a room of more than [`MAX_MEMBERS_LISTED`] people online, the arrivals a `presence`
/// notice names at most in `joined` (and in `returned`); the rest are counted in
/// `more_joined` (`more_returned`). Every member gets every notice, so a crowd of N
/// arriving cost N² names on the wire; past the listed members a client's list is partial
/// anyway.
pub const PRESENCE_NAMES_LISTED: usize = 50;
/// How long a typing indicator lasts without a refresh.
pub const TYPING_TTL_MS: u64 = 5_000;
/// How long a name stays reserved for its session after its last connection closed.
pub const NAME_HOLD_MS: u64 = 120_000;
/// How long someone whose last connection to a room closed still counts as there: a
/// reload or a reconnect within this time is not announced as leaving and joining.
pub const DEPARTURE_GRACE_MS: u64 = 10_000;
/// Protocol 2 connections get joins and departures in `presence` batches, at most this
/// often per room.
pub const PRESENCE_BATCH_MS: u64 = 250;
/// Edits one message may have.
pub const MAX_EDITS_PER_MESSAGE: u32 = 50;
/// Different emoji one message may carry as reactions.
pub const MAX_REACTION_KINDS: usize = 20;
/// Reactions (person and emoji pairs) one message may carry.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 100;
/// Rooms one `watch` may name, and one connection may watch at once.
pub const MAX_WATCHED_ROOMS: usize = 32;
/// `unread` and `mentions` in a `watch` reply count up to this; more shows as this.
pub const MAX_COUNTED_UNREAD: u32 = 100;
/// A `rooms` page holds at most this many rooms (and this many when no `limit` is given).
pub const MAX_ROOMS_PAGE: u32 = 100;
pub const ROOMS_PAGE: u32 = 50;
/// The shortest `search` query, in characters (search matches any three-character run).
pub const MIN_SEARCH_CHARS: usize = 3;
pub const MAX_SEARCH_CHARS: usize = 200;
/// The most results one `search` reply carries (and its default).
pub const MAX_SEARCH_RESULTS: u32 = 50;
pub const SEARCH_RESULTS: u32 = 20;
/// The characters of a replied-to message quoted in a reply's `reply_to.excerpt`.
pub const REPLY_EXCERPT_CHARS: usize = 120;
/// The protocol version a client asks for in its CONNECT payload: `40{"protocol":2}`.
pub const PROTOCOL_VERSION: u32 = 2;

/// What a client may send in its Socket.IO CONNECT packet (`40{...}`): with
/// `"protocol": 2` the server sends joins and departures as batched `presence` events
/// instead of one `joined` or `left` event per person. Without it (any stock client that
/// sends no auth payload) the server speaks protocol 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAuth {
    #[serde(default)]
    pub protocol: u32,
}

/// A stored chat message, as every client sees it: always its latest version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message's place in its room's sequence, given when it was posted.
    pub id: u64,
    pub room: String,
    pub author: String,
    /// Empty once the message is deleted.
    pub text: String,
    /// Milliseconds since the Unix epoch, server clock.
    pub ts: i64,
    pub client_id: String,
    /// The room sequence number of this version: `id` for a message never changed, and
    /// the number of its latest change (edit, delete, reaction) otherwise. Every change in
    /// a room gets the next number of the same sequence that message ids come from, so
    /// a client that holds everything up to N asks for what followed with `since: N`.
    /// Absent (0) from servers before protocol 2: read it as `id`.
    #[serde(default)]
    pub rev: u64,
    /// When the text was last edited; absent for a message never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<i64>,
    /// True once the author deleted it: `text` is empty, `reactions` and `reply_to` are
    /// gone, and the text is no longer stored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The message this one answers, as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyPreview>,
    /// Reactions, each emoji once, in the order they were first given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

impl Message {
    /// The sequence number of this version, also from servers that send no `rev`.
    pub fn version(&self) -> u64 {
        self.rev.max(self.id)
    }
}

/// The message a reply answers: enough to show a one-line quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyPreview {
    pub id: u64,
    pub author: String,
    /// The start of its first line, at most [`REPLY_EXCERPT_CHARS`] characters; empty
    /// when it was deleted.
    pub excerpt: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// One emoji given to a message, and who gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    /// The names of the people who reacted with it, in the order they did.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    pub room: String,
    /// The room sequence number up to which the client holds everything (the highest
    /// `rev` or `id` it has seen): the reply then carries every message after it (up to
    /// 500) and every older message that changed since, instead of the latest 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The session token an earlier `join` returned: it reclaims the name for a client
    /// reconnecting within [`NAME_HOLD_MS`], during which nobody else can take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The client was in this room on a connection it lost (or before the server
    /// restarted): it is back, not new, and the room is not told that it joined.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub room: String,
    pub text: String,
    pub client_id: String,
    /// The id of the message in the same room that this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
}

/// Replaces the text of one's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRequest {
    pub room: String,
    pub id: u64,
    pub text: String,
    pub client_id: String,
}

/// Deletes one's own message: its text is removed from storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    pub room: String,
    pub id: u64,
    pub client_id: String,
}

/// Adds (`add: true`) or takes back one's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactRequest {
    pub room: String,
    pub id: u64,
    /// One emoji (see [`crate::emoji::is_single_emoji`]).
    pub emoji: String,
    pub add: bool,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingRequest {
    pub room: String,
    pub typing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    pub room: String,
}

/// `Members` is the list of names as the server holds it: clients read a `Vec<String>`;
/// the server writes a list it keeps serialized per room (the same JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply<Members = Vec<String>> {
    pub room: String,
    pub name: String,
    pub members: Members,
    /// Oldest first.
    pub history: Vec<Message>,
    /// True when more messages followed `since` than `history` holds: page with
    /// another `join` using the last id received.
    #[serde(default)]
    pub truncated: bool,
    /// Proof of owning `name`: present it on later joins (also from a new connection)
    /// to keep the name. Keep it private; it is all it takes to speak as this name.
    #[serde(default)]
    pub session: String,
    /// With `since`: the latest version of every message with an id up to `since` that
    /// changed after it (edited, deleted, reacted to), in the order of their `rev`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<Message>,
    /// With `since`: more than [`CATCH_UP_LIMIT`] older messages changed, so the reply is
    /// what a join without `since` returns. Drop what you hold of this room and start
    /// over from this reply.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reset: bool,
    /// How many people are online in the room; `members` names at most
    /// [`MAX_MEMBERS_LISTED`] of them.
    #[serde(default)]
    pub online: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub room: String,
    /// Return messages with ids below this one (the newest of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Or return the messages around this id: it, the older half of `limit` and the
    /// newer half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub around: Option<u64>,
    #[serde(default = "default_history_page")]
    pub limit: u32,
}

fn default_history_page() -> u32 {
    JOIN_HISTORY
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// True when older messages exist.
    pub more: bool,
    /// With `around`: true when newer messages than the last one returned exist.
    #[serde(default, skip_serializing_if = "is_false")]
    pub newer: bool,
}

/// `rooms`: a page of the room list, most recently active first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsRequest {
    /// Rooms per page, 1 to [`MAX_ROOMS_PAGE`]; [`ROOMS_PAGE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsReply {
    pub rooms: Vec<RoomInfo>,
    /// More rooms follow: ask again with `cursor` set to `next`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `watch`: the rooms whose activity this connection wants pushed (replacing any
/// earlier watch), with the newest id read in each, for unread counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub rooms: Vec<WatchedRoom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedRoom {
    pub room: String,
    /// The newest message id read there; 0 for none.
    #[serde(default)]
    pub read: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchReply {
    pub rooms: Vec<RoomActivity>,
}

/// A watched room's counts, as of the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomActivity {
    pub room: String,
    /// Its newest message's id; 0 for none.
    pub last_id: u64,
    pub last_ts: Option<i64>,
    pub online: usize,
    /// Messages after `read` not deleted, counted up to [`MAX_COUNTED_UNREAD`].
    pub unread: u32,
    /// Of those, the ones that mention this connection's name (see
    /// [`crate::mentions`]), counted up to [`MAX_COUNTED_UNREAD`].
    pub mentions: u32,
}

/// `activity`: new messages in a watched room, at most about once a second per room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityNotice {
    pub room: String,
    pub last_id: u64,
    pub last_ts: Option<i64>,
    pub online: usize,
    /// The messages posted since the room's previous notice, oldest first, at most 100.
    pub messages: Vec<ActivityItem>,
    /// More messages were posted than `messages` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityItem {
    pub id: u64,
    pub author: String,
    /// [`crate::mentions::mention_key`]s of the names it mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

/// `search`: messages whose text contains every word of `query`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRequest {
    pub query: String,
    /// Only this room; every room when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// 1 to [`MAX_SEARCH_RESULTS`]; [`SEARCH_RESULTS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchReply {
    /// Newest first.
    pub results: Vec<Message>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub more: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    /// People online in the room now.
    pub online: usize,
    /// The id of its newest message; 0 for a room without messages. With the newest id
    /// a client has read, this gives its unread count.
    pub last_id: u64,
    /// When its last message was written; null for a room without messages.
    pub last_ts: Option<i64>,
}

/// The reply to `message`, `edit`, `delete` and `react`: the message as stored now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReply {
    pub message: Message,
}

/// The body of a reply that says nothing beyond `"ok":true` (`leave`, an acked `typing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyReply {}

/// `joined` and `left` notices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub room: String,
    pub name: String,
    pub ts: i64,
}

/// `presence` (protocol 2): who came and went in a room since the last notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceNotice {
    pub room: String,
    /// People who arrived, to be announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<String>,
    /// Arrivals not named in `joined`: only in a room of more than
    /// [`MAX_MEMBERS_LISTED`] people online, which names [`PRESENCE_NAMES_LISTED`] at most.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_joined: usize,
    /// People who came back (`resume`) and are online again, not to be announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned: Vec<String>,
    /// Returns not named in `returned`, as `more_joined`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_returned: usize,
    /// People who left (or whose last connection closed more than
    /// [`DEPARTURE_GRACE_MS`] ago).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    /// How many people are online in the room now.
    pub online: usize,
    pub ts: i64,
}

/// `typing` as the server relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingNotice {
    pub room: String,
    pub name: String,
    pub typing: bool,
}

/// The `error` event, for refused requests that carried no ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorNotice {
    pub event: String,
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Machine-readable reasons a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidName,
    NameTaken,
    InvalidRoom,
    Empty,
    TooLong,
    NotJoined,
    BadRequest,
    /// Too many requests: wait `retry_after_ms`, then send again.
    RateLimited,
    /// The server could not complete the request (for example it is shutting down);
    /// the request may be retried.
    Unavailable,
    /// No message with that id in that room.
    NotFound,
    /// The message is someone else's: only its author may edit or delete it.
    NotYours,
    /// The message was deleted.
    Gone,
    /// A per-message limit (edits, reactions) is reached.
    LimitReached,
    /// Not a code this client knows: a newer server. Shown with the server's message.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::Empty => "empty",
            ErrorCode::TooLong => "too_long",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotYours => "not_yours",
            ErrorCode::Gone => "gone",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// With `rate_limited`: how long to wait before sending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A `rate_limited` refusal telling the client when to try again.
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }
}

#[derive(Serialize)]
struct OkEnvelope<'a, T: Serialize> {
    ok: bool,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize, Deserialize)]
struct ErrEnvelope {
    ok: bool,
    error: ProtocolError,
}

/// The ack payload for a successful request: `{"ok":true, ...body}`.
pub fn ok_reply<T: Serialize>(body: &T) -> Value {
    serde_json::to_value(OkEnvelope { ok: true, body })
        .unwrap_or_else(|_| serde_json::json!({ "ok": true }))
}

/// The ack payload for a refused request: `{"ok":false,"error":{"code","message"}}`.
pub fn err_reply(error: &ProtocolError) -> Value {
    serde_json::json!({ "ok": false, "error": error })
}

/// Reads an ack payload back into the reply body or the server's refusal.
pub fn decode_reply<T: DeserializeOwned>(value: Value) -> Result<T, ProtocolError> {
    match value.get("ok").and_then(Value::as_bool) {
        Some(true) => serde_json::from_value(value).map_err(|e| {
            ProtocolError::new(ErrorCode::BadRequest, format!("unexpected reply: {e}"))
        }),
        Some(false) => Err(match serde_json::from_value::<ErrEnvelope>(value) {
            Ok(envelope) => envelope.error,
            Err(e) => ProtocolError::new(ErrorCode::Unknown, format!("unreadable refusal: {e}")),
        }),
        None => Err(ProtocolError::new(
            ErrorCode::BadRequest,
            "reply has no boolean \"ok\" field",
        )),
    }
}

/// The first argument of an event's data (`["event", payload, ...]`, the text of a
/// Socket.IO EVENT packet after its header), as JSON text, not parsed into a value: the
/// server reads each request from it with [`decode_request`]. `None` when the data is not
/// an array holding an event name and at least one argument. Arguments after the first
/// are skipped, as socketioxide's data extractor skips them.
///
/// Why not socketioxide's `TryData<serde_json::Value>`: it built the payload as a tree of
/// maps and strings only to read it again into a struct, and its first-element visitor
/// makes an error value for every packet, found or not; together a tenth of answering a
/// message (callgrind, the load tool).
pub fn event_payload(data: &str) -> Option<&str> {
    use serde::de::{Deserializer as _, IgnoredAny, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    struct EventArguments;
    impl<'de> Visitor<'de> for EventArguments {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("an event name and its arguments")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
            let payload = seq.next_element::<&RawValue>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(payload)
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(data);
    let payload = deserializer.deserialize_seq(EventArguments).ok()??;
    Some(payload.get())
}

/// Reads a request payload (JSON text, as [`event_payload`] finds it) into its request
/// type, as the server does for every event; any other shape is `bad_request`. Shared so
/// the fuzz targets exercise the server's exact decoding.
pub fn decode_request<T: DeserializeOwned>(payload: &str) -> Result<T, ProtocolError> {
    // serde would also fill a struct from an array, by position; the contract says object.
    if !payload.trim_start().starts_with('{') {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            "the request needs a JSON object payload",
        ));
    }
    serde_json::from_str(payload)
        .map_err(|e| ProtocolError::new(ErrorCode::BadRequest, format!("malformed payload: {e}")))
}

/// Trims a display name and checks it: 1–32 characters, no control, invisible or
/// direction-control characters, and no mix of writing systems that look-alike spoofs
/// use (see [`crate::names`]). Returns the name to store and display.
pub fn validate_name(raw: &str) -> Result<String, ProtocolError> {
    crate::names::validate(raw)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidName, e.to_string()))
}

/// What the browser checks of a name before it asks to join: [`validate_name`] without
/// the writing-system rules, which the server applies ([`crate::names::validate_shape`]).
pub fn validate_name_shape(raw: &str) -> Result<String, ProtocolError> {
    crate::names::validate_shape(raw)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidName, e.to_string()))
}

/// The form of a name used to decide whether two names collide: NFKC with full case
/// folding, so case, width and compatibility variants of a name are the same name.
pub fn name_key(name: &str) -> String {
    crate::names::key(name)
}

/// Checks a room name: 1–64 of `[a-z0-9_-]`.
pub fn validate_room(room: &str) -> Result<(), ProtocolError> {
    let valid_chars = room
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if room.is_empty() || room.len() > MAX_ROOM_CHARS || !valid_chars {
        return Err(ProtocolError::new(
            ErrorCode::InvalidRoom,
            format!(
                "A room name is 1 to {MAX_ROOM_CHARS} characters of lowercase a-z, 0-9, '_' and '-'."
            ),
        ));
    }
    Ok(())
}

/// Trims message text and checks it: not empty, at most 4000 characters.
pub fn validate_text(raw: &str) -> Result<String, ProtocolError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::Empty,
            "A message cannot be empty.",
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ProtocolError::new(
            ErrorCode::TooLong,
            format!("A message is at most {MAX_TEXT_CHARS} characters."),
        ));
    }
    Ok(text.to_owned())
}

/// Checks the sender's idempotency key: 1–64 characters, no control characters.
pub fn validate_client_id(client_id: &str) -> Result<(), ProtocolError> {
    let chars = client_id.chars().count();
    if chars == 0 || chars > MAX_CLIENT_ID_CHARS || client_id.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            format!("client_id must be 1 to {MAX_CLIENT_ID_CHARS} printable characters."),
        ));
    }
    Ok(())
}

/// Checks a reaction: exactly one emoji.
pub fn validate_emoji(emoji: &str) -> Result<(), ProtocolError> {
    if crate::emoji::is_single_emoji(emoji) {
        Ok(())
    } else {
        Err(ProtocolError::new(
            ErrorCode::BadRequest,
            "A reaction is exactly one emoji.",
        ))
    }
}

/// Trims a search query and checks it: 3 to 200 characters.
pub fn validate_query(raw: &str) -> Result<String, ProtocolError> {
    let query = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars = query.chars().count();
    if !(MIN_SEARCH_CHARS..=MAX_SEARCH_CHARS).contains(&chars) {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            format!("A search is {MIN_SEARCH_CHARS} to {MAX_SEARCH_CHARS} characters long."),
        ));
    }
    Ok(query)
}

/// The one-line quote of a message that a reply shows: the start of its first non-empty
/// line, at most [`REPLY_EXCERPT_CHARS`] characters (with "…" when cut).
pub fn excerpt(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    let mut chars = line.chars();
    let mut out: String = chars.by_ref().take(REPLY_EXCERPT_CHARS).collect();
    if chars.next().is_some() || text.trim() != line {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_from_protocol_one_servers_still_read() {
        let old =
            json!({"id": 4, "room": "r", "author": "a", "text": "t", "ts": 1, "client_id": "c"});
        let message: Message = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(message.version(), 4);
        assert!(!message.deleted && message.reactions.is_empty() && message.reply_to.is_none());
        // Unchanged fields keep today's shape; the new ones appear only when they say
        // something, except `rev`.
        let mut expected = old;
        expected["rev"] = json!(0);
        assert_eq!(serde_json::to_value(&message).unwrap(), expected);
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt("hello"), "hello");
        assert_eq!(excerpt("\n  first line  \nsecond"), "first line…");
        assert_eq!(
            excerpt(&"x".repeat(200)).chars().count(),
            REPLY_EXCERPT_CHARS + 1
        );
        assert_eq!(excerpt(""), "");
    }

    #[test]
    fn queries_are_bounded() {
        assert_eq!(
            validate_query("  deploy   friday ").unwrap(),
            "deploy friday"
        );
        assert!(validate_query("ab").is_err());
        assert!(validate_query(&"a".repeat(201)).is_err());
        assert!(validate_emoji("👍").is_ok());
        assert!(validate_emoji("ok").is_err());
    }

    #[test]
    fn ok_reply_flattens_the_body_next_to_ok() {
        let reply = ok_reply(&EmptyReply {});
        assert_eq!(reply, json!({"ok": true}));
        let msg = Message {
            id: 1,
            room: "general".into(),
            author: "alice".into(),
            text: "hi".into(),
            ts: 5,
            client_id: "c1".into(),
            ..Message::default()
        };
        let reply = ok_reply(&SendReply {
            message: msg.clone(),
        });
        assert_eq!(reply["ok"], json!(true));
        assert_eq!(reply["message"]["author"], json!("alice"));
        assert_eq!(decode_reply::<SendReply>(reply).unwrap().message, msg);
    }

    #[test]
    fn err_reply_round_trips() {
        let err = ProtocolError::new(ErrorCode::NameTaken, "taken");
        let value = err_reply(&err);
        assert_eq!(
            value,
            json!({"ok": false, "error": {"code": "name_taken", "message": "taken"}})
        );
        assert_eq!(decode_reply::<EmptyReply>(value).unwrap_err(), err);
    }

    #[test]
    fn unknown_error_codes_are_kept_readable() {
        let value = json!({"ok": false, "error": {"code": "from_the_future", "message": "m"}});
        let err = decode_reply::<EmptyReply>(value).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unknown);
        assert_eq!(err.message, "m");
    }

    #[test]
    fn replies_without_ok_are_refused() {
        let err = decode_reply::<EmptyReply>(json!({"room": "x"})).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
    }

    #[test]
    fn requests_must_be_objects_of_the_right_shape() {
        let join: JoinRequest =
            decode_request(r#"{"name": "a", "room": "r", "since": 3, "author": "x"}"#).unwrap();
        assert_eq!(join.since, Some(3));
        for bad in [
            json!(["a", "r"]),
            json!("join"),
            json!(null),
            json!({"name": 5, "room": "r"}),
            json!({"name": "a", "room": "r", "since": -1}),
        ] {
            assert_eq!(
                decode_request::<JoinRequest>(&bad.to_string())
                    .unwrap_err()
                    .code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        for bad in ["", "   ", "{", r#"{"name": "a", "room": "r"} x"#] {
            assert_eq!(
                decode_request::<JoinRequest>(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        // A field named twice is refused, not settled by order (JSON.stringify never
        // writes one).
        let twice = decode_request::<JoinRequest>(r#"{"name": "a", "room": "r", "room": "s"}"#);
        assert_eq!(twice.unwrap_err().code, ErrorCode::BadRequest);
        let history: HistoryRequest = decode_request(r#" {"room": "r", "before": 9}"#).unwrap();
        assert_eq!(history.limit, JOIN_HISTORY);
    }

    #[test]
    fn an_event_payload_is_the_first_argument_after_the_name() {
        assert_eq!(
            event_payload(r#"["message",{"room":"r","text":"[\"x\"]"}]"#),
            Some(r#"{"room":"r","text":"[\"x\"]"}"#)
        );
        // Whitespace around it is not part of it; later arguments are skipped.
        assert_eq!(
            event_payload("[ \"join\" ,\n {\"a\": [1, 2]} , 3, \"x\"]"),
            Some(r#"{"a": [1, 2]}"#)
        );
        assert_eq!(event_payload(r#"["rooms",5]"#), Some("5"));
        assert_eq!(event_payload(r#"["rooms",null]"#), Some("null"));
        // No argument, no event name, or no array: nothing.
        for none in [
            r#"["rooms"]"#,
            "[]",
            r#"{"a":1}"#,
            "",
            "[",
            r#"["message",{"#,
        ] {
            assert_eq!(event_payload(none), None, "{none}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  alice ").unwrap(), "alice");
        assert_eq!(
            validate_name("   ").unwrap_err().code,
            ErrorCode::InvalidName
        );
        assert_eq!(validate_name(&"é".repeat(32)).unwrap(), "é".repeat(32));
        assert_eq!(
            validate_name(&"é".repeat(33)).unwrap_err().code,
            ErrorCode::InvalidName
        );
        assert_eq!(
            validate_name("a\u{7}b").unwrap_err().code,
            ErrorCode::InvalidName
        );
        assert_eq!(name_key(" Alice "), name_key("alICE"));
        // The Unicode rules of `names` answer with `invalid_name` and a sentence.
        for spoof in ["\u{0430}lice", "ali\u{200B}ce", "\u{202E}ecila"] {
            let err = validate_name(spoof).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidName, "{spoof:?}");
            assert!(err.message.ends_with('.'), "{}", err.message);
        }
        assert_eq!(name_key("Ａｌｉｃｅ"), name_key("alice"));
    }

    #[test]
    fn rooms_are_lowercase_slugs() {
        assert!(validate_room("general").is_ok());
        assert!(validate_room("dev_ops-2").is_ok());
        assert!(validate_room(&"a".repeat(64)).is_ok());
        for bad in ["", "General", "a b", "é", "../x", &"a".repeat(65)] {
            assert_eq!(
                validate_room(bad).unwrap_err().code,
                ErrorCode::InvalidRoom,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_is_trimmed_and_kept_verbatim() {
        assert_eq!(validate_text("  <b>hi</b>\n").unwrap(), "<b>hi</b>");
        assert_eq!(validate_text(" \n\t").unwrap_err().code, ErrorCode::Empty);
        assert!(validate_text(&"x".repeat(4000)).is_ok());
        assert_eq!(
            validate_text(&"x".repeat(4001)).unwrap_err().code,
            ErrorCode::TooLong
        );
        // Counted in characters, not bytes.
        assert!(validate_text(&"😀".repeat(4000)).is_ok());
    }

    #[test]
    fn client_ids_are_bounded() {
        assert!(validate_client_id("abc-123").is_ok());
        assert!(validate_client_id("").is_err());
        assert!(validate_client_id(&"x".repeat(65)).is_err());
    }
}
