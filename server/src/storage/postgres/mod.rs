//! PostgreSQL, for several servers sharing one database (`--redis` with
//! `--database postgres://…`).
//!
//! Why: SQLite is one file locked to one process; nodes behind a load balancer need one
//! history they all write. Here every server appends to the same tables, and the
//! database, not any server, keeps each room's order.
//!
//! How a room stays in order: an append locks the `rooms` row of every room its batch
//! touches (`SELECT … FOR UPDATE`, rooms sorted by name so two appends never wait on each
//! other in a circle), numbers its changes from that row's `last_seq`, writes them and
//! the new `last_seq`, and commits. Another append to the same room, from this server or
//! any other, waits on the row until then and continues from the committed number. So a
//! room's numbers are gap-free (a transaction that fails leaves `last_seq` as it was),
//! never repeated, and committed in order: a reader that sees number N sees every number
//! below it. Resends are recognised by `change_ids (room, owner, client_id)`, read after
//! the room lock is held, so a resend reaching two servers at once is stored once; its
//! primary key is the backstop.
//!
//! What else is guaranteed: reads run in one snapshot each, so a `catch_up`'s history
//! and updates agree: a read of several statements in a REPEATABLE READ transaction, a
//! read of one statement (a page of history without replies) in that statement's own. A batch is one transaction, applied in order
//! (a later change sees an earlier one). Deadlocks and serialization failures, which
//! the lock order should prevent anyway, are retried a few times before being returned.
//! Search is exact (every word as a substring of the lowercased text, as SQLite checks
//! it), with a trigram index when the `pg_trgm` extension can be installed, a scan
//! otherwise; a message is searchable as soon as its append commits. Text is stored as
//! its UTF-8 bytes (PostgreSQL's `text` cannot hold U+0000), room names compare byte-wise
//! (`COLLATE "C"`), so nothing depends on the database's locale.
//!
//! What is not: numbers are per room, so there is no order across rooms beyond search's
//! `arrival` (the order in which rows were written, not committed: a search page may miss
//! a message committed a moment after it by another server, and a later search finds
//! it). A transaction idle for a minute is ended by the database
//! (`idle_in_transaction_session_timeout`), so a server that stops mid-append (frozen,
//! cut off) cannot hold a room's lock longer than that; a killed one holds it only until
//! PostgreSQL notices the connection is gone. `holder` means nothing here: sharing the
//! database is the point.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use app::protocol::{excerpt, Message, ReplyPreview};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{
    fit, migrations, Applied, CatchUp, Change, ChangeKind, ChangeRefusal, Found, NameRecord, Owner,
    Page, ReadLimit, RoomCursor, Storage, StorageError, StorageFuture, StoredMessage,
    StoredReactions, StoredRoom,
};

/// The columns of a message version, in `messages`, as [`decode`] reads them.
const MESSAGE_COLUMNS: &str = "room, id, rev, author, owner, text, ts, client_id, \
     edited_ts, edits, deleted, reply_to, reactions";

/// Connections per server: appends hold one for their transaction, reads one each.
const MAX_CONNECTIONS: u32 = 8;

/// How many times an append that lost a deadlock or a race is tried again.
const APPEND_ATTEMPTS: usize = 5;

/// A reader's snapshot: everything its queries see was committed before the first.
const READ_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

