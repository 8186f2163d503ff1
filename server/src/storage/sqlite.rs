//! The embedded default: SQLite in WAL mode.

use std::str::FromStr;

use app::protocol::{name_key, Message};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{Appended, Storage, StorageError, StorageFuture, StoredRoom};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct SqliteStorage {
    pool: SqlitePool,
}

impl SqliteStorage {
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode, NORMAL makes every commit durable against a crash of the
            // process (kill -9); only an operating-system crash can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // Every connection to an in-memory database is a database of its own: use one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
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
            let mut tx = self.pool.begin().await?;
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                let key = name_key(&message.author);
                let inserted = sqlx::query(
                    "INSERT INTO messages (room, id, author, author_key, text, ts, client_id)
                     VALUES (?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (room, author_key, client_id) DO NOTHING",
                )
                .bind(&message.room)
                .bind(to_i64(message.id))
                .bind(&message.author)
                .bind(&key)
                .bind(&message.text)
                .bind(message.ts)
                .bind(&message.client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 1 {
                    results.push(Appended::Stored(message.clone()));
                } else {
                    let row = sqlx::query(
                "SELECT id, room, author, text, ts, client_id FROM messages WHERE room = ? AND author_key = ? AND client_id = ?",
            )
                    .bind(&message.room)
                    .bind(&key)
                    .bind(&message.client_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    results.push(Appended::Duplicate(to_message(&row)?));
                }
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
