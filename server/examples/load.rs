//! A lean load generator for a running Banter server: many senders post messages over real
//! WebSockets and count acks; a few receivers per room only listen, counting fan-out and
//! checking that each room's ids arrive in increasing order. Two other modes: a crowd
//! (`--crowd N`: N clients join one room at once, then idle; with `--then-restart`, the
//! server restarts under them and they all come back, `load/restart.rs`) and a busy day
//! (`--busy-day N`: N clients in many rooms, a few talking; `load/busy_day.rs`).
//!
//! It runs in a process of its own, so it measures the release binary rather than a
//! server sharing a runtime with its load. Connecting and joining go through the web
//! client's session layer (`app::client::session`, typed requests); the measured part,
//! sending messages and counting acks and fan-out, uses hand-written frames and prefix
//! matching instead of full JSON decoding, so that the tool itself stays cheap on a
//! machine it shares with the server.
//!
//! ```text
//! target/release/banter --database sqlite:///tmp/load.db --message-rate 0 \
//!     --ip-message-rate 0 --request-rate 0 --max-connections-per-ip 1000 &
//! cargo run --release -p server --example load -- --senders 100 --rooms 10
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use app::client::session::{self, Session, SessionEvent};
use app::protocol::{JoinReply, JoinRequest};

#[path = "load/busy_day.rs"]
mod busy_day;
#[path = "load/restart.rs"]
mod restart;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for a running Banter server")]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
    /// Sockets that post messages; each joins one room (round robin).
    #[arg(long, default_value_t = 100)]
    senders: usize,
    /// Rooms the senders are spread over.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Listen-only sockets per room.
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Messages each sender posts.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Messages a sender keeps in flight (sent, not yet acked).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Length of each message's text.
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    /// Tokio worker threads of this tool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Crowd mode instead of senders: this many clients connect and join one room at
    /// once, then stay idle; reports how long the joins took, whether the server counts
    /// every one of them online, and the server's memory per client (with --server-pid).
    #[arg(long)]
    crowd: Option<usize>,
    /// Connections opened at the same time in crowd mode.
    #[arg(long, default_value_t = 500)]
    crowd_concurrency: usize,
    /// Seconds the crowd stays idle before memory is read.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// The protocol the crowd asks for at CONNECT (2: batched presence, as browsers do).
    #[arg(long, default_value_t = 2)]
    crowd_protocol: u32,
    /// The server's process id, to read its memory (VmRSS) and CPU time from /proc;
    /// comma-separated, several (the nodes of a cluster and the engines they use): then
    /// memory is summed over them, and CPU time over them and their children, live or
    /// exited (PostgreSQL's backends).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Crowd mode against the Node.js tutorial server (../shared/anchors/seed-node)
    /// instead of Banter: each client connects and emits `joining msg` with its name.
    /// That server keeps no online list, so the count is not checked.
    #[arg(long)]
    seed_node: bool,
    /// Crowd mode, then a restart: once the crowd is measured, create this file and wait
    /// for whoever runs the tool to restart the server on the same address and database
    /// and write its new process id into the file; every client reconnects and joins
    /// again as the web client does (`load/restart.rs`).
    #[arg(long)]
    then_restart: Option<std::path::PathBuf>,
    /// Crowd mode without the join: the clients connect (Socket.IO CONNECT) and idle, to
    /// tell what a connection costs from what joining a room adds.
    #[arg(long)]
    connect_only: bool,
    /// Busy-day mode instead of senders: this many connections join `--busy-rooms` rooms
    /// (round robin, protocol 2 as browsers), then one in `--talker-every` of each room's
    /// people posts a message every `--message-every-ms` for `--busy-seconds`. Reports
    /// whether every message was acked and reached every other member of its room, in
    /// order, the delivery latency, and (with --server-pid, --database) the server's CPU
    /// per delivery, its memory and the database's growth.
    #[arg(long)]
    busy_day: Option<usize>,
    #[arg(long, default_value_t = 100)]
    busy_rooms: usize,
    #[arg(long, default_value_t = 10)]
    talker_every: usize,
    #[arg(long, default_value_t = 3_000)]
    message_every_ms: u64,
    #[arg(long, default_value_t = 60)]
    busy_seconds: u64,
    /// The server's SQLite database file, to report its growth (with its WAL and journal).
    #[arg(long)]
    database: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("WebSocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("unexpected frame {0:?}")]
    Unexpected(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("ack {got} arrived, expected {expected}")]
    AckOrder { got: u64, expected: u64 },
    #[error("receivers got {received} of {expected} messages, {out_of_order} out of order")]
    Lost {
        received: u64,
        expected: u64,
        out_of_order: u64,
    },
}

