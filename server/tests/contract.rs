//! The Banter wire contract v1, spoken over real WebSockets to a real server:
//! joining, fan-out, presence notices, typing indicators and message content.
//! Refusals and error codes are in `errors.rs`; load in `storm.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use app::protocol::{event, JoinReply, Message, Presence, SendReply, TypingNotice};
use serde_json::{json, Value};
use support::{
    assert_ok, assert_refused, client_id, now_ms, start_server, start_server_with, Client, QUIET,
};

/// `ts` is the server clock in ms; both ends run on this machine.
#[track_caller]
fn assert_recent(ts: &Value, context: &str) {
    let ts = ts
        .as_i64()
        .unwrap_or_else(|| panic!("{context}: ts is not an integer: {ts}"));
    let now = now_ms();
    assert!(
        (now - 10_000..=now + 1_000).contains(&ts),
        "{context}: ts {ts} is not close to now ({now}); it must be ms since the Unix epoch"
    );
}

/// The defaults, with a departure grace short enough for tests that wait for a dropped
/// connection to be announced as gone (`presence.rs` tests the grace itself).
fn short_grace() -> server::ChatOptions {
    server::ChatOptions {
        departure_grace: Duration::from_millis(200),
        ..server::ChatOptions::unlimited()
    }
}

fn members(reply: &Value) -> Vec<String> {
    serde_json::from_value(reply["members"].clone())
        .unwrap_or_else(|e| panic!("members is not a list of names ({e}): {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_handshake_answers_with_a_sid() {
    let addr = start_server().await;
    let client = Client::connect(addr, "alice").await;
    let sid = client.sid.clone().unwrap();
    assert!(!sid.is_empty());
    assert!(
        client.open.ping_interval > 0 && client.open.ping_timeout > 0,
        "{:?}",
        client.open
    );
    client.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_replies_with_room_trimmed_name_members_and_history() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;

    let reply = alice.join("  alice \t", "general").await;
    let parsed: JoinReply = serde_json::from_value(reply.clone())
        .unwrap_or_else(|e| panic!("join reply does not match the contract ({e}): {reply}"));
    assert_eq!(parsed.room, "general");
    assert_eq!(parsed.name, "alice", "the name is trimmed");
    assert_eq!(
        parsed.members,
        vec!["alice".to_owned()],
        "members include self: {reply}"
    );
    assert!(
        parsed.history.is_empty(),
        "a new room has no history: {reply}"
    );

    let first = alice.say("general", "first").await;
    let second = alice.say("general", "second").await;

    let bob = Client::connect(addr, "bob").await;
    let reply = bob.join("bob", "general").await;
    let parsed: JoinReply = serde_json::from_value(reply.clone())
        .unwrap_or_else(|e| panic!("join reply does not match the contract ({e}): {reply}"));
    let mut names = parsed.members.clone();
    names.sort();
    assert_eq!(names, ["alice", "bob"], "{reply}");
    assert_eq!(
        reply["history"],
        json!([first, second]),
        "history holds the room's messages, oldest first, exactly as acked"
    );

    // History belongs to its room.
    let carol = Client::connect(addr, "carol").await;
    let reply = carol.join("carol", "random").await;
    assert_eq!(reply["history"], json!([]), "{reply}");
    assert_eq!(members(&reply), ["carol"], "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_acked_to_the_sender_and_fanned_out_to_the_others() {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    let mut carol = Client::connect(addr, "carol").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    carol.join("carol", "random").await;

    let cid = client_id();
    let before = now_ms();
    let reply = alice
        .request(
            "message",
            json!({"room": "general", "text": "hi bob", "client_id": cid}),
        )
        .await;
    let parsed: SendReply = serde_json::from_value(reply.clone())
        .unwrap_or_else(|e| panic!("message reply does not match the contract ({e}): {reply}"));
    assert_eq!(reply["ok"], json!(true));
    let message = parsed.message;
    assert!(message.id > 0, "ids are positive: {reply}");
    assert_eq!(message.room, "general");
    assert_eq!(message.author, "alice");
    assert_eq!(message.text, "hi bob");
    assert_eq!(message.client_id, cid);
    assert!(message.ts >= before - 1_000, "{reply}");
    assert_recent(&reply["message"]["ts"], "message ts");

    let received = bob.next_event(event::MESSAGE).await;
    assert_eq!(
        received, reply["message"],
        "bob receives exactly the stored message"
    );
    let _: Message = serde_json::from_value(received).unwrap();

    alice.expect_no_event(event::MESSAGE, QUIET).await;
    carol.expect_no_event(event::MESSAGE, Duration::ZERO).await;

    // Successive messages get strictly increasing ids, whoever sends them.
    let mut last = message.id;
    for (i, sender) in [&alice, &bob, &alice, &bob].into_iter().enumerate() {
        let m = sender.say("general", &format!("n{i}")).await;
        let id = m["id"].as_u64().unwrap();
        assert!(id > last, "id {id} after {last}");
        last = id;
    }
    carol.expect_no_event(event::MESSAGE, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_and_left_notices_go_to_the_other_members() {
    // A short departure grace: a dropped connection is announced as leaving soon.
    let addr = start_server_with(short_grace()).await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    alice.expect_no_event(event::JOINED, QUIET).await;

    bob.join("bob", "general").await;
    let joined = alice.next_event(event::JOINED).await;
    let parsed: Presence = serde_json::from_value(joined.clone())
        .unwrap_or_else(|e| panic!("joined does not match the contract ({e}): {joined}"));
    assert_eq!(parsed.room, "general");
    assert_eq!(parsed.name, "bob");
    assert_recent(&joined["ts"], "joined ts");
    bob.expect_no_event(event::JOINED, QUIET).await;

    let reply = bob.request("leave", json!({"room": "general"})).await;
    assert_eq!(reply, json!({"ok": true}));
    let left = alice.next_event(event::LEFT).await;
    let parsed: Presence = serde_json::from_value(left.clone())
        .unwrap_or_else(|e| panic!("left does not match the contract ({e}): {left}"));
    assert_eq!(
        (parsed.room.as_str(), parsed.name.as_str()),
        ("general", "bob")
    );
    assert_recent(&left["ts"], "left ts");
    bob.expect_no_event(event::LEFT, QUIET).await;

    // Once left, bob no longer receives the room's messages.
    alice.say("general", "bob is gone").await;
    bob.expect_no_event(event::MESSAGE, QUIET).await;

    // Rejoin, then disconnect: alice gets `left` too.
    bob.join("bob", "general").await;
    alice
        .next_event_where(event::JOINED, support::EVENT_TIMEOUT, |v| {
            v["name"] == "bob"
        })
        .await;
    bob.close().await;
    let left = alice.next_event(event::LEFT).await;
    assert_eq!(left["room"], "general");
    assert_eq!(left["name"], "bob");
    alice.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_notices_name_the_right_connection() {
    // A short departure grace: a dropped connection is announced as leaving soon.
    let addr = start_server_with(short_grace()).await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    let mut carol = Client::connect(addr, "carol").await;

    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    assert_eq!(alice.next_event(event::JOINED).await["name"], "bob");
    carol.join("carol", "general").await;
    assert_eq!(alice.next_event(event::JOINED).await["name"], "carol");
    assert_eq!(bob.next_event(event::JOINED).await["name"], "carol");
    carol.expect_no_event(event::JOINED, QUIET).await;

    // A leave names the leaver at every other member.
    bob.request("leave", json!({"room": "general"})).await;
    assert_eq!(alice.next_event(event::LEFT).await["name"], "bob");
    assert_eq!(carol.next_event(event::LEFT).await["name"], "bob");

    // A disconnect names the disconnected socket, in every room it had joined.
    let mut dave = Client::connect(addr, "dave").await;
    dave.join("dave", "random").await;
    carol.join("carol", "random").await;
    assert_eq!(dave.next_event(event::JOINED).await["name"], "carol");
    carol.close().await;
    let left = alice.next_event(event::LEFT).await;
    assert_eq!(
        (left["room"].as_str(), left["name"].as_str()),
        (Some("general"), Some("carol"))
    );
    let left = dave.next_event(event::LEFT).await;
    assert_eq!(
        (left["room"].as_str(), left["name"].as_str()),
        (Some("random"), Some("carol"))
    );

    alice.expect_no_event(event::LEFT, QUIET).await;
    bob.expect_no_event(event::LEFT, Duration::ZERO).await;
}

async fn typing_pair() -> (Client, Client) {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    alice.next_event(event::JOINED).await;
    (alice, bob)
}

fn typing_of(name: &'static str, typing: bool) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["name"] == name && v["typing"] == typing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_relayed_to_the_others_and_expires_after_five_seconds() {
    let (mut alice, mut bob) = typing_pair().await;

    bob.emit("typing", json!({"room": "general", "typing": true}));
    let notice = alice.next_event(event::TYPING).await;
    let parsed: TypingNotice = serde_json::from_value(notice.clone())
        .unwrap_or_else(|e| panic!("typing does not match the contract ({e}): {notice}"));
    assert_eq!(
        parsed,
        TypingNotice {
            room: "general".into(),
            name: "bob".into(),
            typing: true
        }
    );
    bob.expect_no_event(event::TYPING, QUIET).await;

    // No refresh: the server clears it after 5 s; not much earlier, not much later.
    let started = tokio::time::Instant::now();
    alice
        .expect_no_event_where(
            event::TYPING,
            Duration::from_millis(3_500),
            typing_of("bob", false),
        )
        .await;
    let cleared = alice
        .next_event_where(
            event::TYPING,
            Duration::from_millis(4_500),
            typing_of("bob", false),
        )
        .await;
    assert_eq!(
        cleared,
        json!({"room": "general", "name": "bob", "typing": false})
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed <= Duration::from_secs(8),
        "cleared after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_cleared_when_the_typist_sends() {
    let (mut alice, bob) = typing_pair().await;
    bob.emit("typing", json!({"room": "general", "typing": true}));
    alice
        .next_event_where(
            event::TYPING,
            support::EVENT_TIMEOUT,
            typing_of("bob", true),
        )
        .await;

    let sent = bob.say("general", "done typing").await;
    alice
        .next_event_where(
            event::TYPING,
            Duration::from_secs(2),
            typing_of("bob", false),
        )
        .await;
    assert_eq!(alice.next_event(event::MESSAGE).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_cleared_when_the_typist_leaves() {
    let (mut alice, bob) = typing_pair().await;
    bob.emit("typing", json!({"room": "general", "typing": true}));
    alice
        .next_event_where(
            event::TYPING,
            support::EVENT_TIMEOUT,
            typing_of("bob", true),
        )
        .await;

    assert_eq!(
        bob.request("leave", json!({"room": "general"})).await,
        json!({"ok": true})
    );
    // Either an explicit `typing` false or the `left` notice ends the indicator; the
    // server must not leave it dangling. Both must arrive well before the 5 s expiry.
    let left = alice
        .next_event_within(event::LEFT, Duration::from_secs(2))
        .await;
    assert_eq!(left["name"], "bob");
    // And no stale `typing: true` for bob may follow the leave.
    alice
        .expect_no_event_where(event::TYPING, QUIET, typing_of("bob", true))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_false_from_the_client_is_relayed() {
    let (mut alice, bob) = typing_pair().await;
    bob.emit("typing", json!({"room": "general", "typing": true}));
    alice
        .next_event_where(
            event::TYPING,
            support::EVENT_TIMEOUT,
            typing_of("bob", true),
        )
        .await;
    bob.emit("typing", json!({"room": "general", "typing": false}));
    alice
        .next_event_where(
            event::TYPING,
            Duration::from_secs(2),
            typing_of("bob", false),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_supplied_author_or_id_is_ignored() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    let first = alice.say("general", "honest").await;
    let first_id = first["id"].as_u64().unwrap();
    let reply = alice
        .request(
            "message",
            json!({
                "room": "general", "text": "spoofed", "client_id": "spoof-1",
                "author": "mallory", "id": first_id, "ts": 1
            }),
        )
        .await;
    support::assert_ok(&reply, "spoofed message");
    let spoofed = &reply["message"];
    assert_eq!(spoofed["author"], "alice", "{reply}");
    let spoofed_id = spoofed["id"].as_u64().unwrap();
    assert!(spoofed_id > first_id, "the server assigns the id: {reply}");
    assert_recent(&spoofed["ts"], "the server assigns ts");
    let big = alice
        .request(
            "message",
            json!({"room": "general", "text": "big", "client_id": "spoof-2", "id": 999_999}),
        )
        .await;
    let third = alice.say("general", "after").await;
    assert!(big["message"]["id"].as_u64().unwrap() > spoofed_id, "{big}");
    assert!(
        third["id"].as_u64().unwrap() > big["message"]["id"].as_u64().unwrap(),
        "{third}"
    );

    bob.next_event(event::MESSAGE).await;
    assert_eq!(bob.next_event(event::MESSAGE).await, *spoofed);

    let carol = Client::connect(addr, "carol").await;
    let history = carol.join("carol", "general").await["history"].clone();
    assert_eq!(history[1]["author"], "alice", "{history}");
    assert_eq!(history[1]["id"].as_u64(), Some(spoofed_id), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_kept_verbatim_after_trimming() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    let cases = [
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),
        (
            "  héllo wörld 世界 👋🏽 مرحبا \n",
            "héllo wörld 世界 👋🏽 مرحبا",
        ),
        ("line one\n\tline two", "line one\n\tline two"),
        (
            r#"quotes " ' \ & &amp; %s {{x}}"#,
            r#"quotes " ' \ & &amp; %s {{x}}"#,
        ),
        ("42[\"x\"]\u{1e}1/,", "42[\"x\"]\u{1e}1/,"),
    ];
    let mut sent = Vec::new();
    for (input, expected) in cases {
        let m = alice.say("general", input).await;
        assert_eq!(m["text"], expected, "ack for {input:?}");
        assert_eq!(
            bob.next_event(event::MESSAGE).await["text"],
            expected,
            "relay of {input:?}"
        );
        sent.push(m);
    }
    let carol = Client::connect(addr, "carol").await;
    let reply = carol.join("carol", "general").await;
    assert_eq!(
        reply["history"],
        json!(sent),
        "history keeps the text verbatim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_keeps_one_name() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "general").await;

    let reply = alice
        .request("join", json!({"name": "alicia", "room": "random"}))
        .await;
    support::assert_refused(&reply, "invalid_name", "a second name on one socket");

    let reply = alice.join(" alice ", "random").await;
    assert_eq!(reply["name"], "alice");
    assert_eq!(members(&reply), ["alice"]);

    // Once in no room, the socket may take another name.
    alice.request("leave", json!({"room": "general"})).await;
    alice.request("leave", json!({"room": "random"})).await;
    let reply = alice
        .request("join", json!({"name": "alicia", "room": "general"}))
        .await;
    support::assert_ok(&reply, "renaming after leaving every room");
    assert_eq!(reply["name"], "alicia");
    alice.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_the_same_room_twice_does_not_duplicate_the_member() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    bob.join("bob", "general").await;
    alice.join("alice", "general").await;
    bob.next_event(event::JOINED).await;

    let reply = alice
        .request("join", json!({"name": "alice", "room": "general"}))
        .await;
    // Re-joining is either accepted idempotently or refused; it must never list alice twice
    // or be treated as a name collision with herself.
    if reply["ok"] == json!(true) {
        let mut names = members(&reply);
        names.sort();
        assert_eq!(names, ["alice", "bob"], "{reply}");
    } else {
        assert_ne!(reply["error"]["code"], "name_taken", "{reply}");
    }
    let m = alice.say("general", "once").await;
    assert_eq!(bob.next_event(event::MESSAGE).await, m);
    bob.expect_no_event(event::MESSAGE, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_pong_is_harmless() {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    alice.send_text("3");
    alice.join("alice", "general").await;
    alice.say("general", "still here").await;
    alice.assert_open();
    alice.expect_no_event(event::ERROR, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_with_an_ack_is_answered_like_any_request() {
    let (mut alice, bob) = typing_pair().await;
    let reply = bob
        .request("typing", json!({"room": "general", "typing": true}))
        .await;
    assert_eq!(reply, json!({"ok": true}));
    alice
        .next_event_where(
            event::TYPING,
            support::EVENT_TIMEOUT,
            typing_of("bob", true),
        )
        .await;
    let reply = bob
        .request("typing", json!({"room": "random", "typing": true}))
        .await;
    support::assert_refused(&reply, "not_joined", "typing in a room not joined");
}

/// Pins a behaviour of socketioxide 0.18.9 that Banter does not work around, so that an
/// upgrade that changes it fails here and is looked at: the namespace CONNECT (`40`) is
/// handled in a spawned task, and an event that arrives before that task has registered
/// the socket (that is, before the server's `40{"sid":...}` reply) finds no socket, and
/// the server closes the whole connection without answering it (mostly after an Engine.IO
/// close `1`, sometimes without one).
/// Stock clients wait for the reply, as the protocol requires, and so does Banter's page.
///
/// Sent as separate writes, the event loses the race only now and then (10 to 20% of tries
/// on this machine), so the test sends both frames in one write, which loses it every time.
/// If this fails, socketioxide changed: if the join is now answered, turn this into a test
/// that it is, and drop the note in the README (Architecture) and docs/PROTOCOL.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_upstream_an_event_before_the_connect_reply_closes_the_connection() {
    let addr = start_server().await;
    for i in 0..5 {
        let name = format!("eager{i}");
        let outcome = join_pipelined_behind_the_connect(addr, &name, support::ACK_TIMEOUT).await;
        assert!(
            !outcome.acked() && outcome.closed,
            "[{name}] socketioxide's handling of an event sent before the CONNECT reply \
             changed (expected: no ack, and the connection closed): {outcome:?}"
        );
    }
    // The server is fine: a client that waits for the reply joins.
    let patient = Client::connect(addr, "patient").await;
    patient.join("patient", "general").await;
    patient.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_disconnect_packet_counts_as_leaving() {
    // A short departure grace: a dropped connection is announced as leaving soon.
    let addr = start_server_with(short_grace()).await;
    let mut alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    let joined = bob.join("bob", "general").await;
    let token = joined["session"]
        .as_str()
        .expect("a session token")
        .to_owned();
    alice.next_event(event::JOINED).await;

    bob.send_text("41");
    let left = alice.next_event(event::LEFT).await;
    assert_eq!(left["name"], "bob");
    // The name is held for bob's session: a stranger cannot take it, bob's token can.
    let stranger = Client::connect(addr, "stranger").await;
    let refused = stranger
        .request(event::JOIN, json!({"name": "bob", "room": "general"}))
        .await;
    assert_refused(&refused, "name_taken", "a stranger taking bob's name");
    let again = Client::connect(addr, "bob again").await;
    let rejoined = again
        .request(
            event::JOIN,
            json!({"name": "bob", "room": "general", "session": token}),
        )
        .await;
    assert_ok(&rejoined, "bob reclaiming his name");
    assert_eq!(rejoined["session"], token.as_str());
}

/// What became of an event sent in the same write as the namespace CONNECT `40`.
#[derive(Debug)]
struct Pipelined {
    /// Every text frame the server sent, in order.
    frames: Vec<String>,
    /// Whether the server ended the connection (close frame or end of stream).
    closed: bool,
}

impl Pipelined {
    fn acked(&self) -> bool {
        self.frames.iter().any(|f| f.starts_with("430"))
    }
}

/// Opens a WebSocket, reads the Engine.IO open packet, then writes `40` and
/// `420["join",...]` in one write (one TCP segment, so the server reads both before the
/// task that handles the CONNECT can run), and records what follows for up to `limit`.
async fn join_pipelined_behind_the_connect(
    addr: SocketAddr,
    name: &str,
    limit: Duration,
) -> Pipelined {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio::time::timeout(limit, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap_or_else(|_| panic!("[{name}] WebSocket handshake timed out"))
        .unwrap_or_else(|e| panic!("[{name}] WebSocket handshake failed: {e}"));
    let (mut sink, mut stream) = ws.split();
    let mut frames = Vec::new();
    match tokio::time::timeout(limit, stream.next()).await {
        Ok(Some(Ok(WsMessage::Text(open)))) if open.as_str().starts_with('0') => {
            frames.push(open.as_str().to_owned())
        }
        other => panic!("[{name}] expected the Engine.IO open packet, got {other:?}"),
    }
    let join = json!(["join", {"name": name, "room": "general"}]);
    // feed, feed, flush: both frames leave in one write.
    sink.feed(WsMessage::text("40")).await.unwrap();
    sink.feed(WsMessage::text(format!("420{join}")))
        .await
        .unwrap();
    sink.flush().await.unwrap();
    let closed = tokio::time::timeout(limit, async {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(WsMessage::Text(text)) => {
                    if text.as_str() == "2" {
                        let _ = sink.send(WsMessage::text("3")).await;
                    }
                    frames.push(text.as_str().to_owned());
                }
                Ok(WsMessage::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    Pipelined { frames, closed }
}
