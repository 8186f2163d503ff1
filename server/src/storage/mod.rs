//! Durable message storage behind one trait, so another database can follow SQLite.

mod sqlite;

use std::future::Future;
use std::pin::Pin;

use app::protocol::Message;

pub use sqlite::SqliteStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error in the writer: {0}")]
    Writer(#[from] rusqlite::Error),
    #[error("could not start the database writer: {0}")]
    Thread(std::io::Error),
    #[error("the database writer has stopped")]
    WriterStopped,
    #[error("could not prepare the database file: {0}")]
    File(std::io::Error),
    #[error("unsupported database URL {0:?}: use sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("stored value out of range: {0}")]
    OutOfRange(String),
}

pub type StorageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// What became of one message handed to [`Storage::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Written as given.
    Stored,
    /// The author had already sent this client_id here: the original message.
    Duplicate(Message),
}

/// A room and its newest message's id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoom {
    pub name: String,
    pub last_id: u64,
    pub last_ts: Option<i64>,
}

pub trait Storage: Send + Sync + 'static {
    /// The highest message id in the room; 0 when it has none.
    fn last_id<'a>(&'a self, room: &'a str) -> StorageFuture<'a, u64>;

    /// Writes messages (ids already assigned) in one transaction, committed before this
    /// returns. A message whose (room, author, client_id) exists is not written again.
    /// One result per message, in order.
    fn append<'a>(&'a self, messages: &'a [Message]) -> StorageFuture<'a, Vec<Appended>>;

    /// Up to `limit` messages with ids above `after`, oldest first.
    fn after<'a>(
        &'a self,
        room: &'a str,
        after: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>>;

    /// Up to `limit` messages with ids below `before` (the newest of them), oldest first.
    fn before<'a>(
        &'a self,
        room: &'a str,
        before: u64,
        limit: u32,
    ) -> StorageFuture<'a, Vec<Message>>;

    /// Remembers that a room exists.
    fn touch_room<'a>(&'a self, room: &'a str, ts: i64) -> StorageFuture<'a, ()>;

    /// Every room, with the time of its last message.
    fn rooms(&self) -> StorageFuture<'_, Vec<StoredRoom>>;
}

/// Opens the storage a `--database` URL names, creating and migrating it as needed.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Storage>, StorageError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStorage::open(url).await?))
    } else {
        Err(StorageError::UnsupportedUrl(url.to_owned()))
    }
}