/// What one sender saw.
struct SenderReport {
    /// Microseconds from send to ack, one per message.
    latencies_us: Vec<u32>,
    /// `message` events from the room's other senders.
    broadcasts: u64,
    last_ack: Instant,
}

/// What the receivers saw, shared as they go so a run that falls short still reports.
#[derive(Default)]
struct Deliveries {
    received: AtomicU64,
    out_of_order: AtomicU64,
    /// Microseconds after the start at which the last message reached a receiver.
    last_us: AtomicU64,
}

fn main() -> Result<(), LoadError> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| LoadError::Unexpected(e.to_string()))?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), LoadError> {
    if let Some(clients) = args.crowd {
        return crowd(&args, clients).await;
    }
    if let Some(connections) = args.busy_day {
        return busy_day::run(&args, connections).await;
    }
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let rooms = args.rooms.max(1);
    let deliveries = Arc::new(Deliveries::default());
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let stop = Arc::new(AtomicBool::new(false));

    let mut receivers = Vec::new();
    for room in 0..rooms {
        for r in 0..args.receivers {
            // Names are server-wide: one per connection.
            let ws =
                connect_and_join(&args.addr, &format!("r{room}-{r}"), &room_name(room)).await?;
            receivers.push(tokio::spawn(receive(
                ws,
                deliveries.clone(),
                start.clone(),
                stop.clone(),
            )));
        }
    }

    let barrier = Arc::new(Barrier::new(args.senders + 1));
    let mut senders = Vec::new();
    for i in 0..args.senders {
        let ws = connect_and_join(&args.addr, &format!("s{i}"), &room_name(i % rooms)).await?;
        let args = args.clone();
        let barrier = barrier.clone();
        senders.push(tokio::spawn(async move {
            barrier.wait().await;
            send(ws, &args, i, run_id).await
        }));
    }

    let total = args.senders * args.messages;
    println!(
        "{} senders in {rooms} rooms, {} listen-only receivers per room, {} messages of {} bytes each, window {}",
        args.senders, args.receivers, args.messages, args.text_bytes, args.window
    );
    barrier.wait().await;
    let started = *start.get_or_init(Instant::now);

    let mut latencies = Vec::with_capacity(total);
    let mut broadcasts = 0;
    let mut last_ack = started;
    for sender in senders {
        let report = sender
            .await
            .map_err(|e| LoadError::Unexpected(e.to_string()))??;
        latencies.extend(report.latencies_us);
        broadcasts += report.broadcasts;
        last_ack = last_ack.max(report.last_ack);
    }
    let elapsed = last_ack - started;

    // Give the fan-out a moment to reach the receivers, then stop them.
    let expected = (total * args.receivers) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries.received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for receiver in receivers {
        receiver.abort();
    }

    latencies.sort_unstable();
    let pct = |p: f64| percentile_ms(&latencies, p);
    println!(
        "acked {total} messages in {:.2} s: {:.0} messages/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ack latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    let received = deliveries.received.load(Ordering::Relaxed);
    let out_of_order = deliveries.out_of_order.load(Ordering::Relaxed);
    println!(
        "receivers got {received} of {expected} messages ({out_of_order} out of order), the last {:.2} s after the start; senders got {broadcasts} broadcasts from their rooms",
        deliveries.last_us.load(Ordering::Relaxed) as f64 / 1e6,
    );
    // A benchmark that lost or reordered a message measured a bug, not a speed.
    if received != expected || out_of_order > 0 {
        return Err(LoadError::Lost {
            received,
            expected,
            out_of_order,
        });
    }
    Ok(())
}

/// A crowd arrives: `clients` connect and join one room, `crowd_concurrency` at a time,
/// then idle (answering heartbeats and reading what the server sends) while memory
/// settles; a last client joins to read the room's online count.
async fn crowd(args: &Args, clients: usize) -> Result<(), LoadError> {
    let room = "crowd";
    let protocol = args.crowd_protocol;
    let rss_before = server_rss_kb(&args.server_pid);
    let cpu_before = server_cpu_ms(&args.server_pid);
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.crowd_concurrency.max(1)));
    let joined = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    let seed_node = args.seed_node;
    if seed_node && args.then_restart.is_some() {
        return Err(LoadError::Unexpected(
            "--then-restart is for Banter: the tutorial server keeps nobody's name".into(),
        ));
    }
    let connect_only = args.connect_only;
    if connect_only && (seed_node || args.then_restart.is_some()) {
        return Err(LoadError::Unexpected(
            "--connect-only is for Banter, without --then-restart".into(),
        ));
    }
    let rejoins = args
        .then_restart
        .as_ref()
        .map(|_| Arc::new(restart::Rejoins::new(clients)));
    for i in 0..clients {
        let (addr, permits, joined, stop, received, rejoins) = (
            args.addr.clone(),
            permits.clone(),
            joined.clone(),
            stop.clone(),
            received.clone(),
            rejoins.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let name = format!("c{i}");
            let (ws, session) = {
                let _permit = permits.acquire().await;
                if seed_node {
                    (connect_seed_node(&addr, &name).await?, String::new())
                } else if connect_only {
                    (
                        connect_and_send_join(&addr, None, protocol).await?.0,
                        String::new(),
                    )
                } else {
                    let (ws, reply) = connect_and_join_reply(&addr, &name, room, protocol).await?;
                    (ws, reply.session)
                }
            };
            joined.fetch_add(1, Ordering::Relaxed);
            let closed = idle(ws, &stop, &received).await;
            match (rejoins, closed) {
                (Some(rejoins), Err(LoadError::Closed)) => {
                    let returning = restart::Returning {
                        index: i,
                        name: &name,
                        room,
                        session,
                        protocol,
                    };
                    let ws = rejoins.rejoin(&addr, returning).await?;
                    idle(ws, &stop, &received).await
                }
                (_, closed) => closed,
            }
        }));
    }
    while joined.load(Ordering::Relaxed) < clients as u64 {
        fail_if_any_ended(&mut tasks).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let joins = started.elapsed();
    let cpu_joined = server_cpu_ms(&args.server_pid);
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let rss_after = server_rss_kb(&args.server_pid);
    // The server's count of who is online, as a newcomer's join reply says it.
    let online = if seed_node {
        clients + 1
    } else {
        probe_online(&args.addr, room, protocol).await?.0
    };
    // Those who joined, and the newcomer who asked.
    let expected = if connect_only { 1 } else { clients + 1 };
    if connect_only {
        println!(
            "crowd of {clients} clients connecting without joining, {} at a time",
            args.crowd_concurrency
        );
    } else {
        println!(
            "crowd of {clients} clients joining one room, {} at a time",
            args.crowd_concurrency
        );
    }
    println!(
        "all {} after {:.2} s; the server counts {online} online (expected {expected})",
        if connect_only { "connected" } else { "joined" },
        joins.as_secs_f64(),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "server RSS {:.1} MB before, {:.1} MB after settling {} s: {:.1} KB per client",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            args.settle_seconds,
            after.saturating_sub(before) as f64 / clients as f64
        );
    }
    if let (Some(before), Some(joined)) = (cpu_before, cpu_joined) {
        println!(
            "server CPU for the joins: {} ms",
            joined.saturating_sub(before)
        );
    }
    println!(
        "the crowd received {} frames in all",
        received.load(Ordering::Relaxed)
    );
    let mut outcome = expect_online(online, expected);
    if let (Ok(()), Some(marker), Some(rejoins)) = (&outcome, &args.then_restart, &rejoins) {
        outcome = restart_under_crowd(marker, rejoins, &mut tasks, &args.addr, clients).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    outcome
}

