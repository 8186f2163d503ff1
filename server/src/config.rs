//! Command-line flags, each with a `BANTER_*` environment fallback.

use std::net::SocketAddr;

use clap::Parser;

use crate::chat::limits::{AbuseLimits, RateLimit};
use crate::ChatOptions;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "banter",
    version,
    about = "Banter: self-hosted real-time group chat"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BANTER_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Where messages are stored: `sqlite://PATH` (created on first start), or
    /// `postgres://…` for several nodes sharing one database (with --redis).
    #[arg(long, env = "BANTER_DATABASE", default_value = "sqlite://banter.db")]
    pub database: String,

    /// The address people open Banter at, e.g. https://chat.example.com; pages from it may
    /// connect (as may pages served from the host a request went to).
    #[arg(long, env = "BANTER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Another origin whose pages may connect (repeatable; comma-separated in the env).
    #[arg(
        long = "allow-origin",
        env = "BANTER_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,

    /// Packets socketioxide queues per connection; more wait in the connection's send
    /// buffer (--send-buffer-bytes).
    #[arg(long, env = "BANTER_SOCKET_BUFFER", default_value_t = ChatOptions::default().socket_buffer)]
    pub socket_buffer: usize,

    /// Bytes that may wait for one connection before it is disconnected as a slow
    /// consumer (it reconnects and catches up).
    #[arg(long, env = "BANTER_SEND_BUFFER_BYTES", default_value_t = ChatOptions::default().send_buffer_bytes)]
    pub send_buffer_bytes: usize,

    /// Bytes that may wait for all connections together; past it, the connection that
    /// crosses it is disconnected as a slow consumer.
    #[arg(long, env = "BANTER_SEND_BUFFER_TOTAL", default_value_t = ChatOptions::default().send_buffer_total)]
    pub send_buffer_total: usize,

    /// Messages one connection may send per second (0 turns the limit off).
    #[arg(long, env = "BANTER_MESSAGE_RATE", default_value_t = 5.0)]
    pub message_rate: f64,

    /// Messages one connection may send in a burst.
    #[arg(long, env = "BANTER_MESSAGE_BURST", default_value_t = 10.0)]
    pub message_burst: f64,

    /// Messages one client address may send per second over all its connections
    /// (0 turns the limit off).
    #[arg(long, env = "BANTER_IP_MESSAGE_RATE", default_value_t = 25.0)]
    pub ip_message_rate: f64,

    /// Messages one client address may send in a burst.
    #[arg(long, env = "BANTER_IP_MESSAGE_BURST", default_value_t = 50.0)]
    pub ip_message_burst: f64,

    /// Other requests (join, leave, history, rooms, watch, search, typing) one connection
    /// may send per second (0 turns the limit off).
    #[arg(long, env = "BANTER_REQUEST_RATE", default_value_t = 10.0)]
    pub request_rate: f64,

    /// Other requests one connection may send in a burst.
    #[arg(long, env = "BANTER_REQUEST_BURST", default_value_t = 30.0)]
    pub request_burst: f64,

    /// Other requests one client address may send per second over all its connections
    /// (0 turns the limit off).
    #[arg(long, env = "BANTER_IP_REQUEST_RATE", default_value_t = 50.0)]
    pub ip_request_rate: f64,

    /// Other requests one client address may send in a burst.
    #[arg(long, env = "BANTER_IP_REQUEST_BURST", default_value_t = 100.0)]
    pub ip_request_burst: f64,

    /// Searches one connection may run per second (0 turns the limit off).
    #[arg(long, env = "BANTER_SEARCH_RATE", default_value_t = 1.0)]
    pub search_rate: f64,

    /// Searches one connection may run in a burst.
    #[arg(long, env = "BANTER_SEARCH_BURST", default_value_t = 5.0)]
    pub search_burst: f64,

    /// New rooms one client address may create per minute (0 turns the limit off).
    #[arg(long, env = "BANTER_ROOMS_PER_MINUTE", default_value_t = 12.0)]
    pub rooms_per_minute: f64,

    /// New rooms one client address may create in a burst.
    #[arg(long, env = "BANTER_ROOM_BURST", default_value_t = 20.0)]
    pub room_burst: f64,

    /// Connections one client address may hold at once (IPv6: one /64).
    #[arg(long, env = "BANTER_MAX_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_connections_per_ip: usize,

    /// Connections the server holds at once.
    #[arg(long, env = "BANTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Behind a reverse proxy: the header it puts the client's address in, e.g.
    /// X-Forwarded-For or Forwarded (RFC 7239); its right-most entry is used and must be
    /// an address. Only set this if every request comes through that proxy, or clients
    /// could claim any address.
    #[arg(long, env = "BANTER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// How long someone whose connection dropped still counts as in the room, in
    /// milliseconds: a reload or reconnect within it is not announced.
    #[arg(long, env = "BANTER_DEPARTURE_GRACE_MS", default_value_t = app::protocol::DEPARTURE_GRACE_MS)]
    pub departure_grace_ms: u64,

    /// Redis, to run several nodes as one chat (`redis://host:port`): messages, typing,
    /// presence, names and per-address limits are shared through it. Needs a database
    /// all nodes share (--database postgres://…).
    #[arg(long, env = "BANTER_REDIS")]
    pub redis: Option<String>,

    /// Another host name this server may be reached at (repeatable; comma-separated in
    /// the env). Without --public-url only IP addresses and localhost are accepted as
    /// Host, so a page rebinding its own domain to this server cannot talk to it.
    #[arg(long = "allow-host", env = "BANTER_ALLOW_HOST", value_delimiter = ',')]
    pub allow_hosts: Vec<String>,
}

impl Config {
    pub fn chat_options(&self) -> ChatOptions {
        ChatOptions {
            socket_buffer: self.socket_buffer,
            send_buffer_bytes: self.send_buffer_bytes,
            send_buffer_total: self.send_buffer_total,
            departure_grace: std::time::Duration::from_millis(self.departure_grace_ms),
            public_url: self.public_url.clone(),
            allowed_hosts: self.allow_hosts.clone(),
            allowed_origins: self
                .public_url
                .iter()
                .chain(&self.allow_origins)
                .cloned()
                .collect(),
            limits: AbuseLimits {
                messages: RateLimit::new(self.message_rate, self.message_burst),
                client_messages: RateLimit::new(self.ip_message_rate, self.ip_message_burst),
                requests: RateLimit::new(self.request_rate, self.request_burst),
                client_requests: RateLimit::new(self.ip_request_rate, self.ip_request_burst),
                searches: RateLimit::new(self.search_rate, self.search_burst),
                room_creation: RateLimit::new(self.rooms_per_minute / 60.0, self.room_burst),
                max_connections_per_client: self.max_connections_per_ip,
                max_connections: self.max_connections,
                client_ip_header: self.client_ip_header.clone(),
                ..AbuseLimits::default()
            },
            ..ChatOptions::default()
        }
    }
}
