//! The embedded default: SQLite in WAL mode.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::OnceLock;

use app::protocol::{name_key, Message};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, Sqlite, SqlitePool};
use tokio::sync::{Mutex, MutexGuard};

use super::{Appended, Storage, StorageError, StorageFuture, StoredRoom};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows one INSERT writes at most. Batches are cut into chunks of power-of-two sizes up
/// to this, so a handful of prepared statements serve every batch size.
const MAX_CHUNK: usize = 128;

pub struct SqliteStorage {
    /// Reads, and writes too for an in-memory database.
    pool: SqlitePool,
    /// A connection that only the writer uses. SQLite drops a connection's page cache
    /// whenever another connection has written, so writing through whichever pooled
    /// connection is free would reread the indexes' pages for every batch.
    writer: Option<Mutex<SqliteConnection>>,
}

/// The connection appends go through.
enum Writer<'a> {
    Own(MutexGuard<'a, SqliteConnection>),
    Pooled(PoolConnection<Sqlite>),
}

impl Deref for Writer<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            Writer::Own(connection) => connection,
            Writer::Pooled(connection) => connection,
        }
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Writer::Own(connection) => connection,
            Writer::Pooled(connection) => connection,
        }
    }
}

/// How many of `left` rows the next INSERT takes: the largest power of two that fits.
fn chunk_rows(left: usize) -> usize {
    let fits = left.min(MAX_CHUNK);
    1 << (usize::BITS - 1 - fits.leading_zeros())
}

/// The INSERT for `rows` rows (a power of two up to [`MAX_CHUNK`]), built once per size.
fn insert_statement(rows: usize) -> &'static str {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        (0..=MAX_CHUNK.trailing_zeros())
            .map(|power| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; 1 << power].join(", ");
                format!(
                    "INSERT INTO messages (room, id, author, author_key, text, ts, client_id)
                     VALUES {values}
                     ON CONFLICT (room, author_key, client_id) DO NOTHING
                     RETURNING room, id"
                )
            })
            .collect()
    });
    &statements[rows.trailing_zeros() as usize]
}

impl SqliteStorage {
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL makes every commit durable against a crash of the
            // process (kill -9); only an operating-system crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5))
            // A multi-row INSERT inside a transaction keeps a statement journal; on disk
            // (the default past 64 KiB) it costs a temporary file write per page touched.
            .pragma("temp_store", "memory")
            // 16 MiB of page cache per connection (the default is 2 MiB), so the indexes'
            // hot pages of a big database stay in memory.
            .pragma("cache_size", "-16384")
            // Checkpoint every 10,000 pages (40 MiB of WAL) rather than 1,000: a page
            // rewritten by many commits in between is copied to the database once.
            .pragma("wal_autocheckpoint", "10000");
        // Every connection to an in-memory database is a database of its own: use one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let writer = if in_memory {
            None
        } else {
            Some(Mutex::new(options.connect().await?))
        };
        Ok(Self { pool, writer })
    }

    async fn writer(&self) -> Result<Writer<'_>, StorageError> {
        Ok(match &self.writer {
            Some(own) => Writer::Own(own.lock().await),
            None => Writer::Pooled(self.pool.acquire().await?),
        })
    }
}

fn to_message(row: &sqlx::sqlite::SqliteRow) -> Result<Message, StorageError> {
    let id: i64 = row.try_get("id")?;
    Ok(Message {
        id: u64::try_from(id).map_err(|_| StorageError::OutOfRange(format!("message id {id}")))?,
        room: row.try_get("room")?,
        author: row.try_get("author")?,
        text: row.try_get("text")?,
        ts: row.try_get("ts")?,
        client_id: row.try_get("client_id")?,
    })
}

fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

