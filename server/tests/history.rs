//! Contract additions for durable history: `join` with `since`, `history` paging,
//! idempotent resends by `client_id`, and the `rooms` list.

mod support;

use serde_json::{json, Value};
use support::{assert_refused, client_id, start_server, Client, QUIET};

fn ids(messages: &Value) -> Vec<u64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

async fn say_many(client: &Client, room: &str, count: usize) -> Vec<u64> {
    let pending: Vec<_> = (0..count)
        .map(|i| {
            client.start_request(
                "message",
                json!({"room": room, "text": format!("message {i}"), "client_id": client_id()}),
            )
        })
        .collect();
    let mut ids = Vec::with_capacity(count);
    for ack in pending {
        let reply = ack.wait().await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        ids.push(reply["message"]["id"].as_u64().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_returns_the_latest_fifty_or_everything_since() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "general").await;
    let sent = say_many(&alice, "general", 120).await;

    let bob = Client::connect(addr, "bob").await;
    let reply = bob.join("bob", "general").await;
    assert_eq!(
        ids(&reply["history"]),
        sent[70..].to_vec(),
        "latest 50, oldest first"
    );
    assert_eq!(reply["truncated"], json!(false));

    let carol = Client::connect(addr, "carol").await;
    let reply = carol
        .request(
            "join",
            json!({"name": "carol", "room": "general", "since": sent[99]}),
        )
        .await;
    assert_eq!(
        ids(&reply["history"]),
        sent[100..].to_vec(),
        "everything after since"
    );
    assert_eq!(reply["truncated"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_since_is_capped_at_500_and_says_truncated() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "bulk").await;
    let sent = say_many(&alice, "bulk", 620).await;

    let bob = Client::connect(addr, "bob").await;
    let first = bob
        .request("join", json!({"name": "bob", "room": "bulk", "since": 0}))
        .await;
    assert_eq!(ids(&first["history"]), sent[..500].to_vec());
    assert_eq!(first["truncated"], json!(true));
    // The client pages on with the last id it got.
    let second = bob
        .request(
            "join",
            json!({"name": "bob", "room": "bulk", "since": sent[499]}),
        )
        .await;
    assert_eq!(ids(&second["history"]), sent[500..].to_vec());
    assert_eq!(second["truncated"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_through_1000_messages() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "scroll").await;
    let sent = say_many(&alice, "scroll", 1000).await;

    let mut seen: Vec<u64> = Vec::new();
    let mut before = u64::MAX;
    loop {
        let page = alice
            .request(
                "history",
                json!({"room": "scroll", "before": before, "limit": 100}),
            )
            .await;
        assert_eq!(page["ok"], json!(true), "{page}");
        let mut page_ids = ids(&page["messages"]);
        assert!(page_ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        before = page_ids.first().copied().unwrap_or(0);
        page_ids.extend(seen);
        seen = page_ids;
        if page["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(seen, sent, "every message exactly once, in order");

    for (payload, code) in [
        (
            json!({"room": "scroll", "before": 10, "limit": 101}),
            "bad_request",
        ),
        (
            json!({"room": "scroll", "before": 10, "limit": 0}),
            "bad_request",
        ),
        (json!({"room": "scroll", "before": "x"}), "bad_request"),
        (json!({"room": "elsewhere", "before": 10}), "not_joined"),
    ] {
        let reply = alice.request("history", payload.clone()).await;
        assert_refused(&reply, code, &payload.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_client_id_is_stored_and_broadcast_once() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    let session = alice.join("alice", "general").await["session"].clone();
    bob.join("bob", "general").await;

    let payload = json!({"room": "general", "text": "only once", "client_id": "resend-1"});
    let first = alice.request("message", payload.clone()).await;
    let again = alice.request("message", payload.clone()).await;
    assert_eq!(
        first["message"], again["message"],
        "the original comes back"
    );
    // Even from a new connection of the same author (a reconnect).
    alice.close().await;
    let alice = Client::connect(addr, "alice again").await;
    alice.rejoin("alice", "general", &session).await;
    let third = alice.request("message", payload).await;
    assert_eq!(first["message"], third["message"]);

    let relayed = bob.next_event("message").await;
    assert_eq!(relayed, first["message"]);
    bob.expect_no_event("message", QUIET).await;

    let carol = Client::connect(addr, "carol").await;
    let joined = carol.join("carol", "general").await;
    assert_eq!(ids(&joined["history"]).len(), 1, "stored once: {joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_lists_rooms_with_online_counts_and_last_message_time() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    bob.join("bob", "quiet").await;
    let sent = alice.say("general", "hello").await;
    bob.request("leave", json!({"room": "quiet"})).await;

    let reply = alice.request("rooms", json!({})).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(
        reply["rooms"],
        json!([
            {"name": "general", "online": 2, "last_id": sent["id"], "last_ts": sent["ts"]},
            {"name": "quiet", "online": 0, "last_id": 0, "last_ts": null},
        ])
    );
}
