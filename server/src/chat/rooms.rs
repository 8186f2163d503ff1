//! Rooms: who is in each, presence notices, typing, and fan-out to the members.
//!
//! This is the one source of truth for membership. A room lists people (one per name),
//! each with the connections they have in it (tabs, devices); a connection's own list of
//! rooms (`Connection::membership`) is this module's index by connection, written only
//! here. Lock order: a connection's membership lock, then a room's lock, then outlets;
//! no lock is held across an await.
//!
//! Presence: a person arriving is announced at once to protocol 1 members (`joined`) and
//! in the next batch to protocol 2 members (`presence`, at most every
//! [`PRESENCE_BATCH_MS`] per room). A person whose last connection *drops* stays listed
//! for the departure grace (`--departure-grace-ms`, 10 s by default): coming back within it (a reload, a reconnect) is announced
//! to nobody; otherwise they are announced as leaving when it runs out. An explicit
//! `leave` is announced at once.
//!
//! A room lives in memory only while someone is in it (or departing); its messages live
//! in storage.
//!
//! With several nodes (`cluster/`), a room also lists the people the other nodes have in
//! it (`remote`): they count in its online list, and a person is announced as arriving
//! only when no node had them, and as leaving only when no node has them any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::protocol::{
    event, Presence, PresenceNotice, TypingNotice, MAX_MEMBERS_LISTED, PRESENCE_BATCH_MS,
    PRESENCE_NAMES_LISTED, PROTOCOL_VERSION,
};
use serde_json::value::RawValue;
use socketioxide::socket::Sid;

use super::connection::{Peer, Speaker};
use super::now_ms;
use super::outlet::{shared_json, Outgoing};
use super::typing::{Relay, TypingRelay, TYPING_TTL_MS};
use crate::cluster::Cluster;
use crate::lock;

struct Member {
    peer: Peer,
    typing: TypingRelay,
}

struct Person {
    key: String,
    name: String,
    members: Vec<Member>,
    /// Set while their last connection dropped less than the grace ago: the number of
    /// the departure, so a stale timer knows it is stale.
    departing: Option<u64>,
}

/// Arrivals and departures not yet told to protocol 2 members.
#[derive(Default)]
struct PendingPresence {
    /// (name, announce?) in order.
    arrived: Vec<(String, bool)>,
    left: Vec<String>,
    scheduled: bool,
}

#[derive(Default)]
pub struct Room {
    /// In the order they arrived. Added and removed only through [`Room::add_person`]
    /// and [`Room::remove_person`], which keep `index`.
    people: Vec<Person>,
    /// Where each person is in `people`, by key. Every join, every other node's arrival
    /// and every online count looks people up by key; a scan made a crowd of N joining
    /// cost N² steps, and with other nodes' people (each checked against this node's) N²
    /// per join. Removing someone shifts the positions after them: O(N), as the removal
    /// from `people` itself is.
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Whether storage holds a message of this room (kept in the room list then).
    pub has_messages: bool,
    pending: PendingPresence,
    departures: u64,
    /// People in this room on other nodes, (key, name), in the order they came. Changed
    /// only through [`Room::with_remote`] and [`Room::set_remote`], which keep the two
    /// counts below.
    remote: Vec<(String, String)>,
    /// How many entries of `remote` have each key: "is this person elsewhere?" without a
    /// scan.
    remote_keys: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Entries of `remote` whose person is also here: the online count is then
    /// `people + remote - this`, kept as people come and go instead of checking every
    /// remote person against this node's on every join.
    remote_also_here: usize,
    /// Members on protocol 1, told of each join and departure at once. Counted so that a
    /// join in a room without any (the usual case: browsers ask for protocol 2) does not
    /// scan every member: that made a crowd of N cost N² steps. Raised for every member
    /// added (one place, `Rooms::join`), lowered when one is removed; a count that stayed
    /// too high would only cost a scan.
    legacy_members: usize,
    /// The names a join reply lists (`members`), serialized once and shared by every reply
    /// until the list changes. A crowd of N joining one room asked for the list N times,
    /// each a copy of up to [`MAX_MEMBERS_LISTED`] names; past that many people a newcomer
    /// does not change the listed ones, so after the first few hundred joins the same
    /// JSON serves them all. Dropped by every change that can alter the list:
    /// [`Room::add_person`] and [`Room::remove_person`] within the listed ones, a rename
    /// there ([`Room::rename_person`]), any change of other nodes' people while this node's
    /// are fewer than the list holds ([`Room::set_remote`]). Debug builds check it against
    /// a fresh list on every use.
    listed: Option<Arc<RawValue>>,
}

