//! Durable storage behind one trait: SQLite embedded by default (`sqlite/`), PostgreSQL
//! for several nodes (`postgres/`).
//!
//! A room's history is one sequence of changes: a new message, an edit, a delete, a
//! reaction added or taken back. **Storage owns that sequence**: [`Storage::append`]
//! checks each change against the message it touches, detects resends, and gives every
//! change that changes something the room's next sequence number, all in the transaction
//! that commits it. Nothing above this trait hands out numbers, so a resend never burns
//! one, and a backend shared by several servers (PostgreSQL) can keep each room's order
//! exact: a number is never visible before the change that holds it is committed, and
//! numbers commit in order within a room.
//!
//! What is guaranteed to callers: when `append` returns `Ok`, every `Applied::Stored`
//! change is committed, has a number above every number the room had before, and reads
//! (`catch_up`, `page`, `changes_since`) see it. A message's id is the number of its
//! `Post`; its `rev` the number of its latest change. Reads return messages in their
//! latest version, with `reply_to` previews filled in as the original is now.

mod migrations;
mod names;
mod postgres;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use app::protocol::{Message, Reaction};
use serde::{Deserialize, Serialize};

pub use names::NameRecord;
pub use sqlite::SqliteStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error in the appender: {0}")]
    Appender(#[from] rusqlite::Error),
    #[error("could not start a database thread: {0}")]
    Thread(std::io::Error),
    #[error("the database appender has stopped")]
    AppenderStopped,
    #[error("could not prepare the database file: {0}")]
    File(std::io::Error),
    #[error("another Banter server is using this database: {0}")]
    Locked(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored value out of range: {0}")]
    OutOfRange(String),
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
}

pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Who made a change: the session that owns the author's name. Resends are recognised by
/// (room, owner, client_id) and only the owner of a message may edit or delete it.
/// A hash of the session token, never the token itself, so the database cannot be used
/// to speak as anyone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub String);

impl Owner {
    /// The owner id of a session token.
    pub fn of_token(token: &str) -> Owner {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(token.as_bytes());
        Owner(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// What a change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Post { text: String, reply_to: Option<u64> },
    Edit { id: u64, text: String },
    Delete { id: u64 },
    React { id: u64, emoji: String, add: bool },
}

impl ChangeKind {
    /// The message a change touches; `None` for a new one.
    pub fn target(&self) -> Option<u64> {
        match self {
            ChangeKind::Post { .. } => None,
            ChangeKind::Edit { id, .. }
            | ChangeKind::Delete { id }
            | ChangeKind::React { id, .. } => Some(*id),
        }
    }
}

/// One change as a client asked for it (validated for shape; checked against the message
/// it touches by the storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub room: String,
    pub owner: Owner,
    /// The name the change is made under.
    pub author: String,
    pub client_id: String,
    /// Server clock, milliseconds since the Unix epoch.
    pub ts: i64,
    pub kind: ChangeKind,
}

/// Why the storage refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// No such message in the room (or the reply's original does not exist).
    NotFound,
    /// Edit or delete of someone else's message.
    NotYours,
    /// The message (or the reply's original) was deleted.
    Gone,
    TooManyEdits,
    TooManyReactionKinds,
    TooManyReactions,
}

/// What became of one change handed to [`Storage::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Committed under the room's next number: the message as it is now (its `rev` is
    /// that number). To be delivered to the room.
    Stored(Message),
    /// This owner already made a change with this client_id here: the message that change
    /// touched, as it is now. Nothing was stored.
    Duplicate(Message),
    /// Valid, but it changes nothing (an edit to the same text, a delete of a deleted
    /// message, a reaction already given or not given): the message as it is.
    Unchanged(Message),
    Refused(ChangeRefusal),
}

/// A room and where its sequence stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    pub name: String,
    /// Its newest message's id; 0 for none.
    pub last_id: u64,
    /// Its newest message's time.
    pub last_ts: Option<i64>,
}

