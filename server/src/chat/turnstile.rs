//! Handles one socket's requests in the order they arrived.
//!
//! socketioxide spawns a task per incoming event, so two events from one socket may run
//! concurrently and finish in either order; a client that sends two messages back to back
//! would see them stored out of order. Extractors, however, run synchronously in arrival
//! order, so a ticket drawn there and awaited in the handler restores that order.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

pub struct Turnstile {
    next_ticket: AtomicU64,
    now_serving: watch::Sender<u64>,
}

impl Default for Turnstile {
    fn default() -> Self {
        Self {
            next_ticket: AtomicU64::new(0),
            now_serving: watch::Sender::new(0),
        }
    }
}

impl Turnstile {
    /// Draws the next ticket; call in arrival order.
    pub fn ticket(&self) -> u64 {
        self.next_ticket.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until every earlier ticket has been served. The returned turn lets the next
    /// ticket through when dropped, also when the handler returns early or panics.
    pub async fn wait(&self, ticket: u64) -> Turn<'_> {
        let mut serving = self.now_serving.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = serving.wait_for(|now| *now == ticket).await;
        Turn { turnstile: self }
    }
}

pub struct Turn<'a> {
    turnstile: &'a Turnstile,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turnstile.now_serving.send_modify(|now| *now += 1);
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
