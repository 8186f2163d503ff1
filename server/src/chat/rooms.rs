//! Rooms: who is online in each, and fan-out to them.
//!
//! Each room has its own lock, held only for synchronous work (socketioxide's `emit`
//! never waits), so no lock is held across an await. Messages are fanned out by the
//! writer alone, in id order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use app::protocol::name_key;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

pub struct Member {
    pub socket: SocketRef,
    pub name: String,
    key: String,
    /// The session token owning the name: one person may be here on several
    /// connections (tabs), nobody else under the same name.
    token: String,
    /// Bumped on every typing change, so a stale expiry timer knows it is stale.
    pub typing_generation: u64,
    /// Whether this member is typing, as last reported.
    pub typing: bool,
    /// What the others were last told, when, and whether a deferred relay is queued:
    /// typing changes are relayed at most once per [`TYPING_RELAY_INTERVAL`], the latest
    /// state winning.
    pub typing_relayed: bool,
    pub typing_relayed_at: Option<Instant>,
    pub typing_relay_queued: bool,
}

/// The least time between two typing notices about one member.
pub const TYPING_RELAY_INTERVAL: Duration = Duration::from_millis(500);

/// Who is in a room; its messages live in storage.
#[derive(Default)]
pub struct Room {
    /// In the order they joined.
    members: Vec<Member>,
}

pub enum Admission {
    /// The first connection of this person here: the others are told.
    Joined,
    /// Another connection of someone already here (a second tab): nobody is told.
    AnotherConnection,
    AlreadyMember,
    NameTaken,
}

impl Room {
    pub fn admit(&mut self, socket: &SocketRef, name: &str, token: &str) -> Admission {
        if self.member(socket.id).is_some() {
            return Admission::AlreadyMember;
        }
        let key = name_key(name);
        let mut same_person = false;
        for member in self.members.iter().filter(|m| m.key == key) {
            if member.token != token {
                return Admission::NameTaken;
            }
            same_person = true;
        }
        self.members.push(Member {
            socket: socket.clone(),
            name: name.to_owned(),
            key,
            token: token.to_owned(),
            typing_generation: 0,
            typing: false,
            typing_relayed: false,
            typing_relayed_at: None,
            typing_relay_queued: false,
        });
        if same_person {
            Admission::AnotherConnection
        } else {
            Admission::Joined
        }
    }

    /// Whether someone still has a connection here under this name.
    pub fn has_name(&self, name: &str) -> bool {
        let key = name_key(name);
        self.members.iter().any(|m| m.key == key)
    }

    pub fn remove(&mut self, sid: Sid) -> Option<Member> {
        let index = self.members.iter().position(|m| m.socket.id == sid)?;
        Some(self.members.remove(index))
    }

    pub fn member(&self, sid: Sid) -> Option<&Member> {
        self.members.iter().find(|m| m.socket.id == sid)
    }

    pub fn member_mut(&mut self, sid: Sid) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.socket.id == sid)
    }

    /// Who is here, each person once (however many connections they have).
    pub fn member_names(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.members
            .iter()
            .filter(|m| seen.insert(m.key.as_str()))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Sends an event to every member but `except`. Returns the sockets whose send
    /// buffer was full: slow consumers, to be disconnected once the lock is released.
    #[must_use]
    pub fn broadcast<T: serde::Serialize + ?Sized>(
        &self,
        except: Option<Sid>,
        event: &str,
        data: &T,
    ) -> Vec<SocketRef> {
        let mut slow = Vec::new();
        for member in self.members.iter().filter(|m| Some(m.socket.id) != except) {
            if let Err(err) = member.socket.emit(event, data) {
                if is_buffer_full(&err) {
                    slow.push(member.socket.clone());
                } else {
                    tracing::debug!(sid = %member.socket.id, %err, "emit to a closing socket");
                }
            }
        }
        slow
    }
}

pub fn is_buffer_full(err: &socketioxide::SendError) -> bool {
    matches!(
        err,
        socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)
    )
}

#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Arc<Mutex<Room>>>>,
}

impl Rooms {
    /// The room, created on first use.
    pub fn get_or_create(&self, name: &str) -> Arc<Mutex<Room>> {
        let mut rooms = lock(&self.rooms);
        rooms.entry(name.to_owned()).or_default().clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Mutex<Room>>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// People online in a room.
    pub fn online(&self, name: &str) -> usize {
        self.get(name).map_or(0, |room| lock(&room).members.len())
    }
}

/// Locks a mutex, recovering from poisoning: room state stays consistent between
/// statements, so a panicked handler must not take the whole room down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
