//! Where changes go: a journal database next to the main one, an appender thread that
//! checks every change, numbers it and commits it there, and a mover thread that copies
//! the journal into `messages` in bulk.
//!
//! "Appender" is this thread; the chat side's group committer, which hands it batches,
//! is the batcher (`chat/batcher.rs`).
//!
//! Why a journal: an append commits its rows into `recent.message_journal`, whose pages
//! fill in arrival order, so a commit writes a few pages however many rooms its batch
//! touches. Writing straight into `messages` dirtied a page per room in the table and
//! another per (room, owner) in the resend index, and SQLite writes each dirty page whole
//! to the WAL at every commit.
//!
//! The journal is a log of message *versions*: a row is the whole message as one change
//! left it (a new message, or an edit, delete or reaction applied to one), numbered with
//! its `rev`, plus who made the change and its client_id. A message may have several rows;
//! the one with the highest `rev` is its latest version, and reads merge by id keeping
//! that one.
//!
//! Why a database file of its own: moving a few thousand rows into `messages` takes tens
//! of milliseconds. In one file it would hold the only write lock, and every sender would
//! wait; with the journal in a second file (its own WAL, its own lock) the mover writes
//! `messages` while the appender goes on, on the other core.
//!
//! How a row moves without being lost or seen twice: the mover upserts journal rows into
//! `messages` (a version replaces the stored one only if its `rev` is higher), records
//! their change ids and room positions, updates the search index, and commits; only then
//! does the appender delete them from the journal. In between a row is in both, and
//! reads merge by id. Reads look at the journal before `messages`, in one transaction, so
//! a row deleted from the journal after the read's journal snapshot is in its later
//! `messages` snapshot. A crash between the two steps leaves rows in both; the next start
//! finishes the move.
//!
//! What the appender guarantees: it is the only writer of the journal and the only one
//! to hand out sequence numbers (the database is locked to one process, see `lock.rs`),
//! so a room's numbers are given in commit order with no duplicate. A batch is one
//! transaction: if it fails, no number it would have given is used and nothing is kept in
//! memory. Numbers are not message ids alone: edits, deletes and reactions take numbers
//! from the same sequence, so a room's message ids skip the numbers its changes took.
//!
//! Why threads and not sqlx: sqlx runs each statement on its worker thread and hands each
//! row back through a channel, which cost more than SQLite's own work for a batch of small
//! rows. Here statements are prepared once and run back to back.
//!
//! Why a checkpoint thread: SQLite copies a WAL into its database (and syncs both) in
//! whichever commit crosses a threshold, stalling everyone waiting on that commit. A third
//! connection does it in the background. Under steady load it never quite catches up, so
//! the appender still checkpoints the journal once its WAL reaches 10,000 pages; by then
//! little is left to copy, and the WAL starts over instead of growing without end.
//!
//! Why the mover and the checkpoint thread run at a lower priority (nice 10): a sender
//! waits for the sockets' threads and the appender, never for them. When both cores are
//! busy they give way; whenever a core is free they run, and the journal's cap stops
//! appends before a starved mover could let it grow without end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::LazyLock;
use std::thread;
use std::time::Duration;

use app::protocol::{excerpt, Message, ReplyPreview};
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use super::{from_i64, search_terms, to_i64, MESSAGE_COLUMNS};
use crate::storage::{
    Applied, Change, ChangeKind, Owner, StorageError, StoredMessage, StoredReactions,
};

/// Journal rows that start a move: enough that a room's rows fill pages in `messages`,
/// few enough that reads scanning the journal stay cheap.
const MOVE_AT_ROWS: usize = 4_096;

/// Journal rows past which appends wait for a move under way: reads scan the journal, so
/// an appender outrunning the mover (say, a bulk import) must not let it grow without end.
const JOURNAL_CAP: usize = 4 * MOVE_AT_ROWS;

/// A pause in appends this long moves what the journal holds. It also bounds how long a
/// new message waits before search finds it.
const MOVE_WHEN_IDLE: Duration = Duration::from_millis(200);

/// How often the checkpoint thread copies the WALs into their databases.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Rooms whose last number the appender remembers before it forgets them all (and reads
/// them again as they come back), so memory does not grow with every room ever written.
const REMEMBERED_ROOMS: usize = 100_000;

/// The journal: the columns of `messages` (`MESSAGE_COLUMNS`, the same names and
/// meaning as in migrations/0002), in arrival order (`seq`), with who made the change.
/// It is not a sqlx migration because the journal is a database of its own, attached to
/// the main one; `journal_matches_the_messages_table` fails if the two drift.
///
/// `seq` is given by the appender, counting up from the highest in the journal and never
/// back (not AUTOINCREMENT, which costs a read and a write of `sqlite_sequence` per row),
/// so that "every row up to N" never takes in a row appended after a move began.
/// `change_owner` and `change_client_id` are NULL where they are the message's own
/// `owner` and `client_id` (every new message), which keeps rows short.
fn journal_schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            seq              INTEGER PRIMARY KEY,
            room             TEXT    NOT NULL,
            id               INTEGER NOT NULL,
            rev              INTEGER NOT NULL,
            author           TEXT    NOT NULL,
            owner            TEXT    NOT NULL,
            text             TEXT    NOT NULL,
            ts               INTEGER NOT NULL,
            client_id        TEXT    NOT NULL,
            edited_ts        INTEGER,
            edits            INTEGER NOT NULL,
            deleted          INTEGER NOT NULL,
            reply_to         INTEGER,
            reactions        TEXT,
            fts              INTEGER,
            change_owner     TEXT,
            change_client_id TEXT
        ) -- {MESSAGE_COLUMNS}"
    )
}

