//! The embedded default: SQLite in WAL mode.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use app::protocol::Message;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{Appended, Storage, StorageError, StorageFuture, StoredRoom};

mod writer;

use writer::JournalWriter;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct SqliteStorage {
    /// Reads, and the rare writes other than messages (rooms).
    pool: SqlitePool,
    /// Appends go to a thread of their own; see `writer.rs`.
    journal: JournalWriter,
    /// For `sqlite::memory:`: the private file standing in for it, removed on drop.
    _scratch: Option<ScratchFile>,
}

/// A database file that lives as long as the storage: what `sqlite::memory:` opens. The
/// writer thread and the readers need one database between them, and every connection
/// to an in-memory database is a database of its own.
struct ScratchFile(PathBuf);

const SCRATCH_PREFIX: &str = "banter-memory-";

impl ScratchFile {
    fn new() -> Result<Self, StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if NEXT.load(Ordering::Relaxed) == 0 {
            remove_orphaned_scratch_files();
        }
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| StorageError::File(e.into()))?;
        let dir = std::env::temp_dir().join(format!(
            "{SCRATCH_PREFIX}{}-{}-{:016x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            u64::from_le_bytes(nonce)
        ));
        std::fs::create_dir(&dir).map_err(StorageError::File)?;
        Ok(Self(dir))
    }

    fn database(&self) -> PathBuf {
        self.0.join("banter.db")
    }
}

