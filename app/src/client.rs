//! The browser's Socket.IO client: one WebSocket speaking Engine.IO v4 / Socket.IO v5 by
//! hand (see `codec`), with acks, heartbeats, an ordered outbox, and reconnection with
//! jittered backoff that rejoins the room under the same name.

use std::collections::HashMap;

use futures::channel::mpsc::{self, UnboundedReceiver};
use futures::{select, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message as WsMessage};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use serde_json::{json, Value};

use crate::codec::{
    decode_engine, decode_socket, encode_engine, encode_frame, EnginePacket, SocketPacket,
};
use crate::protocol::{
    decode_reply, event, ErrorCode, HistoryReply, JoinReply, Message, Presence, ProtocolError,
    RoomsReply, SendReply, TypingNotice, JOIN_HISTORY,
};
use crate::store::{id_range, Action, ChatStore, Connection, Delivery, Line, LineKind};

/// localStorage key of the name the user joined with, to rejoin after a reload.
pub const NAME_KEY: &str = "banter.name";
/// localStorage key prefix of a room's unsent messages, so a reload does not lose them.
const OUTBOX_KEY: &str = "banter.outbox.";
/// localStorage key of the newest message id read per room.
const READ_KEY: &str = "banter.read";
/// localStorage key of the session token that owns our name on the server.
const SESSION_KEY: &str = "banter.session";
/// How often the room list (online and unread counts) is refreshed.
const ROOMS_REFRESH_MS: f64 = 10_000.0;
const ACK_TIMEOUT_MS: f64 = 10_000.0;
const HANDSHAKE_TIMEOUT_MS: u32 = 10_000;
/// Typing stops counting this long after the last keystroke.
const TYPING_IDLE_MS: f64 = 3_000.0;
/// A typing indicator is refreshed this often while the user keeps typing.
const TYPING_REFRESH_MS: f64 = 2_000.0;
const MAX_BACKOFF_MS: f64 = 10_000.0;
/// A rejoin can find the name still held by this page's previous, not yet timed out
/// connection; it is retried this many times before the user is asked for a name.
const REJOIN_ATTEMPTS: u32 = 12;

/// Starts the client for this page; it runs until the store's owner is disposed.
pub fn start(store: ChatStore) {
    let (sender, receiver) = mpsc::unbounded();
    store.connect_actions(sender);
    leptos::task::spawn_local(run(store, receiver));
}

enum Awaiting {
    Join { automatic: bool },
    Send { uid: u64 },
    Leave,
    History,
    Rooms,
}

enum SessionEnd {
    /// The page went away: stop for good.
    Stopped,
    /// The connection broke: reconnect.
    Lost(String),
}

struct Client {
    store: ChatStore,
    room: String,
    /// The name to join (and rejoin) with.
    wanted_name: Option<String>,
    joined: bool,
    rejoin_failures: u32,
    /// When to try an automatic rejoin again after the name was still taken.
    rejoin_at: Option<f64>,
    next_ack: u64,
    awaiting: HashMap<u64, (Awaiting, f64)>,
    /// The outbox sends one message at a time, so the server stores them in order.
    in_flight: Option<u64>,
    /// When the server said we may send again after refusing a message as too fast.
    send_paused_until: Option<f64>,
    typing_sent: Option<f64>,
    last_keystroke: f64,
    rooms_fetched_at: f64,
    /// Joins and leaves seen while a join was in flight: its reply's member list may be
    /// older than they are, so they are applied again on top of it.
    presence_during_join: Option<Vec<(bool, String)>>,
    /// Frames produced by a step, flushed by the connection loop.
    outgoing: Vec<String>,
}

fn now() -> f64 {
    js_sys::Date::now()
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// An unsent message as kept in localStorage.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unsent {
    client_id: String,
    author: String,
    text: String,
    ts: i64,
}

fn restore_outbox(store: &ChatStore, room: &str) {
    let saved = storage()
        .and_then(|s| s.get_item(&format!("{OUTBOX_KEY}{room}")).ok().flatten())
        .and_then(|json| serde_json::from_str::<Vec<Unsent>>(&json).ok())
        .unwrap_or_default();
    for unsent in saved {
        let uid = store.next_uid();
        store.lines.update(|lines| {
            lines.push(Line {
                uid,
                ts: unsent.ts,
                kind: LineKind::Message {
                    id: None,
                    client_id: unsent.client_id,
                    author: unsent.author,
                    text: unsent.text,
                    status: Delivery::Pending,
                },
            })
        });
    }
}

