//! Code shared by the Banter server and the browser: the wire protocol, the Socket.IO
//! packet codec, the chat page's state, the browser's Socket.IO client and the Leptos
//! components.

pub mod client;
pub mod codec;
#[cfg(feature = "ui")]
pub mod components;
pub mod emoji;
pub mod format;
pub mod linkify;
pub mod mentions;
pub mod names;
pub mod protocol;
#[cfg(feature = "ui")]
pub mod store;
