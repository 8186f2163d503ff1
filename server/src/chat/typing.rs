//! One connection's typing indicator as its room sees it.
//!
//! The client reports `typing: true/false`; the room is told only of changes, at most one
//! notice per [`RELAY_INTERVAL`] per connection (a client toggling on every keystroke
//! costs the room one notice per interval), the latest state winning and the last change
//! never lost. `true` expires after [`TYPING_TTL_MS`] without a refresh; sending a message
//! or leaving ends it at once. This type holds the state and decides; the caller (rooms)
//! sends the notices and runs the timers it asks for.

use std::time::{Duration, Instant};

pub use app::protocol::TYPING_TTL_MS;

/// The least time between two typing notices about one connection.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct TypingRelay {
    /// As last reported by the client.
    typing: bool,
    /// Bumped on every report, so a stale expiry timer knows it is stale.
    generation: u64,
    /// What the others were last told, and when.
    relayed: bool,
    relayed_at: Option<Instant>,
    /// A deferred relay is scheduled.
    queued: bool,
}

/// What the room should do about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Tell the others this state now.
    Now(bool),
    /// Too soon after the last notice: ask again at this time (see [`TypingRelay::retry`]).
    At(Instant),
    Nothing,
}

impl TypingRelay {
    /// The client reported a state; returns the generation an expiry timer must carry.
    pub fn report(&mut self, typing: bool) -> u64 {
        self.generation += 1;
        self.typing = typing;
        self.generation
    }

    /// An expiry timer fired: `true` runs out if nothing was reported since.
    pub fn expire(&mut self, generation: u64) -> bool {
        if self.generation == generation && self.typing {
            self.typing = false;
            true
        } else {
            false
        }
    }

    /// The typist sent a message: typing ends, and the others are told at once if they
    /// think it is on (a message is not held back by the interval).
    pub fn end_for_message(&mut self, now: Instant) -> bool {
        self.typing = false;
        self.generation += 1;
        if std::mem::take(&mut self.relayed) {
            self.relayed_at = Some(now);
            true
        } else {
            false
        }
    }

    /// Whether the others currently think this connection is typing.
    pub fn shown(&self) -> bool {
        self.relayed
    }

    /// Decides whether to tell the room now, later or not at all.
    pub fn next(&mut self, now: Instant) -> Relay {
        if self.typing == self.relayed || self.queued {
            return Relay::Nothing;
        }
        if let Some(at) = self
            .relayed_at
            .map(|at| at + RELAY_INTERVAL)
            .filter(|at| *at > now)
        {
            self.queued = true;
            return Relay::At(at);
        }
        self.relayed = self.typing;
        self.relayed_at = Some(now);
        Relay::Now(self.typing)
    }

    /// A deferred relay is due: decide again.
    pub fn retry(&mut self, now: Instant) -> Relay {
        self.queued = false;
        self.next(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_relayed_at_most_once_per_interval_and_the_last_wins() {
        let start = Instant::now();
        let mut relay = TypingRelay::default();
        relay.report(true);
        assert_eq!(relay.next(start), Relay::Now(true));
        relay.report(false);
        let at = start + RELAY_INTERVAL;
        assert_eq!(relay.next(start), Relay::At(at));
        relay.report(true);
        assert_eq!(relay.next(start), Relay::Nothing, "already queued");
        relay.report(false);
        assert_eq!(
            relay.retry(at),
            Relay::Now(false),
            "the latest state goes out"
        );
        assert_eq!(relay.next(at), Relay::Nothing);
    }

    #[test]
    fn true_expires_unless_refreshed() {
        let mut relay = TypingRelay::default();
        let first = relay.report(true);
        let second = relay.report(true);
        assert!(!relay.expire(first), "a refresh makes the old timer stale");
        assert!(relay.expire(second));
        assert!(!relay.expire(second));
    }

    #[test]
    fn a_message_ends_typing_at_once() {
        let now = Instant::now();
        let mut relay = TypingRelay::default();
        assert!(!relay.end_for_message(now), "nobody was told it was typing");
        relay.report(true);
        assert_eq!(relay.next(now), Relay::Now(true));
        assert!(relay.end_for_message(now));
        assert!(!relay.shown());
    }
}
