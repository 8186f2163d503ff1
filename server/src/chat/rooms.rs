//! Rooms: who is online, the recent history, and message ids.
//!
//! Each room has its own lock, held only for synchronous work (socketioxide's `emit`
//! never waits), so fan-out happens in id order and no lock is held across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use app::protocol::{name_key, Message};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

pub struct Member {
    pub socket: SocketRef,
    pub name: String,
    key: String,
    /// Bumped on every typing refresh, so a stale expiry timer knows it is stale.
    pub typing_generation: u64,
    pub typing: bool,
}

#[derive(Default)]
pub struct Room {
    /// In the order they joined.
    members: Vec<Member>,
    last_id: u64,
    history: VecDeque<Message>,
    /// (author key, client_id) → message id, for the messages still in `history`.
    by_client_id: HashMap<(String, String), u64>,
}

pub enum Admission {
    Joined,
    AlreadyMember,
    NameTaken,
}

impl Room {
    pub fn admit(&mut self, socket: &SocketRef, name: &str) -> Admission {
        if self.member(socket.id).is_some() {
            return Admission::AlreadyMember;
        }
        let key = name_key(name);
        if self.members.iter().any(|m| m.key == key) {
            return Admission::NameTaken;
        }
        self.members.push(Member {
            socket: socket.clone(),
            name: name.to_owned(),
            key,
            typing_generation: 0,
            typing: false,
        });
        Admission::Joined
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

    pub fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// The newest `limit` messages, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<Message> {
        let skip = self.history.len().saturating_sub(limit);
        self.history.iter().skip(skip).cloned().collect()
    }

    /// The message this author already sent with this client_id, if it is still known.
    pub fn find_by_client_id(&self, author: &str, client_id: &str) -> Option<Message> {
        let id = *self
            .by_client_id
            .get(&(name_key(author), client_id.to_owned()))?;
        let first = self.history.front()?.id;
        self.history.get(usize::try_from(id - first).ok()?).cloned()
    }

    /// Stores a message under the next id, keeping at most `capacity` messages.
    pub fn append(&mut self, mut message: Message, capacity: usize) -> Message {
        self.last_id += 1;
        message.id = self.last_id;
        self.by_client_id.insert(
            (name_key(&message.author), message.client_id.clone()),
            message.id,
        );
        self.history.push_back(message.clone());
        while self.history.len() > capacity.max(1) {
            if let Some(old) = self.history.pop_front() {
                self.by_client_id
                    .remove(&(name_key(&old.author), old.client_id));
            }
        }
        message
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
}

/// Locks a mutex, recovering from poisoning: room state stays consistent between
/// statements, so a panicked handler must not take the whole room down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
