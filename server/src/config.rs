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

    /// Where messages are stored: `sqlite://PATH` (created on first start).
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

    /// Packets buffered per connection before it is disconnected as a slow consumer.
    #[arg(long, env = "BANTER_SOCKET_BUFFER", default_value_t = ChatOptions::default().socket_buffer)]
    pub socket_buffer: usize,

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

    /// Other requests (join, leave, history, rooms, typing) one connection may send per
    /// second (0 turns the limit off).
    #[arg(long, env = "BANTER_REQUEST_RATE", default_value_t = 10.0)]
    pub request_rate: f64,

    /// Other requests one connection may send in a burst.
    #[arg(long, env = "BANTER_REQUEST_BURST", default_value_t = 30.0)]
    pub request_burst: f64,

    /// Connections one client address may hold at once (IPv6: one /64).
    #[arg(long, env = "BANTER_MAX_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_connections_per_ip: usize,

    /// Connections the server holds at once.
    #[arg(long, env = "BANTER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Behind a reverse proxy: the header it puts the client's address in, e.g.
    /// X-Forwarded-For (its last address is used). Only set this if every request comes
    /// through that proxy, or clients could claim any address.
    #[arg(long, env = "BANTER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
}

impl Config {
    pub fn chat_options(&self) -> ChatOptions {
        ChatOptions {
            socket_buffer: self.socket_buffer,
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
                max_connections_per_client: self.max_connections_per_ip,
                max_connections: self.max_connections,
                client_ip_header: self.client_ip_header.clone(),
                ..AbuseLimits::default()
            },
            ..ChatOptions::default()
        }
    }
}
