//! `cargo bench -p server`: how Banter's durable chat performs on this machine.
//!
//! 1. Sustained persisted messages per second: many Socket.IO senders over real
//!    WebSockets, each keeping a window of messages in flight, every message committed to
//!    SQLite before its ack (the writer groups commits).
//! 2. `join` with `since` in a room holding 1,000,000 messages.
//! 3. `search` over those 1,000,000 messages (the aim: p95 under 50 ms).
//!
//! The load generator shares the server's process and cores, and its test client records
//! every frame; `cargo run --release -p server --example load` drives the release binary
//! from a process of its own instead (see README.md, Performance).
//!
//! Numbers are printed, never asserted. Sizes can be scaled with BANTER_BENCH_SENDERS,
//! BANTER_BENCH_MESSAGES and BANTER_BENCH_ROOM_SIZE.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use server::storage::{Change, ChangeKind, Owner};
use support::{serve, Client};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other flags.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("banter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let storage = server::storage::open(&url).await.unwrap();
    // One process on loopback plays every client: no rate limits or connection caps.
    let options = server::ChatOptions::unlimited();
    let addr = serve(server::app(options, storage.clone())).await;

    persisted_messages_per_second(addr).await;
    join_since_in_a_big_room(addr, storage.as_ref()).await;
    search_a_big_room(storage.as_ref()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn persisted_messages_per_second(addr: std::net::SocketAddr) {
    let senders = env_usize("BANTER_BENCH_SENDERS", 100);
    let per_sender = env_usize("BANTER_BENCH_MESSAGES", 2_000);
    const WINDOW: usize = 32;

    let mut clients = Vec::with_capacity(senders);
    for i in 0..senders {
        let client = Client::connect(addr, &format!("s{i}")).await;
        client
            .join(&format!("s{i}"), &format!("bench{}", i % 10))
            .await;
        clients.push(client);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(async move {
                let room = format!("bench{}", i % 10);
                let mut in_flight = std::collections::VecDeque::with_capacity(WINDOW);
                for n in 0..per_sender {
                    if in_flight.len() == WINDOW {
                        let ack: support::PendingAck = in_flight.pop_front().unwrap();
                        assert_eq!(ack.wait_for(Duration::from_secs(60)).await["ok"], json!(true));
                    }
                    in_flight.push_back(client.start_request(
                        "message",
                        json!({"room": room, "text": format!("load {n}"), "client_id": format!("s{i}-{n}")}),
                    ));
                }
                for ack in in_flight {
                    assert_eq!(ack.wait_for(Duration::from_secs(60)).await["ok"], json!(true));
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = senders * per_sender;
    println!(
        "persisted messages: {total} from {senders} senders (10 rooms, {WINDOW} in flight each) in {:.2?}: {:.0} acked messages/s",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
}

/// Varied text, so that searches have rare and common words to find: a few words from a
/// small vocabulary, a number, and one word of another script now and then.
fn fill_text(id: u64) -> String {
    const WORDS: [&str; 16] = [
        "deploy", "friday", "review", "lunch", "coffee", "release", "meeting", "bug", "design",
        "budget", "travel", "weekend", "report", "server", "client", "question",
    ];
    let word = |k: u64| WORDS[(id.wrapping_mul(k) % WORDS.len() as u64) as usize];
    let extra = if id.is_multiple_of(97) {
        " привет"
    } else {
        ""
    };
    format!("{} {} {} number {id}{extra}", word(7), word(13), word(31))
}

/// Searches over the big room: a rare word, a common one, a number, two words, and one
/// that matches nothing; p50 and p95 of 100 runs each (the first page of 50).
async fn search_a_big_room(storage: &dyn server::storage::Storage) {
    // Let the last rows move from the journal into the searchable tables.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let limit = server::storage::ReadLimit {
        limit: 50,
        max_bytes: app::protocol::MAX_REPLY_BYTES,
    };
    for query in [
        "привет",
        "deploy",
        "number 424242",
        "coffee friday",
        "nothing like this",
    ] {
        let mut times = Vec::with_capacity(100);
        let mut found = 0;
        for _ in 0..100 {
            let started = Instant::now();
            let page = storage
                .search(query, Some("big"), limit, None)
                .await
                .unwrap();
            times.push(started.elapsed());
            found = page.messages.len();
        }
        times.sort();
        println!(
            "search {query:?} over the big room: {found} on the first page, p50 {:.2?}, p95 {:.2?}",
            times[49], times[94]
        );
    }
}

async fn join_since_in_a_big_room(
    addr: std::net::SocketAddr,
    storage: &dyn server::storage::Storage,
) {
    let size = env_usize("BANTER_BENCH_ROOM_SIZE", 1_000_000) as u64;
    let started = Instant::now();
    let mut next = storage.last_seq("big").await.unwrap() + 1;
    while next <= size {
        let batch: Vec<Change> = (next..(next + 10_000).min(size + 1))
            .map(|id| Change {
                room: "big".into(),
                owner: Owner(format!("user{}", id % 100)),
                author: format!("user{}", id % 100),
                client_id: format!("fill-{id}"),
                ts: 1_700_000_000_000 + id as i64,
                kind: ChangeKind::Post {
                    text: fill_text(id),
                    reply_to: None,
                },
            })
            .collect();
        next += batch.len() as u64;
        storage.append(batch).await.unwrap();
    }
    println!(
        "filled room 'big' with {size} messages in {:.2?}",
        started.elapsed()
    );

    let client = Client::connect(addr, "reader").await;
    for (label, since) in [
        ("the last 100", size - 100),
        ("500 of 1,000,000 (truncated)", 0),
        ("none new", size),
    ] {
        let rounds = 50;
        let started = Instant::now();
        let mut returned = 0;
        for _ in 0..rounds {
            let reply = client
                .request(
                    "join",
                    json!({"name": "reader", "room": "big", "since": since}),
                )
                .await;
            returned = reply["history"].as_array().unwrap().len();
        }
        println!(
            "join with since in a {size}-message room, {label}: {returned} messages, {:.2?} per join",
            started.elapsed() / rounds
        );
    }
}
