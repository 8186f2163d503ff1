//! The chat client, in three layers: two without I/O, and a thin browser shell.
//!
//! - [`session`]: one Socket.IO connection (handshake, heartbeat, acks, typed requests
//!   and events). The Rust test client in `server/tests/support` drives it too.
//! - [`chat`]: one room's chat page (the outbox, joining and catching up, presence,
//!   typing, unread counts, history, search, reconnecting) and the view it shows, on top
//!   of a session; with [`outbox`] (the ordered queue of unconfirmed changes) and [`log`]
//!   (the message log and its merge rules).
//! - `browser` (the `browser` feature): opens the WebSocket, feeds frames, time,
//!   visibility and the person's actions into [`chat::Chat`], and performs its effects
//!   (frames, localStorage, timers), copying what changed into the Leptos store.
//!
//! The first two are plain state machines in the style of quinn-proto: time and events
//! go in, effects come out, nothing blocks, nothing reads a clock or a random number
//! generator. That is what lets `cargo test -p app` run every reconnect, lost ack, clock
//! jump and race as a fast deterministic test (`tests.rs`), with no browser and no
//! server. What each layer guarantees is stated in its module documentation.

#[cfg(feature = "browser")]
pub(crate) mod browser;
pub mod chat;
pub mod log;
pub mod outbox;
pub mod session;
#[cfg(test)]
mod tests;

#[cfg(feature = "browser")]
pub use browser::start;
pub use chat::{Action, Chat, Connection, Dirty, Effect, RoomEntry, SearchView, View};
pub use log::{Delivery, Line, LineKind, MessageLine};
