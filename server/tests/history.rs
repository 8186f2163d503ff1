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
async fn join_since_is_capped_and_says_truncated_until_paged_through() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "bulk").await;
    let sent = say_many(&alice, "bulk", 620).await;

    let bob = Client::connect(addr, "bob").await;
    let first = bob
        .request("join", json!({"name": "bob", "room": "bulk", "since": 0}))
        .await;
    let first_ids = ids(&first["history"]);
    assert!(first_ids.len() <= 500, "at most 500 per page");
    assert_eq!(
        first_ids,
        sent[..first_ids.len()].to_vec(),
        "oldest first, from the start"
    );
    assert_eq!(first["truncated"], json!(true));
    // The client pages on with the last id it got, until the reply is not truncated.
    let mut got = first_ids;
    loop {
        let since = *got.last().unwrap();
        let page = bob
            .request(
                "join",
                json!({"name": "bob", "room": "bulk", "since": since}),
            )
            .await;
        got.extend(ids(&page["history"]));
        if page["truncated"] == json!(false) {
            break;
        }
        assert!(got.len() <= sent.len(), "paging never ends");
    }
    assert_eq!(got, sent, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_pages_are_bounded_in_bytes() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "long").await;
    let text = "x".repeat(4000);
    let mut sent = Vec::new();
    for _ in 0..40 {
        sent.push(alice.say("long", &text).await["id"].as_u64().unwrap());
    }
    let bob = Client::connect(addr, "bob").await;
    let page = bob
        .request("join", json!({"name": "bob", "room": "long", "since": 0}))
        .await;
    let got = ids(&page["history"]);
    let bytes = page["history"].to_string().len();
    assert!(
        bytes <= app::protocol::MAX_REPLY_BYTES + 4_200,
        "{bytes} bytes of history in one reply"
    );
    assert!(
        !got.is_empty() && got.len() < sent.len(),
        "{} of {}",
        got.len(),
        sent.len()
    );
    assert_eq!(page["truncated"], json!(true), "a page cut by size says so");
    // `history` pages are bounded the same way, and say `more`.
    let older = bob
        .request(
            "history",
            json!({"room": "long", "before": u64::MAX >> 12, "limit": 100}),
        )
        .await;
    assert!(older["messages"].to_string().len() <= app::protocol::MAX_REPLY_BYTES + 4_200);
    assert_eq!(older["more"], json!(true));
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
async fn rooms_lists_active_rooms_first_and_empty_rooms_only_while_someone_is_in_them() {
    let addr = start_server().await;
    let alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    alice.join("alice", "older").await;
    let old = alice.say("older", "first").await;
    bob.join("bob", "general").await;
    bob.join("bob", "quiet").await;
    let sent = alice.say("general", "hello").await;

    let reply = alice.request("rooms", json!({})).await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(
        reply["rooms"],
        json!([
            {"name": "general", "online": 2, "last_id": sent["id"], "last_ts": sent["ts"]},
            {"name": "older", "online": 1, "last_id": old["id"], "last_ts": old["ts"]},
            {"name": "quiet", "online": 1, "last_id": 0, "last_ts": null},
        ])
    );
    // A room without a message is gone once nobody is in it.
    bob.request("leave", json!({"room": "quiet"})).await;
    let reply = alice.request("rooms", json!({})).await;
    let names: Vec<&str> = reply["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["general", "older"]);
    // Pages: one room at a time, continued with `next`.
    let first = alice.request("rooms", json!({"limit": 1})).await;
    assert_eq!(first["rooms"][0]["name"], "general");
    assert_eq!(first["more"], json!(true));
    let second = alice
        .request("rooms", json!({"limit": 1, "cursor": first["next"]}))
        .await;
    assert_eq!(second["rooms"][0]["name"], "older");
    assert!(second.get("more").is_none(), "{second}");
}
