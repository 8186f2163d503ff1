//! Code shared by the Banter server and the browser: the wire protocol, the Socket.IO
//! packet codec, the browser's Socket.IO client and the Leptos components.

pub mod codec;
pub mod protocol;
