//! The embedded default: SQLite in WAL mode, one server per database file.
//!
//! Writes of changes go through the appender thread (`appender.rs`, which explains the
//! journal); everything else (reads, name holds) through a small sqlx pool. The two
//! paths share no connection, so readers looping on history cannot hold up a send: a
//! send never waits for the pool. Reads see the journal and `messages` together and
//! merge them by id, keeping each message's highest `rev` (see `read_merged`).

mod appender;
mod lock;
mod scratch;
mod search_terms;

use std::collections::BTreeMap;
use std::str::FromStr;

use app::protocol::Message;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{
    fit, migrations, Applied, CatchUp, Change, Found, NameRecord, Owner, Page, ReadLimit,
    RoomCursor, Storage, StorageError, StorageFuture, StoredMessage, StoredReactions, StoredRoom,
};
use appender::Appender;
use lock::DatabaseLock;
use scratch::ScratchFile;

/// Search candidates read from the index at a time.
const SEARCH_BATCH: i64 = 200;
/// Candidates one search looks at before it returns what it found with a cursor: a
/// query whose trigrams are common but whose words are rare costs at most this much.
const SEARCH_EXAMINED: usize = 5_000;

/// The columns a message version has, in `messages` and in the journal alike, in the
/// order `appender::stored_message` and [`decode`] read them.
pub(crate) const MESSAGE_COLUMNS: &str = "room, id, rev, author, owner, text, ts, client_id, \
     edited_ts, edits, deleted, reply_to, reactions";

pub struct SqliteStorage {
    /// Reads, and the rare writes other than changes (name holds).
    pool: SqlitePool,
    appender: Appender,
    _lock: Option<DatabaseLock>,
    /// For `sqlite::memory:`: the private file standing in for it, removed on drop.
    _scratch: Option<ScratchFile>,
}

impl SqliteStorage {
    /// Opens (creating and migrating) the database at `url`, for this process alone.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        Self::open_as(url, &format!("pid {}", std::process::id())).await
    }

    /// Like [`SqliteStorage::open`]; `holder` says who this process is (pid, address) to
    /// a second one that finds the database taken.
    pub async fn open_as(url: &str, holder: &str) -> Result<Self, StorageError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let scratch = if in_memory {
            Some(ScratchFile::new()?)
        } else {
            None
        };
        let options = match &scratch {
            Some(scratch) => SqliteConnectOptions::new().filename(scratch.database()),
            None => SqliteConnectOptions::from_str(url)?,
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // In WAL mode, NORMAL makes every commit durable against a crash of the
        // process (kill -9); only an operating-system crash can lose the last commits.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5))
        // 16 MiB of page cache per connection (the default is 2 MiB), so the indexes'
        // hot pages of a big database stay in memory.
        .pragma("cache_size", "-16384")
        // The text of deleted messages is overwritten, not left in free pages.
        .pragma("secure_delete", "ON");
        let main = options.get_filename().to_owned();
        // Before anything touches the files: a second server must not even migrate.
        let lock = if scratch.is_none() {
            if let Some(dir) = main.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(StorageError::File)?;
            }
            Some(DatabaseLock::acquire(&main, holder)?)
        } else {
            None
        };
        appender::prepare_journal(&main)?;
        let journal_file = appender::journal_path(&main).to_string_lossy().into_owned();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(move |connection, _| {
                let journal_file = journal_file.clone();
                Box::pin(async move {
                    sqlx::query("ATTACH DATABASE ? AS recent")
                        .bind(journal_file)
                        .execute(connection)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options.clone())
            .await?;
        migrations::migrator(migrations::SQLITE)
            .await?
            .run(&pool)
            .await?;
        let appender = Appender::start(&main)?;
        Ok(Self {
            pool,
            appender,
            _lock: lock,
            _scratch: scratch,
        })
    }
}

pub(crate) fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

pub(crate) fn from_i64(id: i64) -> Result<u64, StorageError> {
    u64::try_from(id).map_err(|_| StorageError::OutOfRange(format!("number {id}")))
}

/// A message version from a row of [`MESSAGE_COLUMNS`].
fn decode(row: &SqliteRow) -> Result<StoredMessage, StorageError> {
    let reactions: Option<String> = row.try_get("reactions")?;
    Ok(StoredMessage {
        room: row.try_get("room")?,
        id: from_i64(row.try_get("id")?)?,
        rev: from_i64(row.try_get("rev")?)?,
        author: row.try_get("author")?,
        owner: Owner(row.try_get("owner")?),
        text: row.try_get("text")?,
        ts: row.try_get("ts")?,
        client_id: row.try_get("client_id")?,
        edited_ts: row.try_get("edited_ts")?,
        edits: row.try_get("edits")?,
        deleted: row.try_get("deleted")?,
        reply_to: row
            .try_get::<Option<i64>, _>("reply_to")?
            .map(from_i64)
            .transpose()?,
        reactions: StoredReactions::parse(reactions.as_deref())?,
    })
}

/// Messages by id, each in its highest version seen.
#[derive(Default)]
struct Merged(BTreeMap<u64, StoredMessage>);

impl Merged {
    fn add(&mut self, message: StoredMessage) {
        match self.0.get(&message.id) {
            Some(known) if known.rev >= message.rev => {}
            _ => {
                self.0.insert(message.id, message);
            }
        }
    }
}

/// Runs `journal` then `messages` (each binding ?1 = room, ?2, ?3) in one read
/// transaction and merges the rows by id. That order never misses a row that moves in
/// between (see `appender.rs`); a message seen in both keeps its higher version.
async fn read_merged(
    tx: &mut Transaction<'_, Sqlite>,
    journal: &str,
    messages: &str,
    room: &str,
    a: i64,
    b: i64,
) -> Result<Merged, StorageError> {
    let mut merged = Merged::default();
    for query in [journal, messages] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(query))
            .bind(room)
            .bind(a)
            .bind(b)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            merged.add(decode(row)?);
        }
    }
    Ok(merged)
}

