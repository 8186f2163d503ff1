//! The chat layer: everything the page does for one room, as a state machine without I/O.
//!
//! **Why.** The page's promises (nothing you send is lost or stored twice, the log has no
//! gap and no duplicate after any reconnect, the server is never flooded) live in the
//! interplay of the outbox, the join and catch-up sequence, acks, timers and backoff.
//! Here they are plain code, driven by simulated time in native unit tests
//! (`client/tests.rs`); the browser shell (`client/browser.rs`) only moves bytes, timers
//! and localStorage values in and out.
//!
//! **Driving it.** Inputs carry the wall-clock time in milliseconds (`Date.now()`):
//! [`Chat::handle_action`] (what the person did), [`Chat::handle_frame`] and
//! [`Chat::handle_closed`] (the WebSocket of connection `conn`), [`Chat::handle_timeout`]
//! (once [`Chat::poll_timeout`]'s delay has passed). After each, perform every
//! [`Effect`] from [`Chat::poll_effect`] in order, and copy what [`Chat::take_dirty`] names
//! from [`Chat::view`] and [`Chat::lines`] into the page. Randomness (client ids, jitter)
//! comes from the seed given to [`Chat::new`]; the core calls no clock and no RNG.
//!
//! **Guaranteed.**
//! - The outbox sends one change at a time, in order, each with its `client_id`, only
//!   while joined and caught up; an item whose ack is lost (timeout, disconnect,
//!   `unavailable`) is resent unchanged, first. `rate_limited` waits exactly
//!   `retry_after_ms`, then resends the same item first. The outbox is written to storage
//!   exactly when it changes.
//! - `since` on a rejoin is the highest sequence number up to which this page holds
//!   everything: join replies and the live stream (gapless from the join on) raise it;
//!   while a truncated catch-up pages, it is the last id of the last page, whatever
//!   arrives live meanwhile; acks of our own changes never raise it (those are resent
//!   if lost). `updates` replace what is held by `rev`; `reset` starts the room over.
//! - Automatic rejoins say `resume: true` when this page was in the room before.
//! - Time: the core keeps its own monotonic clock from the wall-clock times it is given.
//!   Time going backwards counts as no time; a leap forward fires each due timer once
//!   (no timer catches up in a loop, so no burst of sends).
//! - Reconnecting: a first retry within 100–600 ms; then every 0.5–1 s while the outage
//!   is younger than 30 s (a restarted server gets its clients back within a second);
//!   then exponential with jitter up to 15 s. A refused CONNECT (`44`, the server is full
//!   or this address has too many connections) backs off from 2 s to 30 s at once.
//!   [`Action::RetryNow`], and the tab becoming visible, try at once.
//!
//! **Not guaranteed.** The core assumes one page per room: two tabs of one room each
//! keep their own outbox under the same storage key (the later write wins). Unread
//! counts from `activity` may undercount when a notice says `more`. Presence shows who
//! the server last said was online, also while this page is offline
//! ([`View::connection`] says so).

use serde_json::Value;

use crate::client::log::{Line, LineKind, Log, Merged};
use crate::client::outbox::{Change, Item, Outbox, Outgoing};
use crate::client::session::{
    self, decode_ack, AckFailure, Millis, Request, ServerEvent, Session, SessionEvent,
};
use crate::protocol::{
    ActivityNotice, EmptyReply, ErrorCode, HistoryReply, HistoryRequest, JoinReply, JoinRequest,
    LeaveRequest, Message, PresenceNotice, ProtocolError, RoomInfo, RoomsReply, RoomsRequest,
    SearchReply, SearchRequest, SendReply, TypingRequest, WatchReply, WatchRequest, WatchedRoom,
    JOIN_HISTORY, MAX_COUNTED_UNREAD, MAX_REPLY_BYTES, MAX_WATCHED_ROOMS, PROTOCOL_VERSION,
    TYPING_TTL_MS,
};

/// localStorage keys.
pub mod keys {
    /// The name the person joined with, to rejoin after a reload.
    pub const NAME: &str = "banter.name";
    /// The session token that owns the name on the server.
    pub const SESSION: &str = "banter.session";
    /// Prefix of a room's outbox (`banter.outbox.<room>`).
    pub const OUTBOX: &str = "banter.outbox.";
    /// The rooms this person joined, most recent first, with the newest id read in each
    /// (`[{"room","read"}]`, a `watch` request's shape).
    pub const ROOMS: &str = "banter.rooms";
    /// Earlier pages' map of room to newest id read; read once if `ROOMS` is absent.
    pub const OLD_READ: &str = "banter.read";
}

/// How long a request waits for its ack before the connection counts as broken.
pub const ACK_TIMEOUT_MS: Millis = 10_000;
/// How often the room list (online counts) is refreshed while joined.
pub const ROOMS_REFRESH_MS: Millis = 10_000;
/// Typing stops counting this long after the last keystroke.
pub const TYPING_IDLE_MS: Millis = 3_000;
/// A typing indicator is refreshed this often while the person keeps typing.
pub const TYPING_REFRESH_MS: Millis = 2_000;
/// Someone else's typing indicator is dropped this long after its last refresh, should
/// the server's `typing: false` never come.
pub const TYPING_SHOWN_MS: Millis = TYPING_TTL_MS + 1_000;
/// Read marks are written to storage at most this often.
pub const READ_FLUSH_MS: Millis = 2_000;
/// A rejoin can find the name still held by this page's previous connection; it is
/// retried this many times, this far apart, before the person is asked for a name.
pub const REJOIN_ATTEMPTS: u32 = 12;
pub const REJOIN_DELAY_MS: Millis = 3_000;
/// Delivered messages the log keeps while new ones arrive: older ones leave the page
/// (and come back as history on scrolling up), so a busy room's page stays light.
pub const MAX_SHOWN_MESSAGES: usize = 400;
/// How many joined rooms are remembered.
pub const REMEMBERED_ROOMS: usize = 64;

#[derive(Debug, Clone)]
pub struct Config {
    pub room: String,
    /// The protocol asked for at CONNECT (2: batched `presence`).
    pub protocol: u32,
    /// Whether the page is visible to start with.
    pub visible: bool,
    pub ack_timeout_ms: Millis,
    /// A message to open the room at (`/r/<room>?at=<id>`, a search result's link): it is
    /// loaded with its neighbours once joined, scrolled to and flashed.
    pub open_at: Option<u64>,
}

impl Config {
    pub fn new(room: impl Into<String>) -> Self {
        Config {
            room: room.into(),
            protocol: PROTOCOL_VERSION,
            visible: true,
            ack_timeout_ms: ACK_TIMEOUT_MS,
            open_at: None,
        }
    }
}

/// Something the person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Join(String),
    Send(String),
    /// A new message answering message `to`.
    Reply {
        to: u64,
        text: String,
    },
    Edit {
        id: u64,
        text: String,
    },
    Delete(u64),
    React {
        id: u64,
        emoji: String,
        add: bool,
    },
    /// Try the refused send or changes of this log line again.
    Retry(u64),
    /// Drop the refused send or changes of this log line.
    Discard(u64),
    Typing(bool),
    Leave,
    /// The page of history before the oldest message shown.
    LoadOlder,
    /// Show message `id` with its neighbours (a reply's original, a search result).
    LoadAround(u64),
    /// Load the messages missing just below message `id` (a line with `gap_before`).
    FillGap(u64),
    Search {
        query: String,
        room: Option<String>,
    },
    SearchMore,
    ClearSearch,
    /// Reconnect now instead of waiting for the backoff.
    RetryNow,
    /// The page became visible or hidden.
    SetVisible(bool),
}

/// Something for the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a WebSocket to `/socket.io/?EIO=4&transport=websocket`; report its frames and
    /// its end under `conn`.
    Connect {
        conn: u64,
    },
    Send {
        conn: u64,
        frame: String,
    },
    Close {
        conn: u64,
    },
    /// Write (or, with `None`, remove) a storage key.
    Store {
        key: String,
        value: Option<String>,
    },
    /// Something worth a line in the console.
    Log(String),
    /// Show a desktop notification, if the person allowed them: a message mentioning
    /// them arrived while the page was hidden. `tag` is the message's room and id.
    Notify {
        title: String,
        body: String,
        tag: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Before the first connection.
    Connecting,
    Online,
    /// Lost, reconnecting.
    Offline,
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Online => "online",
            Connection::Offline => "offline",
        }
    }
}

/// A room in the sidebar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEntry {
    pub name: String,
    pub online: usize,
    pub last_id: u64,
    pub last_ts: Option<i64>,
    /// Messages not read; counted only for rooms this person joined.
    pub unread: u32,
    /// Of those, the ones mentioning this person.
    pub mentions: u32,
    pub joined: bool,
    pub current: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchView {
    pub query: String,
    pub room: Option<String>,
    /// Newest first.
    pub results: Vec<Message>,
    pub more: bool,
    pub loading: bool,
    pub error: Option<String>,
}