impl Storage for SqliteStorage {
    fn last_id<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64> {
        Box::pin(async move {
            let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM messages WHERE room = ?")
                .bind(room)
                .fetch_one(&self.pool)
                .await?;
            Ok(id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
        })
    }

    fn append<'a>(&'a self, messages: &'a [Message]) -> StorageFuture<'a, Vec<Appended>> {
        Box::pin(async move {
            let mut writer = self.writer().await?;
            let mut tx = writer.begin().await?;
            let keys: Vec<String> = messages.iter().map(|m| name_key(&m.author)).collect();
            // Rows the inserts skipped are resends; RETURNING names the rows written.
            let mut stored: HashMap<String, HashSet<i64>> = HashMap::new();
            let mut rest = messages.iter().zip(&keys);
            let mut left = messages.len();
            while left > 0 {
                let rows = chunk_rows(left);
                let mut query = sqlx::query(insert_statement(rows));
                for (message, key) in rest.by_ref().take(rows) {
                    query = query
                        .bind(&message.room)
                        .bind(to_i64(message.id))
                        .bind(&message.author)
                        .bind(key)
                        .bind(&message.text)
                        .bind(message.ts)
                        .bind(&message.client_id);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    let room: String = row.try_get(0)?;
                    let id: i64 = row.try_get(1)?;
                    stored.entry(room).or_default().insert(id);
                }
                left -= rows;
            }

            let mut results = Vec::with_capacity(messages.len());
            for (message, key) in messages.iter().zip(&keys) {
                let id = to_i64(message.id);
                if stored
                    .get(&message.room)
                    .is_some_and(|ids| ids.contains(&id))
                {
                    results.push(Appended::Stored);
                    continue;
                }
                let row = sqlx::query(
                    "SELECT id, room, author, text, ts, client_id FROM messages
                     WHERE room = ? AND author_key = ? AND client_id = ?",
                )
                .bind(&message.room)
                .bind(key)
                .bind(&message.client_id)
                .fetch_one(&mut *tx)
                .await?;
                results.push(Appended::Duplicate(to_message(&row)?));
            }
            tx.commit().await?;
            Ok(results)
        })
    }

    fn after<'a>(
        &'a self,
        room: &'a str,
        after: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, room, author, text, ts, client_id FROM messages WHERE room = ? AND id > ? ORDER BY id LIMIT ?",
            )
            .bind(room)
            .bind(to_i64(after))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(to_message).collect()
        })
    }

    fn before<'a>(
        &'a self,
        room: &'a str,
        before: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, room, author, text, ts, client_id FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?",
            )
            .bind(room)
            .bind(to_i64(before))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            let mut messages = rows.iter().map(to_message).collect::<Result<Vec<_>, _>>()?;
            messages.reverse();
            Ok(messages)
        })
    }

    fn touch_room<'a>(&'a self, room: &'a str, ts: i64) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO rooms (name, created_ts) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            )
            .bind(room)
            .bind(ts)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn rooms(&self) -> StorageFuture<'_, Vec<StoredRoom>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT r.name AS name, m.id AS last_id, m.ts AS last_ts
                 FROM rooms r
                 LEFT JOIN messages m
                   ON m.room = r.name
                  AND m.id = (SELECT MAX(id) FROM messages WHERE room = r.name)
                 ORDER BY r.name",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let last_id: Option<i64> = row.try_get("last_id")?;
                    Ok(StoredRoom {
                        name: row.try_get("name")?,
                        last_id: last_id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0),
                        last_ts: row.try_get("last_ts")?,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, id: u64, author: &str, client_id: &str) -> Message {
        Message {
            id,
            room: room.into(),
            author: author.into(),
            text: format!("text of {client_id}"),
            ts: 1_700_000_000_000 + id as i64,
            client_id: client_id.into(),
        }
    }

    async fn file_storage(name: &str) -> (SqliteStorage, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("banter-storage-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("test.db").display());
        (SqliteStorage::open(&url).await.unwrap(), dir)
    }

    #[test]
    fn chunks_are_powers_of_two_that_add_up() {
        for total in 1..=1_000 {
            let mut left = total;
            while left > 0 {
                let rows = chunk_rows(left);
                assert!(rows.is_power_of_two() && rows <= MAX_CHUNK && rows <= left);
                assert!(insert_statement(rows).matches('?').count() == rows * 7);
                left -= rows;
            }
        }
    }

    #[tokio::test]
    async fn a_big_batch_over_many_rooms_is_stored_in_order() {
        let (storage, dir) = file_storage("big").await;
        // 301 rows: several chunk sizes, three rooms interleaved.
        let batch: Vec<Message> = (0..301u64)
            .map(|n| {
                message(
                    &format!("room{}", n % 3),
                    n / 3 + 1,
                    "ann",
                    &format!("c{n}"),
                )
            })
            .collect();
        let results = storage.append(&batch).await.unwrap();
        assert!(results.iter().all(|r| *r == Appended::Stored));
        for room in 0..3u64 {
            let name = format!("room{room}");
            let stored = storage.after(&name, 0, 1_000).await.unwrap();
            let expected: Vec<Message> = batch.iter().filter(|m| m.room == name).cloned().collect();
            assert_eq!(stored, expected);
            assert_eq!(storage.last_id(&name).await.unwrap(), expected.len() as u64);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn resends_get_the_original_within_and_across_batches() {
        let (storage, dir) = file_storage("dup").await;
        let first = vec![message("r", 1, "Ann", "a"), message("r", 2, "Bob", "a")];
        assert_eq!(
            storage.append(&first).await.unwrap(),
            vec![Appended::Stored, Appended::Stored]
        );
        // The same client_id from the same author (names compare case-insensitively),
        // in a later batch and twice within one batch next to a new message.
        let second = vec![
            message("r", 3, "ann", "a"),
            message("r", 4, "Cid", "z"),
            message("r", 5, "Cid", "z"),
            message("other", 1, "Ann", "a"),
        ];
        let results = storage.append(&second).await.unwrap();
        assert_eq!(results[0], Appended::Duplicate(first[0].clone()));
        assert_eq!(results[1], Appended::Stored);
        assert_eq!(results[2], Appended::Duplicate(second[1].clone()));
        // Another room is another conversation: not a resend.
        assert_eq!(results[3], Appended::Stored);
        let ids: Vec<u64> = storage
            .after("r", 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![1, 2, 4]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn in_memory_storage_appends_through_its_one_connection() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        let batch = vec![message("r", 1, "ann", "a"), message("r", 2, "ann", "b")];
        assert_eq!(
            storage.append(&batch).await.unwrap(),
            vec![Appended::Stored, Appended::Stored]
        );
        assert_eq!(storage.after("r", 0, 10).await.unwrap(), batch);
    }
}
