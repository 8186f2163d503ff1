//! The browser's Engine.IO / Socket.IO codec (`app::codec`) on arbitrary input: decoding
//! never panics, and whatever decodes re-encodes to text that decodes to the same packet.

#![no_main]

use app::codec::{
    decode_engine, decode_polling_payload, decode_socket, encode_engine, encode_frame,
    encode_socket, EnginePacket, RECORD_SEPARATOR,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Frames arrive as text; invalid UTF-8 is the transport's problem, but a lossy
    // conversion still gives the decoder the odd characters it would meet.
    let text = String::from_utf8_lossy(data);

    if let Ok(packet) = decode_engine(&text) {
        let again = decode_engine(&encode_engine(&packet));
        assert_eq!(again.as_ref(), Ok(&packet), "engine round trip of {text:?}");
        if let EnginePacket::Message(body) = &packet {
            check_socket(body);
        }
    }
    check_socket(&text);

    // A long-polling body is its packets joined by the record separator, one for one.
    let parts: Vec<&str> = text.split(RECORD_SEPARATOR).collect();
    match decode_polling_payload(&text) {
        Ok(packets) => {
            assert_eq!(packets.len(), parts.len());
            for (packet, part) in packets.iter().zip(&parts) {
                assert_eq!(decode_engine(part).as_ref(), Ok(packet));
            }
        }
        Err(err) => assert!(
            parts
                .iter()
                .any(|part| decode_engine(part) == Err(err.clone())),
            "polling error {err:?} comes from none of the packets of {text:?}"
        ),
    }
});

fn check_socket(text: &str) {
    let Ok(packet) = decode_socket(text) else {
        return;
    };
    let encoded = encode_socket(&packet);
    assert_eq!(
        decode_socket(&encoded).as_ref(),
        Ok(&packet),
        "socket round trip of {text:?} via {encoded:?}"
    );
    // The same packet inside its Engine.IO frame.
    let frame = encode_frame(&packet);
    let Ok(EnginePacket::Message(body)) = decode_engine(&frame) else {
        panic!("{frame:?} is not an Engine.IO message");
    };
    assert_eq!(body, encoded);
}