/// What the page shows, besides the log lines ([`Chat::lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub room: String,
    pub connection: Connection,
    /// The name this page is joined under, once the server accepted it.
    pub me: Option<String>,
    /// This page joins by itself, under the name of an earlier visit, and was not refused
    /// since: the room can be drawn before the join completes. Part of [`Dirty::ME`].
    pub returning: bool,
    pub joining: bool,
    pub join_error: Option<String>,
    pub members: Vec<String>,
    /// How many are online in this room (`members` lists at most 500).
    pub online: usize,
    pub typing: Vec<String>,
    /// Whether the server may hold messages older than the oldest one shown.
    pub older_available: bool,
    pub loading_older: bool,
    pub rooms: Vec<RoomEntry>,
    /// Unread messages over the joined rooms (this one too while the page is hidden).
    pub unread_total: u32,
    pub mentions_total: u32,
    /// While the server asked us to slow down: seconds until sending resumes.
    pub throttled: Option<u64>,
    /// While reconnecting: seconds until the next attempt.
    pub reconnect_in: Option<u64>,
    pub search: SearchView,
    /// The message to scroll to (after [`Action::LoadAround`]).
    pub focus: Option<u64>,
    pub visible: bool,
    /// The room's read mark when this page first joined it: messages after it arrived
    /// while the reader was away, and the log draws a "new since you left" line above the
    /// first of them by someone else. `None` in a room the reader never joined before.
    /// Part of [`Dirty::LINES`].
    pub new_since: Option<u64>,
}

/// Which parts of the view changed since the last [`Chat::take_dirty`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirty(u32);

impl Dirty {
    pub const CONNECTION: Dirty = Dirty(1);
    /// `me`, `returning`, `joining`, `join_error`.
    pub const ME: Dirty = Dirty(1 << 1);
    /// `members`, `online`.
    pub const MEMBERS: Dirty = Dirty(1 << 2);
    pub const LINES: Dirty = Dirty(1 << 3);
    pub const TYPING: Dirty = Dirty(1 << 4);
    /// `older_available`, `loading_older`.
    pub const HISTORY: Dirty = Dirty(1 << 5);
    /// `rooms`, `unread_total`, `mentions_total`.
    pub const ROOMS: Dirty = Dirty(1 << 6);
    pub const THROTTLED: Dirty = Dirty(1 << 7);
    pub const RECONNECT: Dirty = Dirty(1 << 8);
    pub const SEARCH: Dirty = Dirty(1 << 9);
    pub const FOCUS: Dirty = Dirty(1 << 10);
    pub const ALL: Dirty = Dirty(u32::MAX);