/// A process that ends without dropping its storage (a test binary, a killed server)
/// leaves its scratch files behind: remove those whose process is gone. Only where
/// `/proc` tells which processes live.
fn remove_orphaned_scratch_files() {
    let proc = std::path::Path::new("/proc");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    if !proc.join("self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !proc.join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SqliteStorage {
    pub async fn open(url: &str) -> Result<Self, StorageError> {
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
        .pragma("cache_size", "-16384");
        let main = options.get_filename().to_owned();
        writer::prepare_journal(&main)?;
        let journal_file = writer::journal_path(&main).to_string_lossy().into_owned();
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
        MIGRATOR.run(&pool).await?;
        let journal = JournalWriter::start(&main)?;
        Ok(Self {
            pool,
            journal,
            _scratch: scratch,
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
        ..Message::default()
    })
}

fn to_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Newest first or oldest first.
#[derive(Clone, Copy)]
enum Direction {
    After,
    Before,
}

impl SqliteStorage {
    /// Runs the journal's query, then the same over `messages`, in one read transaction.
    /// That order never misses a row that moves in between (see writer.rs); a row seen in
    /// both is the same row.
    async fn read_both(
        &self,
        journal_query: &'static str,
        messages_query: &'static str,
        room: &str,
        bound: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut rows = Vec::new();
        for query in [journal_query, messages_query] {
            rows.extend(
                sqlx::query(query)
                    .bind(room)
                    .bind(bound)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        tx.commit().await?;
        rows.iter().map(to_message).collect()
    }

    /// Up to `limit` messages past `bound` in `direction`, oldest first.
    async fn page(
        &self,
        room: &str,
        bound: u64,
        limit: u32,
        direction: Direction,
    ) -> Result<Vec<Message>, StorageError> {
        let rows = match direction {
            Direction::After => {
                self.read_both(
                    "SELECT id, room, author, text, ts, client_id FROM recent.message_journal
                     WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    "SELECT id, room, author, text, ts, client_id FROM messages
                     WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    room,
                    to_i64(bound),
                    limit,
                )
                .await?
            }
            Direction::Before => {
                self.read_both(
                    "SELECT id, room, author, text, ts, client_id FROM recent.message_journal
                     WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                    "SELECT id, room, author, text, ts, client_id FROM messages
                     WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                    room,
                    to_i64(bound),
                    limit,
                )
                .await?
            }
        };
        let by_id: BTreeMap<u64, Message> = rows.into_iter().map(|m| (m.id, m)).collect();
        let limit = limit as usize;
        Ok(match direction {
            Direction::After => by_id.into_values().take(limit).collect(),
            Direction::Before => {
                let skip = by_id.len().saturating_sub(limit);
                by_id.into_values().skip(skip).collect()
            }
        })
    }
}

impl Storage for SqliteStorage {
    fn last_id<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64> {
        Box::pin(async move {
            // Ids are given out from this: a row missed while it moves would make an id
            // be given twice. Hence the journal first, in one transaction (see read_both).
            let mut tx = self.pool.begin().await?;
            let mut last = 0;
            for query in [
                "SELECT MAX(id) FROM recent.message_journal WHERE room = ?",
                "SELECT MAX(id) FROM messages WHERE room = ?",
            ] {
                let id: Option<i64> = sqlx::query_scalar(query)
                    .bind(room)
                    .fetch_one(&mut *tx)
                    .await?;
                last = last.max(id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0));
            }
            tx.commit().await?;
            Ok(last)
        })
    }

    fn append<'a>(&'a self, messages: &'a [Message]) -> StorageFuture<'a, Vec<Appended>> {
        Box::pin(self.journal.append(messages))
    }

    fn after<'a>(
        &'a self,
        room: &'a str,
        after: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>> {
        Box::pin(self.page(room, after, limit, Direction::After))
    }

    fn before<'a>(
        &'a self,
        room: &'a str,
        before: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>> {
        Box::pin(self.page(room, before, limit, Direction::Before))
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
            let mut tx = self.pool.begin().await?;
            // Journal first (see read_both). A room's journal rows are newer than its
            // rows in `messages`, so its newest journal row, if any, is its newest message.
            let recent = sqlx::query(
                "SELECT room, MAX(id) AS last_id, ts AS last_ts FROM recent.message_journal
                 GROUP BY room",
            )
            .fetch_all(&mut *tx)
            .await?;
            let rooms = sqlx::query(
                "SELECT r.name AS name, m.id AS last_id, m.ts AS last_ts
                 FROM rooms r
                 LEFT JOIN messages m
                   ON m.room = r.name
                  AND m.id = (SELECT MAX(id) FROM messages WHERE room = r.name)
                 ORDER BY r.name",
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;

            let last = |row: &sqlx::sqlite::SqliteRow| -> Result<(u64, Option<i64>), StorageError> {
                let id: Option<i64> = row.try_get("last_id")?;
                let id = id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0);
                Ok((id, row.try_get("last_ts")?))
            };
            let mut newest: HashMap<String, (u64, Option<i64>)> = HashMap::new();
            for row in &recent {
                newest.insert(row.try_get("room")?, last(row)?);
            }
            rooms
                .iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    let moved = last(row)?;
                    let (last_id, last_ts) = match newest.get(&name) {
                        Some(journal) if journal.0 > moved.0 => *journal,
                        _ => moved,
                    };
                    Ok(StoredRoom {
                        name,
                        last_id,
                        last_ts,
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
            ..Message::default()
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

    #[tokio::test]
    async fn a_big_batch_over_many_rooms_is_stored_in_order() {
        let (storage, dir) = file_storage("big").await;
        // 301 rows, three rooms interleaved.
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

    async fn journal_rows(storage: &SqliteStorage) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM recent.message_journal")
            .fetch_one(&storage.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reads_and_resends_see_both_the_journal_and_moved_rows() {
        let (storage, dir) = file_storage("both").await;
        storage.touch_room("r", 1).await.unwrap();
        let older: Vec<Message> = (1..=5)
            .map(|id| message("r", id, "Ann", &format!("c{id}")))
            .collect();
        storage.append(&older).await.unwrap();
        // A pause moves the journal into `messages`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while journal_rows(&storage).await > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the journal was never moved"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let newer: Vec<Message> = (6..=8)
            .map(|id| message("r", id, "Ann", &format!("c{id}")))
            .collect();
        storage.append(&newer).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 3);

        let all: Vec<Message> = older.iter().chain(&newer).cloned().collect();
        assert_eq!(storage.after("r", 0, 100).await.unwrap(), all);
        assert_eq!(storage.after("r", 4, 2).await.unwrap(), all[4..6].to_vec());
        assert_eq!(storage.before("r", 9, 100).await.unwrap(), all);
        assert_eq!(storage.before("r", 8, 3).await.unwrap(), all[4..7].to_vec());
        assert_eq!(storage.last_id("r").await.unwrap(), 8);
        let rooms = storage.rooms().await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].last_id, rooms[0].last_ts), (8, Some(all[7].ts)));

        // Resends of a moved row and of a journal row get the originals back.
        let resends = vec![message("r", 9, "ANN", "c2"), message("r", 10, "ann", "c7")];
        assert_eq!(
            storage.append(&resends).await.unwrap(),
            vec![
                Appended::Duplicate(all[1].clone()),
                Appended::Duplicate(all[6].clone())
            ]
        );
        assert_eq!(storage.last_id("r").await.unwrap(), 8);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn rows_left_in_the_journal_by_a_crash_are_moved_at_start() {
        let (storage, dir) = file_storage("crash").await;
        let url = format!("sqlite://{}", dir.join("test.db").display());
        drop(storage);
        // What a killed process leaves: journal rows, committed, never moved, and rows
        // whose move committed but whose delete from the journal never happened.
        let row = "(room, id, author, author_key, text, ts, client_id)
                   VALUES ('r', ?1, 'Ann', 'ann', 'left behind', ?1, 'c' || ?1)";
        let journal = SqlitePool::connect(&format!("{url}.recent")).await.unwrap();
        let main = SqlitePool::connect(&url).await.unwrap();
        for id in 1..=3i64 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO message_journal {row}"
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

        let storage = SqliteStorage::open(&url).await.unwrap();
        assert_eq!(journal_rows(&storage).await, 0);
        let stored = storage.after("r", 0, 10).await.unwrap();
        assert_eq!(
            stored.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Still known as sent: a resend is not stored again.
        let resend = vec![message("r", 4, "ann", "c2")];
        assert_eq!(
            storage.append(&resend).await.unwrap(),
            vec![Appended::Duplicate(stored[1].clone())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_never_miss_a_row_while_the_journal_moves() {
        let (storage, dir) = file_storage("race").await;
        let storage = std::sync::Arc::new(storage);
        // Enough rows for several moves (one per 4,096), appended while reads run.
        const ROWS: u64 = 12_000;
        let writer = tokio::spawn({
            let storage = storage.clone();
            async move {
                for first in (1..=ROWS).step_by(40) {
                    let batch: Vec<Message> = (first..first + 40)
                        .map(|id| message("r", id, "ann", &format!("c{id}")))
                        .collect();
                    storage.append(&batch).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut reads = 0;
        let mut last_seen = 0;
        while !writer.is_finished() || last_seen < ROWS {
            let last = storage.last_id("r").await.unwrap();
            assert!(
                last >= last_seen,
                "last_id went back from {last_seen} to {last}"
            );
            last_seen = last;
            // Every read is a gapless run of ids: nothing caught mid-move is missed.
            let since = last.saturating_sub(200);
            let page = storage.after("r", since, 5_000).await.unwrap();
            let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
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
            let older = storage.before("r", last + 1, 100).await.unwrap();
            assert_eq!(older.last().map(|m| m.id), (last > 0).then_some(last));
            assert_eq!(older.len() as u64, last.min(100));
            reads += 1;
        }
        writer.await.unwrap();
        println!("{reads} reads while appending");
        assert_eq!(
            storage.after("r", 0, 20_000).await.unwrap().len() as u64,
            ROWS
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn in_memory_storage_is_private_and_removed_on_drop() {
        let storage = SqliteStorage::open("sqlite::memory:").await.unwrap();
        let batch = vec![message("r", 1, "ann", "a"), message("r", 2, "ann", "b")];
        assert_eq!(
            storage.append(&batch).await.unwrap(),
            vec![Appended::Stored, Appended::Stored]
        );
        assert_eq!(storage.after("r", 0, 10).await.unwrap(), batch);
        let other = SqliteStorage::open("sqlite::memory:").await.unwrap();
        assert!(other.after("r", 0, 10).await.unwrap().is_empty());
        let file = storage._scratch.as_ref().unwrap().0.clone();
        assert!(file.exists());
        drop(storage);
        assert!(!file.exists());
    }
}
