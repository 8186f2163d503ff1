//! Names bound to sessions, server-wide, kept across restarts.
//!
//! The first join under a name issues a session token. While any connection holds the
//! name, and for [`NAME_HOLD_MS`] after the last one closed, only a join presenting that
//! token gets it: a client reconnecting after a network drop reclaims its name, and
//! nobody can pass as that person in the meantime. Names collide by `name_key` (Unicode
//! normalised and case folded). This module is the only owner of names: a name is one
//! session's, so a room never meets two people under one name.
//!
//! Look-alikes: besides `name_key` (case, width, compatibility forms), a name is
//! compared with the names in use by its UTS #39 confusable skeletons, so that "Gvven"
//! cannot join while "Gwen" is online, nor "rn" pass for "m" or "l" for "I" (see
//! [`looks`]). The skeleton tables are the server's alone; the browser does not need them.
//!
//! Only a hash of each token is kept ([`Owner`]), in memory and in storage: storage
//! learns who owns which name (written behind, about once a second, and every
//! [`REFRESH`] for names in use), so that after a restart or a crash each name seen
//! shortly before is held for its owner for another [`NAME_HOLD_MS`] instead of going
//! to whoever asks first. What is not guaranteed: a name claimed less than a second
//! before a crash may be free after it (its record was not written yet).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use app::protocol::NAME_HOLD_MS;
use tokio::sync::watch;

use crate::lock;
use crate::storage::{NameRecord, Owner};

/// How long a released name stays reserved for its session.
pub const NAME_HOLD: Duration = Duration::from_millis(NAME_HOLD_MS);

/// How often names in use are written with a fresh `last_seen`.
pub const REFRESH: Duration = Duration::from_secs(30);

struct Hold {
    name: String,
    owner: Owner,
    /// Connections currently holding the name.
    holders: usize,
    /// When the last holder let go; `None` while someone holds it.
    released_at: Option<Instant>,
}

impl Hold {
    fn is_reserved(&self, now: Instant, hold: Duration) -> bool {
        self.holders > 0
            || self
                .released_at
                .is_some_and(|at| now.saturating_duration_since(at) < hold)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// Someone else holds the name, or held it moments ago and may come back.
    Held,
    /// The name looks like this one, which someone holds.
    LooksLike(String),
}

/// What a name looks like, in the forms two names that look alike share: its UTS #39
/// confusable skeleton, once as written and once case folded (the skeleton maps "I" to
/// "l" but "i" to "i"), case folded, with "w" written "vv" (a pair UTS #39's table,
/// which maps single characters, does not have). Two names look alike when any of their
/// looks are equal.
pub fn looks(name: &str) -> Vec<String> {
    use caseless::Caseless;
    use unicode_security::confusable_detection::skeleton;
    let as_written: String = skeleton(name.trim()).collect();
    let folded_first: String =
        skeleton(&name.trim().chars().default_case_fold().collect::<String>()).collect();
    let mut looks: Vec<String> = [as_written, folded_first]
        .into_iter()
        .map(|look| look.chars().default_case_fold().collect::<String>())
        .map(|look| look.split_whitespace().collect::<Vec<_>>().join(" "))
        .map(|look| look.replace('w', "vv"))
        .collect();
    looks.dedup();
    looks
}

/// A name granted: the token to hand to the client, and its owner id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub token: String,
    pub owner: Owner,
}

pub struct Identities {
    /// How long a released name stays its owner's ([`NAME_HOLD`] unless a test says).
    hold: Duration,
    by_key: Mutex<HashMap<String, Hold>>,
    /// Each look of a name in `by_key`, with that name's key.
    by_look: Mutex<HashMap<String, String>>,
    /// Records to write to storage.
    dirty: Mutex<Vec<NameRecord>>,
    /// Set once the holds storage kept have been restored; claims wait for it.
    ready: watch::Sender<bool>,
}

impl Default for Identities {
    fn default() -> Self {
        Self::new(NAME_HOLD)
    }
}

