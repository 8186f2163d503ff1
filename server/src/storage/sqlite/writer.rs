//! Where appends go: a journal database next to the main one, a writer thread that
//! commits every append there, and a mover thread that copies the journal into
//! `messages` in bulk.
//!
//! Why a journal: an append commits its rows into `recent.message_journal`, whose pages
//! fill in arrival order, so a commit writes a few pages however many rooms its batch
//! touches. Writing straight into `messages` dirtied a page per room in the table and
//! another per (room, author) in the resend index, and SQLite writes each dirty page
//! whole to the WAL at every commit.
//!
//! Why a database file of its own: moving a few thousand rows into `messages` takes tens
//! of milliseconds. In one file it would hold the only write lock, and every sender would
//! wait; with the journal in a second file (its own WAL, its own lock) the mover writes
//! `messages` while the writer goes on appending, on the other core.
//!
//! How a row moves without being lost or seen twice: the mover copies journal rows into
//! `messages` (skipping any already there) and commits; only then does the writer delete
//! them from the journal. In between a row is in both, and reads merge by id. Reads look
//! at the journal before `messages`, in one transaction, so a row deleted from the journal
//! after the read's journal snapshot is in its later `messages` snapshot. A crash between
//! the two steps leaves rows in both; the next start finishes the move.
//!
//! Why threads and not sqlx: sqlx runs each statement on its worker thread and hands each
//! row back through a channel, which cost more than SQLite's own work for a batch of small
//! rows. Here statements are prepared once and run back to back.
//!
//! Why a checkpoint thread: SQLite copies a WAL into its database (and syncs both) in
//! whichever commit crosses a threshold, stalling everyone waiting on that commit. A third
//! connection does it in the background. Under steady load it never quite catches up, so
//! the writer still checkpoints the journal once its WAL reaches 10,000 pages; by then
//! little is left to copy, and the WAL starts over instead of growing without end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use app::protocol::{name_key, Message};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::to_i64;
use crate::storage::{Appended, StorageError};

/// Journal rows that start a move: enough that a room's rows fill pages in `messages`,
/// few enough that reads scanning the journal stay cheap.
const MOVE_AT_ROWS: usize = 4_096;

/// Journal rows past which appends wait for a move under way: reads scan the journal, so
/// a writer outrunning the mover (say, a bulk import) must not let it grow without end.
const JOURNAL_CAP: usize = 4 * MOVE_AT_ROWS;

/// A pause in appends this long moves what the journal holds.
const MOVE_WHEN_IDLE: Duration = Duration::from_millis(200);

/// How often the checkpoint thread copies the WALs into their databases.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The journal database's schema, created when missing: the columns of `messages`
/// (migrations/0001) in arrival order (`seq`). It is not a sqlx migration because the
/// journal is a database of its own, attached to the main one.
const JOURNAL_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS message_journal (
    seq        INTEGER PRIMARY KEY,
    room       TEXT    NOT NULL,
    id         INTEGER NOT NULL,
    author     TEXT    NOT NULL,
    author_key TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    client_id  TEXT    NOT NULL
)";

/// Copies journal rows up to a seq into `messages`, sorted so that a room's rows land
/// together. Rows already there (a move whose delete was cut short) are skipped.
const MOVE_ROWS: &str =
    "INSERT INTO main.messages (room, id, author, author_key, text, ts, client_id)
     SELECT room, id, author, author_key, text, ts, client_id FROM recent.message_journal
     WHERE seq <= ?1
     ORDER BY room, id
     ON CONFLICT DO NOTHING";

/// The journal database for the main database at `main`: `banter.db` keeps its journal
/// in `banter.db.recent`.
pub fn journal_path(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push(".recent");
    PathBuf::from(name)
}

/// Creates the journal database (WAL, its table) if it is missing. Runs before any other
/// connection attaches it.
pub fn prepare_journal(main: &Path) -> Result<(), StorageError> {
    let connection = Connection::open(journal_path(main))?;
    let _mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    connection.execute_batch(JOURNAL_SCHEMA)?;
    Ok(())
}

