//! Abuse limits against a live server: message rate limits per socket and per address,
//! flood disconnects, connection caps, typing coalescing, binary attachments, and a
//! person on several connections (tabs).

mod support;

use std::time::Duration;

use app::protocol::event;
use serde_json::{json, Value};
use server::chat::limits::{AbuseLimits, RateLimit};
use support::{assert_ok, assert_refused, client_id, start_server_with, Client, QUIET};

fn options(limits: AbuseLimits) -> server::ChatOptions {
    server::ChatOptions {
        limits,
        // Short, so tests can wait for a closed connection to be announced as gone.
        departure_grace: std::time::Duration::from_millis(200),
        ..server::ChatOptions::default()
    }
}

fn message(text: &str) -> Value {
    json!({"room": "general", "text": text, "client_id": client_id()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_burst_are_refused_with_a_retry_time_and_order_survives() {
    let addr = start_server_with(options(AbuseLimits {
        messages: RateLimit::new(5.0, 3.0),
        ..AbuseLimits::unlimited()
    }))
    .await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    // Five sent back to back, without waiting for acks: the burst of three passes.
    let pending: Vec<_> = (1..=5)
        .map(|i| {
            let payload = message(&format!("m{i}"));
            (payload.clone(), alice.start_request("message", payload))
        })
        .collect();
    let mut refused = Vec::new();
    for (i, (payload, ack)) in pending.into_iter().enumerate() {
        let reply = ack.wait().await;
        if i < 3 {
            assert_ok(&reply, &format!("message {} within the burst", i + 1));
        } else {
            assert_refused(&reply, "rate_limited", &format!("message {}", i + 1));
            let retry = reply["error"]["retry_after_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("rate_limited without retry_after_ms: {reply}"));
            assert!((1..=1_000).contains(&retry), "retry_after_ms {retry}");
            refused.push((payload, retry));
        }
    }

    // Resent in order after the announced wait, as PROTOCOL.md's client does: a resend
    // refused again (the bucket holds one token per wait) waits as told and resends.
    let mut wait = refused.first().map_or(0, |(_, retry)| *retry);
    for (payload, _) in refused {
        let mut tries = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let reply = alice.request("message", payload.clone()).await;
            if reply["ok"] == json!(true) {
                break;
            }
            assert_refused(&reply, "rate_limited", "a resend after retry_after_ms");
            wait = reply["error"]["retry_after_ms"].as_u64().unwrap();
            tries += 1;
            assert!(tries < 5, "a polite resend keeps being refused: {reply}");
        }
        wait = 0;
    }
    let mut texts = Vec::new();
    for _ in 0..5 {
        texts.push(bob.next_event("message").await["text"].clone());
    }
    assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5"]);
    bob.expect_no_event("message", QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_shares_a_message_budget_across_its_connections() {
    let addr = start_server_with(options(AbuseLimits {
        client_messages: RateLimit::new(1.0, 4.0),
        ..AbuseLimits::unlimited()
    }))
    .await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        let client = Client::connect(addr, name).await;
        client.join(name, "general").await;
        clients.push(client);
    }
    let mut accepted = 0;
    let mut limited = 0;
    for round in 0..2 {
        for client in &clients {
            let reply = client
                .request("message", message(&format!("r{round}")))
                .await;
            if reply["ok"] == true {
                accepted += 1;
            } else {
                assert_refused(&reply, "rate_limited", "over the address budget");
                limited += 1;
            }
        }
    }
    assert_eq!(
        (accepted, limited),
        (4, 2),
        "a burst of 4 for the whole address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_keeps_flooding_is_told_why_and_disconnected() {
    let addr = start_server_with(options(AbuseLimits {
        messages: RateLimit::new(1.0, 2.0),
        refusals: RateLimit::new(1.0, 5.0),
        ..AbuseLimits::unlimited()
    }))
    .await;
    let mut flooder = Client::connect(addr, "flooder").await;
    let mut bystander = Client::connect(addr, "bystander").await;
    flooder.join("flooder", "general").await;
    bystander.join("bystander", "general").await;

    for i in 0..50 {
        flooder.emit("message", message(&format!("flood {i}")));
    }
    // Each refusal is reported (these carried no ack, so as `error` events), then the
    // reason for the disconnect.
    let first = flooder.next_event(event::ERROR).await;
    assert_eq!(first["code"], "rate_limited", "{first}");
    assert!(first["retry_after_ms"].as_u64().is_some(), "{first}");
    let notice = flooder
        .next_event_where(event::ERROR, support::EVENT_TIMEOUT, |notice| {
            notice["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Disconnected"))
        })
        .await;
    assert_eq!(notice["code"], "rate_limited", "{notice}");
    let left = bystander.next_event(event::LEFT).await;
    assert_eq!(left["name"], "flooder");
    assert!(
        flooder.wait_closed(support::EVENT_TIMEOUT).await,
        "the flooder is disconnected"
    );

    // The burst got through, nothing after the disconnect did, and the room goes on.
    let stored = bystander
        .request(
            "history",
            json!({"room": "general", "before": u64::MAX, "limit": 100}),
        )
        .await;
    assert_ok(&stored, "history");
    let texts: Vec<_> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["flood 0", "flood 1"]);
    assert_ok(
        &bystander.request("message", message("still here")).await,
        "bystander",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_in_total() {
    let addr = start_server_with(options(AbuseLimits {
        max_connections_per_client: 3,
        ..AbuseLimits::unlimited()
    }))
    .await;
    let first = Client::connect(addr, "1").await;
    let _second = Client::connect(addr, "2").await;
    let _third = Client::connect(addr, "3").await;
    let mut fourth = Client::open(addr, "4").await;
    let refused = fourth
        .try_wait_connected(support::EVENT_TIMEOUT)
        .await
        .expect_err("a fourth connection from one address");
    assert!(refused.contains("too many connections"), "{refused}");

    // Closing one frees its slot.
    first.close().await;
    let mut again = None;
    for _ in 0..50 {
        let mut client = Client::open(addr, "again").await;
        if client
            .try_wait_connected(support::EVENT_TIMEOUT)
            .await
            .is_ok()
        {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = again.expect("a slot is free once a connection closed");
    again.join("again", "general").await;

    let total = start_server_with(options(AbuseLimits {
        max_connections: 2,
        ..AbuseLimits::unlimited()
    }))
    .await;
    let _a = Client::connect(total, "a").await;
    let _b = Client::connect(total, "b").await;
    let mut c = Client::open(total, "c").await;
    let refused = c
        .try_wait_connected(support::EVENT_TIMEOUT)
        .await
        .expect_err("over the total");
    assert!(refused.contains("server is full"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_toggled_on_every_keystroke_is_coalesced_and_ends_in_the_last_state() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let typist = Client::connect(addr, "typist").await;
    let mut watcher = Client::connect(addr, "watcher").await;
    typist.join("typist", "general").await;
    watcher.join("watcher", "general").await;

    for i in 0..100 {
        typist.emit("typing", json!({"room": "general", "typing": i % 2 == 0}));
    }
    typist.emit("typing", json!({"room": "general", "typing": false}));
    // A round trip after the burst: every typing event has been handled.
    typist.request("rooms", json!({})).await;

    let mut notices = Vec::new();
    loop {
        let notice = watcher.next_event(event::TYPING).await;
        notices.push(notice["typing"].as_bool().unwrap());
        if notice["typing"] == false {
            break;
        }
    }
    watcher
        .expect_no_event(event::TYPING, Duration::from_secs(1))
        .await;
    assert!(
        notices.len() <= 4,
        "101 toggles became {} notices: {notices:?}",
        notices.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_attachments_are_refused_with_a_clear_error() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;

    let pending = alice.start_raw_request("message", |id| {
        format!(
            r#"451-{id}["message",{{"room":"general","text":"see attachment","client_id":"bin-1","file":{{"_placeholder":true,"num":0}}}}]"#
        )
    });
    alice.send_binary(vec![0xde, 0xad, 0xbe, 0xef]);
    let reply = pending.wait().await;
    assert_refused(&reply, "bad_request", "a binary attachment");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Binary")),
        "{reply}"
    );
    bob.expect_no_event("message", QUIET).await;
    alice.assert_open();
    assert_ok(
        &alice.request("message", message("text is fine")).await,
        "text",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_in_two_tabs_is_one_member_until_both_leave() {
    let addr = start_server_with(server::ChatOptions {
        departure_grace: std::time::Duration::from_millis(200),
        ..server::ChatOptions::unlimited()
    })
    .await;
    let mut watcher = Client::connect(addr, "watcher").await;
    watcher.join("watcher", "general").await;
    let tab1 = Client::connect(addr, "tab 1").await;
    let session = tab1.join("alice", "general").await["session"].clone();
    watcher.next_event(event::JOINED).await;

    let tab2 = Client::connect(addr, "tab 2").await;
    let reply = tab2.rejoin("alice", "general", &session).await;
    assert_eq!(reply["members"], json!(["watcher", "alice"]));
    watcher.expect_no_event(event::JOINED, QUIET).await;

    // Both tabs hear the room and can speak in it.
    let mut tab1 = tab1;
    let mut tab2 = tab2;
    watcher.say("general", "hello tabs").await;
    assert_eq!(tab1.next_event("message").await["text"], "hello tabs");
    assert_eq!(tab2.next_event("message").await["text"], "hello tabs");
    tab2.say("general", "from tab 2").await;
    assert_eq!(watcher.next_event("message").await["author"], "alice");

    tab1.close().await;
    watcher.expect_no_event(event::LEFT, QUIET).await;
    tab2.close().await;
    let left = watcher.next_event(event::LEFT).await;
    assert_eq!(left["name"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_never_connects_to_the_namespace_is_closed() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let addr = start_server_with(server::ChatOptions::default()).await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("WebSocket handshake");
    // Read (and answer pings) but never send `40`: the server must not keep it for ever.
    let deadline = server::CONNECT_TIMEOUT * 3;
    let closed = tokio::time::timeout(deadline, async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(WsMessage::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the session is still open {deadline:?} after the transport opened"
    );
}