impl Identities {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            by_key: Mutex::new(HashMap::new()),
            by_look: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Vec::new()),
            ready: watch::Sender::new(false),
        }
    }

    /// Takes back the holds storage kept: each name is held for its owner as if its last
    /// connection closed at `now`. Then claims may proceed.
    pub fn restore(&self, records: Vec<NameRecord>, now: Instant) {
        let mut by_key = lock(&self.by_key);
        let mut by_look = lock(&self.by_look);
        for record in records {
            let looks = looks(&record.name);
            for look in &looks {
                by_look.insert(look.clone(), record.key.clone());
            }
            by_key.entry(record.key).or_insert(Hold {
                name: record.name,
                owner: Owner(record.owner),
                holders: 0,
                released_at: Some(now),
            });
        }
        drop(by_look);
        drop(by_key);
        self.ready.send_replace(true);
    }

    /// Waits until the kept holds are restored.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Takes the name for one more connection. A free name gets a fresh token; a held
    /// one only with its token.
    pub fn claim(
        &self,
        key: &str,
        name: &str,
        presented: Option<&str>,
        now: Instant,
    ) -> Result<Claim, ClaimRefusal> {
        let mut by_key = lock(&self.by_key);
        let mut by_look = lock(&self.by_look);
        if by_key.len() >= SWEEP_AT && by_key.len().is_power_of_two() {
            let hold = self.hold;
            by_key.retain(|_, h| h.is_reserved(now, hold));
            by_look.retain(|_, key| by_key.contains_key(key));
        }
        if let Some(hold) = by_key.get_mut(key) {
            if let Some(token) =
                presented.filter(|token| constant_time_eq(&Owner::of_token(token).0, &hold.owner.0))
            {
                hold.holders += 1;
                hold.released_at = None;
                hold.name = name.to_owned();
                let claim = Claim {
                    token: token.to_owned(),
                    owner: hold.owner.clone(),
                };
                self.record(key, hold);
                return Ok(claim);
            }
            if hold.is_reserved(now, self.hold) {
                return Err(ClaimRefusal::Held);
            }
        }
        let looks = looks(name);
        for look in &looks {
            let Some(other) = by_look.get(look).filter(|other| *other != key) else {
                continue;
            };
            if let Some(hold) = by_key.get(other).filter(|h| h.is_reserved(now, self.hold)) {
                return Err(ClaimRefusal::LooksLike(hold.name.clone()));
            }
        }
        // A free name taken with a token the client already holds keeps that token: a
        // client whose name's record was lost (it claimed the name just before a crash)
        // is still the same session, so its resends are still recognised. Choosing a
        // token gains nothing else: owning a name means knowing its token.
        let token = presented
            .filter(|token| is_well_formed(token))
            .map_or_else(new_token, str::to_owned);
        let owner = Owner::of_token(&token);
        for look in &looks {
            by_look.insert(look.clone(), key.to_owned());
        }
        let hold = Hold {
            name: name.to_owned(),
            owner: owner.clone(),
            holders: 1,
            released_at: None,
        };
        self.record(key, &hold);
        by_key.insert(key.to_owned(), hold);
        Ok(Claim { token, owner })
    }

    /// One connection let go of the name.
    pub fn release(&self, key: &str, now: Instant) {
        let mut by_key = lock(&self.by_key);
        if let Some(hold) = by_key.get_mut(key) {
            hold.holders = hold.holders.saturating_sub(1);
            if hold.holders == 0 {
                hold.released_at = Some(now);
                self.record(key, hold);
            }
        }
    }

    fn record(&self, key: &str, hold: &Hold) {
        lock(&self.dirty).push(NameRecord {
            key: key.to_owned(),
            name: hold.name.clone(),
            owner: hold.owner.0.clone(),
            last_seen: wall_ms(),
        });
    }

    /// What to write to storage now: what changed, and with `refresh` every name in use.
    pub fn take_dirty(&self, refresh: bool) -> Vec<NameRecord> {
        let mut dirty = std::mem::take(&mut *lock(&self.dirty));
        if refresh {
            let now = wall_ms();
            dirty.extend(
                lock(&self.by_key)
                    .iter()
                    .filter(|(_, hold)| hold.holders > 0)
                    .map(|(key, hold)| NameRecord {
                        key: key.clone(),
                        name: hold.name.clone(),
                        owner: hold.owner.0.clone(),
                        last_seen: now,
                    }),
            );
        }
        dirty
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Below this many names nothing is swept; expired entries are otherwise dropped as the
/// map grows, so it stays proportional to the names in recent use.
const SWEEP_AT: usize = 1024;

/// 128 random bits from the operating system, hex encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 16];
    if let Err(err) = getrandom::fill(&mut bytes) {
        // Without OS randomness no token is safe to hand out; the process cannot do its
        // job, and this is not something a client can cause.
        panic!("the operating system's random source failed: {err}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a presented token has the shape of the ones this server issues.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Compares without stopping at the first difference, so response timing does not
/// reveal how much of a guess was right.
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

    fn ids() -> Identities {
        let ids = Identities::default();
        ids.restore(Vec::new(), Instant::now());
        ids
    }

    #[test]
    fn a_free_name_gets_a_fresh_token() {
        let ids = ids();
        let now = Instant::now();
        let alice = ids.claim("alice", "Alice", None, now).expect("free");
        let bob = ids.claim("bob", "bob", None, now).expect("free");
        assert_eq!(alice.token.len(), 32);
        assert_ne!(alice, bob);
        assert_eq!(alice.owner, Owner::of_token(&alice.token));
    }

    #[test]
    fn a_held_name_needs_its_token() {
        let ids = ids();
        let now = Instant::now();
        let claim = ids.claim("alice", "alice", None, now).expect("free");
        assert_eq!(
            ids.claim("alice", "alice", None, now),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(
            ids.claim("alice", "alice", Some("guess"), now),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(
            ids.claim("alice", "alice", Some(&claim.token), now),
            Ok(claim)
        );
    }

    #[test]
    fn a_released_name_is_kept_for_its_session_for_two_minutes() {
        let ids = ids();
        let start = Instant::now();
        let claim = ids.claim("alice", "alice", None, start).expect("free");
        ids.release("alice", start);
        let soon = start + NAME_HOLD - Duration::from_secs(1);
        assert_eq!(
            ids.claim("alice", "alice", None, soon),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(
            ids.claim("alice", "alice", Some(&claim.token), soon),
            Ok(claim.clone())
        );
        ids.release("alice", soon);
        let later = soon + NAME_HOLD;
        let taken_over = ids
            .claim("alice", "alice", None, later)
            .expect("the hold expired");
        assert_ne!(taken_over.token, claim.token);
        assert_ne!(
            taken_over.owner, claim.owner,
            "a new owner: resends cannot collide"
        );
        assert_eq!(
            ids.claim("alice", "alice", Some(&claim.token), later),
            Err(ClaimRefusal::Held),
            "the old token no longer owns the name"
        );
    }

    #[test]
    fn a_free_name_taken_with_a_token_keeps_it() {
        let ids = ids();
        let now = Instant::now();
        let token = "0123456789abcdef0123456789abcdef";
        let claim = ids.claim("alice", "alice", Some(token), now).expect("free");
        assert_eq!(
            claim.token, token,
            "the session survives a lost name record"
        );
        let fresh = ids.claim("bob", "bob", Some("short"), now).expect("free");
        assert_ne!(fresh.token, "short", "only well-formed tokens are kept");
    }

    #[test]
    fn a_name_stays_held_while_any_connection_holds_it() {
        let ids = ids();
        let start = Instant::now();
        let claim = ids.claim("alice", "alice", None, start).expect("free");
        ids.claim("alice", "alice", Some(&claim.token), start)
            .expect("a second tab");
        ids.release("alice", start);
        let much_later = start + NAME_HOLD * 10;
        assert_eq!(
            ids.claim("alice", "alice", None, much_later),
            Err(ClaimRefusal::Held)
        );
    }

    #[test]
    fn restored_holds_keep_names_for_their_owners_after_a_restart() {
        let before = Identities::default();
        before.restore(Vec::new(), Instant::now());
        let claim = before
            .claim("alice", "Alice", None, Instant::now())
            .unwrap();
        let records = before.take_dirty(false);
        assert_eq!(records.len(), 1);
        assert!(
            !records[0].owner.contains(&claim.token),
            "only a hash is stored"
        );

        let after = Identities::default();
        let restart = Instant::now();
        after.restore(records, restart);
        assert_eq!(
            after.claim("alice", "alice", None, restart),
            Err(ClaimRefusal::Held)
        );
        assert_eq!(
            after.claim("alice", "Alice", Some(&claim.token), restart),
            Ok(claim)
        );
    }

    #[test]
    fn look_alikes_of_a_name_in_use_are_refused() {
        let ids = ids();
        let now = Instant::now();
        for (held, alike) in [
            ("Gwen", "Gvven"),
            ("Tom", "Tomrn"),
            ("Ill", "lll"),
            ("m", "rn"),
            ("Ann", "ANN0"),
        ] {
            let key = app::protocol::name_key(held);
            ids.claim(&key, held, None, now).expect("free");
            let other = app::protocol::name_key(alike);
            let refused = ids.claim(&other, alike, None, now);
            if held == "Tom" || held == "Ann" {
                assert!(refused.is_ok(), "{alike} does not look like {held}");
            } else {
                assert_eq!(
                    refused,
                    Err(ClaimRefusal::LooksLike(held.to_owned())),
                    "{alike}"
                );
            }
        }
        // Once the look-alike's hold is over, the name is free.
        let later = now + NAME_HOLD * 2;
        let ids2 = ids;
        let key = app::protocol::name_key("Gwen");
        ids2.release(&key, now);
        assert!(ids2
            .claim(&app::protocol::name_key("Gvven"), "Gvven", None, later)
            .is_ok());
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