/// The latest versions of the messages named by (room, id).
async fn load_many(
    tx: &mut Transaction<'_, Sqlite>,
    keys: impl Iterator<Item = (&str, u64)>,
) -> Result<std::collections::HashMap<(String, u64), StoredMessage>, StorageError> {
    let keys: Vec<(&str, u64)> = keys.collect();
    let mut latest: std::collections::HashMap<(String, u64), StoredMessage> = Default::default();
    if keys.is_empty() {
        return Ok(latest);
    }
    let json = serde_json::to_string(&keys).unwrap_or_default();
    for table in ["recent.message_journal", "main.messages"] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM {table}
             WHERE (room, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
        )))
        .bind(&json)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let message = decode(row)?;
            let key = (message.room.clone(), message.id);
            match latest.get(&key) {
                Some(known) if known.rev >= message.rev => {}
                _ => {
                    latest.insert(key, message);
                }
            }
        }
    }
    Ok(latest)
}

fn journal_query(filter: &str) -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM recent.message_journal WHERE room = ?1 AND {filter}")
}

fn messages_query(filter_order_limit: &str) -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM main.messages WHERE room = ?1 AND {filter_order_limit}")
}

impl SqliteStorage {
    /// The wire form of `messages`, with reply previews of their originals as they are.
    async fn public(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        room: &str,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<Message>, StorageError> {
        let wanted: Vec<u64> = messages.iter().filter_map(|m| m.reply_to).collect();
        let mut originals = Merged::default();
        if !wanted.is_empty() {
            let ids = serde_json::to_string(&wanted).unwrap_or_default();
            for query in [
                format!(
                    "SELECT {MESSAGE_COLUMNS} FROM recent.message_journal
                     WHERE room = ?1 AND id IN (SELECT value FROM json_each(?2))"
                ),
                format!(
                    "SELECT {MESSAGE_COLUMNS} FROM main.messages
                     WHERE room = ?1 AND id IN (SELECT value FROM json_each(?2))"
                ),
            ] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(query))
                    .bind(room)
                    .bind(&ids)
                    .fetch_all(&mut **tx)
                    .await?;
                for row in &rows {
                    originals.add(decode(row)?);
                }
            }
        }
        Ok(messages
            .into_iter()
            .map(|message| {
                let mut public = message.public();
                public.reply_to = message
                    .reply_to
                    .and_then(|id| originals.0.get(&id))
                    .map(appender::preview);
                public
            })
            .collect())
    }

    /// Up to `limit` messages with ids above `after`, oldest first, and whether more exist.
    async fn after_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        room: &str,
        after: u64,
        limit: u32,
    ) -> Result<(Vec<StoredMessage>, bool), StorageError> {
        let merged = read_merged(
            tx,
            &journal_query("id > ?2 AND ?3 >= 0"),
            &messages_query("id > ?2 ORDER BY id LIMIT ?3"),
            room,
            to_i64(after),
            i64::from(limit) + 1,
        )
        .await?;
        let mut messages: Vec<StoredMessage> = merged.0.into_values().collect();
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        Ok((messages, more))
    }

    /// Up to `limit` messages with ids below `before` (the newest of them), oldest first,
    /// and whether older ones exist.
    async fn before_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<(Vec<StoredMessage>, bool), StorageError> {
        let merged = read_merged(
            tx,
            &journal_query("id < ?2 AND ?3 >= 0"),
            &messages_query("id < ?2 ORDER BY id DESC LIMIT ?3"),
            room,
            to_i64(before),
            i64::from(limit) + 1,
        )
        .await?;
        let mut messages: Vec<StoredMessage> = merged.0.into_values().collect();
        let more = messages.len() > limit as usize;
        let skip = messages.len().saturating_sub(limit as usize);
        messages.drain(..skip);
        Ok((messages, more))
    }

    /// Messages whose latest version is numbered above `seq` (and, with `up_to`, whose id
    /// is at most that), by `rev`; at most `limit` and whether more exist.
    async fn changed_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        room: &str,
        seq: u64,
        up_to: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<StoredMessage>, bool), StorageError> {
        // A message with rev above `seq` either was posted after it (id > seq: the primary
        // key finds it) or changed after it (rev != id: the partial index finds it). Each
        // `messages` query reads one page; what it left out lies beyond its last row, so
        // the merged result is exact up to the lowest such bound, and cut there.
        let up_to = to_i64(up_to.unwrap_or(u64::MAX >> 1));
        let page = i64::from(limit) + 1;
        let mut merged = Merged::default();
        let journal = sqlx::query(sqlx::AssertSqlSafe(journal_query("rev > ?2 AND id <= ?3")))
            .bind(room)
            .bind(to_i64(seq))
            .bind(up_to)
            .fetch_all(&mut **tx)
            .await?;
        for row in &journal {
            merged.add(decode(row)?);
        }
        let mut exact_to = u64::MAX;
        for (query, by) in [
            (
                messages_query("rev != id AND rev > ?2 AND id <= ?3 ORDER BY rev LIMIT ?4"),
                "rev",
            ),
            (
                messages_query("id > ?2 AND id <= ?3 ORDER BY id LIMIT ?4"),
                "id",
            ),
        ] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(query))
                .bind(room)
                .bind(to_i64(seq))
                .bind(up_to)
                .bind(page)
                .fetch_all(&mut **tx)
                .await?;
            if rows.len() as i64 == page {
                let last: i64 = rows.last().map_or(Ok(0), |row| row.try_get(by))?;
                exact_to = exact_to.min(from_i64(last)?);
            }
            for row in &rows {
                merged.add(decode(row)?);
            }
        }
        let mut messages: Vec<StoredMessage> =
            merged.0.into_values().filter(|m| m.rev > seq).collect();
        messages.sort_by_key(|m| m.rev);
        let before = messages.len();
        messages.retain(|m| m.rev <= exact_to);
        let more = messages.len() > limit as usize || messages.len() < before;
        messages.truncate(limit as usize);
        Ok((messages, more))
    }

    async fn newest_in(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        room: &str,
    ) -> Result<StoredRoom, StorageError> {
        let (newest, _) = self.before_in(tx, room, u64::MAX >> 1, 1).await?;
        Ok(StoredRoom {
            name: room.to_owned(),
            last_id: newest.first().map_or(0, |m| m.id),
            last_ts: newest.first().map(|m| m.ts),
        })
    }
}

