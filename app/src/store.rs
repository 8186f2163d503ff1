//! What the chat page shows, as reactive signals, and the pure rules that change it.
//!
//! The browser client (see `client`) writes here; components only read and send
//! [`Action`]s. Everything in this file also runs during server rendering, where no
//! connection exists and the page renders its initial, empty state.

use futures::channel::mpsc::UnboundedSender;
use leptos::prelude::*;

use crate::protocol::{Message, RoomInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Online,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Written here, not yet acknowledged by the server.
    Pending,
    Delivered,
    /// Refused by the server, with its reason.
    Failed(String),
}

impl Delivery {
    pub fn as_str(&self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Message {
        /// The server's id once delivered.
        id: Option<u64>,
        client_id: String,
        author: String,
        text: String,
        status: Delivery,
    },
    Notice(String),
}

/// One row of the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Local identity of the row, stable across status changes.
    pub uid: u64,
    pub ts: i64,
    pub kind: LineKind,
}

impl Line {
    /// The key a list renders by: a row is redrawn when its delivery state changes.
    pub fn render_key(&self) -> (u64, &'static str) {
        match &self.kind {
            LineKind::Message { status, .. } => (self.uid, status.as_str()),
            LineKind::Notice(_) => (self.uid, "notice"),
        }
    }
}

/// Something the user asked for; the browser client carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Join(String),
    Send(String),
    Retry(u64),
    Discard(u64),
    Typing(bool),
    Leave,
    /// Fetch the page of history before the oldest message shown.
    LoadOlder,
}

#[derive(Clone, Copy)]
pub struct ChatStore {
    pub room: StoredValue<String>,
    pub connection: RwSignal<Connection>,
    /// True once the wasm app has hydrated and can act on input.
    pub hydrated: RwSignal<bool>,
    /// The name this page is joined under, once the server accepted it.
    pub me: RwSignal<Option<String>>,
    pub joining: RwSignal<bool>,
    pub join_error: RwSignal<Option<String>>,
    pub members: RwSignal<Vec<String>>,
    pub lines: RwSignal<Vec<Line>>,
    pub typing: RwSignal<Vec<String>>,
    /// Whether the server may hold messages older than the oldest one shown.
    pub older_available: RwSignal<bool>,
    pub loading_older: RwSignal<bool>,
    /// Every room, as the server last listed them.
    pub rooms: RwSignal<Vec<RoomInfo>>,
    /// The newest message id read per room (from localStorage), for unread counts.
    pub last_read: RwSignal<std::collections::HashMap<String, u64>>,
    /// Set while the server asked us to slow down: seconds until sending resumes.
    pub throttled: RwSignal<Option<u64>>,
    next_uid: StoredValue<u64>,
    actions: StoredValue<Option<UnboundedSender<Action>>>,
}

impl ChatStore {
    pub fn new(room: String) -> Self {
        Self {
            room: StoredValue::new(room),
            connection: RwSignal::new(Connection::Connecting),
            hydrated: RwSignal::new(false),
            me: RwSignal::new(None),
            joining: RwSignal::new(false),
            join_error: RwSignal::new(None),
            members: RwSignal::new(Vec::new()),
            lines: RwSignal::new(Vec::new()),
            typing: RwSignal::new(Vec::new()),
            older_available: RwSignal::new(false),
            loading_older: RwSignal::new(false),
            rooms: RwSignal::new(Vec::new()),
            last_read: RwSignal::new(std::collections::HashMap::new()),
            throttled: RwSignal::new(None),
            next_uid: StoredValue::new(0),
            actions: StoredValue::new(None),
        }
    }

