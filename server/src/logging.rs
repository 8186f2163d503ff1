//! Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), with session
//! tokens taken out.
//!
//! A session token is all it takes to speak under a name, and logs travel further than
//! databases (log collectors, bug reports). Banter never logs one itself, but at debug
//! level socketioxide logs whole packets, and join requests and replies carry the token
//! as `"session":"<32 hex digits>"`. So every line is scrubbed before it is written: hex
//! runs of a token's length that follow the word `session` (within a few quote, colon,
//! backslash or space characters, as JSON and its escaped forms put them) become
//! `[redacted]`. Guaranteed for tokens Banter issues (32 hex digits); a client that sends
//! some other string as `session` gets a fresh token and its string is not a secret.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber; call once, first thing.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(Redacted)
        .init();
}

/// Writes to stderr, scrubbed.
#[derive(Clone, Copy, Default)]
pub struct Redacted;

impl<'a> MakeWriter<'a> for Redacted {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(Vec::new())
    }
}

/// Collects one event's output and writes it scrubbed when dropped (the formatter writes
/// each event through a fresh writer).
pub struct RedactingWriter(Vec<u8>);

impl Write for RedactingWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

const TOKEN_LEN: usize = 32;
const KEY: &str = "session";

/// `text` with every session token replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let after_key = at + KEY.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let gap = rest
            .bytes()
            .take(8)
            .take_while(|b| matches!(b, b'"' | b'\\' | b':' | b'=' | b' ' | b'\''))
            .count();
        let candidate = &rest[gap..];
        let hex = candidate
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if hex == TOKEN_LEN {
            out.push_str(&rest[..gap]);
            out.push_str("[redacted]");
            rest = &candidate[TOKEN_LEN..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "5f0c9a7d2b41e8c3a6f0d9b2c4e7a1e1";

    #[test]
    fn tokens_are_redacted_in_every_form_they_are_logged_in() {
        for line in [
            format!(r#"420["join",{{"name":"a","session":"{TOKEN}"}}]"#),
            format!(r#"Str("430[{{\"ok\":true,\"session\":\"{TOKEN}\"}}]")"#),
            format!("session={TOKEN} next"),
            format!("session: '{TOKEN}'"),
        ] {
            let scrubbed = redact(&line);
            assert!(!scrubbed.contains(TOKEN), "{scrubbed}");
            assert!(scrubbed.contains("[redacted]"), "{scrubbed}");
        }
    }

    #[test]
    fn everything_else_is_left_alone() {
        for line in [
            "session started",
            "a 32-hex string alone: 5f0c9a7d2b41e8c3a6f0d9b2c4e7a1e1",
            "session: 5f0c9a7d2b41e8c3a6f0d9b2c4e7a1e1ff (longer than a token)",
            "sessions sessions",
        ] {
            assert_eq!(redact(line), line);
        }
    }
}