/// The `members` of a join reply: a room's cached list (see `Room::listed`).
#[derive(Debug, Clone)]
pub struct ListedMembers(Arc<RawValue>);

impl serde::Serialize for ListedMembers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

pub struct RoomCell {
    pub name: String,
    state: Mutex<Room>,
}

/// Why a connection could not join.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The connection closed while its join waited its turn.
    Closed,
    /// It is in as many rooms as it may be.
    TooManyRooms(usize),
}

pub struct Joined {
    /// Who is online (each person once), at most [`MAX_MEMBERS_LISTED`].
    pub members: ListedMembers,
    pub online: usize,
}

/// How a connection leaves a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It asked to: announced at once.
    Leave,
    /// It disconnected: announced once the grace ran out without a return.
    Dropped,
}

impl Room {
    fn person(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }

    fn add_person(&mut self, person: Person) {
        self.remote_also_here += self.remote_keys.get(&person.key).copied().unwrap_or(0);
        self.index.insert(person.key.clone(), self.people.len());
        self.people.push(person);
        // Listed when among the first; also, someone here and elsewhere leaves the list
        // of other nodes' people, which follows this node's while they are fewer.
        if self.people.len() <= MAX_MEMBERS_LISTED {
            self.listed = None;
        }
    }

    fn remove_person(&mut self, at: usize) -> Person {
        if at < MAX_MEMBERS_LISTED {
            self.listed = None;
        }
        let person = self.people.remove(at);
        self.index.remove(&person.key);
        self.remote_also_here -= self.remote_keys.get(&person.key).copied().unwrap_or(0);
        for position in self.index.values_mut() {
            if *position > at {
                *position -= 1;
            }
        }
        person
    }

    /// The person with the connection `sid`: looked up by `key` when the caller knows
    /// whose connection it is, else found by a scan.
    fn person_with(&self, sid: Sid, key: Option<&str>) -> Option<usize> {
        let has = |index: usize| {
            self.people[index]
                .members
                .iter()
                .any(|m| m.peer.sid() == sid)
        };
        key.and_then(|key| self.person(key))
            .filter(|&index| has(index))
            .or_else(|| (0..self.people.len()).find(|&index| has(index)))
    }

    fn member_mut(&mut self, sid: Sid) -> Option<&mut Member> {
        self.people
            .iter_mut()
            .flat_map(|p| p.members.iter_mut())
            .find(|m| m.peer.sid() == sid)
    }

    fn name_of(&self, sid: Sid) -> Option<String> {
        self.people
            .iter()
            .find(|p| p.members.iter().any(|m| m.peer.sid() == sid))
            .map(|p| p.name.clone())
    }

    fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.people
            .iter()
            .flat_map(|p| p.members.iter())
            .map(|m| &m.peer)
    }

    /// People here on other nodes only.
    fn only_remote(&self) -> impl Iterator<Item = &(String, String)> {
        self.remote
            .iter()
            .filter(|(key, _)| self.person(key).is_none())
    }

    fn is_elsewhere(&self, key: &str) -> bool {
        self.remote_keys.contains_key(key)
    }

    /// A room that other nodes' people are in already (a snapshot of the cluster's).
    fn with_remote(remote: Vec<(String, String)>) -> Self {
        let mut room = Room::default();
        for (key, _) in &remote {
            *room.remote_keys.entry(key.clone()).or_default() += 1;
        }
        room.remote = remote;
        room
    }

    fn rename_person(&mut self, at: usize, name: &str) {
        if self.people[at].name != name {
            self.people[at].name = name.to_owned();
            if at < MAX_MEMBERS_LISTED {
                self.listed = None;
            }
        }
    }

    /// Another node's person is in the room now (`Some(name)`) or no longer (`None`).
    fn set_remote(&mut self, key: &str, name: Option<&str>) {
        if self.people.len() < MAX_MEMBERS_LISTED {
            self.listed = None;
        }
        let here = self.person(key).is_some();
        if let Some(removed) = self.remote_keys.remove(key) {
            self.remote.retain(|(k, _)| k != key);
            if here {
                self.remote_also_here -= removed;
            }
        }
        if let Some(name) = name {
            self.remote.push((key.to_owned(), name.to_owned()));
            self.remote_keys.insert(key.to_owned(), 1);
            if here {
                self.remote_also_here += 1;
            }
        }
    }

    /// People online (departing ones included, within their grace), on every node.
    pub fn online(&self) -> usize {
        debug_assert_eq!(
            self.remote_also_here,
            self.remote.len() - self.only_remote().count(),
            "remote_also_here drifted"
        );
        self.people.len() + self.remote.len() - self.remote_also_here
    }

    /// Who is online (each person once, in the order they came, this node's first), at
    /// most [`MAX_MEMBERS_LISTED`]: the cached list, made again after a change.
    pub fn listed_members(&mut self) -> ListedMembers {
        if let Some(listed) = &self.listed {
            debug_assert_eq!(
                listed.get(),
                self.fresh_list().get(),
                "the cached member list missed a change"
            );
            return ListedMembers(listed.clone());
        }
        let listed = self.fresh_list();
        self.listed = Some(listed.clone());
        ListedMembers(listed)
    }

    fn fresh_list(&self) -> Arc<RawValue> {
        let names: Vec<&str> = self
            .people
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.only_remote().map(|(_, name)| name.as_str()))
            .take(MAX_MEMBERS_LISTED)
            .collect();
        // A list of strings always serializes; were it not to, no names is still a list.
        shared_json(&names).unwrap_or_else(|| {
            Arc::from(RawValue::from_string("[]".to_owned()).expect("[] is JSON"))
        })
    }

    /// Its people on this node, (key, name), for another node's snapshot.
    fn local_people(&self) -> Vec<(String, String)> {
        self.people
            .iter()
            .map(|p| (p.key.clone(), p.name.clone()))
            .collect()
    }

    /// Sends an event to every connection in the room but `except`; returns its JSON
    /// when anyone was sent it (the sender's ack can reuse it).
    pub fn send_all<T: serde::Serialize + ?Sized>(
        &self,
        except: Option<Sid>,
        event: &'static str,
        data: &T,
    ) -> Option<Arc<serde_json::value::RawValue>> {
        // Nobody to tell (the sender alone in the room): nothing to serialize.
        if !self.peers().any(|p| Some(p.sid()) != except) {
            return None;
        }
        let json = shared_json(data)?;
        self.send_shared(except, event, &json, |_| true);
        Some(json)
    }

    fn send_shared(
        &self,
        except: Option<Sid>,
        event: &'static str,
        json: &Arc<serde_json::value::RawValue>,
        to: impl Fn(&Peer) -> bool,
    ) {
        for peer in self.peers().filter(|p| Some(p.sid()) != except && to(p)) {
            peer.send(Outgoing::event(event, json.clone()));
        }
    }

    /// Tells protocol 1 members now and queues the news for protocol 2 members; returns
    /// whether a batch must be scheduled.
    fn announce(
        &mut self,
        room: &str,
        name: &str,
        arrived: bool,
        announce: bool,
        except: Option<Sid>,
    ) -> bool {
        let notice = Presence {
            room: room.to_owned(),
            name: name.to_owned(),
            ts: now_ms(),
        };
        if self.legacy_members > 0 {
            if let Some(json) = shared_json(&notice) {
                let event = if arrived { event::JOINED } else { event::LEFT };
                self.send_shared(except, event, &json, |p| p.conn.protocol < PROTOCOL_VERSION);
            }
        }
        let pending = &mut self.pending;
        if arrived {
            pending.arrived.retain(|(n, _)| n != name);
            pending.arrived.push((name.to_owned(), announce));
        } else {
            pending.arrived.retain(|(n, _)| n != name);
            if !pending.left.iter().any(|n| n == name) {
                pending.left.push(name.to_owned());
            }
        }
        !std::mem::replace(&mut pending.scheduled, true)
    }
}

pub struct Rooms {
    /// Looked up on every request. Keyed by names clients chose: foldhash is seeded per
    /// process, so they cannot aim names at one bucket, and costs a fraction of SipHash.
    map: Mutex<HashMap<String, Arc<RoomCell>, foldhash::fast::RandomState>>,
    grace: Duration,
    cluster: Option<Arc<Cluster>>,
}

