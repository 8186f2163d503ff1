//! Engine.IO v4 and Socket.IO v5 text packets as pure functions.
//!
//! The browser client speaks the protocol itself over a plain WebSocket, and the server's
//! tests use the same codec to play a stock client. Binary packets are not part of the
//! Banter contract and decode to an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Engine.IO's record separator between packets of one long-polling payload.
pub const RECORD_SEPARATOR: char = '\u{1e}';

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSocketType(char),
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    #[error("invalid open packet: {0}")]
    InvalidOpen(String),
    #[error("invalid JSON payload: {0}")]
    InvalidJson(String),
    #[error("an event needs a non-empty array whose first element is the event name")]
    InvalidEvent,
    #[error("an ack needs an id and an array payload")]
    InvalidAck,
    #[error("ack id is not a number")]
    InvalidAckId,
    #[error("unterminated namespace")]
    InvalidNamespace,
    #[error(
        "a connect, connect error or disconnect takes no ack id, and an object payload if any"
    )]
    InvalidControl,
}

/// The handshake data in the Engine.IO open packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    pub sid: String,
    #[serde(default)]
    pub upgrades: Vec<String>,
    pub ping_interval: u64,
    pub ping_timeout: u64,
    #[serde(default)]
    pub max_payload: u64,
}

/// An Engine.IO packet (text only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket {
    Open(OpenInfo),
    Close,
    Ping(String),
    Pong(String),
    Message(String),
    Upgrade,
    Noop,
}

pub fn decode_engine(text: &str) -> Result<EnginePacket, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => EnginePacket::Open(
            serde_json::from_str(rest).map_err(|e| CodecError::InvalidOpen(e.to_string()))?,
        ),
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(rest.to_owned()),
        '3' => EnginePacket::Pong(rest.to_owned()),
        '4' => EnginePacket::Message(rest.to_owned()),
        '5' => EnginePacket::Upgrade,
        '6' => EnginePacket::Noop,
        'b' => return Err(CodecError::Binary),
        other => return Err(CodecError::UnknownEngineType(other)),
    })
}

pub fn encode_engine(packet: &EnginePacket) -> String {
    match packet {
        EnginePacket::Open(info) => {
            format!("0{}", serde_json::to_string(info).unwrap_or_default())
        }
        EnginePacket::Close => "1".into(),
        EnginePacket::Ping(data) => format!("2{data}"),
        EnginePacket::Pong(data) => format!("3{data}"),
        EnginePacket::Message(data) => format!("4{data}"),
        EnginePacket::Upgrade => "5".into(),
        EnginePacket::Noop => "6".into(),
    }
}

/// Splits a long-polling payload into its Engine.IO packets.
pub fn decode_polling_payload(body: &str) -> Result<Vec<EnginePacket>, CodecError> {
    body.split(RECORD_SEPARATOR).map(decode_engine).collect()
}

/// A Socket.IO packet (text only), carried inside an Engine.IO message.
#[derive(Debug, Clone, PartialEq)]
pub enum SocketPacket {
    Connect {
        ns: String,
        data: Option<Value>,
    },
    Disconnect {
        ns: String,
    },
    Event {
        ns: String,
        event: String,
        args: Vec<Value>,
        ack: Option<u64>,
    },
    Ack {
        ns: String,
        id: u64,
        args: Vec<Value>,
    },
    ConnectError {
        ns: String,
        data: Value,
    },
}

impl SocketPacket {
    /// An event on the main namespace.
    pub fn event(event: &str, args: Vec<Value>, ack: Option<u64>) -> Self {
        SocketPacket::Event {
            ns: "/".into(),
            event: event.into(),
            args,
            ack,
        }
    }
}