/// Where a page of [`Storage::rooms`] continues: after this room (time, name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    pub last_ts: i64,
    pub name: String,
}

/// A join with `since`: see [`Storage::catch_up`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Messages with ids above `since`, oldest first.
    pub history: Vec<Message>,
    /// More messages with ids above `since` exist than `history` holds.
    pub truncated: bool,
    /// Messages with ids up to `since` changed after it, by `rev`.
    pub updates: Vec<Message>,
    /// More than `limit` of those: the caller should start the client over instead.
    pub too_many_updates: bool,
}

/// A page of messages, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Message>,
    /// Older messages than the first exist.
    pub more: bool,
    /// Newer messages than the last exist (for [`Storage::around`]).
    pub newer: bool,
}

/// Bounds on one read: at most `limit` messages and, once at least one is in, no more
/// than `max_bytes` of their JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    pub limit: u32,
    pub max_bytes: usize,
}

/// Search results, newest first, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub messages: Vec<Message>,
    pub next: Option<String>,
}

pub trait Storage: Send + Sync + 'static {
    /// Applies changes in one transaction, committed before this returns; one result per
    /// change, in order. Changes in one call are applied in order, so a later one sees
    /// an earlier one's effect (an edit of a message posted in the same call).
    fn append(&self, changes: Vec<Change>) -> StorageFuture<'_, Vec<Applied>>;

    /// For a join with `since`: new messages after it and older messages changed after
    /// it, each list at most `limit.limit` long (and `history` at most `max_bytes`).
    fn catch_up<'a>(
        &'a self,
        room: &'a str,
        since: u64,
        limit: ReadLimit,
    ) -> StorageFuture<'a, CatchUp>;

    /// The newest messages with ids below `before`.
    fn before<'a>(
        &'a self,
        room: &'a str,
        before: u64,
        limit: ReadLimit,
    ) -> StorageFuture<'a, Page>;

    /// The message `id` and its neighbours: about half of `limit` older, the rest newer.
    fn around<'a>(&'a self, room: &'a str, id: u64, limit: ReadLimit) -> StorageFuture<'a, Page>;

    /// Messages whose latest change is numbered above `seq`, by `rev`: what a node that
    /// delivered everything up to `seq` missed (up to `limit`).
    fn changes_since<'a>(
        &'a self,
        room: &'a str,
        seq: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>>;

    /// The highest number given out in the room; 0 for a room without changes.
    fn last_seq<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64>;

    /// Rooms with messages, most recently active first, after `cursor`.
    fn rooms<'a>(
        &'a self,
        cursor: Option<&'a RoomCursor>,
        limit: u32,
    ) -> StorageFuture<'a, Vec<StoredRoom>>;

    /// Whether the room has any message.
    fn room_exists<'a>(&'a self, room: &'a str) -> StorageFuture<'a, bool>;

    /// For `watch`: the room's newest message, and the messages after `read` that are
    /// not deleted (up to `cap`), with how many of those mention `mention_key`.
    fn activity<'a>(
        &'a self,
        room: &'a str,
        read: u64,
        mention_key: Option<&'a str>,
        cap: u32,
    ) -> StorageFuture<'a, (StoredRoom, u32, u32)>;

    /// Messages containing every word of `query` (already trimmed), newest first.
    /// A page ends at `limit.limit` results, or before the one that would take it past
    /// `limit.max_bytes` (it holds at least one).
    fn search<'a>(
        &'a self,
        query: &'a str,
        room: Option<&'a str>,
        limit: ReadLimit,
        cursor: Option<&'a str>,
    ) -> StorageFuture<'a, Found>;

    /// Every name whose hold may still matter (seen since `since_ms`).
    fn load_names(&self, since_ms: i64) -> StorageFuture<'_, Vec<NameRecord>>;

    /// Writes name holds (inserted or replaced by key).
    fn save_names(&self, names: Vec<NameRecord>) -> StorageFuture<'_, ()>;

    /// Whether the database answers (for `/readyz`).
    fn ping(&self) -> StorageFuture<'_, ()>;

    /// The highest number given out in each of `rooms`; for nodes that compare what they
    /// delivered with what was committed (see `cluster/feed.rs`). Backends may answer
    /// in one query; this default asks room by room.
    fn heads<'a>(&'a self, rooms: &'a [String]) -> StorageFuture<'a, Vec<(String, u64)>> {
        Box::pin(async move {
            let mut heads = Vec::with_capacity(rooms.len());
            for room in rooms {
                heads.push((room.clone(), self.last_seq(room).await?));
            }
            Ok(heads)
        })
    }
}