impl Storage for SqliteStorage {
    fn append(&self, changes: Vec<Change>) -> StorageFuture<'_, Vec<Applied>> {
        Box::pin(self.appender.append(changes))
    }

    fn catch_up<'a>(
        &'a self,
        room: &'a str,
        since: u64,
        limit: ReadLimit,
    ) -> StorageFuture<'a, CatchUp> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let (history, mut truncated) = self.after_in(&mut tx, room, since, limit.limit).await?;
            let (updates, mut too_many) = self
                .changed_in(&mut tx, room, since, Some(since), limit.limit)
                .await?;
            let mut history = self.public(&mut tx, room, history).await?;
            let mut updates = self.public(&mut tx, room, updates).await?;
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
            let mut tx = self.pool.begin().await?;
            let (messages, more) = self.before_in(&mut tx, room, before, limit.limit).await?;
            let mut messages = self.public(&mut tx, room, messages).await?;
            tx.commit().await?;
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
            let mut tx = self.pool.begin().await?;
            let (older, more) = self.before_in(&mut tx, room, id, older_wanted).await?;
            let newer_wanted = limit.limit.saturating_sub(older.len() as u32).max(1);
            let (newer, newer_more) = self
                .after_in(&mut tx, room, id.saturating_sub(1), newer_wanted)
                .await?;
            let mut older = self.public(&mut tx, room, older).await?;
            let mut newer = self.public(&mut tx, room, newer).await?;
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
            let mut tx = self.pool.begin().await?;
            let (changed, _) = self.changed_in(&mut tx, room, seq, None, limit).await?;
            let changed = self.public(&mut tx, room, changed).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    fn last_seq<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut last = 0;
            for query in [
                "SELECT MAX(rev) FROM recent.message_journal WHERE room = ?1",
                "SELECT MAX(last_seq) FROM main.rooms WHERE name = ?1",
                "SELECT MAX(rev) FROM main.messages WHERE room = ?1",
            ] {
                let found: Option<i64> = sqlx::query_scalar(query)
                    .bind(room)
                    .fetch_one(&mut *tx)
                    .await?;
                last = last.max(found.map(from_i64).transpose()?.unwrap_or(0));
            }
            tx.commit().await?;
            Ok(last)
        })
    }

    fn rooms<'a>(
        &'a self,
        cursor: Option<&'a RoomCursor>,
        limit: u32,
    ) -> StorageFuture<'a, Vec<StoredRoom>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            // Journal first (see read_merged). A room's newest journal message is newer
            // than anything of it in `rooms`, so it replaces that.
            // With one MAX(), SQLite takes `ts` from the row holding the maximum.
            let journal = sqlx::query(
                "SELECT room, MAX(id) AS last_id, ts AS last_ts FROM recent.message_journal
                 GROUP BY room",
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut newest: BTreeMap<String, (u64, i64)> = BTreeMap::new();
            for row in &journal {
                newest.insert(
                    row.try_get("room")?,
                    (from_i64(row.try_get("last_id")?)?, row.try_get("last_ts")?),
                );
            }
            // Rooms in the journal may sit anywhere in `rooms`: read enough past the page
            // that the page is right after they move up.
            let wanted = i64::from(limit) + newest.len() as i64;
            let (ts, name) =
                cursor.map_or((i64::MAX, String::new()), |c| (c.last_ts, c.name.clone()));
            let stored = sqlx::query(
                "SELECT name, last_id, last_ts FROM main.rooms
                 WHERE last_ts < ?1 OR (last_ts = ?1 AND name < ?2) OR ?3
                 ORDER BY last_ts DESC, name DESC LIMIT ?4",
            )
            .bind(ts)
            .bind(&name)
            .bind(cursor.is_none())
            .bind(wanted)
            .fetch_all(&mut *tx)
            .await?;
            let mut rooms: BTreeMap<String, (u64, i64)> = BTreeMap::new();
            for row in &stored {
                let last_ts: Option<i64> = row.try_get("last_ts")?;
                rooms.insert(
                    row.try_get("name")?,
                    (from_i64(row.try_get("last_id")?)?, last_ts.unwrap_or(0)),
                );
            }
            for (room, (id, ts)) in newest {
                if !rooms.contains_key(&room) {
                    // Its journal rows may be changes to old messages: compare with what
                    // `rooms` holds of it.
                    let known =
                        sqlx::query("SELECT last_id, last_ts FROM main.rooms WHERE name = ?1")
                            .bind(&room)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if let Some(row) = known {
                        let last_ts: Option<i64> = row.try_get("last_ts")?;
                        rooms.insert(
                            room.clone(),
                            (from_i64(row.try_get("last_id")?)?, last_ts.unwrap_or(0)),
                        );
                    }
                }
                let entry = rooms.entry(room).or_insert((0, 0));
                if id > entry.0 {
                    *entry = (id, ts);
                }
            }
            tx.commit().await?;
            let mut rooms: Vec<StoredRoom> = rooms
                .into_iter()
                .filter(|(room, (_, last_ts))| {
                    cursor.is_none_or(|c| (*last_ts, room.as_str()) < (c.last_ts, c.name.as_str()))
                })
                .map(|(name, (last_id, last_ts))| StoredRoom {
                    name,
                    last_id,
                    last_ts: Some(last_ts),
                })
                .collect();
            rooms.sort_by(|a, b| (b.last_ts, &b.name).cmp(&(a.last_ts, &a.name)));
            rooms.truncate(limit as usize);
            Ok(rooms)
        })
    }

    fn room_exists<'a>(&'a self, room: &'a str) -> StorageFuture<'a, bool> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut found = false;
            for query in [
                "SELECT EXISTS (SELECT 1 FROM recent.message_journal WHERE room = ?1)",
                "SELECT EXISTS (SELECT 1 FROM main.rooms WHERE name = ?1)",
            ] {
                let exists: bool = sqlx::query_scalar(query)
                    .bind(room)
                    .fetch_one(&mut *tx)
                    .await?;
                found |= exists;
            }
            tx.commit().await?;
            Ok(found)
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
            let mut tx = self.pool.begin().await?;
            let newest = self.newest_in(&mut tx, room).await?;
            let (unread, _) = self.after_in(&mut tx, room, read, cap).await?;
            tx.commit().await?;
            let unread: Vec<&StoredMessage> = unread.iter().filter(|m| !m.deleted).collect();
            let mentions = mention_key.map_or(0, |key| {
                unread
                    .iter()
                    .filter(|m| app::mentions::keys(&m.text).iter().any(|k| k == key))
                    .count()
            });
            Ok((newest, unread.len() as u32, mentions as u32))
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
            let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
            if words.is_empty() {
                // Nothing to look for (PROTOCOL.md's queries always have a word).
                return Ok(Found {
                    messages: Vec::new(),
                    next: None,
                });
            }
            // The index finds words of three characters or more by their trigrams
            // (search_terms.rs); shorter ones are checked on the candidates. A query of
            // only short words has no terms: then every message is a candidate, newest
            // first, and SEARCH_EXAMINED bounds each page's work as it does below. Such a
            // query must also hold each run of three characters of the whole query,
            // spaces included, as a phrase search (PostgreSQL's backend matches alike).
            let mut phrase: Vec<String> = Vec::new();
            if words.iter().all(|w| w.chars().count() < 3) {
                let chars: Vec<char> = query.to_lowercase().chars().collect();
                for window in chars.windows(3) {
                    let trigram: String = window.iter().collect();
                    if !phrase.contains(&trigram) {
                        phrase.push(trigram);
                    }
                }
                if phrase.is_empty() {
                    return Ok(Found {
                        messages: Vec::new(),
                        next: None,
                    });
                }
            }
            let mut terms: Vec<String> = Vec::new();
            for word in &words {
                for term in search_terms::query_terms(word) {
                    if !terms.contains(&term) {
                        terms.push(term);
                    }
                }
            }
            let expression = (!terms.is_empty()).then(|| terms.join(" AND "));
            let before = match cursor {
                Some(cursor) => cursor
                    .parse::<i64>()
                    .map_err(|_| StorageError::OutOfRange(format!("search cursor {cursor:?}")))?,
                None => i64::MAX,
            };
            // The index only says that a row holds every trigram (and edited or deleted
            // text may still be indexed until its journal rows move): candidates are
            // checked against their latest version, a batch at a time, newest first,
            // until the page is full, the index has no more, or SEARCH_EXAMINED rows
            // were looked at (then `next` says where to go on).
            let mut tx = self.pool.begin().await?;
            let mut found = Vec::new();
            let mut bytes = 0;
            let mut examined = 0;
            let mut cursor = before;
            let mut next = None;
            'batches: loop {
                let hits = match &expression {
                    Some(expression) => sqlx::query(
                        "SELECT f.rowid AS rowid, s.room AS room, s.id AS id
                         FROM main.messages_fts f JOIN main.search_rows s ON s.row = f.rowid
                         WHERE messages_fts MATCH ?1 AND f.rowid < ?2
                           AND (?3 IS NULL OR s.room = ?3)
                         ORDER BY f.rowid DESC LIMIT ?4",
                    )
                    .bind(expression),
                    None => sqlx::query(
                        "SELECT s.row AS rowid, s.room AS room, s.id AS id
                         FROM main.search_rows s
                         WHERE ?1 IS NULL AND s.row < ?2 AND (?3 IS NULL OR s.room = ?3)
                         ORDER BY s.row DESC LIMIT ?4",
                    )
                    .bind(None::<&str>),
                }
                .bind(cursor)
                .bind(room)
                .bind(SEARCH_BATCH)
                .fetch_all(&mut *tx)
                .await?;
                let mut keys = Vec::with_capacity(hits.len());
                for hit in &hits {
                    let row: i64 = hit.try_get("rowid")?;
                    let room: String = hit.try_get("room")?;
                    keys.push((row, room, from_i64(hit.try_get("id")?)?));
                }
                let latest = load_many(
                    &mut tx,
                    keys.iter().map(|(_, room, id)| (room.as_str(), *id)),
                )
                .await?;
                for (row, room, id) in &keys {
                    if found.len() == limit as usize || examined == SEARCH_EXAMINED {
                        // Rows from this one on are still to be looked at.
                        next = Some((row + 1).to_string());
                        break 'batches;
                    }
                    let matches = latest.get(&(room.clone(), *id)).filter(|message| {
                        let text = message.text.to_lowercase();
                        !message.deleted
                            && words.iter().all(|w| text.contains(w.as_str()))
                            && phrase.iter().all(|t| text.contains(t.as_str()))
                    });
                    if let Some(message) = matches {
                        let public = self.public(&mut tx, room, vec![message.clone()]).await?;
                        let size: usize = public.iter().map(super::json_size).sum();
                        if !found.is_empty() && bytes + size > max_bytes {
                            next = Some((row + 1).to_string());
                            break 'batches;
                        }
                        bytes += size;
                        found.extend(public);
                    }
                    examined += 1;
                    cursor = *row;
                }
                if keys.len() < SEARCH_BATCH as usize {
                    break;
                }
            }
            tx.commit().await?;
            Ok(Found {
                messages: found,
                next,
            })
        })
    }

    fn load_names(&self, since_ms: i64) -> StorageFuture<'_, Vec<NameRecord>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT key, name, owner, last_seen FROM names WHERE last_seen >= ?1")
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

    fn save_names(&self, names: Vec<NameRecord>) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for name in &names {
                sqlx::query(
                    "INSERT INTO names (key, name, owner, last_seen) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET
                         name = excluded.name, owner = excluded.owner,
                         last_seen = MAX(last_seen, excluded.last_seen)
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
    //! What only SQLite has: the journal, its moves, crash leftovers, upgrades from the
    //! first schema. What every backend promises is `tests/storage.rs`.

    use super::*;
    use crate::storage::ChangeKind;

    fn post(room: &str, owner: &str, client_id: &str) -> Change {
        Change {
            room: room.into(),
            owner: Owner(owner.into()),
            author: owner.into(),
            client_id: client_id.into(),
            ts: 1_700_000_000_000,
            kind: ChangeKind::Post {
                text: format!("text of {client_id}"),
                reply_to: None,
            },
        }
    }

    fn all() -> ReadLimit {
        ReadLimit {
            limit: 100_000,
            max_bytes: usize::MAX,
        }
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("banter-storage-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("test.db").display())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn journal_rows(storage: &SqliteStorage) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM recent.message_journal")
            .fetch_one(&storage.pool)
            .await
            .unwrap()
    }

    async fn wait_for_move(storage: &SqliteStorage) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while journal_rows(storage).await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the journal was never moved"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn journal_matches_the_messages_table() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        let columns = |table: &'static str| {
            let pool = storage.pool.clone();
            async move {
                let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}')"
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                names
            }
        };
        let listed: Vec<String> = MESSAGE_COLUMNS
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect();
        let mut messages = columns("messages").await;
        messages.retain(|c| c != "fts");
        assert_eq!(
            messages.iter().collect::<std::collections::BTreeSet<_>>(),
            listed.iter().collect::<std::collections::BTreeSet<_>>(),
            "MESSAGE_COLUMNS and migrations/ define the same message columns"
        );
        let journal = sqlx::query_scalar::<_, String>(
            "SELECT name FROM pragma_table_info('message_journal', 'recent')",
        )
        .fetch_all(&storage.pool)
        .await
        .unwrap();
        for column in &listed {
            assert!(journal.contains(column), "the journal lacks {column}");
        }
    }

    #[tokio::test]
    async fn reads_and_resends_see_both_the_journal_and_moved_rows() {
        let dir = TempDir::new("both");
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        let older: Vec<Change> = (1..=5)
            .map(|n| post("r", "ann", &format!("c{n}")))
            .collect();
        storage.append(older).await.unwrap();
        wait_for_move(&storage).await;
        let newer: Vec<Change> = (6..=8)
            .map(|n| post("r", "ann", &format!("c{n}")))
            .collect();
        storage.append(newer).await.unwrap();
        // An edit of a moved message waits in the journal as a new version.
        let edit = Change {
            kind: ChangeKind::Edit {
                id: 2,
                text: "edited".into(),
            },
            ..post("r", "ann", "e2")
        };
        storage.append(vec![edit]).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 4);

        let all_now = storage.before("r", u64::MAX, all()).await.unwrap().messages;
        assert_eq!(
            all_now.iter().map(|m| m.id).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(all_now[1].text, "edited");
        assert_eq!(all_now[1].rev, 9);
        assert_eq!(storage.last_seq("r").await.unwrap(), 9);
        let rooms = storage.rooms(None, 10).await.unwrap();
        assert_eq!((rooms[0].name.as_str(), rooms[0].last_id), ("r", 8));

        // Resends of a moved change and of a journal one get the messages as they are.
        let results = storage
            .append(vec![post("r", "ann", "c2"), post("r", "ann", "c7")])
            .await
            .unwrap();
        assert_eq!(results[0], Applied::Duplicate(all_now[1].clone()));
        assert_eq!(results[1], Applied::Duplicate(all_now[6].clone()));
        wait_for_move(&storage).await;
        assert_eq!(
            storage.before("r", u64::MAX, all()).await.unwrap().messages,
            all_now
        );
        assert_eq!(storage.last_seq("r").await.unwrap(), 9);
    }

    #[tokio::test]
    async fn a_failed_batch_leaves_no_trace_in_the_journal_or_the_appender() {
        let dir = TempDir::new("failed");
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        storage.append(vec![post("r", "ann", "c1")]).await.unwrap();
        // A batch that fails at its last change: the edit and post before it must go with it.
        sqlx::query(
            "CREATE TRIGGER recent.refuse BEFORE INSERT ON message_journal
             WHEN NEW.client_id = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&storage.pool)
        .await
        .unwrap();
        let edit = |client_id: &str, text: &str| Change {
            kind: ChangeKind::Edit {
                id: 1,
                text: text.into(),
            },
            ..post("r", "ann", client_id)
        };
        let failed = storage
            .append(vec![
                edit("e1", "lost"),
                post("r", "ann", "c2"),
                post("r", "ann", "boom"),
            ])
            .await;
        assert!(failed.is_err(), "{failed:?}");
        sqlx::query("DROP TRIGGER recent.refuse")
            .execute(&storage.pool)
            .await
            .unwrap();

        // The same changes again are new: stored, numbered from where the room was.
        let results = storage
            .append(vec![
                post("r", "ann", "c1"),
                edit("e1", "kept"),
                post("r", "ann", "c2"),
            ])
            .await
            .unwrap();
        let stored: Vec<(u64, u64, &str)> = results
            .iter()
            .skip(1)
            .map(|result| match result {
                Applied::Stored(m) => (m.id, m.rev, m.text.as_str()),
                other => panic!("expected a stored change, got {other:?}"),
            })
            .collect();
        assert!(
            matches!(results[0], Applied::Duplicate(_)),
            "c1 was stored before the failed batch: {:?}",
            results[0]
        );
        assert_eq!(stored, [(1, 2, "kept"), (3, 3, "text of c2")]);
        assert_eq!(storage.last_seq("r").await.unwrap(), 3);
        wait_for_move(&storage).await;
        let messages = storage.before("r", u64::MAX, all()).await.unwrap().messages;
        let texts: Vec<(u64, &str)> = messages.iter().map(|m| (m.id, m.text.as_str())).collect();
        assert_eq!(texts, [(1, "kept"), (3, "text of c2")]);
        let found = storage
            .search("text of c2", None, all(), None)
            .await
            .unwrap();
        assert_eq!(found.messages.iter().map(|m| m.id).collect::<Vec<_>>(), [3]);
    }

    /// Checks the search index's invariant (appender.rs, `unindex_changed`): it holds the
    /// terms of the text of every message in `search_rows`, under its row, and nothing
    /// else (fts5vocab counts the (term, row) pairs the index has, deletions applied).
    async fn assert_index_is_exact(storage: &SqliteStorage) {
        let mut connection = storage.pool.acquire().await.unwrap();
        let searchable: Vec<(i64, String)> = sqlx::query_as(
            "SELECT s.row, m.text FROM main.search_rows s
             JOIN main.messages m ON m.room = s.room AND m.id = s.id",
        )
        .fetch_all(&mut *connection)
        .await
        .unwrap();
        let mut pairs = 0;
        for (row, text) in &searchable {
            let terms = search_terms::index_terms(text);
            pairs += terms.split(' ').filter(|t| !t.is_empty()).count() as i64;
            if terms.is_empty() {
                continue;
            }
            let expression = terms.split(' ').collect::<Vec<_>>().join(" AND ");
            let rows: Vec<i64> = sqlx::query_scalar(
                "SELECT rowid FROM main.messages_fts WHERE messages_fts MATCH ?1",
            )
            .bind(&expression)
            .fetch_all(&mut *connection)
            .await
            .unwrap();
            assert!(rows.contains(row), "{text:?} is indexed under row {row}");
        }
        sqlx::query(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_vocab
             USING fts5vocab(main, messages_fts, 'row')",
        )
        .execute(&mut *connection)
        .await
        .unwrap();
        let indexed: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(doc), 0) FROM temp.search_vocab")
                .fetch_one(&mut *connection)
                .await
                .unwrap();
        assert_eq!(
            indexed, pairs,
            "the index holds the terms of searchable text only"
        );
    }

    fn change_of(client_id: &str, kind: ChangeKind) -> Change {
        Change {
            kind,
            ..post("r", "ann", client_id)
        }
    }

    #[tokio::test]
    async fn the_search_index_follows_edits_and_deletes_even_when_a_move_is_done_twice() {
        let dir = TempDir::new("index");
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        let text = |id: u64, text: &str| ChangeKind::Edit {
            id,
            text: text.into(),
        };
        // Moved first: three messages, then changed in the journal.
        storage
            .append(vec![
                change_of(
                    "a",
                    ChangeKind::Post {
                        text: "alpha quartz".into(),
                        reply_to: None,
                    },
                ),
                change_of(
                    "b",
                    ChangeKind::Post {
                        text: "bravo quartz".into(),
                        reply_to: None,
                    },
                ),
                change_of(
                    "c",
                    ChangeKind::Post {
                        text: "charlie quartz".into(),
                        reply_to: None,
                    },
                ),
            ])
            .await
            .unwrap();
        wait_for_move(&storage).await;
        assert_index_is_exact(&storage).await;
        // Kept aside as they leave the journal, to be put back as a crash would leave them.
        let columns = format!("seq, {MESSAGE_COLUMNS}, fts, change_owner, change_client_id");
        let old: Vec<String> = columns.split(", ").map(|c| format!("OLD.{c}")).collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE recent.kept AS SELECT * FROM recent.message_journal WHERE 0;
             CREATE TRIGGER recent.keep BEFORE DELETE ON message_journal
             BEGIN INSERT INTO kept ({columns}) VALUES ({}); END",
            old.join(", ")
        )))
        .execute(&storage.pool)
        .await
        .unwrap();
        let applied = storage
            .append(vec![
                change_of("a2", text(1, "alpha edited twice")),
                change_of("a3", text(1, "alpha edited thrice")),
                change_of("b2", ChangeKind::Delete { id: 2 }),
                change_of(
                    "c2",
                    ChangeKind::React {
                        id: 3,
                        emoji: "👍".into(),
                        add: true,
                    },
                ),
                // New and changed within one move, and new and deleted within one move.
                change_of(
                    "d",
                    ChangeKind::Post {
                        text: "delta first".into(),
                        reply_to: None,
                    },
                ),
                change_of("d2", text(8, "delta second")),
                change_of(
                    "e",
                    ChangeKind::Post {
                        text: "echo gone".into(),
                        reply_to: None,
                    },
                ),
                change_of("e2", ChangeKind::Delete { id: 10 }),
                change_of(
                    "f",
                    ChangeKind::Post {
                        text: "foxtrot".into(),
                        reply_to: None,
                    },
                ),
            ])
            .await
            .unwrap();
        assert!(
            applied.iter().all(|a| matches!(a, Applied::Stored(_))),
            "every change applies: {applied:?}"
        );
        wait_for_move(&storage).await;
        assert_index_is_exact(&storage).await;
        let limit = all();
        let found = |query: &'static str| {
            let storage = &storage;
            async move {
                storage
                    .search(query, None, limit, None)
                    .await
                    .unwrap()
                    .messages
                    .iter()
                    .map(|m| m.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            found("quartz").await,
            [3],
            "edited away from 1, kept through a reaction on 3"
        );
        assert_eq!(found("thrice").await, [1]);
        assert!(found("twice").await.is_empty());
        assert!(found("bravo").await.is_empty());
        assert!(found("first").await.is_empty());
        assert_eq!(found("second").await, [8]);
        assert!(found("echo").await.is_empty());
        assert_eq!(found("foxtrot").await, [12]);

        // The same rows moved again, as after a crash between the move and the delete.
        drop(storage);
        on_the_journal(
            &dir,
            "DROP TRIGGER keep;
             INSERT INTO message_journal SELECT * FROM kept;
             DROP TABLE kept;",
        )
        .await;
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 0);
        assert_index_is_exact(&storage).await;
        assert_eq!(found_in(&storage, "quartz").await, [3]);
        assert_eq!(found_in(&storage, "second").await, [8]);
        assert!(found_in(&storage, "twice").await.is_empty());
    }

    /// Runs `sql` on the journal database of a storage that is closed, as a crash or an
    /// earlier build would have left it.
    async fn on_the_journal(dir: &TempDir, sql: &'static str) {
        let journal = SqlitePool::connect(&format!("{}.recent", dir.url()))
            .await
            .unwrap();
        sqlx::query(sql).execute(&journal).await.unwrap();
        journal.close().await;
    }

    async fn found_in(storage: &SqliteStorage, query: &str) -> Vec<u64> {
        storage
            .search(query, None, all(), None)
            .await
            .unwrap()
            .messages
            .iter()
            .map(|m| m.id)
            .collect()
    }

    #[tokio::test]
    async fn a_query_of_short_words_finds_them_as_a_phrase_without_the_index() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        storage
            .append(vec![
                change_of(
                    "a",
                    ChangeKind::Post {
                        text: "to be or not to be".into(),
                        reply_to: None,
                    },
                ),
                change_of(
                    "b",
                    ChangeKind::Post {
                        text: "be it as it may, to me".into(),
                        reply_to: None,
                    },
                ),
                change_of(
                    "c",
                    ChangeKind::Post {
                        text: "我们 去 吧".into(),
                        reply_to: None,
                    },
                ),
            ])
            .await
            .unwrap();
        wait_for_move(&storage).await;
        assert_eq!(found_in(&storage, "to be").await, [1]);
        assert_eq!(found_in(&storage, "TO BE").await, [1]);
        assert_eq!(found_in(&storage, "去 吧").await, [3]);
        assert!(found_in(&storage, "be to").await.is_empty());
    }

    #[tokio::test]
    async fn rows_left_in_the_journal_by_a_crash_are_moved_at_start() {
        let dir = TempDir::new("crash");
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        drop(storage);
        // What a killed process leaves: journal rows, committed, never moved, and rows
        // whose move committed but whose delete from the journal never happened.
        let journal = SqlitePool::connect(&format!("{}.recent", dir.url()))
            .await
            .unwrap();
        let main = SqlitePool::connect(&dir.url()).await.unwrap();
        let row = "(room, id, rev, author, owner, text, ts, client_id, edits, deleted)
                   VALUES ('r', ?1, ?1, 'ann', 'o', 'left behind', ?1, 'c' || ?1, 0, 0)";
        for id in 1..=3i64 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO message_journal ({MESSAGE_COLUMNS_NO_REACTIONS}, change_owner, change_client_id)
                 SELECT room, id, rev, author, owner, text, ts, client_id, NULL, edits, deleted, NULL, 'o', client_id
                 FROM (SELECT 'r' AS room, ?1 AS id, ?1 AS rev, 'ann' AS author, 'o' AS owner,
                       'left behind' AS text, ?1 AS ts, 'c' || ?1 AS client_id, 0 AS edits, 0 AS deleted)"
            )))
            .bind(id)
            .execute(&journal)
            .await
            .unwrap();
        }
        for id in 1..=2i64 {
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO messages {row}")))
                .bind(id)
                .execute(&main)
                .await
                .unwrap();
        }
        journal.close().await;
        main.close().await;

        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 0);
        let stored = storage.before("r", u64::MAX, all()).await.unwrap().messages;
        assert_eq!(
            stored.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Still known as sent: a resend is not stored again; numbering goes on after 3.
        let again = storage
            .append(vec![post("r", "o", "c2"), post("r", "o", "new")])
            .await
            .unwrap();
        assert_eq!(again[0], Applied::Duplicate(stored[1].clone()));
        assert!(matches!(&again[1], Applied::Stored(m) if m.id == 4));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_threads_yield_to_the_appender() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        // /proc/self/task/<tid>/stat: the name in parentheses, then the fields from the
        // third on; nice is the 19th.
        let nice_of = |name: &str| -> Option<i64> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .find_map(|task| {
                    let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
                    let close = stat.rfind(')')?;
                    if &stat[stat.find('(')? + 1..close] != name {
                        return None;
                    }
                    stat[close + 2..].split(' ').nth(16)?.parse().ok()
                })
        };
        // Each thread lowers its own priority as it starts, and takes its name as it
        // starts too: until then it has its parent's, so wait for all three.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let niced = || [nice_of("sqlite-mover"), nice_of("sqlite-checkpoi")];
        while (niced() != [Some(10), Some(10)] || nice_of("sqlite-appender").is_none())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // Thread names are cut to 15 bytes.
        assert_eq!(
            niced(),
            [Some(10), Some(10)],
            "the mover and the checkpointer"
        );
        assert_eq!(nice_of("sqlite-appender"), Some(0));
        drop(storage);
    }

    #[tokio::test]
    async fn a_journal_of_the_earlier_form_is_moved_then_made_again() {
        let dir = TempDir::new("journal-form");
        drop(SqliteStorage::open(&dir.url()).await.unwrap());
        // The journal as builds before 2026-12-05 made it (AUTOINCREMENT, change columns
        // NOT NULL), holding two messages a crash left unmoved.
        on_the_journal(
            &dir,
            "DROP TABLE message_journal;
             CREATE TABLE message_journal (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL,
                 id INTEGER NOT NULL, rev INTEGER NOT NULL, author TEXT NOT NULL,
                 owner TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,
                 client_id TEXT NOT NULL, edited_ts INTEGER, edits INTEGER NOT NULL,
                 deleted INTEGER NOT NULL, reply_to INTEGER, reactions TEXT, fts INTEGER,
                 change_owner TEXT NOT NULL, change_client_id TEXT NOT NULL);
             INSERT INTO message_journal (room, id, rev, author, owner, text, ts, client_id,
                     edits, deleted, fts, change_owner, change_client_id)
                 VALUES ('r', 1, 1, 'ann', 'o', 'one', 1, 'c1', 0, 0, 1, 'o', 'c1'),
                        ('r', 2, 2, 'ann', 'o', 'two', 2, 'c2', 0, 0, 2, 'o', 'c2');",
        )
        .await;

        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 0);
        let form: String = sqlx::query_scalar(
            "SELECT sql FROM recent.sqlite_master WHERE name = 'message_journal'",
        )
        .fetch_one(&storage.pool)
        .await
        .unwrap();
        assert!(!form.contains("AUTOINCREMENT"), "{form}");
        let stored = storage.before("r", u64::MAX, all()).await.unwrap().messages;
        assert_eq!(
            stored.iter().map(|m| &m.text).collect::<Vec<_>>(),
            ["one", "two"]
        );
        // Resends are recognised, before and after the new rows move; numbering goes on.
        let again = storage
            .append(vec![post("r", "o", "c2"), post("r", "o", "c3")])
            .await
            .unwrap();
        assert_eq!(again[0], Applied::Duplicate(stored[1].clone()));
        assert!(matches!(&again[1], Applied::Stored(m) if m.id == 3));
        wait_for_move(&storage).await;
        let moved = storage
            .append(vec![post("r", "o", "c3"), post("r", "o", "c4")])
            .await
            .unwrap();
        assert!(matches!(&moved[0], Applied::Duplicate(m) if m.id == 3));
        assert!(matches!(&moved[1], Applied::Stored(m) if m.id == 4));
        assert_eq!(found_in(&storage, "one").await, [1]);
    }

    /// The columns of a journal row up to `reply_to`, for the crash test's hand-made rows.
    const MESSAGE_COLUMNS_NO_REACTIONS: &str =
        "room, id, rev, author, owner, text, ts, client_id, \
         edited_ts, edits, deleted, reply_to";

    #[tokio::test]
    async fn a_first_schema_database_and_its_crashed_journal_are_upgraded() {
        let dir = TempDir::new("upgrade");
        let path = dir.0.join("test.db");
        // The first schema, as migrations/0001 made it, with two stored messages, and a
        // journal in the first journal schema holding one more (a crash before its move).
        {
            let main = rusqlite::Connection::open(&path).unwrap();
            main.execute_batch(include_str!("../../../migrations/0001_messages.sql"))
                .unwrap();
            main.execute_batch(
                "INSERT INTO rooms VALUES ('old', 1);
                 INSERT INTO messages VALUES ('old', 1, 'Ann', 'ann', 'first', 10, 'a1');
                 INSERT INTO messages VALUES ('old', 2, 'Bob', 'bob', 'second', 20, 'b1');",
            )
            .unwrap();
            // sqlx records applied migrations; this is what it wrote for 0001.
            let migrator = super::migrations::migrator(super::migrations::SQLITE)
                .await
                .unwrap();
            let first = migrator.iter().next().unwrap();
            main.execute_batch(
                "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);",
            )
            .unwrap();
            main.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (?1, ?2, 1, ?3, 0)",
                rusqlite::params![first.version, first.description.as_ref(), first.checksum.as_ref()],
            )
            .unwrap();
            let journal = rusqlite::Connection::open(appender::journal_path(&path)).unwrap();
            journal
                .execute_batch(
                    "CREATE TABLE message_journal (seq INTEGER PRIMARY KEY, room TEXT NOT NULL,
                     id INTEGER NOT NULL, author TEXT NOT NULL, author_key TEXT NOT NULL,
                     text TEXT NOT NULL, ts INTEGER NOT NULL, client_id TEXT NOT NULL);
                     INSERT INTO message_journal VALUES (1, 'old', 3, 'Ann', 'ann', 'third', 30, 'a2');",
                )
                .unwrap();
        }
        let storage = SqliteStorage::open(&dir.url()).await.unwrap();
        let stored = storage
            .before("old", u64::MAX, all())
            .await
            .unwrap()
            .messages;
        assert_eq!(
            stored
                .iter()
                .map(|m| (m.id, m.rev, m.text.as_str()))
                .collect::<Vec<_>>(),
            [(1, 1, "first"), (2, 2, "second"), (3, 3, "third")]
        );
        assert_eq!(storage.last_seq("old").await.unwrap(), 3);
        let rooms = storage.rooms(None, 10).await.unwrap();
        assert_eq!((rooms[0].last_id, rooms[0].last_ts), (3, Some(30)));
        // Older messages are searchable and belong to nobody's session: nobody edits them.
        let found = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let found = storage.search("second", None, all(), None).await.unwrap();
                if !found.messages.is_empty() {
                    return found;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(found.messages[0].id, 2);
        let edit = Change {
            kind: ChangeKind::Edit {
                id: 1,
                text: "hijack".into(),
            },
            ..post("old", "someone", "x")
        };
        assert_eq!(
            storage.append(vec![edit]).await.unwrap(),
            vec![Applied::Refused(crate::storage::ChangeRefusal::NotYours)]
        );
        // Numbering goes on.
        let next = storage.append(vec![post("old", "ann", "n")]).await.unwrap();
        assert!(matches!(&next[0], Applied::Stored(m) if m.id == 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_never_miss_a_row_while_the_journal_moves() {
        let dir = TempDir::new("race");
        let storage = std::sync::Arc::new(SqliteStorage::open(&dir.url()).await.unwrap());
        // Enough rows for several moves (one per 4,096), appended while reads run.
        const ROWS: u64 = 12_000;
        let writer = tokio::spawn({
            let storage = storage.clone();
            async move {
                for first in (1..=ROWS).step_by(40) {
                    let batch: Vec<Change> = (first..first + 40)
                        .map(|n| post("r", "ann", &format!("c{n}")))
                        .collect();
                    storage.append(batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut last_seen = 0;
        let limit = ReadLimit {
            limit: 5_000,
            max_bytes: usize::MAX,
        };
        while !writer.is_finished() || last_seen < ROWS {
            let last = storage.last_seq("r").await.unwrap();
            assert!(
                last >= last_seen,
                "last_seq went back from {last_seen} to {last}"
            );
            last_seen = last;
            // Every read is a gapless run of ids: nothing caught mid-move is missed.
            let since = last.saturating_sub(200);
            let page = storage.catch_up("r", since, limit).await.unwrap();
            let ids: Vec<u64> = page.history.iter().map(|m| m.id).collect();
            assert!(
                ids.len() as u64 >= last - since,
                "missing rows up to {last}"
            );
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "a gap after {since}"
            );
            assert!(
                ids.first().is_none_or(|&id| id == since + 1),
                "rows after {since} start late"
            );
            let older = storage
                .before(
                    "r",
                    last + 1,
                    ReadLimit {
                        limit: 100,
                        max_bytes: usize::MAX,
                    },
                )
                .await
                .unwrap();
            assert_eq!(
                older.messages.last().map(|m| m.id),
                (last > 0).then_some(last)
            );
            assert_eq!(older.messages.len() as u64, last.min(100));
        }
        writer.await.unwrap();
        assert_eq!(
            storage
                .catch_up(
                    "r",
                    0,
                    ReadLimit {
                        limit: 20_000,
                        max_bytes: usize::MAX
                    }
                )
                .await
                .unwrap()
                .history
                .len() as u64,
            ROWS
        );
    }

    #[tokio::test]
    async fn a_second_storage_on_the_same_file_is_refused() {
        let dir = TempDir::new("twice");
        let first = SqliteStorage::open_as(&dir.url(), "pid 1, listening on http://127.0.0.1:1")
            .await
            .unwrap();
        let err = SqliteStorage::open(&dir.url())
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("listening on http://127.0.0.1:1"), "{err}");
        drop(first);
        SqliteStorage::open(&dir.url())
            .await
            .expect("free once the first is gone");
    }

    #[tokio::test]
    async fn in_memory_storage_is_private_and_removed_on_drop() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        storage.append(vec![post("r", "ann", "a")]).await.unwrap();
        assert_eq!(
            storage
                .before("r", u64::MAX, all())
                .await
                .unwrap()
                .messages
                .len(),
            1
        );
        let other = SqliteStorage::open("sqlite::memory:").await.unwrap();
        assert!(other
            .before("r", u64::MAX, all())
            .await
            .unwrap()
            .messages
            .is_empty());
        let file = storage._scratch.as_ref().unwrap().0.clone();
        assert!(file.exists());
        drop(storage);
        assert!(!file.exists());
    }
}