/// The journal database for the main database at `main`: `banter.db` keeps its journal
/// in `banter.db.recent`.
pub fn journal_path(main: &Path) -> PathBuf {
    let mut name = main.as_os_str().to_owned();
    name.push(".recent");
    PathBuf::from(name)
}

/// Creates the journal database (WAL, its table) if it is missing. Runs before any other
/// connection attaches it. A journal left by a version before changes existed (columns
/// `author_key`, no `rev`) is renamed aside, to be moved by [`Appender::start`].
pub fn prepare_journal(main: &Path) -> Result<(), StorageError> {
    let connection = Connection::open(journal_path(main))?;
    let _mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    connection.execute_batch("PRAGMA secure_delete = ON;")?;
    let old: bool = connection.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('message_journal') WHERE name = 'author_key'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if old {
        connection.execute_batch(
            "DROP TABLE IF EXISTS message_journal_v1;
             ALTER TABLE message_journal RENAME TO message_journal_v1;",
        )?;
    }
    connection.execute_batch(&journal_schema("message_journal"))?;
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
    // secure_delete: the text of a deleted message is overwritten, not left in free pages.
    connection.execute_batch(
        "PRAGMA main.synchronous = NORMAL;
         PRAGMA recent.synchronous = NORMAL;
         PRAGMA main.secure_delete = ON;
         PRAGMA recent.secure_delete = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA main.cache_size = -16384;",
    )?;
    // What the mover gives the search index for a text (search_terms.rs).
    connection.create_scalar_function(
        "search_terms",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |context| {
            let text = context
                .get_raw(0)
                .as_str()
                .map_err(|err| rusqlite::Error::UserFunctionError(Box::new(err)))?;
            Ok(search_terms::index_terms(text))
        },
    )?;
    Ok(connection)
}

type Reply = oneshot::Sender<Result<Vec<Applied>, StorageError>>;

struct Job {
    changes: Vec<Change>,
    reply: Reply,
}

/// From the mover: journal rows up to this seq are in `messages` (or the move failed).
type Moved = Result<i64, StorageError>;

/// To the mover: move the journal rows up to `upto`. `changed` is false when none of them
/// is a changed version (an edit, delete or reaction: `rev != id`), which spares the
/// move the search index's bookkeeping for changed messages; when in doubt it is true.
#[derive(Clone, Copy)]
struct MoveOrder {
    upto: i64,
    changed: bool,
}

/// What identifies a resend: room, owner, client_id.
type ChangeKey = (String, String, String);

/// Hands batches to the appender thread. Dropping it stops the threads.
pub struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl Appender {
    /// Finishes any move an earlier run left (the main database must be migrated and the
    /// journal prepared), then starts the appender, mover and checkpoint threads.
    pub fn start(main: &Path) -> Result<Self, StorageError> {
        let connection = connect(main)?;
        connection.execute_batch(
            "PRAGMA recent.wal_autocheckpoint = 10000;
             PRAGMA recent.journal_size_limit = 67108864;",
        )?;
        let mover = connect(main)?;
        // The checkpoint thread copies `messages`' WAL; the mover's commits would do it
        // themselves every 1,000 pages (SQLite's default), fsyncs included, on the path
        // every move takes. Like the journal's, past 10,000 pages they still do.
        mover.execute_batch(
            "PRAGMA main.wal_autocheckpoint = 10000;
             PRAGMA main.journal_size_limit = 67108864;",
        )?;
        let checkpointer = connect(main)?;

        move_old_journal(&mover)?;
        rebuild_search_index(&mover)?;
        // Whatever a crash left in the journal moves now, before anything is appended.
        let left: i64 = connection.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM recent.message_journal",
            [],
            |row| row.get(0),
        )?;
        if left > 0 {
            move_rows(&mover, left, true)?;
            connection.execute(
                "DELETE FROM recent.message_journal WHERE seq <= ?1",
                params![left],
            )?;
        }
        // A journal of the form before the appender gave seqs (AUTOINCREMENT, change
        // columns NOT NULL) is empty now, and is made again in today's form.
        let form: String = connection.query_row(
            "SELECT sql FROM recent.sqlite_master WHERE type = 'table' AND name = 'message_journal'",
            [],
            |row| row.get(0),
        )?;
        if form.contains("AUTOINCREMENT") {
            // The schema ends in a comment: the statement's end goes on a line of its own.
            connection.execute_batch(&format!(
                "BEGIN;
                 DROP TABLE recent.message_journal;
                 {}
                 ;
                 COMMIT;",
                journal_schema("recent.message_journal")
            ))?;
        }

        let (jobs, job_receiver) = mpsc::channel();
        let (moves, move_receiver) = mpsc::channel::<MoveOrder>();
        let (moved, moved_receiver) = mpsc::channel::<Moved>();
        let (stop_checkpoints, checkpoints_stopped) = mpsc::channel::<()>();
        spawn("sqlite-mover", move || {
            run_mover(mover, move_receiver, moved)
        })?;
        spawn("sqlite-checkpoint", move || {
            run_checkpoints(checkpointer, checkpoints_stopped)
        })?;
        let journal = Journal {
            state: State::load(&connection)?,
            connection,
            stale: false,
            moving: false,
            forgotten_upto: 0,
            moves,
            _stop_checkpoints: stop_checkpoints,
        };
        spawn("sqlite-appender", move || {
            journal.run(job_receiver, moved_receiver)
        })?;
        Ok(Self { jobs })
    }

    /// Applies `changes` in one transaction; see [`crate::storage::Storage::append`].
    pub async fn append(&self, changes: Vec<Change>) -> Result<Vec<Applied>, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { changes, reply })
            .map_err(|_| StorageError::AppenderStopped)?;
        answer.await.map_err(|_| StorageError::AppenderStopped)?
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), StorageError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(StorageError::Thread)
}