/// Reactions as stored: with who gave each, by owner, so they can be taken back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReactions(pub Vec<StoredReaction>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReaction {
    #[serde(rename = "e")]
    pub emoji: String,
    /// (owner, name) in the order they reacted.
    #[serde(rename = "by")]
    pub by: Vec<(String, String)>,
}

impl StoredReactions {
    pub fn parse(json: Option<&str>) -> Result<Self, StorageError> {
        match json {
            None | Some("") => Ok(Self::default()),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| StorageError::Corrupt(format!("reactions {json:?}: {e}"))),
        }
    }

    /// `None` when there are none, so empty reactions take no space.
    pub fn to_json(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|r| r.by.len()).sum()
    }

    /// The wire form: emoji and names.
    pub fn public(&self) -> Vec<Reaction> {
        self.0
            .iter()
            .map(|r| Reaction {
                emoji: r.emoji.clone(),
                names: r.by.iter().map(|(_, name)| name.clone()).collect(),
            })
            .collect()
    }

    /// Adds or takes back one reaction; false when that changes nothing. Limits are the
    /// caller's to check before adding.
    pub fn toggle(&mut self, emoji: &str, owner: &Owner, name: &str, add: bool) -> bool {
        let index = self.0.iter().position(|r| r.emoji == emoji);
        if add {
            match index {
                Some(i) if self.0[i].by.iter().any(|(o, _)| *o == owner.0) => false,
                Some(i) => {
                    self.0[i].by.push((owner.0.clone(), name.to_owned()));
                    true
                }
                None => {
                    self.0.push(StoredReaction {
                        emoji: emoji.to_owned(),
                        by: vec![(owner.0.clone(), name.to_owned())],
                    });
                    true
                }
            }
        } else {
            let Some(i) = index else { return false };
            let before = self.0[i].by.len();
            self.0[i].by.retain(|(o, _)| *o != owner.0);
            let changed = self.0[i].by.len() != before;
            if self.0[i].by.is_empty() {
                self.0.remove(i);
            }
            changed
        }
    }
}

/// A message as storage holds it: the wire message plus what only storage needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub rev: u64,
    pub room: String,
    pub author: String,
    pub owner: Owner,
    pub text: String,
    pub ts: i64,
    pub client_id: String,
    pub edited_ts: Option<i64>,
    pub deleted: bool,
    pub reply_to: Option<u64>,
    pub reactions: StoredReactions,
    pub edits: u32,
}

impl StoredMessage {
    /// The wire form, with `reply_to` left for the caller to fill in.
    pub fn public(&self) -> Message {
        Message {
            id: self.id,
            room: self.room.clone(),
            author: self.author.clone(),
            text: self.text.clone(),
            ts: self.ts,
            client_id: self.client_id.clone(),
            rev: self.rev.max(self.id),
            edited_ts: self.edited_ts,
            deleted: self.deleted,
            reply_to: None,
            reactions: self.reactions.public(),
        }
    }

