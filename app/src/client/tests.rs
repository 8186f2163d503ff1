//! The chat core against a simulated server, in simulated time.
//!
//! [`Sim`] plays the browser shell (it performs the core's effects: a socket per
//! `Connect`, a storage map, timers by jumping the clock to the next deadline) and the
//! test plays the server, frame by frame. Every test is deterministic and runs in
//! microseconds, however many minutes it simulates.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::chat::{
    keys, Action, Chat, Config, Connection, Effect, ACK_TIMEOUT_MS, MAX_SHOWN_MESSAGES,
};
use super::log::{Delivery, LineKind, MessageLine, TRIM_SLACK};
use crate::codec::{decode_engine, decode_socket, encode_frame, EnginePacket, SocketPacket};
use crate::protocol::{Message, Reaction};

const OPEN: &str =
    r#"0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;
const START: i64 = 1_764_240_000_000;

/// A request the core sent.
#[derive(Debug, Clone)]
struct Req {
    id: Option<u64>,
    event: String,
    payload: Value,
}

struct Sim {
    room: String,
    chat: Chat,
    now: i64,
    storage: BTreeMap<String, String>,
    /// Storage writes, by key.
    writes: BTreeMap<String, usize>,
    conn: Option<u64>,
    /// When each connection was asked for.
    connects: Vec<i64>,
    /// Frames sent on the open connection and not yet taken by the test.
    sent: Vec<Req>,
    connect_frames: Vec<String>,
    /// The server answers `rooms` with this list.
    rooms: Value,
    /// The server answers `watch` with this (none: left to the test).
    watch: Option<Value>,
    /// The server pings every 25 s while connected.
    pinging: bool,
    next_ping: Option<i64>,
    /// When the core last got an input: its timeout is counted from there.
    input_at: i64,
    connected: bool,
    /// Desktop notifications asked for: title, body, tag.
    notified: Vec<(String, String, String)>,
}

fn message(id: u64, author: &str, text: &str) -> Message {
    Message {
        id,
        room: "general".into(),
        author: author.into(),
        text: text.into(),
        ts: START + id as i64,
        client_id: format!("{author}-{id}"),
        ..Message::default()
    }
}

fn ours(id: u64, text: &str, client_id: &str) -> Message {
    Message {
        client_id: client_id.into(),
        ..message(id, "alice", text)
    }
}

fn join_ok(name: &str, members: &[&str], history: &[Message], truncated: bool) -> Value {
    json!({
        "ok": true, "room": "general", "name": name, "members": members,
        "history": history, "truncated": truncated, "session": "token-1",
    })
}

fn sent_ok(message: &Message) -> Value {
    json!({"ok": true, "message": message})
}

fn refused(code: &str, extra: Value) -> Value {
    let mut error = json!({"code": code, "message": format!("refused: {code}")});
    if let (Some(error), Some(extra)) = (error.as_object_mut(), extra.as_object()) {
        error.extend(extra.clone());
    }
    json!({"ok": false, "error": error})
}

impl Sim {
    fn new() -> Sim {
        Sim::with(BTreeMap::new(), START)
    }

    fn with(storage: BTreeMap<String, String>, now: i64) -> Sim {
        Sim::with_config(Config::new("general"), storage, now)
    }

    fn with_config(config: Config, storage: BTreeMap<String, String>, now: i64) -> Sim {
        let room = config.room.clone();
        let chat = Chat::new(config, &|key| storage.get(key).cloned(), now, 7);
        let mut sim = Sim {
            room,
            chat,
            now,
            storage,
            writes: BTreeMap::new(),
            conn: None,
            connects: Vec::new(),
            sent: Vec::new(),
            connect_frames: Vec::new(),
            rooms: json!([]),
            watch: None,
            pinging: true,
            next_ping: None,
            connected: false,
            input_at: now,
            notified: Vec::new(),
        };
        sim.run();
        sim
    }

    /// A page that remembers `name` (a returning visitor), connected and joined.
    fn joined(history: &[Message]) -> Sim {
        let storage = BTreeMap::from([(keys::NAME.to_owned(), "alice".to_owned())]);
        let mut sim = Sim::with(storage, START);
        sim.accept();
        let join = sim.take_one("join");
        sim.ack(&join, join_ok("alice", &["alice", "bob"], history, false));
        sim.take();
        sim
    }

    /// The same browser, reloaded `later` ms from now.
    fn reload(&self, later: i64) -> Sim {
        Sim::with(self.storage.clone(), self.now + later)
    }

    fn run(&mut self) {
        let mut auto = Vec::new();
        while let Some(effect) = self.chat.poll_effect() {
            match effect {
                Effect::Connect { conn } => {
                    assert!(self.conn.is_none(), "a second socket while one is open");
                    self.conn = Some(conn);
                    self.connects.push(self.now);
                    self.sent.clear();
                    self.connected = false;
                    self.next_ping = None;
                }
                Effect::Send { conn, frame } => {
                    assert_eq!(
                        Some(conn),
                        self.conn,
                        "a frame for a socket not open: {frame}"
                    );
                    if frame == "3" {
                        continue;
                    }
                    if frame.starts_with("40") {
                        self.connect_frames.push(frame);
                        continue;
                    }
                    let req = parse(&frame);
                    if req.event == "rooms" && !self.rooms.is_null() {
                        auto.push((req.id.unwrap(), json!({"ok": true, "rooms": self.rooms})));
                    } else if let (true, Some(reply)) = (req.event == "watch", &self.watch) {
                        auto.push((req.id.unwrap(), reply.clone()));
                    }
                    self.sent.push(req);
                }
                Effect::Close { conn } => {
                    if self.conn == Some(conn) {
                        self.conn = None;
                        self.connected = false;
                    }
                }
                Effect::Store { key, value } => {
                    *self.writes.entry(key.clone()).or_default() += 1;
                    match value {
                        Some(value) => self.storage.insert(key, value),
                        None => self.storage.remove(&key),
                    };
                }
                Effect::Log(_) => {}
                Effect::Notify { title, body, tag } => self.notified.push((title, body, tag)),
            }
        }
        for (id, reply) in auto {
            self.sent.retain(|r| r.id != Some(id));
            self.feed(&ack_frame(id, reply));
        }
    }

    fn feed(&mut self, frame: &str) {
        let conn = self.conn.expect("no socket open");
        self.input_at = self.now;
        self.chat.handle_frame(self.now, conn, frame);
        self.run();
    }