/// A journal from before changes existed, renamed aside by [`prepare_journal`]: its rows
/// (committed, acknowledged messages a crash left unmoved) go into `messages` as they
/// were, recognised for resends by name as the migration does for older messages.
fn move_old_journal(mover: &Connection) -> Result<(), StorageError> {
    let exists: bool = mover.query_row(
        "SELECT COUNT(*) FROM recent.sqlite_master WHERE name = 'message_journal_v1'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !exists {
        return Ok(());
    }
    mover.execute_batch(
        "BEGIN;
         INSERT INTO main.messages (room, id, rev, author, owner, text, ts, client_id)
             SELECT room, id, id, author, '', text, ts, client_id FROM recent.message_journal_v1
             WHERE true ON CONFLICT DO NOTHING;
         INSERT OR IGNORE INTO main.change_ids (room, owner, client_id, id)
             SELECT room, 'name:' || author_key, client_id, id FROM recent.message_journal_v1;
         INSERT INTO main.rooms (name, created_ts, last_id, last_ts, last_seq)
             SELECT room, MIN(ts), MAX(id), NULL, MAX(id) FROM recent.message_journal_v1
             GROUP BY room
             ON CONFLICT (name) DO UPDATE SET
                 last_id = MAX(last_id, excluded.last_id),
                 last_seq = MAX(last_seq, excluded.last_seq);
         UPDATE main.rooms SET last_ts =
             (SELECT ts FROM main.messages m WHERE m.room = rooms.name AND m.id = rooms.last_id);
         COMMIT;
         DROP TABLE recent.message_journal_v1;",
    )?;
    Ok(())
}

/// Moves journal rows up to `upto` into `messages`, `change_ids`, `rooms` and the search
/// index, in one transaction. Rows already moved (a move whose delete was cut short) are
/// harmless: versions only ever replace lower ones, and ids are recorded once.
fn move_rows(mover: &Connection, upto: i64, changed: bool) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let tx = mover.unchecked_transaction()?;
    unindex_changed(&tx, upto, changed)?;
    // In journal order, not sorted by room: each row finds its place in `messages` from
    // the root of the tree either way, a room's rows come in id order already, and the
    // pages touched are the same. Sorting the rows first cost a tenth of the move.
    let moved = tx.execute(
        &format!(
            "INSERT INTO main.messages ({MESSAGE_COLUMNS}, fts)
             SELECT {MESSAGE_COLUMNS}, fts FROM recent.message_journal
             WHERE seq <= ?1
             ON CONFLICT (room, id) DO UPDATE SET
                 rev = excluded.rev, text = excluded.text, edited_ts = excluded.edited_ts,
                 edits = excluded.edits, deleted = excluded.deleted,
                 reply_to = excluded.reply_to, reactions = excluded.reactions
             WHERE excluded.rev > messages.rev"
        ),
        params![upto],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO main.change_ids (room, owner, client_id, id)
         SELECT room, COALESCE(unhex(owner), CAST(owner AS BLOB)),
                COALESCE(change_client_id, client_id), id
         FROM (SELECT room, id, COALESCE(change_owner, owner) AS owner, change_client_id,
                      client_id
               FROM recent.message_journal WHERE seq <= ?1)",
        params![upto],
    )?;
    tx.execute(
        "WITH moved AS (
             SELECT room, MAX(id) AS last_id, MAX(rev) AS last_seq FROM recent.message_journal
             WHERE seq <= ?1 GROUP BY room
         )
         INSERT INTO main.rooms (name, created_ts, last_id, last_ts, last_seq)
         SELECT moved.room, m.ts, moved.last_id, m.ts, moved.last_seq
         FROM moved JOIN main.messages m ON m.room = moved.room AND m.id = moved.last_id
         WHERE true
         ON CONFLICT (name) DO UPDATE SET
             last_ts = CASE WHEN excluded.last_id > rooms.last_id THEN excluded.last_ts
                            ELSE rooms.last_ts END,
             last_id = MAX(rooms.last_id, excluded.last_id),
             last_seq = MAX(rooms.last_seq, excluded.last_seq)",
        params![upto],
    )?;
    index_moved(&tx, upto)?;
    tx.commit()?;
    tracing::debug!(
        rows = moved,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "moved journal rows into messages"
    );
    Ok(())
}

