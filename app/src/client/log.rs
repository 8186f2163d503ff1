//! The message log as the page shows it, and the rules that merge what the server sends
//! into it.
//!
//! **Why here.** Merging is where "nothing lost, nothing shown twice" is won or lost: a
//! message can arrive live, in a join reply, in a catch-up page, in a history page and
//! in the ack of our own send, in any interleaving; a changed message can arrive in an
//! `updated` event or in a join reply's `updates`. One set of rules, with no I/O, tested
//! on its own, keeps every path consistent.
//!
//! **Rules (guaranteed).**
//! - Messages are keyed by `id`: one line per id, in id order among delivered lines.
//! - Versions are ordered by `rev` ([`Message::version`]): a version replaces the one
//!   shown only when it is higher, so a late, older copy never undoes a change.
//! - Our own pending message is confirmed in place: the line with the same `client_id`
//!   and author becomes the delivered message, keeps its identity (`uid`), and moves to
//!   its place in id order (usually the end, but a message whose ack was lost may belong
//!   further up).
//! - Pending lines stay after every delivered line, in the order they were written.
//! - A deleted message stays as a placeholder line (`deleted`, empty text).
//! - Changes still in the outbox are shown applied on top of the server's version
//!   (an edit's text, a delete, a reaction), with the line's status `Pending`, or
//!   `Failed` with the reason when the server refused one (a refused change is shown
//!   unapplied).
//! - Gaps: the log may hold separate runs of messages (after jumping to an old message).
//!   A line with `gap_before` says messages just older than it may be missing.
//!
//! **Not guaranteed.** Changes to messages the log does not hold are dropped (a history
//! page brings their current version when they are needed). Notices ("bob joined") are
//! placed where they happened and are not kept in id order.

use crate::client::outbox::{Change, Item, Outbox};
use crate::protocol::{excerpt, Message, Reaction, ReplyPreview};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Written here (or changed here), not yet acknowledged by the server.
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

    /// What the page shows next to a message in this state.
    pub fn label(&self) -> &'static str {
        match self {
            Delivery::Pending => "sending…",
            Delivery::Delivered => "",
            Delivery::Failed(_) => "not sent",
        }
    }
}

/// A message as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLine {
    /// The server's id once delivered.
    pub id: Option<u64>,
    pub client_id: String,
    pub author: String,
    /// As shown: with a pending edit applied; empty once deleted.
    pub text: String,
    pub status: Delivery,
    /// The version shown (0 while pending).
    pub rev: u64,
    pub edited_ts: Option<i64>,
    pub deleted: bool,
    pub reply_to: Option<ReplyPreview>,
    pub reactions: Vec<Reaction>,
    /// Messages just older than this one may be missing (`Action::FillGap(id)`).
    pub gap_before: bool,
}

// Nearly every line is a message: boxing it would cost an allocation per line to save
// the space of the rare notices.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineKind {
    Message(MessageLine),
    Notice(String),
}

/// One row of the message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Local identity of the row, stable across status changes and confirmation.
    pub uid: u64,
    pub ts: i64,
    /// Changes whenever anything shown in the row changes.
    pub revision: u64,
    pub kind: LineKind,
}

impl Line {
    /// The key a list renders by: a row is redrawn when anything in it changes.
    pub fn render_key(&self) -> (u64, u64) {
        (self.uid, self.revision)
    }

    pub fn message(&self) -> Option<&MessageLine> {
        match &self.kind {
            LineKind::Message(message) => Some(message),
            LineKind::Notice(_) => None,
        }
    }

    fn delivered_id(&self) -> Option<u64> {
        self.message().and_then(|m| m.id)
    }

    fn is_pending(&self) -> bool {
        self.message().is_some_and(|m| m.id.is_none())
    }
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// A message the log did not hold.
    Added,
    /// A higher version of a message it held.
    Replaced,
    /// Nothing: the same or an older version, or a change to a message not held.
    Unchanged,
}

#[derive(Debug, Clone, Default)]
pub struct Log {
    lines: Vec<Line>,
    /// The server's latest version of every delivered message shown.
    messages: ById,
    /// Ids with messages just older than them possibly missing (few).
    gaps: Vec<u64>,
    next_uid: u64,
    next_revision: u64,
}

impl Log {
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    pub fn message(&self, id: u64) -> Option<&Message> {
        self.messages.get(id)
    }

    pub fn holds(&self, id: u64) -> bool {
        self.messages.get(id).is_some()
    }

