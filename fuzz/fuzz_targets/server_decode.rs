//! The server's whole decoding path for one WebSocket frame plus any binary frames after
//! it, with the decoders it really runs: engineioxide's packet parser, socketioxide's
//! common Socket.IO parser (binary attachments included), the event name, the payload's
//! extraction (`event_payload`, as the handlers' `Payload` does), then Banter's
//! `decode_request` and validation for whichever event the frame names. Nothing on this path may panic.
//!
//! Input: the text frame, then binary frames, separated by 0xFF (a byte UTF-8 never holds).

#![no_main]

use app::protocol::{
    decode_request, event, event_payload, validate_client_id, validate_name, validate_room,
    validate_text, HistoryRequest, JoinRequest, LeaveRequest, SendRequest, TypingRequest,
};
use bytes::Bytes;
use engineioxide_core::{Packet as EnginePacket, ProtocolVersion};
use libfuzzer_sys::fuzz_target;
use socketioxide_core::packet::{Packet, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParseError, ParserState};
use socketioxide_parser_common::CommonParser;

fuzz_target!(|data: &[u8]| {
    let mut frames = data.split(|&b| b == 0xFF);
    let text = String::from_utf8_lossy(frames.next().unwrap_or_default()).into_owned();

    let config = ParseConfig::default();
    let state = ParserState::default();
    for version in [ProtocolVersion::V3, ProtocolVersion::V4] {
        // Polling may carry binary as a base64 `b` packet; it feeds the same parser.
        match EnginePacket::parse(version, text.clone()) {
            Ok(EnginePacket::Message(message)) if version == ProtocolVersion::V4 => {
                let decoded = CommonParser.decode_str(&config, &state, message);
                let decoded = feed_attachments(decoded, &mut frames, &config, &state);
                if let Ok(packet) = decoded {
                    dispatch(packet);
                }
            }
            Ok(EnginePacket::Binary(bin) | EnginePacket::BinaryV3(bin)) => {
                let _ = CommonParser.decode_bin(&config, &ParserState::default(), bin);
            }
            _ => {}
        }
    }
});

/// Hands binary frames to a packet waiting for its attachments, as the server does.
fn feed_attachments<'a>(
    mut decoded: Result<Packet, ParseError>,
    frames: &mut impl Iterator<Item = &'a [u8]>,
    config: &ParseConfig,
    state: &ParserState,
) -> Result<Packet, ParseError> {
    while let Err(ParseError::NeedsMoreBinaryData) = decoded {
        let Some(frame) = frames.next() else { break };
        decoded = CommonParser.decode_bin(config, state, Bytes::copy_from_slice(frame));
    }
    decoded
}

/// What socketioxide and Banter's handlers do with a decoded packet.
fn dispatch(packet: Packet) {
    let (PacketData::Event(value, _) | PacketData::BinaryEvent(value, _)) = packet.inner else {
        return;
    };
    let Ok(name) = CommonParser.read_event(&value).map(str::to_owned) else {
        return;
    };
    // The handlers see no payload as "no JSON object payload": bad_request.
    let Some(payload) = value.as_str().and_then(|data| event_payload(data.as_str())) else {
        return;
    };
    match name.as_str() {
        event::JOIN => {
            if let Ok(req) = decode_request::<JoinRequest>(payload) {
                let _ = validate_name(&req.name);
                let _ = validate_room(&req.room);
            }
        }
        event::MESSAGE => {
            if let Ok(req) = decode_request::<SendRequest>(payload) {
                let _ = validate_client_id(&req.client_id);
                let _ = validate_text(&req.text);
                let _ = validate_room(&req.room);
            }
        }
        event::TYPING => {
            if let Ok(req) = decode_request::<TypingRequest>(payload) {
                let _ = validate_room(&req.room);
            }
        }
        event::LEAVE => {
            if let Ok(req) = decode_request::<LeaveRequest>(payload) {
                let _ = validate_room(&req.room);
            }
        }
        event::HISTORY => {
            if let Ok(req) = decode_request::<HistoryRequest>(payload) {
                let _ = validate_room(&req.room);
            }
        }
        // `rooms` never reads its payload; unknown events have no handler.
        _ => {}
    }
}