/// A search index built by an older form (migrations/0003) is filled again from the
/// messages, in one transaction, before anything is appended: `search_rows` says which
/// messages it holds (deleted ones are not there) and under which row.
fn rebuild_search_index(mover: &Connection) -> Result<(), StorageError> {
    let pending: i64 = mover.query_row("SELECT COUNT(*) FROM main.search_rebuild", [], |row| {
        row.get(0)
    })?;
    if pending == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let tx = mover.unchecked_transaction()?;
    let indexed = tx.execute(
        "INSERT INTO main.messages_fts (rowid, text)
         SELECT s.row, search_terms(m.text)
         FROM main.search_rows s JOIN main.messages m ON m.room = s.room AND m.id = s.id
         ORDER BY s.row",
        [],
    )?;
    tx.execute("DELETE FROM main.search_rebuild", [])?;
    tx.commit()?;
    tracing::info!(
        messages = indexed,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "rebuilt the search index"
    );
    Ok(())
}

/// The search index's invariant, which every move keeps: a message has a row in
/// `search_rows` exactly when the index holds it, and then the index holds the terms of
/// its text in `messages` under that row. FTS5 takes terms out only when told which
/// ones (the index keeps no text), so this runs before the move's upsert: every message
/// with a changed version among the rows to move that the index holds has the terms of
/// its text as `messages` still has it taken out. [`index_moved`] puts back what the
/// upsert left. `temp.changed` lists those messages for both; statements join it to
/// `messages` with CROSS JOIN, which keeps it the outer loop (SQLite has no statistics
/// on it and might otherwise scan `messages` once per move).
fn unindex_changed(
    tx: &rusqlite::Transaction<'_>,
    upto: i64,
    changed: bool,
) -> Result<(), StorageError> {
    tx.prepare_cached(
        "CREATE TEMP TABLE IF NOT EXISTS changed (room TEXT, id INTEGER, PRIMARY KEY (room, id))",
    )?
    .execute([])?;
    tx.prepare_cached("DELETE FROM temp.changed")?.execute([])?;
    if !changed {
        // No changed version among the rows: `temp.changed` stays empty.
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT OR IGNORE INTO temp.changed (room, id)
         SELECT room, id FROM recent.message_journal WHERE seq <= ?1 AND rev != id",
    )?
    .execute(params![upto])?;
    tx.prepare_cached(
        "INSERT INTO main.messages_fts (messages_fts, rowid, text)
         SELECT 'delete', m.fts, search_terms(m.text)
         FROM temp.changed c
         CROSS JOIN main.messages m ON m.room = c.room AND m.id = c.id
         CROSS JOIN main.search_rows s ON s.row = m.fts",
    )?
    .execute([])?;
    Ok(())
}

/// Brings the search index in line with the moved messages, after the upsert, in a few
/// statements whatever their number. New messages (rows with `rev = id`) that did not
/// change within this move are indexed straight from their journal rows, under the
/// number the appender gave them (`fts`), unless they are there already (a move done
/// twice after a crash). Messages that changed (`temp.changed`, taken out of the index
/// by [`unindex_changed`]) are indexed again with the text `messages` now holds, their
/// latest (versions only replace lower ones, and the journal's are the newest), unless
/// deleted. So new text is indexed, edited text replaced and deleted text removed, and
/// the common move (new messages only) costs two passes over the journal rows, with no
/// lookups in `messages`.
fn index_moved(tx: &rusqlite::Transaction<'_>, upto: i64) -> Result<(), StorageError> {
    tx.prepare_cached(
        "INSERT INTO main.messages_fts (rowid, text)
         SELECT fts, search_terms(text) FROM recent.message_journal j
         WHERE seq <= ?1 AND rev = id AND fts IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM main.search_rows s WHERE s.row = j.fts)
           AND NOT EXISTS (SELECT 1 FROM temp.changed c WHERE c.room = j.room AND c.id = j.id)",
    )?
    .execute(params![upto])?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO main.search_rows (row, room, id)
         SELECT fts, room, id FROM recent.message_journal j
         WHERE seq <= ?1 AND rev = id AND fts IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM temp.changed c WHERE c.room = j.room AND c.id = j.id)",
    )?
    .execute(params![upto])?;
    for statement in [
        "INSERT INTO main.messages_fts (rowid, text)
         SELECT m.fts, search_terms(m.text)
         FROM temp.changed c CROSS JOIN main.messages m ON m.room = c.room AND m.id = c.id
         WHERE m.fts IS NOT NULL AND m.deleted = 0",
        "INSERT OR REPLACE INTO main.search_rows (row, room, id)
         SELECT m.fts, m.room, m.id
         FROM temp.changed c CROSS JOIN main.messages m ON m.room = c.room AND m.id = c.id
         WHERE m.fts IS NOT NULL AND m.deleted = 0",
        "DELETE FROM main.search_rows WHERE row IN (
             SELECT m.fts
             FROM temp.changed c CROSS JOIN main.messages m ON m.room = c.room AND m.id = c.id
             WHERE m.fts IS NOT NULL AND m.deleted != 0)",
    ] {
        tx.prepare_cached(statement)?.execute([])?;
    }
    Ok(())
}