    /// The server opens the Engine.IO session and accepts the CONNECT.
    fn accept(&mut self) {
        self.feed(OPEN);
        assert_eq!(
            self.connect_frames.last().map(String::as_str),
            Some(r#"40{"protocol":2}"#)
        );
        self.feed(r#"40{"sid":"s"}"#);
        self.connected = true;
        self.next_ping = Some(self.now + 25_000);
    }

    /// The socket breaks.
    fn break_socket(&mut self) {
        let conn = self.conn.take().expect("no socket open");
        self.connected = false;
        self.input_at = self.now;
        self.chat.handle_closed(self.now, conn, "network gone");
        self.run();
    }

    fn act(&mut self, action: Action) {
        self.input_at = self.now;
        self.chat.handle_action(self.now, action);
        self.run();
    }

    /// Lets `ms` pass, firing every timer when due (and the server's pings).
    fn advance(&mut self, ms: i64) {
        let end = self.now + ms;
        for _ in 0..100_000 {
            let timer = self.chat.poll_timeout().map(|d| self.input_at + d as i64);
            let ping = self.next_ping.filter(|_| self.pinging && self.connected);
            let next = [timer, ping]
                .into_iter()
                .flatten()
                .filter(|at| *at <= end)
                .min();
            let Some(at) = next else {
                self.now = end;
                return;
            };
            self.now = at;
            if ping == Some(at) {
                self.next_ping = Some(at + 25_000);
                self.feed("2");
            } else {
                self.input_at = at;
                self.chat.handle_timeout(at);
                self.run();
            }
        }
        panic!("timers keep firing without time passing");
    }

    /// Sets the wall clock to `now` (it may jump either way), firing what is due.
    fn set_clock(&mut self, now: i64) {
        self.now = now;
        self.input_at = now;
        self.chat.handle_timeout(now);
        self.run();
    }

    fn take(&mut self) -> Vec<Req> {
        std::mem::take(&mut self.sent)
    }

    /// The one request called `event` among those sent (the others are dropped).
    #[track_caller]
    fn take_one(&mut self, event: &str) -> Req {
        let sent = self.take();
        let mut matching: Vec<Req> = sent.iter().filter(|r| r.event == event).cloned().collect();
        assert_eq!(matching.len(), 1, "one `{event}` expected, sent: {sent:?}");
        matching.remove(0)
    }

    fn ack(&mut self, req: &Req, reply: Value) {
        self.feed(&ack_frame(req.id.expect("a request with an ack id"), reply));
    }

    fn push(&mut self, event: &str, payload: Value) {
        self.feed(&encode_frame(&SocketPacket::event(
            event,
            vec![payload],
            None,
        )));
    }

    fn messages(&self) -> Vec<MessageLine> {
        self.chat
            .lines()
            .iter()
            .filter_map(|line| line.message().cloned())
            .collect()
    }

    fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|m| m.text).collect()
    }

    fn ids(&self) -> Vec<Option<u64>> {
        self.messages().into_iter().map(|m| m.id).collect()
    }

    fn status(&self, text: &str) -> Delivery {
        let found: Vec<MessageLine> = self
            .messages()
            .into_iter()
            .filter(|m| m.text == text)
            .collect();
        assert_eq!(found.len(), 1, "one line with {text:?}: {:?}", self.texts());
        found[0].status.clone()
    }

    fn line(&self, id: u64) -> MessageLine {
        self.messages()
            .into_iter()
            .find(|m| m.id == Some(id))
            .unwrap()
    }

    fn uid_of(&self, text: &str) -> u64 {
        self.chat
            .lines()
            .iter()
            .find(|line| matches!(&line.kind, LineKind::Message(m) if m.text == text))
            .unwrap()
            .uid
    }

    fn stored_outbox(&self) -> Vec<Value> {
        self.storage
            .get(&format!("{}{}", keys::OUTBOX, self.room))
            .map(|json| serde_json::from_str(json).unwrap())
            .unwrap_or_default()
    }
}

fn ack_frame(id: u64, reply: Value) -> String {
    encode_frame(&SocketPacket::Ack {
        ns: "/".into(),
        id,
        args: vec![reply],
    })
}

fn parse(frame: &str) -> Req {
    let Ok(EnginePacket::Message(body)) = decode_engine(frame) else {
        panic!("not a message frame: {frame}");
    };
    match decode_socket(&body) {
        Ok(SocketPacket::Event {
            event,
            mut args,
            ack,
            ..
        }) => Req {
            id: ack,
            event,
            payload: args.pop().unwrap_or(Value::Null),
        },
        other => panic!("not an event: {frame}: {other:?}"),
    }
}

// ----- Sending ----------------------------------------------------------------------

#[test]
fn a_message_goes_out_with_its_client_id_and_is_confirmed_in_place() {
    let mut sim = Sim::joined(&[message(1, "bob", "hi")]);
    sim.act(Action::Send("  hello  ".into()));
    assert_eq!(sim.status("hello"), Delivery::Pending);
    let send = sim.take_one("message");
    assert_eq!(send.payload["room"], "general");
    assert_eq!(send.payload["text"], "hello");
    let client_id = send.payload["client_id"].as_str().unwrap().to_owned();
    assert_eq!(sim.stored_outbox()[0]["client_id"], client_id.as_str());
    let uid = sim.uid_of("hello");
    sim.ack(&send, sent_ok(&ours(2, "hello", &client_id)));
    assert_eq!(sim.ids(), vec![Some(1), Some(2)]);
    assert_eq!(sim.status("hello"), Delivery::Delivered);
    assert_eq!(sim.uid_of("hello"), uid, "the row keeps its identity");
    assert!(!sim.storage.contains_key("banter.outbox.general"));
}

#[test]
fn one_change_is_in_flight_at_a_time_in_order() {
    let mut sim = Sim::joined(&[]);
    for text in ["one", "two", "three"] {
        sim.act(Action::Send(text.into()));
    }
    for (id, text) in [(1, "one"), (2, "two"), (3, "three")] {
        let send = sim.take_one("message");
        assert_eq!(send.payload["text"], text);
        assert!(
            sim.take().is_empty(),
            "nothing else goes out before the ack"
        );
        let client_id = send.payload["client_id"].as_str().unwrap().to_owned();
        sim.ack(&send, sent_ok(&ours(id, text, &client_id)));
    }
    assert_eq!(sim.ids(), vec![Some(1), Some(2), Some(3)]);
}

#[test]
fn a_lost_ack_is_resent_unchanged_after_reconnecting_and_stored_once() {
    let mut sim = Sim::joined(&[message(1, "bob", "hi")]);
    sim.act(Action::Send("hello".into()));
    let send = sim.take_one("message");
    // The ack never comes: after the ack timeout the connection counts as broken.
    sim.advance(ACK_TIMEOUT_MS as i64 - 1);
    assert!(sim.conn.is_some());
    sim.advance(1);
    assert!(sim.conn.is_none(), "the silent connection is closed");
    assert_eq!(sim.chat.view().connection, Connection::Offline);
    assert_eq!(sim.status("hello"), Delivery::Pending);
    // Back within a second.
    sim.advance(600);
    assert_eq!(sim.connects.len(), 2);
    sim.accept();
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 1);
    assert_eq!(join.payload["resume"], true);
    assert_eq!(join.payload["session"], "token-1");
    sim.ack(&join, join_ok("alice", &["alice", "bob"], &[], false));
    let resend = sim.take_one("message");
    assert_eq!(
        resend.payload, send.payload,
        "the same request, client_id and all"
    );
    // The server recognises the resend and returns the message it stored before.
    let client_id = send.payload["client_id"].as_str().unwrap();
    sim.ack(&resend, sent_ok(&ours(2, "hello", client_id)));
    assert_eq!(sim.ids(), vec![Some(1), Some(2)]);
    assert_eq!(sim.status("hello"), Delivery::Delivered);
    assert!(sim.chat.outbox().is_empty());
}

