//! Storage alone: the CPU each SQLite thread spends per new message, with no sockets.
//!
//! The load tool measures the whole server, but on this 2-core machine its own process
//! and the server's tokio workers take most of the CPU, and rates between runs differ by
//! a fifth. This drives `Storage::append` the way the batcher does (batches of changes
//! across rooms, one batch in flight) and reads each thread's CPU from
//! `/proc/self/task/*/stat`, so a change to the appender or the mover shows as µs per
//! message within a few percent.
//!
//! ```sh
//! cargo run --release -p server --example storage_cpu -- [messages] [rooms] [batch] [text]
//! ```
//!
//! Defaults: 200,000 messages in 100 rooms, batches of 100, one sender per room with its
//! client ids in order (as the load tool's). `text` is `filler` (the load tool's: a
//! number and `x`s, 64 bytes) or `words` (sentences of about 60 characters drawn from
//! 5,000 made-up words, which give the search index as many distinct trigrams as
//! people's messages do). After the last batch it waits until the journal has moved (the
//! mover's work counts too).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use server::storage::{Change, ChangeKind, Owner};

// The server's allocator (server/src/main.rs), so that the threads measured here
// allocate as they do there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system, in clock ticks) of each of this process's threads, by name.
fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("a task").path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // The name is in parentheses and may hold spaces; the fields follow it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        *by_name.entry(name).or_insert(0) += ticks;
    }
    by_name
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let messages = arg(1, 200_000);
    let rooms = arg(2, 100);
    let batch = arg(3, 100);
    let dir = std::env::temp_dir().join(format!("banter-storage-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let storage = server::storage::open(&url)
        .await
        .expect("the storage opens");
    let owners: Vec<Owner> = (0..rooms)
        .map(|i| Owner::of_token(&format!("token {i}")))
        .collect();
    let words = std::env::args().nth(4).as_deref() == Some("words");
    let mut random = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_random = move || {
        // xorshift64: the same texts on every run.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let vocabulary: Vec<String> = (0..5_000)
        .map(|_| {
            let len = 2 + (next_random() % 8) as usize;
            (0..len)
                .map(|_| char::from(b'a' + (next_random() % 26) as u8))
                .collect()
        })
        .collect();
    let mut text_of = move |sender: usize, n: usize| {
        if !words {
            let mut text = format!("busy {sender} {n} ");
            text.push_str(&"x".repeat(64));
            text.truncate(64);
            return text;
        }
        let mut text = String::new();
        while text.len() < 60 {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&vocabulary[(next_random() % 5_000) as usize]);
        }
        text
    };

    let before = cpu_by_thread();
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let changes: Vec<Change> = (sent..(sent + batch).min(messages))
            .map(|n| {
                let sender = n % rooms;
                Change {
                    room: format!("room-{sender}"),
                    owner: owners[sender].clone(),
                    author: format!("sender {sender}"),
                    client_id: format!("5f3a9c-{sender}-{n}"),
                    ts: 1_700_000_000_000 + n as i64,
                    kind: ChangeKind::Post {
                        text: text_of(sender, n),
                        reply_to: None,
                    },
                }
            })
            .collect();
        sent += changes.len();
        storage.append(changes).await.expect("the batch commits");
    }
    let appended = started.elapsed();
    // The mover moves a journal idle for 200 ms; give it time to finish.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = cpu_by_thread();
    let tick_us = 1e6 / 100.0;
    let mut total = 0.0;
    let mut line = String::new();
    for (name, ticks) in &after {
        let spent =
            (ticks - before.get(name).copied().unwrap_or(0)) as f64 * tick_us / messages as f64;
        if spent > 0.0 {
            total += spent;
            line.push_str(&format!(" {name} {spent:.2}"));
        }
    }
    println!(
        "{messages} messages in {:.2} s ({:.0}/s appended); µs per message: total {total:.2},{line}",
        appended.as_secs_f64(),
        messages as f64 / appended.as_secs_f64()
    );
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}