    pub fn oldest_id(&self) -> Option<u64> {
        self.messages.0.first().map(|m| m.id)
    }

    pub fn newest_id(&self) -> Option<u64> {
        self.messages.0.last().map(|m| m.id)
    }

    /// The messages held with ids above `id`, oldest first.
    pub fn messages_after(&self, id: u64) -> impl Iterator<Item = &Message> {
        self.messages.0[self.messages.above(id)..].iter()
    }

    /// The newest id held below `id`.
    pub fn held_below(&self, id: u64) -> Option<u64> {
        let below = self.messages.0.partition_point(|m| m.id < id);
        below.checked_sub(1).map(|i| self.messages.0[i].id)
    }

    /// The oldest id held above `id`.
    pub fn held_above(&self, id: u64) -> Option<u64> {
        self.messages.0.get(self.messages.above(id)).map(|m| m.id)
    }

    pub fn is_gap(&self, id: u64) -> bool {
        self.gaps.contains(&id)
    }

    pub fn gaps(&self) -> impl Iterator<Item = u64> + '_ {
        self.gaps.iter().copied()
    }

    fn uid(&mut self) -> u64 {
        self.next_uid += 1;
        self.next_uid
    }

    fn revision(&mut self) -> u64 {
        self.next_revision += 1;
        self.next_revision
    }

    pub fn push_notice(&mut self, text: String, ts: i64) {
        let uid = self.uid();
        let revision = self.revision();
        self.lines.push(Line {
            uid,
            ts,
            revision,
            kind: LineKind::Notice(text),
        });
    }

    /// Shows a new message of ours from the outbox, after everything else.
    pub fn push_pending(&mut self, item: &Item) {
        let uid = self.uid();
        let revision = self.revision();
        let message = self.pending_line(item);
        self.lines.push(Line {
            uid,
            ts: item.ts,
            revision,
            kind: LineKind::Message(message),
        });
    }

    fn pending_line(&self, item: &Item) -> MessageLine {
        let (text, reply_to) = match &item.change {
            Change::Send { text, reply_to } => (text.clone(), *reply_to),
            _ => (String::new(), None),
        };
        MessageLine {
            id: None,
            client_id: item.client_id.clone(),
            author: item.author.clone(),
            text,
            status: match &item.failed {
                Some(reason) => Delivery::Failed(reason.clone()),
                None => Delivery::Pending,
            },
            rev: 0,
            edited_ts: None,
            deleted: false,
            reply_to: reply_to.map(|id| self.preview(id)),
            reactions: Vec::new(),
            gap_before: false,
        }
    }

    /// The quote a reply shows of message `id`, from what the log holds.
    fn preview(&self, id: u64) -> ReplyPreview {
        match self.messages.get(id) {
            Some(message) => ReplyPreview {
                id,
                author: message.author.clone(),
                excerpt: excerpt(&message.text),
                deleted: message.deleted,
            },
            None => ReplyPreview {
                id,
                author: String::new(),
                excerpt: String::new(),
                deleted: false,
            },
        }
    }

    fn index_of_pending(&self, client_id: &str) -> Option<usize> {
        self.lines.iter().position(|line| {
            line.message()
                .is_some_and(|m| m.id.is_none() && m.client_id == client_id)
        })
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| line.delivered_id() == Some(id))
    }

    /// Merges a message from the server. `add` says whether an id not held may be added
    /// (a new message) or only updated (a change).
    pub fn merge(&mut self, message: Message, add: bool, outbox: &Outbox) -> Merged {
        let id = message.id;
        if let Some(held) = self.messages.get(id) {
            if message.version() <= held.version() {
                return Merged::Unchanged;
            }
            self.messages.insert(message);
            self.refresh(id, outbox);
            return Merged::Replaced;
        }
        if !add {
            return Merged::Unchanged;
        }
        // Our own message, confirmed: it leaves the pending tail for its place in id order.
        let pending = self.lines.iter().position(|line| {
            line.message().is_some_and(|m| {
                m.id.is_none() && m.client_id == message.client_id && m.author == message.author
            })
        });
        let uid = match pending {
            Some(index) => self.lines.remove(index).uid,
            None => self.uid(),
        };
        let position = self
            .lines
            .iter()
            .position(|line| match line.message() {
                Some(MessageLine {
                    id: Some(other), ..
                }) => *other > id,
                Some(MessageLine { id: None, .. }) => true,
                None => false,
            })
            .unwrap_or(self.lines.len());
        let ts = message.ts;
        self.messages.insert(message);
        let revision = self.revision();
        // Filled in by `refresh` below.
        self.lines.insert(
            position,
            Line {
                uid,
                ts,
                revision,
                kind: LineKind::Notice(String::new()),
            },
        );
        self.render_at(position, id, outbox);
        // Replies of ours waiting to go out quote this message now.
        self.refresh_replies_to(id, outbox);
        Merged::Added
    }

    /// Redraws the line of delivered message `id` from the server's version and the
    /// changes waiting in the outbox.
    pub fn refresh(&mut self, id: u64, outbox: &Outbox) {
        if let Some(index) = self.index_of(id) {
            self.render_at(index, id, outbox);
        }
        self.refresh_replies_to(id, outbox);
    }

    fn refresh_replies_to(&mut self, id: u64, outbox: &Outbox) {
        let waiting: Vec<&Item> = outbox
            .items()
            .iter()
            .filter(
                |item| matches!(item.change, Change::Send { reply_to: Some(to), .. } if to == id),
            )
            .collect();
        for item in waiting {
            self.refresh_pending(item);
        }
    }

    fn render_at(&mut self, index: usize, id: u64, outbox: &Outbox) {
        let Some(message) = self.messages.get(id) else {
            return;
        };
        let mut line = MessageLine {
            id: Some(id),
            client_id: message.client_id.clone(),
            author: message.author.clone(),
            text: message.text.clone(),
            status: Delivery::Delivered,
            rev: message.version(),
            edited_ts: message.edited_ts,
            deleted: message.deleted,
            reply_to: message.reply_to.clone(),
            reactions: message.reactions.clone(),
            gap_before: self.gaps.contains(&id),
        };
        let mut failed = None;
        for item in outbox.changes_to(id) {
            if let Some(reason) = &item.failed {
                failed.get_or_insert_with(|| reason.clone());
                continue;
            }
            line.status = Delivery::Pending;
            match &item.change {
                Change::Edit { text, .. } => {
                    line.text.clone_from(text);
                    line.edited_ts = Some(item.ts);
                }
                Change::Delete { .. } => {
                    line.deleted = true;
                    line.text.clear();
                    line.reactions.clear();
                    line.reply_to = None;
                }
                Change::React { emoji, add, .. } => {
                    react(&mut line.reactions, emoji, &item.author, *add)
                }
                Change::Send { .. } => {}
            }
        }
        if let Some(reason) = failed {
            line.status = Delivery::Failed(reason);
        }
        let ts = message.ts;
        let revision = self.revision();
        let row = &mut self.lines[index];
        if row.kind != LineKind::Message(line.clone()) || row.ts != ts {
            row.kind = LineKind::Message(line);
            row.ts = ts;
            row.revision = revision;
        }
    }

    /// Redraws our pending new message `item` (its status changed).
    pub fn refresh_pending(&mut self, item: &Item) {
        let Some(index) = self.index_of_pending(&item.client_id) else {
            return;
        };
        let line = self.pending_line(item);
        let revision = self.revision();
        let row = &mut self.lines[index];
        if row.kind != LineKind::Message(line.clone()) {
            row.kind = LineKind::Message(line);
            row.revision = revision;
        }
    }

    /// Drops a pending new message of ours (discarded).
    pub fn remove_pending(&mut self, client_id: &str) {
        if let Some(index) = self.index_of_pending(client_id) {
            self.lines.remove(index);
        }
    }

    /// Renames the author of our pending lines (joined under another name).
    pub fn rename_pending(&mut self, outbox: &Outbox) {
        for item in outbox.items() {
            self.refresh_pending(item);
        }
    }

    /// Forgets every delivered message, gap and notice; our pending lines stay.
    pub fn clear_delivered(&mut self) {
        self.lines.retain(Line::is_pending);
        self.messages.clear();
        self.gaps.clear();
    }

    /// Keeps at most `keep` delivered messages: when the log holds more than `keep` plus
    /// [`TRIM_SLACK`], the oldest ones leave (with the notices above them) until `keep`
    /// remain. Pending lines always stay. Returns whether anything left; what left comes
    /// back as history when the reader scrolls up to it.
    ///
    /// The slack makes a trim rare (once per [`TRIM_SLACK`] new messages) rather than a
    /// re-render of the top of the list at every message.
    pub fn trim_oldest(&mut self, keep: usize) -> bool {
        let held = self.messages.0.len();
        if held <= keep + TRIM_SLACK {
            return false;
        }
        let Some(first_kept) = self.messages.0.get(held - keep).map(|m| m.id) else {
            return false;
        };
        self.messages.0.drain(..held - keep);
        self.gaps.retain(|id| *id >= first_kept);
        // Lines are in id order among delivered ones, notices where they happened: drop
        // everything before the first kept message's line but pending ones.
        let cut = self.index_of(first_kept).unwrap_or(0);
        let mut index = 0;
        self.lines.retain(|line| {
            index += 1;
            index > cut || line.is_pending()
        });
        true
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.messages.clear();
        self.gaps.clear();
    }

    /// Marks or clears a gap just below held message `id`.
    pub fn set_gap(&mut self, id: u64, gap: bool, outbox: &Outbox) {
        let held = self.gaps.iter().position(|g| *g == id);
        let changed = match (gap, held) {
            (true, None) if self.holds(id) => {
                self.gaps.push(id);
                true
            }
            (false, Some(index)) => {
                self.gaps.swap_remove(index);
                true
            }
            _ => false,
        };
        if changed {
            self.refresh(id, outbox);
        }
    }
}