fn socket_url() -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!(
        "{scheme}://{}/socket.io/?EIO=4&transport=websocket",
        location.host().ok()?
    ))
}

/// A `join` request, with the session token that proves the name is ours when we have
/// one: a reconnect or a reload then gets the name back even while the server still
/// holds it for us. A token for another name does no harm: the server ignores it.
fn join_payload(name: &str, room: &str) -> Value {
    let mut payload = json!({ "name": name, "room": room });
    if let Some(token) = storage().and_then(|s| s.get_item(SESSION_KEY).ok().flatten()) {
        payload["session"] = json!(token);
    }
    payload
}

fn new_client_id() -> String {
    let random = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
    format!("{:x}-{random:x}", now() as u64)
}

/// Exponential backoff with ±50% jitter, so clients that lost the server together do
/// not all come back in the same instant.
fn backoff_ms(attempt: u32) -> u32 {
    let base = (250.0 * 2f64.powi(attempt.min(10) as i32)).min(MAX_BACKOFF_MS);
    (base * (0.5 + js_sys::Math::random())) as u32
}

async fn run(store: ChatStore, mut actions: UnboundedReceiver<Action>) {
    let mut client = Client::new(store);
    let mut attempt = 0;
    loop {
        store.connection.set(Connection::Connecting);
        match client.session(&mut actions, &mut attempt).await {
            SessionEnd::Stopped => return,
            SessionEnd::Lost(reason) => {
                leptos::logging::log!("banter: connection lost: {reason}");
            }
        }
        store.connection.set(Connection::Offline);
        client.on_disconnected();
        let mut delay = TimeoutFuture::new(backoff_ms(attempt)).fuse();
        attempt += 1;
        loop {
            select! {
                () = delay => break,
                action = actions.next() => match action {
                    Some(action) => client.handle_action(action),
                    None => return,
                },
            }
        }
        client.outgoing.clear();
    }
}

impl Client {
    fn new(store: ChatStore) -> Self {
        let wanted_name = storage().and_then(|s| s.get_item(NAME_KEY).ok().flatten());
        if wanted_name.is_some() {
            store.joining.set(true);
        }
        let room = store.room();
        restore_outbox(&store, &room);
        store.last_read.set(
            storage()
                .and_then(|s| s.get_item(READ_KEY).ok().flatten())
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
        );
        Self {
            room,
            store,
            wanted_name,
            joined: false,
            rejoin_failures: 0,
            rejoin_at: None,
            next_ack: 0,
            awaiting: HashMap::new(),
            in_flight: None,
            send_paused_until: None,
            typing_sent: None,
            last_keystroke: 0.0,
            rooms_fetched_at: 0.0,
            presence_during_join: None,
            outgoing: Vec::new(),
        }
    }