impl Rooms {
    /// Rooms whose departures are announced `grace` after a connection drops; with a
    /// cluster, presence and typing are shared with the other nodes.
    pub fn new(grace: Duration, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            map: Mutex::default(),
            grace,
            cluster,
        }
    }

    /// Every live room's people on this node.
    pub fn local_people(&self) -> Vec<(String, Vec<(String, String)>)> {
        let cells: Vec<Arc<RoomCell>> = lock(&self.map).values().cloned().collect();
        cells
            .iter()
            .map(|cell| (cell.name.clone(), lock(&cell.state).local_people()))
            .filter(|(_, people)| !people.is_empty())
            .collect()
    }

    /// Another node's person arrived in or left a room (the first node to have them, or
    /// the last): the room is told unless this node has them too.
    pub fn remote_presence(
        self: &Arc<Self>,
        name: &str,
        key: &str,
        person: &str,
        arrived: bool,
        announce: bool,
    ) {
        let Some(cell) = self.get(name) else { return };
        let mut room = lock(&cell.state);
        room.set_remote(key, arrived.then_some(person));
        if room.person(key).is_none() && room.announce(name, person, arrived, announce, None) {
            self.schedule_presence(&cell);
        }
    }

    /// Another node's typing notice, for this node's members of the room.
    pub fn remote_typing(&self, notice: &TypingNotice) {
        self.with(&notice.room, |room| {
            room.send_all(None, event::TYPING, notice);
        });
    }

    fn publish_typing(&self, notice: &TypingNotice) {
        if let Some(cluster) = &self.cluster {
            cluster.typing(notice);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomCell>> {
        lock(&self.map).get(name).cloned()
    }

    fn get_or_create(&self, name: &str) -> Arc<RoomCell> {
        lock(&self.map)
            .entry(name.to_owned())
            .or_insert_with(|| {
                let remote = self
                    .cluster
                    .as_ref()
                    .map(|cluster| cluster.people(name))
                    .unwrap_or_default();
                Arc::new(RoomCell {
                    name: name.to_owned(),
                    state: Mutex::new(Room::with_remote(remote)),
                })
            })
            .clone()
    }

    /// Rooms in memory (someone is in them).
    pub fn live(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether the room is in memory (someone is in it).
    pub fn is_live(&self, name: &str) -> bool {
        lock(&self.map).contains_key(name)
    }

    /// People online in a room, on every node.
    pub fn online(&self, name: &str) -> usize {
        match self.get(name) {
            Some(room) => lock(&room.state).online(),
            None => self
                .cluster
                .as_ref()
                .map_or(0, |cluster| cluster.people(name).len()),
        }
    }

    /// Rooms with people on other nodes only, by name, with how many: whether they have
    /// messages this node does not know (it learns that when it has the room itself).
    pub fn remote_only(&self) -> Vec<(String, usize)> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut rooms = cluster.rooms();
        {
            let map = lock(&self.map);
            rooms.retain(|(name, _)| !map.contains_key(name));
        }
        rooms.sort();
        rooms
    }

    /// Rooms with people in them on this node but no message yet, by name, with who is
    /// online (on every node).
    pub fn without_messages(&self) -> Vec<(String, usize)> {
        let cells: Vec<Arc<RoomCell>> = lock(&self.map).values().cloned().collect();
        let mut rooms: Vec<(String, usize)> = cells
            .iter()
            .filter_map(|cell| {
                let room = lock(&cell.state);
                (!room.has_messages && room.online() > 0)
                    .then(|| (cell.name.clone(), room.online()))
            })
            .collect();
        rooms.sort();
        rooms
    }

    /// Runs `f` on a room's state if the room is live.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&mut Room) -> R) -> Option<R> {
        let cell = self.get(name)?;
        let mut room = lock(&cell.state);
        Some(f(&mut room))
    }

    /// Adds a connection to a room under its speaker's name and tells the others.
    pub fn join(
        self: &Arc<Self>,
        peer: &Peer,
        speaker: &Speaker,
        name: &str,
        resume: bool,
        max_rooms: usize,
        has_messages: bool,
    ) -> Result<Joined, JoinRefusal> {
        let mut membership = peer.conn.membership();
        if membership.closed {
            return Err(JoinRefusal::Closed);
        }
        let already = membership.rooms.iter().any(|r| r == name);
        if !already && membership.rooms.len() >= max_rooms {
            return Err(JoinRefusal::TooManyRooms(max_rooms));
        }
        let cell = self.get_or_create(name);
        let mut room = lock(&cell.state);
        room.has_messages |= has_messages;
        let newly = !already;
        if newly {
            let member = Member {
                peer: peer.clone(),
                typing: TypingRelay::default(),
            };
            if peer.conn.protocol < PROTOCOL_VERSION {
                room.legacy_members += 1;
            }
            match room.person(&speaker.key) {
                Some(index) => {
                    // Another connection of someone here, or someone back within their
                    // grace: nobody is told.
                    room.rename_person(index, &speaker.name);
                    let person = &mut room.people[index];
                    person.departing = None;
                    person.members.push(member);
                }
                None => {
                    room.add_person(Person {
                        key: speaker.key.clone(),
                        name: speaker.name.clone(),
                        members: vec![member],
                        departing: None,
                    });
                    if let Some(cluster) = &self.cluster {
                        cluster.arrived(name, &speaker.key, &speaker.name, !resume);
                    }
                    // Someone already here through another node arrives for nobody.
                    if !room.is_elsewhere(&speaker.key)
                        && room.announce(name, &speaker.name, true, !resume, Some(peer.sid()))
                    {
                        self.schedule_presence(&cell);
                    }
                }
            }
            membership.rooms.push(name.to_owned());
        }
        Ok(Joined {
            members: room.listed_members(),
            online: room.online(),
        })
    }

    /// Takes a connection out of a room; false if it was not there.
    pub fn leave(self: &Arc<Self>, peer: &Peer, name: &str, how: Departure) -> bool {
        let key = {
            let mut membership = peer.conn.membership();
            let before = membership.rooms.len();
            membership.rooms.retain(|r| r != name);
            if membership.rooms.len() == before {
                return false;
            }
            membership
                .speaker
                .as_ref()
                .map(|speaker| speaker.key.clone())
        };
        self.remove_member(peer.sid(), key.as_deref(), name, how);
        true
    }

    /// Takes a closing connection out of every room; from then on it can join none and
    /// take no name. Returns the name it had, for the caller to give back.
    pub fn leave_all(self: &Arc<Self>, peer: &Peer, how: Departure) -> Option<Speaker> {
        let (rooms, speaker) = {
            let mut membership = peer.conn.membership();
            membership.closed = true;
            (
                std::mem::take(&mut membership.rooms),
                membership.speaker.take(),
            )
        };
        let key = speaker.as_ref().map(|speaker| speaker.key.as_str());
        for name in rooms {
            self.remove_member(peer.sid(), key, &name, how);
        }
        speaker
    }

    /// Takes the connection `sid` (of the person `key`, when known) out of a room.
    fn remove_member(self: &Arc<Self>, sid: Sid, key: Option<&str>, name: &str, how: Departure) {
        let Some(cell) = self.get(name) else { return };
        let mut room = lock(&cell.state);
        let Some(index) = room.person_with(sid, key) else {
            return;
        };
        let person = &mut room.people[index];
        let at = person
            .members
            .iter()
            .position(|m| m.peer.sid() == sid)
            .unwrap_or(0);
        let member = person.members.remove(at);
        let person_name = person.name.clone();
        let key = person.key.clone();
        let last = person.members.is_empty();
        if member.peer.conn.protocol < PROTOCOL_VERSION {
            room.legacy_members = room.legacy_members.saturating_sub(1);
        }
        if member.typing.shown() {
            let notice = TypingNotice {
                room: name.to_owned(),
                name: person_name.clone(),
                typing: false,
            };
            room.send_all(None, event::TYPING, &notice);
            self.publish_typing(&notice);
        }
        if !last {
            return;
        }
        match how {
            Departure::Leave => {
                room.remove_person(index);
                self.departed(&cell, &mut room, &key, &person_name);
            }
            Departure::Dropped => {
                room.departures += 1;
                let departure = room.departures;
                room.people[index].departing = Some(departure);
                let (rooms, cell, grace) = (self.clone(), cell.clone(), self.grace);
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    rooms.end_grace(&cell, &key, departure);
                });
            }
        }
        let empty = room.people.is_empty();
        drop(room);
        if empty {
            self.forget_if_empty(&cell);
        }
    }

    /// A departure's grace ran out: if they did not come back, they left.
    fn end_grace(self: &Arc<Self>, cell: &Arc<RoomCell>, key: &str, departure: u64) {
        let mut room = lock(&cell.state);
        let Some(index) = room.person(key) else {
            return;
        };
        if room.people[index].departing != Some(departure) || !room.people[index].members.is_empty()
        {
            return;
        }
        let person = room.remove_person(index);
        self.departed(cell, &mut room, key, &person.name);
        let empty = room.people.is_empty();
        drop(room);
        if empty {
            self.forget_if_empty(cell);
        }
    }

    /// A person left the room on this node for good: the other nodes hear of it, and
    /// the room is told unless they are still here through another node.
    fn departed(self: &Arc<Self>, cell: &Arc<RoomCell>, room: &mut Room, key: &str, person: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.departed(&cell.name, key, person);
        }
        if !room.is_elsewhere(key) && room.announce(&cell.name, person, false, true, None) {
            self.schedule_presence(cell);
        }
    }

    fn forget_if_empty(&self, cell: &Arc<RoomCell>) {
        let mut map = lock(&self.map);
        let empty = lock(&cell.state).people.is_empty();
        if empty && map.get(&cell.name).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            map.remove(&cell.name);
            if let Some(cluster) = &self.cluster {
                cluster.untrack(&cell.name);
            }
        }
    }

    fn schedule_presence(self: &Arc<Self>, cell: &Arc<RoomCell>) {
        let cell = cell.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(PRESENCE_BATCH_MS)).await;
            let mut room = lock(&cell.state);
            let pending = std::mem::take(&mut room.pending);
            let notice = presence_notice(&cell.name, pending, room.online(), now_ms());
            if let Some(json) = shared_json(&notice) {
                room.send_shared(None, event::PRESENCE, &json, |p| {
                    p.conn.protocol >= PROTOCOL_VERSION
                });
            }
        });
    }

    /// The typist sent a message: their indicator ends at once.
    pub fn end_typing(&self, name: &str, peer: &Peer) {
        let Some(cell) = self.get(name) else { return };
        let mut room = lock(&cell.state);
        let Some(person_name) = room.name_of(peer.sid()) else {
            return;
        };
        let ended = room
            .member_mut(peer.sid())
            .is_some_and(|m| m.typing.end_for_message(Instant::now()));
        if ended {
            let notice = TypingNotice {
                room: name.to_owned(),
                name: person_name,
                typing: false,
            };
            room.send_all(Some(peer.sid()), event::TYPING, &notice);
            self.publish_typing(&notice);
        }
    }

    /// The client reported whether it is typing; false if it is not in the room.
    pub fn typing(self: &Arc<Self>, name: &str, peer: &Peer, typing: bool) -> bool {
        let Some(cell) = self.get(name) else {
            return false;
        };
        let generation = {
            let mut room = lock(&cell.state);
            let Some(member) = room.member_mut(peer.sid()) else {
                return false;
            };
            member.typing.report(typing)
        };
        self.relay_typing(&cell, peer.sid(), false);
        if typing {
            let (rooms, cell, sid) = (self.clone(), cell.clone(), peer.sid());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(TYPING_TTL_MS)).await;
                let expired = {
                    let mut room = lock(&cell.state);
                    room.member_mut(sid)
                        .is_some_and(|m| m.typing.expire(generation))
                };
                if expired {
                    rooms.relay_typing(&cell, sid, false);
                }
            });
        }
        true
    }

    fn relay_typing(self: &Arc<Self>, cell: &Arc<RoomCell>, sid: Sid, deferred: bool) {
        let now = Instant::now();
        let mut room = lock(&cell.state);
        let Some(name) = room.name_of(sid) else {
            return;
        };
        let Some(member) = room.member_mut(sid) else {
            return;
        };
        let decision = if deferred {
            member.typing.retry(now)
        } else {
            member.typing.next(now)
        };
        match decision {
            Relay::Nothing => {}
            Relay::Now(typing) => {
                let notice = TypingNotice {
                    room: cell.name.clone(),
                    name,
                    typing,
                };
                room.send_all(Some(sid), event::TYPING, &notice);
                self.publish_typing(&notice);
            }
            Relay::At(at) => {
                let (rooms, cell) = (self.clone(), cell.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    rooms.relay_typing(&cell, sid, true);
                });
            }
        }
    }
}