/// A connection to the main database with the journal attached as `recent`.
fn connect(main: &Path) -> Result<Connection, StorageError> {
    let connection = Connection::open(main)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.execute(
        "ATTACH DATABASE ?1 AS recent",
        params![journal_path(main).to_string_lossy()],
    )?;
    // NORMAL: in WAL mode each commit survives a crash of the process; see `SqliteStorage`.
    connection.execute_batch(
        "PRAGMA main.synchronous = NORMAL;
         PRAGMA recent.synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA main.cache_size = -16384;",
    )?;
    Ok(connection)
}

type Reply = oneshot::Sender<Result<Vec<Appended>, StorageError>>;

struct Job {
    messages: Vec<Message>,
    reply: Reply,
}

/// From the mover: journal rows up to this seq are in `messages` (or the move failed).
type Moved = Result<i64, StorageError>;

/// What identifies a resend: room, author key, client_id.
type ResendKey = (String, String, String);

/// Hands appends to the writer thread. Dropping it stops the threads.
pub struct JournalWriter {
    jobs: mpsc::Sender<Job>,
}

impl JournalWriter {
    /// Finishes any move an earlier run left (the main database must be migrated and the
    /// journal prepared), then starts the writer, mover and checkpoint threads.
    pub fn start(main: &Path) -> Result<Self, StorageError> {
        let writer = connect(main)?;
        writer.execute_batch(
            "PRAGMA recent.wal_autocheckpoint = 10000;
             PRAGMA recent.journal_size_limit = 67108864;",
        )?;
        let mover = connect(main)?;
        let checkpointer = connect(main)?;

        // Whatever a crash left in the journal moves now, before anything is appended.
        let left: i64 = writer.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM recent.message_journal",
            [],
            |row| row.get(0),
        )?;
        if left > 0 {
            move_rows(&mover, left)?;
            writer.execute(
                "DELETE FROM recent.message_journal WHERE seq <= ?1",
                params![left],
            )?;
        }

        let (jobs, job_receiver) = mpsc::channel();
        let (moves, move_receiver) = mpsc::channel::<i64>();
        let (moved, moved_receiver) = mpsc::channel::<Moved>();
        let (stop_checkpoints, checkpoints_stopped) = mpsc::channel::<()>();
        spawn("sqlite-mover", move || {
            run_mover(mover, move_receiver, moved)
        })?;
        spawn("sqlite-checkpoint", move || {
            run_checkpoints(checkpointer, checkpoints_stopped)
        })?;
        let journal = Journal {
            connection: writer,
            rows: HashMap::new(),
            last_seq: left,
            moving: false,
            moves,
            _stop_checkpoints: stop_checkpoints,
        };
        spawn("sqlite-writer", move || {
            journal.run(job_receiver, moved_receiver)
        })?;
        Ok(Self { jobs })
    }

    /// Commits `messages` (ids assigned) in one transaction; see
    /// [`crate::storage::Storage::append`].
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

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), StorageError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(StorageError::Thread)
}

fn move_rows(mover: &Connection, upto: i64) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let moved = mover.execute(MOVE_ROWS, params![upto])?;
    tracing::debug!(
        rows = moved,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "moved journal rows into messages"
    );
    Ok(())
}

/// Moves the journal up to each seq it is handed, then tells the writer.
fn run_mover(mover: Connection, upto: mpsc::Receiver<i64>, moved: mpsc::Sender<Moved>) {
    while let Ok(upto) = upto.recv() {
        let result = move_rows(&mover, upto).map(|()| upto);
        if moved.send(result).is_err() {
            return;
        }
    }
}

fn run_checkpoints(connection: Connection, stopped: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        // PASSIVE copies what no reader still needs, without waiting for anyone; what it
        // leaves is copied next time.
        if let Err(err) = connection.execute_batch(
            "PRAGMA main.wal_checkpoint(PASSIVE); PRAGMA recent.wal_checkpoint(PASSIVE);",
        ) {
            tracing::warn!("checkpointing the database failed: {err}");
        }
    }
}