/// How far past its bound the log may grow before [`Log::trim_oldest`] cuts it back.
pub const TRIM_SLACK: usize = 100;

/// Messages sorted by id: a vector rather than a `BTreeMap`, whose code for one more
/// key and value type costs the wasm more than a binary search does (messages mostly
/// arrive at the ends).
#[derive(Debug, Clone, Default)]
struct ById(Vec<Message>);

impl ById {
    fn get(&self, id: u64) -> Option<&Message> {
        let index = self.0.binary_search_by_key(&id, |m| m.id).ok()?;
        self.0.get(index)
    }

    /// The index of the first message with an id above `id`.
    fn above(&self, id: u64) -> usize {
        self.0.partition_point(|m| m.id <= id)
    }

    fn insert(&mut self, message: Message) {
        match self.0.binary_search_by_key(&message.id, |m| m.id) {
            Ok(index) => self.0[index] = message,
            Err(index) => self.0.insert(index, message),
        }
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Adds or takes back `name`'s reaction with `emoji`, as the server would.
fn react(reactions: &mut Vec<Reaction>, emoji: &str, name: &str, add: bool) {
    let index = reactions.iter().position(|r| r.emoji == emoji);
    match (index, add) {
        (Some(i), true) => {
            if !reactions[i].names.iter().any(|n| n == name) {
                reactions[i].names.push(name.to_owned());
            }
        }
        (None, true) => reactions.push(Reaction {
            emoji: emoji.to_owned(),
            names: vec![name.to_owned()],
        }),
        (Some(i), false) => {
            reactions[i].names.retain(|n| n != name);
            if reactions[i].names.is_empty() {
                reactions.remove(i);
            }
        }
        (None, false) => {}
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
            ..Message::default()
        }
    }

    fn send(client_id: &str) -> Item {
        Item {
            client_id: client_id.into(),
            author: "alice".into(),
            ts: 0,
            change: Change::Send {
                text: "draft".into(),
                reply_to: None,
            },
            failed: None,
        }
    }

    fn ids(log: &Log) -> Vec<Option<u64>> {
        log.lines()
            .iter()
            .filter_map(|line| line.message().map(|m| m.id))
            .collect()
    }

    fn shown(log: &Log, id: u64) -> MessageLine {
        log.lines()
            .iter()
            .find_map(|line| line.message().filter(|m| m.id == Some(id)).cloned())
            .unwrap()
    }

    #[test]
    fn merging_keeps_id_order_without_duplicates() {
        let outbox = Outbox::default();
        let mut log = Log::default();
        for id in [2, 4, 1, 3, 3, 5] {
            log.merge(msg(id, "b", &format!("b{id}")), true, &outbox);
        }
        assert_eq!(ids(&log), [1, 2, 3, 4, 5].map(Some));
    }

    #[test]
    fn a_pending_message_is_confirmed_in_place() {
        let mut outbox = Outbox::default();
        let mut log = Log::default();
        for item in [send("c1"), send("c2")] {
            log.push_pending(&item);
            outbox.push(item);
        }
        let uid = log.lines()[0].uid;
        outbox.remove("c1");
        log.merge(msg(7, "alice", "c1"), true, &outbox);
        assert_eq!(ids(&log), vec![Some(7), None]);
        assert_eq!(log.lines()[0].uid, uid);
        assert_eq!(shown(&log, 7).status, Delivery::Delivered);
        // Another author's message with the same client_id is a different message.
        log.merge(msg(8, "bob", "c2"), true, &outbox);
        assert_eq!(ids(&log), vec![Some(7), Some(8), None]);
    }

    #[test]
    fn a_confirmed_old_message_moves_to_its_place_in_id_order() {
        let outbox = Outbox::default();
        let mut log = Log::default();
        log.merge(msg(1, "bob", "b1"), true, &outbox);
        log.merge(msg(3, "bob", "b3"), true, &outbox);
        log.push_pending(&send("lost-ack"));
        let uid = log.lines()[2].uid;
        log.merge(msg(2, "alice", "lost-ack"), true, &outbox);
        assert_eq!(ids(&log), vec![Some(1), Some(2), Some(3)]);
        assert_eq!(log.lines()[1].uid, uid, "the row keeps its identity");
    }

    #[test]
    fn only_higher_versions_replace_and_changes_to_unknown_ids_are_dropped() {
        let outbox = Outbox::default();
        let mut log = Log::default();
        log.merge(msg(5, "bob", "b5"), true, &outbox);
        let mut edited = msg(5, "bob", "b5");
        edited.text = "edited".into();
        edited.rev = 9;
        assert_eq!(log.merge(edited.clone(), false, &outbox), Merged::Replaced);
        let revision = log.lines()[0].revision;
        // A late copy of the first version changes nothing.
        assert_eq!(
            log.merge(msg(5, "bob", "b5"), true, &outbox),
            Merged::Unchanged
        );
        assert_eq!(log.merge(edited, true, &outbox), Merged::Unchanged);
        assert_eq!(log.lines()[0].revision, revision);
        assert_eq!(shown(&log, 5).text, "edited");
        let mut deleted = msg(5, "bob", "b5");
        deleted.text.clear();
        deleted.deleted = true;
        deleted.rev = 12;
        log.merge(deleted, false, &outbox);
        assert!(
            shown(&log, 5).deleted,
            "a deleted message stays as a placeholder"
        );
        assert_eq!(
            log.merge(msg(2, "bob", "b2"), false, &outbox),
            Merged::Unchanged
        );
        assert!(!log.holds(2));
    }

    #[test]
    fn pending_changes_show_on_top_of_the_servers_version() {
        let mut outbox = Outbox::default();
        let mut log = Log::default();
        log.merge(msg(5, "alice", "a5"), true, &outbox);
        let change = |client_id: &str, change| Item {
            client_id: client_id.into(),
            author: "alice".into(),
            ts: 99,
            change,
            failed: None,
        };
        outbox.push(change(
            "e",
            Change::Edit {
                id: 5,
                text: "better".into(),
            },
        ));
        outbox.push(change(
            "r",
            Change::React {
                id: 5,
                emoji: "👍".into(),
                add: true,
            },
        ));
        log.refresh(5, &outbox);
        let line = shown(&log, 5);
        assert_eq!(
            (line.text.as_str(), &line.status),
            ("better", &Delivery::Pending)
        );
        assert_eq!(line.reactions[0].names, vec!["alice".to_owned()]);
        outbox.get_mut("e").unwrap().failed = Some("Too late.".into());
        log.refresh(5, &outbox);
        let line = shown(&log, 5);
        assert_eq!(line.text, "text 5", "a refused edit is not shown applied");
        assert_eq!(line.status, Delivery::Failed("Too late.".into()));
        outbox.clear();
        outbox.push(change("d", Change::Delete { id: 5 }));
        log.refresh(5, &outbox);
        assert!(shown(&log, 5).deleted);
        outbox.clear();
        log.refresh(5, &outbox);
        assert_eq!(shown(&log, 5).status, Delivery::Delivered);
    }

    #[test]
    fn new_messages_go_before_pending_ones_and_reset_keeps_them() {
        let outbox = Outbox::default();
        let mut log = Log::default();
        log.push_pending(&send("c1"));
        log.push_notice("bob joined".into(), 1);
        log.merge(msg(1, "bob", "b1"), true, &outbox);
        assert_eq!(ids(&log), vec![Some(1), None]);
        log.set_gap(1, true, &outbox);
        assert!(shown(&log, 1).gap_before);
        log.clear_delivered();
        assert_eq!(ids(&log), vec![None]);
        assert_eq!(log.lines().len(), 1);
        assert_eq!(log.gaps().count(), 0);
    }
}