/// The restart: asks for it, waits until every client is back, then checks the count.
async fn restart_under_crowd(
    marker: &std::path::Path,
    rejoins: &restart::Rejoins,
    tasks: &mut Vec<tokio::task::JoinHandle<Result<(), LoadError>>>,
    addr: &str,
    clients: usize,
) -> Result<(), LoadError> {
    restart::ask_for_restart(marker)?;
    while rejoins.back() < clients as u64 {
        fail_if_any_ended(tasks).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rejoins.report(clients, marker).await?;
    let online = probe_online(addr, "crowd", 2).await?.0;
    println!(
        "the restarted server counts {online} online (expected {}); every client kept its name",
        clients + 1
    );
    expect_online(online, clients + 1)
}

/// A crowd client's task ends only on failure (or when the tool stops them): returns its
/// error, or that the connection closed.
async fn fail_if_any_ended(
    tasks: &mut Vec<tokio::task::JoinHandle<Result<(), LoadError>>>,
) -> Result<(), LoadError> {
    if let Some(done) = tasks.iter().position(|t| t.is_finished()) {
        let task = tasks.swap_remove(done);
        task.await
            .map_err(|e| LoadError::Unexpected(e.to_string()))??;
        return Err(LoadError::Closed);
    }
    Ok(())
}

/// Everyone in the room (the crowd and the probe) counted once.
fn expect_online(online: usize, expected: usize) -> Result<(), LoadError> {
    if online == expected {
        Ok(())
    } else {
        Err(LoadError::Unexpected(format!(
            "{online} online, expected {expected}"
        )))
    }
}

/// Reads and answers heartbeats until stopped.
async fn idle(mut ws: Ws, stop: &AtomicBool, received: &AtomicU64) -> Result<(), LoadError> {
    while !stop.load(Ordering::Relaxed) {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                received.fetch_add(1, Ordering::Relaxed);
                if text.as_str() == "2" {
                    ws.send(WsMessage::text("3")).await?;
                }
            }
            Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Joins `room` as a newcomer and returns the online count of its reply.
async fn probe_online(addr: &str, room: &str, protocol: u32) -> Result<(usize, Ws), LoadError> {
    let (ws, reply) = connect_and_join_reply(addr, "crowd-probe", room, protocol).await?;
    Ok((reply.online, ws))
}

/// The `p` quantile (0 to 1) of sorted microseconds, in milliseconds; 0 for none.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[index]) / 1000.0
}

/// VmRSS of the processes, summed, in KiB (None without any, or if one is gone).
fn server_rss_kb(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| rss_kb(pid)).sum()
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of the processes and their descendants, in milliseconds
/// (None without any, or if one is gone).
fn server_cpu_ms(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| tree_cpu_ms(pid)).sum()
}

