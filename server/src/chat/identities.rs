//! Names bound to sessions, server-wide.
//!
//! The first join under a name issues a session token. While any connection holds the
//! name, and for [`NAME_HOLD_MS`] after the last one closed, only a join presenting that
//! token gets it: a client reconnecting after a network drop reclaims its name, and
//! nobody can pass as that person in the meantime. Names collide by `name_key` (Unicode
//! normalised and case folded).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app::protocol::NAME_HOLD_MS;

use super::rooms::lock;

/// How long a released name stays reserved for its session.
pub const NAME_HOLD: Duration = Duration::from_millis(NAME_HOLD_MS);

struct Identity {
    token: String,
    /// Connections currently holding the name.
    holders: usize,
    /// When the last holder let go; `None` while someone holds it.
    released_at: Option<Instant>,
}

impl Identity {
    fn is_reserved(&self, now: Instant) -> bool {
        self.holders > 0
            || self
                .released_at
                .is_some_and(|at| now.saturating_duration_since(at) < NAME_HOLD)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// Someone else holds the name, or held it moments ago and may come back.
    Held,
}

#[derive(Default)]
pub struct Identities {
    by_key: Mutex<HashMap<String, Identity>>,
}

impl Identities {
    /// Takes the name for one more connection. A free name gets a fresh token; a held
    /// one only with its token. Returns the token to hand to the client.
    pub fn claim(
        &self,
        key: &str,
        presented: Option<&str>,
        now: Instant,
    ) -> Result<String, ClaimRefusal> {
        let mut by_key = lock(&self.by_key);
        if by_key.len() >= SWEEP_AT && by_key.len().is_power_of_two() {
            by_key.retain(|_, identity| identity.is_reserved(now));
        }
        if let Some(identity) = by_key.get_mut(key) {
            let owner = presented.is_some_and(|token| constant_time_eq(token, &identity.token));
            if owner {
                identity.holders += 1;
                identity.released_at = None;
                return Ok(identity.token.clone());
            }
            if identity.is_reserved(now) {
                return Err(ClaimRefusal::Held);
            }
        }
        let token = new_token();
        by_key.insert(
            key.to_owned(),
            Identity {
                token: token.clone(),
                holders: 1,
                released_at: None,
            },
        );
        Ok(token)
    }

    /// One connection let go of the name.
    pub fn release(&self, key: &str, now: Instant) {
        if let Some(identity) = lock(&self.by_key).get_mut(key) {
            identity.holders = identity.holders.saturating_sub(1);
            if identity.holders == 0 {
                identity.released_at = Some(now);
            }
        }
    }
}

/// Below this many names nothing is swept; expired entries are otherwise dropped as the
/// map grows, so it stays proportional to the names in recent use.
const SWEEP_AT: usize = 1024;

/// 128 random bits from the operating system, hex encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    if let Err(err) = getrandom::fill(&mut bytes) {
        // Without OS randomness no token is safe to hand out; the process cannot do its
        // job, and this is not something a client can cause.
        panic!("the operating system's random source failed: {err}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares tokens without stopping at the first difference, so response timing does
/// not reveal how much of a guess was right.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_name_gets_a_fresh_token() {
        let ids = Identities::default();
        let now = Instant::now();
        let alice = ids.claim("alice", None, now).expect("free");
        let bob = ids.claim("bob", None, now).expect("free");
        assert_eq!(alice.len(), 32);
        assert_ne!(alice, bob);
    }

    #[test]
    fn a_held_name_needs_its_token() {
        let ids = Identities::default();
        let now = Instant::now();
        let token = ids.claim("alice", None, now).expect("free");
        assert_eq!(ids.claim("alice", None, now), Err(ClaimRefusal::Held));
        assert_eq!(
            ids.claim("alice", Some("guess"), now),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(ids.claim("alice", Some(&token), now), Ok(token));
    }

    #[test]
    fn a_released_name_is_kept_for_its_session_for_two_minutes() {
        let ids = Identities::default();
        let start = Instant::now();
        let token = ids.claim("alice", None, start).expect("free");
        ids.release("alice", start);
        let soon = start + NAME_HOLD - Duration::from_secs(1);
        assert_eq!(ids.claim("alice", None, soon), Err(ClaimRefusal::Held));
        assert_eq!(ids.claim("alice", Some(&token), soon), Ok(token.clone()));
        ids.release("alice", soon);
        let later = soon + NAME_HOLD;
        let taken_over = ids.claim("alice", None, later).expect("the hold expired");
        assert_ne!(taken_over, token);
        assert_eq!(
            ids.claim("alice", Some(&token), later),
            Err(ClaimRefusal::Held),
            "the old token no longer owns the name"
        );
    }

    #[test]
    fn a_name_stays_held_while_any_connection_holds_it() {
        let ids = Identities::default();
        let start = Instant::now();
        let token = ids.claim("alice", None, start).expect("free");
        ids.claim("alice", Some(&token), start)
            .expect("a second tab");
        ids.release("alice", start);
        let much_later = start + NAME_HOLD * 10;
        assert_eq!(
            ids.claim("alice", None, much_later),
            Err(ClaimRefusal::Held)
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
