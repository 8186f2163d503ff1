//! Several Banter nodes as one chat (`--redis`): what nodes must share in real time goes
//! through Redis; what must last goes through the shared database (PostgreSQL).
//!
//! Why not socketioxide's Redis adapter: Banter fans out through its own rooms, so every
//! packet goes through a connection's outlet (byte budgets, slow consumers), and a
//! change's order comes from storage's numbering, not from arrival at Redis. So each
//! node publishes what it commits, and every node delivers to its own connections.
//!
//! What travels on the bus (one pub/sub channel, JSON):
//! - each committed change (room, its number, the message as it is): delivered on every
//!   node exactly once and in sequence order by a per-room [`feed::Feed`]; a node that
//!   misses a publication (Redis restarting, a network blip, a full publish queue)
//!   notices the gap by number, or sees the room's head in storage run ahead, and fills
//!   it from the database;
//! - typing notices;
//! - presence: who arrived in or left a room on which node; each node keeps the others'
//!   people per room and merges them into its rooms' online lists and announcements;
//! - a heartbeat every [`HEARTBEAT`]: a node not heard from for [`NODE_TIMEOUT`] is
//!   taken as dead, and its people leave every room (announced as leaving);
//! - a sync request when a node starts or reconnects, which every node answers with a
//!   snapshot of its people.
//!
//! Names and per-address budgets are shared through Redis keys updated by Lua scripts
//! (`scripts.rs`), so a name is one person's on the whole cluster and an address' limits
//! hold on every node.
//!
//! Not guaranteed: presence and typing are best effort while Redis is unreachable (they
//! catch up with the next sync); changes are never lost (the database has them).

pub mod feed;
mod scripts;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use app::protocol::{Message, TypingNotice};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use socketioxide::socket::Sid;
use tokio::sync::mpsc;

use crate::chat::Chat;
use crate::lock;
pub use scripts::{Budget, NameClaim};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node not heard from for this long is dead: its people leave its rooms.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a gap in a room's numbers may stay open before it is filled from storage.
const GAP_PATIENCE: Duration = Duration::from_millis(300);
/// How often the rooms' heads in storage are compared with what was delivered.
const HEADS_EVERY: Duration = Duration::from_secs(1);
/// Publications waiting for Redis; past this they are dropped (the database has them).
const PUBLISH_QUEUE: usize = 16_384;
const CHANNEL: &str = "banter:bus";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What nodes tell each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Bus {
    Change {
        node: String,
        message: Message,
        post: bool,
        committed_ms: i64,
    },
    Typing {
        node: String,
        notice: TypingNotice,
    },
    Arrived {
        node: String,
        room: String,
        key: String,
        name: String,
        announce: bool,
    },
    Departed {
        node: String,
        room: String,
        key: String,
        name: String,
    },
    Heartbeat {
        node: String,
    },
    SyncRequest {
        node: String,
    },
    Snapshot {
        node: String,
        /// (room, [(key, name)])
        rooms: Vec<(String, Vec<(String, String)>)>,
    },
    /// A node stopping cleanly: its people leave at once.
    Leaving {
        node: String,
    },
}

/// A person on other nodes.
#[derive(Debug, Clone)]
struct Remote {
    name: String,
    nodes: BTreeSet<String>,
}

