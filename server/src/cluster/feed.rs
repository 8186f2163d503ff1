//! One room's changes, delivered exactly once and in sequence order on this node, from
//! two sources that each may lag or drop: this node's own commits, and the other nodes'
//! commits as the bus publishes them.
//!
//! Storage numbers a room's changes 1, 2, 3, … with no gap (numbers are taken only by
//! committed changes), so a node knows exactly what it has delivered (`delivered`) and
//! what it lacks. A change numbered `delivered + 1` goes out at once, and so do the
//! consecutive ones waiting behind it; a later one waits. A gap that stays open longer
//! than the caller's patience, or a room whose head in storage stays ahead of what was
//! delivered (a publication lost while nothing else happened), is filled from storage:
//! `changes_since(delivered)` returns the latest version of every message changed since,
//! in `rev` order, which is what clients would hold after the missing changes anyway.
//!
//! No I/O and no clock: time is passed in, items come out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use app::protocol::Message;
use socketioxide::socket::Sid;

/// A change to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub message: Message,
    /// A new message (`message` event) rather than a change to one (`updated`).
    pub post: bool,
    /// The local connection that made it (it has the ack, not the event).
    pub from: Option<Sid>,
}

impl Item {
    fn seq(&self) -> u64 {
        self.message.version()
    }
}

#[derive(Debug)]
pub struct Feed {
    delivered: u64,
    pending: BTreeMap<u64, Item>,
    /// Since when a change waits for an earlier one.
    gap_since: Option<Instant>,
    /// Since when storage's head is known to be ahead of `delivered`.
    behind_since: Option<Instant>,
}

impl Feed {
    /// A room whose changes up to `delivered` are known to its members already.
    pub fn new(delivered: u64) -> Self {
        Self {
            delivered,
            pending: BTreeMap::new(),
            gap_since: None,
            behind_since: None,
        }
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// A change arrived; returns what can be delivered now, in order.
    pub fn offer(&mut self, item: Item, now: Instant) -> Vec<Item> {
        let seq = item.seq();
        if seq <= self.delivered {
            return Vec::new();
        }
        self.pending.entry(seq).or_insert(item);
        let ready = self.take_ready();
        self.gap_since = if self.pending.is_empty() {
            None
        } else {
            self.gap_since.or(Some(now))
        };
        ready
    }

    fn take_ready(&mut self) -> Vec<Item> {
        let mut ready = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            let item = entry.remove();
            self.delivered = item.seq();
            ready.push(item);
        }
        if !ready.is_empty() {
            self.behind_since = None;
        }
        ready
    }

    /// Storage says the room's last number is `head` (checked now and then): whether
    /// the room has been behind for longer than `patience` and must be filled.
    pub fn observe_head(&mut self, head: u64, now: Instant, patience: Duration) -> bool {
        if head <= self.delivered {
            self.behind_since = None;
            return false;
        }
        let since = *self.behind_since.get_or_insert(now);
        now.duration_since(since) >= patience
    }

    /// Whether a gap has stayed open longer than `patience`.
    pub fn gap_is_stale(&self, now: Instant, patience: Duration) -> bool {
        self.gap_since
            .is_some_and(|since| now.duration_since(since) >= patience)
    }

    /// What storage returned for `changes_since(delivered)`: delivers it, then whatever
    /// waited behind it.
    pub fn fill(&mut self, changed: Vec<Message>, now: Instant) -> Vec<Item> {
        let before = self.delivered;
        let mut ready = Vec::new();
        for message in changed {
            let seq = message.version();
            if seq <= self.delivered {
                continue;
            }
            self.delivered = seq;
            // A message first posted after what the members hold is new to them.
            let post = message.id > before;
            let from = self.pending.get(&seq).and_then(|item| item.from);
            ready.push(Item {
                message,
                post,
                from,
            });
        }
        let delivered = self.delivered;
        self.pending.retain(|seq, _| *seq > delivered);
        ready.extend(self.take_ready());
        self.gap_since = (!self.pending.is_empty()).then_some(now);
        self.behind_since = None;
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, rev: u64) -> Item {
        Item {
            message: Message {
                id,
                rev,
                room: "r".into(),
                ..Message::default()
            },
            post: id == rev,
            from: None,
        }
    }

    fn seqs(items: &[Item]) -> Vec<u64> {
        items.iter().map(Item::seq).collect()
    }

    #[test]
    fn in_order_changes_go_out_at_once_and_late_ones_wait() {
        let now = Instant::now();
        let mut feed = Feed::new(10);
        assert_eq!(seqs(&feed.offer(item(11, 11), now)), [11]);
        assert!(feed.offer(item(13, 13), now).is_empty(), "12 is missing");
        assert!(feed.offer(item(5, 14), now).is_empty(), "an edit waits too");
        assert_eq!(seqs(&feed.offer(item(12, 12), now)), [12, 13, 14]);
        assert!(
            feed.offer(item(12, 12), now).is_empty(),
            "a repeat is dropped"
        );
        assert_eq!(feed.delivered(), 14);
        assert!(!feed.gap_is_stale(now + Duration::from_secs(9), Duration::from_millis(100)));
    }

    #[test]
    fn a_stale_gap_is_filled_from_storage_once() {
        let now = Instant::now();
        let patience = Duration::from_millis(200);
        let mut feed = Feed::new(3);
        assert!(feed.offer(item(6, 6), now).is_empty());
        assert!(!feed.gap_is_stale(now + Duration::from_millis(100), patience));
        assert!(feed.gap_is_stale(now + patience, patience));
        // Storage has 4 (a post) and 5 (an edit of message 2), and 6.
        let filled = feed.fill(
            vec![item(4, 4).message, item(2, 5).message, item(6, 6).message],
            now,
        );
        assert_eq!(seqs(&filled), [4, 5, 6]);
        assert!(filled[0].post && !filled[1].post && filled[2].post);
        assert!(!feed.gap_is_stale(now + patience * 10, patience));
        assert!(
            feed.offer(item(6, 6), now).is_empty(),
            "the late publication is dropped"
        );
    }

    #[test]
    fn a_head_ahead_for_long_enough_asks_for_a_fill() {
        let now = Instant::now();
        let patience = Duration::from_millis(500);
        let mut feed = Feed::new(7);
        assert!(!feed.observe_head(7, now, patience));
        assert!(
            !feed.observe_head(8, now, patience),
            "maybe still in flight"
        );
        assert!(feed.observe_head(8, now + patience, patience));
        assert_eq!(seqs(&feed.offer(item(8, 8), now)), [8]);
        assert!(!feed.observe_head(8, now + patience * 2, patience));
    }

    #[test]
    fn a_message_posted_and_edited_while_missed_arrives_as_new_in_its_latest_version() {
        let mut feed = Feed::new(1);
        let filled = feed.fill(vec![item(2, 3).message], Instant::now());
        assert_eq!(filled.len(), 1);
        assert!(filled[0].post, "message 2 is new to the members");
        assert_eq!(feed.delivered(), 3);
    }
}
