//! Contract v2 against a real server: edits, deletes, reactions, replies, history
//! around a message, search, watch and activity, batched presence and the departure
//! grace; and the promise that a client away for any length of time catches up to
//! exactly what a fresh client sees, across a `kill -9` too.

mod process;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use app::protocol::{event, Message};
use process::{free_addr, ServerProcess, TempDir};
use serde_json::{json, Value};
use support::{
    assert_ok, assert_refused, client_id, start_server, start_server_with, Client, QUIET,
};

fn message(value: &Value) -> Message {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("not a Message ({e}): {value}"))
}

async fn pair(addr: std::net::SocketAddr) -> (Client, Client) {
    let alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    (alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_are_the_authors_and_reach_everyone() {
    let addr = start_server().await;
    let (mut alice, mut bob) = pair(addr).await;
    let sent = alice.say("general", "helo").await;
    let id = sent["id"].as_u64().unwrap();
    bob.next_event(event::MESSAGE).await;

    let edit =
        |text: &str| json!({"room": "general", "id": id, "text": text, "client_id": client_id()});
    let refused = bob.request(event::EDIT, edit("bob was here")).await;
    assert_refused(&refused, "not_yours", "bob editing alice's message");
    let edited = alice.request(event::EDIT, edit("hello")).await;
    assert_ok(&edited, "alice's edit");
    let edited = message(&edited["message"]);
    assert_eq!((edited.id, edited.text.as_str()), (id, "hello"));
    assert!(edited.rev > id && edited.edited_ts.is_some());
    let seen = message(&bob.next_event(event::UPDATED).await);
    assert_eq!(seen, edited, "the others get the new version");
    alice.expect_no_event(event::UPDATED, QUIET).await;

    let missing = alice
        .request(
            event::EDIT,
            json!({"room": "general", "id": 999, "text": "x", "client_id": client_id()}),
        )
        .await;
    assert_refused(&missing, "not_found", "an edit of nothing");
    let empty = alice.request(event::EDIT, edit("   ")).await;
    assert_refused(&empty, "empty", "an empty edit");

    let delete = json!({"room": "general", "id": id, "client_id": "del-1"});
    assert_refused(
        &bob.request(event::DELETE, delete.clone()).await,
        "not_yours",
        "bob deleting",
    );
    let deleted = alice.request(event::DELETE, delete.clone()).await;
    assert_ok(&deleted, "alice's delete");
    let deleted = message(&deleted["message"]);
    assert!(deleted.deleted && deleted.text.is_empty());
    assert_eq!(message(&bob.next_event(event::UPDATED).await), deleted);
    // A resend of the delete (lost ack) is applied once.
    let again = alice.request(event::DELETE, delete).await;
    assert_eq!(message(&again["message"]), deleted);
    bob.expect_no_event(event::UPDATED, QUIET).await;
    assert_refused(
        &alice.request(event::EDIT, edit("back")).await,
        "gone",
        "editing a deleted message",
    );
    // A newcomer sees the placeholder, without the text.
    let carol = Client::connect(addr, "carol").await;
    let joined = carol.join("carol", "general").await;
    assert_eq!(joined["history"][0]["deleted"], json!(true));
    assert_eq!(joined["history"][0]["text"], json!(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_toggle_and_name_who_gave_them() {
    let addr = start_server().await;
    let (alice, mut bob) = pair(addr).await;
    let id = alice.say("general", "ship it?").await["id"]
        .as_u64()
        .unwrap();
    bob.next_event(event::MESSAGE).await;
    let react = |emoji: &str, add: bool| json!({"room": "general", "id": id, "emoji": emoji, "add": add, "client_id": client_id()});
    let reply = bob.request(event::REACT, react("👍", true)).await;
    assert_ok(&reply, "a reaction");
    assert_eq!(
        reply["message"]["reactions"],
        json!([{"emoji": "👍", "names": ["bob"]}])
    );
    let reply = alice.request(event::REACT, react("👍", true)).await;
    assert_eq!(
        reply["message"]["reactions"],
        json!([{"emoji": "👍", "names": ["bob", "alice"]}])
    );
    assert_eq!(
        bob.next_event(event::UPDATED).await["reactions"][0]["names"],
        json!(["bob", "alice"])
    );
    let reply = bob.request(event::REACT, react("👍", false)).await;
    assert_eq!(
        reply["message"]["reactions"],
        json!([{"emoji": "👍", "names": ["alice"]}])
    );
    for not_one in ["ok", "👍👍", "", "<b>"] {
        assert_refused(
            &bob.request(event::REACT, react(not_one, true)).await,
            "bad_request",
            not_one,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_quote_their_original_and_history_finds_it() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let (alice, bob) = pair(addr).await;
    let original = alice.say("general", "Lunch at noon?\nI'll book").await;
    for n in 0..120 {
        alice.say("general", &format!("filler {n}")).await;
    }
    let reply = bob
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "yes", "client_id": client_id(), "reply_to": original["id"]}),
        )
        .await;
    assert_ok(&reply, "a reply");
    assert_eq!(
        reply["message"]["reply_to"],
        json!({"id": original["id"], "author": "alice", "excerpt": "Lunch at noon?…"})
    );
    let nowhere = bob
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "?", "client_id": client_id(), "reply_to": 99_999}),
        )
        .await;
    assert_refused(&nowhere, "not_found", "a reply to nothing");
    // The original is long out of the latest page: `around` brings it with its neighbours.
    let around = bob
        .request(
            event::HISTORY,
            json!({"room": "general", "around": original["id"], "limit": 10}),
        )
        .await;
    assert_ok(&around, "history around");
    let ids: Vec<u64> = around["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert!(ids.contains(&original["id"].as_u64().unwrap()), "{ids:?}");
    assert_eq!(
        ids.len(),
        10,
        "nothing before the first message: itself and nine after"
    );
    assert_eq!(around["newer"], json!(true));
    let neither = bob
        .request(event::HISTORY, json!({"room": "general", "limit": 10}))
        .await;
    assert_refused(&neither, "bad_request", "history without before or around");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_messages_newest_first() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let (alice, bob) = pair(addr).await;
    alice.say("general", "the deploy is on friday").await;
    alice.join("alice", "ops").await;
    alice.say("ops", "Friday deploy moved to Monday").await;
    let secret = alice.say("ops", "deploy key is in the vault").await;
    alice
        .request(
            event::DELETE,
            json!({"room": "ops", "id": secret["id"], "client_id": client_id()}),
        )
        .await;
    // Messages become searchable within moments of being stored.
    let mut found = Value::Null;
    for _ in 0..100 {
        found = bob
            .request(event::SEARCH, json!({"query": "friday deploy"}))
            .await;
        if found["results"].as_array().is_some_and(|r| r.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ok(&found, "search");
    let texts: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["Friday deploy moved to Monday", "the deploy is on friday"]
    );
    let only = bob
        .request(event::SEARCH, json!({"query": "deploy", "room": "general"}))
        .await;
    assert_eq!(only["results"].as_array().unwrap().len(), 1);
    let gone = bob.request(event::SEARCH, json!({"query": "vault"})).await;
    assert_eq!(gone["results"], json!([]), "deleted text is not found");
    assert_refused(
        &bob.request(event::SEARCH, json!({"query": "ab"})).await,
        "bad_request",
        "a short query",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_rooms_report_unread_messages_and_mentions() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let mut alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "ops").await;
    let first = bob.say("ops", "morning").await;
    bob.say("ops", "@alice can you look?").await;
    let watch = alice
        .request(
            event::WATCH,
            json!({"rooms": [{"room": "ops", "read": first["id"]}]}),
        )
        .await;
    assert_ok(&watch, "watch");
    assert_eq!(watch["rooms"][0]["unread"], json!(1));
    assert_eq!(watch["rooms"][0]["mentions"], json!(1));
    assert_eq!(watch["rooms"][0]["online"], json!(1));
    let third = bob.say("ops", "ping @[ALICE] again").await;
    let activity = alice.next_event(event::ACTIVITY).await;
    assert_eq!(activity["room"], "ops");
    assert_eq!(activity["last_id"], third["id"]);
    assert_eq!(
        activity["messages"],
        json!([{"id": third["id"], "author": "bob", "mentions": ["alice"]}])
    );
    // Watching nothing stops the notices.
    alice.request(event::WATCH, json!({"rooms": []})).await;
    bob.say("ops", "quiet now").await;
    alice
        .expect_no_event(event::ACTIVITY, Duration::from_millis(1_500))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_gets_presence_in_batches_and_a_reconnect_is_not_announced() {
    let addr = start_server_with(server::ChatOptions {
        departure_grace: Duration::from_millis(800),
        ..server::ChatOptions::unlimited()
    })
    .await;
    let mut modern = Client::connect_v2(addr, "modern").await;
    let mut legacy = Client::connect(addr, "legacy").await;
    modern.join("modern", "general").await;
    legacy.join("legacy", "general").await;
    // A batch may name the receiver itself (its own arrival); clients skip their name.
    let batch = modern
        .next_event_where(event::PRESENCE, support::EVENT_TIMEOUT, |b| {
            b["joined"]
                .as_array()
                .is_some_and(|j| j.contains(&json!("legacy")))
        })
        .await;
    assert_eq!(batch["online"], json!(2));

    // Three arrive at once: one batch for protocol 2, one `joined` each for protocol 1.
    let mut arrivals = Vec::new();
    for n in 0..3 {
        let c = Client::connect(addr, &format!("p{n}")).await;
        c.join(&format!("p{n}"), "general").await;
        arrivals.push(c);
    }
    let batch = modern.next_event(event::PRESENCE).await;
    assert_eq!(batch["joined"], json!(["p0", "p1", "p2"]));
    for _ in 0..3 {
        legacy.next_event(event::JOINED).await;
    }
    modern.expect_no_event(event::JOINED, QUIET).await;

    // p0 reloads: its connection drops and comes back within the grace. Nobody is told.
    let p0 = arrivals.remove(0);
    let token = p0.join("p0", "general").await["session"].clone();
    p0.close().await;
    let back = Client::connect(addr, "p0 again").await;
    back.request(
        event::JOIN,
        json!({"name": "p0", "room": "general", "session": token, "resume": true}),
    )
    .await;
    legacy
        .expect_no_event(event::LEFT, Duration::from_millis(1_200))
        .await;
    modern
        .expect_no_event(event::PRESENCE, Duration::ZERO)
        .await;
    // p1 goes for good: announced once the grace is over.
    arrivals.remove(0).close().await;
    let left = legacy.next_event(event::LEFT).await;
    assert_eq!(left["name"], "p1");
    let batch = modern.next_event(event::PRESENCE).await;
    assert_eq!(batch["left"], json!(["p1"]));
    // After a restart everyone rejoins with `resume`: online again, not announced.
    let p2 = arrivals.remove(0);
    let p2_token = p2.join("p2", "general").await["session"].clone();
    p2.request(event::LEAVE, json!({"room": "general"})).await;
    modern.next_event(event::PRESENCE).await;
    p2.request(
        event::JOIN,
        json!({"name": "p2", "room": "general", "session": p2_token, "resume": true}),
    )
    .await;
    let batch = modern.next_event(event::PRESENCE).await;
    assert_eq!(
        (batch["returned"].clone(), batch.get("joined")),
        (json!(["p2"]), None)
    );
}

/// What a client holds of a room, merged as PROTOCOL.md's Reconnecting says.
#[derive(Default, Debug)]
struct View(BTreeMap<u64, Message>, Option<Value>);

impl PartialEq for View {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl View {
    fn apply(&mut self, message: Message) {
        match self.0.get(&message.id) {
            Some(known) if known.version() >= message.version() => {}
            _ => {
                self.0.insert(message.id, message);
            }
        }
    }

    fn cursor(&self) -> u64 {
        self.0.values().map(Message::version).max().unwrap_or(0)
    }

    /// Rejoins with `since` and applies the reply (paging a truncated catch-up).
    async fn catch_up(&mut self, client: &Client, name: &str, room: &str) {
        let mut since = self.cursor();
        loop {
            let mut request = json!({"name": name, "room": room, "since": since, "resume": true});
            if let Some(session) = &self.1 {
                request["session"] = session.clone();
            }
            let reply = client.request(event::JOIN, request).await;
            assert_ok(&reply, "a catch-up join");
            self.1 = Some(reply["session"].clone());
            if reply["reset"] == json!(true) {
                self.0.clear();
            }
            let history: Vec<Message> = serde_json::from_value(reply["history"].clone()).unwrap();
            let updates: Vec<Message> =
                serde_json::from_value(reply.get("updates").cloned().unwrap_or(json!([]))).unwrap();
            for m in updates {
                self.apply(m);
            }
            let last = history.last().map(|m| m.id);
            for m in history {
                self.apply(m);
            }
            if reply["truncated"] != json!(true) {
                return;
            }
            since = last.unwrap();
        }
    }

    /// What a fresh client sees of the same messages: everything, read back in full.
    async fn fresh(client: &Client, name: &str, room: &str) -> View {
        let mut view = View::default();
        let reply = client
            .request(event::JOIN, json!({"name": name, "room": room, "since": 0}))
            .await;
        let mut reply = reply;
        loop {
            let history: Vec<Message> = serde_json::from_value(reply["history"].clone()).unwrap();
            let last = history.last().map(|m| m.id);
            for m in history {
                view.apply(m);
            }
            if reply["truncated"] != json!(true) {
                return view;
            }
            reply = client
                .request(
                    event::JOIN,
                    json!({"name": name, "room": room, "since": last.unwrap()}),
                )
                .await;
        }
    }
}

/// 150 messages; while a reader is away, 100 of them are edited, deleted or reacted to
/// and 30 more arrive; the reader comes back with `since` and holds exactly what a fresh
/// client holds, with no duplicate and no gap.
async fn away_while_100_messages_change(
    addr: std::net::SocketAddr,
    writer: &Client,
    reader: &mut View,
    reader_client: &Client,
) {
    let room = "changing";
    let mut ids = Vec::new();
    for n in 0..150 {
        ids.push(
            writer.say(room, &format!("m{n}")).await["id"]
                .as_u64()
                .unwrap(),
        );
    }
    reader.catch_up(reader_client, "reader", room).await;
    assert_eq!(reader.0.len(), 150);
    let _ = addr;
    for (k, id) in ids.iter().enumerate().take(100) {
        let payload = match k % 3 {
            0 => (
                event::EDIT,
                json!({"room": room, "id": id, "text": format!("edited {k}"), "client_id": client_id()}),
            ),
            1 => (
                event::DELETE,
                json!({"room": room, "id": id, "client_id": client_id()}),
            ),
            _ => (
                event::REACT,
                json!({"room": room, "id": id, "emoji": "🎉", "add": true, "client_id": client_id()}),
            ),
        };
        assert_ok(&writer.request(payload.0, payload.1).await, "a change");
    }
    for n in 150..180 {
        writer.say(room, &format!("m{n}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_while_messages_change_catches_up_to_a_fresh_view() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let writer = Client::connect(addr, "writer").await;
    writer.join("writer", "changing").await;
    let reader_client = Client::connect(addr, "reader").await;
    let mut reader = View::default();
    away_while_100_messages_change(addr, &writer, &mut reader, &reader_client).await;
    reader_client.close().await;
    let back = Client::connect(addr, "reader back").await;
    reader.catch_up(&back, "reader", "changing").await;
    let fresh_client = Client::connect(addr, "fresh").await;
    let fresh = View::fresh(&fresh_client, "fresh", "changing").await;
    assert_eq!(reader.0.len(), 180);
    assert_eq!(reader, fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catch_up_holds_across_a_kill_9() {
    let dir = TempDir::new("changes-crash");
    let addr = free_addr();
    let flags = &[
        "--message-rate",
        "0",
        "--ip-message-rate",
        "0",
        "--request-rate",
        "0",
        "--ip-request-rate",
        "0",
    ];
    let mut server = ServerProcess::start(addr, &dir.database(), flags, "warn").await;
    let writer = Client::connect(addr, "writer").await;
    writer.join("writer", "changing").await;
    let reader_client = Client::connect(addr, "reader").await;
    let mut reader = View::default();
    away_while_100_messages_change(addr, &writer, &mut reader, &reader_client).await;
    server.kill_9();
    drop((writer, reader_client));
    let _again = ServerProcess::start(addr, &dir.database(), flags, "warn").await;
    let back = Client::connect(addr, "reader back").await;
    reader.catch_up(&back, "reader", "changing").await;
    let fresh_client = Client::connect(addr, "fresh").await;
    let fresh = View::fresh(&fresh_client, "fresh", "changing").await;
    assert_eq!(reader.0.len(), 180);
    assert_eq!(reader, fresh);
}