pub struct PostgresStorage {
    pool: PgPool,
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://…`) and migrates it. Several
    /// servers may do this at once: sqlx holds an advisory lock while it migrates.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("banter")
            .options([("idle_in_transaction_session_timeout", "60s")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // `/readyz` and every request answer with an error, not a hang, when the
            // database is gone.
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrations::migrator(migrations::POSTGRES)
            .await?
            .run(&pool)
            .await?;
        Ok(Self { pool })
    }
}

fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn from_i64(id: i64) -> Result<u64, StorageError> {
    u64::try_from(id).map_err(|_| StorageError::OutOfRange(format!("number {id}")))
}

/// A message version from a row of [`MESSAGE_COLUMNS`].
fn decode(row: &PgRow) -> Result<StoredMessage, StorageError> {
    let reactions: Option<String> = row.try_get("reactions")?;
    let text: Vec<u8> = row.try_get("text")?;
    let edits: i32 = row.try_get("edits")?;
    Ok(StoredMessage {
        room: row.try_get("room")?,
        id: from_i64(row.try_get("id")?)?,
        rev: from_i64(row.try_get("rev")?)?,
        author: row.try_get("author")?,
        owner: Owner(row.try_get("owner")?),
        text: String::from_utf8(text)
            .map_err(|e| StorageError::Corrupt(format!("message text: {e}")))?,
        ts: row.try_get("ts")?,
        client_id: row.try_get("client_id")?,
        edited_ts: row.try_get("edited_ts")?,
        edits: u32::try_from(edits)
            .map_err(|_| StorageError::OutOfRange(format!("edits {edits}")))?,
        deleted: row.try_get("deleted")?,
        reply_to: row
            .try_get::<Option<i64>, _>("reply_to")?
            .map(from_i64)
            .transpose()?,
        reactions: StoredReactions::parse(reactions.as_deref())?,
    })
}

/// The text as search compares it: lowercased here (not by the database, whose
/// `lower()` depends on its locale), with U+0000, which `text` cannot hold, as U+FFFD
/// (queries are changed the same way).
fn search_form(text: &str) -> String {
    text.to_lowercase().replace('\0', "\u{FFFD}")
}

/// A LIKE pattern matching any text that contains `word`.
fn contains_pattern(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len() + 2);
    pattern.push('%');
    for c in word.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The one-line quote a reply shows of `original`.
fn preview(original: &StoredMessage) -> ReplyPreview {
    ReplyPreview {
        id: original.id,
        author: original.author.clone(),
        excerpt: if original.deleted {
            String::new()
        } else {
            excerpt(&original.text)
        },
        deleted: original.deleted,
    }
}

/// Whether an append that failed with `err` may simply be tried again: it lost a
/// deadlock, a serialization check, or a race for a unique key (a resend that another
/// transaction stored first; tried again, it is recognised as one).
fn retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(e) => {
            matches!(e.code().as_deref(), Some("40P01" | "40001" | "23505"))
        }
        _ => false,
    }
}

/// The wire form of `messages` (all of `room`), with reply previews of their originals
/// as they are now.
async fn public(
    tx: &mut PgConnection,
    room: &str,
    messages: Vec<StoredMessage>,
) -> Result<Vec<Message>, StorageError> {
    let mut wanted: Vec<i64> = messages
        .iter()
        .filter_map(|m| m.reply_to)
        .map(to_i64)
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut originals: HashMap<u64, StoredMessage> = HashMap::new();
    if !wanted.is_empty() {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id = ANY($2)"
        )))
        .bind(room)
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let original = decode(row)?;
            originals.insert(original.id, original);
        }
    }
    Ok(messages
        .into_iter()
        .map(|message| {
            let mut public = message.public();
            public.reply_to = message
                .reply_to
                .and_then(|id| originals.get(&id))
                .map(preview);
            public
        })
        .collect())
}

/// Up to `limit` messages with ids above `after`, oldest first, and whether more exist.
async fn after_in(
    tx: &mut Transaction<'_, Postgres>,
    room: &str,
    after: u64,
    limit: u32,
) -> Result<(Vec<StoredMessage>, bool), StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id > $2
         ORDER BY id LIMIT $3"
    )))
    .bind(room)
    .bind(to_i64(after))
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut **tx)
    .await?;
    let mut messages = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    Ok((messages, more))
}

/// Up to `limit` messages with ids below `before` (the newest of them), oldest first,
/// and whether older ones exist.
async fn before_in(
    tx: &mut PgConnection,
    room: &str,
    before: u64,
    limit: u32,
) -> Result<(Vec<StoredMessage>, bool), StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id < $2
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(room)
    .bind(to_i64(before))
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    let mut messages = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    messages.reverse();
    Ok((messages, more))
}

/// Messages whose latest version is numbered above `seq` (and, with `up_to`, whose id is
/// at most that), by `rev`; at most `limit` and whether more exist.
async fn changed_in(
    tx: &mut Transaction<'_, Postgres>,
    room: &str,
    seq: u64,
    up_to: Option<u64>,
    limit: u32,
) -> Result<(Vec<StoredMessage>, bool), StorageError> {
    // A message with rev above `seq` either never changed and was posted after it
    // (rev = id > seq: the primary key finds it) or changed (rev != id: the partial
    // index finds it). Each branch reads the first `limit + 1` of its own in rev order,
    // so the first `limit + 1` of both together are exact.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM (
             (SELECT {MESSAGE_COLUMNS} FROM messages
              WHERE room = $1 AND rev <> id AND rev > $2 AND id <= $3
              ORDER BY rev LIMIT $4)
             UNION ALL
             (SELECT {MESSAGE_COLUMNS} FROM messages
              WHERE room = $1 AND rev = id AND id > $2 AND id <= $3
              ORDER BY id LIMIT $4)
         ) AS changed
         ORDER BY rev LIMIT $4"
    )))
    .bind(room)
    .bind(to_i64(seq))
    .bind(to_i64(up_to.unwrap_or(u64::MAX)))
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut **tx)
    .await?;
    let mut messages = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    Ok((messages, more))
}

