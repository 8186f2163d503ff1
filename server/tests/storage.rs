//! One conformance suite for every storage backend: what `server::storage::Storage`
//! promises (docs in `server/src/storage/mod.rs`), checked through the trait alone.
//!
//! Every backend runs the same `run_all`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use app::protocol::Message;
use server::storage::{
    Applied, Change, ChangeKind, ChangeRefusal, NameRecord, Owner, ReadLimit, RoomCursor, Storage,
};

mod process;

mod backends {
    use super::*;

    pub async fn sqlite() -> Arc<dyn Storage> {
        server::storage::open("sqlite::memory:").await.unwrap()
    }

    /// A fresh database on a PostgreSQL of its own, which lives as long as the storage
    /// is used (keep the server).
    pub async fn postgres() -> (process::Postgres, Arc<dyn Storage>) {
        let server = process::Postgres::start().await;
        let storage = server::storage::open(&server.url()).await.unwrap();
        (server, storage)
    }
}

const ANN: &str = "ann-owner";
const BOB: &str = "bob-owner";

fn change(room: &str, owner: &str, client_id: &str, kind: ChangeKind) -> Change {
    Change {
        room: room.into(),
        owner: Owner(owner.into()),
        author: owner.trim_end_matches("-owner").into(),
        client_id: client_id.into(),
        ts: 1_700_000_000_000,
        kind,
    }
}

fn post(room: &str, owner: &str, client_id: &str, text: &str) -> Change {
    change(
        room,
        owner,
        client_id,
        ChangeKind::Post {
            text: text.into(),
            reply_to: None,
        },
    )
}

fn stored(applied: &Applied) -> &Message {
    match applied {
        Applied::Stored(message) => message,
        other => panic!("expected Stored, got {other:?}"),
    }
}

async fn one(storage: &dyn Storage, change: Change) -> Applied {
    storage.append(vec![change]).await.unwrap().remove(0)
}

fn all() -> ReadLimit {
    ReadLimit {
        limit: 500,
        max_bytes: usize::MAX,
    }
}

/// Waits (a few seconds at most) until `check` holds: for what a backend may do a moment
/// after a commit (SQLite indexes moved rows for search).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never came true");
}

async fn posts_are_numbered_per_room_and_resends_are_applied_once(storage: &dyn Storage) {
    let results = storage
        .append(vec![
            post("a", ANN, "c1", "one"),
            post("b", ANN, "c1", "other room"),
            post("a", BOB, "c1", "same client_id, another session"),
            post("a", ANN, "c1", "resend in the same batch"),
        ])
        .await
        .unwrap();
    assert_eq!(stored(&results[0]).id, 1);
    assert_eq!(
        stored(&results[1]).id,
        1,
        "rooms have sequences of their own"
    );
    assert_eq!(
        stored(&results[2]).id,
        2,
        "a client_id is scoped to its session"
    );
    assert_eq!(results[3], Applied::Duplicate(stored(&results[0]).clone()));
    let again = one(storage, post("a", ANN, "c1", "resend later")).await;
    assert_eq!(again, Applied::Duplicate(stored(&results[0]).clone()));
    assert_eq!(
        storage.last_seq("a").await.unwrap(),
        2,
        "a resend burns no number"
    );
    let next = one(storage, post("a", ANN, "c2", "two")).await;
    assert_eq!(stored(&next).id, 3);
    assert_eq!(stored(&next).rev, 3);
    assert_eq!(storage.last_seq("nowhere").await.unwrap(), 0);
}