#[test]
fn a_message_whose_ack_was_lost_is_confirmed_by_the_catch_up() {
    let mut sim = Sim::joined(&[message(1, "bob", "hi")]);
    sim.act(Action::Send("first".into()));
    sim.act(Action::Send("second".into()));
    let send = sim.take_one("message");
    let first_id = send.payload["client_id"].as_str().unwrap().to_owned();
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    // It had been stored (id 2) before the connection broke, and bob wrote after it.
    let history = [ours(2, "first", &first_id), message(3, "bob", "after")];
    sim.ack(&join, join_ok("alice", &["alice", "bob"], &history, false));
    // Only the second one is sent: the first is known to be stored.
    let next = sim.take_one("message");
    assert_eq!(next.payload["text"], "second");
    assert_eq!(sim.texts(), vec!["hi", "first", "after", "second"]);
    assert_eq!(sim.chat.outbox().len(), 1);
}

#[test]
fn the_outbox_keeps_its_order_across_a_reload() {
    let mut sim = Sim::joined(&[message(1, "bob", "hi")]);
    sim.break_socket();
    for text in ["one", "two", "three"] {
        sim.act(Action::Send(text.into()));
    }
    // Reconnect attempts fail meanwhile (the socket never opens).
    sim.advance(600);
    sim.break_socket();
    assert!(sim.take().is_empty(), "nothing is sent while offline");
    let stored: Vec<Value> = sim.stored_outbox();
    let texts: Vec<&str> = stored.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    // Written once per change of the outbox, not per frame or timer.
    assert_eq!(sim.writes["banter.outbox.general"], 3);

    let mut page = sim.reload(5_000);
    assert_eq!(page.texts(), vec!["one", "two", "three"]);
    assert!(page
        .messages()
        .iter()
        .all(|m| m.status == Delivery::Pending && m.author == "alice"));
    page.accept();
    let join = page.take_one("join");
    assert_eq!(
        join.payload.get("since"),
        None,
        "a reloaded page holds no message yet"
    );
    assert_eq!(join.payload.get("resume"), None);
    page.ack(
        &join,
        join_ok("alice", &["alice"], &[message(1, "bob", "hi")], false),
    );
    for (id, (text, item)) in ["one", "two", "three"].iter().zip(&stored).enumerate() {
        let send = page.take_one("message");
        assert_eq!(send.payload["text"], *text);
        assert_eq!(
            send.payload["client_id"], item["client_id"],
            "the original client_id"
        );
        page.ack(
            &send,
            sent_ok(&ours(
                id as u64 + 2,
                text,
                item["client_id"].as_str().unwrap(),
            )),
        );
    }
    assert_eq!(page.ids(), [1, 2, 3, 4].map(Some));
    assert!(page.stored_outbox().is_empty());
}

#[test]
fn an_outbox_saved_by_the_earlier_page_still_goes_out() {
    let storage = BTreeMap::from([
        (keys::NAME.to_owned(), "alice".to_owned()),
        (
            "banter.outbox.general".to_owned(),
            r#"[{"client_id":"old-1","author":"alice","text":"from before","ts":5}]"#.to_owned(),
        ),
    ]);
    let mut sim = Sim::with(storage, START);
    sim.accept();
    let join = sim.take_one("join");
    sim.ack(&join, join_ok("alice", &["alice"], &[], false));
    let send = sim.take_one("message");
    assert_eq!(send.payload["client_id"], "old-1");
}

#[test]
fn rate_limits_wait_exactly_as_long_as_told_then_resend_the_same_item_first() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Send("one".into()));
    sim.act(Action::Send("two".into()));
    let first = sim.take_one("message");
    sim.ack(
        &first,
        refused("rate_limited", json!({"retry_after_ms": 1_500})),
    );
    assert_eq!(sim.chat.view().throttled, Some(2));
    assert_eq!(
        sim.status("one"),
        Delivery::Pending,
        "throttled, not failed"
    );
    sim.advance(1_499);
    assert!(
        sim.take().is_empty(),
        "nothing goes out before the wait is over"
    );
    assert_eq!(sim.chat.view().throttled, Some(1));
    sim.advance(1);
    let again = sim.take_one("message");
    assert_eq!(
        again.payload, first.payload,
        "the refused item goes again first"
    );
    assert_eq!(sim.chat.view().throttled, None);
    let client_id = first.payload["client_id"].as_str().unwrap();
    sim.ack(&again, sent_ok(&ours(1, "one", client_id)));
    assert_eq!(sim.take_one("message").payload["text"], "two");
}

#[test]
fn unavailable_keeps_the_item_and_tries_again() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Send("one".into()));
    let first = sim.take_one("message");
    sim.ack(&first, refused("unavailable", json!({})));
    assert_eq!(sim.status("one"), Delivery::Pending);
    assert_eq!(sim.chat.view().throttled, None, "not the person's fault");
    sim.advance(1_000);
    assert_eq!(sim.take_one("message").payload, first.payload);
}

#[test]
fn a_refused_message_waits_for_retry_or_discard_and_the_rest_goes_on() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Send("bad".into()));
    sim.act(Action::Send("good".into()));
    let bad = sim.take_one("message");
    sim.ack(&bad, refused("too_long", json!({})));
    assert_eq!(
        sim.status("bad"),
        Delivery::Failed("refused: too_long".into())
    );
    let good = sim.take_one("message");
    assert_eq!(good.payload["text"], "good");
    let good_id = good.payload["client_id"].as_str().unwrap().to_owned();
    sim.ack(&good, sent_ok(&ours(1, "good", &good_id)));
    sim.act(Action::Retry(sim.uid_of("bad")));
    let again = sim.take_one("message");
    assert_eq!(again.payload, bad.payload);
    assert_eq!(sim.status("bad"), Delivery::Pending);
    sim.ack(&again, refused("too_long", json!({})));
    sim.act(Action::Discard(sim.uid_of("bad")));
    assert_eq!(sim.texts(), vec!["good"]);
    assert!(sim.chat.outbox().is_empty());
    assert!(sim.stored_outbox().is_empty());
}

#[test]
fn not_joined_rejoins_then_resends() {
    let mut sim = Sim::joined(&[message(4, "bob", "hi")]);
    sim.act(Action::Send("hello".into()));
    let send = sim.take_one("message");
    sim.ack(&send, refused("not_joined", json!({})));
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 4);
    sim.ack(&join, join_ok("alice", &["alice"], &[], false));
    assert_eq!(sim.take_one("message").payload, send.payload);
}

// ----- Edits, deletes, reactions ----------------------------------------------------