/// Messages as the column arrays that `unnest` makes rows of again.
struct Columns {
    rooms: Vec<String>,
    ids: Vec<i64>,
    revs: Vec<i64>,
    authors: Vec<String>,
    owners: Vec<String>,
    texts: Vec<Vec<u8>>,
    ts: Vec<i64>,
    client_ids: Vec<String>,
    edited_ts: Vec<Option<i64>>,
    edits: Vec<i32>,
    deleted: Vec<bool>,
    reply_to: Vec<Option<i64>>,
    reactions: Vec<Option<String>>,
    /// `search_text`: NULL once deleted.
    search: Vec<Option<String>>,
}

impl Columns {
    fn of(messages: &[&StoredMessage]) -> Self {
        Self {
            rooms: messages.iter().map(|m| m.room.clone()).collect(),
            ids: messages.iter().map(|m| to_i64(m.id)).collect(),
            revs: messages.iter().map(|m| to_i64(m.rev)).collect(),
            authors: messages.iter().map(|m| m.author.clone()).collect(),
            owners: messages.iter().map(|m| m.owner.0.clone()).collect(),
            texts: messages
                .iter()
                .map(|m| m.text.as_bytes().to_vec())
                .collect(),
            ts: messages.iter().map(|m| m.ts).collect(),
            client_ids: messages.iter().map(|m| m.client_id.clone()).collect(),
            edited_ts: messages.iter().map(|m| m.edited_ts).collect(),
            edits: messages
                .iter()
                .map(|m| i32::try_from(m.edits).unwrap_or(i32::MAX))
                .collect(),
            deleted: messages.iter().map(|m| m.deleted).collect(),
            reply_to: messages.iter().map(|m| m.reply_to.map(to_i64)).collect(),
            reactions: messages.iter().map(|m| m.reactions.to_json()).collect(),
            search: messages
                .iter()
                .map(|m| (!m.deleted).then(|| search_form(&m.text)))
                .collect(),
        }
    }
}

/// What one append knows of a room it holds the lock of.
struct RoomState {
    last_seq: u64,
    last_id: u64,
    last_ts: Option<i64>,
    changed: bool,
}

/// What resends are recognised by: room, owner, client_id.
type ChangeKey = (String, String, String);

/// One append's view of the messages it touches: what the database held when first
/// asked, with the batch's own changes applied, and what must be written.
#[derive(Default)]
struct Batch {
    rooms: HashMap<String, RoomState>,
    /// Change ids already stored, and those stored by this batch, with their message.
    change_ids: HashMap<ChangeKey, u64>,
    new_change_ids: Vec<(ChangeKey, u64)>,
    /// Messages as they are now (`None`: no such message).
    messages: HashMap<(String, u64), Option<StoredMessage>>,
    /// Messages to write, in the order the batch first changed them.
    dirty: Vec<(String, u64)>,
    dirty_set: HashSet<(String, u64)>,
    /// Messages this batch posted (to be inserted; the others are updated).
    posted: HashSet<(String, u64)>,
}