pub fn decode_socket(text: &str) -> Result<SocketPacket, CodecError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(CodecError::Empty)?;
    if matches!(kind, '5' | '6') {
        return Err(CodecError::Binary);
    }
    if !('0'..='4').contains(&kind) {
        return Err(CodecError::UnknownSocketType(kind));
    }
    let mut rest = chars.as_str();

    let ns = if rest.starts_with('/') {
        // A namespace alone ("1/chat") is valid only when nothing follows it.
        let end = rest.find(',').ok_or(CodecError::InvalidNamespace);
        match end {
            Ok(end) => {
                let ns = rest[..end].to_owned();
                rest = &rest[end + 1..];
                ns
            }
            Err(_) if !rest.contains(['[', '{', '"']) => {
                let ns = rest.to_owned();
                rest = "";
                ns
            }
            Err(e) => return Err(e),
        }
    } else {
        "/".to_owned()
    };

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| CodecError::InvalidAckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };

    let data = if rest.is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Value>(rest)
                .map_err(|e| CodecError::InvalidJson(e.to_string()))?,
        )
    };

    // Only events and acks carry an id. A connect's payload is an object (the auth
    // data) and a connect error's an object or, from v4 servers, a string; a bare
    // number there could not be told from an id when written back out.
    let control = matches!(kind, '0' | '1' | '4');
    let payload_fits = match (kind, &data) {
        (_, None) => kind != '4',
        ('0', Some(Value::Object(_))) => true,
        ('4', Some(Value::Object(_) | Value::String(_))) => true,
        _ => false,
    };
    if control && (id.is_some() || !payload_fits) {
        return Err(CodecError::InvalidControl);
    }

    Ok(match kind {
        '0' => SocketPacket::Connect { ns, data },
        '1' => SocketPacket::Disconnect { ns },
        '2' => {
            let Some(Value::Array(mut args)) = data else {
                return Err(CodecError::InvalidEvent);
            };
            if args.is_empty() {
                return Err(CodecError::InvalidEvent);
            }
            let Value::String(event) = args.remove(0) else {
                return Err(CodecError::InvalidEvent);
            };
            SocketPacket::Event {
                ns,
                event,
                args,
                ack: id,
            }
        }
        '3' => match (id, data) {
            (Some(id), Some(Value::Array(args))) => SocketPacket::Ack { ns, id, args },
            _ => return Err(CodecError::InvalidAck),
        },
        _ => SocketPacket::ConnectError {
            ns,
            data: data.unwrap_or_default(),
        },
    })
}

pub fn encode_socket(packet: &SocketPacket) -> String {
    fn prefix(kind: char, ns: &str) -> String {
        if ns == "/" || ns.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}{ns},")
        }
    }
    match packet {
        SocketPacket::Connect { ns, data } => {
            let mut out = prefix('0', ns);
            if let Some(data) = data {
                out.push_str(&data.to_string());
            }
            out
        }
        SocketPacket::Disconnect { ns } => prefix('1', ns),
        SocketPacket::Event {
            ns,
            event,
            args,
            ack,
        } => {
            let mut out = prefix('2', ns);
            if let Some(id) = ack {
                out.push_str(&id.to_string());
            }
            let mut array = Vec::with_capacity(args.len() + 1);
            array.push(Value::String(event.clone()));
            array.extend(args.iter().cloned());
            out.push_str(&Value::Array(array).to_string());
            out
        }
        SocketPacket::Ack { ns, id, args } => {
            format!("{}{id}{}", prefix('3', ns), Value::Array(args.clone()))
        }
        SocketPacket::ConnectError { ns, data } => format!("{}{data}", prefix('4', ns)),
    }
}

