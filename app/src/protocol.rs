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
    pub const TYPING: &str = "typing";
    pub const LEAVE: &str = "leave";
    pub const HISTORY: &str = "history";
    pub const ROOMS: &str = "rooms";
    pub const JOINED: &str = "joined";
    pub const LEFT: &str = "left";
    /// Sent when a refused request carried no ack callback to answer on.
    pub const ERROR: &str = "error";
}

/// The room a page opens when its URL names none.
pub const DEFAULT_ROOM: &str = "general";
pub const MAX_NAME_CHARS: usize = 32;
pub const MAX_ROOM_CHARS: usize = 64;
pub const MAX_TEXT_CHARS: usize = 4000;
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Messages a `join` without `since` returns.
pub const JOIN_HISTORY: u32 = 50;
/// Messages a `join` with `since` returns at most before it reports `truncated`.
pub const CATCH_UP_LIMIT: u32 = 500;
/// The largest page a `history` request may ask for.
pub const MAX_HISTORY_PAGE: u32 = 100;
/// How long a typing indicator lasts without a refresh.
pub const TYPING_TTL_MS: u64 = 5_000;
/// How long a name stays reserved for its session after its last connection closed.
pub const NAME_HOLD_MS: u64 = 120_000;

/// A stored chat message, as every client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub room: String,
    pub author: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, server clock.
    pub ts: i64,
    pub client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    pub room: String,
    /// The newest message id the client already holds: the reply then carries every
    /// message after it (up to 500) instead of the latest 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The session token an earlier `join` returned: it reclaims the name for a client
    /// reconnecting within [`NAME_HOLD_MS`], during which nobody else can take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub room: String,
    pub text: String,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub room: String,
    pub name: String,
    pub members: Vec<String>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub room: String,
    /// Return messages with ids below this one.
    pub before: u64,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsReply {
    pub rooms: Vec<RoomInfo>,
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

/// Reads a request payload into its request type, as the server does for every event;
/// any other shape is `bad_request`. Shared so the fuzz targets exercise the server's
/// exact decoding.
pub fn decode_request<T: DeserializeOwned>(value: Value) -> Result<T, ProtocolError> {
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

/// Trims a display name and checks it: 1–32 characters, no control, invisible or
/// direction-control characters, and no mix of writing systems that look-alike spoofs
/// use (see [`crate::names`]). Returns the name to store and display.
pub fn validate_name(raw: &str) -> Result<String, ProtocolError> {
    crate::names::validate(raw)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            decode_request(json!({"name": "a", "room": "r", "since": 3, "author": "x"})).unwrap();
        assert_eq!(join.since, Some(3));
        for bad in [
            json!(["a", "r"]),
            json!("join"),
            json!(null),
            json!({"name": 5, "room": "r"}),
            json!({"name": "a", "room": "r", "since": -1}),
        ] {
            assert_eq!(
                decode_request::<JoinRequest>(bad.clone()).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        let history: HistoryRequest = decode_request(json!({"room": "r", "before": 9})).unwrap();
        assert_eq!(history.limit, JOIN_HISTORY);
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