#[test]
fn edits_deletes_and_reactions_made_offline_go_out_in_order_once_back() {
    let mut sim = Sim::joined(&[
        ours(1, "tpyo", "a-1"),
        ours(2, "oops", "a-2"),
        message(3, "bob", "nice"),
    ]);
    sim.break_socket();
    sim.act(Action::Edit {
        id: 1,
        text: "typo".into(),
    });
    sim.act(Action::Delete(2));
    sim.act(Action::React {
        id: 3,
        emoji: "👍".into(),
        add: true,
    });
    sim.act(Action::Send("back soon".into()));
    // Shown applied, and pending.
    assert_eq!(sim.line(1).text, "typo");
    assert_eq!(sim.line(1).status, Delivery::Pending);
    assert!(sim.line(2).deleted, "a placeholder");
    assert_eq!(
        sim.line(3).reactions,
        vec![Reaction {
            emoji: "👍".into(),
            names: vec!["alice".into()]
        }]
    );
    let kinds: Vec<Value> = sim
        .stored_outbox()
        .iter()
        .map(|i| i["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![json!("edit"), json!("delete"), json!("react"), Value::Null]
    );

    // A reload keeps them too.
    let mut page = sim.reload(1_000);
    page.accept();
    let join = page.take_one("join");
    let history = [
        ours(1, "tpyo", "a-1"),
        ours(2, "oops", "a-2"),
        message(3, "bob", "nice"),
    ];
    page.ack(&join, join_ok("alice", &["alice", "bob"], &history, false));
    assert_eq!(
        page.line(1).text,
        "typo",
        "pending changes apply to the fresh history too"
    );

    let edit = page.take_one("edit");
    assert_eq!(edit.payload["id"], 1);
    assert_eq!(edit.payload["text"], "typo");
    let edited = Message {
        text: "typo".into(),
        rev: 4,
        edited_ts: Some(START),
        ..ours(1, "tpyo", "a-1")
    };
    page.ack(&edit, sent_ok(&edited));
    assert_eq!(page.line(1).status, Delivery::Delivered);

    let delete = page.take_one("delete");
    assert_eq!(delete.payload["id"], 2);
    let deleted = Message {
        text: String::new(),
        deleted: true,
        rev: 5,
        ..ours(2, "oops", "a-2")
    };
    page.ack(&delete, sent_ok(&deleted));

    let react = page.take_one("react");
    assert_eq!(
        (
            react.payload["emoji"].as_str(),
            react.payload["add"].as_bool()
        ),
        (Some("👍"), Some(true))
    );
    // Its ack is lost: after reconnecting, the same change goes again, once.
    page.break_socket();
    page.advance(1_000);
    page.accept();
    let join = page.take_one("join");
    // The acks' versions do not count as held: those changes are resent if lost.
    assert_eq!(join.payload["since"], 3);
    page.ack(&join, join_ok("alice", &["alice", "bob"], &[], false));
    let again = page.take_one("react");
    assert_eq!(again.payload, react.payload);
    let reacted = Message {
        rev: 6,
        reactions: vec![Reaction {
            emoji: "👍".into(),
            names: vec!["alice".into()],
        }],
        ..message(3, "bob", "nice")
    };
    page.ack(&again, sent_ok(&reacted));
    assert_eq!(page.take_one("message").payload["text"], "back soon");
    assert!(page
        .messages()
        .iter()
        .filter(|m| m.id.is_some())
        .all(|m| m.status == Delivery::Delivered));
    assert_eq!(page.line(3).reactions.len(), 1);
}

#[test]
fn a_refused_edit_shows_the_servers_text_with_the_reason() {
    let mut sim = Sim::joined(&[ours(1, "mine", "a-1")]);
    sim.act(Action::Edit {
        id: 1,
        text: "changed".into(),
    });
    let edit = sim.take_one("edit");
    sim.ack(&edit, refused("limit_reached", json!({})));
    assert_eq!(sim.line(1).text, "mine");
    assert_eq!(
        sim.line(1).status,
        Delivery::Failed("refused: limit_reached".into())
    );
    sim.act(Action::Discard(sim.uid_of("mine")));
    assert_eq!(sim.line(1).status, Delivery::Delivered);
    // Someone else's message cannot be edited or deleted from here.
    sim.push("message", json!(message(2, "bob", "his")));
    sim.act(Action::Edit {
        id: 2,
        text: "mine now".into(),
    });
    sim.act(Action::Delete(2));
    assert!(sim.take().is_empty());
}

#[test]
fn a_reply_carries_reply_to_and_quotes_the_original() {
    let mut sim = Sim::joined(&[message(1, "bob", "lunch?\nat noon")]);
    sim.act(Action::Reply {
        to: 1,
        text: "sure".into(),
    });
    let send = sim.take_one("message");
    assert_eq!(send.payload["reply_to"], 1);
    let quote = sim.messages()[1].reply_to.clone().unwrap();
    assert_eq!(
        (quote.author.as_str(), quote.excerpt.as_str()),
        ("bob", "lunch?…")
    );
}

// ----- Joining and catching up ------------------------------------------------------

#[test]
fn a_rejoin_that_races_a_live_message_shows_each_message_once() {
    let mut sim = Sim::joined(&[message(1, "bob", "a"), message(2, "bob", "b")]);
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 2);
    // The socket is in the room before the reply: 4 arrives live, then the reply
    // carries 3 and 4.
    sim.push("message", json!(message(4, "carol", "d")));
    let history = [message(3, "bob", "c"), message(4, "carol", "d")];
    sim.ack(
        &join,
        join_ok("alice", &["alice", "bob", "carol"], &history, false),
    );
    assert_eq!(sim.ids(), [1, 2, 3, 4].map(Some));
    assert_eq!(sim.chat.since(), Some(4));
    sim.push("message", json!(message(5, "bob", "e")));
    assert_eq!(sim.chat.since(), Some(5));
}

#[test]
fn a_truncated_catch_up_pages_from_its_own_ids_while_live_messages_arrive() {
    let mut sim = Sim::joined(&[message(10, "bob", "ten")]);
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 10);
    let page = |ids: std::ops::RangeInclusive<u64>| -> Vec<Message> {
        ids.map(|id| message(id, "bob", &format!("m{id}")))
            .collect()
    };
    // A live message far ahead arrives before the first page.
    sim.push("message", json!(message(40, "carol", "live")));
    sim.ack(&join, join_ok("alice", &["alice"], &page(11..=15), true));
    let next = sim.take_one("join");
    assert_eq!(
        next.payload["since"], 15,
        "paged from the page, not from the live 40"
    );
    assert!(sim.take().is_empty(), "nothing is sent during the catch-up");
    assert_eq!(sim.chat.since(), Some(15));
    // The connection breaks mid catch-up: the next rejoin starts from the last page.
    sim.act(Action::Send("wait for it".into()));
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 15);
    sim.push("message", json!(message(41, "carol", "live 2")));
    sim.ack(&join, join_ok("alice", &["alice"], &page(16..=20), true));
    let next = sim.take_one("join");
    assert_eq!(next.payload["since"], 20);
    sim.ack(&next, join_ok("alice", &["alice"], &page(21..=39), false));
    // Caught up: the live messages now count, and the outbox goes.
    assert_eq!(sim.chat.since(), Some(41));
    assert_eq!(sim.take_one("message").payload["text"], "wait for it");
    let ids: Vec<u64> = sim.ids().into_iter().flatten().collect();
    let expected: Vec<u64> = (10..=41).collect();
    assert_eq!(ids, expected, "no gap, no duplicate");
}