/// A Socket.IO packet wrapped in its Engine.IO message frame, ready for the wire.
pub fn encode_frame(packet: &SocketPacket) -> String {
    encode_engine(&EnginePacket::Message(encode_socket(packet)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn open_packet_from_socketioxide_decodes() {
        let text = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;
        let EnginePacket::Open(info) = decode_engine(text).unwrap() else {
            panic!()
        };
        assert_eq!(info.sid, "abc");
        assert_eq!(info.ping_interval, 25000);
        assert_eq!(
            decode_engine(&encode_engine(&EnginePacket::Open(info.clone()))).unwrap(),
            EnginePacket::Open(info)
        );
    }

    #[test]
    fn engine_packets_round_trip() {
        for packet in [
            EnginePacket::Close,
            EnginePacket::Ping(String::new()),
            EnginePacket::Ping("probe".into()),
            EnginePacket::Pong(String::new()),
            EnginePacket::Message("2[\"x\"]".into()),
            EnginePacket::Upgrade,
            EnginePacket::Noop,
        ] {
            assert_eq!(decode_engine(&encode_engine(&packet)).unwrap(), packet);
        }
        assert_eq!(encode_engine(&EnginePacket::Pong(String::new())), "3");
    }

    #[test]
    fn malformed_engine_packets_are_errors() {
        assert_eq!(decode_engine(""), Err(CodecError::Empty));
        assert_eq!(decode_engine("9"), Err(CodecError::UnknownEngineType('9')));
        assert_eq!(decode_engine("bAAAA"), Err(CodecError::Binary));
        assert!(matches!(
            decode_engine("0{not json"),
            Err(CodecError::InvalidOpen(_))
        ));
        assert!(matches!(
            decode_engine("0{}"),
            Err(CodecError::InvalidOpen(_))
        ));
    }

    #[test]
    fn polling_payloads_split_on_the_record_separator() {
        let packets = decode_polling_payload("2\u{1e}40\u{1e}6").unwrap();
        assert_eq!(
            packets,
            vec![
                EnginePacket::Ping(String::new()),
                EnginePacket::Message("0".into()),
                EnginePacket::Noop
            ]
        );
    }

    #[test]
    fn socket_packets_round_trip() {
        let packets = [
            SocketPacket::Connect {
                ns: "/".into(),
                data: None,
            },
            SocketPacket::Connect {
                ns: "/".into(),
                data: Some(json!({"sid": "x"})),
            },
            SocketPacket::Connect {
                ns: "/admin".into(),
                data: Some(json!({"token": 1})),
            },
            SocketPacket::Disconnect { ns: "/".into() },
            SocketPacket::Disconnect {
                ns: "/admin".into(),
            },
            SocketPacket::event(
                "join",
                vec![json!({"name": "alice", "room": "general"})],
                Some(12),
            ),
            SocketPacket::event("typing", vec![json!({"room": "r", "typing": true})], None),
            SocketPacket::Event {
                ns: "/admin".into(),
                event: "x".into(),
                args: vec![],
                ack: Some(0),
            },
            SocketPacket::Ack {
                ns: "/".into(),
                id: 7,
                args: vec![json!({"ok": true})],
            },
            SocketPacket::ConnectError {
                ns: "/".into(),
                data: json!({"message": "no"}),
            },
        ];
        for packet in packets {
            let text = encode_socket(&packet);
            assert_eq!(decode_socket(&text).unwrap(), packet, "{text}");
        }
    }

    #[test]
    fn wire_forms_match_the_protocol() {
        assert_eq!(
            encode_socket(&SocketPacket::Connect {
                ns: "/".into(),
                data: None
            }),
            "0"
        );
        assert_eq!(
            encode_frame(&SocketPacket::event(
                "message",
                vec![json!({"text": "hi"})],
                Some(3)
            )),
            r#"423["message",{"text":"hi"}]"#
        );
        assert_eq!(
            decode_socket(r#"3/admin,5[1,"a"]"#).unwrap(),
            SocketPacket::Ack {
                ns: "/admin".into(),
                id: 5,
                args: vec![json!(1), json!("a")]
            }
        );
    }

    #[test]
    fn text_that_looks_like_a_packet_stays_text() {
        let packet =
            SocketPacket::event("message", vec![json!({"text": "42[\"x\"]\u{1e}1/,"})], None);
        assert_eq!(decode_socket(&encode_socket(&packet)).unwrap(), packet);
    }

    #[test]
    fn malformed_socket_packets_are_errors() {
        assert_eq!(decode_socket(""), Err(CodecError::Empty));
        assert_eq!(decode_socket("7"), Err(CodecError::UnknownSocketType('7')));
        assert_eq!(
            decode_socket("51-[\"x\",{\"_placeholder\":true,\"num\":0}]"),
            Err(CodecError::Binary)
        );
        assert_eq!(decode_socket("2"), Err(CodecError::InvalidEvent));
        assert_eq!(decode_socket("2[]"), Err(CodecError::InvalidEvent));
        assert_eq!(decode_socket("2[1,2]"), Err(CodecError::InvalidEvent));
        assert_eq!(decode_socket("2{\"a\":1}"), Err(CodecError::InvalidEvent));
        assert_eq!(decode_socket("3[1]"), Err(CodecError::InvalidAck));
        assert_eq!(
            decode_socket("399999999999999999999999[1]"),
            Err(CodecError::InvalidAckId)
        );
        assert!(matches!(
            decode_socket("2[\"x\""),
            Err(CodecError::InvalidJson(_))
        ));
        assert_eq!(
            decode_socket("2/admin[\"x\"]"),
            Err(CodecError::InvalidNamespace)
        );
        // A number after a connect reads as an id; in a payload it would be written
        // back out as one. Neither fits a control packet (found by the codec fuzzer).
        for text in [
            "0 5",
            "05",
            "4 5",
            "45",
            "4",
            "15",
            "1{}",
            "0[1]",
            "0\"auth\"",
        ] {
            assert_eq!(
                decode_socket(text),
                Err(CodecError::InvalidControl),
                "{text:?}"
            );
        }
        assert!(decode_socket("0{\"token\":1}").is_ok());
        assert!(decode_socket("4\"Not authorized\"").is_ok());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A cheap deterministic sweep of short inputs built from the protocol's own alphabet.
        let alphabet = [
            '0', '2', '3', '4', '5', '/', ',', '[', ']', '{', '}', '"', '9', 'é', '\u{1e}',
        ];
        let mut input = String::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    input.clear();
                    input.extend([a, b, c]);
                    let _ = decode_engine(&input);
                    let _ = decode_socket(&input);
                    let _ = decode_polling_payload(&input);
                }
            }
        }
    }
}