    /// Applies a change to this message (not a `Post`). `Ok(false)` when it changes
    /// nothing. The caller stamps `rev` and stores the result.
    pub fn apply(&mut self, change: &Change) -> Result<bool, ChangeRefusal> {
        use app::protocol::{MAX_EDITS_PER_MESSAGE, MAX_REACTIONS_PER_MESSAGE, MAX_REACTION_KINDS};
        match &change.kind {
            ChangeKind::Post { .. } => Ok(false),
            ChangeKind::Edit { text, .. } => {
                if self.owner != change.owner {
                    return Err(ChangeRefusal::NotYours);
                }
                if self.deleted {
                    return Err(ChangeRefusal::Gone);
                }
                if self.text == *text {
                    return Ok(false);
                }
                if self.edits >= MAX_EDITS_PER_MESSAGE {
                    return Err(ChangeRefusal::TooManyEdits);
                }
                self.text = text.clone();
                self.edits += 1;
                self.edited_ts = Some(change.ts);
                Ok(true)
            }
            ChangeKind::Delete { .. } => {
                if self.owner != change.owner {
                    return Err(ChangeRefusal::NotYours);
                }
                if self.deleted {
                    return Ok(false);
                }
                self.deleted = true;
                self.text.clear();
                self.reactions = StoredReactions::default();
                self.reply_to = None;
                Ok(true)
            }
            ChangeKind::React { emoji, add, .. } => {
                if self.deleted {
                    return Err(ChangeRefusal::Gone);
                }
                if *add {
                    let kinds = self.reactions.0.len();
                    let known = self.reactions.0.iter().any(|r| r.emoji == *emoji);
                    let mine = self.reactions.0.iter().any(|r| {
                        r.emoji == *emoji && r.by.iter().any(|(o, _)| *o == change.owner.0)
                    });
                    if !mine {
                        if !known && kinds >= MAX_REACTION_KINDS {
                            return Err(ChangeRefusal::TooManyReactionKinds);
                        }
                        if self.reactions.count() >= MAX_REACTIONS_PER_MESSAGE {
                            return Err(ChangeRefusal::TooManyReactions);
                        }
                    }
                }
                Ok(self
                    .reactions
                    .toggle(emoji, &change.owner, &change.author, *add))
            }
        }
    }
}

/// The JSON size of a message as it goes out, for reply byte caps.
pub fn json_size(message: &Message) -> usize {
    serde_json::to_vec(message).map_or(0, |json| json.len())
}

/// Keeps messages (in the given order) while they fit `max_bytes`, always at least one;
/// returns whether any were cut.
pub fn fit(messages: &mut Vec<Message>, max_bytes: usize, keep_last: bool) -> bool {
    let mut total = 0;
    let mut keep = 0;
    let sizes: Vec<usize> = messages.iter().map(json_size).collect();
    let order: Box<dyn Iterator<Item = &usize>> = if keep_last {
        Box::new(sizes.iter().rev())
    } else {
        Box::new(sizes.iter())
    };
    for size in order {
        if keep > 0 && total + size > max_bytes {
            break;
        }
        total += size;
        keep += 1;
    }
    let cut = keep < messages.len();
    if keep_last {
        messages.drain(..messages.len() - keep);
    } else {
        messages.truncate(keep);
    }
    cut
}

/// Opens the storage a `--database` URL names, creating and migrating it as needed.
pub async fn open(url: &str) -> Result<Arc<dyn Storage>, StorageError> {
    open_as(url, &format!("pid {}", std::process::id())).await
}