#[test]
fn updates_replace_by_rev_and_reset_starts_the_room_over() {
    let mut sim = Sim::joined(&[message(1, "bob", "one"), message(2, "bob", "two")]);
    sim.break_socket();
    sim.act(Action::Send("pending".into()));
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    let mut reply = join_ok("alice", &["alice"], &[message(5, "bob", "five")], false);
    let edited = Message {
        text: "one!".into(),
        rev: 4,
        edited_ts: Some(START),
        ..message(1, "bob", "one")
    };
    let deleted = Message {
        text: String::new(),
        deleted: true,
        rev: 3,
        ..message(2, "bob", "two")
    };
    let unheld = Message {
        text: "old".into(),
        rev: 6,
        ..message(0, "bob", "zero")
    };
    reply["updates"] = json!([deleted, edited, unheld]);
    sim.ack(&join, reply);
    assert_eq!(sim.line(1).text, "one!");
    assert!(sim.line(2).deleted);
    assert_eq!(
        sim.ids(),
        vec![Some(1), Some(2), Some(5), None],
        "changes to messages not held are dropped"
    );
    assert_eq!(sim.chat.since(), Some(6));
    // A late copy of an older version changes nothing.
    sim.push(
        "updated",
        json!(Message {
            rev: 3,
            text: "one?".into(),
            ..message(1, "bob", "one")
        }),
    );
    assert_eq!(sim.line(1).text, "one!");

    let send = sim.take_one("message");
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    assert_eq!(join.payload["since"], 6);
    let mut reply = join_ok("alice", &["alice"], &[message(900, "bob", "latest")], false);
    reply["reset"] = json!(true);
    sim.ack(&join, reply);
    assert_eq!(
        sim.texts(),
        vec!["latest", "pending"],
        "what was held is gone; ours stays"
    );
    assert_eq!(sim.chat.since(), Some(900));
    assert_eq!(sim.take_one("message").payload, send.payload);
}

#[test]
fn a_name_still_held_by_the_old_connection_is_retried_then_given_up() {
    let mut sim = Sim::joined(&[]);
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    for _ in 0..super::chat::REJOIN_ATTEMPTS {
        let join = sim.take_one("join");
        sim.ack(&join, refused("name_taken", json!({})));
        assert_eq!(
            sim.chat.view().me.as_deref(),
            Some("alice"),
            "still in the room meanwhile"
        );
        sim.advance(super::chat::REJOIN_DELAY_MS as i64);
    }
    let join = sim.take_one("join");
    sim.ack(&join, refused("name_taken", json!({})));
    assert_eq!(sim.chat.view().me, None);
    assert_eq!(
        sim.chat.view().join_error.as_deref(),
        Some("refused: name_taken")
    );
    assert!(!sim.storage.contains_key(keys::NAME));
}

#[test]
fn a_manual_join_stores_the_name_and_the_session_token() {
    let mut sim = Sim::new();
    assert!(!sim.chat.view().joining);
    sim.accept();
    assert!(sim.take().is_empty(), "no name yet: nothing to join");
    sim.act(Action::Join("alice".into()));
    assert!(sim.chat.view().joining);
    let join = sim.take_one("join");
    assert_eq!(join.payload, json!({"name": "alice", "room": "general"}));
    sim.ack(&join, join_ok("alice", &["alice"], &[], false));
    assert_eq!(sim.storage[keys::NAME], "alice");
    assert_eq!(sim.storage[keys::SESSION], "token-1");
    assert!(!sim.chat.view().joining);
    // Leaving forgets the name and the outbox.
    sim.act(Action::Send("bye".into()));
    sim.take();
    sim.act(Action::Leave);
    let leave = sim.take_one("leave");
    sim.ack(&leave, json!({"ok": true}));
    assert_eq!(sim.chat.view().me, None);
    assert!(!sim.storage.contains_key(keys::NAME));
    assert!(sim.stored_outbox().is_empty());
}

// ----- Time, heartbeat, reconnecting ------------------------------------------------

#[test]
fn heartbeat_loss_reconnects_within_a_second() {
    // Idle (no name yet, so no requests): the heartbeat alone notices the silence.
    let mut sim = Sim::new();
    sim.accept();
    sim.pinging = false;
    sim.advance(44_000);
    assert!(sim.conn.is_some());
    sim.advance(1_100);
    assert!(
        sim.conn.is_none(),
        "no frame for pingInterval + pingTimeout"
    );
    let lost = sim.now;
    sim.advance(1_000);
    assert_eq!(sim.connects.len(), 2);
    assert!(sim.connects[1] - lost <= 600);

    // Joined, a silent server is noticed sooner: the room list refresh goes unanswered.
    let mut sim = Sim::joined(&[]);
    sim.pinging = false;
    sim.rooms = Value::Null;
    sim.advance(20_000);
    assert!(
        sim.conn.is_none(),
        "an unanswered request breaks the connection"
    );
}

#[test]
fn reconnecting_retries_about_every_second_then_backs_off_and_retry_now_skips_the_wait() {
    let mut sim = Sim::joined(&[]);
    sim.break_socket();
    let lost = sim.now;
    // Attempts fail at once (server down).
    while sim.now - lost < 120_000 {
        sim.advance(50);
        if sim.conn.is_some() {
            sim.break_socket();
        }
    }
    let attempts: Vec<i64> = sim.connects[1..].iter().map(|at| at - lost).collect();
    assert!(attempts[0] <= 600, "a quick first retry: {attempts:?}");
    let gaps: Vec<i64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (at, gap) in attempts[1..].iter().zip(&gaps) {
        if *at < 30_000 {
            assert!(
                (450..=1_050).contains(gap),
                "about once a second early on: {attempts:?}"
            );
        }
        assert!(*gap <= 15_050, "never more than 15 s apart: {attempts:?}");
    }
    assert!(
        gaps.last().unwrap() >= &1_000,
        "backing off after 30 s: {gaps:?}"
    );
    let waiting = sim.chat.view().reconnect_in;
    assert!(waiting.is_some());
    let before = sim.connects.len();
    sim.act(Action::RetryNow);
    assert_eq!(sim.connects.len(), before + 1, "retry now");
    sim.accept();
    assert_eq!(sim.chat.view().connection, Connection::Online);
    assert_eq!(sim.chat.view().reconnect_in, None);
}

#[test]
fn a_refused_connect_backs_off_longer() {
    let mut sim = Sim::new();
    sim.feed(OPEN);
    sim.feed(r#"44{"message":"the server is full"}"#);
    assert!(sim.conn.is_none());
    let refused_at = sim.now;
    sim.advance(900);
    assert_eq!(
        sim.connects.len(),
        1,
        "not back within a second after a refusal"
    );
    sim.advance(2_000);
    assert_eq!(sim.connects.len(), 2);
    assert!(sim.connects[1] - refused_at >= 1_000);
}

#[test]
fn clock_jumps_break_no_timer_and_cause_no_burst() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Send("one".into()));
    let first = sim.take_one("message");
    sim.ack(
        &first,
        refused("rate_limited", json!({"retry_after_ms": 2_000})),
    );
    sim.act(Action::Send("two".into()));
    sim.act(Action::Send("three".into()));
    // The clock goes back an hour: no time has passed for the core.
    sim.set_clock(sim.now - 3_600_000);
    assert!(sim.take().is_empty());
    assert!(sim.conn.is_some());
    // Time then passes normally from the new reading: the wait ends 2 s after it began.
    sim.advance(1_999);
    assert!(sim.take().is_empty());
    sim.advance(1);
    let again = sim.take_one("message");
    assert_eq!(again.payload, first.payload);
    // Now the clock leaps a day ahead: timers fire once each, and still one change at a
    // time goes out (the heartbeat counts the leap as silence and reconnects once).
    sim.act(Action::Typing(true));
    sim.take();
    sim.set_clock(sim.now + 86_400_000);
    let sent = sim.take();
    assert!(
        sent.iter().filter(|r| r.event == "message").count() <= 1,
        "{sent:?}"
    );
    assert!(
        sent.iter().filter(|r| r.event == "typing").count() <= 1,
        "{sent:?}"
    );
    assert!(sim.connects.len() <= 2);
    sim.advance(1_000);
    assert_eq!(
        sim.connects.len(),
        2,
        "one reconnect, not one per missed second"
    );
    sim.accept();
    let join = sim.take_one("join");
    sim.ack(&join, join_ok("alice", &["alice"], &[], false));
    let sends: Vec<Req> = sim
        .take()
        .into_iter()
        .filter(|r| r.event == "message")
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].payload, first.payload, "still in order");
}