    /// One connection, from handshake until it breaks or the page goes away.
    async fn session(
        &mut self,
        actions: &mut UnboundedReceiver<Action>,
        attempt: &mut u32,
    ) -> SessionEnd {
        let Some(url) = socket_url() else {
            return SessionEnd::Lost("no window location".into());
        };
        let socket = match WebSocket::open(&url) {
            Ok(socket) => socket,
            Err(err) => return SessionEnd::Lost(err.to_string()),
        };
        let (mut sink, stream) = socket.split();
        let mut stream = stream.fuse();

        // Engine.IO open, then the Socket.IO CONNECT for the main namespace.
        let mut handshake = TimeoutFuture::new(HANDSHAKE_TIMEOUT_MS).fuse();
        let mut heartbeat_ms = 45_000;
        loop {
            let frame = select! {
                frame = stream.next() => frame,
                () = handshake => return SessionEnd::Lost("handshake timed out".into()),
            };
            let text = match frame {
                Some(Ok(WsMessage::Text(text))) => text,
                Some(Ok(WsMessage::Bytes(_))) => continue,
                Some(Err(err)) => return SessionEnd::Lost(err.to_string()),
                None => return SessionEnd::Lost("closed during handshake".into()),
            };
            let reply = match decode_engine(&text) {
                Ok(EnginePacket::Open(info)) => {
                    heartbeat_ms = (info.ping_interval + info.ping_timeout) as u32;
                    Some("40".to_owned())
                }
                Ok(EnginePacket::Ping(data)) => Some(encode_engine(&EnginePacket::Pong(data))),
                Ok(EnginePacket::Message(inner)) => match decode_socket(&inner) {
                    Ok(SocketPacket::Connect { .. }) => break,
                    Ok(SocketPacket::ConnectError { data, .. }) => {
                        return SessionEnd::Lost(format!("connection refused: {data}"))
                    }
                    _ => None,
                },
                Ok(EnginePacket::Close) => return SessionEnd::Lost("closed by server".into()),
                _ => None,
            };
            if let Some(reply) = reply {
                if let Err(err) = sink.send(WsMessage::Text(reply)).await {
                    return SessionEnd::Lost(err.to_string());
                }
            }
        }

        *attempt = 0;
        self.store.connection.set(Connection::Online);
        self.on_connected();

        let mut heartbeat = TimeoutFuture::new(heartbeat_ms).fuse();
        let mut ticker = TimeoutFuture::new(1_000).fuse();
        loop {
            for frame in self.outgoing.drain(..) {
                if let Err(err) = sink.send(WsMessage::Text(frame)).await {
                    return SessionEnd::Lost(err.to_string());
                }
            }
            select! {
                frame = stream.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        heartbeat = TimeoutFuture::new(heartbeat_ms).fuse();
                        if let Err(reason) = self.handle_frame(&text) {
                            return SessionEnd::Lost(reason);
                        }
                    }
                    Some(Ok(WsMessage::Bytes(_))) => {}
                    Some(Err(err)) => return SessionEnd::Lost(err.to_string()),
                    None => return SessionEnd::Lost("closed".into()),
                },
                action = actions.next() => match action {
                    Some(action) => self.handle_action(action),
                    None => {
                        let _ = sink.close().await;
                        return SessionEnd::Stopped;
                    }
                },
                () = heartbeat => return SessionEnd::Lost("no heartbeat from the server".into()),
                () = ticker => {
                    ticker = TimeoutFuture::new(1_000).fuse();
                    if let Err(reason) = self.tick() {
                        return SessionEnd::Lost(reason);
                    }
                }
            }
        }
    }

    fn request(&mut self, name: &str, payload: Value, awaiting: Awaiting) {
        if matches!(awaiting, Awaiting::Join { .. }) {
            self.presence_during_join.get_or_insert_with(Vec::new);
        }
        let id = self.next_ack;
        self.next_ack += 1;
        self.awaiting.insert(id, (awaiting, now()));
        self.outgoing.push(encode_frame(&SocketPacket::event(
            name,
            vec![payload],
            Some(id),
        )));
    }

    fn emit(&mut self, name: &str, payload: Value) {
        self.outgoing.push(encode_frame(&SocketPacket::event(
            name,
            vec![payload],
            None,
        )));
    }

    fn on_connected(&mut self) {
        if let Some(name) = self.wanted_name.clone() {
            self.store.joining.set(true);
            self.rejoin(name);
        }
    }

    /// Joins for the page itself, not the user: with `since`, so the reply carries exactly
    /// the messages this page has not seen.
    fn rejoin(&mut self, name: String) {
        let mut payload = join_payload(&name, &self.room);
        if let Some((_, newest)) = self.store.lines.with_untracked(|lines| id_range(lines)) {
            payload["since"] = json!(newest);
        }
        self.request(event::JOIN, payload, Awaiting::Join { automatic: true });
    }

    fn fetch_rooms(&mut self) {
        self.rooms_fetched_at = now();
        self.request(event::ROOMS, json!({}), Awaiting::Rooms);
    }

    /// Records the newest message of this room as read (the page shows it).
    fn mark_read(&self) {
        let Some((_, newest)) = self.store.lines.with_untracked(|lines| id_range(lines)) else {
            return;
        };
        let room = self.room.clone();
        let mut changed = false;
        self.store.last_read.update(|read| {
            let entry = read.entry(room).or_default();
            if *entry < newest {
                *entry = newest;
                changed = true;
            }
        });
        if changed {
            if let Some(storage) = storage() {
                let json = self
                    .store
                    .last_read
                    .with_untracked(|read| serde_json::to_string(read).unwrap_or_default());
                let _ = storage.set_item(READ_KEY, &json);
            }
        }
    }

    /// Keeps this room's unsent messages in localStorage, so a reload resends them.
    fn save_outbox(&self) {
        let unsent: Vec<Unsent> = self.store.lines.with_untracked(|lines| {
            lines
                .iter()
                .filter_map(|line| match &line.kind {
                    LineKind::Message {
                        id: None,
                        client_id,
                        author,
                        text,
                        ..
                    } => Some(Unsent {
                        client_id: client_id.clone(),
                        author: author.clone(),
                        text: text.clone(),
                        ts: line.ts,
                    }),
                    _ => None,
                })
                .collect()
        });
        if let Some(storage) = storage() {
            let key = format!("{OUTBOX_KEY}{}", self.room);
            let _ = if unsent.is_empty() {
                storage.remove_item(&key)
            } else {
                storage.set_item(&key, &serde_json::to_string(&unsent).unwrap_or_default())
            };
        }
    }

    fn on_disconnected(&mut self) {
        // Unanswered messages stay pending and are resent with the same client_id, which
        // the server recognises, so nothing is lost or stored twice.
        self.awaiting.clear();
        self.in_flight = None;
        self.joined = false;
        self.typing_sent = None;
        self.rejoin_at = None;
        self.presence_during_join = None;
        self.store.typing.set(Vec::new());
    }

    fn tick(&mut self) -> Result<(), String> {
        let now = now();
        if self
            .awaiting
            .values()
            .any(|(_, sent)| now - sent > ACK_TIMEOUT_MS)
        {
            return Err("a request went unanswered".into());
        }
        if let Some(until) = self.send_paused_until {
            if now >= until {
                self.send_paused_until = None;
                self.store.throttled.set(None);
                self.pump();
            } else {
                let seconds = ((until - now) / 1_000.0).ceil() as u64;
                self.store.throttled.set(Some(seconds.max(1)));
            }
        }
        if self.rejoin_at.is_some_and(|at| now >= at) {
            self.rejoin_at = None;
            self.on_connected();
        }
        if self.joined && now - self.rooms_fetched_at > ROOMS_REFRESH_MS {
            self.fetch_rooms();
        }
        if self.typing_sent.is_some() && now - self.last_keystroke > TYPING_IDLE_MS {
            self.stop_typing();
        }
        Ok(())
    }

    fn handle_action(&mut self, action: Action) {
        let online = self.store.connection.get_untracked() == Connection::Online;
        let changes_outbox = matches!(action, Action::Send(_) | Action::Discard(_) | Action::Leave);
        self.act(action, online);
        if changes_outbox {
            self.save_outbox();
        }
    }

    fn act(&mut self, action: Action, online: bool) {
        match action {
            Action::Join(name) => {
                self.wanted_name = Some(name.clone());
                self.rejoin_failures = 0;
                self.store.join_error.set(None);
                self.store.joining.set(true);
                if online {
                    self.request(
                        event::JOIN,
                        join_payload(&name, &self.room),
                        Awaiting::Join { automatic: false },
                    );
                }
            }
            Action::Send(text) => {
                let Some(author) = self.store.me.get_untracked() else {
                    return;
                };
                let uid = self.store.next_uid();
                self.store.lines.update(|lines| {
                    lines.push(Line {
                        uid,
                        ts: now() as i64,
                        kind: LineKind::Message {
                            id: None,
                            client_id: new_client_id(),
                            author,
                            text,
                            status: Delivery::Pending,
                        },
                    })
                });
                // The server clears our typing indicator when the message arrives.
                self.typing_sent = None;
                self.pump();
            }
            Action::Retry(uid) => {
                self.set_status(uid, Delivery::Pending);
                self.pump();
            }
            Action::Discard(uid) => {
                self.store
                    .lines
                    .update(|lines| lines.retain(|line| line.uid != uid));
            }
            Action::Typing(true) => {
                self.last_keystroke = now();
                let stale = self
                    .typing_sent
                    .is_none_or(|sent| self.last_keystroke - sent > TYPING_REFRESH_MS);
                if self.joined && online && stale {
                    self.typing_sent = Some(self.last_keystroke);
                    self.emit(event::TYPING, json!({ "room": self.room, "typing": true }));
                }
            }
            Action::Typing(false) => self.stop_typing(),
            Action::LoadOlder => {
                let oldest = self
                    .store
                    .lines
                    .with_untracked(|lines| id_range(lines))
                    .map(|(low, _)| low);
                let busy = self.store.loading_older.get_untracked();
                if let (Some(oldest), true, false, true) = (
                    oldest,
                    self.joined && online,
                    busy,
                    self.store.older_available.get_untracked(),
                ) {
                    self.store.loading_older.set(true);
                    self.request(
                        event::HISTORY,
                        json!({ "room": self.room, "before": oldest, "limit": JOIN_HISTORY }),
                        Awaiting::History,
                    );
                }
            }
            Action::Leave => {
                if self.joined && online {
                    self.request(event::LEAVE, json!({ "room": self.room }), Awaiting::Leave);
                } else {
                    self.forget_membership();
                }
            }
        }
    }

    fn stop_typing(&mut self) {
        if self.typing_sent.take().is_some() && self.joined {
            self.emit(event::TYPING, json!({ "room": self.room, "typing": false }));
        }
    }

    /// Sends the oldest pending message of ours, if none is in flight.
    fn pump(&mut self) {
        if !self.joined || self.in_flight.is_some() || self.send_paused_until.is_some() {
            return;
        }
        let next = self.store.lines.with_untracked(|lines| {
            lines.iter().find_map(|line| match &line.kind {
                LineKind::Message {
                    id: None,
                    status: Delivery::Pending,
                    client_id,
                    text,
                    ..
                } => Some((line.uid, client_id.clone(), text.clone())),
                _ => None,
            })
        });
        if let Some((uid, client_id, text)) = next {
            self.in_flight = Some(uid);
            self.request(
                event::MESSAGE,
                json!({ "room": self.room, "text": text, "client_id": client_id }),
                Awaiting::Send { uid },
            );
        }
    }

    fn set_status(&self, uid: u64, status: Delivery) {
        self.store.lines.update(|lines| {
            for line in lines.iter_mut().filter(|line| line.uid == uid) {
                if let LineKind::Message {
                    status: current, ..
                } = &mut line.kind
                {
                    *current = status.clone();
                }
            }
        });
    }

    fn forget_membership(&mut self) {
        self.wanted_name = None;
        self.joined = false;
        if let Some(storage) = storage() {
            let _ = storage.remove_item(NAME_KEY);
        }
        self.store.me.set(None);
        self.store.joining.set(false);
        self.store.members.set(Vec::new());
        self.store.typing.set(Vec::new());
        self.store.lines.set(Vec::new());
    }

    fn handle_frame(&mut self, text: &str) -> Result<(), String> {
        match decode_engine(text) {
            Ok(EnginePacket::Ping(data)) => {
                self.outgoing.push(encode_engine(&EnginePacket::Pong(data)));
                Ok(())
            }
            Ok(EnginePacket::Close) => Err("closed by server".into()),
            Ok(EnginePacket::Message(inner)) => match decode_socket(&inner) {
                Ok(SocketPacket::Event {
                    event, mut args, ..
                }) => {
                    let payload = if args.is_empty() {
                        Value::Null
                    } else {
                        args.swap_remove(0)
                    };
                    self.handle_event(&event, payload);
                    Ok(())
                }
                Ok(SocketPacket::Ack { id, mut args, .. }) => {
                    let payload = if args.is_empty() {
                        Value::Null
                    } else {
                        args.swap_remove(0)
                    };
                    self.handle_ack(id, payload);
                    Ok(())
                }
                Ok(SocketPacket::Disconnect { .. }) => Err("disconnected by server".into()),
                Ok(_) => Ok(()),
                Err(err) => {
                    leptos::logging::warn!("banter: unreadable packet: {err}");
                    Ok(())
                }
            },
            Ok(_) => Ok(()),
            Err(err) => {
                leptos::logging::warn!("banter: unreadable frame: {err}");
                Ok(())
            }
        }
    }

    fn handle_event(&mut self, name: &str, payload: Value) {
        let room = self.room.clone();
        match name {
            event::MESSAGE => {
                if let Ok(message) = serde_json::from_value::<Message>(payload) {
                    if message.room == room {
                        let author = message.author.clone();
                        self.store
                            .typing
                            .update(|names| names.retain(|n| *n != author));
                        self.store.merge_messages(vec![message]);
                        self.save_outbox();
                        self.mark_read();
                    }
                }
            }
            event::JOINED => {
                if let Ok(notice) = serde_json::from_value::<Presence>(payload) {
                    if notice.room == room {
                        self.apply_presence(true, notice.name.clone());
                        self.store
                            .push_notice(format!("{} joined", notice.name), notice.ts);
                    }
                }
            }
            event::LEFT => {
                if let Ok(notice) = serde_json::from_value::<Presence>(payload) {
                    if notice.room == room {
                        self.apply_presence(false, notice.name.clone());
                        self.store
                            .typing
                            .update(|names| names.retain(|n| *n != notice.name));
                        self.store
                            .push_notice(format!("{} left", notice.name), notice.ts);
                    }
                }
            }
            event::TYPING => {
                if let Ok(notice) = serde_json::from_value::<TypingNotice>(payload) {
                    if notice.room == room {
                        self.store.typing.update(|names| {
                            names.retain(|n| *n != notice.name);
                            if notice.typing {
                                names.push(notice.name);
                            }
                        });
                    }
                }
            }
            event::ERROR => leptos::logging::warn!("banter: server error: {payload}"),
            _ => {}
        }
    }

    fn apply_presence(&mut self, joined: bool, name: String) {
        self.store.members.update(|members| {
            if !joined {
                members.retain(|m| *m != name);
            } else if !members.contains(&name) {
                members.push(name.clone());
            }
        });
        if let Some(log) = &mut self.presence_during_join {
            log.push((joined, name));
        }
    }

    fn handle_ack(&mut self, id: u64, payload: Value) {
        let Some((awaiting, _)) = self.awaiting.remove(&id) else {
            return;
        };
        match awaiting {
            Awaiting::Join { automatic } => {
                self.on_join_reply(decode_reply::<JoinReply>(payload), automatic)
            }
            Awaiting::Send { uid } => {
                self.in_flight = None;
                match decode_reply::<SendReply>(payload) {
                    Ok(reply) => {
                        self.store.merge_messages(vec![reply.message]);
                        self.save_outbox();
                    }
                    Err(error) if error.code == ErrorCode::RateLimited => {
                        // Too fast: the message stays pending, first in line, and the
                        // outbox waits as long as the server asked before resending.
                        let wait = error.retry_after_ms.unwrap_or(1_000).max(100);
                        self.send_paused_until = Some(now() + wait as f64);
                        self.store.throttled.set(Some(wait.div_ceil(1_000).max(1)));
                        return;
                    }
                    Err(error) if error.code == ErrorCode::NotJoined => {
                        // Our membership lapsed (e.g. a server restart): rejoin, then resend.
                        self.joined = false;
                        self.on_connected();
                        return;
                    }
                    Err(error) => self.set_status(uid, Delivery::Failed(error.message)),
                }
                self.pump();
            }
            Awaiting::Leave => {
                self.forget_membership();
                self.save_outbox();
            }
            Awaiting::Rooms => {
                if let Ok(reply) = decode_reply::<RoomsReply>(payload) {
                    self.store.rooms.set(reply.rooms);
                }
            }
            Awaiting::History => {
                self.store.loading_older.set(false);
                match decode_reply::<HistoryReply>(payload) {
                    Ok(reply) => {
                        self.store.older_available.set(reply.more);
                        self.store.merge_messages(reply.messages);
                    }
                    Err(error) => leptos::logging::warn!("banter: history refused: {error}"),
                }
            }
        }
    }

    fn on_join_reply(&mut self, reply: Result<JoinReply, ProtocolError>, automatic: bool) {
        let presence_meanwhile = self.presence_during_join.take().unwrap_or_default();
        match reply {
            Ok(reply) => {
                self.joined = true;
                self.rejoin_failures = 0;
                if let Some(storage) = storage() {
                    let _ = storage.set_item(NAME_KEY, &reply.name);
                    if !reply.session.is_empty() {
                        let _ = storage.set_item(SESSION_KEY, &reply.session);
                    }
                }
                self.store.join_error.set(None);
                self.store.joining.set(false);
                let first_page = self
                    .store
                    .lines
                    .with_untracked(|lines| id_range(lines))
                    .is_none();
                if first_page {
                    // The latest page came back full: older messages may exist.
                    self.store
                        .older_available
                        .set(reply.history.len() >= JOIN_HISTORY as usize);
                }
                self.store.me.set(Some(reply.name.clone()));
                self.store.members.set(reply.members);
                for (joined, name) in presence_meanwhile {
                    self.apply_presence(joined, name);
                }
                self.store.merge_messages(reply.history);
                // History may confirm messages whose ack was lost: they leave the outbox.
                self.save_outbox();
                self.mark_read();
                if reply.truncated {
                    // More than one catch-up page was missed: fetch the next before sending.
                    self.joined = false;
                    self.rejoin(reply.name);
                    return;
                }
                self.fetch_rooms();
                self.pump();
            }
            Err(error)
                if automatic
                    && error.code == ErrorCode::NameTaken
                    && self.rejoin_failures < REJOIN_ATTEMPTS =>
            {
                // Probably our own previous connection, not yet timed out: try again soon.
                self.rejoin_failures += 1;
                self.rejoin_at = Some(now() + 3_000.0);
            }
            Err(error) => {
                self.forget_membership();
                self.store.join_error.set(Some(error.message));
            }
        }
    }
}
