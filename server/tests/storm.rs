//! Load: many clients connecting at once must each get their first request answered,
//! and a burst of unacknowledged-yet requests must be acked and relayed completely and
//! in order.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use app::protocol::event;
use serde_json::{json, Value};
use support::{client_id, start_server, Client};

const CLIENTS: usize = 500;
const ROOMS: usize = 10;
const STORM_LIMIT: Duration = Duration::from_secs(60);

/// The soft limit on open files, from /proc (Linux), if readable.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many clients a storm test may open. Both storm tests may run at the same time in
/// this process, and every client costs two descriptors here (client and server side).
fn storm_size() -> usize {
    match open_files_limit() {
        Some(limit) if limit < 4 * CLIENTS + 256 => {
            let n = limit.saturating_sub(256) / 4;
            eprintln!(
                "storm: the open files limit is {limit}, too low for {CLIENTS} clients in two \
                 concurrent storms; using {n} clients each (raise `ulimit -n` to run the full size)"
            );
            n.max(10)
        }
        _ => CLIENTS,
    }
}

/// Connects `n` clients at once; each sends `join` as its first event right after the
/// connect reply.
async fn storm() {
    let addr = start_server().await;
    let n = storm_size();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let name = format!("user{i}");
            let room = format!("room{}", i % ROOMS);
            let mut client = Client::try_open(addr, &name).await?;
            client.try_wait_connected(STORM_LIMIT).await?;
            let reply = client
                .start_request("join", json!({"name": name, "room": room}))
                .try_wait_for(STORM_LIMIT)
                .await?;
            if reply["ok"] != json!(true)
                || reply["name"] != json!(name)
                || reply["room"] != json!(room)
            {
                return Err(format!("[{name}] join refused or wrong: {reply}"));
            }
            let listed = reply["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|v| v == &json!(name)));
            if !listed {
                return Err(format!("[{name}] not among the members: {reply}"));
            }
            // Keep the connection open until every client has been answered.
            Ok::<Client, String>(client)
        }));
    }

    let all = tokio::time::timeout(STORM_LIMIT, futures_util::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{n} joins did not all complete within {STORM_LIMIT:?}"));
    let mut clients = Vec::new();
    let mut failures = Vec::new();
    for result in all {
        match result {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("task failed: {e}")),
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {n} clients did not get their join ack; first failures:\n{}",
            failures.len(),
            failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // The server is still healthy: one message per room reaches that room.
    let (first, rest) = clients.split_at_mut(ROOMS.min(n));
    for (r, sender) in first.iter().enumerate() {
        let m = sender.say(&format!("room{r}"), "after the storm").await;
        if let Some(listener) = rest
            .iter_mut()
            .find(|c| c.label() == format!("user{}", r + ROOMS))
        {
            let got = listener
                .next_event_where(event::MESSAGE, support::EVENT_TIMEOUT, |v| {
                    v["id"] == m["id"]
                })
                .await;
            assert_eq!(got, m);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_first_event_after_the_connect_reply_is_never_dropped() {
    storm().await;
}

/// Pins socketioxide 0.18.9's handling of an event sent before the CONNECT reply, under
/// load: every one of a storm of clients that writes its `join` in the same write as its
/// `40` is closed without an answer, and the server stays healthy for everyone else. See
/// `pinned_upstream_an_event_before_the_connect_reply_closes_the_connection` in
/// contract.rs for why Banter leaves this alone; if this fails, socketioxide changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_upstream_a_storm_of_events_before_the_connect_reply_is_closed() {
    let addr = start_server().await;
    let n = storm_size();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                let name = format!("eager{i}");
                let outcome = join_pipelined_behind_the_connect(addr, &name, STORM_LIMIT).await;
                (name, outcome)
            })
        })
        .collect();
    let all = tokio::time::timeout(STORM_LIMIT, futures_util::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| panic!("{n} pipelined joins did not all end within {STORM_LIMIT:?}"));
    let mut changed = Vec::new();
    for result in all {
        let (name, outcome) = result.expect("a storm task panicked");
        if outcome.acked() || !outcome.closed {
            changed.push(format!("[{name}] {outcome:?}"));
        }
    }
    assert!(
        changed.is_empty(),
        "{} of {n} pipelined joins were not closed unanswered: socketioxide changed; first:\n{}",
        changed.len(),
        changed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The storm harmed nobody else.
    let alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    let m = alice.say("general", "after the storm").await;
    assert_eq!(
        bob.next_event_where(event::MESSAGE, support::EVENT_TIMEOUT, |v| v["id"]
            == m["id"])
            .await,
        m
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_300_messages_is_acked_and_relayed_in_order() {
    const BURST: usize = 300;
    let addr = start_server().await;
    let mut alice = Client::connect(addr, "alice").await;
    let mut bob = Client::connect(addr, "bob").await;
    alice.join("alice", "general").await;
    bob.join("bob", "general").await;
    alice.next_event(event::JOINED).await;

    let pending: Vec<_> = (0..BURST)
        .map(|i| {
            alice.start_request(
                "message",
                json!({"room": "general", "text": format!("burst {i}"), "client_id": client_id()}),
            )
        })
        .collect();

    let mut acked: Vec<Value> = Vec::with_capacity(BURST);
    for (i, ack) in pending.into_iter().enumerate() {
        let reply = ack.wait_for(Duration::from_secs(30)).await;
        assert_eq!(reply["ok"], json!(true), "message {i}: {reply}");
        let message = reply["message"].clone();
        assert_eq!(
            message["text"],
            format!("burst {i}"),
            "ack {i} answers request {i}"
        );
        if let Some(prev) = acked.last() {
            let (a, b) = (
                prev["id"].as_u64().unwrap(),
                message["id"].as_u64().unwrap(),
            );
            assert!(
                b > a,
                "ids strictly increase in the order sent: {a} then {b} at {i}"
            );
        }
        acked.push(message);
    }

    for (i, expected) in acked.iter().enumerate() {
        let got = bob.next_event(event::MESSAGE).await;
        assert_eq!(&got, expected, "bob's message {i} of {BURST}");
    }
    alice.expect_no_event(event::MESSAGE, support::QUIET).await;

    // History agrees with the order of the acks.
    let carol = Client::connect(addr, "carol").await;
    let history = carol.join("carol", "general").await["history"].clone();
    let history = history.as_array().unwrap();
    let ids: Vec<u64> = history.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "history is oldest first: {ids:?}"
    );
    let tail = &acked[acked.len() - history.len().min(BURST)..];
    assert_eq!(
        &history[history.len() - tail.len()..],
        tail,
        "history ends with the burst"
    );
    alice.assert_open();
    bob.assert_open();
}

/// (The same helper as in contract.rs.) What became of an event sent in the same write as the namespace CONNECT `40`.
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