async fn only_the_owner_edits_and_deletes(storage: &dyn Storage) {
    let original = stored(&one(storage, post("r", ANN, "p1", "hello")).await).clone();
    let edit = |owner: &str, cid: &str, text: &str| {
        change(
            "r",
            owner,
            cid,
            ChangeKind::Edit {
                id: original.id,
                text: text.into(),
            },
        )
    };
    assert_eq!(
        one(storage, edit(BOB, "e1", "hijacked")).await,
        Applied::Refused(ChangeRefusal::NotYours)
    );
    let edited = stored(&one(storage, edit(ANN, "e2", "hello all")).await).clone();
    assert_eq!(edited.id, original.id);
    assert_eq!(edited.text, "hello all");
    assert!(edited.rev > original.rev);
    assert!(edited.edited_ts.is_some());
    assert_eq!(
        one(storage, edit(ANN, "e3", "hello all")).await,
        Applied::Unchanged(edited.clone()),
        "the same text changes nothing"
    );
    assert_eq!(
        one(storage, edit(ANN, "e2", "a resend of e2")).await,
        Applied::Duplicate(edited.clone())
    );
    let missing = change(
        "r",
        ANN,
        "e4",
        ChangeKind::Edit {
            id: 999,
            text: "x".into(),
        },
    );
    assert_eq!(
        one(storage, missing).await,
        Applied::Refused(ChangeRefusal::NotFound)
    );

    let delete =
        |owner: &str, cid: &str| change("r", owner, cid, ChangeKind::Delete { id: original.id });
    assert_eq!(
        one(storage, delete(BOB, "d1")).await,
        Applied::Refused(ChangeRefusal::NotYours)
    );
    let deleted = stored(&one(storage, delete(ANN, "d2")).await).clone();
    assert!(deleted.deleted);
    assert_eq!(deleted.text, "");
    assert!(deleted.rev > edited.rev);
    assert_eq!(
        one(storage, delete(ANN, "d3")).await,
        Applied::Unchanged(deleted.clone())
    );
    assert_eq!(
        one(storage, edit(ANN, "e5", "back from the dead")).await,
        Applied::Refused(ChangeRefusal::Gone)
    );
    let page = storage.before("r", u64::MAX, all()).await.unwrap();
    assert_eq!(
        page.messages,
        vec![deleted],
        "reads show the latest version"
    );
}

async fn edits_are_limited(storage: &dyn Storage) {
    let id = stored(&one(storage, post("lim", ANN, "p", "v0")).await).id;
    for n in 1..=app::protocol::MAX_EDITS_PER_MESSAGE {
        let edit = change(
            "lim",
            ANN,
            &format!("e{n}"),
            ChangeKind::Edit {
                id,
                text: format!("v{n}"),
            },
        );
        assert!(
            matches!(one(storage, edit).await, Applied::Stored(_)),
            "edit {n}"
        );
    }
    let one_more = change(
        "lim",
        ANN,
        "e-last",
        ChangeKind::Edit {
            id,
            text: "too many".into(),
        },
    );
    assert_eq!(
        one(storage, one_more).await,
        Applied::Refused(ChangeRefusal::TooManyEdits)
    );
}

async fn reactions_toggle_by_session(storage: &dyn Storage) {
    let id = stored(&one(storage, post("re", ANN, "p", "react to me")).await).id;
    let react = |owner: &str, cid: &str, emoji: &str, add: bool| {
        change(
            "re",
            owner,
            cid,
            ChangeKind::React {
                id,
                emoji: emoji.into(),
                add,
            },
        )
    };
    let first = stored(&one(storage, react(BOB, "r1", "👍", true)).await).clone();
    assert_eq!(first.reactions.len(), 1);
    assert_eq!(first.reactions[0].names, vec!["bob"]);
    assert!(matches!(
        one(storage, react(BOB, "r2", "👍", true)).await,
        Applied::Unchanged(_)
    ));
    let both = stored(&one(storage, react(ANN, "r3", "👍", true)).await).clone();
    assert_eq!(both.reactions[0].names, vec!["bob", "ann"]);
    let undone = stored(&one(storage, react(BOB, "r4", "👍", false)).await).clone();
    assert_eq!(undone.reactions[0].names, vec!["ann"]);
    assert!(undone.rev > both.rev);
    let gone = stored(&one(storage, react(ANN, "r5", "👍", false)).await).clone();
    assert!(gone.reactions.is_empty());
    assert!(matches!(
        one(storage, react(ANN, "r6", "👍", false)).await,
        Applied::Unchanged(_)
    ));
    for (n, emoji) in [
        "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘", "🥰",
        "😗", "😙", "🥲", "😚", "🙂",
    ]
    .iter()
    .enumerate()
    {
        let client_id = format!("k{n}");
        let added = one(storage, react(BOB, &client_id, emoji, true)).await;
        assert!(matches!(added, Applied::Stored(_)), "{emoji}");
    }
    assert_eq!(
        one(storage, react(BOB, "k-last", "🎉", true)).await,
        Applied::Refused(ChangeRefusal::TooManyReactionKinds)
    );
    let delete = change("re", ANN, "del", ChangeKind::Delete { id });
    let deleted = stored(&one(storage, delete).await).clone();
    assert!(
        deleted.reactions.is_empty(),
        "a delete takes the reactions too"
    );
    assert_eq!(
        one(storage, react(BOB, "after", "👍", true)).await,
        Applied::Refused(ChangeRefusal::Gone)
    );
}