/// A process's CPU time (at 100 ticks a second), with that of its children: the exited
/// ones as the kernel adds them up (cutime, cstime), the live ones read in turn.
fn tree_cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0;
    for field in 11..=14 {
        ticks += fields.get(field)?.parse::<u64>().ok()?;
    }
    let mut ms = ticks * 10;
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for thread in threads.flatten() {
        let children = std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
        ms += children
            .split_whitespace()
            .filter_map(|child| tree_cpu_ms(child.parse().ok()?))
            .sum::<u64>();
    }
    Some(ms)
}

/// The id of an ack (a frame's text after `43`) whose reply says `ok`; a refusal, or an
/// ack without an id, is an error.
fn ok_ack_id(ack: &str) -> Result<u64, LoadError> {
    let digits = ack.bytes().take_while(u8::is_ascii_digit).count();
    let id = ack[..digits]
        .parse()
        .map_err(|_| LoadError::Unexpected(format!("43{ack}")))?;
    // `ok` comes first (`{"ok":true,"message":...}`), or last where the server sorts the
    // reply's keys; checking both ends keeps this a prefix/suffix test.
    let reply = &ack[digits..];
    if !reply.starts_with(r#"[{"ok":true"#) && !reply.ends_with(r#""ok":true}]"#) {
        return Err(LoadError::Refused(ack.to_owned()));
    }
    Ok(id)
}

