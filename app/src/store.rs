//! What the chat page shows, as reactive signals: a thin mirror of the chat core's view.
//!
//! The state and every rule that changes it live in `client::chat` (no Leptos, tested
//! natively); the browser shell copies the parts the core marks dirty into these signals
//! ([`ChatStore::apply`]), and components read them and send [`Action`]s back through
//! [`ChatStore::dispatch`]. Everything here also runs during server rendering, where no
//! client exists and the page renders its initial, empty state.

use futures::channel::mpsc::UnboundedSender;
use leptos::prelude::*;

pub use crate::client::chat::typing_text;
pub use crate::client::{
    Action, Connection, Delivery, Dirty, Line, LineKind, MessageLine, RoomEntry, SearchView, View,
};

#[cfg(feature = "browser")]
const LEFT_AS_KEY: &str = "banter.left_as";

/// A cookie the browser keeps while it holds a name to join under (`banter.name` in its
/// storage), so that the server can draw the room for a returning visitor instead of the
/// join form. It carries no name, only that one is held: `banter_returning=1`.
pub const RETURNING_COOKIE: &str = "banter_returning";

/// Whether a `Cookie` header (or `document.cookie`) says the visitor is returning.
pub fn returning_in_cookies(cookies: &str) -> bool {
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == RETURNING_COOKIE && value == "1")
}

/// Given by the server to the page's render: what the request's cookies said.
#[derive(Debug, Clone, Copy)]
pub struct ReturningVisitor(pub bool);

#[derive(Clone, Copy)]
pub struct ChatStore {
    pub room: StoredValue<String>,
    pub connection: RwSignal<Connection>,
    /// True once the wasm app has hydrated and can act on input.
    pub hydrated: RwSignal<bool>,
    /// The name this page is joined under, once the server accepted it.
    pub me: RwSignal<Option<String>>,
    /// A returning visitor whose page joins by itself (`View::returning`): the room is
    /// drawn at once, by the server too, rather than a join form that goes away.
    pub returning: RwSignal<bool>,
    pub joining: RwSignal<bool>,
    pub join_error: RwSignal<Option<String>>,
    pub members: RwSignal<Vec<String>>,
    /// How many are online in this room (`members` names at most 500).
    pub online: RwSignal<usize>,
    pub lines: RwSignal<Vec<Line>>,
    /// The read mark from before this visit: a line marks what is new since (`View::new_since`).
    pub new_since: RwSignal<Option<u64>>,
    pub typing: RwSignal<Vec<String>>,
    /// Whether the server may hold messages older than the oldest one shown.
    pub older_available: RwSignal<bool>,
    pub loading_older: RwSignal<bool>,
    /// The rooms the server listed, with unread counts for the ones joined.
    pub rooms: RwSignal<Vec<RoomEntry>>,
    pub unread_total: RwSignal<u32>,
    pub mentions_total: RwSignal<u32>,
    /// Set while the server asked us to slow down: seconds until sending resumes.
    pub throttled: RwSignal<Option<u64>>,
    /// Set while reconnecting: seconds until the next attempt ("Retry now" skips it).
    pub reconnect_in: RwSignal<Option<u64>>,
    pub search: RwSignal<SearchView>,
    /// The message to scroll to after `Action::LoadAround`.
    pub focus: RwSignal<Option<u64>>,
    /// The name this page left the room under, to offer again in the join form.
    left_as: StoredValue<Option<String>>,
    actions: StoredValue<Option<UnboundedSender<Action>>>,
}

impl ChatStore {
    /// `returning`: what [`RETURNING_COOKIE`] says, on the server and in the browser
    /// alike, so that the page hydrates the very view the server drew.
    pub fn new(room: String, returning: bool) -> Self {
        Self {
            room: StoredValue::new(room),
            connection: RwSignal::new(Connection::Connecting),
            hydrated: RwSignal::new(false),
            me: RwSignal::new(None),
            returning: RwSignal::new(returning),
            joining: RwSignal::new(false),
            join_error: RwSignal::new(None),
            members: RwSignal::new(Vec::new()),
            online: RwSignal::new(0),
            lines: RwSignal::new(Vec::new()),
            new_since: RwSignal::new(None),
            typing: RwSignal::new(Vec::new()),
            older_available: RwSignal::new(false),
            loading_older: RwSignal::new(false),
            rooms: RwSignal::new(Vec::new()),
            unread_total: RwSignal::new(0),
            mentions_total: RwSignal::new(0),
            throttled: RwSignal::new(None),
            reconnect_in: RwSignal::new(None),
            search: RwSignal::new(SearchView::default()),
            focus: RwSignal::new(None),
            left_as: StoredValue::new(None),
            actions: StoredValue::new(None),
        }
    }

