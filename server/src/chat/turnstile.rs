//! Handles one socket's requests in the order they arrived.
//!
//! socketioxide spawns a task per incoming event, so two events from one socket may run
//! concurrently and finish in either order; a client that sends two messages back to back
//! would see them stored out of order. Extractors, however, run synchronously in arrival
//! order, so a ticket drawn there and awaited in the handler restores that order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::lock;

#[derive(Default)]
pub struct Turnstile {
    next_ticket: AtomicU64,
    line: Mutex<Queue>,
}

/// Who is being served, and a wake-up for each ticket waiting its turn: only the next
/// ticket is woken, so a client with many requests in flight costs one wake-up per
/// request, not one per waiting request.
#[derive(Default)]
struct Queue {
    now_serving: u64,
    /// Tickets are the server's own numbers: a fast hash is safe.
    waiting: HashMap<u64, oneshot::Sender<()>, foldhash::fast::RandomState>,
}

impl Turnstile {
    /// Draws the next ticket; call in arrival order.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// Tickets drawn and not yet served (the one being served included).
    pub fn queued(&self) -> u64 {
        let next = self.next_ticket.load(Ordering::Relaxed);
        next.saturating_sub(lock(&self.line).now_serving)
    }

    /// Waits until every earlier ticket has been served. The returned turn lets the next
    /// ticket through when dropped, also when the handler returns early or panics.
    pub async fn wait(&self, ticket: u64) -> Turn<'_> {
        let woken = {
            let mut line = lock(&self.line);
            if line.now_serving == ticket {
                None
            } else {
                let (wake, woken) = oneshot::channel();
                line.waiting.insert(ticket, wake);
                Some(woken)
            }
        };
        if let Some(woken) = woken {
            // The sender is only dropped after sending: its turn has come.
            let _ = woken.await;
        }
        Turn { turnstile: self }
    }
}

pub struct Turn<'a> {
    turnstile: &'a Turnstile,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut line = lock(&self.turnstile.line);
        line.now_serving += 1;
        let next = line.now_serving;
        if let Some(wake) = line.waiting.remove(&next) {
            let _ = wake.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_are_served_in_ticket_order() {
        let turnstile = Arc::new(Turnstile::default());
        let served = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<u64> = (0..200).map(|_| turnstile.ticket()).collect();
        // Spawn in reverse so the scheduler would naturally run the last ticket first.
        let handles: Vec<_> = tickets
            .into_iter()
            .rev()
            .map(|ticket| {
                let turnstile = turnstile.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let _turn = turnstile.wait(ticket).await;
                    served.lock().unwrap().push(ticket);
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        assert_eq!(*served.lock().unwrap(), (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_turn_still_lets_the_next_one_through() {
        let turnstile = Arc::new(Turnstile::default());
        let first = turnstile.ticket();
        let second = turnstile.ticket();
        let t = turnstile.clone();
        let result = tokio::spawn(async move {
            let _turn = t.wait(first).await;
            panic!("handler bug");
        })
        .await;
        assert!(result.is_err());
        let _turn = turnstile.wait(second).await;
    }
}