/// Moves the journal up to each seq it is handed, then tells the appender.
fn run_mover(mover: Connection, orders: mpsc::Receiver<MoveOrder>, moved: mpsc::Sender<Moved>) {
    lower_priority();
    while let Ok(MoveOrder { upto, changed }) = orders.recv() {
        let result = move_rows(&mover, upto, changed).map(|()| upto);
        if moved.send(result).is_err() {
            return;
        }
    }
}

fn run_checkpoints(connection: Connection, stopped: mpsc::Receiver<()>) {
    lower_priority();
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

/// Background work (moving, checkpointing) yields the CPU to the threads a sender waits
/// for (sockets, the appender) when both cores are busy; it still runs whenever a core
/// is free, and the journal's cap (`JOURNAL_CAP`) stops appends before it falls behind
/// without end. Linux sets the nice value of one thread with `setpriority` on its id.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers.
        let failed = unsafe {
            let thread = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, BACKGROUND_NICE) != 0
        };
        if failed {
            tracing::debug!("could not lower a background thread's priority");
        }
    }
}

/// The nice value of the mover and the checkpoint thread.
const BACKGROUND_NICE: libc::c_int = 10;

/// Reads a message from a row of `MESSAGE_COLUMNS`, in that order.
pub fn stored_message(row: &Row<'_>) -> rusqlite::Result<Result<StoredMessage, StorageError>> {
    let reactions: Option<String> = row.get(12)?;
    Ok((|| {
        Ok(StoredMessage {
            room: row.get(0)?,
            id: from_i64(row.get(1)?)?,
            rev: from_i64(row.get(2)?)?,
            author: row.get(3)?,
            owner: Owner(row.get(4)?),
            text: row.get(5)?,
            ts: row.get(6)?,
            client_id: row.get(7)?,
            edited_ts: row.get(8)?,
            edits: row.get(9)?,
            deleted: row.get(10)?,
            reply_to: row.get::<_, Option<i64>>(11)?.map(from_i64).transpose()?,
            reactions: StoredReactions::parse(reactions.as_deref())?,
        })
    })())
}

/// Maps keyed by text clients chose. foldhash is seeded per process, so a client cannot
/// aim keys at one bucket, and costs a fraction of SipHash on the append path, where
/// every change is looked up and recorded in three of them.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A message: room and id.
type MessageKey = (String, u64);

/// The statements a batch runs per change. A batch prepares each one at most once (from
/// the connection's cache) and runs it for every change: a lookup in rusqlite's cache
/// hashes the statement's whole text, which cost a seventh of the appender's time when
/// it was done per change and statement.
#[derive(Clone, Copy)]
enum Sql {
    InsertRow,
    StoredMessage,
    Resent,
    SearchId,
    ForgetText,
    LastInJournal,
    LastInMessages,
    LastInRooms,
}

impl Sql {
    const COUNT: usize = 8;

    fn text(self) -> &'static str {
        match self {
            Sql::InsertRow => &INSERT_ROW,
            Sql::StoredMessage => &STORED_MESSAGE,
            Sql::Resent => {
                "SELECT id FROM main.change_ids WHERE room = ?1 AND owner = ?2 AND client_id = ?3"
            }
            Sql::SearchId => "SELECT fts FROM main.messages WHERE room = ?1 AND id = ?2",
            Sql::ForgetText => {
                "UPDATE recent.message_journal SET text = '', reactions = NULL
                 WHERE room = ?1 AND id = ?2"
            }
            Sql::LastInJournal => "SELECT MAX(rev) FROM recent.message_journal WHERE room = ?1",
            Sql::LastInMessages => "SELECT MAX(rev) FROM main.messages WHERE room = ?1",
            Sql::LastInRooms => "SELECT MAX(last_seq) FROM main.rooms WHERE name = ?1",
        }
    }
}

static INSERT_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO recent.message_journal
             ({MESSAGE_COLUMNS}, change_owner, change_client_id, fts, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    )
});
static STORED_MESSAGE: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {MESSAGE_COLUMNS} FROM main.messages WHERE room = ?1 AND id = ?2")
});
static JOURNAL_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {MESSAGE_COLUMNS}, seq, COALESCE(change_owner, owner),
                COALESCE(change_client_id, client_id), fts, id != rev
         FROM recent.message_journal ORDER BY seq"
    )
});