    pub fn room(&self) -> String {
        self.room.get_value()
    }

    /// Whether the page shows the room (joined, or about to be by itself) rather than
    /// the join form. Read it through a `Memo`: views that switch on it must not be
    /// rebuilt when `me` changes but the answer does not.
    pub fn in_room(&self) -> bool {
        self.me.with(Option::is_some) || self.returning.get()
    }

    /// Remembers the name the reader leaves the room under, for this tab: the join form
    /// offers it again, here and in the room the reader goes to next (a new page state,
    /// hence the tab's `sessionStorage`).
    pub fn set_left_as(&self, name: Option<String>) {
        #[cfg(feature = "browser")]
        if let Some(storage) = web_sys::window().and_then(|w| w.session_storage().ok().flatten()) {
            let _ = match &name {
                Some(name) => storage.set_item(LEFT_AS_KEY, name),
                None => storage.remove_item(LEFT_AS_KEY),
            };
        }
        self.left_as.set_value(name);
    }

    /// The name [`Self::set_left_as`] remembered on this page or earlier in this tab.
    pub fn left_as(&self) -> Option<String> {
        #[cfg(feature = "browser")]
        if let Some(name) = web_sys::window()
            .and_then(|w| w.session_storage().ok().flatten())
            .and_then(|storage| storage.get_item(LEFT_AS_KEY).ok().flatten())
        {
            return Some(name);
        }
        self.left_as.get_value()
    }

    /// Hands user actions to a client; without one (server rendering) they are dropped.
    pub fn connect_actions(&self, sender: UnboundedSender<Action>) {
        self.actions.set_value(Some(sender));
    }

    pub fn dispatch(&self, action: Action) {
        self.actions.with_value(|sender| {
            if let Some(sender) = sender {
                let _ = sender.unbounded_send(action);
            }
        });
    }

    /// Copies the parts of the core's view named by `dirty` into the signals.
    pub fn apply(&self, view: &View, lines: &[Line], dirty: Dirty) {
        if dirty.contains(Dirty::CONNECTION) {
            self.connection.set(view.connection);
        }
        if dirty.contains(Dirty::ME) {
            self.me.set(view.me.clone());
            // Only on a change: the page switches between room and join form on it. (And
            // `try_`: a room route being left may still be handed a last view.)
            if self.returning.try_get_untracked() != Some(view.returning) {
                self.returning.set(view.returning);
            }
            self.joining.set(view.joining);
            self.join_error.set(view.join_error.clone());
        }
        if dirty.contains(Dirty::MEMBERS) {
            self.members.set(view.members.clone());
            self.online.set(view.online);
        }
        if dirty.contains(Dirty::LINES) {
            self.lines.set(lines.to_vec());
            if self.new_since.try_get_untracked() != Some(view.new_since) {
                self.new_since.set(view.new_since);
            }
        }
        if dirty.contains(Dirty::TYPING) {
            self.typing.set(view.typing.clone());
        }
        if dirty.contains(Dirty::HISTORY) {
            self.older_available.set(view.older_available);
            self.loading_older.set(view.loading_older);
        }
        if dirty.contains(Dirty::ROOMS) {
            self.rooms.set(view.rooms.clone());
            self.unread_total.set(view.unread_total);
            self.mentions_total.set(view.mentions_total);
        }
        if dirty.contains(Dirty::THROTTLED) {
            self.throttled.set(view.throttled);
        }
        if dirty.contains(Dirty::RECONNECT) {
            self.reconnect_in.set(view.reconnect_in);
        }
        if dirty.contains(Dirty::SEARCH) {
            self.search.set(view.search.clone());
        }
        if dirty.contains(Dirty::FOCUS) {
            self.focus.set(view.focus);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::returning_in_cookies;

    #[test]
    fn the_returning_cookie_is_found_among_others_and_only_with_its_value() {
        assert!(returning_in_cookies("banter_returning=1"));
        assert!(returning_in_cookies("a=b; banter_returning=1; c=d"));
        assert!(!returning_in_cookies(""));
        assert!(!returning_in_cookies("banter_returning=0"));
        assert!(!returning_in_cookies("xbanter_returning=1"));
        assert!(!returning_in_cookies("banter_returning"));
    }
}