/// Like [`open`]; `holder` tells a second server that finds the database taken who
/// holds it (SQLite; a PostgreSQL database is meant to be shared).
pub async fn open_as(url: &str, holder: &str) -> Result<Arc<dyn Storage>, StorageError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStorage::open_as(url, holder).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        // Shared by design: several servers use one database, so nothing is locked.
        Ok(Arc::new(postgres::PostgresStorage::open(url).await?))
    } else {
        Err(StorageError::UnsupportedUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(owner: &str, kind: ChangeKind) -> Change {
        Change {
            room: "r".into(),
            owner: Owner(owner.into()),
            author: owner.into(),
            client_id: "c".into(),
            ts: 9,
            kind,
        }
    }

    fn stored() -> StoredMessage {
        StoredMessage {
            id: 1,
            rev: 1,
            room: "r".into(),
            author: "ann".into(),
            owner: Owner("ann".into()),
            text: "hi".into(),
            ts: 1,
            client_id: "c1".into(),
            edited_ts: None,
            deleted: false,
            reply_to: Some(0),
            reactions: StoredReactions::default(),
            edits: 0,
        }
    }

    #[test]
    fn only_the_owner_edits_and_deletes() {
        let mut m = stored();
        let edit = |who| {
            change(
                who,
                ChangeKind::Edit {
                    id: 1,
                    text: "yo".into(),
                },
            )
        };
        assert_eq!(m.apply(&edit("bob")), Err(ChangeRefusal::NotYours));
        assert_eq!(m.apply(&edit("ann")), Ok(true));
        assert_eq!((m.text.as_str(), m.edited_ts, m.edits), ("yo", Some(9), 1));
        assert_eq!(m.apply(&edit("ann")), Ok(false), "same text");
        let delete = |who| change(who, ChangeKind::Delete { id: 1 });
        assert_eq!(m.apply(&delete("bob")), Err(ChangeRefusal::NotYours));
        assert_eq!(m.apply(&delete("ann")), Ok(true));
        assert!(m.deleted && m.text.is_empty() && m.reply_to.is_none());
        assert_eq!(m.apply(&delete("ann")), Ok(false));
        assert_eq!(m.apply(&edit("ann")), Err(ChangeRefusal::Gone));
    }

    #[test]
    fn reactions_toggle_and_are_bounded() {
        let mut m = stored();
        let react = |who, emoji: &str, add| {
            change(
                who,
                ChangeKind::React {
                    id: 1,
                    emoji: emoji.into(),
                    add,
                },
            )
        };
        assert_eq!(m.apply(&react("bob", "👍", true)), Ok(true));
        assert_eq!(m.apply(&react("bob", "👍", true)), Ok(false));
        assert_eq!(m.apply(&react("cid", "👍", true)), Ok(true));
        assert_eq!(m.public().reactions[0].names, vec!["bob", "cid"]);
        assert_eq!(m.apply(&react("bob", "👍", false)), Ok(true));
        assert_eq!(m.apply(&react("bob", "👍", false)), Ok(false));
        assert_eq!(m.apply(&react("cid", "👍", false)), Ok(true));
        assert!(m.reactions.0.is_empty());
        for i in 0..20 {
            let emoji = char::from_u32(0x1F600 + i).unwrap().to_string();
            assert_eq!(m.apply(&react("bob", &emoji, true)), Ok(true));
        }
        assert_eq!(
            m.apply(&react("bob", "🎉", true)),
            Err(ChangeRefusal::TooManyReactionKinds)
        );
        let json = m.reactions.to_json().unwrap();
        assert_eq!(StoredReactions::parse(Some(&json)).unwrap(), m.reactions);
    }

    #[test]
    fn owners_are_hashes_of_tokens() {
        let a = Owner::of_token("5f0c9a7d2b41e8c3a6f0d9b2c4e7a1e1");
        assert_eq!(a.0.len(), 32);
        assert_ne!(a, Owner::of_token("5f0c9a7d2b41e8c3a6f0d9b2c4e7a1e2"));
        assert!(!a.0.contains("5f0c9a7d"));
    }

    #[test]
    fn fit_keeps_at_least_one_and_cuts_the_far_end() {
        let m = |id| Message {
            id,
            text: "x".repeat(100),
            ..Message::default()
        };
        let mut ms: Vec<Message> = (1..=10).map(m).collect();
        let one = json_size(&ms[0]);
        assert!(fit(&mut ms, one * 3 + 2, true));
        assert_eq!(ms.iter().map(|m| m.id).collect::<Vec<_>>(), vec![8, 9, 10]);
        let mut ms: Vec<Message> = (1..=10).map(m).collect();
        assert!(fit(&mut ms, 1, false));
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].id, 1);
    }
}
