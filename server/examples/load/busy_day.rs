//! The busy-day scenario: many people in many rooms, a few of them talking, for a while.
//!
//! `connections` clients join `--busy-rooms` rooms round robin (protocol 2, as browsers
//! do) and stay. Then, for `--busy-seconds`, one in `--talker-every` of each room's people
//! posts a message every `--message-every-ms`, each talker at its own phase so that the
//! load is spread over the interval rather than arriving in one wave. Everyone reads
//! everything the server sends and answers heartbeats.
//!
//! What it checks (the run fails otherwise, as a benchmark that lost a message measured a
//! bug, not a speed): every message is acked, in order; every message reaches every other
//! member of its room exactly once; each member sees its room's ids increase. What it
//! measures: ack latency (send to ack, so it includes the commit), delivery latency (send
//! to arrival at each other member, from the send time carried in the text), and, given
//! `--server-pid` and `--database`, the server's CPU per delivery, its memory, and the
//! database's growth over the busy minute.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{
    connect_and_join_reply, ok_ack_id, percentile_ms, server_cpu_ms, server_rss_kb, Args,
    LoadError, Ws,
};

/// What one connection saw.
#[derive(Default)]
struct MemberReport {
    sent: u64,
    acked: u64,
    /// Microseconds from send to ack, one per acked message.
    ack_us: Vec<u32>,
    /// Microseconds from send to arrival, one per message received from the room.
    delivery_us: Vec<u32>,
    out_of_order: u64,
}

/// What a connection does once the busy minute starts.
struct Plan {
    index: usize,
    room: String,
    /// When it posts its first message, if it is a talker.
    first_send: Option<Instant>,
    every: Duration,
    /// When talkers stop posting.
    until: Instant,
    /// The origin of the send times carried in messages' text.
    clock: Instant,
    run_id: u128,
    /// Other members of the room, to count the deliveries each acked message owes.
    others: u64,
}

/// Shared counters: deliveries owed for what was acked, and deliveries made.
#[derive(Default)]
struct Tally {
    expected: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
}

