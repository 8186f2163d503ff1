//! The SQLite writer: a thread with a connection of its own that commits every append.
//!
//! Why a thread and not sqlx: sqlx runs each statement on its worker thread and hands
//! every row back through a channel, which cost more than SQLite's own work for a batch
//! of small rows. Here statements are prepared once and run back to back.
//!
//! Why a journal: an append commits its rows into `message_journal`, whose pages fill in
//! arrival order, so a commit writes a few pages however many rooms its batch touches.
//! Writing straight into `messages` dirtied a page per room in the table and another per
//! (room, author) in the resend index, and SQLite writes each dirty page whole to the WAL
//! at every commit. Every few thousand rows, and whenever appends pause, the journal is
//! moved into `messages` in one transaction, sorted by room, where a room's rows share
//! pages. Reads look at both tables; a row is in exactly one of them at any commit.
//!
//! Why a second thread for checkpoints: SQLite copies the WAL into the database (and
//! syncs both to disk) in whichever commit crosses its threshold, stalling every sender
//! waiting on the writer for tens of milliseconds. Another connection copies it in the
//! background instead, without blocking the writer. Under steady load it never quite
//! catches up (new frames keep coming), so the writer still checkpoints once the WAL
//! reaches 10,000 pages: by then there is little left to copy, and its checkpoint lets
//! the WAL start over (and be trimmed to 64 MiB) rather than grow without end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use app::protocol::{name_key, Message};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::to_i64;
use crate::storage::{Appended, StorageError};

/// Journal rows that trigger a move into `messages`: enough that a room's rows fill
/// pages, few enough that reads scanning the journal stay cheap.
const COMPACT_ROWS: usize = 4_096;

/// A pause in appends this long moves what the journal holds.
const COMPACT_WHEN_IDLE: Duration = Duration::from_millis(200);

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

type Reply = oneshot::Sender<Result<Vec<Appended>, StorageError>>;

struct Job {
    messages: Vec<Message>,
    reply: Reply,
}

/// What identifies a resend: room, author key, client_id.
type ResendKey = (String, String, String);

/// Hands appends to the writer thread. Dropping it lets the thread finish its queue,
/// move the journal and stop.
pub struct JournalWriter {
    jobs: mpsc::Sender<Job>,
    /// Dropping it stops the checkpointer.
    _checkpoints: mpsc::Sender<()>,
}

impl JournalWriter {
    /// Opens a connection to the (migrated) database at `path`, moves whatever an earlier
    /// run left in the journal, and starts the thread.
    pub fn start(path: &Path) -> Result<Self, StorageError> {
        let connection = connect(path)?;
        connection.execute_batch(
            "PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -16384;
             PRAGMA wal_autocheckpoint = 10000;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        let checkpoints = start_checkpointer(path)?;
        let mut journal = Journal {
            connection,
            rows: HashMap::new(),
        };
        journal.compact()?;
        let (jobs, receiver) = mpsc::channel();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || journal.run(receiver))
            .map_err(StorageError::Thread)?;
        Ok(Self {
            jobs,
            _checkpoints: checkpoints,
        })
    }

    /// Commits `messages` (ids assigned) in one transaction; see [`crate::storage::Storage::append`].
    pub async fn append(&self, messages: &[Message]) -> Result<Vec<Appended>, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                messages: messages.to_vec(),
                reply,
            })
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }
}

fn connect(path: &Path) -> Result<Connection, StorageError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // The database is in WAL mode already (set when sqlx opened it; it persists).
    // NORMAL makes each commit survive a crash of the process; see `SqliteStorage`.
    connection.execute_batch("PRAGMA synchronous = NORMAL;")?;
    Ok(connection)
}

/// Starts the thread that checkpoints the WAL until the returned sender is dropped.
fn start_checkpointer(path: &Path) -> Result<mpsc::Sender<()>, StorageError> {
    let connection = connect(path)?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                // PASSIVE copies what no reader still needs, without waiting for anyone;
                // what it leaves is copied next time.
                if let Err(err) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                    tracing::warn!("checkpointing the database failed: {err}");
                }
            }
        })
        .map_err(StorageError::Thread)?;
    Ok(stop)
}

struct Journal {
    connection: Connection,
    /// The journal's rows by resend key, so that spotting a resend needs no index on the
    /// journal (an index would bring back a dirty page per room).
    rows: HashMap<ResendKey, Message>,
}

impl Journal {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = if self.rows.is_empty() {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(mpsc::RecvError) => return,
                }
            } else {
                match jobs.recv_timeout(COMPACT_WHEN_IDLE) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.compact_or_log();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.compact_or_log();
                        return;
                    }
                }
            };
            let result = self.append(&job.messages);
            let _ = job.reply.send(result);
            if self.rows.len() >= COMPACT_ROWS {
                self.compact_or_log();
            }
        }
    }

    fn append(&mut self, messages: &[Message]) -> Result<Vec<Appended>, StorageError> {
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(messages.len());
        // Rows of this batch; they join `rows` only once committed.
        let mut added: HashMap<ResendKey, Message> = HashMap::with_capacity(messages.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO message_journal (room, id, author, author_key, text, ts, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut find = tx.prepare_cached(
                "SELECT id, author, text, ts FROM messages
                 WHERE room = ?1 AND author_key = ?2 AND client_id = ?3",
            )?;
            for message in messages {
                let key = (
                    message.room.clone(),
                    name_key(&message.author),
                    message.client_id.clone(),
                );
                if let Some(original) = added.get(&key).or_else(|| self.rows.get(&key)) {
                    results.push(Appended::Duplicate(original.clone()));
                    continue;
                }
                let stored = find
                    .query_row(params![key.0, key.1, key.2], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()?;
                if let Some((id, author, text, ts)) = stored {
                    results.push(Appended::Duplicate(Message {
                        id: u64::try_from(id)
                            .map_err(|_| StorageError::OutOfRange(format!("message id {id}")))?,
                        room: message.room.clone(),
                        author,
                        text,
                        ts,
                        client_id: message.client_id.clone(),
                    }));
                    continue;
                }
                insert.execute(params![
                    message.room,
                    to_i64(message.id),
                    message.author,
                    key.1,
                    message.text,
                    message.ts,
                    message.client_id,
                ])?;
                added.insert(key, message.clone());
                results.push(Appended::Stored);
            }
        }
        tx.commit()?;
        self.rows.extend(added);
        Ok(results)
    }

    /// Moves the journal into `messages` in one transaction.
    fn compact(&mut self) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let tx = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO messages (room, id, author, author_key, text, ts, client_id)
             SELECT room, id, author, author_key, text, ts, client_id FROM message_journal
             ORDER BY room, id",
            [],
        )?;
        tx.execute("DELETE FROM message_journal", [])?;
        tx.commit()?;
        tracing::debug!(
            rows = self.rows.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "moved the message journal"
        );
        self.rows.clear();
        Ok(())
    }

    /// A failed move loses nothing: the rows stay in the journal, reads still find them,
    /// and the move is tried again after the next append or pause.
    fn compact_or_log(&mut self) {
        if let Err(err) = self.compact() {
            tracing::error!("moving the message journal into messages failed: {err}");
        }
    }
}
