//! Every request payload of the contract on arbitrary JSON: `decode_request` (the server's
//! decoding) and the validation rules never panic, what they accept obeys the documented
//! rules, and an accepted request survives re-encoding unchanged.

#![no_main]

use app::protocol::{
    decode_request, name_key, validate_client_id, validate_name, validate_room, validate_text,
    ErrorCode, HistoryRequest, JoinRequest, LeaveRequest, SendRequest, TypingRequest,
    MAX_CLIENT_ID_CHARS, MAX_NAME_CHARS, MAX_ROOM_CHARS, MAX_TEXT_CHARS,
};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(join) = decode::<JoinRequest>(&value) {
        check_name(&join.name);
        check_room(&join.room);
    }
    if let Some(send) = decode::<SendRequest>(&value) {
        check_room(&send.room);
        check_text(&send.text);
        check_client_id(&send.client_id);
    }
    if let Some(typing) = decode::<TypingRequest>(&value) {
        check_room(&typing.room);
    }
    if let Some(leave) = decode::<LeaveRequest>(&value) {
        check_room(&leave.room);
    }
    if let Some(history) = decode::<HistoryRequest>(&value) {
        check_room(&history.room);
    }
    // `rooms` ignores its payload: there is nothing to decode.
});

/// Decodes like the server; a refusal is always `bad_request` with a message, and an
/// accepted request comes back unchanged from its own JSON.
fn decode<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    value: &Value,
) -> Option<T> {
    match decode_request::<T>(&value.to_string()) {
        Ok(request) => {
            assert!(value.is_object(), "accepted a non-object: {value}");
            let json = serde_json::to_string(&request).expect("a request serializes");
            assert_eq!(decode_request::<T>(&json).as_ref(), Ok(&request));
            Some(request)
        }
        Err(err) => {
            assert_eq!(err.code, ErrorCode::BadRequest, "{value}");
            assert!(!err.message.trim().is_empty());
            None
        }
    }
}

fn check_name(raw: &str) {
    match validate_name(raw) {
        Ok(name) => {
            // The stored form may differ from the input (trimmed, normalised), but is
            // itself a valid name, and the same name.
            let chars = name.chars().count();
            assert!((1..=MAX_NAME_CHARS).contains(&chars), "{name:?}");
            assert!(!name.chars().any(char::is_control), "{name:?}");
            // Validation is idempotent, and the collision key ignores what it changed.
            assert_eq!(validate_name(&name).as_deref(), Ok(name.as_str()));
            assert_eq!(name_key(&name), name_key(raw));
        }
        Err(err) => refused(err.code, ErrorCode::InvalidName, &err.message),
    }
}

fn check_room(room: &str) {
    match validate_room(room) {
        Ok(()) => {
            assert!((1..=MAX_ROOM_CHARS).contains(&room.len()), "{room:?}");
            assert!(
                room.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')),
                "{room:?}"
            );
        }
        Err(err) => refused(err.code, ErrorCode::InvalidRoom, &err.message),
    }
}

fn check_text(raw: &str) {
    match validate_text(raw) {
        Ok(text) => {
            assert_eq!(text, raw.trim());
            assert!(!text.is_empty());
            assert!(text.chars().count() <= MAX_TEXT_CHARS);
        }
        Err(err) => {
            assert!(matches!(err.code, ErrorCode::Empty | ErrorCode::TooLong));
            assert!(!err.message.trim().is_empty());
        }
    }
}

fn check_client_id(client_id: &str) {
    match validate_client_id(client_id) {
        Ok(()) => {
            let chars = client_id.chars().count();
            assert!((1..=MAX_CLIENT_ID_CHARS).contains(&chars));
            assert!(!client_id.chars().any(char::is_control));
        }
        Err(err) => refused(err.code, ErrorCode::BadRequest, &err.message),
    }
}

fn refused(code: ErrorCode, expected: ErrorCode, message: &str) {
    assert_eq!(code, expected);
    assert!(!message.trim().is_empty());
}