impl Batch {
    /// A message as it is now: this batch's version, or the stored one.
    async fn current(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        room: &str,
        id: u64,
    ) -> Result<Option<StoredMessage>, StorageError> {
        let key = (room.to_owned(), id);
        if let Some(known) = self.messages.get(&key) {
            return Ok(known.clone());
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = $1 AND id = $2"
        )))
        .bind(room)
        .bind(to_i64(id))
        .fetch_optional(&mut **tx)
        .await?;
        let found = row.as_ref().map(decode).transpose()?;
        self.messages.insert(key, found.clone());
        Ok(found)
    }

    /// The wire form, with its reply preview.
    async fn public(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        message: &StoredMessage,
    ) -> Result<Message, StorageError> {
        let mut public = message.public();
        if let Some(original) = message.reply_to {
            public.reply_to = self
                .current(tx, &message.room, original)
                .await?
                .map(|original| preview(&original));
        }
        Ok(public)
    }

    /// The next number of a room this batch holds the lock of.
    fn next_seq(&mut self, room: &str) -> Result<u64, StorageError> {
        let state = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| StorageError::Corrupt(format!("room {room:?} has no rooms row")))?;
        state.last_seq += 1;
        state.changed = true;
        Ok(state.last_seq)
    }

    fn store(&mut self, key: ChangeKey, message: StoredMessage) {
        let message_key = (message.room.clone(), message.id);
        if self.dirty_set.insert(message_key.clone()) {
            self.dirty.push(message_key.clone());
        }
        self.change_ids.insert(key.clone(), message.id);
        self.new_change_ids.push((key, message.id));
        self.messages.insert(message_key, Some(message));
    }

    async fn apply(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        change: &Change,
    ) -> Result<Applied, StorageError> {
        let key = (
            change.room.clone(),
            change.owner.0.clone(),
            change.client_id.clone(),
        );
        if let Some(&id) = self.change_ids.get(&key) {
            return Ok(match self.current(tx, &change.room, id).await? {
                Some(message) => Applied::Duplicate(self.public(tx, &message).await?),
                // Nothing is ever removed, but a resend must never be applied twice.
                None => Applied::Refused(ChangeRefusal::NotFound),
            });
        }
        let message = match &change.kind {
            ChangeKind::Post { text, reply_to } => {
                if let Some(original) = reply_to {
                    match self.current(tx, &change.room, *original).await? {
                        None => return Ok(Applied::Refused(ChangeRefusal::NotFound)),
                        Some(original) if original.deleted => {
                            return Ok(Applied::Refused(ChangeRefusal::Gone))
                        }
                        Some(_) => {}
                    }
                }
                let seq = self.next_seq(&change.room)?;
                if let Some(state) = self.rooms.get_mut(&change.room) {
                    state.last_id = seq;
                    state.last_ts = Some(change.ts);
                }
                self.posted.insert((change.room.clone(), seq));
                StoredMessage {
                    id: seq,
                    rev: seq,
                    room: change.room.clone(),
                    author: change.author.clone(),
                    owner: change.owner.clone(),
                    text: text.clone(),
                    ts: change.ts,
                    client_id: change.client_id.clone(),
                    edited_ts: None,
                    deleted: false,
                    reply_to: *reply_to,
                    reactions: StoredReactions::default(),
                    edits: 0,
                }
            }
            other => {
                let id = other.target().unwrap_or_default();
                let Some(mut message) = self.current(tx, &change.room, id).await? else {
                    return Ok(Applied::Refused(ChangeRefusal::NotFound));
                };
                match message.apply(change) {
                    Err(refusal) => return Ok(Applied::Refused(refusal)),
                    Ok(false) => return Ok(Applied::Unchanged(self.public(tx, &message).await?)),
                    Ok(true) => {}
                }
                message.rev = self.next_seq(&change.room)?;
                message
            }
        };
        let public = self.public(tx, &message).await?;
        self.store(key, message);
        Ok(Applied::Stored(public))
    }

    /// Writes what the batch changed: new messages, the latest versions of changed
    /// ones, change ids and the rooms' positions, one statement each.
    async fn write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StorageError> {
        let (new, changed): (Vec<&StoredMessage>, Vec<&StoredMessage>) = self
            .dirty
            .iter()
            .filter_map(|key| self.messages.get(key).and_then(Option::as_ref))
            .partition(|m| self.posted.contains(&(m.room.clone(), m.id)));
        if !new.is_empty() {
            let c = Columns::of(&new);
            // No ON CONFLICT: under the room lock a number is never given twice, and if
            // it were, failing (and retrying) is right, overwriting is not.
            sqlx::query(
                "INSERT INTO messages (room, id, rev, author, owner, text, ts, client_id,
                                       edited_ts, edits, deleted, reply_to, reactions,
                                       search_text)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[],
                                      $5::text[], $6::bytea[], $7::int8[], $8::text[],
                                      $9::int8[], $10::int4[], $11::bool[], $12::int8[],
                                      $13::text[], $14::text[])",
            )
            .bind(&c.rooms)
            .bind(&c.ids)
            .bind(&c.revs)
            .bind(&c.authors)
            .bind(&c.owners)
            .bind(&c.texts)
            .bind(&c.ts)
            .bind(&c.client_ids)
            .bind(&c.edited_ts)
            .bind(&c.edits)
            .bind(&c.deleted)
            .bind(&c.reply_to)
            .bind(&c.reactions)
            .bind(&c.search)
            .execute(&mut **tx)
            .await?;
        }
        if !changed.is_empty() {
            let c = Columns::of(&changed);
            let updated = sqlx::query(
                "UPDATE messages SET
                     rev = k.rev, text = k.text, edited_ts = k.edited_ts, edits = k.edits,
                     deleted = k.deleted, reply_to = k.reply_to, reactions = k.reactions,
                     search_text = k.search_text
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::bytea[], $5::int8[],
                             $6::int4[], $7::bool[], $8::int8[], $9::text[], $10::text[])
                     AS k(room, id, rev, text, edited_ts, edits, deleted, reply_to,
                          reactions, search_text)
                 WHERE messages.room = k.room AND messages.id = k.id AND messages.rev < k.rev",
            )
            .bind(&c.rooms)
            .bind(&c.ids)
            .bind(&c.revs)
            .bind(&c.texts)
            .bind(&c.edited_ts)
            .bind(&c.edits)
            .bind(&c.deleted)
            .bind(&c.reply_to)
            .bind(&c.reactions)
            .bind(&c.search)
            .execute(&mut **tx)
            .await?;
            if updated.rows_affected() != changed.len() as u64 {
                // Cannot happen under the room lock; if it did, nothing is committed.
                return Err(StorageError::Corrupt(format!(
                    "{} of {} changed messages were not as this append read them",
                    changed.len() as u64 - updated.rows_affected().min(changed.len() as u64),
                    changed.len()
                )));
            }
        }
        if !self.new_change_ids.is_empty() {
            let mut rooms = Vec::new();
            let mut owners = Vec::new();
            let mut client_ids = Vec::new();
            let mut ids = Vec::new();
            for ((room, owner, client_id), id) in &self.new_change_ids {
                rooms.push(room.as_str());
                owners.push(owner.as_str());
                client_ids.push(client_id.as_str());
                ids.push(to_i64(*id));
            }
            // No ON CONFLICT either: a change id stored twice fails the append, which is
            // then tried again and finds it (a resend).
            sqlx::query(
                "INSERT INTO change_ids (room, owner, client_id, id)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[])",
            )
            .bind(&rooms)
            .bind(&owners)
            .bind(&client_ids)
            .bind(&ids)
            .execute(&mut **tx)
            .await?;
        }
        let changed: Vec<(&String, &RoomState)> =
            self.rooms.iter().filter(|(_, s)| s.changed).collect();
        if !changed.is_empty() {
            let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
            let seqs: Vec<i64> = changed.iter().map(|(_, s)| to_i64(s.last_seq)).collect();
            let ids: Vec<i64> = changed.iter().map(|(_, s)| to_i64(s.last_id)).collect();
            let ts: Vec<Option<i64>> = changed.iter().map(|(_, s)| s.last_ts).collect();
            sqlx::query(
                "UPDATE rooms SET last_seq = k.last_seq, last_id = k.last_id, last_ts = k.last_ts
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[])
                     AS k(name, last_seq, last_id, last_ts)
                 WHERE rooms.name = k.name",
            )
            .bind(&names)
            .bind(&seqs)
            .bind(&ids)
            .bind(&ts)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

