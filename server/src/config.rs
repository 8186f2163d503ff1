//! Command-line flags, each with a `BANTER_*` environment fallback.

use std::net::SocketAddr;

use clap::Parser;

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
            ..ChatOptions::default()
        }
    }
}