    pub fn room(&self) -> String {
        self.room.get_value()
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

    pub fn next_uid(&self) -> u64 {
        self.next_uid.update_value(|uid| *uid += 1);
        self.next_uid.get_value()
    }

    pub fn push_notice(&self, text: String, ts: i64) {
        let uid = self.next_uid();
        self.lines.update(|lines| {
            lines.push(Line {
                uid,
                ts,
                kind: LineKind::Notice(text),
            })
        });
    }

    /// Adds messages from the server (history or live), each once, in id order.
    pub fn merge_messages(&self, messages: Vec<Message>) {
        let uids: Vec<u64> = messages.iter().map(|_| self.next_uid()).collect();
        self.lines
            .update(|lines| merge_messages(lines, messages.into_iter().zip(uids)));
    }
}

/// Messages in a room newer than the newest one read there.
pub fn unread(room: &RoomInfo, last_read: &std::collections::HashMap<String, u64>) -> u64 {
    room.last_id
        .saturating_sub(last_read.get(&room.name).copied().unwrap_or(0))
}

/// The newest and oldest server ids in the log.
pub fn id_range(lines: &[Line]) -> Option<(u64, u64)> {
    let ids = lines.iter().filter_map(|line| match &line.kind {
        LineKind::Message { id: Some(id), .. } => Some(*id),
        _ => None,
    });
    ids.fold(None, |range, id| match range {
        None => Some((id, id)),
        Some((low, high)) => Some((low.min(id), high.max(id))),
    })
}

/// Merges server messages into the log: a message already shown (by id, or a pending
/// one of ours with the same client_id and author) is updated in place, and a new one is
/// placed after every delivered message with a smaller id, so the log stays in server
/// order without gaps or duplicates.
pub fn merge_messages(lines: &mut Vec<Line>, messages: impl IntoIterator<Item = (Message, u64)>) {
    for (message, uid) in messages {
        let same_id = lines.iter().position(|line| {
            matches!(&line.kind, LineKind::Message { id: Some(id), .. } if *id == message.id)
        });
        if let Some(index) = same_id {
            lines[index].ts = message.ts;
            lines[index].kind = delivered(message);
            continue;
        }
        // Our own message, confirmed: it leaves the pending tail for its place in id
        // order (usually the end, but an old one whose ack was lost belongs further up).
        let pending = lines.iter().position(|line| match &line.kind {
            LineKind::Message {
                id: None,
                client_id,
                author,
                ..
            } => *client_id == message.client_id && *author == message.author,
            _ => false,
        });
        let uid = match pending {
            Some(index) => lines.remove(index).uid,
            None => uid,
        };
        let position = lines
            .iter()
            .position(|line| match &line.kind {
                LineKind::Message { id: Some(id), .. } => *id > message.id,
                LineKind::Message { id: None, .. } => true,
                LineKind::Notice(_) => false,
            })
            .unwrap_or(lines.len());
        lines.insert(
            position,
            Line {
                uid,
                ts: message.ts,
                kind: delivered(message),
            },
        );
    }
}

fn delivered(message: Message) -> LineKind {
    LineKind::Message {
        id: Some(message.id),
        client_id: message.client_id,
        author: message.author,
        text: message.text,
        status: Delivery::Delivered,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64, author: &str, client_id: &str) -> Message {
        Message {
            id,
            room: "general".into(),
            author: author.into(),
            text: format!("text {id}"),
            ts: id as i64,
            client_id: client_id.into(),
        }
    }

    fn pending(uid: u64, author: &str, client_id: &str) -> Line {
        Line {
            uid,
            ts: 0,
            kind: LineKind::Message {
                id: None,
                client_id: client_id.into(),
                author: author.into(),
                text: "draft".into(),
                status: Delivery::Pending,
            },
        }
    }

    fn ids(lines: &[Line]) -> Vec<Option<u64>> {
        lines
            .iter()
            .filter_map(|line| match &line.kind {
                LineKind::Message { id, .. } => Some(*id),
                LineKind::Notice(_) => None,
            })
            .collect()
    }

    #[test]
    fn merging_keeps_server_order_without_duplicates() {
        let mut lines = Vec::new();
        merge_messages(&mut lines, [(msg(2, "a", "x2"), 1), (msg(4, "a", "x4"), 2)]);
        merge_messages(&mut lines, [(msg(1, "b", "y1"), 3), (msg(3, "b", "y3"), 4)]);
        merge_messages(&mut lines, [(msg(3, "b", "y3"), 5), (msg(5, "b", "y5"), 6)]);
        assert_eq!(
            ids(&lines),
            vec![Some(1), Some(2), Some(3), Some(4), Some(5)]
        );
    }

    #[test]
    fn a_pending_message_is_confirmed_in_place() {
        let mut lines = vec![pending(1, "alice", "c1"), pending(2, "alice", "c2")];
        merge_messages(&mut lines, [(msg(7, "alice", "c1"), 3)]);
        assert_eq!(ids(&lines), vec![Some(7), None]);
        assert_eq!(lines[0].uid, 1);
        assert!(matches!(
            &lines[0].kind,
            LineKind::Message {
                status: Delivery::Delivered,
                ..
            }
        ));
        // Another author's message with the same client_id is a different message.
        merge_messages(&mut lines, [(msg(8, "bob", "c2"), 4)]);
        assert_eq!(ids(&lines), vec![Some(7), Some(8), None]);
    }

    #[test]
    fn a_confirmed_old_message_moves_to_its_place_in_id_order() {
        let mut lines = Vec::new();
        merge_messages(
            &mut lines,
            [(msg(1, "bob", "b1"), 1), (msg(3, "bob", "b3"), 2)],
        );
        lines.push(pending(3, "alice", "lost-ack"));
        merge_messages(&mut lines, [(msg(2, "alice", "lost-ack"), 4)]);
        assert_eq!(ids(&lines), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(lines[1].uid, 3, "the row keeps its identity");
    }

    #[test]
    fn new_messages_go_before_pending_ones() {
        let mut lines = vec![pending(1, "alice", "c1")];
        merge_messages(&mut lines, [(msg(1, "bob", "b1"), 2)]);
        assert_eq!(ids(&lines), vec![Some(1), None]);
    }

    #[test]
    fn unread_counts_what_came_after_the_last_read_id() {
        let room = RoomInfo {
            name: "dev".into(),
            online: 1,
            last_id: 12,
            last_ts: Some(1),
        };
        let mut read = std::collections::HashMap::new();
        assert_eq!(unread(&room, &read), 12);
        read.insert("dev".to_owned(), 10);
        assert_eq!(unread(&room, &read), 2);
        read.insert("dev".to_owned(), 15);
        assert_eq!(unread(&room, &read), 0);
    }

    #[test]
    fn typing_text_names_who_is_typing() {
        assert_eq!(typing_text(&[]), None);
        assert_eq!(typing_text(&["bob".into()]).unwrap(), "bob is typing…");
        assert_eq!(
            typing_text(&["a".into(), "b".into()]).unwrap(),
            "a and b are typing…"
        );
        assert_eq!(
            typing_text(&["a".into(), "b".into(), "c".into(), "d".into()]).unwrap(),
            "a, b and 2 more are typing…"
        );
    }
}