struct Journal {
    connection: Connection,
    /// The journal's rows by resend key, with their seq, so that spotting a resend needs
    /// no index on the journal (an index would bring back a dirty page per room).
    rows: HashMap<ResendKey, (i64, Message)>,
    /// The highest seq appended. Seqs are rowids: once the journal is empty they may start
    /// over, which is harmless because a move takes every row up to the seq it is given.
    last_seq: i64,
    /// Whether the mover is at work.
    moving: bool,
    moves: mpsc::Sender<i64>,
    /// Dropped with the writer thread, which stops the checkpoint thread.
    _stop_checkpoints: mpsc::Sender<()>,
}

impl Journal {
    fn run(mut self, jobs: mpsc::Receiver<Job>, moved: mpsc::Receiver<Moved>) {
        loop {
            if self.moving && self.rows.len() >= JOURNAL_CAP {
                match moved.recv() {
                    Ok(result) => self.finish_move(result),
                    Err(mpsc::RecvError) => return,
                }
            }
            while let Ok(result) = moved.try_recv() {
                self.finish_move(result);
            }
            let job = if self.rows.is_empty() && !self.moving {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(mpsc::RecvError) => return,
                }
            } else {
                // Also wakes now and then to pick up a finished move.
                match jobs.recv_timeout(MOVE_WHEN_IDLE) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.start_move();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let _ = job.reply.send(self.append(&job.messages));
            if self.rows.len() >= MOVE_AT_ROWS {
                self.start_move();
            }
        }
    }

    fn finish_move(&mut self, result: Moved) {
        self.moving = false;
        match result {
            // A failed delete leaves rows in both tables, which reads allow for; the next
            // move's delete takes them.
            Ok(upto) => {
                if let Err(err) = self.forget_moved(upto) {
                    tracing::error!("deleting moved rows from the journal failed: {err}");
                }
            }
            // Nothing is lost: the rows stay in the journal, where reads find them, and
            // the next move takes them too.
            Err(err) => tracing::error!("moving the message journal into messages failed: {err}"),
        }
    }

    fn start_move(&mut self) {
        if !self.moving && !self.rows.is_empty() && self.moves.send(self.last_seq).is_ok() {
            self.moving = true;
        }
    }

    fn forget_moved(&mut self, upto: i64) -> Result<(), StorageError> {
        self.connection.execute(
            "DELETE FROM recent.message_journal WHERE seq <= ?1",
            params![upto],
        )?;
        self.rows.retain(|_, (seq, _)| *seq > upto);
        Ok(())
    }

    fn append(&mut self, messages: &[Message]) -> Result<Vec<Appended>, StorageError> {
        // Deferred: the transaction writes only the journal, so it locks only the journal.
        let tx = self.connection.transaction()?;
        let mut results = Vec::with_capacity(messages.len());
        // Rows of this batch; they join `rows` only once committed.
        let mut added: HashMap<ResendKey, (i64, Message)> = HashMap::with_capacity(messages.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO recent.message_journal
                     (room, id, author, author_key, text, ts, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut find = tx.prepare_cached(
                "SELECT id, author, text, ts FROM main.messages
                 WHERE room = ?1 AND author_key = ?2 AND client_id = ?3",
            )?;
            for message in messages {
                let key = (
                    message.room.clone(),
                    name_key(&message.author),
                    message.client_id.clone(),
                );
                if let Some((_, original)) = added.get(&key).or_else(|| self.rows.get(&key)) {
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
                        ..Message::default()
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
                let seq = tx.last_insert_rowid();
                added.insert(key, (seq, message.clone()));
                results.push(Appended::Stored);
            }
        }
        tx.commit()?;
        if let Some(seq) = added.values().map(|(seq, _)| *seq).max() {
            self.last_seq = seq;
        }
        self.rows.extend(added);
        Ok(results)
    }
}
