//! `watch` and `activity`: connections that follow rooms they are not in, for unread and
//! mention counts in the room list.
//!
//! New messages of a watched room are gathered and sent to its watchers at most once per
//! [`ACTIVITY_EVERY`], one notice listing up to [`MAX_ITEMS`] messages (id, author,
//! mentions), serialized once for every watcher. A connection watches at most
//! [`MAX_WATCHED_ROOMS`] rooms, so what a room's notices cost is bounded by the
//! connections there are. Watching says nothing about being in the room: notices carry
//! no text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::protocol::{event, ActivityItem, ActivityNotice, Message};

use super::connection::Peer;
use super::outlet::{shared_json, Outgoing};
use super::rooms::Rooms;
use crate::lock;

/// The least time between two `activity` notices of one room.
pub const ACTIVITY_EVERY: Duration = Duration::from_secs(1);
/// Messages one notice lists at most; more are summed up as `more: true`.
pub const MAX_ITEMS: usize = 100;

#[derive(Default)]
struct Gathered {
    items: Vec<ActivityItem>,
    more: bool,
    last_id: u64,
    last_ts: Option<i64>,
}

#[derive(Default)]
pub struct Watchers {
    by_room: Mutex<HashMap<String, Vec<Peer>>>,
    /// Rooms with news waiting for their notice (a notice is scheduled for each).
    gathered: Mutex<HashMap<String, Gathered>>,
}

impl Watchers {
    /// Makes `rooms` the rooms this connection watches (replacing what it watched).
    pub fn watch(&self, peer: &Peer, rooms: Vec<String>) {
        let old = std::mem::replace(&mut *lock(&peer.conn.watching), rooms.clone());
        let mut by_room = lock(&self.by_room);
        for room in old {
            remove(&mut by_room, &room, peer);
        }
        for room in rooms {
            let watchers = by_room.entry(room).or_default();
            if !watchers.iter().any(|w| w.sid() == peer.sid()) {
                watchers.push(peer.clone());
            }
        }
    }

    /// A closing connection watches nothing more.
    pub fn forget(&self, peer: &Peer) {
        let old = std::mem::take(&mut *lock(&peer.conn.watching));
        let mut by_room = lock(&self.by_room);
        for room in old {
            remove(&mut by_room, &room, peer);
        }
    }

    /// A message was posted: its watchers hear of it with the room's next notice.
    pub fn posted(self: &Arc<Self>, rooms: &Arc<Rooms>, message: &Message) {
        if !lock(&self.by_room).contains_key(&message.room) {
            return;
        }
        let schedule = {
            let mut gathered = lock(&self.gathered);
            let fresh = !gathered.contains_key(&message.room);
            let room = gathered.entry(message.room.clone()).or_default();
            if room.items.len() < MAX_ITEMS {
                room.items.push(ActivityItem {
                    id: message.id,
                    author: message.author.clone(),
                    mentions: app::mentions::keys(&message.text),
                });
            } else {
                room.more = true;
            }
            room.last_id = room.last_id.max(message.id);
            room.last_ts = Some(message.ts);
            fresh
        };
        if schedule {
            let (watchers, rooms, name) = (self.clone(), rooms.clone(), message.room.clone());
            tokio::spawn(async move {
                tokio::time::sleep(ACTIVITY_EVERY).await;
                watchers.notify(&rooms, &name);
            });
        }
    }

    fn notify(&self, rooms: &Rooms, name: &str) {
        let Some(gathered) = lock(&self.gathered).remove(name) else {
            return;
        };
        let notice = ActivityNotice {
            room: name.to_owned(),
            last_id: gathered.last_id,
            last_ts: gathered.last_ts,
            online: rooms.online(name),
            messages: gathered.items,
            more: gathered.more,
        };
        let Some(json) = shared_json(&notice) else {
            return;
        };
        let watchers: Vec<Peer> = lock(&self.by_room).get(name).cloned().unwrap_or_default();
        for peer in watchers {
            peer.send(Outgoing::event(event::ACTIVITY, json.clone()));
        }
    }
}

fn remove(by_room: &mut HashMap<String, Vec<Peer>>, room: &str, peer: &Peer) {
    if let Some(watchers) = by_room.get_mut(room) {
        watchers.retain(|w| w.sid() != peer.sid());
        if watchers.is_empty() {
            by_room.remove(room);
        }
    }
}
