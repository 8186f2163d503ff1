//! A restart under a crowd: the reconnect storm.
//!
//! With `--crowd N --then-restart FILE`, once the crowd has joined and been measured the
//! tool creates FILE and waits: whoever runs it (scripts/bench) stops the server, starts
//! it again on the same address and database, and writes the new server's process id
//! into FILE. Every client whose connection closed reconnects as the web client does
//! (`app::client::chat`'s backoff: a first try after 100-600 ms, then every 0.5-1 s) and
//! joins again with its session token and `resume: true`.
//!
//! What it checks (the run fails otherwise): every client is back within
//! [`REJOIN_DEADLINE`] under the name it had, and the restarted server counts each of them
//! online once. What it measures: how long after the first connection closed the last
//! client was back, how long after the first one was back (the restarted server's share),
//! each client's outage, and the restarted server's memory and CPU since it started.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use app::protocol::JoinRequest;

use super::{connect_and_send_join, percentile_ms, server_cpu_ms, server_rss_kb, LoadError, Ws};

/// How long a client keeps trying to come back before the run fails.
const REJOIN_DEADLINE: Duration = Duration::from_secs(60);

/// How long the tool waits for the new server's process id in the file once everyone is
/// back (the script writes it right after the server listens).
const PID_WAIT: Duration = Duration::from_secs(5);

/// The clients' way back, shared by their tasks.
pub struct Rejoins {
    back: AtomicU64,
    first_closed: OnceLock<Instant>,
    first_back: OnceLock<Instant>,
    last_back: Mutex<Option<Instant>>,
    /// Microseconds from each client's close to its rejoin.
    outages_us: Mutex<Vec<u32>>,
}

/// Who a client was before the restart.
pub struct Returning<'a> {
    pub index: usize,
    pub name: &'a str,
    pub room: &'a str,
    pub session: String,
    pub protocol: u32,
}

impl Rejoins {
    pub fn new(clients: usize) -> Self {
        Rejoins {
            back: AtomicU64::new(0),
            first_closed: OnceLock::new(),
            first_back: OnceLock::new(),
            last_back: Mutex::new(None),
            outages_us: Mutex::new(Vec::with_capacity(clients)),
        }
    }

    pub fn back(&self) -> u64 {
        self.back.load(Ordering::Relaxed)
    }

    /// Called when a client's connection closed: reconnects and joins again, as the web
    /// client would, until the server takes it back.
    pub async fn rejoin(&self, addr: &str, client: Returning<'_>) -> Result<Ws, LoadError> {
        let closed = Instant::now();
        let _ = self.first_closed.set(closed);
        let mut jitter = Jitter::new(client.index);
        let mut delay = jitter.between(100, 600);
        loop {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let request = JoinRequest {
                name: client.name.to_owned(),
                room: client.room.to_owned(),
                since: None,
                session: Some(client.session.clone()),
                resume: true,
            };
            match connect_and_send_join(addr, Some(request), client.protocol).await {
                Ok((ws, Some(reply))) => {
                    if reply.name != client.name {
                        return Err(LoadError::Unexpected(format!(
                            "{} came back as {}: the restart lost its name",
                            client.name, reply.name
                        )));
                    }
                    self.record(closed);
                    return Ok(ws);
                }
                Ok((_, None)) => return Err(LoadError::Unexpected("no join reply".into())),
                // Down, starting, or still shutting down: try again.
                Err(_) if closed.elapsed() < REJOIN_DEADLINE => {
                    delay = jitter.between(500, 1_000);
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn record(&self, closed: Instant) {
        let now = Instant::now();
        let _ = self.first_back.set(now);
        let micros = u32::try_from(now.duration_since(closed).as_micros()).unwrap_or(u32::MAX);
        self.outages_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(micros);
        let mut last = self.last_back.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some(last.map_or(now, |last| last.max(now)));
        self.back.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints what the restart cost, with the restarted server's pid read from `marker`.
    pub async fn report(&self, clients: usize, marker: &Path) -> Result<(), LoadError> {
        let (Some(&first_closed), Some(&first_back), Some(last_back)) = (
            self.first_closed.get(),
            self.first_back.get(),
            *self.last_back.lock().unwrap_or_else(|e| e.into_inner()),
        ) else {
            return Err(LoadError::Unexpected("no client came back".into()));
        };
        let mut outages = self
            .outages_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        outages.sort_unstable();
        println!(
            "restart under {clients} clients: all back after {:.2} s (from the first connection \
             closing; {:.2} s from the first client back); each client's outage p50 {:.0} ms, \
             p99 {:.0} ms, max {:.0} ms",
            last_back.duration_since(first_closed).as_secs_f64(),
            last_back.duration_since(first_back).as_secs_f64(),
            percentile_ms(&outages, 0.5),
            percentile_ms(&outages, 0.99),
            percentile_ms(&outages, 1.0),
        );
        if let Some(pid) = restarted_pid(marker).await {
            let pids = [pid];
            if let (Some(rss), Some(cpu)) = (server_rss_kb(&pids), server_cpu_ms(&pids)) {
                println!(
                    "restarted server: RSS {:.1} MB, CPU since it started {cpu} ms",
                    rss as f64 / 1024.0
                );
            }
        }
        Ok(())
    }
}

/// Creates the file that tells the runner to restart the server now.
pub fn ask_for_restart(marker: &Path) -> Result<(), LoadError> {
    std::fs::write(marker, b"")
        .map_err(|e| LoadError::Unexpected(format!("{}: {e}", marker.display())))?;
    println!("waiting for the server to restart");
    Ok(())
}

/// The process id the runner wrote into `marker`, if it did within [`PID_WAIT`].
async fn restarted_pid(marker: &Path) -> Option<u32> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(marker) {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each client's own jitter (xorshift seeded by its index), so retries spread as a
/// crowd of browsers' would.
struct Jitter(u64);

impl Jitter {
    fn new(index: usize) -> Self {
        Jitter((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low + 1)
    }
}