/// One batch's statements, each prepared on first use.
struct Statements<'c> {
    connection: &'c Connection,
    prepared: [Option<rusqlite::CachedStatement<'c>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    fn new(connection: &'c Connection) -> Self {
        Self {
            connection,
            prepared: Default::default(),
        }
    }

    fn get(&mut self, sql: Sql) -> Result<&mut rusqlite::CachedStatement<'c>, StorageError> {
        let slot = &mut self.prepared[sql as usize];
        if slot.is_none() {
            *slot = Some(self.connection.prepare_cached(sql.text())?);
        }
        Ok(slot.as_mut().expect("prepared just now"))
    }
}

/// `change_ids.owner`: the 16 bytes an owner's hex stands for, or its text for owners
/// that are not hex (older rows, see migrations/0002). The same as SQL's
/// `COALESCE(unhex(owner), CAST(owner AS BLOB))`, which the mover uses.
fn owner_key(owner: &str) -> Vec<u8> {
    fn nibble(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = owner.as_bytes();
    if bytes.len().is_multiple_of(2) {
        let decoded: Option<Vec<u8>> = bytes
            .chunks_exact(2)
            .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
            .collect();
        if let Some(decoded) = decoded {
            return decoded;
        }
    }
    bytes.to_vec()
}

struct Journal {
    connection: Connection,
    /// What the journal holds, as the appender keeps it in memory.
    state: State,
    /// Whether `state` may not match the journal: a batch failed, and reading the journal
    /// back failed too. The next batch reads it first.
    stale: bool,
    /// Whether the mover is at work.
    moving: bool,
    /// The journal rows up to this seq were moved and deleted.
    forgotten_upto: i64,
    moves: mpsc::Sender<MoveOrder>,
    /// Dropped with the appender thread, which stops the checkpoint thread.
    _stop_checkpoints: mpsc::Sender<()>,
}

/// The latest journal version of a message.
struct Latest {
    /// The seq of its row.
    seq: i64,
    /// Its row in the search index. Once a message has one it keeps it through edits and
    /// its delete (the mover takes its text out of the index).
    fts: Option<i64>,
    message: StoredMessage,
}

/// What the appender knows of the journal's rows, so that checking and numbering a change
/// reads nothing it wrote itself. It always matches the committed journal: a batch
/// records into it as it goes, and a batch that fails has it read back from the journal
/// ([`State::load`]), which its rollback left as it was.
#[derive(Default)]
struct State {
    /// Change ids of the journal's rows, with their seq: spotting a resend needs no index
    /// on the journal (an index would bring back a dirty page per room).
    change_ids: Map<ChangeKey, (i64, u64)>,
    /// Every message the journal has a version of.
    latest: Map<MessageKey, Latest>,
    /// The next row of the search index to give a new message: in the order messages
    /// arrive, so a search's newest-first order is the index's own.
    next_fts: i64,
    /// The last number given out per room (read from the database for a room not here).
    seqs: Map<String, u64>,
    /// Rows in the journal.
    rows: usize,
    /// The highest seq given. The next row gets the one after it, also once every row
    /// before was moved and deleted (see [`journal_schema`]).
    last_row: i64,
    /// The highest seq of a row that is a changed version (`rev != id`), 0 for none.
    last_changed_row: i64,
}

impl Journal {
    fn run(mut self, jobs: mpsc::Receiver<Job>, moved: mpsc::Receiver<Moved>) {
        loop {
            if self.moving && self.state.rows >= JOURNAL_CAP {
                match moved.recv() {
                    Ok(result) => self.finish_move(result),
                    Err(mpsc::RecvError) => return,
                }
            }
            while let Ok(result) = moved.try_recv() {
                self.finish_move(result);
            }
            let job = if self.state.rows == 0 && !self.moving {
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
            let _ = job.reply.send(self.append(job.changes));
            if self.state.rows >= MOVE_AT_ROWS {
                self.start_move();
            }
        }
    }

    fn finish_move(&mut self, result: Moved) {
        self.moving = false;
        match result {
            // A failed delete leaves rows in both tables, which reads allow for; the next
            // move's delete takes them.
            Ok(upto) => match self.forget_moved(upto) {
                Ok(()) => self.forgotten_upto = self.forgotten_upto.max(upto),
                Err(err) => tracing::error!("deleting moved rows from the journal failed: {err}"),
            },
            // Nothing is lost: the rows stay in the journal, where reads find them, and
            // the next move takes them too.
            Err(err) => tracing::error!("moving the message journal into messages failed: {err}"),
        }
    }

    fn start_move(&mut self) {
        let order = MoveOrder {
            upto: self.state.last_row,
            changed: self.state.last_changed_row > self.forgotten_upto,
        };
        if !self.moving && self.state.rows > 0 && self.moves.send(order).is_ok() {
            self.moving = true;
        }
    }

    fn forget_moved(&mut self, upto: i64) -> Result<(), StorageError> {
        let deleted = self.connection.execute(
            "DELETE FROM recent.message_journal WHERE seq <= ?1",
            params![upto],
        )?;
        let state = &mut self.state;
        state.rows = state.rows.saturating_sub(deleted);
        state.change_ids.retain(|_, (seq, _)| *seq > upto);
        state.latest.retain(|_, latest| latest.seq > upto);
        if state.seqs.len() > REMEMBERED_ROOMS {
            state.seqs.clear();
        }
        Ok(())
    }

    fn append(&mut self, changes: Vec<Change>) -> Result<Vec<Applied>, StorageError> {
        if self.stale {
            self.state = State::load(&self.connection)?;
            self.stale = false;
        }
        let result = self.append_in_one_transaction(changes);
        if result.is_err() {
            // The transaction rolled back: what the batch recorded in memory goes too.
            match State::load(&self.connection) {
                Ok(state) => self.state = state,
                Err(err) => {
                    tracing::error!("reading the journal back after a failed batch failed: {err}");
                    self.stale = true;
                }
            }
        }
        result
    }

    fn append_in_one_transaction(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<Vec<Applied>, StorageError> {
        // Deferred: the transaction writes only the journal, so it locks only the journal.
        let tx = self.connection.unchecked_transaction()?;
        let mut results = Vec::with_capacity(changes.len());
        {
            let mut statements = Statements::new(&tx);
            for change in changes {
                results.push(self.state.apply(&mut statements, change)?);
            }
        }
        tx.commit()?;
        Ok(results)
    }
}

impl State {
    /// What the journal holds, read from it: at start, and after a batch failed.
    fn load(connection: &Connection) -> Result<Self, StorageError> {
        let mut state = State {
            // New messages get search rows after every row the index has, or messages
            // or the journal name.
            next_fts: connection.query_row(
                "SELECT MAX(COALESCE((SELECT MAX(row) FROM main.search_rows), 0),
                            COALESCE((SELECT MAX(fts) FROM main.messages), 0),
                            COALESCE((SELECT MAX(fts) FROM recent.message_journal), 0)) + 1",
                [],
                |row| row.get(0),
            )?,
            ..State::default()
        };
        let mut rows = connection.prepare(&JOURNAL_ROWS)?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let message = stored_message(row)??;
            let seq: i64 = row.get(13)?;
            let key = (message.room.clone(), row.get(14)?, row.get(15)?);
            state.change_ids.insert(key, (seq, message.id));
            state.rows += 1;
            state.last_row = seq;
            if row.get::<_, bool>(17)? {
                state.last_changed_row = seq;
            }
            // In seq order: a message's last row is its latest version.
            let fts = row.get(16)?;
            state.latest.insert(
                (message.room.clone(), message.id),
                Latest { seq, fts, message },
            );
        }
        Ok(state)
    }

    fn apply(&mut self, tx: &mut Statements<'_>, change: Change) -> Result<Applied, StorageError> {
        let key = (
            change.room.clone(),
            change.owner.0.clone(),
            change.client_id.clone(),
        );
        if let Some(id) = self.resent(tx, &key)? {
            let current = self.current(tx, &change.room, id)?;
            return Ok(match current {
                Some(message) => Applied::Duplicate(self.public(tx, &message)?),
                // The message it touched is gone from storage: cannot happen, as nothing
                // is ever removed, but a resend must never be applied twice.
                None => Applied::Refused(crate::storage::ChangeRefusal::NotFound),
            });
        }
        let (message, fts) = match change.kind {
            ChangeKind::Post { text, reply_to } => {
                if let Some(original) = reply_to {
                    match self.current(tx, &change.room, original)? {
                        None => {
                            return Ok(Applied::Refused(crate::storage::ChangeRefusal::NotFound))
                        }
                        Some(original) if original.deleted => {
                            return Ok(Applied::Refused(crate::storage::ChangeRefusal::Gone))
                        }
                        Some(_) => {}
                    }
                }
                let seq = self.next_seq(tx, &change.room)?;
                let fts = self.next_fts;
                self.next_fts += 1;
                let message = StoredMessage {
                    id: seq,
                    rev: seq,
                    room: change.room,
                    author: change.author,
                    owner: change.owner,
                    text,
                    ts: change.ts,
                    client_id: change.client_id,
                    edited_ts: None,
                    deleted: false,
                    reply_to,
                    reactions: StoredReactions::default(),
                    edits: 0,
                };
                (message, Some(fts))
            }
            ref other => {
                let id = other.target().unwrap_or_default();
                let Some(mut message) = self.current(tx, &change.room, id)? else {
                    return Ok(Applied::Refused(crate::storage::ChangeRefusal::NotFound));
                };
                match message.apply(&change) {
                    Err(refusal) => return Ok(Applied::Refused(refusal)),
                    Ok(false) => return Ok(Applied::Unchanged(self.public(tx, &message)?)),
                    Ok(true) => {}
                }
                message.rev = self.next_seq(tx, &change.room)?;
                if message.deleted {
                    // The text of earlier versions still waiting in the journal goes too.
                    tx.get(Sql::ForgetText)?
                        .execute(params![message.room, to_i64(message.id)])?;
                }
                let fts = self.search_id(tx, &message.room, message.id)?;
                (message, fts)
            }
        };
        // Who made the change, where it is not the message's own owner and client_id.
        let change_owner = (key.1 != message.owner.0).then_some(key.1.as_str());
        let change_client_id = (key.2 != message.client_id).then_some(key.2.as_str());
        let seq = self.last_row + 1;
        tx.get(Sql::InsertRow)?.execute(params![
            message.room,
            to_i64(message.id),
            to_i64(message.rev),
            message.author,
            message.owner.0,
            message.text,
            message.ts,
            message.client_id,
            message.edited_ts,
            message.edits,
            message.deleted,
            message.reply_to.map(to_i64),
            message.reactions.to_json(),
            change_owner,
            change_client_id,
            fts,
            seq,
        ])?;
        self.rows += 1;
        self.last_row = seq;
        if message.rev != message.id {
            self.last_changed_row = seq;
        }
        self.change_ids.insert(key, (seq, message.id));
        let public = self.public(tx, &message)?;
        self.latest.insert(
            (message.room.clone(), message.id),
            Latest { seq, fts, message },
        );
        Ok(Applied::Stored(public))
    }

    /// The row a message has in the search index.
    fn search_id(
        &self,
        tx: &mut Statements<'_>,
        room: &str,
        id: u64,
    ) -> Result<Option<i64>, StorageError> {
        if let Some(latest) = self.latest.get(&(room.to_owned(), id)) {
            return Ok(latest.fts);
        }
        let fts: Option<Option<i64>> = tx
            .get(Sql::SearchId)?
            .query_row(params![room, to_i64(id)], |row| row.get(0))
            .optional()?;
        Ok(fts.flatten())
    }

    /// The message a change with this key touched, if the change was made before.
    fn resent(
        &self,
        tx: &mut Statements<'_>,
        key: &ChangeKey,
    ) -> Result<Option<u64>, StorageError> {
        if let Some((_, id)) = self.change_ids.get(key) {
            return Ok(Some(*id));
        }
        let id: Option<i64> = tx
            .get(Sql::Resent)?
            .query_row(params![key.0, owner_key(&key.1), key.2], |row| row.get(0))
            .optional()?;
        id.map(from_i64).transpose()
    }

    /// A message as it is now: its latest journal version, or the stored one.
    fn current(
        &self,
        tx: &mut Statements<'_>,
        room: &str,
        id: u64,
    ) -> Result<Option<StoredMessage>, StorageError> {
        if let Some(latest) = self.latest.get(&(room.to_owned(), id)) {
            return Ok(Some(latest.message.clone()));
        }
        let found = tx
            .get(Sql::StoredMessage)?
            .query_row(params![room, to_i64(id)], stored_message)
            .optional()?;
        found.transpose()
    }

    /// The wire form, with its reply preview.
    fn public(
        &self,
        tx: &mut Statements<'_>,
        message: &StoredMessage,
    ) -> Result<Message, StorageError> {
        let mut public = message.public();
        if let Some(original) = message.reply_to {
            public.reply_to = self
                .current(tx, &message.room, original)?
                .map(|original| preview(&original));
        }
        Ok(public)
    }

    /// The next number of a room's sequence.
    fn next_seq(&mut self, tx: &mut Statements<'_>, room: &str) -> Result<u64, StorageError> {
        let last = match self.seqs.get(room) {
            Some(last) => *last,
            None => {
                let mut last = 0;
                for query in [Sql::LastInJournal, Sql::LastInMessages, Sql::LastInRooms] {
                    let found: Option<i64> =
                        tx.get(query)?.query_row(params![room], |row| row.get(0))?;
                    last = last.max(found.map(from_i64).transpose()?.unwrap_or(0));
                }
                last
            }
        };
        let next = last + 1;
        match self.seqs.get_mut(room) {
            Some(seq) => *seq = next,
            None => {
                self.seqs.insert(room.to_owned(), next);
            }
        }
        Ok(next)
    }
}

/// The one-line quote a reply shows of `original`.
pub fn preview(original: &StoredMessage) -> ReplyPreview {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_keys_are_what_the_mover_stores() {
        // The appender looks resends up by `owner_key`; the mover stores
        // `COALESCE(unhex(..), CAST(.. AS BLOB))`. They must agree on every owner.
        let connection = Connection::open_in_memory().unwrap();
        for owner in [
            "00ff10aa5c5c5c5c00ff10aa5c5c5c5c",
            "00FF10AA",
            "",
            "name:alice",
            "abc",
            "zz",
            "0g",
        ] {
            let stored: Vec<u8> = connection
                .query_row(
                    "SELECT COALESCE(unhex(?1), CAST(?1 AS BLOB))",
                    params![owner],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(owner_key(owner), stored, "{owner:?}");
        }
    }
}