impl PostgresStorage {
    /// One attempt at [`Storage::append`], in one transaction.
    async fn append_once(&self, changes: &[Change]) -> Result<Vec<Applied>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut batch = Batch::default();

        // Every room a Post goes to gets its row; then every room of the batch is
        // locked, in name order (the same in every transaction: no deadlock). A room
        // without a row has no message, so nothing but a Post can change it.
        let mut rooms: Vec<&str> = changes.iter().map(|c| c.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut posted: Vec<&str> = changes
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::Post { .. }))
            .map(|c| c.room.as_str())
            .collect();
        posted.sort_unstable();
        posted.dedup();
        if !posted.is_empty() {
            sqlx::query(
                "INSERT INTO rooms (name)
                 SELECT name FROM unnest($1::text[]) AS r(name) ORDER BY name COLLATE \"C\"
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&posted)
            .execute(&mut *tx)
            .await?;
        }
        let locked = sqlx::query(
            "SELECT name, last_seq, last_id, last_ts FROM rooms WHERE name = ANY($1)
             ORDER BY name FOR UPDATE",
        )
        .bind(&rooms)
        .fetch_all(&mut *tx)
        .await?;
        for row in &locked {
            batch.rooms.insert(
                row.try_get("name")?,
                RoomState {
                    last_seq: from_i64(row.try_get("last_seq")?)?,
                    last_id: from_i64(row.try_get("last_id")?)?,
                    last_ts: row.try_get("last_ts")?,
                    changed: false,
                },
            );
        }

        // Resends, all in one query now that no other append can store one in these rooms.
        let (mut key_rooms, mut key_owners, mut key_ids) = (Vec::new(), Vec::new(), Vec::new());
        for change in changes {
            key_rooms.push(change.room.as_str());
            key_owners.push(change.owner.0.as_str());
            key_ids.push(change.client_id.as_str());
        }
        let known = sqlx::query(
            "SELECT c.room, c.owner, c.client_id, c.id FROM change_ids c
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(room, owner, client_id)
               ON c.room = k.room AND c.owner = k.owner AND c.client_id = k.client_id",
        )
        .bind(&key_rooms)
        .bind(&key_owners)
        .bind(&key_ids)
        .fetch_all(&mut *tx)
        .await?;
        for row in &known {
            batch.change_ids.insert(
                (
                    row.try_get("room")?,
                    row.try_get("owner")?,
                    row.try_get("client_id")?,
                ),
                from_i64(row.try_get("id")?)?,
            );
        }

        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.push(batch.apply(&mut tx, change).await?);
        }
        batch.write(&mut tx).await?;
        // A room whose only Posts were refused got a row for nothing: it goes again.
        let unused: Vec<&str> = posted
            .iter()
            .copied()
            .filter(|room| batch.rooms.get(*room).is_some_and(|s| s.last_seq == 0))
            .collect();
        if !unused.is_empty() {
            sqlx::query("DELETE FROM rooms WHERE name = ANY($1) AND last_seq = 0")
                .bind(&unused)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(results)
    }
}

