//! Refusals: every error code of the wire contract v1, delivered through the ack as
//! `{"ok":false,"error":{"code":"...","message":"..."}}`, or as an `error` event when the
//! request carried no ack. A refused request never costs the socket its connection.

mod support;

use std::time::Duration;

use app::protocol::event;
use serde_json::{json, Value};
use support::{assert_ok, assert_refused, client_id, start_server, Client, QUIET};

/// After refusals, the socket must still be connected and able to chat.
async fn assert_still_chatting(sender: &Client, listener: &mut Client, room: &str) {
    sender.assert_open();
    let m = sender.say(room, "still connected").await;
    assert_eq!(listener.next_event(event::MESSAGE).await, m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_name() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let (long_ascii, long_accented) = ("a".repeat(33), "é".repeat(33));
    for name in [
        "",
        "   ",
        " \t\n ",
        long_ascii.as_str(),
        long_accented.as_str(),
    ] {
        let reply = alice
            .request("join", json!({"name": name, "room": "general"}))
            .await;
        assert_refused(&reply, "invalid_name", &format!("name {name:?}"));
    }
    // The limits are inclusive and count characters; the refusals left no name behind.
    let reply = alice
        .join(&format!("  {}  ", "é".repeat(32)), "general")
        .await;
    assert_eq!(reply["name"], json!("é".repeat(32)));
    alice.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_taken_is_case_insensitive_and_server_wide() {
    // A short departure grace: alice's close is announced soon.
    let addr = support::start_server_with(server::ChatOptions {
        departure_grace: std::time::Duration::from_millis(200),
        ..server::ChatOptions::unlimited()
    })
    .await;
    let alice = Client::connect(addr, "alice").await;
    let mut witness = Client::connect(addr, "witness").await;
    let token = alice.join("alice", "general").await["session"].clone();
    witness.join("witness", "general").await;

    let imposter = Client::connect(addr, "imposter").await;
    for (name, room) in [
        ("alice", "general"),
        ("ALICE", "general"),
        (" Alice ", "general"),
        ("ALICE", "random"),
    ] {
        let reply = imposter
            .request("join", json!({"name": name, "room": room}))
            .await;
        assert_refused(
            &reply,
            "name_taken",
            &format!("name {name:?} in {room} while alice is online"),
        );
    }
    // Refused joins are not announced.
    witness.expect_no_event(event::JOINED, QUIET).await;

    // Once alice is gone her name stays hers for a while: a guessed token does not help,
    // hers does.
    alice.close().await;
    witness
        .next_event_where(event::LEFT, support::EVENT_TIMEOUT, |v| {
            v["name"] == "alice"
        })
        .await;
    let reply = imposter
        .request(
            "join",
            json!({"name": "Alice", "room": "general", "session": "0123456789abcdef0123456789abcdef"}),
        )
        .await;
    assert_refused(&reply, "name_taken", "alice's name right after she left");
    let back = Client::connect(addr, "alice back").await;
    let reply = back
        .request(
            "join",
            json!({"name": "Alice", "room": "general", "session": token}),
        )
        .await;
    assert_ok(&reply, "alice reclaiming her name with her token");
    assert_eq!(reply["name"], "Alice");
    imposter.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_no_room_may_change_its_name_and_the_old_one_stays_held() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let token = alice.join("alice", "general").await["session"].clone();
    alice.join("alice", "random").await;
    let reply = alice
        .request("join", json!({"name": "alicia", "room": "other"}))
        .await;
    assert_refused(&reply, "invalid_name", "a second name while in rooms");

    alice.request("leave", json!({"room": "general"})).await;
    alice.request("leave", json!({"room": "random"})).await;
    let other = Client::connect(addr, "other").await;
    let reply = other
        .request("join", json!({"name": "alice", "room": "general"}))
        .await;
    assert_refused(
        &reply,
        "name_taken",
        "alice's name after she left every room",
    );

    let renamed = alice.join("alicia", "general").await;
    assert_ne!(renamed["session"], token, "a new name, a new session");
    let reply = other
        .request("join", json!({"name": "alice", "room": "general"}))
        .await;
    assert_refused(&reply, "name_taken", "alice's name, held for her session");
    let reply = other
        .request(
            "join",
            json!({"name": "alice", "room": "general", "session": token}),
        )
        .await;
    assert_ok(&reply, "alice's name with her token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_room() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let long = "a".repeat(65);
    for room in [
        "General",
        "a b",
        long.as_str(),
        "",
        "é",
        "../x",
        "room!",
        " general",
    ] {
        let reply = alice
            .request("join", json!({"name": "alice", "room": room}))
            .await;
        assert_refused(&reply, "invalid_room", &format!("room {room:?}"));
    }
    let reply = alice.join("alice", &"a".repeat(64)).await;
    assert_eq!(reply["room"], json!("a".repeat(64)));
    alice.join("alice", "dev_ops-2").await;
    alice.assert_open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_too_long_text() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    for text in ["", "   ", " \n\t\r "] {
        let reply = alice
            .request(
                "message",
                json!({"room": "general", "text": text, "client_id": client_id()}),
            )
            .await;
        assert_refused(&reply, "empty", &format!("text {text:?}"));
    }
    for text in ["x".repeat(4001), "😀".repeat(4001)] {
        let reply = alice
            .request(
                "message",
                json!({"room": "general", "text": text, "client_id": client_id()}),
            )
            .await;
        assert_refused(&reply, "too_long", "4001 characters");
    }
    bob.expect_no_event(event::MESSAGE, QUIET).await;

    // Exactly 4000 characters is fine, counted in characters and after trimming.
    for text in [
        "x".repeat(4000),
        "😀".repeat(4000),
        format!("  {}\n", "y".repeat(4000)),
    ] {
        let m = alice.say("general", &text).await;
        assert_eq!(m["text"].as_str().unwrap().chars().count(), 4000);
        assert_eq!(bob.next_event(event::MESSAGE).await, m);
    }
    assert_still_chatting(&alice, &mut bob, "general").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_joined() {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut carol = Client::connect(addr, "carol").await;
    alice.join("alice", "general").await;
    carol.join("carol", "random").await;

    let reply = alice
        .request(
            "message",
            json!({"room": "random", "text": "hi", "client_id": client_id()}),
        )
        .await;
    assert_refused(&reply, "not_joined", "message to a room not joined");
    let reply = alice.request("leave", json!({"room": "random"})).await;
    assert_refused(&reply, "not_joined", "leave of a room not joined");
    alice.emit("typing", json!({"room": "random", "typing": true}));
    carol.expect_no_event(event::MESSAGE, QUIET).await;
    carol.expect_no_event(event::TYPING, QUIET).await;
    carol.expect_no_event(event::LEFT, QUIET).await;

    // Before any join at all, too.
    let dave = Client::connect(addr, "dave").await;
    let reply = dave
        .request(
            "message",
            json!({"room": "general", "text": "hi", "client_id": client_id()}),
        )
        .await;
    assert_refused(&reply, "not_joined", "message before joining anything");
    let reply = dave.request("leave", json!({"room": "general"})).await;
    assert_refused(&reply, "not_joined", "leave before joining anything");
    alice.expect_no_event(event::MESSAGE, QUIET).await;

    // After leaving, the room is not joined any more.
    alice.request("leave", json!({"room": "general"})).await;
    let reply = alice
        .request(
            "message",
            json!({"room": "general", "text": "hi", "client_id": client_id()}),
        )
        .await;
    assert_refused(&reply, "not_joined", "message after leaving");

    alice.join("alice", "random").await;
    assert_still_chatting(&alice, &mut carol, "random").await;
}

/// Whether `reply` is the refusal `code` with a message; a description if not.
fn refusal_mismatch(reply: &Value, code: &str, context: &str) -> Option<String> {
    let message_ok = reply["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.trim().is_empty());
    if reply["ok"] == json!(false) && reply["error"]["code"] == json!(code) && message_ok {
        None
    } else {
        Some(format!("{context}: expected {code}, got {reply}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_for_any_wrong_shape() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    bob.join("bob", "general").await;
    let mut wrong = Vec::new();

    let join_cases: Vec<(&str, Vec<Value>)> = vec![
        ("missing name", vec![json!({"room": "general"})]),
        ("missing room", vec![json!({"name": "alice"})]),
        (
            "name as number",
            vec![json!({"name": 7, "room": "general"})],
        ),
        ("room as null", vec![json!({"name": "alice", "room": null})]),
        ("payload is a string", vec![json!("alice")]),
        ("payload is an array", vec![json!(["alice", "general"])]),
        ("payload is a number", vec![json!(1)]),
        ("payload is null", vec![Value::Null]),
        ("payload absent", vec![]),
    ];
    for (what, args) in join_cases {
        // A fresh socket per case, so that a wrongly accepted join cannot skew the others.
        let probe = Client::connect(addr, "probe").await;
        let reply = probe.request_args("join", args).await;
        wrong.extend(refusal_mismatch(
            &reply,
            "bad_request",
            &format!("join, {what}"),
        ));
        probe.assert_open();
    }
    alice.join("alice", "general").await;
    alice.join("alice", "side").await;

    let message_cases: Vec<(&str, Vec<Value>)> = vec![
        (
            "text as number",
            vec![json!({"room": "general", "text": 5, "client_id": "c"})],
        ),
        (
            "missing text",
            vec![json!({"room": "general", "client_id": "c"})],
        ),
        (
            "missing room",
            vec![json!({"text": "hi", "client_id": "c"})],
        ),
        (
            "missing client_id",
            vec![json!({"room": "general", "text": "hi"})],
        ),
        (
            "client_id as number",
            vec![json!({"room": "general", "text": "hi", "client_id": 3})],
        ),
        (
            "empty client_id",
            vec![json!({"room": "general", "text": "hi", "client_id": ""})],
        ),
        (
            "65 character client_id",
            vec![json!({"room": "general", "text": "hi", "client_id": "c".repeat(65)})],
        ),
        (
            "client_id with a control character",
            vec![json!({"room": "general", "text": "hi", "client_id": "a\u{7}b"})],
        ),
        ("payload is a string", vec![json!("hi")]),
        (
            "payload is an array",
            vec![json!(["general", "hi", "array-cid"])],
        ),
        ("payload absent", vec![]),
    ];
    for (what, args) in message_cases {
        let reply = alice.request_args("message", args).await;
        wrong.extend(refusal_mismatch(
            &reply,
            "bad_request",
            &format!("message, {what}"),
        ));
    }

    let leave_cases: Vec<(&str, Vec<Value>)> = vec![
        ("missing room", vec![json!({})]),
        ("room as number", vec![json!({"room": 1})]),
        ("payload is a string", vec![json!("side")]),
        ("payload is an array", vec![json!(["side"])]),
        ("payload absent", vec![]),
    ];
    for (what, args) in leave_cases {
        let reply = alice.request_args("leave", args).await;
        wrong.extend(refusal_mismatch(
            &reply,
            "bad_request",
            &format!("leave, {what}"),
        ));
    }
    alice.assert_open();
    assert!(
        wrong.is_empty(),
        "{} wrong-shape requests were not refused with bad_request:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    bob.expect_no_event(event::MESSAGE, QUIET).await;
    bob.expect_no_event(event::LEFT, Duration::ZERO).await;

    // 64 printable characters is a valid client_id.
    let reply = alice
        .request(
            "message",
            json!({"room": "general", "text": "ok", "client_id": "c".repeat(64)}),
        )
        .await;
    assert_ok(&reply, "64 character client_id");
    bob.next_event(event::MESSAGE).await;

    assert_still_chatting(&alice, &mut bob, "general").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typing_payloads_are_not_relayed_and_keep_the_connection() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    for args in [
        vec![json!({"room": "general", "typing": "yes"})],
        vec![json!({"room": "general"})],
        vec![json!("general")],
        vec![],
    ] {
        alice.emit_args("typing", args);
    }
    bob.expect_no_event(event::TYPING, QUIET).await;
    assert_still_chatting(&alice, &mut bob, "general").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events_and_odd_packets_keep_the_connection() {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    // docs/PROTOCOL.md: unknown events are refused with `bad_request`, on their ack...
    let reply = alice.request("no_such_event", json!({})).await;
    assert_refused(&reply, "bad_request", "an unknown event with an ack id");
    // ...or, sent without one, as an `error` event; neither closes the connection.
    alice.emit("no_such_event", json!({"x": 1}));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("no_such_event"), Some("bad_request")),
        "{error}"
    );
    alice.assert_open();
    // Extra arguments after the payload are ignored.
    let reply = alice
        .request_args(
            "message",
            vec![
                json!({"room": "general", "text": "extra", "client_id": client_id()}),
                json!(1),
            ],
        )
        .await;
    if reply["ok"] == json!(true) {
        bob.next_event(event::MESSAGE).await;
    } else {
        assert_refused(&reply, "bad_request", "extra arguments");
    }
    // A field named twice (JSON.stringify never writes one) is a wrong shape, not settled
    // by which comes last.
    alice.send_text(
        r#"42["message",{"room":"general","text":"once","text":"twice","client_id":"twice-1"}]"#,
    );
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("message"), Some("bad_request")),
        "{error}"
    );
    bob.expect_no_event(event::MESSAGE, QUIET).await;
    assert_still_chatting(&alice, &mut bob, "general").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_without_ack_is_an_error_event() {
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    alice.emit(
        "message",
        json!({"room": "general", "text": "   ", "client_id": client_id()}),
    );
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(error["event"], "message", "{error}");
    assert_eq!(error["code"], "empty", "{error}");
    assert!(
        !error["message"].as_str().unwrap_or_default().is_empty(),
        "{error}"
    );
    let parsed: app::protocol::ErrorNotice = serde_json::from_value(error.clone()).unwrap();
    assert_eq!(parsed.code, app::protocol::ErrorCode::Empty);

    alice.emit("message", json!("not an object"));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("message"), Some("bad_request"))
    );

    alice.emit("join", json!({"name": "", "room": "random"}));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("join"), Some("invalid_name"))
    );

    alice.emit("leave", json!({"room": "random"}));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("leave"), Some("not_joined"))
    );

    // An accepted request without an ack still works and produces no error.
    alice.emit(
        "message",
        json!({"room": "general", "text": "no ack", "client_id": client_id()}),
    );
    assert_eq!(bob.next_event(event::MESSAGE).await["text"], "no ack");
    alice.expect_no_event(event::ERROR, QUIET).await;
    // Refusals are private to the refused socket.
    bob.expect_no_event(event::ERROR, Duration::ZERO).await;
    assert_still_chatting(&alice, &mut bob, "general").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_typing_is_an_error_event() {
    // `typing` never carries an ack, so by the general rule its refusals are `error` events.
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    alice.join("alice", "general").await;

    alice.emit("typing", json!({"room": "random", "typing": true}));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("typing"), Some("not_joined"))
    );

    alice.emit("typing", json!({"room": "general", "typing": "yes"}));
    let error = alice.next_event(event::ERROR).await;
    assert_eq!(
        (error["event"].as_str(), error["code"].as_str()),
        (Some("typing"), Some("bad_request"))
    );
    alice.assert_open();
}
