//! The outbox: what this person asked to change in a room and the server has not yet
//! confirmed, as an ordered queue.
//!
//! **Why a queue of its own.** Every change (a new message, an edit, a delete, a
//! reaction) must reach the server once and in the order it was made, across lost acks,
//! reconnects and reloads. Keeping the queue explicit, rather than deriving it from the
//! rendered log, makes that order a property of one data structure, lets changes to
//! messages already delivered wait in it too, and means it is written to storage only
//! when it changes (never because a message from someone else arrived).
//!
//! **Guaranteed.** Items keep the order they were added in; an item's request is built
//! from the item alone, so a resend is byte for byte the first send (same `client_id`),
//! which the server applies once. [`Outbox::to_json`] and [`Outbox::from_json`] round-trip
//! every item; the stored form of a new message is the one earlier versions of the page
//! wrote (`{"client_id","author","text","ts"}`), so an outbox saved by them still loads.
//!
//! **Not here.** Which item goes next, and when, is the chat layer's business (one at a
//! time, the first one not failed, see `chat`); whether an item failed is not stored, so a
//! failed item is tried again after a reload.

use serde::{Deserialize, Serialize};

use crate::protocol::{DeleteRequest, EditRequest, ReactRequest, SendRequest};

/// One change this person made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Send { text: String, reply_to: Option<u64> },
    Edit { id: u64, text: String },
    Delete { id: u64 },
    React { id: u64, emoji: String, add: bool },
}

impl Change {
    /// The delivered message this change is about (none for a new message).
    pub fn target(&self) -> Option<u64> {
        match self {
            Change::Send { .. } => None,
            Change::Edit { id, .. } | Change::Delete { id } | Change::React { id, .. } => Some(*id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The idempotency key the server knows this change by.
    pub client_id: String,
    /// The name it was made under.
    pub author: String,
    /// When it was made, by this device's clock (shown until the server's time is known).
    pub ts: i64,
    pub change: Change,
    /// The server refused it, with its reason; it waits for Retry or Discard.
    pub failed: Option<String>,
}

/// A request ready to go out: one per kind of change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Send(SendRequest),
    Edit(EditRequest),
    Delete(DeleteRequest),
    React(ReactRequest),
}

impl Item {
    /// The request for this item in `room`; the same every time it is asked for.
    pub fn request(&self, room: &str) -> Outgoing {
        let room = room.to_owned();
        let client_id = self.client_id.clone();
        match &self.change {
            Change::Send { text, reply_to } => Outgoing::Send(SendRequest {
                room,
                text: text.clone(),
                client_id,
                reply_to: *reply_to,
            }),
            Change::Edit { id, text } => Outgoing::Edit(EditRequest {
                room,
                id: *id,
                text: text.clone(),
                client_id,
            }),
            Change::Delete { id } => Outgoing::Delete(DeleteRequest {
                room,
                id: *id,
                client_id,
            }),
            Change::React { id, emoji, add } => Outgoing::React(ReactRequest {
                room,
                id: *id,
                emoji: emoji.clone(),
                add: *add,
                client_id,
            }),
        }
    }
}

/// The stored form of an item: flat, with `kind` absent for a new message, as earlier
/// versions of the page stored them.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    client_id: String,
    author: String,
    #[serde(default)]
    ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<bool>,
}

impl Stored {
    fn from_item(item: &Item) -> Self {
        let mut stored = Stored {
            kind: None,
            client_id: item.client_id.clone(),
            author: item.author.clone(),
            ts: item.ts,
            text: None,
            reply_to: None,
            id: None,
            emoji: None,
            add: None,
        };
        match &item.change {
            Change::Send { text, reply_to } => {
                stored.text = Some(text.clone());
                stored.reply_to = *reply_to;
            }
            Change::Edit { id, text } => {
                stored.kind = Some("edit".into());
                stored.id = Some(*id);
                stored.text = Some(text.clone());
            }
            Change::Delete { id } => {
                stored.kind = Some("delete".into());
                stored.id = Some(*id);
            }
            Change::React { id, emoji, add } => {
                stored.kind = Some("react".into());
                stored.id = Some(*id);
                stored.emoji = Some(emoji.clone());
                stored.add = Some(*add);
            }
        }
        stored
    }

    /// The item, or none for a kind this version does not know or a broken entry.
    fn into_item(self) -> Option<Item> {
        let change = match self.kind.as_deref() {
            None | Some("message") => Change::Send {
                text: self.text?,
                reply_to: self.reply_to,
            },
            Some("edit") => Change::Edit {
                id: self.id?,
                text: self.text?,
            },
            Some("delete") => Change::Delete { id: self.id? },
            Some("react") => Change::React {
                id: self.id?,
                emoji: self.emoji?,
                add: self.add?,
            },
            Some(_) => return None,
        };
        Some(Item {
            client_id: self.client_id,
            author: self.author,
            ts: self.ts,
            change,
            failed: None,
        })
    }
}

/// The ordered queue of one room's unconfirmed changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    items: Vec<Item>,
}