fn room_name(room: usize) -> String {
    format!("load{room}")
}

/// Opens a Socket.IO connection to the main namespace over a WebSocket and joins `room`
/// as `name`, driving the client's session layer; then hands the socket to the
/// hand-written hot path (the session's ack ids are done with by then).
async fn connect_and_join(addr: &str, name: &str, room: &str) -> Result<Ws, LoadError> {
    connect_and_join_reply(addr, name, room, 1)
        .await
        .map(|(ws, _)| ws)
}

/// Connects to the Node.js tutorial server and announces `name` as its page does.
async fn connect_seed_node(addr: &str, name: &str) -> Result<Ws, LoadError> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await?;
    let mut session = Session::new(
        session::Config {
            auth: None,
            handshake_timeout: Some(10_000),
            heartbeat: true,
        },
        0,
    );
    let started = Instant::now();
    loop {
        while let Some(frame) = session.poll_transmit() {
            ws.send(WsMessage::text(frame)).await?;
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Connected { .. } => {
                    let joining = serde_json::json!(["joining msg", name]);
                    ws.send(WsMessage::text(format!("42{joining}"))).await?;
                    return Ok(ws);
                }
                SessionEvent::ConnectRefused(data) => {
                    return Err(LoadError::Refused(data.to_string()))
                }
                SessionEvent::Closed(_) => return Err(LoadError::Closed),
                _ => {}
            }
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| LoadError::Unexpected("no answer within 10 s".into()))?;
        match frame {
            Some(Ok(WsMessage::Text(text))) => {
                session.handle_frame(started.elapsed().as_millis() as u64, text.as_str())
            }
            Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

/// [`connect_and_join`], with the join's reply.
async fn connect_and_join_reply(
    addr: &str,
    name: &str,
    room: &str,
    protocol: u32,
) -> Result<(Ws, JoinReply), LoadError> {
    match connect_and_send_join(addr, Some(newcomer(name, room)), protocol).await? {
        (ws, Some(reply)) => Ok((ws, reply)),
        (_, None) => Err(LoadError::Unexpected("no join reply".into())),
    }
}

/// A first join, as a page that never was in the room sends it.
fn newcomer(name: &str, room: &str) -> JoinRequest {
    JoinRequest {
        name: name.to_owned(),
        room: room.to_owned(),
        since: None,
        session: None,
        resume: false,
    }
}

/// Opens a Socket.IO connection as [`connect_and_join_reply`] does and sends `request`
/// (none: returns once connected).
async fn connect_and_send_join(
    addr: &str,
    mut request: Option<JoinRequest>,
    protocol: u32,
) -> Result<(Ws, Option<JoinReply>), LoadError> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    // tungstenite zeroes its whole read buffer (128 KiB by default) before each read:
    // with frames this small that memset was most of the tool's CPU time.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    // Without TCP_NODELAY, small frames wait for delayed ACKs (40 ms on Linux).
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await?;
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut session = Session::new(
        session::Config {
            auth: (protocol >= 2).then(|| serde_json::json!({ "protocol": protocol })),
            handshake_timeout: Some(10_000),
            heartbeat: true,
        },
        0,
    );
    let mut join = None;
    loop {
        while let Some(frame) = session.poll_transmit() {
            ws.send(WsMessage::text(frame)).await?;
        }
        let mut reported = false;
        while let Some(event) = session.poll_event() {
            reported = true;
            match event {
                SessionEvent::Connected { .. } => match request.take() {
                    Some(request) => join = Some(session.request(now(), &request, Some(10_000))),
                    None => return Ok((ws, None)),
                },
                SessionEvent::Ack { id, args } if Some(id) == join => {
                    return match session::decode_ack::<JoinReply>(args) {
                        Ok(reply) => Ok((ws, Some(reply))),
                        Err(refusal) => Err(LoadError::Refused(refusal.to_string())),
                    };
                }
                SessionEvent::ConnectRefused(data) => {
                    return Err(LoadError::Refused(data.to_string()))
                }
                SessionEvent::AckFailed { .. } | SessionEvent::Closed(_) => {
                    return Err(LoadError::Closed)
                }
                _ => {}
            }
        }
        if reported {
            // What was reported may have queued frames (the join): send them first.
            continue;
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| LoadError::Unexpected("no answer within 10 s".into()))?;
        match frame {
            Some(Ok(WsMessage::Text(text))) => session.handle_frame(now(), text.as_str()),
            Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

/// Posts `args.messages` messages, keeping `args.window` in flight.
async fn send(
    mut ws: Ws,
    args: &Args,
    sender: usize,
    run_id: u128,
) -> Result<SenderReport, LoadError> {
    let room = room_name(sender % args.rooms.max(1));
    let total = args.messages;
    let window = args.window.max(1);
    let mut sent_at = Vec::with_capacity(total);
    let mut report = SenderReport {
        latencies_us: Vec::with_capacity(total),
        broadcasts: 0,
        last_ack: Instant::now(),
    };
    let filler = "x".repeat(args.text_bytes);
    while report.latencies_us.len() < total {
        while sent_at.len() < total && sent_at.len() - report.latencies_us.len() < window {
            let n = sent_at.len();
            let mut text = format!("load {n} ");
            text.push_str(&filler);
            text.truncate(args.text_bytes.max(1).min(text.len()));
            // The ack id is the message's number; client ids are unique per run so that
            // no message is taken for a resend of an earlier run's.
            let frame = format!(
                r#"42{n}["message",{{"room":"{room}","text":"{text}","client_id":"{run_id:x}-{sender}-{n}"}}]"#
            );
            sent_at.push(Instant::now());
            ws.feed(WsMessage::text(frame)).await?;
        }
        ws.flush().await?;

        // Handle what arrived; then send again before waiting, so the window stays full.
        let frame = ws.next().await;
        on_sender_frame(&mut ws, frame, &sent_at, &mut report).await?;
        while let Some(frame) = ws.next().now_or_never() {
            on_sender_frame(&mut ws, frame, &sent_at, &mut report).await?;
        }
    }
    ws.close(None).await.ok();
    Ok(report)
}

async fn on_sender_frame(
    ws: &mut Ws,
    frame: Option<Result<WsMessage, tungstenite::Error>>,
    sent_at: &[Instant],
    report: &mut SenderReport,
) -> Result<(), LoadError> {
    let text = match frame {
        Some(Ok(WsMessage::Text(text))) => text,
        Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
        Some(Ok(_)) => return Ok(()),
        Some(Err(err)) => return Err(err.into()),
    };
    let text = text.as_str();
    if text == "2" {
        ws.feed(WsMessage::text("3")).await?;
    } else if let Some(ack) = text.strip_prefix("43") {
        let id = ok_ack_id(ack)?;
        // Requests of one socket are answered in order.
        let expected = report.latencies_us.len() as u64;
        if id != expected {
            return Err(LoadError::AckOrder { got: id, expected });
        }
        let now = Instant::now();
        let micros = (now - sent_at[id as usize]).as_micros();
        report
            .latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
        report.last_ack = now;
    } else if text.starts_with(r#"42["message""#) {
        report.broadcasts += 1;
    }
    Ok(())
}

/// Counts the room's `message` events and checks their ids increase.
async fn receive(
    mut ws: Ws,
    deliveries: Arc<Deliveries>,
    start: Arc<std::sync::OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
) -> Result<(), LoadError> {
    let mut last_id = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let text = match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
        };
        let text = text.as_str();
        if text == "2" {
            ws.send(WsMessage::text("3")).await?;
            continue;
        }
        let Some(body) = text.strip_prefix(r#"42["message",{"id":"#) else {
            continue;
        };
        let digits = body.bytes().take_while(u8::is_ascii_digit).count();
        let id: u64 = body[..digits]
            .parse()
            .map_err(|_| LoadError::Unexpected(text.to_owned()))?;
        if id <= last_id {
            deliveries.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        last_id = id;
        deliveries.received.fetch_add(1, Ordering::Relaxed);
        if let Some(start) = start.get() {
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            deliveries.last_us.fetch_max(micros, Ordering::Relaxed);
        }
    }
    Ok(())
}