async fn replies_show_their_original_as_it_is(storage: &dyn Storage) {
    let original = stored(&one(storage, post("q", ANN, "o", "lunch?\nat noon")).await).clone();
    let reply_to = |cid: &str, id: u64| {
        change(
            "q",
            BOB,
            cid,
            ChangeKind::Post {
                text: "yes".into(),
                reply_to: Some(id),
            },
        )
    };
    let reply = stored(&one(storage, reply_to("a1", original.id)).await).clone();
    let preview = reply.reply_to.clone().expect("a preview");
    assert_eq!((preview.id, preview.author.as_str()), (original.id, "ann"));
    assert_eq!(preview.excerpt, "lunch?…");
    assert_eq!(
        one(storage, reply_to("a2", 999)).await,
        Applied::Refused(ChangeRefusal::NotFound)
    );
    one(
        storage,
        change("q", ANN, "d", ChangeKind::Delete { id: original.id }),
    )
    .await;
    assert_eq!(
        one(storage, reply_to("a3", original.id)).await,
        Applied::Refused(ChangeRefusal::Gone)
    );
    let page = storage.before("q", u64::MAX, all()).await.unwrap();
    let shown = page.messages.iter().find(|m| m.id == reply.id).unwrap();
    let preview = shown.reply_to.clone().unwrap();
    assert!(preview.deleted && preview.excerpt.is_empty(), "{preview:?}");
}

async fn a_batch_sees_its_own_earlier_changes(storage: &dyn Storage) {
    let last = storage.last_seq("batch").await.unwrap();
    let results = storage
        .append(vec![
            post("batch", ANN, "p", "typo"),
            change(
                "batch",
                ANN,
                "e",
                ChangeKind::Edit {
                    id: last + 1,
                    text: "fixed".into(),
                },
            ),
            change(
                "batch",
                BOB,
                "r",
                ChangeKind::React {
                    id: last + 1,
                    emoji: "🎉".into(),
                    add: true,
                },
            ),
        ])
        .await
        .unwrap();
    let reacted = stored(&results[2]);
    assert_eq!(reacted.text, "fixed");
    assert_eq!(reacted.rev, last + 3);
}

async fn catch_up_brings_new_messages_and_changed_old_ones(storage: &dyn Storage) {
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            stored(&one(storage, post("cu", ANN, &format!("p{n}"), &format!("m{n}"))).await).id,
        );
    }
    let since = storage.last_seq("cu").await.unwrap();
    // While a client is away: two old messages change, three new ones arrive.
    one(
        storage,
        change(
            "cu",
            ANN,
            "e",
            ChangeKind::Edit {
                id: ids[2],
                text: "m2 fixed".into(),
            },
        ),
    )
    .await;
    for n in 10..13 {
        one(storage, post("cu", BOB, &format!("p{n}"), &format!("m{n}"))).await;
    }
    one(
        storage,
        change("cu", ANN, "d", ChangeKind::Delete { id: ids[5] }),
    )
    .await;
    one(
        storage,
        change(
            "cu",
            BOB,
            "x",
            ChangeKind::React {
                id: ids[2],
                emoji: "👍".into(),
                add: true,
            },
        ),
    )
    .await;

    let caught = storage.catch_up("cu", since, all()).await.unwrap();
    assert_eq!(
        caught
            .history
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["m10", "m11", "m12"]
    );
    assert!(!caught.truncated && !caught.too_many_updates);
    let updates: Vec<(u64, bool, &str)> = caught
        .updates
        .iter()
        .map(|m| (m.id, m.deleted, m.text.as_str()))
        .collect();
    assert_eq!(
        updates,
        [(ids[5], true, ""), (ids[2], false, "m2 fixed")],
        "by rev"
    );
    assert_eq!(caught.updates[1].reactions.len(), 1, "the latest version");

    // Applied to what the client held, it equals what a fresh read returns.
    let mut held = storage
        .before("cu", since + 1, all())
        .await
        .unwrap()
        .messages;
    held.retain(|m| m.id <= since);
    let before_changes = held.clone();
    assert_eq!(before_changes.len(), 10);
    for update in caught.updates.iter().chain(&caught.history) {
        match held.iter_mut().find(|m| m.id == update.id) {
            Some(known) if known.rev < update.rev => *known = update.clone(),
            Some(_) => {}
            None => held.push(update.clone()),
        }
    }
    held.sort_by_key(|m| m.id);
    let fresh = storage
        .before("cu", u64::MAX, all())
        .await
        .unwrap()
        .messages;
    assert_eq!(held, fresh);

    // Too many changed: say so, so the caller starts the client over.
    let few = ReadLimit {
        limit: 1,
        max_bytes: usize::MAX,
    };
    let cut = storage.catch_up("cu", since, few).await.unwrap();
    assert!(cut.too_many_updates && cut.updates.is_empty());
    assert!(cut.truncated, "three new messages, one per page");
    // changes_since: everything after a number, by rev.
    let changed = storage.changes_since("cu", since, 100).await.unwrap();
    let revs: Vec<u64> = changed.iter().map(|m| m.rev).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(
        changed.len(),
        5,
        "m2 (last changed by its reaction), m10-12, m5"
    );
}