/// The `presence` notice for what changed in a room since the last one. In a room of more
/// than [`MAX_MEMBERS_LISTED`] people online it names [`PRESENCE_NAMES_LISTED`] arrivals
/// at most (and as many returns) and counts the rest: every member receives the notice, so
/// a crowd of N arriving made N² names, the largest share of a crowd's CPU and of the
/// memory its sockets' buffers keep (PERFORMANCE.md). Departures are always named, so
/// that no client keeps listing someone who left.
fn presence_notice(room: &str, pending: PendingPresence, online: usize, ts: i64) -> PresenceNotice {
    let names_at_most = if online > MAX_MEMBERS_LISTED {
        PRESENCE_NAMES_LISTED
    } else {
        usize::MAX
    };
    let mut notice = PresenceNotice {
        room: room.to_owned(),
        joined: Vec::new(),
        more_joined: 0,
        returned: Vec::new(),
        more_returned: 0,
        left: pending.left,
        online,
        ts,
    };
    for (name, announce) in pending.arrived {
        let (names, more) = if announce {
            (&mut notice.joined, &mut notice.more_joined)
        } else {
            (&mut notice.returned, &mut notice.more_returned)
        };
        if names.len() < names_at_most {
            names.push(name);
        } else {
            *more += 1;
        }
    }
    notice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(arrived: usize, returned: usize, left: usize) -> PendingPresence {
        PendingPresence {
            arrived: (0..arrived)
                .map(|i| (format!("a{i}"), true))
                .chain((0..returned).map(|i| (format!("r{i}"), false)))
                .collect(),
            left: (0..left).map(|i| format!("l{i}")).collect(),
            scheduled: true,
        }
    }

    #[test]
    fn presence_names_everyone_up_to_the_listed_members() {
        let notice = presence_notice("general", pending(400, 80, 70), MAX_MEMBERS_LISTED, 7);
        assert_eq!(notice.joined.len(), 400);
        assert_eq!(notice.returned.len(), 80);
        assert_eq!(notice.left.len(), 70);
        assert_eq!((notice.more_joined, notice.more_returned), (0, 0));
        assert_eq!(notice.joined[0], "a0");
        assert_eq!(notice.online, MAX_MEMBERS_LISTED);
        let json = serde_json::to_string(&notice).unwrap();
        assert!(!json.contains("more_"), "{json}");
    }

    #[test]
    fn presence_in_a_larger_room_counts_the_arrivals_past_the_first_names() {
        let online = MAX_MEMBERS_LISTED + 1;
        let notice = presence_notice("general", pending(400, 80, 70), online, 7);
        assert_eq!(notice.joined.len(), PRESENCE_NAMES_LISTED);
        assert_eq!(notice.joined[0], "a0", "the first to arrive are named");
        assert_eq!(notice.more_joined, 400 - PRESENCE_NAMES_LISTED);
        assert_eq!(notice.returned.len(), PRESENCE_NAMES_LISTED);
        assert_eq!(notice.more_returned, 80 - PRESENCE_NAMES_LISTED);
        assert_eq!(notice.left.len(), 70, "departures are always named");
        let json = serde_json::to_string(&notice).unwrap();
        assert!(json.contains(r#""more_joined":350"#), "{json}");
        let few = presence_notice("general", pending(3, 0, 0), online, 7);
        assert_eq!((few.joined.len(), few.more_joined), (3, 0));
    }

    fn person(key: &str) -> Person {
        Person {
            key: key.to_owned(),
            name: key.to_uppercase(),
            members: Vec::new(),
            departing: None,
        }
    }

    /// Every person is found at their place in `people`, and nobody else is found.
    fn assert_indexed(room: &Room, gone: &[&str]) {
        assert_eq!(room.index.len(), room.people.len());
        for (at, person) in room.people.iter().enumerate() {
            assert_eq!(room.person(&person.key), Some(at), "{}", person.key);
        }
        for key in gone {
            assert_eq!(room.person(key), None, "{key}");
        }
    }

    #[test]
    fn people_are_found_by_key_through_arrivals_and_departures() {
        let mut room = Room::default();
        for key in ["a", "b", "c", "d", "e"] {
            room.add_person(person(key));
        }
        assert_indexed(&room, &[]);
        assert_eq!(room.remove_person(1).key, "b");
        assert_indexed(&room, &["b"]);
        assert_eq!(room.remove_person(3).key, "e");
        assert_eq!(room.remove_person(0).key, "a");
        assert_indexed(&room, &["a", "b", "e"]);
        room.add_person(person("b"));
        assert_indexed(&room, &["a", "e"]);
        let order: Vec<&str> = room.people.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(order, ["c", "d", "b"], "arrival order is kept");
        while !room.people.is_empty() {
            room.remove_person(0);
        }
        assert_indexed(&room, &["a", "b", "c", "d", "e"]);
    }

    fn names(room: &mut Room) -> Vec<String> {
        let mut names = listed(room);
        names.sort();
        names
    }

    /// The list a join reply carries, checked against one made afresh.
    fn listed(room: &mut Room) -> Vec<String> {
        let listed = room.listed_members().0;
        assert_eq!(listed.get(), room.fresh_list().get(), "stale member list");
        serde_json::from_str(listed.get()).unwrap()
    }

    #[test]
    fn the_member_list_is_made_again_only_when_it_changes() {
        let mut room = Room::with_remote(vec![("r1".into(), "R1".into())]);
        assert_eq!(listed(&mut room), ["R1"]);
        for i in 0..MAX_MEMBERS_LISTED + 10 {
            room.add_person(person(&format!("p{i}")));
            let names = listed(&mut room);
            assert_eq!(names.len(), (i + 2).min(MAX_MEMBERS_LISTED));
            assert_eq!(names[0], "P0");
        }
        // Past the listed ones, arrivals, departures and other nodes' people change nothing
        // a reply shows: the same JSON serves every join.
        let kept = room.listed_members().0;
        room.add_person(person("late"));
        room.remove_person(room.person("late").unwrap());
        room.remove_person(MAX_MEMBERS_LISTED + 3);
        room.set_remote("r2", Some("R2"));
        assert!(Arc::ptr_eq(&kept, &room.listed_members().0));
        // Within them, each change shows.
        room.rename_person(1, "Renamed");
        assert_eq!(listed(&mut room)[1], "Renamed");
        room.remove_person(0);
        let names = listed(&mut room);
        assert_eq!(names[0], "Renamed");
        assert_eq!(names.len(), MAX_MEMBERS_LISTED);
        // Fewer people here than the list holds: other nodes' people follow them.
        while room.people.len() > MAX_MEMBERS_LISTED - 3 {
            room.remove_person(room.people.len() - 1);
            listed(&mut room);
        }
        let names = listed(&mut room);
        assert_eq!(names.len(), MAX_MEMBERS_LISTED - 1);
        assert_eq!(names[names.len() - 2..], ["R1", "R2"]);
        room.set_remote("r3", Some("R3"));
        assert_eq!(listed(&mut room).last().map(String::as_str), Some("R3"));
        // Someone here who is also elsewhere is listed once, as one of this node's.
        room.add_person(person("r1"));
        let names = listed(&mut room);
        assert_eq!(names.iter().filter(|n| *n == "R1").count(), 1);
        assert_eq!(names.len(), MAX_MEMBERS_LISTED);
    }

    #[test]
    fn online_counts_each_person_once_on_every_node() {
        // "b" is here and on another node, "x" only on another node.
        let mut room = Room::with_remote(vec![("b".into(), "B".into()), ("x".into(), "X".into())]);
        assert_eq!(room.online(), 2);
        room.add_person(person("a"));
        room.add_person(person("b"));
        assert_eq!(room.online(), 3);
        assert_eq!(names(&mut room), ["A", "B", "X"]);
        assert!(room.is_elsewhere("b") && !room.is_elsewhere("a"));
        // Another node's "a" arrives, "x" leaves it, "y" arrives; "b" leaves there.
        room.set_remote("a", Some("A"));
        room.set_remote("x", None);
        room.set_remote("y", Some("Y"));
        room.set_remote("b", None);
        assert_eq!(room.online(), 3);
        assert_eq!(names(&mut room), ["A", "B", "Y"]);
        // "a" leaves here but is still elsewhere; "b" leaves here and is gone.
        let at = room.person("a").unwrap();
        room.remove_person(at);
        let at = room.person("b").unwrap();
        room.remove_person(at);
        assert_eq!(room.online(), 2);
        assert_eq!(names(&mut room), ["A", "Y"]);
        assert!(!room.is_elsewhere("x"));
        // Arriving twice elsewhere counts once.
        room.set_remote("y", Some("Y"));
        assert_eq!(room.online(), 2);
    }
}