// ----- Presence and typing ----------------------------------------------------------

#[test]
fn presence_batches_and_single_notices_both_apply() {
    let mut sim = Sim::joined(&[]);
    assert_eq!(sim.chat.view().members, vec!["alice", "bob"]);
    sim.push("presence", json!({"room": "general", "joined": ["carol"], "returned": ["dave"], "left": ["bob"], "online": 3, "ts": START}));
    assert_eq!(sim.chat.view().members, vec!["alice", "carol", "dave"]);
    assert_eq!(sim.chat.view().online, 3);
    let notices: Vec<String> = sim
        .chat
        .lines()
        .iter()
        .filter_map(|l| match &l.kind {
            LineKind::Notice(text) => Some(text.clone()),
            LineKind::Message(_) => None,
        })
        .collect();
    assert_eq!(
        notices,
        vec!["bob left", "carol joined"],
        "a return is not announced"
    );
    sim.push(
        "joined",
        json!({"room": "general", "name": "erin", "ts": START}),
    );
    sim.push(
        "left",
        json!({"room": "general", "name": "carol", "ts": START}),
    );
    sim.push(
        "joined",
        json!({"room": "other", "name": "zed", "ts": START}),
    );
    assert_eq!(sim.chat.view().members, vec!["alice", "dave", "erin"]);
}

#[test]
fn arrivals_counted_but_not_named_are_announced_as_a_number() {
    let mut sim = Sim::joined(&[]);
    let notices = |sim: &Sim| -> Vec<String> {
        sim.chat
            .lines()
            .iter()
            .filter_map(|l| match &l.kind {
                LineKind::Notice(text) => Some(text.clone()),
                LineKind::Message(_) => None,
            })
            .collect()
    };
    sim.push("presence", json!({"room": "general", "joined": ["carol"], "more_joined": 950, "returned": ["dave"], "more_returned": 3, "online": 957, "ts": START}));
    assert_eq!(
        sim.chat.view().members,
        vec!["alice", "bob", "carol", "dave"]
    );
    assert_eq!(sim.chat.view().online, 957, "the count is the server's");
    assert_eq!(
        notices(&sim),
        vec!["carol joined", "950 more people joined"]
    );
    sim.push(
        "presence",
        json!({"room": "general", "more_joined": 1, "online": 958, "ts": START}),
    );
    assert_eq!(sim.chat.view().online, 958);
    assert_eq!(
        notices(&sim).last().map(String::as_str),
        Some("1 more person joined")
    );
}

#[test]
fn ones_own_join_in_a_presence_batch_is_not_announced() {
    let mut sim = Sim::joined(&[message(1, "bob", "hi")]);
    sim.push(
        "presence",
        json!({"room": "general", "joined": ["alice"], "online": 2, "ts": START}),
    );
    sim.push(
        "left",
        json!({"room": "general", "name": "alice", "ts": START}),
    );
    assert_eq!(sim.chat.lines().len(), 1, "no notice about oneself");
    assert_eq!(sim.chat.view().members, vec!["alice", "bob"]);
}

#[test]
fn joins_and_departures_that_race_a_join_are_applied_on_top_of_its_reply() {
    let mut sim = Sim::joined(&[]);
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let join = sim.take_one("join");
    // While the join is on its way: carol arrives, bob leaves, and erin comes and goes.
    sim.push(
        "joined",
        json!({"room": "general", "name": "carol", "ts": START}),
    );
    sim.push(
        "presence",
        json!({"room": "general", "left": ["bob"], "online": 2, "ts": START}),
    );
    sim.push(
        "joined",
        json!({"room": "general", "name": "erin", "ts": START}),
    );
    sim.push(
        "left",
        json!({"room": "general", "name": "erin", "ts": START}),
    );
    // The reply's list was read before all of that.
    sim.ack(
        &join,
        join_ok("alice", &["alice", "bob", "erin"], &[], false),
    );
    assert_eq!(sim.chat.view().members, vec!["alice", "carol"]);
    // A departure after the reply applies as usual.
    sim.push(
        "left",
        json!({"room": "general", "name": "carol", "ts": START}),
    );
    assert_eq!(sim.chat.view().members, vec!["alice"]);
}

#[test]
fn typing_is_sent_refreshed_and_stopped_and_others_expire() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Typing(true));
    assert_eq!(
        sim.take_one("typing").payload,
        json!({"room": "general", "typing": true})
    );
    sim.advance(1_000);
    sim.act(Action::Typing(true));
    assert!(sim.take().is_empty(), "refreshed at most every 2 s");
    sim.advance(1_000);
    sim.act(Action::Typing(true));
    assert_eq!(sim.take_one("typing").payload["typing"], true);
    sim.advance(3_000);
    assert_eq!(
        sim.take_one("typing").payload["typing"],
        false,
        "idle for 3 s"
    );

    sim.push(
        "typing",
        json!({"room": "general", "name": "bob", "typing": true}),
    );
    assert_eq!(
        super::chat::typing_text(&sim.chat.view().typing).unwrap(),
        "bob is typing…"
    );
    sim.push("message", json!(message(1, "bob", "done")));
    assert!(sim.chat.view().typing.is_empty(), "a message ends it");
    sim.push(
        "typing",
        json!({"room": "general", "name": "bob", "typing": true}),
    );
    sim.advance(6_000);
    assert!(
        sim.chat.view().typing.is_empty(),
        "dropped if the stop never comes"
    );
}

// ----- History, around, gaps --------------------------------------------------------

#[test]
fn older_history_pages_in_by_before() {
    let history: Vec<Message> = (51..=100).map(|id| message(id, "bob", "x")).collect();
    let mut sim = Sim::joined(&history);
    assert!(sim.chat.view().older_available);
    sim.act(Action::LoadOlder);
    assert!(sim.chat.view().loading_older);
    let request = sim.take_one("history");
    assert_eq!(
        request.payload,
        json!({"room": "general", "before": 51, "limit": 50})
    );
    sim.act(Action::LoadOlder);
    assert!(sim.take().is_empty(), "one page at a time");
    let older: Vec<Message> = (1..=50).map(|id| message(id, "bob", "x")).collect();
    sim.ack(
        &request,
        json!({"ok": true, "messages": older, "more": false}),
    );
    assert!(!sim.chat.view().older_available);
    assert_eq!(sim.ids().len(), 100);
}