pub async fn run(args: &Args, connections: usize) -> Result<(), LoadError> {
    let rooms = args.busy_rooms.clamp(1, connections.max(1));
    let every = args.talker_every.max(1);
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let room_of = |i: usize| i % rooms;
    let members_of = |room: usize| (connections - room).div_ceil(rooms) as u64;
    // The k-th person of a room talks when k is a multiple of `every`.
    let talks = |i: usize| (i / rooms).is_multiple_of(every);
    let talkers = (0..connections).filter(|&i| talks(i)).count();
    println!(
        "busy day: {connections} connections in {rooms} rooms, {talkers} of them posting a message every {} ms for {} s",
        args.message_every_ms, args.busy_seconds
    );

    let rss_before = server_rss_kb(&args.server_pid);
    let joining = Instant::now();
    let permits = Arc::new(Semaphore::new(args.crowd_concurrency.max(1)));
    let (start_tx, start_rx) = watch::channel::<Option<Instant>>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let joined = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let clock = Instant::now();
    let every_interval = Duration::from_millis(args.message_every_ms.max(1));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let (addr, permits, joined, tally) = (
            args.addr.clone(),
            permits.clone(),
            joined.clone(),
            tally.clone(),
        );
        let (mut start_rx, stop_rx) = (start_rx.clone(), stop_rx.clone());
        let room = format!("busy{}", room_of(i));
        // Spread the talkers' phases over the interval.
        let phase = every_interval.mul_f64((i as f64 * 0.618_034).fract());
        let first_send = talks(i).then_some(phase);
        let others = members_of(room_of(i)) - 1;
        let busy_for = Duration::from_secs(args.busy_seconds);
        tasks.push(tokio::spawn(async move {
            let ws = {
                let _permit = permits.acquire().await;
                connect_and_join_reply(&addr, &format!("b{i}"), &room, 2)
                    .await?
                    .0
            };
            joined.fetch_add(1, Ordering::Relaxed);
            let start = loop {
                if let Some(start) = *start_rx.borrow_and_update() {
                    break start;
                }
                if start_rx.changed().await.is_err() {
                    return Err(LoadError::Closed);
                }
            };
            let plan = Plan {
                index: i,
                room,
                first_send: first_send.map(|phase| start + phase),
                every: every_interval,
                until: start + busy_for,
                clock,
                run_id,
                others,
            };
            member(ws, plan, &tally, stop_rx).await
        }));
    }
    while joined.load(Ordering::Relaxed) < connections as u64 {
        if let Some(done) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(done);
            task.await
                .map_err(|e| LoadError::Unexpected(e.to_string()))??;
            return Err(LoadError::Closed);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("all joined after {:.2} s", joining.elapsed().as_secs_f64());
    // Let the joins' presence notices settle before the measured part.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined = server_rss_kb(&args.server_pid);
    let cpu_start = server_cpu_ms(&args.server_pid);
    let database_start = args.database.as_deref().map(database_bytes);
    let started = Instant::now();
    start_tx
        .send(Some(started))
        .map_err(|_| LoadError::Closed)?;

    // Talkers stop after the busy minute; then wait for the last acks and deliveries.
    tokio::time::sleep(Duration::from_secs(args.busy_seconds)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_progress = (u64::MAX, u64::MAX);
    loop {
        let acked = tally.acked.load(Ordering::Relaxed);
        let delivered = tally.delivered.load(Ordering::Relaxed);
        let expected = tally.expected.load(Ordering::Relaxed);
        let settled = delivered >= expected && last_progress == (acked, delivered);
        if settled || Instant::now() > deadline {
            break;
        }
        last_progress = (acked, delivered);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_end = server_cpu_ms(&args.server_pid);
    let rss_end = server_rss_kb(&args.server_pid);
    let database_end = args.database.as_deref().map(database_bytes);
    let _ = stop_tx.send(true);

    let mut sent = 0;
    let mut acked = 0;
    let mut out_of_order = 0;
    let mut ack_us = Vec::new();
    let mut delivery_us = Vec::new();
    for task in tasks {
        let report = task
            .await
            .map_err(|e| LoadError::Unexpected(e.to_string()))??;
        sent += report.sent;
        acked += report.acked;
        out_of_order += report.out_of_order;
        ack_us.extend(report.ack_us);
        delivery_us.extend(report.delivery_us);
    }
    let expected = tally.expected.load(Ordering::Relaxed);
    let received = delivery_us.len() as u64;
    ack_us.sort_unstable();
    delivery_us.sort_unstable();
    println!(
        "acked {acked} of {sent} messages ({:.0}/s); ack p50 {:.1} ms, p99 {:.1} ms",
        acked as f64 / args.busy_seconds.max(1) as f64,
        percentile_ms(&ack_us, 0.50),
        percentile_ms(&ack_us, 0.99)
    );
    println!(
        "delivered {received} of {expected} ({out_of_order} out of order); delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile_ms(&delivery_us, 0.50),
        percentile_ms(&delivery_us, 0.99),
        percentile_ms(&delivery_us, 1.0)
    );
    if let (Some(start), Some(end)) = (cpu_start, cpu_end) {
        let cpu = end.saturating_sub(start);
        println!(
            "server CPU {cpu} ms for the busy part: {:.2} us per delivery",
            cpu as f64 * 1000.0 / received.max(1) as f64
        );
    }
    if let (Some(before), Some(joined), Some(end)) = (rss_before, rss_joined, rss_end) {
        println!(
            "server RSS {:.1} MB before, {:.1} MB joined ({:.1} KB per connection), {:.1} MB at the end",
            before as f64 / 1024.0,
            joined as f64 / 1024.0,
            joined.saturating_sub(before) as f64 / connections as f64,
            end as f64 / 1024.0
        );
    }
    if let (Some(start), Some(end)) = (database_start, database_end) {
        let grew = end.saturating_sub(start);
        println!(
            "database grew {:.1} MB ({:.0} bytes per message), {:.1} MB in all",
            grew as f64 / 1e6,
            grew as f64 / acked.max(1) as f64,
            end as f64 / 1e6
        );
    }
    if acked != sent || received != expected || out_of_order > 0 {
        return Err(LoadError::Lost {
            received,
            expected,
            out_of_order: out_of_order + (sent - acked),
        });
    }
    Ok(())
}

/// One connection: posts on its plan (if a talker), reads everything, counts.
async fn member(
    mut ws: Ws,
    plan: Plan,
    tally: &Tally,
    mut stop: watch::Receiver<bool>,
) -> Result<MemberReport, LoadError> {
    let mut report = MemberReport::default();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut next_send = plan.first_send;
    let mut last_id = 0u64;
    loop {
        let send_at = next_send.filter(|at| *at < plan.until);
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = stop.changed() => return Ok(report),
            _ = sleep_until(send_at) => {
                let n = sent_at.len();
                let sent_us = plan.clock.elapsed().as_micros();
                let frame = format!(
                    r#"42{n}["message",{{"room":"{}","text":"busy {} {n} {sent_us}","client_id":"{:x}-{}-{n}"}}]"#,
                    plan.room, plan.index, plan.run_id, plan.index
                );
                sent_at.push(Instant::now());
                report.sent += 1;
                ws.send(WsMessage::text(frame)).await?;
                next_send = send_at.map(|at| at + plan.every);
                continue;
            }
        };
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(_))) | None => return Err(LoadError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(err)) => return Err(err.into()),
        };
        let text = text.as_str();
        if text == "2" {
            ws.send(WsMessage::text("3")).await?;
        } else if let Some(ack) = text.strip_prefix("43") {
            let id = ok_ack_id(ack)?;
            if id != report.acked {
                return Err(LoadError::AckOrder {
                    got: id,
                    expected: report.acked,
                });
            }
            let micros = sent_at[id as usize].elapsed().as_micros();
            report
                .ack_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
            report.acked += 1;
            tally.acked.fetch_add(1, Ordering::Relaxed);
            tally.expected.fetch_add(plan.others, Ordering::Relaxed);
        } else if let Some(body) = text.strip_prefix(r#"42["message",{"id":"#) {
            let digits = body.bytes().take_while(u8::is_ascii_digit).count();
            let id: u64 = body[..digits]
                .parse()
                .map_err(|_| LoadError::Unexpected(text.to_owned()))?;
            if id <= last_id {
                report.out_of_order += 1;
            }
            last_id = id;
            let sent_us = body
                .split_once(r#""text":"busy "#)
                .and_then(|(_, rest)| rest.split('"').next())
                .and_then(|fields| fields.split(' ').nth(2))
                .and_then(|us| us.parse::<u128>().ok())
                .ok_or_else(|| LoadError::Unexpected(text.to_owned()))?;
            let micros = plan.clock.elapsed().as_micros().saturating_sub(sent_us);
            report
                .delivery_us
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
            tally.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The bytes of a SQLite database on disk: the file, its WAL, and Banter's journal
/// database (`.recent`) with its WAL.
fn database_bytes(main: &Path) -> u64 {
    let name = main.as_os_str().to_string_lossy().into_owned();
    [
        name.clone(),
        format!("{name}-wal"),
        format!("{name}.recent"),
        format!("{name}.recent-wal"),
    ]
    .iter()
    .filter_map(|path| std::fs::metadata(path).ok())
    .map(|meta| meta.len())
    .sum()
}