impl Outbox {
    /// Reads a stored outbox; entries it cannot read are skipped, an unreadable store is
    /// an empty outbox.
    pub fn from_json(json: Option<&str>) -> Self {
        let stored: Vec<serde_json::Value> = json
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let items = stored
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Stored>(value).ok())
            .filter_map(Stored::into_item)
            .collect();
        Outbox { items }
    }

    /// The stored form; none when empty (the key is removed).
    pub fn to_json(&self) -> Option<String> {
        if self.items.is_empty() {
            return None;
        }
        let stored: Vec<Stored> = self.items.iter().map(Stored::from_item).collect();
        serde_json::to_string(&stored).ok()
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    pub fn get(&self, client_id: &str) -> Option<&Item> {
        self.items.iter().find(|item| item.client_id == client_id)
    }

    pub fn get_mut(&mut self, client_id: &str) -> Option<&mut Item> {
        self.items
            .iter_mut()
            .find(|item| item.client_id == client_id)
    }

    /// Takes an item out, wherever it is.
    pub fn remove(&mut self, client_id: &str) -> Option<Item> {
        let index = self
            .items
            .iter()
            .position(|item| item.client_id == client_id)?;
        Some(self.items.remove(index))
    }

    /// The first item that has not failed: the one to send next.
    pub fn next_pending(&self) -> Option<&Item> {
        self.items.iter().find(|item| item.failed.is_none())
    }

    /// The changes waiting for a delivered message, in order.
    pub fn changes_to(&self, id: u64) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .filter(move |item| item.change.target() == Some(id))
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Renames the author of every item (the person joined under another name).
    pub fn set_author(&mut self, author: &str) -> bool {
        let mut changed = false;
        for item in &mut self.items {
            if item.author != author {
                item.author = author.to_owned();
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(client_id: &str, change: Change) -> Item {
        Item {
            client_id: client_id.into(),
            author: "alice".into(),
            ts: 7,
            change,
            failed: None,
        }
    }

    #[test]
    fn every_kind_round_trips_in_order() {
        let mut outbox = Outbox::default();
        outbox.push(item(
            "a",
            Change::Send {
                text: "hi".into(),
                reply_to: None,
            },
        ));
        outbox.push(item(
            "b",
            Change::Send {
                text: "re".into(),
                reply_to: Some(3),
            },
        ));
        outbox.push(item(
            "c",
            Change::Edit {
                id: 3,
                text: "fixed".into(),
            },
        ));
        outbox.push(item("d", Change::Delete { id: 4 }));
        outbox.push(item(
            "e",
            Change::React {
                id: 3,
                emoji: "👍".into(),
                add: false,
            },
        ));
        let json = outbox.to_json().unwrap();
        assert_eq!(Outbox::from_json(Some(&json)), outbox);
        assert_eq!(Outbox::default().to_json(), None);
    }

    #[test]
    fn the_stored_form_of_a_message_is_the_earlier_one() {
        let stored = r#"[{"client_id":"c1","author":"alice","text":"one","ts":5},{"kind":"poll","client_id":"x","author":"a"},{"bad":1}]"#;
        let outbox = Outbox::from_json(Some(stored));
        assert_eq!(
            outbox.items(),
            &[item(
                "c1",
                Change::Send {
                    text: "one".into(),
                    reply_to: None
                }
            )
            .with_ts(5)]
        );
        assert_eq!(
            outbox.to_json().unwrap(),
            r#"[{"client_id":"c1","author":"alice","ts":5,"text":"one"}]"#
        );
        assert!(Outbox::from_json(Some("not json")).is_empty());
    }

    #[test]
    fn failed_items_are_skipped_but_keep_their_place() {
        let mut outbox = Outbox::default();
        outbox.push(item("a", Change::Delete { id: 1 }));
        outbox.push(item("b", Change::Delete { id: 2 }));
        outbox.get_mut("a").unwrap().failed = Some("no".into());
        assert_eq!(outbox.next_pending().unwrap().client_id, "b");
        outbox.get_mut("a").unwrap().failed = None;
        assert_eq!(outbox.next_pending().unwrap().client_id, "a");
        let request = outbox.get("a").unwrap().request("general");
        assert_eq!(request, outbox.get("a").unwrap().request("general"));
    }

    impl Item {
        fn with_ts(mut self, ts: i64) -> Self {
            self.ts = ts;
            self
        }
    }
}