#[test]
fn a_busy_room_keeps_the_page_light_and_pages_the_rest_back_in() {
    let history: Vec<Message> = (1..=50).map(|id| message(id, "bob", "x")).collect();
    let mut sim = Sim::joined(&history);
    sim.act(Action::Send("mine, not yet sent".into()));
    sim.take(); // in flight, unacknowledged
    let bound = MAX_SHOWN_MESSAGES + TRIM_SLACK;
    for id in 51..=(bound as u64 + 1) {
        sim.push("message", json!(message(id, "bob", &format!("m{id}"))));
    }
    let ids: Vec<u64> = sim.ids().into_iter().flatten().collect();
    assert_eq!(ids.len(), MAX_SHOWN_MESSAGES, "cut back to the bound");
    assert_eq!(ids.last(), Some(&(bound as u64 + 1)), "the newest stay");
    assert!(
        ids.windows(2).all(|w| w[0] + 1 == w[1]),
        "one run, in order"
    );
    assert_eq!(
        sim.texts().last().map(String::as_str),
        Some("mine, not yet sent"),
        "pending lines are never cut"
    );
    assert!(
        sim.chat.view().older_available,
        "what left can be paged back in"
    );
    sim.push("message", json!(message(bound as u64 + 2, "bob", "next")));
    assert_eq!(
        sim.ids().into_iter().flatten().count(),
        MAX_SHOWN_MESSAGES + 1,
        "no cut at every message: the slack"
    );
}

#[test]
fn around_opens_a_run_with_gaps_that_fill_in() {
    let history: Vec<Message> = (951..=1000).map(|id| message(id, "bob", "x")).collect();
    let mut sim = Sim::joined(&history);
    sim.act(Action::LoadAround(980));
    assert_eq!(sim.chat.view().focus, Some(980), "held: just scroll there");
    sim.act(Action::LoadAround(500));
    let request = sim.take_one("history");
    assert_eq!(
        request.payload,
        json!({"room": "general", "around": 500, "limit": 50})
    );
    let around: Vec<Message> = (475..=524).map(|id| message(id, "bob", "x")).collect();
    sim.ack(
        &request,
        json!({"ok": true, "messages": around, "more": true, "newer": true}),
    );
    assert_eq!(sim.chat.view().focus, Some(500));
    assert!(sim.line(951).gap_before, "between 524 and 951");
    assert!(sim.chat.view().older_available);
    // Fill the gap from above, page by page, until it meets the run.
    sim.act(Action::FillGap(951));
    let fill = sim.take_one("history");
    assert_eq!(fill.payload["before"], 951);
    let page: Vec<Message> = (901..=950).map(|id| message(id, "bob", "x")).collect();
    sim.ack(&fill, json!({"ok": true, "messages": page, "more": true}));
    assert!(!sim.line(951).gap_before);
    assert!(sim.line(901).gap_before, "the gap moved down");
    sim.act(Action::FillGap(901));
    let fill = sim.take_one("history");
    let page: Vec<Message> = (500..=900)
        .rev()
        .take(50)
        .map(|id| message(id, "bob", "x"))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    sim.ack(&fill, json!({"ok": true, "messages": page, "more": true}));
    assert!(sim.line(851).gap_before);
    // A last page that reaches into the run closes the gap.
    sim.act(Action::FillGap(851));
    let fill = sim.take_one("history");
    let page: Vec<Message> = (520..=850).map(|id| message(id, "bob", "x")).collect();
    sim.ack(&fill, json!({"ok": true, "messages": page, "more": true}));
    assert!(sim.messages().iter().all(|m| !m.gap_before), "no gap left");
    let ids: Vec<u64> = sim.ids().into_iter().flatten().collect();
    assert_eq!(ids, (475..=1000).collect::<Vec<_>>());
}

// ----- Rooms, unread counts, watch --------------------------------------------------

fn room(name: &str, online: usize, last_id: u64) -> Value {
    json!({"name": name, "online": online, "last_id": last_id, "last_ts": START})
}

#[test]
fn unread_counts_cover_only_joined_rooms_and_come_from_watch_and_activity() {
    let storage = BTreeMap::from([
        (keys::NAME.to_owned(), "alice".to_owned()),
        (
            keys::ROOMS.to_owned(),
            r#"[{"room":"dev","read":10},{"room":"general","read":0}]"#.to_owned(),
        ),
    ]);
    let mut sim = Sim::with(storage, START);
    sim.rooms = json!([
        room("general", 2, 3),
        room("dev", 1, 15),
        room("random", 4, 99)
    ]);
    sim.watch = Some(json!({"ok": true, "rooms": [
        {"room": "dev", "last_id": 15, "last_ts": START, "online": 1, "unread": 4, "mentions": 1}
    ]}));
    sim.accept();
    let join = sim.take_one("join");
    sim.ack(
        &join,
        join_ok("alice", &["alice"], &[message(3, "bob", "hi")], false),
    );
    let watch: Vec<Req> = sim.take();
    assert!(
        watch.is_empty() || watch.iter().all(|r| r.event != "watch"),
        "answered already"
    );
    let view = sim.chat.view();
    let counts: Vec<(&str, u32, u32)> = view
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.unread, r.mentions))
        .collect();
    assert_eq!(
        counts,
        vec![("general", 0, 0), ("dev", 4, 1), ("random", 0, 0)],
        "never joined: no badge"
    );
    assert_eq!(view.unread_total, 4);
    sim.push("activity", json!({"room": "dev", "last_id": 17, "last_ts": START, "online": 2,
        "messages": [{"id": 15, "author": "bob"}, {"id": 16, "author": "bob", "mentions": ["alice"]}, {"id": 17, "author": "alice"}]}));
    let dev = sim
        .chat
        .view()
        .rooms
        .iter()
        .find(|r| r.name == "dev")
        .unwrap()
        .clone();
    assert_eq!(
        (dev.unread, dev.mentions, dev.online, dev.last_id),
        (5, 2, 2, 17),
        "15 was counted, 17 is ours"
    );

    // The current room counts too while the page is hidden.
    sim.act(Action::SetVisible(false));
    sim.push("message", json!(message(4, "bob", "hey @alice")));
    sim.push("message", json!(message(5, "bob", "there?")));
    assert_eq!(sim.chat.view().rooms[0].unread, 2);
    assert_eq!(sim.chat.view().rooms[0].mentions, 1);
    assert_eq!(sim.chat.view().unread_total, 7);
    sim.act(Action::SetVisible(true));
    assert_eq!(sim.chat.view().rooms[0].unread, 0);
    sim.advance(3_000);
    let stored: Value = serde_json::from_str(&sim.storage[keys::ROOMS]).unwrap();
    assert_eq!(stored[0], json!({"room": "general", "read": 5}));
}

#[test]
fn without_watch_unread_comes_from_the_room_list_for_joined_rooms() {
    let storage = BTreeMap::from([
        (keys::NAME.to_owned(), "alice".to_owned()),
        (keys::OLD_READ.to_owned(), r#"{"dev":10}"#.to_owned()),
    ]);
    let mut sim = Sim::with(storage, START);
    sim.rooms = json!([
        room("general", 1, 0),
        room("dev", 1, 15),
        room("random", 1, 99)
    ]);
    sim.watch = Some(refused("bad_request", json!({})));
    sim.accept();
    let join = sim.take_one("join");
    sim.ack(&join, join_ok("alice", &["alice"], &[], false));
    let counts: Vec<(&str, u32)> = sim
        .chat
        .view()
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.unread))
        .collect();
    assert_eq!(counts, vec![("general", 0), ("dev", 5), ("random", 0)]);
    // The room list is refreshed every 10 s; read marks are written at most every 2 s.
    sim.rooms = json!([room("general", 1, 0), room("dev", 1, 20)]);
    sim.advance(10_000);
    assert_eq!(sim.chat.view().rooms[1].unread, 10);
    assert_eq!(sim.writes.get(keys::ROOMS), Some(&1));
}

