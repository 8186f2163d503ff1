//! Abuse, round two: what an attacker with a stock client tried against the release
//! binary, and what a user of the server must be able to count on instead. Each test
//! drives a real server over real sockets (in this process, or the `banter` binary when
//! the test needs its memory, its exit or its logs).

mod process;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::protocol::event;
use futures_util::{SinkExt, StreamExt};
use process::{free_addr, ServerProcess, TempDir};
use serde_json::{json, Value};
use support::{assert_ok, assert_refused, client_id, http_raw, start_server_with, Client};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn quick(grace_ms: u64, hold_ms: u64) -> server::ChatOptions {
    server::ChatOptions {
        departure_grace: Duration::from_millis(grace_ms),
        name_hold: Duration::from_millis(hold_ms),
        ..server::ChatOptions::unlimited()
    }
}

/// Hundreds of connections each queue `rooms` then `join` and disconnect at once: the
/// joins that run after their connection closed must not act for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_members() {
    const GHOSTS: usize = 300;
    let addr = start_server_with(quick(50, 1_000)).await;
    let mut handles = Vec::new();
    for i in 0..GHOSTS {
        handles.push(tokio::spawn(async move {
            let ghost = Client::connect(addr, &format!("ghost{i}")).await;
            let first = if i % 2 == 0 {
                event::ROOMS
            } else {
                event::HISTORY
            };
            let _ = ghost.start_request(first, json!({"room": "haunted", "before": 10}));
            let _ = ghost.start_request(
                event::JOIN,
                json!({"name": format!("ghost{i}"), "room": "haunted"}),
            );
            ghost.close().await;
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    // Let every queued request run, and the departure grace of real joins pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watcher = Client::connect(addr, "watcher").await;
    let reply = watcher.join("watcher", "haunted").await;
    assert_eq!(
        reply["members"],
        json!(["watcher"]),
        "ghosts in the online list"
    );
    assert_eq!(reply["online"], json!(1));
    // Once the hold a real session gets has passed, every ghost's name is free again:
    // none was claimed for ever by a join that ran after its disconnect.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stranger = Client::connect(addr, "stranger").await;
    for i in 0..GHOSTS {
        let name = format!("ghost{i}");
        let reply = stranger
            .request(event::JOIN, json!({"name": name, "room": "elsewhere"}))
            .await;
        assert_ok(&reply, &format!("{name} is free"));
        assert_ok(
            &stranger
                .request(event::LEAVE, json!({"room": "elsewhere"}))
                .await,
            "leave",
        );
    }
}

/// A client that waits exactly as told after each `rate_limited` is never disconnected
/// (PROTOCOL.md, Limits), however long it keeps sending as fast as the limits allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_waits_as_told_is_never_disconnected() {
    let seconds: u64 = std::env::var("BANTER_POLITE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let addr = start_server_with(server::ChatOptions::default()).await;
    let polite = Client::connect(addr, "polite").await;
    let mut listener = Client::connect(addr, "listener").await;
    polite.join("polite", "general").await;
    listener.join("listener", "general").await;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut sent = Vec::new();
    let mut refusals = 0;
    while Instant::now() < until {
        let text = format!("m{}", sent.len());
        let payload = json!({"room": "general", "text": text, "client_id": client_id()});
        loop {
            let reply = polite.request(event::MESSAGE, payload.clone()).await;
            if reply["ok"] == json!(true) {
                break;
            }
            assert_refused(
                &reply,
                "rate_limited",
                "the only refusal a polite client gets",
            );
            refusals += 1;
            let wait = reply["error"]["retry_after_ms"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        sent.push(text);
    }
    polite.assert_open();
    assert!(refusals > 0, "the test sent fast enough to be refused");
    let rate = sent.len() as f64 / seconds as f64;
    eprintln!(
        "{} messages in {seconds} s ({rate:.1}/s), {refusals} refusals",
        sent.len()
    );
    // Everything arrived, in order.
    let mut received = Vec::new();
    while received.len() < sent.len() {
        received.push(
            listener.next_event(event::MESSAGE).await["text"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(received, sent);
}

/// A long-polling session: a handshake, CONNECT, and requests posted without ever
/// fetching what the server answers.
struct DeafPoller {
    addr: SocketAddr,
    sid: String,
    next_ack: u64,
}

impl DeafPoller {
    async fn open(addr: SocketAddr) -> Self {
        let (status, body) =
            http_raw(addr, "GET", "/socket.io/?EIO=4&transport=polling", b"").await;
        assert_eq!(status, 200);
        let body = String::from_utf8(body).unwrap();
        let open: Value = serde_json::from_str(body.trim_start_matches('0')).unwrap();
        let sid = open["sid"].as_str().unwrap().to_owned();
        let mut poller = Self {
            addr,
            sid,
            next_ack: 0,
        };
        poller.post("40").await;
        // CONNECT is handled in a task of its own: let it register the socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
        poller
    }

    async fn post(&mut self, body: &str) -> u16 {
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid);
        http_raw(self.addr, "POST", &path, body.as_bytes()).await.0
    }

    async fn request(&mut self, event: &str, payload: Value) -> u16 {
        self.next_ack += 1;
        let frame = format!("42{}{}", self.next_ack, json!([event, payload]));
        self.post(&frame).await
    }
}

/// A WebSocket client that sends but never reads.
async fn deaf_websocket(
    addr: SocketAddr,
) -> futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    stream.next().await; // the open packet
    sink.send(WsMessage::text("40")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `stream` is dropped unread: nothing the server sends is ever taken off the wire.
    std::mem::forget(stream);
    sink
}

/// Fifty connections (long-polling and WebSocket) stop reading and ask for a room's whole
/// history as fast as the per-connection limit allows, while the test samples the
/// server's RSS: what is queued for them stays bounded in bytes, and a reading client
/// keeps chatting. The per-address request budget is off here, so that what holds is
/// the per-connection byte bound (with it, the attack is merely slower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_when_clients_stop_reading() {
    const ATTACKERS: usize = 50;
    const BOUND: u64 = 256 * 1024 * 1024;
    let dir = TempDir::new("memory");
    let addr = free_addr();
    let server = ServerProcess::start(
        addr,
        &dir.database(),
        &[
            "--message-rate",
            "0",
            "--ip-message-rate",
            "0",
            "--ip-request-rate",
            "0",
            // A quarter of the default, so the bound is reached well before socketioxide's
            // heartbeat (45 s) would close a deaf connection by itself, also on a slow
            // machine; the mechanism is the same at any size.
            "--send-buffer-bytes",
            "524288",
        ],
        "warn",
    )
    .await;
    // A room of 120 long messages: every `join` with `since: 0` would be 1 MB of history
    // if replies were not capped.
    let filler = Client::connect(addr, "filler").await;
    filler.join("filler", "big").await;
    let long = "é".repeat(4_000);
    for _ in 0..120 {
        filler.say("big", &long).await;
    }
    let mut alice = Client::connect(addr, "alice").await;
    let bob = Client::connect(addr, "bob").await;
    alice.join("alice", "big").await;
    bob.join("bob", "big").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.rss();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let (stop, sent) = (stop.clone(), sent.clone());
        attackers.push(tokio::spawn(async move {
            let name = format!("deaf{i}");
            let join = json!({"name": name, "room": "big", "since": 0});
            let history = json!({"room": "big", "before": 1_000_000, "limit": 100});
            if i % 2 == 0 {
                let mut poller = DeafPoller::open(addr).await;
                poller.request("join", join.clone()).await;
                while !stop.load(Ordering::Relaxed) {
                    let payload = if poller.next_ack % 2 == 0 {
                        &join
                    } else {
                        &history
                    };
                    if poller
                        .request(
                            if poller.next_ack % 2 == 0 {
                                "join"
                            } else {
                                "history"
                            },
                            payload.clone(),
                        )
                        .await
                        != 200
                    {
                        return; // the server closed the session: cut loose
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(110)).await;
                }
            } else {
                let mut sink = deaf_websocket(addr).await;
                let mut ack = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ack += 1;
                    let (event, payload) = if ack.is_multiple_of(2) {
                        ("join", &join)
                    } else {
                        ("history", &history)
                    };
                    let frame = format!("42{ack}{}", json!([event, payload]));
                    let send = tokio::time::timeout(
                        Duration::from_secs(1),
                        sink.send(WsMessage::text(frame)),
                    );
                    match send.await {
                        Ok(Ok(())) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => return,
                        Err(_) => {} // our own send buffer is full: the server stopped reading too
                    }
                    tokio::time::sleep(Duration::from_millis(110)).await;
                }
            }
        }));
    }

    // And a sender posts long messages as fast as it can, until the attack stops: each
    // reaches all fifty. (A fixed number of them was not always enough: on a slow machine
    // they went out too slowly to fill what a deaf connection holds before its cut.)
    let flooding = stop.clone();
    let flood = tokio::spawn(async move {
        let long = "ü".repeat(4_000);
        while !flooding.load(Ordering::Relaxed) {
            filler.say("big", &long).await;
        }
    });

    // While the attack runs, alice and bob chat, and the RSS is sampled.
    let mut peak = idle;
    let started = Instant::now();
    let mut chatted = 0;
    // At least 20 s; on a busy machine, until the first connection is cut loose (the
    // debug binary shares the cores with this test and its attackers).
    while started.elapsed() < Duration::from_secs(20)
        || (!server.stderr().contains("cutting it loose")
            && started.elapsed() < Duration::from_secs(80))
    {
        let said = bob.say("big", &format!("still here {chatted}")).await;
        let heard = alice
            .next_event_where(event::MESSAGE, support::EVENT_TIMEOUT, |m| {
                m["id"] == said["id"]
            })
            .await;
        assert_eq!(heard["text"], said["text"]);
        chatted += 1;
        for _ in 0..4 {
            peak = peak.max(server.rss());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
    flood.await.unwrap();
    let requests = sent.load(Ordering::Relaxed);
    let logs = server.stderr();
    let cut = logs.matches("cutting it loose").count();
    eprintln!(
        "RSS idle {} MB, peak {} MB; {requests} requests sent; {cut} connections cut loose; {chatted} messages chatted",
        idle >> 20,
        peak >> 20
    );
    assert!(requests > 2_000, "the attack ran ({requests} requests)");
    assert!(
        peak.saturating_sub(idle) < BOUND,
        "the server grew by {} MB",
        (peak - idle) >> 20
    );
    assert!(
        cut > 0,
        "connections that do not read are cut loose:\n{}",
        server.stderr()
    );
}

/// One address creating rooms as fast as it can: the room list, the database and memory
/// stay small, and everyone else is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_bounded() {
    let mut options = server::ChatOptions {
        departure_grace: Duration::from_millis(50),
        ..server::ChatOptions::default()
    };
    // All clients here share one address; its request budget (tested in limits.rs)
    // would refuse the others along with the junk. The room budget is what this tests.
    options.limits.client_requests = None;
    let addr = start_server_with(options).await;
    let alice = Client::connect(addr, "alice").await;
    alice.join("alice", "general").await;
    alice.say("general", "a real room").await;

    let created = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut junk = Vec::new();
    for c in 0..40 {
        let (created, refused) = (created.clone(), refused.clone());
        junk.push(tokio::spawn(async move {
            let client = Client::connect(addr, &format!("junk{c}")).await;
            for r in 0..30 {
                let reply = client
                    .request(
                        event::JOIN,
                        json!({"name": format!("junk{c}"), "room": format!("junk-{c}-{r}")}),
                    )
                    .await;
                if reply["ok"] == json!(true) {
                    created.fetch_add(1, Ordering::Relaxed);
                    client
                        .request(event::LEAVE, json!({"room": format!("junk-{c}-{r}")}))
                        .await;
                } else {
                    assert_refused(&reply, "rate_limited", "a new room past the budget");
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for handle in junk {
        clients.push(handle.await.unwrap());
    }
    let created = created.load(Ordering::Relaxed);
    eprintln!(
        "{created} junk rooms created, {} refused",
        refused.load(Ordering::Relaxed)
    );
    assert!(created <= 30, "the room budget held: {created} created");

    // The list costs what it returns: the real room first, no junk room (they had no
    // message and nobody is in them).
    let rooms = alice.request(event::ROOMS, json!({})).await;
    assert_eq!(
        rooms["rooms"],
        json!([{"name": "general", "online": 1, "last_id": 1, "last_ts": rooms["rooms"][0]["last_ts"]}])
    );
    assert!(rooms.to_string().len() < 1_000);
    // A normal user elsewhere still joins and chats; existing rooms cost no budget.
    let bob = Client::connect(addr, "bob").await;
    bob.join("bob", "general").await;
    bob.say("general", "unaffected").await;
    for client in clients {
        client.close().await;
    }
}

/// Four clients looping on reads do not stall anyone's sends: sends never wait for the
/// connections reads use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_starve_sends() {
    let addr = start_server_with(server::ChatOptions::unlimited()).await;
    let sender = Client::connect(addr, "sender").await;
    sender.join("sender", "busy").await;
    for n in 0..200 {
        sender.say("busy", &format!("seed {n}")).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..4 {
        let (stop, reads) = (stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let reader = Client::connect(addr, &format!("reader{r}")).await;
            reader.join(&format!("reader{r}"), "busy").await;
            while !stop.load(Ordering::Relaxed) {
                let page = reader
                    .request(
                        event::HISTORY,
                        json!({"room": "busy", "before": 1_000_000, "limit": 100}),
                    )
                    .await;
                assert_ok(&page, "a read");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The readers at work first; then sends go on until at least 100 were made and the
    // readers did 20 more reads meanwhile, however fast either side is on this machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while reads.load(Ordering::Relaxed) < 4 {
        assert!(Instant::now() < deadline, "the readers never read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = reads.load(Ordering::Relaxed);
    let mut sent = 0;
    while sent < 100 || reads.load(Ordering::Relaxed) < before + 20 {
        assert!(Instant::now() < deadline, "the readers stalled");
        let started = Instant::now();
        sender.say("busy", &format!("during reads {sent}")).await;
        assert!(
            started.elapsed() < support::ACK_TIMEOUT,
            "a send waited on reads"
        );
        sent += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
}

/// A second `banter` on the same database exits at once, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_database() {
    let dir = TempDir::new("twice");
    let first = ServerProcess::start(free_addr(), &dir.database(), &[], "warn").await;
    let second_addr = free_addr();
    let mut second = ServerProcess::spawn(second_addr, &dir.database(), &[], "warn");
    let status = second
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the second server exits");
    assert!(!status.success(), "it exits non-zero");
    let said = second.stderr();
    assert!(said.contains(&format!("pid {}", first.pid())), "{said}");
    assert!(said.contains(&first.addr.to_string()), "{said}");
    assert!(
        tokio::net::TcpStream::connect(second_addr).await.is_err(),
        "it never served"
    );
}

/// Resends are recognised by the session that owns the name: someone who takes the name
/// over after its hold expired cannot make the owner's message pass for a resend of
/// theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_are_keyed_to_the_session() {
    let addr = start_server_with(quick(50, 300)).await;
    let alice = Client::connect(addr, "alice").await;
    let token = alice.join("alice", "general").await["session"].clone();
    let first = alice
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "mine", "client_id": "x1"}),
        )
        .await;
    assert_ok(&first, "alice's message");
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Mallory takes the free name and sends the client_id alice will use next.
    let mallory = Client::connect(addr, "mallory").await;
    let taken = mallory.join("alice", "general").await;
    assert_ne!(taken["session"], token, "a new session");
    let evil = mallory
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "evil", "client_id": "x2"}),
        )
        .await;
    assert_ok(&evil, "mallory's message");
    mallory.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Alice comes back with her token and sends x2 for the first time: it is hers.
    let back = Client::connect(addr, "alice again").await;
    let rejoined = back.rejoin("alice", "general", &token).await;
    assert_eq!(
        rejoined["session"], token,
        "a free name taken with a token keeps it"
    );
    let x2 = back
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "mine too", "client_id": "x2"}),
        )
        .await;
    assert_ok(&x2, "alice's x2");
    assert_eq!(
        x2["message"]["text"], "mine too",
        "not taken for mallory's x2"
    );
    assert_ne!(x2["message"]["id"], evil["message"]["id"]);
    // Her real resend of x1 is still recognised.
    let resend = back
        .request(
            event::MESSAGE,
            json!({"room": "general", "text": "mine", "client_id": "x1"}),
        )
        .await;
    assert_eq!(resend["message"], first["message"]);
}

/// Names are kept across a restart (and a crash): after it, a name is still its
/// session's for the hold time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_survive_a_crash() {
    let dir = TempDir::new("names");
    let addr = free_addr();
    let mut first = ServerProcess::start(addr, &dir.database(), &[], "warn").await;
    let alice = Client::connect(addr, "alice").await;
    let token = alice.join("Alice", "general").await["session"].clone();
    // Holds are written behind the claims, about once a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    first.kill_9();
    drop(alice);

    let _second = ServerProcess::start(addr, &dir.database(), &[], "warn").await;
    let stranger = Client::connect(addr, "stranger").await;
    let refused = stranger
        .request(event::JOIN, json!({"name": "alice", "room": "general"}))
        .await;
    assert_refused(
        &refused,
        "name_taken",
        "alice's name right after the restart",
    );
    let back = Client::connect(addr, "alice back").await;
    let reply = back.rejoin("Alice", "general", &token).await;
    assert_eq!(reply["session"], token);
}

/// SIGTERM under load: every message the server stored was acknowledged to its sender,
/// and the others were told to try again (or lost their connection before an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains() {
    const SENDERS: usize = 10;
    let dir = TempDir::new("drain");
    let addr = free_addr();
    let mut server = ServerProcess::start(
        addr,
        &dir.database(),
        &["--message-rate", "0", "--ip-message-rate", "0"],
        "warn",
    )
    .await;
    let acked = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            let client = Client::connect(addr, &format!("s{s}")).await;
            client.join(&format!("s{s}"), "drain").await;
            for n in 0.. {
                // Four in flight at a time.
                let pending: Vec<_> = (0..4)
                    .map(|k| {
                        let cid = format!("s{s}-{n}-{k}");
                        (
                            cid.clone(),
                            client.start_request(
                                event::MESSAGE,
                                json!({"room": "drain", "text": cid, "client_id": cid}),
                            ),
                        )
                    })
                    .collect();
                let mut over = false;
                for (cid, ack) in pending {
                    match ack.try_wait_for(Duration::from_secs(5)).await {
                        Ok(reply) if reply["ok"] == json!(true) => {
                            acked.lock().unwrap().insert(cid);
                        }
                        Ok(reply) => {
                            assert_refused(&reply, "unavailable", "a send during shutdown");
                            over = true;
                        }
                        Err(_) => over = true,
                    }
                }
                if over {
                    return;
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    assert!(
        status.success(),
        "a clean exit: {status}\n{}",
        server.stderr()
    );
    for sender in senders {
        sender.await.unwrap();
    }

    let _again = ServerProcess::start(addr, &dir.database(), &[], "warn").await;
    let reader = Client::connect(addr, "reader").await;
    let mut stored = Vec::new();
    let mut since = 0;
    loop {
        let reply = reader
            .request(
                event::JOIN,
                json!({"name": "reader", "room": "drain", "since": since}),
            )
            .await;
        for m in reply["history"].as_array().unwrap() {
            stored.push(m["client_id"].as_str().unwrap().to_owned());
            since = m["id"].as_u64().unwrap();
        }
        if reply["truncated"] != json!(true) {
            break;
        }
    }
    let acked = acked.lock().unwrap();
    let unacked: Vec<&String> = stored.iter().filter(|cid| !acked.contains(*cid)).collect();
    assert!(
        unacked.is_empty(),
        "stored but never acknowledged: {unacked:?}"
    );
    assert_eq!(
        stored.len(),
        acked.len(),
        "every acknowledged message is stored"
    );
}

/// Session tokens never reach the logs, at any level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_out_of_the_logs() {
    let dir = TempDir::new("logs");
    let addr = free_addr();
    let server = ServerProcess::start(addr, &dir.database(), &[], "trace").await;
    let alice = Client::connect(addr, "alice").await;
    let token = alice.join("alice", "general").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.close().await;
    let again = Client::connect(addr, "again").await;
    again.rejoin("alice", "general", &json!(token)).await;
    again.say("general", "hello").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.stderr();
    assert!(
        logs.contains("session"),
        "trace logging shows packets:\n{}",
        &logs[..logs.len().min(2000)]
    );
    assert!(!logs.contains(&token), "the token is in the logs");
    assert!(logs.contains("[redacted]"));
}

/// Look-alikes within one script cannot pass for a name in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_names_are_refused() {
    let addr = start_server_with(quick(50, 1_000)).await;
    let gwen = Client::connect(addr, "gwen").await;
    gwen.join("Gwen", "general").await;
    let mallory = Client::connect(addr, "mallory").await;
    for alike in ["Gvven", "GVVEN", "gvven"] {
        let reply = mallory
            .request(event::JOIN, json!({"name": alike, "room": "general"}))
            .await;
        assert_refused(&reply, "name_taken", alike);
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("looks too much like"),
            "{reply}"
        );
    }
    let other = Client::connect(addr, "other").await;
    assert_ok(
        &other
            .request(event::JOIN, json!({"name": "Gwendolyn", "room": "general"}))
            .await,
        "a different name",
    );
}