async fn pages_are_bounded_in_count_and_bytes(storage: &dyn Storage) {
    for n in 0..30 {
        one(
            storage,
            post("pg", ANN, &format!("p{n}"), &"x".repeat(1_000)),
        )
        .await;
    }
    let page = storage
        .before(
            "pg",
            u64::MAX,
            ReadLimit {
                limit: 10,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );
    assert!(page.more);
    let small = storage
        .before(
            "pg",
            u64::MAX,
            ReadLimit {
                limit: 10,
                max_bytes: 3_500,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        small.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [28, 29, 30],
        "the newest kept"
    );
    assert!(small.more);
    let tiny = storage
        .before(
            "pg",
            u64::MAX,
            ReadLimit {
                limit: 10,
                max_bytes: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(tiny.messages.len(), 1, "never empty while messages exist");
    let around = storage
        .around(
            "pg",
            15,
            ReadLimit {
                limit: 6,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        around.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [12, 13, 14, 15, 16, 17]
    );
    assert!(around.more && around.newer);
    let start = storage
        .around(
            "pg",
            1,
            ReadLimit {
                limit: 6,
                max_bytes: usize::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(start.messages.first().map(|m| m.id), Some(1));
    assert!(!start.more && start.newer);
    let caught = storage
        .catch_up(
            "pg",
            0,
            ReadLimit {
                limit: 500,
                max_bytes: 5_000,
            },
        )
        .await
        .unwrap();
    assert!(caught.truncated && caught.history.len() < 30);
    assert_eq!(caught.history[0].id, 1, "the oldest kept");
}

async fn rooms_are_listed_by_activity_and_paged(storage: &dyn Storage) {
    for (n, room) in ["r-old", "r-mid", "r-new"].iter().enumerate() {
        let mut c = post(room, ANN, "p", "hi");
        c.ts = 1_800_000_000_000 + n as i64;
        one(storage, c).await;
    }
    let rooms = storage.rooms(None, 100).await.unwrap();
    let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
    let ours: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("r-"))
        .collect();
    assert_eq!(ours, ["r-new", "r-mid", "r-old"]);
    assert_eq!(rooms[0].name, "r-new", "the newest first");
    let first = storage.rooms(None, 1).await.unwrap();
    let cursor = RoomCursor {
        last_ts: first[0].last_ts.unwrap(),
        name: first[0].name.clone(),
    };
    let second = storage.rooms(Some(&cursor), 1).await.unwrap();
    assert_eq!(second[0].name, "r-mid");
    assert!(storage.room_exists("r-old").await.unwrap());
    assert!(!storage.room_exists("never").await.unwrap());
}

async fn activity_counts_unread_and_mentions(storage: &dyn Storage) {
    let read = stored(&one(storage, post("act", ANN, "p0", "read already")).await).id;
    one(storage, post("act", BOB, "p1", "hey @ann")).await;
    one(storage, post("act", BOB, "p2", "nothing for you")).await;
    let gone = stored(&one(storage, post("act", BOB, "p3", "@ann deleted")).await).id;
    one(
        storage,
        change("act", BOB, "d", ChangeKind::Delete { id: gone }),
    )
    .await;
    let (room, unread, mentions) = storage
        .activity("act", read, Some("ann"), 100)
        .await
        .unwrap();
    assert_eq!((unread, mentions), (2, 1));
    assert_eq!(room.last_id, gone);
    let (_, capped, _) = storage.activity("act", 0, None, 2).await.unwrap();
    assert_eq!(capped, 2);
}

async fn search_finds_words_in_any_script_and_forgets_removed_text(storage: &dyn Storage) {
    one(storage, post("s1", ANN, "a", "Deploy on Friday at noon")).await;
    one(storage, post("s2", ANN, "b", "friday deploy postponed")).await;
    let id = stored(&one(storage, post("s1", ANN, "c", "Привет, как дела")).await).id;
    one(storage, post("s1", ANN, "d", "東京で会いましょう")).await;
    let edited = stored(&one(storage, post("s1", ANN, "e", "secret plan")).await).id;
    let deleted = stored(&one(storage, post("s1", ANN, "f", "delete this banana")).await).id;
    one(
        storage,
        change(
            "s1",
            ANN,
            "e2",
            ChangeKind::Edit {
                id: edited,
                text: "public plan".into(),
            },
        ),
    )
    .await;
    one(
        storage,
        change("s1", ANN, "f2", ChangeKind::Delete { id: deleted }),
    )
    .await;

    let limit = ReadLimit {
        limit: 20,
        max_bytes: usize::MAX,
    };
    eventually("the newest message is searchable", || async {
        !storage
            .search("public", None, limit, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    })
    .await;
    let found = storage
        .search("deploy friday", None, limit, None)
        .await
        .unwrap();
    let texts: Vec<&str> = found.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["friday deploy postponed", "Deploy on Friday at noon"],
        "newest first"
    );
    let only = storage
        .search("deploy friday", Some("s1"), limit, None)
        .await
        .unwrap();
    assert_eq!(only.messages.len(), 1);
    let cyrillic = storage.search("как", None, limit, None).await.unwrap();
    assert_eq!(
        cyrillic.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [id]
    );
    let japanese = storage
        .search("会いましょう", None, limit, None)
        .await
        .unwrap();
    assert_eq!(japanese.messages.len(), 1);
    assert!(
        storage
            .search("secret", None, limit, None)
            .await
            .unwrap()
            .messages
            .is_empty(),
        "edited away"
    );
    assert!(
        storage
            .search("banana", None, limit, None)
            .await
            .unwrap()
            .messages
            .is_empty(),
        "deleted"
    );
    let paged = storage
        .search(
            "deploy",
            None,
            ReadLimit {
                limit: 1,
                max_bytes: usize::MAX,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(paged.messages.len(), 1);
    let next = paged.next.expect("a second page");
    let rest = storage
        .search(
            "deploy",
            None,
            ReadLimit {
                limit: 1,
                max_bytes: usize::MAX,
            },
            Some(&next),
        )
        .await
        .unwrap();
    assert_eq!(rest.messages[0].text, "Deploy on Friday at noon");
}

/// A rare word under many newer messages that share its pieces (every trigram of
/// "424242" is in "242424") is still on the first page.
async fn search_looks_past_newer_near_misses(storage: &dyn Storage) {
    let id = stored(&one(storage, post("s9", ANN, "near-0", "order 424242 shipped")).await).id;
    let misses: Vec<Change> = (1..=300)
        .map(|n| {
            post(
                "s9",
                ANN,
                &format!("near-{n}"),
                &format!("order 242424 number {n}"),
            )
        })
        .collect();
    storage.append(misses).await.unwrap();
    let limit = ReadLimit {
        limit: 20,
        max_bytes: usize::MAX,
    };
    eventually("the near misses are searchable", || async {
        storage
            .search("242424", Some("s9"), limit, None)
            .await
            .unwrap()
            .messages
            .len()
            == 20
    })
    .await;
    let found = storage
        .search("424242", Some("s9"), limit, None)
        .await
        .unwrap();
    assert_eq!(
        found.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        [id],
        "found under 300 newer near misses"
    );
    assert_eq!(found.next, None, "and nothing more to look at");
}

async fn names_are_kept(storage: &dyn Storage) {
    let record = |owner: &str, last_seen| NameRecord {
        key: "alice".into(),
        name: "Alice".into(),
        owner: owner.into(),
        last_seen,
    };
    storage.save_names(vec![record("o1", 1_000)]).await.unwrap();
    storage.save_names(vec![record("o1", 2_000)]).await.unwrap();
    let kept = storage.load_names(1_500).await.unwrap();
    assert_eq!(kept, vec![record("o1", 2_000)]);
    assert!(storage.load_names(3_000).await.unwrap().is_empty());
    // A later owner replaces an earlier one (the hold expired and someone took it).
    storage.save_names(vec![record("o2", 9_000)]).await.unwrap();
    assert_eq!(
        storage.load_names(0).await.unwrap(),
        vec![record("o2", 9_000)]
    );
    storage.ping().await.unwrap();
}

async fn concurrent_batches_number_a_room_without_gaps_or_repeats(storage: Arc<dyn Storage>) {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for b in 0..25 {
                    let batch: Vec<Change> = (0..4)
                        .map(|n| post("busy", ANN, &format!("t{t}-b{b}-{n}"), "x"))
                        .collect();
                    for applied in storage.append(batch).await.unwrap() {
                        ids.push(stored(&applied).id);
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one task's ids increase"
        );
        ids.extend(mine);
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=800).collect::<Vec<_>>());
}

async fn run_all(storage: Arc<dyn Storage>) {
    let s = &*storage;
    posts_are_numbered_per_room_and_resends_are_applied_once(s).await;
    only_the_owner_edits_and_deletes(s).await;
    edits_are_limited(s).await;
    reactions_toggle_by_session(s).await;
    replies_show_their_original_as_it_is(s).await;
    a_batch_sees_its_own_earlier_changes(s).await;
    catch_up_brings_new_messages_and_changed_old_ones(s).await;
    pages_are_bounded_in_count_and_bytes(s).await;
    rooms_are_listed_by_activity_and_paged(s).await;
    activity_counts_unread_and_mentions(s).await;
    search_finds_words_in_any_script_and_forgets_removed_text(s).await;
    search_looks_past_newer_near_misses(s).await;
    names_are_kept(s).await;
    concurrent_batches_number_a_room_without_gaps_or_repeats(storage.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    tokio::time::timeout(Duration::from_secs(120), run_all(backends::sqlite().await))
        .await
        .expect("the suite finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    tokio::time::timeout(Duration::from_secs(100), async {
        let (_server, storage) = backends::postgres().await;
        run_all(storage).await;
    })
    .await
    .expect("the suite finished in time");
}

/// What only a shared database has: several servers (here, several storages with pools
/// of their own) appending to the same rooms at once, resends reaching more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_shared_by_several_servers() {
    tokio::time::timeout(Duration::from_secs(100), async {
        let server = process::Postgres::start().await;
        // Three servers starting at once on a fresh database: one migrates, the others
        // wait for it (sqlx's advisory lock) and find the schema in place.
        let url = server.url();
        let opened = futures_util::future::join_all((0..3).map(|_| server::storage::open(&url)));
        let nodes: Vec<Arc<dyn Storage>> = opened
            .await
            .into_iter()
            .map(|opened| opened.expect("opened"))
            .collect();
        // Every node posts to two rooms at once, in batches naming them in either order,
        // and each change is sent to two nodes (a client resending after a failover).
        let tasks: Vec<_> = (0..6)
            .map(|t| {
                let first = nodes[t % 3].clone();
                let second = nodes[(t + 1) % 3].clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for b in 0..20 {
                        let mut batch: Vec<Change> = (0..3)
                            .map(|n| {
                                let room = if (t + n) % 2 == 0 { "x" } else { "y" };
                                post(room, ANN, &format!("t{t}-b{b}-{n}"), "x")
                            })
                            .collect();
                        if b % 2 == 1 {
                            batch.reverse();
                        }
                        let (a, b) =
                            tokio::join!(first.append(batch.clone()), second.append(batch));
                        for (one, other) in a.unwrap().into_iter().zip(b.unwrap()) {
                            let message = match (&one, &other) {
                                (Applied::Stored(m), Applied::Duplicate(d))
                                | (Applied::Duplicate(d), Applied::Stored(m)) => {
                                    assert_eq!(m, d, "a resend gets the stored message");
                                    m.clone()
                                }
                                other => panic!("stored once and recognised once: {other:?}"),
                            };
                            seen.push((message.room.clone(), message.id));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut ids: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for task in tasks {
            for (room, id) in task.await.unwrap() {
                ids.entry(room).or_default().push(id);
            }
        }
        let mut total = 0;
        for (room, mut ids) in ids {
            ids.sort_unstable();
            let n = ids.len() as u64;
            total += n;
            assert_eq!(
                ids,
                (1..=n).collect::<Vec<_>>(),
                "room {room}: gap-free, once each"
            );
            for node in &nodes {
                assert_eq!(node.last_seq(&room).await.unwrap(), n);
            }
        }
        assert_eq!(total, 6 * 20 * 3);
        let asked = ["y".to_owned(), "nowhere".to_owned(), "x".to_owned()];
        let heads = nodes[1].heads(&asked).await.unwrap();
        assert_eq!(heads[1], ("nowhere".to_owned(), 0));
        assert_eq!(heads[0].1 + heads[2].1, total, "{heads:?}");
        // Every node reads the same history.
        let history = |node: Arc<dyn Storage>| async move {
            node.catch_up("x", 0, all()).await.unwrap().history
        };
        let expected = history(nodes[0].clone()).await;
        assert_eq!(history(nodes[1].clone()).await, expected);
        assert_eq!(history(nodes[2].clone()).await, expected);

        // An edit on one node and a reaction on another: one sequence, seen by all.
        let edit = change(
            "x",
            ANN,
            "edit",
            ChangeKind::Edit {
                id: 1,
                text: "edited".into(),
            },
        );
        let react = change(
            "x",
            BOB,
            "react",
            ChangeKind::React {
                id: 1,
                emoji: "👍".into(),
                add: true,
            },
        );
        let (edited, reacted) = tokio::join!(one(&*nodes[0], edit), one(&*nodes[1], react));
        let mut revs = [stored(&edited).rev, stored(&reacted).rev];
        revs.sort_unstable();
        let last = expected.len() as u64;
        assert_eq!(revs, [last + 1, last + 2]);
        let now = nodes[2].changes_since("x", last, 10).await.unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].text.as_str(), now[0].rev), ("edited", last + 2));
        assert_eq!(now[0].reactions.len(), 1);

        // Text PostgreSQL's `text` cannot hold comes back as it was sent.
        let odd = stored(&one(&*nodes[0], post("odd", ANN, "nul", "a\0b 100%_done")).await).clone();
        let back = nodes[1].before("odd", u64::MAX, all()).await.unwrap();
        assert_eq!(back.messages, vec![odd.clone()]);
        assert_eq!(back.messages[0].text, "a\0b 100%_done");
        let limit = ReadLimit {
            limit: 10,
            max_bytes: usize::MAX,
        };
        let found = nodes[2]
            .search("100%_done", None, limit, None)
            .await
            .unwrap();
        assert_eq!(found.messages, vec![odd]);
        assert!(nodes[2]
            .search("100%%done", None, limit, None)
            .await
            .unwrap()
            .messages
            .is_empty());
        // A refused Post leaves no room behind.
        let ghost = change(
            "ghost",
            ANN,
            "g",
            ChangeKind::Post {
                text: "reply to nothing".into(),
                reply_to: Some(999),
            },
        );
        assert_eq!(
            one(&*nodes[0], ghost).await,
            Applied::Refused(ChangeRefusal::NotFound)
        );
        assert_eq!(
            server.psql("SELECT count(*) FROM rooms WHERE name = 'ghost'"),
            "0"
        );
        assert!(!nodes[1].room_exists("ghost").await.unwrap());
        // pg_trgm is in Debian's package: search has its index.
        assert_eq!(
            server.psql("SELECT indexname FROM pg_indexes WHERE indexname = 'messages_search'"),
            "messages_search"
        );
    })
    .await
    .expect("finished in time");
}