    pub fn contains(self, other: Dirty) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Dirty {
    type Output = Dirty;
    fn bitor(self, other: Dirty) -> Dirty {
        Dirty(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Dirty {
    fn bitor_assign(&mut self, other: Dirty) {
        self.0 |= other.0;
    }
}

/// The typing line under the log, e.g. "bob is typing…".
pub fn typing_text(names: &[String]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("{one} is typing…")),
        [one, two] => Some(format!("{one} and {two} are typing…")),
        [one, two, rest @ ..] => Some(format!("{one}, {two} and {} more are typing…", rest.len())),
    }
}

/// A small map as a vector: these hold a handful of entries, and a hash map's code for
/// each key and value type would cost the wasm more than the linear search costs time.
#[derive(Debug, Clone)]
struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: PartialEq, V> VecMap<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.0
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: PartialEq + ?Sized,
    {
        self.0
            .iter_mut()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(index).1)
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl<K: PartialEq, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = VecMap::default();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

/// A monotonic clock made from wall-clock readings.
#[derive(Debug, Clone, Default)]
struct Clock {
    mono: Millis,
    last_wall: Option<i64>,
}

impl Clock {
    fn advance(&mut self, wall: i64) -> Millis {
        if let Some(last) = self.last_wall {
            if wall > last {
                self.mono = self.mono.saturating_add((wall - last) as u64);
            }
        }
        self.last_wall = Some(wall);
        self.mono
    }
}

/// splitmix64: deterministic, seeded by the shell.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// Reconnect delays; see the module documentation.
#[derive(Debug, Clone, Default)]
struct Backoff {
    attempt: u32,
    outage_since: Option<Millis>,
    slow: u32,
}

/// How long the quick, about-once-a-second retries go on.
const QUICK_RETRIES_MS: Millis = 30_000;

impl Backoff {
    fn reset(&mut self) {
        *self = Backoff::default();
    }

    fn next(&mut self, now: Millis, rng: &mut Rng, refused: bool) -> Millis {
        let since = *self.outage_since.get_or_insert(now);
        let attempt = self.attempt;
        self.attempt += 1;
        let (low, high) = if refused {
            let high = (2_000u64 << attempt.min(4)).min(30_000);
            (high / 2, high)
        } else if attempt == 0 {
            (100, 600)
        } else if now.saturating_sub(since) < QUICK_RETRIES_MS {
            (500, 1_000)
        } else {
            let high = (2_000u64 << self.slow.min(3)).min(15_000);
            self.slow += 1;
            (high / 2, high)
        };
        rng.between(low, high)
    }
}

enum Link {
    /// Not connected; the next attempt is due at `retry_at`.
    Down {
        retry_at: Millis,
    },
    Up {
        conn: u64,
        session: Box<Session>,
    },
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinKind {
    /// The person typed a name.
    Manual,
    /// The page rejoins by itself (after a reload, a reconnect, `not_joined`).
    Auto,
    /// The next page of a truncated catch-up.
    Page,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    Out,
    Joining,
    /// A truncated catch-up is paging.
    CatchingUp,
    Joined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryWant {
    Older,
    Gap(u64),
    Around(u64),
}

#[derive(Debug, Clone)]
enum Awaiting {
    Join(JoinKind, Option<u64>),
    Item(String),
    Leave,
    History(HistoryWant),
    Rooms,
    Watch,
    Search(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PresenceChange {
    Arrived(String),
    Departed(String),
}

/// A watched room's counts, from the `watch` reply and `activity` events.
#[derive(Debug, Clone, Default)]
struct Counts {
    unread: u32,
    mentions: u32,
    last_id: u64,
    last_ts: Option<i64>,
    online: usize,
}

/// One room's chat page, without I/O; see the module documentation.
pub struct Chat {
    config: Config,
    clock: Clock,
    now: Millis,
    wall: i64,
    rng: Rng,
    effects: std::collections::VecDeque<Effect>,
    dirty: Dirty,
    view: View,
    log: Log,
    outbox: Outbox,

    link: Link,
    next_conn: u64,
    backoff: Backoff,
    awaiting: VecMap<u64, Awaiting>,

    // Identity and membership.
    wanted_name: Option<String>,
    stored_name: Option<String>,
    token: Option<String>,
    manual_join: bool,
    membership: Membership,
    was_in_room: bool,
    rejoin_at: Option<(Millis, JoinKind)>,
    rejoin_failures: u32,
    presence_log: Option<Vec<PresenceChange>>,

    // Sequence tracking.
    held: Option<u64>,
    live_max: u64,
    page_since: Option<u64>,

    // Outbox.
    in_flight: Option<String>,
    paused_until: Option<Millis>,
    /// The pause is the server's `rate_limited` wait (shown), not an `unavailable` one.
    pause_rate_limited: bool,
    unavailable: u32,

    // Typing.
    typing_sent: Option<Millis>,
    typing_idle_at: Option<Millis>,
    typists: Vec<(String, Millis)>,

    // Rooms, read marks and counts.
    room_list: Vec<RoomInfo>,
    rooms_refresh_at: Option<Millis>,
    joined_rooms: Vec<WatchedRoom>,
    /// Whether `view.new_since` was taken, at this page's first join of the room.
    new_since_taken: bool,
    rooms_flush_at: Option<Millis>,
    watch_supported: Option<bool>,
    watch_retry_at: Option<Millis>,
    counts: VecMap<String, Counts>,

    // History and search.
    history_in_flight: Vec<HistoryWant>,
    around_wanted: Option<u64>,
    history_retry_at: Option<Millis>,
    search_generation: u64,
    search_wanted: Option<SearchRequest>,
    search_in_flight: bool,
    search_retry_at: Option<Millis>,
    search_next: Option<String>,
    countdown_at: Option<Millis>,
}

fn outbox_key(room: &str) -> String {
    format!("{}{room}", keys::OUTBOX)
}

fn load_rooms(stored: &dyn Fn(&str) -> Option<String>) -> Vec<WatchedRoom> {
    if let Some(rooms) = stored(keys::ROOMS).and_then(|json| serde_json::from_str(&json).ok()) {
        return rooms;
    }
    let old: Option<Value> =
        stored(keys::OLD_READ).and_then(|json| serde_json::from_str(&json).ok());
    let mut rooms: Vec<WatchedRoom> = old
        .as_ref()
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(room, read)| WatchedRoom {
            room: room.clone(),
            read: read.as_u64().unwrap_or(0),
        })
        .collect();
    rooms.sort_by(|a, b| b.read.cmp(&a.read).then(a.room.cmp(&b.room)));
    rooms
}

impl Chat {
    /// A page for `config.room`, with what the shell read from storage (`stored`), and
    /// a random `seed`. Asks at once to connect.
    pub fn new(
        config: Config,
        stored: &dyn Fn(&str) -> Option<String>,
        now: i64,
        seed: u64,
    ) -> Self {
        let room = config.room.clone();
        let outbox = Outbox::from_json(stored(&outbox_key(&room)).as_deref());
        let mut log = Log::default();
        for item in outbox.items() {
            if matches!(item.change, Change::Send { .. }) {
                log.push_pending(item);
            }
        }
        let wanted_name = stored(keys::NAME).filter(|name| !name.is_empty());
        let open_at = config.open_at;
        let mut clock = Clock::default();
        let mono = clock.advance(now);
        let view = View {
            room: room.clone(),
            connection: Connection::Connecting,
            me: None,
            returning: wanted_name.is_some(),
            joining: wanted_name.is_some(),
            join_error: None,
            members: Vec::new(),
            online: 0,
            typing: Vec::new(),
            older_available: false,
            loading_older: false,
            rooms: Vec::new(),
            unread_total: 0,
            mentions_total: 0,
            throttled: None,
            reconnect_in: None,
            search: SearchView::default(),
            focus: None,
            visible: config.visible,
            new_since: None,
        };
        let mut chat = Chat {
            config,
            clock,
            now: mono,
            wall: now,
            rng: Rng(seed),
            effects: Default::default(),
            dirty: Dirty::ALL,
            view,
            log,
            outbox,
            link: Link::Down { retry_at: mono },
            next_conn: 0,
            backoff: Backoff::default(),
            awaiting: VecMap::default(),
            stored_name: wanted_name.clone(),
            wanted_name,
            token: stored(keys::SESSION).filter(|token| !token.is_empty()),
            manual_join: false,
            membership: Membership::Out,
            was_in_room: false,
            rejoin_at: None,
            rejoin_failures: 0,
            presence_log: None,
            held: None,
            live_max: 0,
            page_since: None,
            in_flight: None,
            paused_until: None,
            pause_rate_limited: false,
            unavailable: 0,
            typing_sent: None,
            typing_idle_at: None,
            typists: Vec::new(),
            room_list: Vec::new(),
            rooms_refresh_at: None,
            joined_rooms: load_rooms(stored),
            new_since_taken: false,
            rooms_flush_at: None,
            watch_supported: None,
            watch_retry_at: None,
            counts: VecMap::default(),
            history_in_flight: Vec::new(),
            around_wanted: open_at,
            history_retry_at: None,
            search_generation: 0,
            search_wanted: None,
            search_in_flight: false,
            search_retry_at: None,
            search_next: None,
            countdown_at: None,
        };
        chat.connect_now();
        chat.drive();
        chat
    }

    // ----- Outputs -----------------------------------------------------------------

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn lines(&self) -> &[Line] {
        self.log.lines()
    }

    /// The parts of the view changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// The outbox, in order (for tests and diagnostics).
    pub fn outbox(&self) -> &[Item] {
        self.outbox.items()
    }

    /// The `since` the next automatic rejoin would send.
    pub fn since(&self) -> Option<u64> {
        self.held
    }

    /// Milliseconds from the last input until [`Chat::handle_timeout`] is due: ask after
    /// every input and (re)arm one timer with it.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let session = match &self.link {
            Link::Up { session, .. } => session.poll_timeout(),
            Link::Down { retry_at } => Some(*retry_at),
            Link::Stopped => return None,
        };
        let incoming_typing = self.typists.iter().map(|(_, at)| *at).min();
        [
            session,
            self.paused_until,
            self.rejoin_at.map(|(at, _)| at),
            self.typing_idle_at,
            incoming_typing,
            self.rooms_refresh_at,
            self.rooms_flush_at,
            self.watch_retry_at,
            self.history_retry_at,
            self.search_retry_at,
            self.countdown_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_sub(self.now))
    }

    // ----- Inputs ------------------------------------------------------------------

    fn tick(&mut self, wall: i64) {
        self.now = self.clock.advance(wall);
        self.wall = wall;
    }

    pub fn handle_frame(&mut self, now: i64, conn: u64, frame: &str) {
        self.tick(now);
        if let Link::Up {
            conn: current,
            session,
        } = &mut self.link
        {
            if *current == conn {
                session.handle_frame(self.now, frame);
            }
        }
        self.drive();
        self.update_countdowns();
    }

    /// The WebSocket of `conn` closed, or failed to open.
    pub fn handle_closed(&mut self, now: i64, conn: u64, reason: &str) {
        self.tick(now);
        if let Link::Up {
            conn: current,
            session,
        } = &mut self.link
        {
            if *current == conn {
                session.handle_transport_closed(reason);
            }
        }
        self.drive();
        self.update_countdowns();
    }

    pub fn handle_timeout(&mut self, now: i64) {
        self.tick(now);
        let now = self.now;
        let due = |at: Option<Millis>| at.is_some_and(|at| at <= now);
        let retry = matches!(self.link, Link::Down { retry_at } if retry_at <= now);
        if retry {
            self.connect_now();
        } else if let Link::Up { session, .. } = &mut self.link {
            session.handle_timeout(now);
        }
        self.drive();
        if due(self.paused_until) {
            self.paused_until = None;
            self.pump();
        }
        if let Some((at, kind)) = self.rejoin_at {
            if at <= now {
                self.rejoin_at = None;
                if self.wanted_name.is_some() && self.connected() {
                    self.send_join(kind);
                }
            }
        }
        if due(self.typing_idle_at) {
            self.stop_typing();
        }
        let before = self.typists.len();
        self.typists.retain(|(_, at)| *at > now);
        if self.typists.len() != before {
            self.typing_changed();
        }
        if due(self.rooms_refresh_at) {
            self.rooms_refresh_at = None;
            self.refresh_rooms();
        }
        if due(self.rooms_flush_at) {
            self.flush_rooms();
        }
        if due(self.watch_retry_at) {
            self.watch_retry_at = None;
            self.send_watch();
        }
        if due(self.history_retry_at) {
            self.history_retry_at = None;
            self.send_history_wants();
        }
        if due(self.search_retry_at) {
            self.search_retry_at = None;
            self.send_search();
        }
        self.drive();
        self.update_countdowns();
    }

    /// Writes what is waiting to be written (the page is going away or being hidden).
    pub fn flush(&mut self, now: i64) {
        self.tick(now);
        self.flush_rooms();
    }

    /// The page goes away: write what is pending and close the connection.
    pub fn stop(&mut self, now: i64) {
        self.flush(now);
        if let Link::Up { conn, .. } = &self.link {
            self.effects.push_back(Effect::Close { conn: *conn });
        }
        self.link = Link::Stopped;
    }

    pub fn handle_action(&mut self, now: i64, action: Action) {
        self.tick(now);
        match action {
            Action::Join(name) => self.join(name),
            Action::Send(text) => self.queue_send(text, None),
            Action::Reply { to, text } => self.queue_send(text, Some(to)),
            Action::Edit { id, text } => {
                let Ok(text) = crate::protocol::validate_text(&text) else {
                    return;
                };
                let current = self.log.message(id);
                if current.is_some_and(|m| self.is_mine(m) && !m.deleted && m.text != text) {
                    self.queue_change(Change::Edit { id, text });
                }
            }
            Action::Delete(id) => {
                if self
                    .log
                    .message(id)
                    .is_some_and(|m| self.is_mine(m) && !m.deleted)
                {
                    self.queue_change(Change::Delete { id });
                }
            }
            Action::React { id, emoji, add } => {
                let reactable = self.log.message(id).is_some_and(|m| !m.deleted);
                if reactable && crate::protocol::validate_emoji(&emoji).is_ok() {
                    self.queue_change(Change::React { id, emoji, add });
                }
            }
            Action::Retry(uid) => self.retry(uid),
            Action::Discard(uid) => self.discard(uid),
            Action::Typing(true) => self.keystroke(),
            Action::Typing(false) => self.stop_typing(),
            Action::Leave => self.leave(),
            Action::LoadOlder => self.load_older(),
            Action::LoadAround(id) => self.load_around(id),
            Action::FillGap(id) => {
                if self.log.is_gap(id) && !self.history_in_flight.contains(&HistoryWant::Gap(id)) {
                    self.send_history(HistoryWant::Gap(id));
                }
            }
            Action::Search { query, room } => self.search(query, room),
            Action::SearchMore => {
                if let (Some(cursor), false) = (self.search_next.clone(), self.view.search.loading)
                {
                    self.search_wanted = Some(SearchRequest {
                        query: self.view.search.query.clone(),
                        room: self.view.search.room.clone(),
                        limit: None,
                        cursor: Some(cursor),
                    });
                    self.view.search.loading = true;
                    self.dirty |= Dirty::SEARCH;
                    self.send_search();
                }
            }
            Action::ClearSearch => {
                self.search_generation += 1;
                self.search_wanted = None;
                self.search_next = None;
                self.view.search = SearchView::default();
                self.dirty |= Dirty::SEARCH;
            }
            Action::RetryNow => {
                if matches!(self.link, Link::Down { .. }) {
                    self.connect_now();
                }
            }
            Action::SetVisible(visible) => {
                if self.view.visible != visible {
                    self.view.visible = visible;
                    if visible {
                        self.mark_read();
                        if let Link::Down { retry_at } = self.link {
                            if retry_at > self.now + 1_000 {
                                self.connect_now();
                            }
                        }
                    } else {
                        self.flush_rooms();
                    }
                    self.rebuild_rooms();
                }
            }
        }
        self.drive();
        self.update_countdowns();
    }

    // ----- Connection --------------------------------------------------------------

    fn connected(&self) -> bool {
        matches!(&self.link, Link::Up { session, .. } if session.is_connected())
    }

    fn can_send(&self) -> bool {
        self.connected() && self.membership == Membership::Joined
    }

    fn connect_now(&mut self) {
        self.next_conn += 1;
        let conn = self.next_conn;
        let config = if self.config.protocol >= 2 {
            session::Config::protocol(self.config.protocol)
        } else {
            session::Config {
                auth: None,
                ..session::Config::protocol(1)
            }
        };
        self.link = Link::Up {
            conn,
            session: Box::new(Session::new(config, self.now)),
        };
        self.effects.push_back(Effect::Connect { conn });
    }

    /// Moves frames out of the session and handles what it reports, until both are done.
    fn drive(&mut self) {
        loop {
            let Link::Up { conn, session } = &mut self.link else {
                return;
            };
            let conn = *conn;
            while let Some(frame) = session.poll_transmit() {
                self.effects.push_back(Effect::Send { conn, frame });
            }
            let Some(event) = session.poll_event() else {
                return;
            };
            self.on_session_event(conn, event);
        }
    }

    fn on_session_event(&mut self, conn: u64, event: SessionEvent) {
        match event {
            SessionEvent::Opened(_)
            | SessionEvent::UnmatchedAck { .. }
            | SessionEvent::Foreign(_) => {}
            SessionEvent::Connected { .. } => self.on_connected(),
            SessionEvent::ConnectRefused(data) => {
                let reason = data
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| data.to_string());
                self.log(format!("connection refused: {reason}"));
                self.lose(conn, true);
            }
            SessionEvent::Event(incoming) => match incoming.decode() {
                Ok(event) => self.on_server_event(event),
                Err(error) => self.log(format!("unreadable event: {error}")),
            },
            SessionEvent::Ack { id, args } => self.on_ack(id, args),
            SessionEvent::AckFailed {
                reason: AckFailure::TimedOut,
                ..
            } => {
                // A server that leaves a request unanswered is as good as gone: reconnect,
                // and whatever was in flight goes again.
                self.log("a request went unanswered".into());
                if let Link::Up { session, .. } = &mut self.link {
                    session.close();
                }
            }
            SessionEvent::AckFailed { .. } => {}
            SessionEvent::Malformed { frame, error } => {
                self.log(format!("unreadable frame {frame:?}: {error}"))
            }
            SessionEvent::Closed(reason) => {
                self.log(format!("connection lost: {reason}"));
                self.lose(conn, false);
            }
        }
    }

    fn log(&mut self, line: String) {
        self.effects.push_back(Effect::Log(line));
    }

    fn on_connected(&mut self) {
        self.backoff.reset();
        self.set_connection(Connection::Online);
        if self.wanted_name.is_some() {
            let kind = if self.manual_join {
                JoinKind::Manual
            } else {
                JoinKind::Auto
            };
            self.send_join(kind);
        }
        self.send_search();
    }

    fn set_connection(&mut self, connection: Connection) {
        if self.view.connection != connection {
            self.view.connection = connection;
            self.dirty |= Dirty::CONNECTION;
        }
    }

    /// The connection is gone (or refused): clean up and schedule the next attempt.
    fn lose(&mut self, conn: u64, refused: bool) {
        self.effects.push_back(Effect::Close { conn });
        let delay = self.backoff.next(self.now, &mut self.rng, refused);
        self.link = Link::Down {
            retry_at: self.now + delay,
        };
        self.set_connection(Connection::Offline);
        // Unanswered changes stay in the outbox, first in line, and go again with the
        // same client_id, which the server recognises.
        self.awaiting.clear();
        self.in_flight = None;
        self.membership = Membership::Out;
        self.presence_log = None;
        self.rejoin_at = None;
        self.typing_sent = None;
        self.typing_idle_at = None;
        self.rooms_refresh_at = None;
        self.watch_retry_at = None;
        self.history_retry_at = None;
        if !self.typists.is_empty() {
            self.typists.clear();
            self.typing_changed();
        }
        // History wanted by the person is asked for again after the rejoin.
        for want in std::mem::take(&mut self.history_in_flight) {
            if let HistoryWant::Around(id) = want {
                self.around_wanted.get_or_insert(id);
            }
        }
        if self.view.loading_older {
            self.view.loading_older = false;
            self.dirty |= Dirty::HISTORY;
        }
        self.search_in_flight = false;
        self.search_retry_at = None;
    }

    fn update_countdowns(&mut self) {
        let now = self.now;
        let seconds = |at: Millis| at.saturating_sub(now).div_ceil(1_000).max(1);
        let throttle_until = self.paused_until.filter(|_| self.pause_rate_limited);
        let retry_at = match self.link {
            Link::Down { retry_at } => Some(retry_at),
            _ => None,
        };
        let throttled = throttle_until.map(seconds);
        let reconnect_in = retry_at.map(seconds);
        if throttled != self.view.throttled {
            self.view.throttled = throttled;
            self.dirty |= Dirty::THROTTLED;
        }
        if reconnect_in != self.view.reconnect_in {
            self.view.reconnect_in = reconnect_in;
            self.dirty |= Dirty::RECONNECT;
        }
        // Wake when a count of seconds shown goes down.
        self.countdown_at = [throttle_until, retry_at]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .map(|at| {
                let step = (at - now) % 1_000;
                now + if step == 0 { 1_000 } else { step }
            })
            .min();
    }

    // ----- Requests ----------------------------------------------------------------

    fn request<R: Request>(&mut self, request: &R, awaiting: Awaiting) -> bool {
        let now = self.now;
        let timeout = self.config.ack_timeout_ms;
        let Link::Up { session, .. } = &mut self.link else {
            return false;
        };
        if !session.is_connected() {
            return false;
        }
        let id = session.request(now, request, Some(timeout));
        self.awaiting.insert(id, awaiting);
        true
    }

    fn emit<R: Request>(&mut self, request: &R) {
        if let Link::Up { session, .. } = &mut self.link {
            if session.is_connected() {
                session.emit(request);
            }
        }
    }

    fn on_ack(&mut self, id: u64, args: Vec<Value>) {
        let Some(awaiting) = self.awaiting.remove(&id) else {
            return;
        };
        match awaiting {
            Awaiting::Join(kind, since) => match decode_ack::<JoinReply>(args) {
                Ok(reply) => self.on_joined(kind, since, reply),
                Err(error) => self.on_join_refused(kind, error),
            },
            Awaiting::Item(client_id) => self.on_item_ack(client_id, decode_ack(args)),
            Awaiting::Leave => {
                let _ = decode_ack::<EmptyReply>(args);
                self.forget(None, true);
            }
            Awaiting::History(want) => self.on_history(want, decode_ack(args)),
            Awaiting::Rooms => {
                if let Ok(reply) = decode_ack::<RoomsReply>(args) {
                    self.room_list = reply.rooms;
                    self.rebuild_rooms();
                }
            }
            Awaiting::Watch => self.on_watch(decode_ack(args)),
            Awaiting::Search(generation) => self.on_search(generation, decode_ack(args)),
        }
    }

    // ----- Joining -----------------------------------------------------------------

    fn join(&mut self, name: String) {
        self.wanted_name = Some(name);
        self.manual_join = true;
        self.rejoin_failures = 0;
        self.rejoin_at = None;
        self.view.join_error = None;
        self.view.joining = true;
        self.dirty |= Dirty::ME;
        if self.connected() && self.membership == Membership::Out {
            self.send_join(JoinKind::Manual);
        }
    }

    fn send_join(&mut self, kind: JoinKind) {
        let Some(name) = self.wanted_name.clone() else {
            return;
        };
        let since = match kind {
            JoinKind::Manual => None,
            JoinKind::Auto => self.held,
            JoinKind::Page => self.page_since,
        };
        let request = JoinRequest {
            name,
            room: self.config.room.clone(),
            since,
            session: self.token.clone(),
            resume: kind != JoinKind::Manual && self.was_in_room,
        };
        if self.request(&request, Awaiting::Join(kind, since)) {
            if kind != JoinKind::Page {
                // A new join sequence: the live stream starts counting now.
                self.live_max = 0;
                self.membership = Membership::Joining;
            }
            self.presence_log = Some(Vec::new());
        }
    }

    fn on_joined(&mut self, _kind: JoinKind, since: Option<u64>, reply: JoinReply) {
        // Before anything here can move the read mark: what was read when the reader left.
        if !self.new_since_taken {
            self.new_since_taken = true;
            let room = &self.config.room;
            self.view.new_since = self
                .joined_rooms
                .iter()
                .find(|r| r.room == *room)
                .map(|r| r.read)
                .filter(|read| *read > 0);
            self.dirty |= Dirty::LINES;
        }
        self.manual_join = false;
        self.rejoin_failures = 0;
        // Who we are: stored for reloads, and owned through the session token.
        if self.stored_name.as_deref() != Some(reply.name.as_str()) {
            self.stored_name = Some(reply.name.clone());
            self.store(keys::NAME, Some(reply.name.clone()));
        }
        if !reply.session.is_empty() && self.token.as_deref() != Some(reply.session.as_str()) {
            self.token = Some(reply.session.clone());
            self.store(keys::SESSION, Some(reply.session.clone()));
        }
        self.wanted_name = Some(reply.name.clone());
        if self.outbox.set_author(&reply.name) {
            self.log.rename_pending(&self.outbox);
            self.save_outbox();
        }
        if self.view.me.as_deref() != Some(reply.name.as_str())
            || self.view.joining
            || self.view.join_error.is_some()
        {
            self.view.me = Some(reply.name.clone());
            self.view.joining = false;
            self.view.join_error = None;
            self.dirty |= Dirty::ME;
        }

        // Members: the reply's list, with the joins and departures seen while it was on
        // its way applied again on top (it may be older than they are).
        self.view.members = reply.members;
        for change in self.presence_log.take().unwrap_or_default() {
            self.apply_presence(change);
        }
        self.view.online = if reply.online > 0 {
            reply.online
        } else {
            self.view.members.len()
        };
        self.dirty |= Dirty::MEMBERS;

        // Messages.
        let mut first_page = self.log.newest_id().is_none();
        if reply.reset {
            self.log.clear_delivered();
            self.held = None;
            first_page = true;
        }
        let mut newest = 0;
        for message in reply.updates {
            newest = newest.max(message.version());
            self.log.merge(message, false, &self.outbox);
        }
        let last_id = reply.history.last().map(|m| m.id);
        if first_page {
            let size: usize = reply.history.iter().map(|m| m.text.len() + 160).sum();
            self.view.older_available =
                reply.history.len() >= JOIN_HISTORY as usize || size >= MAX_REPLY_BYTES * 3 / 4;
            self.dirty |= Dirty::HISTORY;
        }
        for message in reply.history {
            newest = newest.max(message.version());
            self.merge_new(message);
        }
        self.dirty |= Dirty::LINES;

        if let (true, Some(last)) = (reply.truncated, last_id) {
            // More than one page was missed: fetch the next before sending anything.
            // Until the catch-up ends, what is held is exactly up to this page.
            self.page_since = Some(last);
            self.held = Some(last);
            self.membership = Membership::CatchingUp;
            self.send_join(JoinKind::Page);
            return;
        }
        let base = if reply.reset { None } else { since };
        let top = newest.max(self.live_max);
        self.held = match base {
            Some(base) => Some(base.max(top)),
            None if top > 0 => Some(top),
            None => None,
        };
        self.page_since = None;
        self.membership = Membership::Joined;
        self.was_in_room = true;
        self.remember_room();
        self.mark_read();
        self.refresh_rooms();
        self.send_watch();
        self.send_history_wants();
        self.pump();
    }

    fn on_join_refused(&mut self, kind: JoinKind, error: ProtocolError) {
        self.presence_log = None;
        self.membership = Membership::Out;
        match error.code {
            ErrorCode::RateLimited => {
                let wait = error.retry_after_ms.unwrap_or(1_000);
                self.rejoin_at = Some((self.now + wait, kind));
            }
            ErrorCode::Unavailable if kind != JoinKind::Manual => {
                self.rejoin_at = Some((self.now + 2_000, kind));
            }
            ErrorCode::NameTaken
                if kind != JoinKind::Manual && self.rejoin_failures < REJOIN_ATTEMPTS =>
            {
                // Probably our own previous connection, not yet gone: try again soon.
                self.rejoin_failures += 1;
                self.rejoin_at = Some((self.now + REJOIN_DELAY_MS, kind));
            }
            _ => self.forget(Some(error.message), false),
        }
    }

    /// Stops being in the room: after a refused join, or after leaving (`clear_outbox`).
    fn forget(&mut self, error: Option<String>, leaving: bool) {
        self.wanted_name = None;
        self.manual_join = false;
        if self.stored_name.take().is_some() {
            self.store(keys::NAME, None);
        }
        self.membership = Membership::Out;
        self.was_in_room = false;
        self.held = None;
        self.page_since = None;
        self.presence_log = None;
        self.rejoin_at = None;
        self.view.me = None;
        self.view.returning = false;
        self.view.joining = false;
        self.view.join_error = error;
        self.view.members.clear();
        self.view.online = 0;
        self.view.older_available = false;
        self.typists.clear();
        self.view.typing.clear();
        self.dirty |= Dirty::ME | Dirty::MEMBERS | Dirty::TYPING | Dirty::HISTORY | Dirty::LINES;
        if leaving {
            // Joining again on this page is a first visit: the room is forgotten below.
            self.view.new_since = None;
            self.new_since_taken = false;
            self.log.clear();
            if !self.outbox.is_empty() {
                self.outbox.clear();
                self.save_outbox();
            }
            let room = self.config.room.clone();
            self.joined_rooms.retain(|r| r.room != room);
            self.schedule_rooms_flush();
            self.rebuild_rooms();
        } else {
            self.log.clear_delivered();
        }
    }

    fn leave(&mut self) {
        if self.connected() && self.membership != Membership::Out {
            let request = LeaveRequest {
                room: self.config.room.clone(),
            };
            if self.request(&request, Awaiting::Leave) {
                return;
            }
        }
        self.forget(None, true);
    }

    // ----- Messages ----------------------------------------------------------------

    fn is_mine(&self, message: &Message) -> bool {
        self.view.me.as_deref() == Some(message.author.as_str())
    }

    /// Merges a message that may be new; if it is ours, its send leaves the outbox.
    fn merge_new(&mut self, message: Message) -> Merged {
        let ours = self.is_mine(&message).then(|| message.client_id.clone());
        let merged = self.log.merge(message, true, &self.outbox);
        if let Some(client_id) = ours {
            let is_send = self
                .outbox
                .get(&client_id)
                .is_some_and(|item| matches!(item.change, Change::Send { .. }));
            if is_send && self.in_flight.as_deref() != Some(client_id.as_str()) {
                self.outbox.remove(&client_id);
                self.save_outbox();
            }
        }
        merged
    }

    /// The notification for a live message, if it mentions the reader, is someone else's
    /// and arrives while the page is hidden (when it shows, the log itself tells).
    fn mention_notice(&self, message: &Message) -> Option<Effect> {
        let me = self.view.me.as_deref()?;
        let notify = !self.view.visible
            && !message.deleted
            && message.author != me
            && crate::mentions::mentions(&message.text, me);
        notify.then(|| Effect::Notify {
            title: format!("{} in #{}", message.author, message.room),
            body: crate::protocol::excerpt(&message.text),
            tag: format!("{}/{}", message.room, message.id),
        })
    }

    /// A version number seen on the live stream.
    fn saw_live(&mut self, version: u64) {
        match self.membership {
            Membership::Joined => self.held = Some(self.held.unwrap_or(0).max(version)),
            Membership::Joining | Membership::CatchingUp => {
                self.live_max = self.live_max.max(version)
            }
            Membership::Out => {}
        }
    }

    fn on_server_event(&mut self, event: ServerEvent) {
        let room = self.config.room.clone();
        match event {
            ServerEvent::Message(message) if message.room == room => {
                let author = message.author.clone();
                let version = message.version();
                self.typists.retain(|(name, _)| *name != author);
                self.typing_changed();
                let notify = self.mention_notice(&message);
                if self.merge_new(message) == Merged::Added {
                    if let Some(effect) = notify {
                        self.effects.push_back(effect);
                    }
                }
                self.saw_live(version);
                if self.log.trim_oldest(MAX_SHOWN_MESSAGES) {
                    self.view.older_available = true;
                    self.dirty |= Dirty::HISTORY;
                }
                self.dirty |= Dirty::LINES;
                self.mark_read();
                self.rebuild_rooms();
            }
            ServerEvent::Updated(message) if message.room == room => {
                let version = message.version();
                self.log.merge(message, false, &self.outbox);
                self.saw_live(version);
                self.dirty |= Dirty::LINES;
            }
            ServerEvent::Joined(notice) if notice.room == room => {
                self.arrived(notice.name, true, notice.ts, None)
            }
            ServerEvent::Left(notice) if notice.room == room => {
                self.departed(notice.name, notice.ts, None)
            }
            ServerEvent::Presence(notice) if notice.room == room => self.on_presence(notice),
            ServerEvent::Typing(notice) if notice.room == room => {
                self.typists.retain(|(name, _)| *name != notice.name);
                if notice.typing {
                    self.typists.push((notice.name, self.now + TYPING_SHOWN_MS));
                }
                self.typing_changed();
            }
            ServerEvent::Activity(notice) => self.on_activity(notice),
            ServerEvent::Error(notice) => self.log(format!(
                "server refused {}: {}: {}",
                notice.event, notice.code, notice.message
            )),
            ServerEvent::Unknown(..) | ServerEvent::Message(_) | ServerEvent::Updated(_) => {}
            ServerEvent::Joined(_)
            | ServerEvent::Left(_)
            | ServerEvent::Presence(_)
            | ServerEvent::Typing(_) => {}
        }
    }

    fn on_presence(&mut self, notice: PresenceNotice) {
        let online = Some(notice.online);
        for name in notice.left {
            self.departed(name, notice.ts, online);
        }
        for name in notice.joined {
            self.arrived(name, true, notice.ts, online);
        }
        // A room of more than MAX_MEMBERS_LISTED people names its first arrivals only and
        // counts the others: they are announced as a number. The member list of a room
        // that large is partial from the join on (its reply lists that many).
        match notice.more_joined {
            0 => {}
            1 => self
                .log
                .push_notice("1 more person joined".to_owned(), notice.ts),
            more => self
                .log
                .push_notice(format!("{more} more people joined"), notice.ts),
        }
        for name in notice.returned {
            self.arrived(name, false, notice.ts, online);
        }
        if self.view.online != notice.online {
            self.view.online = notice.online;
            self.dirty |= Dirty::MEMBERS;
            self.rebuild_rooms();
        }
    }

    /// Whether `name` is this page's person (joined, or joining under it).
    fn is_me(&self, name: &str) -> bool {
        self.view.me.as_deref() == Some(name) || self.wanted_name.as_deref() == Some(name)
    }

    /// Someone arrived; announced unless it is a return, or this person (a protocol 2
    /// batch may name the socket's own join).
    fn arrived(&mut self, name: String, announce: bool, ts: i64, online: Option<usize>) {
        if announce && !self.is_me(&name) {
            self.log.push_notice(format!("{name} joined"), ts);
        }
        self.presence(PresenceChange::Arrived(name), online);
    }

    /// Someone left. This person is still here on this page whatever another of their
    /// connections did.
    fn departed(&mut self, name: String, ts: i64, online: Option<usize>) {
        if self.is_me(&name) {
            return;
        }
        self.log.push_notice(format!("{name} left"), ts);
        self.presence(PresenceChange::Departed(name), online);
    }

    /// A join or departure; `online` is the server's count (protocol 2), or none to
    /// count the members (protocol 1).
    fn presence(&mut self, change: PresenceChange, online: Option<usize>) {
        if let Some(log) = &mut self.presence_log {
            log.push(change.clone());
        }
        self.apply_presence(change);
        self.view.online = online.unwrap_or(self.view.members.len());
        self.dirty |= Dirty::LINES;
        self.rebuild_rooms();
    }

    fn apply_presence(&mut self, change: PresenceChange) {
        match change {
            PresenceChange::Arrived(name) => {
                if !self.view.members.contains(&name) {
                    self.view.members.push(name);
                }
            }
            PresenceChange::Departed(name) => {
                self.view.members.retain(|m| *m != name);
                let before = self.typists.len();
                self.typists.retain(|(n, _)| *n != name);
                if before != self.typists.len() {
                    self.typing_changed();
                }
            }
        }
        self.dirty |= Dirty::MEMBERS;
    }

    fn typing_changed(&mut self) {
        let names: Vec<String> = self.typists.iter().map(|(name, _)| name.clone()).collect();
        if names != self.view.typing {
            self.view.typing = names;
            self.dirty |= Dirty::TYPING;
        }
    }

    // ----- The outbox --------------------------------------------------------------

    fn save_outbox(&mut self) {
        let key = outbox_key(&self.config.room);
        self.store(&key, self.outbox.to_json());
    }

    fn store(&mut self, key: &str, value: Option<String>) {
        self.effects.push_back(Effect::Store {
            key: key.to_owned(),
            value,
        });
    }

    fn new_client_id(&mut self) -> String {
        format!("{:x}-{:x}", self.wall.max(0) as u64, self.rng.next() >> 11)
    }

    fn queue_send(&mut self, text: String, reply_to: Option<u64>) {
        let Some(author) = self.view.me.clone() else {
            return;
        };
        let Ok(text) = crate::protocol::validate_text(&text) else {
            return;
        };
        let item = Item {
            client_id: self.new_client_id(),
            author,
            ts: self.wall,
            change: Change::Send { text, reply_to },
            failed: None,
        };
        self.log.push_pending(&item);
        self.outbox.push(item);
        self.save_outbox();
        self.dirty |= Dirty::LINES;
        // The server clears our typing indicator when the message arrives.
        self.typing_sent = None;
        self.typing_idle_at = None;
        self.pump();
    }

    fn queue_change(&mut self, change: Change) {
        let Some(author) = self.view.me.clone() else {
            return;
        };
        let target = change.target();
        let item = Item {
            client_id: self.new_client_id(),
            author,
            ts: self.wall,
            change,
            failed: None,
        };
        self.outbox.push(item);
        self.save_outbox();
        if let Some(id) = target {
            self.log.refresh(id, &self.outbox);
        }
        self.dirty |= Dirty::LINES;
        self.pump();
    }

    /// Sends the first item not failed, if nothing is in flight and nothing holds it back.
    fn pump(&mut self) {
        if !self.can_send() || self.in_flight.is_some() || self.paused_until.is_some() {
            return;
        }
        let Some(item) = self.outbox.next_pending() else {
            return;
        };
        let client_id = item.client_id.clone();
        let awaiting = Awaiting::Item(client_id.clone());
        let sent = match item.request(&self.config.room) {
            Outgoing::Send(request) => self.request(&request, awaiting),
            Outgoing::Edit(request) => self.request(&request, awaiting),
            Outgoing::Delete(request) => self.request(&request, awaiting),
            Outgoing::React(request) => self.request(&request, awaiting),
        };
        if sent {
            self.in_flight = Some(client_id);
        }
    }

    fn refresh_item(&mut self, client_id: &str) {
        let Some(item) = self.outbox.get(client_id) else {
            return;
        };
        match item.change.target() {
            Some(id) => self.log.refresh(id, &self.outbox),
            None => {
                let item = item.clone();
                self.log.refresh_pending(&item);
            }
        }
        self.dirty |= Dirty::LINES;
    }

    fn on_item_ack(&mut self, client_id: String, reply: Result<SendReply, ProtocolError>) {
        if self.in_flight.as_deref() == Some(client_id.as_str()) {
            self.in_flight = None;
        }
        match reply {
            Ok(reply) => {
                self.unavailable = 0;
                let item = self.outbox.remove(&client_id);
                if item.is_some() {
                    self.save_outbox();
                }
                let target = item.as_ref().and_then(|item| item.change.target());
                let id = reply.message.id;
                self.log
                    .merge(reply.message, target.is_none(), &self.outbox);
                // Confirmed earlier (through history), the pending row may still be there.
                self.log.remove_pending(&client_id);
                self.log.refresh(target.unwrap_or(id), &self.outbox);
                self.dirty |= Dirty::LINES;
                self.mark_read();
            }
            Err(error) if error.code == ErrorCode::RateLimited => {
                // Too fast: the item stays first in line, and the outbox waits exactly as
                // long as the server asked before sending it again.
                self.unavailable = 0;
                let wait = error.retry_after_ms.unwrap_or(1_000);
                self.paused_until = Some(self.now + wait);
                self.pause_rate_limited = true;
                return;
            }
            Err(error) if error.code == ErrorCode::Unavailable => {
                // The server could not store it now; the same item goes again later.
                let wait = (1_000u64 << self.unavailable.min(3)).min(10_000);
                self.unavailable += 1;
                self.paused_until = Some(self.now + wait);
                self.pause_rate_limited = false;
                return;
            }
            Err(error) if error.code == ErrorCode::NotJoined => {
                // Our membership lapsed: rejoin (catching up), then the item goes again.
                self.membership = Membership::Out;
                self.send_join(JoinKind::Auto);
                return;
            }
            Err(error) => {
                if let Some(item) = self.outbox.get_mut(&client_id) {
                    item.failed = Some(error.message);
                }
                self.refresh_item(&client_id);
            }
        }
        self.pump();
    }

    /// Client ids of the outbox items shown on the line `uid`.
    fn items_of_line(&self, uid: u64) -> Vec<String> {
        let Some(line) = self.log.lines().iter().find(|line| line.uid == uid) else {
            return Vec::new();
        };
        let LineKind::Message(message) = &line.kind else {
            return Vec::new();
        };
        match message.id {
            None => vec![message.client_id.clone()],
            Some(id) => self
                .outbox
                .changes_to(id)
                .map(|item| item.client_id.clone())
                .collect(),
        }
    }

    fn retry(&mut self, uid: u64) {
        for client_id in self.items_of_line(uid) {
            if let Some(item) = self.outbox.get_mut(&client_id) {
                if item.failed.take().is_some() {
                    self.refresh_item(&client_id);
                }
            }
        }
        self.pump();
    }

    fn discard(&mut self, uid: u64) {
        let mut changed = false;
        for client_id in self.items_of_line(uid) {
            let failed = self
                .outbox
                .get(&client_id)
                .is_some_and(|item| item.failed.is_some());
            if !failed || self.in_flight.as_deref() == Some(client_id.as_str()) {
                continue;
            }
            if let Some(item) = self.outbox.remove(&client_id) {
                changed = true;
                match item.change.target() {
                    Some(id) => self.log.refresh(id, &self.outbox),
                    None => self.log.remove_pending(&client_id),
                }
            }
        }
        if changed {
            self.save_outbox();
            self.dirty |= Dirty::LINES;
        }
    }

    // ----- Typing ------------------------------------------------------------------

    fn keystroke(&mut self) {
        let now = self.now;
        self.typing_idle_at = Some(now + TYPING_IDLE_MS);
        let stale = self
            .typing_sent
            .is_none_or(|sent| now.saturating_sub(sent) >= TYPING_REFRESH_MS);
        if self.can_send() && stale {
            self.typing_sent = Some(now);
            self.emit(&TypingRequest {
                room: self.config.room.clone(),
                typing: true,
            });
        }
    }

    fn stop_typing(&mut self) {
        self.typing_idle_at = None;
        if self.typing_sent.take().is_some() && self.can_send() {
            self.emit(&TypingRequest {
                room: self.config.room.clone(),
                typing: false,
            });
        }
    }

    // ----- Rooms, read marks, unread counts ----------------------------------------

    fn refresh_rooms(&mut self) {
        if self.can_send() {
            self.request(&RoomsRequest::default(), Awaiting::Rooms);
            self.rooms_refresh_at = Some(self.now + ROOMS_REFRESH_MS);
        }
    }

    /// Puts the current room first among the joined rooms.
    fn remember_room(&mut self) {
        let room = self.config.room.clone();
        let index = self.joined_rooms.iter().position(|r| r.room == room);
        if index == Some(0) {
            return;
        }
        let entry = match index {
            Some(index) => self.joined_rooms.remove(index),
            None => WatchedRoom { room, read: 0 },
        };
        self.joined_rooms.insert(0, entry);
        self.joined_rooms.truncate(REMEMBERED_ROOMS);
        self.schedule_rooms_flush();
    }

    /// Records the newest message shown as read, while the page is visible.
    fn mark_read(&mut self) {
        if !self.view.visible || self.membership == Membership::Out {
            return;
        }
        let Some(newest) = self.log.newest_id() else {
            return;
        };
        let room = &self.config.room;
        if let Some(entry) = self.joined_rooms.iter_mut().find(|r| r.room == *room) {
            if entry.read < newest {
                entry.read = newest;
                self.schedule_rooms_flush();
            }
        }
    }

    fn schedule_rooms_flush(&mut self) {
        self.rooms_flush_at.get_or_insert(self.now + READ_FLUSH_MS);
    }

    fn flush_rooms(&mut self) {
        if self.rooms_flush_at.take().is_some() {
            let json = serde_json::to_string(&self.joined_rooms).ok();
            self.store(keys::ROOMS, json);
        }
    }

    fn send_watch(&mut self) {
        if self.watch_supported == Some(false) || !self.can_send() {
            return;
        }
        let room = &self.config.room;
        let rooms: Vec<WatchedRoom> = self
            .joined_rooms
            .iter()
            .filter(|r| r.room != *room)
            .take(MAX_WATCHED_ROOMS)
            .cloned()
            .collect();
        if rooms.is_empty() {
            return;
        }
        self.request(&WatchRequest { rooms }, Awaiting::Watch);
    }

    fn on_watch(&mut self, reply: Result<WatchReply, ProtocolError>) {
        match reply {
            Ok(reply) => {
                self.watch_supported = Some(true);
                self.counts = reply
                    .rooms
                    .into_iter()
                    .map(|r| {
                        let counts = Counts {
                            unread: r.unread,
                            mentions: r.mentions,
                            last_id: r.last_id,
                            last_ts: r.last_ts,
                            online: r.online,
                        };
                        (r.room, counts)
                    })
                    .collect();
            }
            Err(error) if error.code == ErrorCode::RateLimited => {
                let wait = error.retry_after_ms.unwrap_or(1_000);
                self.watch_retry_at = Some(self.now + wait);
            }
            // A server before protocol 2 does not know `watch`: count from `rooms`.
            Err(_) => self.watch_supported = Some(false),
        }
        self.rebuild_rooms();
    }

    fn on_activity(&mut self, notice: ActivityNotice) {
        let me = self.view.me.as_deref().map(crate::mentions::mention_key);
        let Some(counts) = self.counts.get_mut(&notice.room) else {
            return;
        };
        for item in &notice.messages {
            if item.id <= counts.last_id {
                continue;
            }
            if self.view.me.as_deref() == Some(item.author.as_str()) {
                continue;
            }
            counts.unread = (counts.unread + 1).min(MAX_COUNTED_UNREAD);
            if me.as_ref().is_some_and(|key| item.mentions.contains(key)) {
                counts.mentions = (counts.mentions + 1).min(MAX_COUNTED_UNREAD);
            }
        }
        if notice.more {
            counts.unread = MAX_COUNTED_UNREAD;
        }
        counts.last_id = counts.last_id.max(notice.last_id);
        counts.last_ts = notice.last_ts.or(counts.last_ts);
        counts.online = notice.online;
        self.rebuild_rooms();
    }

    /// Unread messages and mentions in the current room past its read mark.
    fn current_unread(&self) -> (u32, u32) {
        let room = &self.config.room;
        let read = self
            .joined_rooms
            .iter()
            .find(|r| r.room == *room)
            .map_or(0, |r| r.read);
        let me = self.view.me.as_deref();
        let (mut unread, mut mentions) = (0, 0);
        for message in self.log.messages_after(read) {
            if unread == MAX_COUNTED_UNREAD {
                break;
            }
            if message.deleted || Some(message.author.as_str()) == me {
                continue;
            }
            unread += 1;
            if me.is_some_and(|me| crate::mentions::mentions(&message.text, me)) {
                mentions += 1;
            }
        }
        (unread, mentions)
    }

    fn rebuild_rooms(&mut self) {
        let current = self.config.room.clone();
        let joined = |name: &str| self.joined_rooms.iter().any(|r| r.room == name);
        let read = |name: &str| {
            self.joined_rooms
                .iter()
                .find(|r| r.room == name)
                .map_or(0, |r| r.read)
        };
        let hidden_counts = if self.view.visible {
            (0, 0)
        } else {
            self.current_unread()
        };
        let watched = self.watch_supported == Some(true);
        let entry = |name: &str, online: usize, last_id: u64, last_ts: Option<i64>| {
            let is_current = name == current;
            let is_joined = joined(name);
            let (unread, mentions) = if is_current {
                hidden_counts
            } else if !is_joined {
                (0, 0)
            } else if let (true, Some(counts)) = (watched, self.counts.get(name)) {
                (counts.unread, counts.mentions)
            } else {
                let unread = last_id.saturating_sub(read(name));
                (u32::try_from(unread).unwrap_or(u32::MAX), 0)
            };
            let online = if is_current && self.membership != Membership::Out {
                self.view.online.max(self.view.members.len())
            } else if let Some(counts) = self.counts.get(name) {
                counts.online
            } else {
                online
            };
            let (last_id, last_ts) = match self.counts.get(name) {
                Some(counts) if counts.last_id > last_id => (counts.last_id, counts.last_ts),
                _ => (last_id, last_ts),
            };
            RoomEntry {
                name: name.to_owned(),
                online,
                last_id,
                last_ts,
                unread,
                mentions,
                joined: is_joined,
                current: is_current,
            }
        };
        let mut rooms: Vec<RoomEntry> = self
            .room_list
            .iter()
            .map(|info| entry(&info.name, info.online, info.last_id, info.last_ts))
            .collect();
        // Joined rooms beyond the listed page, known from `watch`.
        for watched_room in &self.joined_rooms {
            let name = watched_room.room.as_str();
            if rooms.iter().any(|r| r.name == name) {
                continue;
            }
            if let Some(counts) = self.counts.get(name) {
                rooms.push(entry(name, counts.online, counts.last_id, counts.last_ts));
            }
        }
        let unread_total = rooms
            .iter()
            .map(|r| r.unread)
            .fold(0u32, u32::saturating_add);
        let mentions_total = rooms
            .iter()
            .map(|r| r.mentions)
            .fold(0u32, u32::saturating_add);
        if rooms != self.view.rooms
            || unread_total != self.view.unread_total
            || mentions_total != self.view.mentions_total
        {
            self.view.rooms = rooms;
            self.view.unread_total = unread_total;
            self.view.mentions_total = mentions_total;
            self.dirty |= Dirty::ROOMS;
        }
    }

    // ----- History -----------------------------------------------------------------

    fn load_older(&mut self) {
        if self.view.loading_older || !self.view.older_available || !self.can_send() {
            return;
        }
        if self.log.oldest_id().is_some() {
            self.send_history(HistoryWant::Older);
        }
    }

    fn load_around(&mut self, id: u64) {
        if self.log.holds(id) {
            self.view.focus = Some(id);
            self.dirty |= Dirty::FOCUS;
            return;
        }
        self.around_wanted = Some(id);
        self.send_history_wants();
    }

    fn send_history_wants(&mut self) {
        if let Some(id) = self.around_wanted {
            if self.can_send() && self.send_history(HistoryWant::Around(id)) {
                self.around_wanted = None;
            }
        }
    }

    fn send_history(&mut self, want: HistoryWant) -> bool {
        let room = self.config.room.clone();
        let request = match want {
            HistoryWant::Older => HistoryRequest {
                room,
                before: self.log.oldest_id(),
                around: None,
                limit: JOIN_HISTORY,
            },
            HistoryWant::Gap(id) => HistoryRequest {
                room,
                before: Some(id),
                around: None,
                limit: JOIN_HISTORY,
            },
            HistoryWant::Around(id) => HistoryRequest {
                room,
                before: None,
                around: Some(id),
                limit: JOIN_HISTORY,
            },
        };
        if !self.can_send() || !self.request(&request, Awaiting::History(want)) {
            return false;
        }
        self.history_in_flight.push(want);
        if want == HistoryWant::Older {
            self.view.loading_older = true;
            self.dirty |= Dirty::HISTORY;
        }
        true
    }

    fn on_history(&mut self, want: HistoryWant, reply: Result<HistoryReply, ProtocolError>) {
        self.history_in_flight.retain(|w| *w != want);
        if want == HistoryWant::Older {
            self.view.loading_older = false;
            self.dirty |= Dirty::HISTORY;
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                if error.code == ErrorCode::RateLimited {
                    if let HistoryWant::Around(id) = want {
                        self.around_wanted.get_or_insert(id);
                        let wait = error.retry_after_ms.unwrap_or(1_000);
                        self.history_retry_at = Some(self.now + wait);
                    }
                }
                self.log(format!("history refused: {error}"));
                return;
            }
        };
        let first = reply.messages.first().map(|m| m.id);
        let last = reply.messages.last().map(|m| m.id);
        match want {
            HistoryWant::Older => {
                for message in reply.messages {
                    self.merge_new(message);
                }
                self.view.older_available = reply.more && first.is_some();
            }
            HistoryWant::Gap(below) => {
                let held_below = self.log.held_below(below);
                for message in reply.messages {
                    self.merge_new(message);
                }
                self.log.set_gap(below, false, &self.outbox);
                match (first, held_below) {
                    (Some(first), Some(held)) if first > held && reply.more => {
                        self.log.set_gap(first, true, &self.outbox)
                    }
                    (Some(_), None) | (None, None) => {
                        self.view.older_available = reply.more && first.is_some()
                    }
                    _ => {}
                }
            }
            HistoryWant::Around(id) => {
                let (Some(first), Some(last)) = (first, last) else {
                    return;
                };
                let below = self.log.held_below(first);
                let above = self.log.held_above(last);
                for message in reply.messages {
                    self.merge_new(message);
                }
                // The page is every message from `first` to `last`: no gap inside it.
                let inside: Vec<u64> = self
                    .log
                    .gaps()
                    .filter(|g| *g > first && *g <= last)
                    .collect();
                for gap in inside {
                    self.log.set_gap(gap, false, &self.outbox);
                }
                if let Some(above) = above {
                    self.log.set_gap(above, reply.newer, &self.outbox);
                }
                match below {
                    Some(_) => {
                        if reply.more {
                            self.log.set_gap(first, true, &self.outbox);
                        }
                    }
                    None => self.view.older_available = reply.more,
                }
                if self.log.holds(id) {
                    self.view.focus = Some(id);
                    self.dirty |= Dirty::FOCUS;
                }
            }
        }
        self.dirty |= Dirty::LINES | Dirty::HISTORY;
    }

    // ----- Search ------------------------------------------------------------------

    fn search(&mut self, query: String, room: Option<String>) {
        self.search_generation += 1;
        self.search_next = None;
        match crate::protocol::validate_query(&query) {
            Ok(query) => {
                self.view.search = SearchView {
                    query: query.clone(),
                    room: room.clone(),
                    loading: true,
                    ..SearchView::default()
                };
                self.search_wanted = Some(SearchRequest {
                    query,
                    room,
                    limit: None,
                    cursor: None,
                });
                self.send_search();
            }
            Err(error) => {
                self.search_wanted = None;
                self.view.search = SearchView {
                    query,
                    room,
                    error: Some(error.message),
                    ..SearchView::default()
                };
            }
        }
        self.dirty |= Dirty::SEARCH;
    }

    fn send_search(&mut self) {
        if self.search_in_flight || !self.connected() {
            return;
        }
        let Some(request) = self.search_wanted.clone() else {
            return;
        };
        let generation = self.search_generation;
        if self.request(&request, Awaiting::Search(generation)) {
            self.search_in_flight = true;
        }
    }

    fn on_search(&mut self, generation: u64, reply: Result<SearchReply, ProtocolError>) {
        self.search_in_flight = false;
        if generation != self.search_generation {
            // A newer search went out meanwhile; it is sent now if it waited.
            self.send_search();
            return;
        }
        let append = self
            .search_wanted
            .as_ref()
            .is_some_and(|r| r.cursor.is_some());
        match reply {
            Ok(reply) => {
                self.search_wanted = None;
                let search = &mut self.view.search;
                if append {
                    search.results.extend(reply.results);
                } else {
                    search.results = reply.results;
                }
                search.more = reply.more && reply.next.is_some();
                search.loading = false;
                search.error = None;
                self.search_next = reply.next;
            }
            Err(error) if error.code == ErrorCode::RateLimited => {
                let wait = error.retry_after_ms.unwrap_or(1_000);
                self.search_retry_at = Some(self.now + wait);
            }
            Err(error) => {
                self.search_wanted = None;
                self.view.search.loading = false;
                self.view.search.error = Some(error.message);
            }
        }
        self.dirty |= Dirty::SEARCH;
    }
}