impl Storage for PostgresStorage {
    fn append(&self, changes: Vec<Change>) -> StorageFuture<'_, Vec<Applied>> {
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                match self.append_once(&changes).await {
                    Err(StorageError::Database(err))
                        if retryable(&err) && attempt < APPEND_ATTEMPTS =>
                    {
                        tracing::debug!(attempt, "append lost a race, trying again: {err}");
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
    }

    fn catch_up<'a>(
        &'a self,
        room: &'a str,
        since: u64,
        limit: ReadLimit,
    ) -> StorageFuture<'a, CatchUp> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
            let (history, mut truncated) = after_in(&mut tx, room, since, limit.limit).await?;
            let (updates, mut too_many) =
                changed_in(&mut tx, room, since, Some(since), limit.limit).await?;
            let mut history = public(&mut tx, room, history).await?;
            let mut updates = public(&mut tx, room, updates).await?;
            tx.commit().await?;
            truncated |= fit(&mut history, limit.max_bytes, false);
            // Updates cannot be paged (a later `since` would skip some): too many is a reset.
            too_many |= fit(&mut updates, limit.max_bytes, false);
            if too_many {
                updates.clear();
            }
            Ok(CatchUp {
                history,
                truncated,
                updates,
                too_many_updates: too_many,
            })
        })
    }

    fn before<'a>(
        &'a self,
        room: &'a str,
        before: u64,
        limit: ReadLimit,
    ) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            // One statement reads one snapshot, so a page without replies needs no
            // transaction: BEGIN and COMMIT were two of its three round trips, and most of
            // the database's CPU when a crowd joins (each join reads the latest page). A
            // page with replies reads their originals too, both in one snapshot.
            let mut conn = self.pool.acquire().await?;
            let (messages, more) = before_in(&mut conn, room, before, limit.limit).await?;
            let (mut messages, more) = if messages.iter().all(|m| m.reply_to.is_none()) {
                (public(&mut conn, room, messages).await?, more)
            } else {
                drop(conn);
                let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
                let (messages, more) = before_in(&mut tx, room, before, limit.limit).await?;
                let messages = public(&mut tx, room, messages).await?;
                tx.commit().await?;
                (messages, more)
            };
            let cut = fit(&mut messages, limit.max_bytes, true);
            Ok(Page {
                messages,
                more: more || cut,
                newer: false,
            })
        })
    }

    fn around<'a>(&'a self, room: &'a str, id: u64, limit: ReadLimit) -> StorageFuture<'a, Page> {
        Box::pin(async move {
            let older_wanted = limit.limit / 2;
            let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
            let (older, more) = before_in(&mut tx, room, id, older_wanted).await?;
            let newer_wanted = limit.limit.saturating_sub(older.len() as u32).max(1);
            let (newer, newer_more) =
                after_in(&mut tx, room, id.saturating_sub(1), newer_wanted).await?;
            let mut older = public(&mut tx, room, older).await?;
            let mut newer = public(&mut tx, room, newer).await?;
            tx.commit().await?;
            let half = limit.max_bytes / 2;
            let older_cut = !older.is_empty() && fit(&mut older, half, true);
            let newer_cut = fit(&mut newer, half, false);
            older.extend(newer);
            Ok(Page {
                messages: older,
                more: more || older_cut,
                newer: newer_more || newer_cut,
            })
        })
    }

    fn changes_since<'a>(
        &'a self,
        room: &'a str,
        seq: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
            let (changed, _) = changed_in(&mut tx, room, seq, None, limit).await?;
            let changed = public(&mut tx, room, changed).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    fn last_seq<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64> {
        Box::pin(async move {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT last_seq FROM rooms WHERE name = $1")
                    .bind(room)
                    .fetch_optional(&self.pool)
                    .await?;
            last.map_or(Ok(0), from_i64)
        })
    }

    fn heads<'a>(&'a self, rooms: &'a [String]) -> StorageFuture<'a, Vec<(String, u64)>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT name, last_seq FROM rooms WHERE name = ANY($1)")
                .bind(rooms)
                .fetch_all(&self.pool)
                .await?;
            let mut known: HashMap<String, u64> = HashMap::with_capacity(rows.len());
            for row in &rows {
                known.insert(row.try_get("name")?, from_i64(row.try_get("last_seq")?)?);
            }
            Ok(rooms
                .iter()
                .map(|room| (room.clone(), known.get(room).copied().unwrap_or(0)))
                .collect())
        })
    }

    fn rooms<'a>(
        &'a self,
        cursor: Option<&'a RoomCursor>,
        limit: u32,
    ) -> StorageFuture<'a, Vec<StoredRoom>> {
        Box::pin(async move {
            let rows = match cursor {
                None => {
                    sqlx::query(
                        "SELECT name, last_id, last_ts FROM rooms WHERE last_id > 0
                         ORDER BY last_ts DESC, name DESC LIMIT $1",
                    )
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
                Some(cursor) => {
                    sqlx::query(
                        "SELECT name, last_id, last_ts FROM rooms
                         WHERE last_id > 0 AND (last_ts, name) < ($1, $2)
                         ORDER BY last_ts DESC, name DESC LIMIT $3",
                    )
                    .bind(cursor.last_ts)
                    .bind(&cursor.name)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
            };
            rows.iter()
                .map(|row| {
                    Ok(StoredRoom {
                        name: row.try_get("name")?,
                        last_id: from_i64(row.try_get("last_id")?)?,
                        last_ts: Some(row.try_get::<Option<i64>, _>("last_ts")?.unwrap_or(0)),
                    })
                })
                .collect()
        })
    }

    fn room_exists<'a>(&'a self, room: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM rooms WHERE name = $1 AND last_id > 0)",
            )
            .bind(room)
            .fetch_one(&self.pool)
            .await?;
            Ok(exists)
        })
    }

    fn activity<'a>(
        &'a self,
        room: &'a str,
        read: u64,
        mention_key: Option<&'a str>,
        cap: u32,
    ) -> StorageFuture<'a, (StoredRoom, u32, u32)> {
        Box::pin(async move {
            let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
            let newest = sqlx::query("SELECT last_id, last_ts FROM rooms WHERE name = $1")
                .bind(room)
                .fetch_optional(&mut *tx)
                .await?;
            let newest = match newest {
                Some(row) => StoredRoom {
                    name: room.to_owned(),
                    last_id: from_i64(row.try_get("last_id")?)?,
                    last_ts: row.try_get("last_ts")?,
                },
                None => StoredRoom {
                    name: room.to_owned(),
                    last_id: 0,
                    last_ts: None,
                },
            };
            // The first `cap` messages after `read`, of which the deleted ones are not
            // counted (as SQLite counts them).
            let rows = sqlx::query(
                "SELECT deleted, text FROM messages WHERE room = $1 AND id > $2
                 ORDER BY id LIMIT $3",
            )
            .bind(room)
            .bind(to_i64(read))
            .bind(i64::from(cap))
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut unread = 0u32;
            let mut mentions = 0u32;
            for row in &rows {
                if row.try_get::<bool, _>("deleted")? {
                    continue;
                }
                unread += 1;
                if let Some(key) = mention_key {
                    let text: Vec<u8> = row.try_get("text")?;
                    let text = String::from_utf8_lossy(&text);
                    if app::mentions::keys(&text).iter().any(|k| k == key) {
                        mentions += 1;
                    }
                }
            }
            Ok((newest, unread, mentions))
        })
    }

    fn search<'a>(
        &'a self,
        query: &'a str,
        room: Option<&'a str>,
        limit: ReadLimit,
        cursor: Option<&'a str>,
    ) -> StorageFuture<'a, Found> {
        Box::pin(async move {
            let ReadLimit { limit, max_bytes } = limit;
            let words: Vec<String> = query.split_whitespace().map(search_form).collect();
            // As SQLite matches: every word; and a query of only words shorter than a
            // trigram must also hold each trigram of the whole query (SQLite's index
            // finds candidates by those), and finds nothing when it has none.
            let mut terms: Vec<String> = words.clone();
            if words.iter().all(|w| w.chars().count() < 3) {
                let chars: Vec<char> = search_form(query).chars().collect();
                if chars.len() < 3 {
                    return Ok(Found::default());
                }
                for window in chars.windows(3) {
                    let trigram: String = window.iter().collect();
                    if !terms.contains(&trigram) {
                        terms.push(trigram);
                    }
                }
            }
            let before = match cursor {
                Some(cursor) => cursor
                    .parse::<i64>()
                    .map_err(|_| StorageError::OutOfRange(format!("search cursor {cursor:?}")))?,
                None => i64::MAX,
            };
            let conditions: String = (0..terms.len())
                .map(|n| format!(" AND search_text LIKE ${}", n + 4))
                .collect();
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS}, arrival FROM messages
                 WHERE search_text IS NOT NULL AND arrival < $1
                   AND ($2::text IS NULL OR room = $2){conditions}
                 ORDER BY arrival DESC LIMIT $3"
            );
            let mut tx = self.pool.begin_with(READ_SNAPSHOT).await?;
            let mut select = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(before)
                .bind(room)
                .bind(i64::from(limit) + 1);
            for term in &terms {
                select = select.bind(contains_pattern(term));
            }
            let rows = select.fetch_all(&mut *tx).await?;
            let mut found = Vec::new();
            let mut bytes = 0;
            let mut last = None;
            for row in &rows {
                if found.len() == limit as usize {
                    break;
                }
                let message = decode(row)?;
                let message_room = message.room.clone();
                let shown = public(&mut tx, &message_room, vec![message]).await?;
                let size: usize = shown.iter().map(super::json_size).sum();
                if !found.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                found.extend(shown);
                last = Some(row.try_get::<i64, _>("arrival")?);
            }
            tx.commit().await?;
            let next = last
                .filter(|_| found.len() < rows.len())
                .map(|arrival| arrival.to_string());
            Ok(Found {
                messages: found,
                next,
            })
        })
    }

    fn load_names(&self, since_ms: i64) -> StorageFuture<'_, Vec<NameRecord>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT key, name, owner, last_seen FROM names WHERE last_seen >= $1
                 ORDER BY key",
            )
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(NameRecord {
                        key: row.try_get("key")?,
                        name: row.try_get("name")?,
                        owner: row.try_get("owner")?,
                        last_seen: row.try_get("last_seen")?,
                    })
                })
                .collect()
        })
    }

    fn save_names(&self, mut names: Vec<NameRecord>) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            // In key order, so two servers saving the same names never deadlock.
            names.sort_by(|a, b| a.key.cmp(&b.key));
            let mut tx = self.pool.begin().await?;
            for name in &names {
                sqlx::query(
                    "INSERT INTO names (key, name, owner, last_seen) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO UPDATE SET
                         name = excluded.name, owner = excluded.owner,
                         last_seen = GREATEST(names.last_seen, excluded.last_seen)
                     WHERE names.owner = excluded.owner OR excluded.last_seen > names.last_seen",
                )
                .bind(&name.key)
                .bind(&name.name)
                .bind(&name.owner)
                .bind(name.last_seen)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn ping(&self) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_words_literally() {
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(search_form("Привет\0X"), "привет\u{FFFD}x");
    }
}