pub struct Cluster {
    pub node: String,
    commands: ConnectionManager,
    publish: mpsc::Sender<Bus>,
    chat: OnceLock<Weak<Chat>>,
    /// room → key → person, for people on other nodes.
    remote: Mutex<HashMap<String, HashMap<String, Remote>>>,
    /// node → when last heard from.
    peers: Mutex<HashMap<String, Instant>>,
    /// Feeds of the rooms live on this node.
    feeds: Mutex<HashMap<String, feed::Feed>>,
    /// Held from taking a feed's ready changes until they are handed to the sockets, so
    /// two tasks (the bus subscriber, the local batcher, the gap filler) cannot hand
    /// over consecutive runs of one room in the wrong order. Taken before `feeds`, never
    /// while holding it; delivery does not come back here.
    delivering: Mutex<()>,
    connected: std::sync::atomic::AtomicBool,
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn new_node_id() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// Connects to Redis; the tasks start once [`Cluster::attach`] gives it the chat.
    pub async fn connect(url: &str) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(url)?;
        let commands = client.get_connection_manager().await?;
        let (publish, published) = mpsc::channel(PUBLISH_QUEUE);
        let cluster = Arc::new(Self {
            node: new_node_id(),
            commands,
            publish,
            chat: OnceLock::new(),
            remote: Mutex::default(),
            peers: Mutex::default(),
            feeds: Mutex::default(),
            delivering: Mutex::default(),
            connected: std::sync::atomic::AtomicBool::new(false),
        });
        cluster.renew_liveness().await?;
        tokio::spawn(run_publisher(cluster.commands.clone(), published));
        tokio::spawn(run_subscriber(Arc::downgrade(&cluster), client));
        tokio::spawn(run_heartbeat(Arc::downgrade(&cluster)));
        tokio::spawn(run_gap_filler(Arc::downgrade(&cluster)));
        tracing::info!(node = %cluster.node, "joined the cluster through Redis");
        Ok(cluster)
    }

    /// Hands the cluster the chat it delivers to; once.
    pub fn attach(&self, chat: Weak<Chat>) {
        let _ = self.chat.set(chat);
    }

    fn chat(&self) -> Option<Arc<Chat>> {
        self.chat.get()?.upgrade()
    }

    /// Whether Redis answered lately (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    fn send(&self, message: Bus) {
        if self.publish.try_send(message).is_err() {
            tracing::warn!("the bus is not keeping up: a publication was dropped (nodes fill the gap from the database)");
        }
    }

    /// A room became live on this node: changes up to its head in storage are in what
    /// its members read; later ones are delivered through its feed.
    pub fn track(&self, room: &str, head: u64) {
        lock(&self.feeds)
            .entry(room.to_owned())
            .or_insert_with(|| feed::Feed::new(head));
    }

    pub fn is_tracked(&self, room: &str) -> bool {
        lock(&self.feeds).contains_key(room)
    }

    /// Nobody is in the room on this node any more.
    pub fn untrack(&self, room: &str) {
        lock(&self.feeds).remove(room);
    }

    /// A change committed here: published for the others, delivered here in order.
    pub fn committed(&self, message: &Message, post: bool, from: Option<Sid>) {
        self.send(Bus::Change {
            node: self.node.clone(),
            message: message.clone(),
            post,
            committed_ms: now_ms(),
        });
        self.offer(feed::Item {
            message: message.clone(),
            post,
            from,
        });
    }

    fn offer(&self, item: feed::Item) {
        let room = item.message.room.clone();
        let _delivering = lock(&self.delivering);
        let ready = match lock(&self.feeds).get_mut(&room) {
            Some(feed) => feed.offer(item, Instant::now()),
            None => return,
        };
        self.deliver(ready);
    }

    fn deliver(&self, items: Vec<feed::Item>) {
        let Some(chat) = self.chat() else { return };
        for item in items {
            chat.deliver_here(&item.message, item.post, item.from);
        }
    }

    /// The people of a room on other nodes, (key, name).
    pub fn people(&self, room: &str) -> Vec<(String, String)> {
        lock(&self.remote)
            .get(room)
            .map(|people| {
                people
                    .iter()
                    .map(|(key, person)| (key.clone(), person.name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rooms with people on other nodes: (room, how many of them).
    pub fn rooms(&self) -> Vec<(String, usize)> {
        lock(&self.remote)
            .iter()
            .filter(|(_, people)| !people.is_empty())
            .map(|(room, people)| (room.clone(), people.len()))
            .collect()
    }

    pub fn is_present(&self, room: &str, key: &str) -> bool {
        lock(&self.remote)
            .get(room)
            .is_some_and(|people| people.contains_key(key))
    }

    /// Someone arrived in a room on this node.
    pub fn arrived(&self, room: &str, key: &str, name: &str, announce: bool) {
        self.send(Bus::Arrived {
            node: self.node.clone(),
            room: room.to_owned(),
            key: key.to_owned(),
            name: name.to_owned(),
            announce,
        });
    }

    /// Someone left a room on this node (for good: after the grace).
    pub fn departed(&self, room: &str, key: &str, name: &str) {
        self.send(Bus::Departed {
            node: self.node.clone(),
            room: room.to_owned(),
            key: key.to_owned(),
            name: name.to_owned(),
        });
    }

    pub fn typing(&self, notice: &TypingNotice) {
        self.send(Bus::Typing {
            node: self.node.clone(),
            notice: notice.clone(),
        });
    }

    /// Tells the others this node is stopping (its people leave at once).
    pub async fn leave(&self) {
        let mut commands = self.commands.clone();
        let payload = serde_json::to_string(&Bus::Leaving {
            node: self.node.clone(),
        })
        .unwrap_or_default();
        let _: Result<(), _> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload)
            .query_async(&mut commands)
            .await;
    }

    fn handle(&self, message: Bus) {
        match message {
            Bus::Change {
                node,
                message,
                post,
                committed_ms,
            } => {
                if node == self.node {
                    return;
                }
                if let Some(chat) = self.chat() {
                    let took = (now_ms() - committed_ms).max(0) as u64;
                    chat.metrics
                        .bus_latency
                        .observe(Duration::from_millis(took));
                    if post {
                        chat.watch_posted(&message);
                    }
                }
                self.offer(feed::Item {
                    message,
                    post,
                    from: None,
                });
            }
            Bus::Typing { node, notice } => {
                if node != self.node {
                    if let Some(chat) = self.chat() {
                        chat.remote_typing(&notice);
                    }
                }
            }
            Bus::Arrived {
                node,
                room,
                key,
                name,
                announce,
            } => {
                if node != self.node {
                    self.heard(&node);
                    self.remote_arrival(&node, &room, &key, &name, announce);
                }
            }
            Bus::Departed {
                node,
                room,
                key,
                name: _,
            } => {
                if node != self.node {
                    self.remote_departure(&node, &room, &key);
                }
            }
            Bus::Heartbeat { node } => {
                if node != self.node && self.heard(&node) {
                    // A node we did not know: it may have missed our people.
                    self.send_snapshot();
                }
            }
            Bus::SyncRequest { node } => {
                if node != self.node {
                    self.heard(&node);
                    self.send_snapshot();
                }
            }
            Bus::Snapshot { node, rooms } => {
                if node != self.node {
                    self.heard(&node);
                    self.apply_snapshot(&node, rooms);
                }
            }
            Bus::Leaving { node } => {
                if node != self.node {
                    lock(&self.peers).remove(&node);
                    self.forget_node(&node);
                }
            }
        }
    }

    /// Records that `node` is alive; true if it was not known.
    fn heard(&self, node: &str) -> bool {
        lock(&self.peers)
            .insert(node.to_owned(), Instant::now())
            .is_none()
    }

    fn remote_arrival(&self, node: &str, room: &str, key: &str, name: &str, announce: bool) {
        let first = {
            let mut remote = lock(&self.remote);
            let people = remote.entry(room.to_owned()).or_default();
            let person = people.entry(key.to_owned()).or_insert_with(|| Remote {
                name: name.to_owned(),
                nodes: BTreeSet::new(),
            });
            person.name = name.to_owned();
            person.nodes.insert(node.to_owned()) && person.nodes.len() == 1
        };
        if first {
            if let Some(chat) = self.chat() {
                chat.remote_presence(room, key, name, true, announce);
            }
        }
    }

    fn remote_departure(&self, node: &str, room: &str, key: &str) {
        let gone = {
            let mut remote = lock(&self.remote);
            let Some(people) = remote.get_mut(room) else {
                return;
            };
            let Some(person) = people.get_mut(key) else {
                return;
            };
            person.nodes.remove(node);
            if person.nodes.is_empty() {
                let person = people.remove(key);
                if people.is_empty() {
                    remote.remove(room);
                }
                person.map(|p| p.name)
            } else {
                None
            }
        };
        if let (Some(name), Some(chat)) = (gone, self.chat()) {
            chat.remote_presence(room, key, &name, false, true);
        }
    }

    /// Every person `node` had leaves.
    fn forget_node(&self, node: &str) {
        let entries: Vec<(String, String)> = lock(&self.remote)
            .iter()
            .flat_map(|(room, people)| {
                people
                    .iter()
                    .filter(|(_, p)| p.nodes.contains(node))
                    .map(|(key, _)| (room.clone(), key.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (room, key) in entries {
            self.remote_departure(node, &room, &key);
        }
    }

    fn apply_snapshot(&self, node: &str, rooms: Vec<(String, Vec<(String, String)>)>) {
        let now_there: BTreeSet<(String, String)> = rooms
            .iter()
            .flat_map(|(room, people)| {
                people
                    .iter()
                    .map(move |(key, _)| (room.clone(), key.clone()))
            })
            .collect();
        // Whoever the node had and no longer lists has left.
        let stale: Vec<(String, String)> = lock(&self.remote)
            .iter()
            .flat_map(|(room, people)| {
                people
                    .iter()
                    .filter(|(key, p)| {
                        p.nodes.contains(node)
                            && !now_there.contains(&(room.clone(), (*key).clone()))
                    })
                    .map(|(key, _)| (room.clone(), key.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (room, key) in stale {
            self.remote_departure(node, &room, &key);
        }
        for (room, people) in rooms {
            for (key, name) in people {
                // Known already, or new: a snapshot announces nobody.
                self.remote_arrival(node, &room, &key, &name, false);
            }
        }
    }

    fn send_snapshot(&self) {
        let Some(chat) = self.chat() else { return };
        self.send(Bus::Snapshot {
            node: self.node.clone(),
            rooms: chat.local_people(),
        });
    }
}

/// Publishes what the node queues, in order; reconnects by itself (ConnectionManager).
async fn run_publisher(mut commands: ConnectionManager, mut queue: mpsc::Receiver<Bus>) {
    while let Some(message) = queue.recv().await {
        let Ok(payload) = serde_json::to_string(&message) else {
            continue;
        };
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(payload)
            .query_async(&mut commands)
            .await;
        if let Err(err) = published {
            tracing::warn!(%err, "could not publish on the bus (nodes fill the gap from the database)");
        }
    }
}

/// Listens to the bus, reconnecting whenever the connection breaks; after each
/// (re)connection asks every node for its people and checks every room for gaps.
async fn run_subscriber(cluster: Weak<Cluster>, client: redis::Client) {
    use futures_util::StreamExt;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(err) = pubsub.subscribe(CHANNEL).await {
                    tracing::warn!(%err, "could not subscribe to the bus");
                } else {
                    let Some(strong) = cluster.upgrade() else {
                        return;
                    };
                    strong
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    strong.send(Bus::SyncRequest {
                        node: strong.node.clone(),
                    });
                    strong.send_snapshot();
                    drop(strong);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(cluster) = cluster.upgrade() else {
                            return;
                        };
                        match serde_json::from_slice::<Bus>(message.get_payload_bytes()) {
                            Ok(bus) => cluster.handle(bus),
                            Err(err) => tracing::debug!(%err, "unreadable bus message"),
                        }
                    }
                    tracing::warn!("lost the bus; reconnecting");
                }
            }
            Err(err) => tracing::warn!(%err, "cannot reach Redis; retrying"),
        }
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        strong
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        drop(strong);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Says this node is alive, and takes nodes not heard from as dead.
async fn run_heartbeat(cluster: Weak<Cluster>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if let Err(err) = cluster.renew_liveness().await {
            tracing::warn!(%err, "could not renew this node's liveness in Redis");
        }
        cluster.send(Bus::Heartbeat {
            node: cluster.node.clone(),
        });
        let dead: Vec<String> = {
            let mut peers = lock(&cluster.peers);
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, seen)| seen.elapsed() > NODE_TIMEOUT)
                .map(|(node, _)| node.clone())
                .collect();
            for node in &dead {
                peers.remove(node);
            }
            dead
        };
        for node in dead {
            tracing::warn!(%node, "a node went silent: its people leave");
            cluster.forget_node(&node);
        }
    }
}

/// Fills gaps that stay open, and rooms whose head in storage ran ahead of what was
/// delivered here.
async fn run_gap_filler(cluster: Weak<Cluster>) {
    let mut last_heads = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(chat) = cluster.chat() else { continue };
        let now = Instant::now();
        let mut to_fill: Vec<(String, u64)> = lock(&cluster.feeds)
            .iter()
            .filter(|(_, feed)| feed.gap_is_stale(now, GAP_PATIENCE))
            .map(|(room, feed)| (room.clone(), feed.delivered()))
            .collect();
        if now.duration_since(last_heads) >= HEADS_EVERY {
            last_heads = now;
            let rooms: Vec<String> = lock(&cluster.feeds).keys().cloned().collect();
            if !rooms.is_empty() {
                match chat.storage().heads(&rooms).await {
                    Ok(heads) => {
                        let mut feeds = lock(&cluster.feeds);
                        for (room, head) in heads {
                            if let Some(feed) = feeds.get_mut(&room) {
                                if feed.observe_head(head, now, HEADS_EVERY / 2)
                                    && !to_fill.iter().any(|(r, _)| *r == room)
                                {
                                    to_fill.push((room, feed.delivered()));
                                }
                            }
                        }
                    }
                    Err(err) => tracing::warn!(%err, "could not read the rooms' heads"),
                }
            }
        }
        for (room, since) in to_fill {
            match chat.storage().changes_since(&room, since, 1_000).await {
                Ok(changed) => {
                    tracing::debug!(%room, since, found = changed.len(), "filled a gap from the database");
                    let _delivering = lock(&cluster.delivering);
                    let ready = match lock(&cluster.feeds).get_mut(&room) {
                        Some(feed) => feed.fill(changed, Instant::now()),
                        None => continue,
                    };
                    cluster.deliver(ready);
                }
                Err(err) => tracing::warn!(%err, %room, "could not fill a gap"),
            }
        }
    }
}