#[test]
fn reading_messages_writes_the_read_mark_rarely() {
    let mut sim = Sim::joined(&[]);
    sim.advance(3_000);
    let writes = sim.writes.clone();
    for id in 1..=50 {
        sim.push("message", json!(message(id, "bob", "x")));
    }
    sim.advance(3_000);
    assert_eq!(
        sim.writes.get(keys::ROOMS).copied().unwrap_or(0)
            - writes.get(keys::ROOMS).copied().unwrap_or(0),
        1
    );
    assert_eq!(
        sim.writes.get("banter.outbox.general"),
        None,
        "no outbox write for messages received"
    );
}

// ----- Search -----------------------------------------------------------------------

#[test]
fn search_requests_pages_and_survives_a_reconnect() {
    let mut sim = Sim::joined(&[]);
    sim.act(Action::Search {
        query: "ab".into(),
        room: None,
    });
    assert!(sim.chat.view().search.error.is_some(), "too short");
    assert!(sim.take().is_empty());
    sim.act(Action::Search {
        query: "  deploy   friday ".into(),
        room: Some("general".into()),
    });
    let search = sim.take_one("search");
    assert_eq!(
        search.payload,
        json!({"query": "deploy friday", "room": "general"})
    );
    // Lost with the connection: asked again after reconnecting.
    sim.break_socket();
    sim.advance(1_000);
    sim.accept();
    let search = sim.take_one("search");
    sim.ack(&search, json!({"ok": true, "results": [message(7, "bob", "deploy on friday")], "more": true, "next": "c1"}));
    assert_eq!(sim.chat.view().search.results.len(), 1);
    assert!(sim.chat.view().search.more);
    sim.act(Action::SearchMore);
    let more = sim.take_one("search");
    assert_eq!(more.payload["cursor"], "c1");
    sim.ack(
        &more,
        json!({"ok": true, "results": [message(3, "bob", "friday deploy")]}),
    );
    let ids: Vec<u64> = sim
        .chat
        .view()
        .search
        .results
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![7, 3]);
    assert!(!sim.chat.view().search.more);
}

#[test]
fn protocol_one_is_asked_for_with_a_bare_connect() {
    let mut config = Config::new("general");
    config.protocol = 1;
    let mut sim = Sim::with_config(config, BTreeMap::new(), START);
    sim.feed(OPEN);
    assert_eq!(sim.connect_frames, vec!["40".to_owned()]);
}

#[test]
fn new_since_is_the_read_mark_from_before_this_pages_first_join_and_only_for_a_known_room() {
    // A first visit: no mark, hence no line.
    let mut sim = Sim::joined(&[message(1, "bob", "hi"), message(2, "bob", "there")]);
    assert_eq!(sim.chat.view().new_since, None);
    sim.advance(3_000);
    let stored: Value = serde_json::from_str(&sim.storage[keys::ROOMS]).unwrap();
    assert_eq!(stored[0], json!({"room": "general", "read": 2}));

    // Back later, three messages on: the mark read before this join is kept for the page,
    // though the join itself marks everything read.
    let mut back = sim.reload(60_000);
    back.accept();
    let join = back.take_one("join");
    let history = [2, 3, 4, 5].map(|id| message(id, "bob", "news"));
    back.ack(&join, join_ok("alice", &["alice", "bob"], &history, false));
    assert_eq!(back.chat.view().new_since, Some(2));
    back.advance(3_000);
    let stored: Value = serde_json::from_str(&back.storage[keys::ROOMS]).unwrap();
    assert_eq!(stored[0]["read"], json!(5), "the room is read now");

    // A reconnect within the page keeps the line where it was.
    back.push("message", json!(message(6, "bob", "live")));
    back.break_socket();
    back.advance(1_500);
    back.accept();
    let rejoin = back.take_one("join");
    back.ack(
        &rejoin,
        join_ok("alice", &["alice", "bob"], &[message(7, "bob", "x")], false),
    );
    assert_eq!(back.chat.view().new_since, Some(2));

    // Leaving forgets the room: joining again on this page is a first visit.
    back.act(Action::Leave);
    let leave = back.take_one("leave");
    back.ack(&leave, json!({"ok": true}));
    assert_eq!(back.chat.view().new_since, None);
}

#[test]
fn a_returning_visitor_is_shown_the_room_until_it_leaves_or_is_refused() {
    assert!(!Sim::new().chat.view().returning, "no name: the join form");
    let mut sim = Sim::joined(&[]);
    assert!(sim.chat.view().returning);
    sim.act(Action::Leave);
    let leave = sim.take_one("leave");
    sim.ack(&leave, json!({"ok": true}));
    assert!(!sim.chat.view().returning);

    // Refused (the name is someone else's now): the join form, with the reason.
    let storage = BTreeMap::from([(keys::NAME.to_owned(), "alice".to_owned())]);
    let mut sim = Sim::with(storage, START);
    assert!(sim.chat.view().returning, "before anything is known");
    sim.accept();
    let join = sim.take_one("join");
    sim.ack(&join, refused("invalid_name", json!({})));
    assert!(!sim.chat.view().returning);
    assert!(sim.chat.view().join_error.is_some());
}

#[test]
fn a_mention_arriving_while_hidden_asks_for_one_notification() {
    let mut sim = Sim::joined(&[]);
    // Visible: the log tells, no notification.
    sim.push("message", json!(message(1, "bob", "@alice look")));
    assert!(sim.notified.is_empty());

    sim.act(Action::SetVisible(false));
    sim.push("message", json!(message(2, "bob", "no mention here")));
    sim.push(
        "message",
        json!(message(3, "bob", "@alice are you there?\nsecond line")),
    );
    sim.push("message", json!(ours(4, "@alice note to self", "c-4")));
    // The same message again (a resend, a catch-up): not a second notification.
    sim.push(
        "message",
        json!(message(3, "bob", "@alice are you there?\nsecond line")),
    );
    assert_eq!(
        sim.notified,
        vec![(
            "bob in #general".to_owned(),
            "@alice are you there?…".to_owned(),
            "general/3".to_owned()
        )]
    );
}

#[test]
fn a_room_opened_at_a_message_loads_it_with_its_neighbours_once_joined() {
    let storage = BTreeMap::from([(keys::NAME.to_owned(), "alice".to_owned())]);
    let mut config = Config::new("general");
    config.open_at = Some(500);
    let mut sim = Sim::with_config(config, storage, START);
    sim.accept();
    let join = sim.take_one("join");
    let history: Vec<Message> = (951..=1000).map(|id| message(id, "bob", "x")).collect();
    sim.ack(&join, join_ok("alice", &["alice", "bob"], &history, false));
    let request = sim.take_one("history");
    assert_eq!(
        request.payload,
        json!({"room": "general", "around": 500, "limit": 50})
    );
    let around: Vec<Message> = (475..=524).map(|id| message(id, "bob", "x")).collect();
    sim.ack(
        &request,
        json!({"ok": true, "messages": around, "more": true, "newer": true}),
    );
    assert_eq!(sim.chat.view().focus, Some(500));
    assert!(sim.line(951).gap_before);
}
