//! Several nodes as one chat, through a real Redis started by the test. The nodes here
//! run in this process and share one storage (as nodes share a PostgreSQL database);
//! `nodes.rs` runs the binary as separate processes behind HAProxy on PostgreSQL.

mod process;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use app::protocol::event;
use process::Redis;
use serde_json::json;
use support::{assert_ok, assert_refused, client_id, serve, Client};

struct Cluster {
    nodes: Vec<SocketAddr>,
    redis: Redis,
}

async fn cluster(size: usize, options: server::ChatOptions) -> Cluster {
    let redis = Redis::start().await;
    let storage = server::storage::open("sqlite::memory:").await.unwrap();
    let mut nodes = Vec::new();
    for _ in 0..size {
        let bus = server::cluster::Cluster::connect(&redis.url())
            .await
            .unwrap();
        let built = server::build_node(options.clone(), storage.clone(), Some(bus));
        nodes.push(serve(built.router).await);
    }
    // Let every node hear the others' first heartbeat and snapshot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Cluster { nodes, redis }
}

fn quick() -> server::ChatOptions {
    server::ChatOptions {
        departure_grace: Duration::from_millis(100),
        ..server::ChatOptions::unlimited()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_chat_exactly_once_in_order() {
    let cluster = cluster(3, quick()).await;
    let mut clients = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let client = Client::connect(*node, &format!("n{i}")).await;
        client.join(&format!("n{i}"), "general").await;
        clients.push(client);
    }
    // Each sends 30, pipelined; every client must get the others' 60 once, in id order.
    let mut sent = Vec::new();
    for round in 0..30 {
        for (i, client) in clients.iter().enumerate() {
            sent.push(client.start_request(
                event::MESSAGE,
                json!({"room": "general", "text": format!("{i}:{round}"), "client_id": client_id()}),
            ));
        }
    }
    let mut acked = Vec::new();
    for ack in sent {
        let reply = ack.wait().await;
        assert_ok(&reply, "a send");
        acked.push(reply["message"]["id"].as_u64().unwrap());
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=90).collect::<Vec<_>>(),
        "one sequence across the nodes"
    );
    for (i, client) in clients.iter_mut().enumerate() {
        let mut ids = Vec::new();
        while ids.len() < 60 {
            let m = client.next_event(event::MESSAGE).await;
            assert_ne!(m["author"], format!("n{i}"), "no echo of one's own message");
            ids.push(m["id"].as_u64().unwrap());
        }
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "n{i}: in order: {ids:?}"
        );
        client
            .expect_no_event(event::MESSAGE, Duration::from_millis(300))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_typing_and_changes_cross_nodes() {
    let cluster = cluster(2, quick()).await;
    let [a, b] = [cluster.nodes[0], cluster.nodes[1]];
    let mut alice = Client::connect(a, "alice").await;
    alice.join("alice", "general").await;
    let bob = Client::connect(b, "bob").await;
    let joined = bob.join("bob", "general").await;
    assert_eq!(
        joined["members"],
        json!(["bob", "alice"]),
        "alice on the other node is online"
    );
    assert_eq!(joined["online"], json!(2));
    assert_eq!(alice.next_event(event::JOINED).await["name"], "bob");

    // Typing crosses nodes.
    bob.emit(event::TYPING, json!({"room": "general", "typing": true}));
    let typing = alice.next_event(event::TYPING).await;
    assert_eq!(
        (typing["name"].as_str(), typing["typing"].as_bool()),
        (Some("bob"), Some(true))
    );

    // An edit on one node reaches the other as `updated`.
    let id = bob.say("general", "helo").await["id"].clone();
    alice.next_event(event::MESSAGE).await;
    let edit = bob
        .request(
            event::EDIT,
            json!({"room": "general", "id": id, "text": "hello", "client_id": client_id()}),
        )
        .await;
    assert_ok(&edit, "an edit");
    assert_eq!(alice.next_event(event::UPDATED).await["text"], "hello");

    // A second connection of bob on alice's node is not a new arrival.
    let token = joined["session"].clone();
    let bob_tab = Client::connect(a, "bob's tab").await;
    bob_tab.rejoin("bob", "general", &token).await;
    alice
        .expect_no_event(event::JOINED, Duration::from_millis(400))
        .await;
    // Bob leaves on one node but is still there on the other: nobody is told.
    bob.request(event::LEAVE, json!({"room": "general"})).await;
    alice
        .expect_no_event(event::LEFT, Duration::from_millis(400))
        .await;
    bob_tab
        .request(event::LEAVE, json!({"room": "general"}))
        .await;
    assert_eq!(alice.next_event(event::LEFT).await["name"], "bob");
}

/// `rooms` on one node lists the rooms people are in on the others, with their online
/// counts, whether the room has messages yet or not, and each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_counts_people_on_every_node() {
    let cluster = cluster(2, quick()).await;
    let [a, b] = [cluster.nodes[0], cluster.nodes[1]];
    let carol = Client::connect(a, "carol").await;
    carol.join("carol", "quiet").await;
    let dave = Client::connect(a, "dave").await;
    dave.join("dave", "talky").await;
    dave.say("talky", "hello").await;
    let bob = Client::connect(b, "bob").await;
    bob.join("bob", "general").await;
    let listed = |reply: &serde_json::Value| -> BTreeMap<String, u64> {
        reply["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|room| {
                let name = room["name"].as_str().unwrap().to_owned();
                (name, room["online"].as_u64().unwrap())
            })
            .collect()
    };
    let expected: BTreeMap<String, u64> = [("general", 1), ("quiet", 1), ("talky", 1)]
        .into_iter()
        .map(|(name, online)| (name.to_owned(), online))
        .collect();
    // Presence reaches b through Redis: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = bob.request(event::ROOMS, json!({})).await;
        let rooms = reply["rooms"].as_array().expect("rooms").len();
        if listed(&reply) == expected {
            assert_eq!(rooms, 3, "each room once: {reply}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b lists the rooms of both nodes: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Paged one at a time, the same rooms, each once.
    let mut paged = BTreeMap::new();
    let mut cursor = None;
    for _ in 0..10 {
        let reply = bob
            .request(event::ROOMS, json!({"limit": 1, "cursor": cursor}))
            .await;
        for (name, online) in listed(&reply) {
            assert!(
                paged.insert(name, online).is_none(),
                "listed twice: {reply}"
            );
        }
        if reply["more"] != json!(true) {
            break;
        }
        cursor = Some(reply["next"].clone());
    }
    assert_eq!(paged, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_name_let_exactly_one_win() {
    let cluster = cluster(2, quick()).await;
    for round in 0..20 {
        let name = format!("contested{round}");
        let first = Client::connect(cluster.nodes[0], "first").await;
        let second = Client::connect(cluster.nodes[1], "second").await;
        let a = first.start_request(event::JOIN, json!({"name": name, "room": "general"}));
        let b = second.start_request(event::JOIN, json!({"name": name, "room": "general"}));
        let (a, b) = (a.wait().await, b.wait().await);
        let won = [&a, &b].iter().filter(|r| r["ok"] == json!(true)).count();
        assert_eq!(won, 1, "round {round}: {a} / {b}");
        let lost = if a["ok"] == json!(true) { &b } else { &a };
        assert_refused(lost, "name_taken", "the loser");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limits_hold_across_nodes() {
    let options = server::ChatOptions {
        limits: server::chat::limits::AbuseLimits {
            max_connections_per_client: 2,
            client_messages: server::chat::limits::RateLimit::new(1.0, 3.0),
            ..server::chat::limits::AbuseLimits::unlimited()
        },
        ..quick()
    };
    let cluster = cluster(3, options).await;
    let one = Client::connect(cluster.nodes[0], "one").await;
    let two = Client::connect(cluster.nodes[1], "two").await;
    let mut third = Client::open(cluster.nodes[2], "three").await;
    let refused = third.try_wait_connected(Duration::from_secs(5)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("too many connections")),
        "a third connection from the address on a third node: {refused:?}"
    );
    // The message budget is the address', whichever node its connections are on.
    one.join("one", "general").await;
    two.join("two", "general").await;
    let mut outcomes = Vec::new();
    for n in 0..6 {
        let sender = if n % 2 == 0 { &one } else { &two };
        let reply = sender
            .request(
                event::MESSAGE,
                json!({"room": "general", "text": format!("m{n}"), "client_id": client_id()}),
            )
            .await;
        outcomes.push(reply["ok"] == json!(true));
    }
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        3,
        "a burst of 3 for the address: {outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_three_seconds_under_load_loses_nothing() {
    let cluster = cluster(2, quick()).await;
    let sender = Client::connect(cluster.nodes[0], "sender").await;
    sender.join("sender", "busy").await;
    let mut receiver = Client::connect(cluster.nodes[1], "receiver").await;
    receiver.join("receiver", "busy").await;
    let send = |n: usize| {
        let payload =
            json!({"room": "busy", "text": format!("m{n}"), "client_id": format!("c{n}")});
        sender.request(event::MESSAGE, payload)
    };
    let mut acked = Vec::new();
    for n in 0..50 {
        acked.push(send(n).await["message"]["id"].as_u64().unwrap());
    }
    cluster.redis.pause();
    let frozen = std::time::Instant::now();
    let mut n = 50;
    while frozen.elapsed() < Duration::from_secs(3) {
        // Commits need no Redis: sending goes on on the sender's node.
        acked.push(send(n).await["message"]["id"].as_u64().unwrap());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.redis.resume();
    for _ in 0..50 {
        acked.push(send(n).await["message"]["id"].as_u64().unwrap());
        n += 1;
    }
    let mut seen = BTreeMap::new();
    while seen.len() < acked.len() {
        let m = receiver
            .next_event_within(event::MESSAGE, Duration::from_secs(15))
            .await;
        let id = m["id"].as_u64().unwrap();
        assert!(seen.insert(id, m).is_none(), "message {id} twice");
        assert_eq!(seen.keys().next_back(), Some(&id), "out of order at {id}");
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), acked);
    receiver
        .expect_no_event(event::MESSAGE, Duration::from_millis(500))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_leaves_the_online_lists() {
    let redis = Redis::start().await;
    let storage = server::storage::open("sqlite::memory:").await.unwrap();
    let staying_bus = server::cluster::Cluster::connect(&redis.url())
        .await
        .unwrap();
    let staying =
        serve(server::build_node(quick(), storage.clone(), Some(staying_bus)).router).await;
    let leaving_bus = server::cluster::Cluster::connect(&redis.url())
        .await
        .unwrap();
    let leaving = server::build_node(quick(), storage.clone(), Some(leaving_bus));
    let (leaving_io, leaving_chat) = (leaving.io.clone(), leaving.chat.clone());
    let leaving_addr = serve(leaving.router).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut alice = Client::connect(staying, "alice").await;
    alice.join("alice", "general").await;
    let bob = Client::connect(leaving_addr, "bob").await;
    bob.join("bob", "general").await;
    assert_eq!(alice.next_event(event::JOINED).await["name"], "bob");
    // Its node shuts down: bob leaves the lists everywhere.
    leaving_chat.shut_down(&leaving_io).await;
    let left = alice.next_event(event::LEFT).await;
    assert_eq!(left["name"], "bob");
    let watcher = Client::connect(staying, "watcher").await;
    let reply = watcher.join("watcher", "general").await;
    assert_eq!(reply["members"], json!(["alice", "watcher"]));
    let _ = Arc::strong_count(&storage);
}
