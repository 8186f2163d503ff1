//! One line of the message log: a notice, or a message with its reply quote, its text
//! (mentions of the reader marked), its reactions, and its actions (reply, react, and
//! for one's own messages edit and delete). The actions show on hover and on keyboard
//! focus (always on touch screens); every one is a button with a name.

use leptos::either::Either;
use leptos::html;
use leptos::prelude::*;

use super::composer::Compose;
use super::text::message_body;
use super::{clock_time, date_time, iso_time, shown_time};
use crate::protocol::{excerpt, Reaction, ReplyPreview};
use crate::store::{Action, ChatStore, Delivery, Line, LineKind, MessageLine};

/// The reactions offered on every message.
pub(crate) const PALETTE: [&str; 6] = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

// Inside a line, views keep their static types (`Either`, `Option`) rather than
// `into_any()`: an `AnyView` keeps every rendering path of its type in the wasm, used or
// not. A line as a whole is one, which bounds how deeply view types nest (the compiler's
// query depth limit).

/// A line, under the divider of its day when it is the first of one (`day`) and under the
/// "new since you left" line when it is the first of those (`new_since`); `continues`:
/// it goes on from a message by the same author just above, whose name it does not
/// repeat (but for screen readers).
#[component]
pub(crate) fn LogLine(
    line: Line,
    day: Option<String>,
    continues: bool,
    /// The first message that arrived while the reader was away: a line above it says so.
    new_since: bool,
) -> impl IntoView {
    let clock = expect_context::<super::Clock>().0;
    let ts = line.ts;
    let time = view! {
        <time datetime=iso_time(ts) title=date_time(ts)>{move || shown_time(ts, clock.get())}</time>
    };
    let divider = day.map(|day| {
        let label = day.clone();
        view! {
            // The separator inside the item: on the `li` itself it would leave the list
            // with a child that is not a list item.
            <li class="day">
                <div role="separator" aria-label=label>
                    <span>{day}</span>
                </div>
            </li>
        }
    });
    let new_since = new_since.then(|| {
        view! {
            <li class="new-since">
                <div role="separator" aria-label="New since you left">
                    <span>"New since you left"</span>
                </div>
            </li>
        }
    });
    let line = match line.kind {
        LineKind::Notice(text) => {
            Either::Left(view! { <li class="notice">{time}" "<span>{text}</span></li> })
        }
        LineKind::Message(message) => {
            Either::Right(message_item(line.uid, time, message, continues))
        }
    };
    view! { {divider} {new_since} {line} }.into_any()
}

fn message_item(
    uid: u64,
    time: impl IntoView,
    message: MessageLine,
    continues: bool,
) -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let MessageLine {
        id,
        author,
        text,
        status,
        edited_ts,
        deleted,
        reply_to,
        reactions,
        ..
    } = message;
    let me = store.me.get_untracked();
    let mine = me.as_deref() == Some(author.as_str());
    let mentioned = !deleted
        && me
            .as_deref()
            .is_some_and(|me| crate::mentions::mentions(&text, me));
    let failure = match &status {
        Delivery::Failed(reason) => Some(view! {
            <div class="failure">
                <span class="reason">{reason.clone()}</span>
                <button type="button" on:click=move |_| store.dispatch(Action::Retry(uid))>"Retry"</button>
                <button type="button" on:click=move |_| store.dispatch(Action::Discard(uid))>"Discard"</button>
            </div>
        }),
        _ => None,
    };
    let edited = edited_ts.filter(|_| !deleted).map(|ts| {
        view! { <span class="edited" title=format!("edited at {}", clock_time(ts))>"(edited)"</span> }
    });
    let quote = reply_to
        .filter(|_| !deleted)
        .map(|preview| reply_quote(store, preview));
    let body = if deleted {
        Either::Left(view! { <p class="deleted">"This message was deleted"</p> })
    } else {
        // Formatted (`super::text`); text is only ever text nodes, never parsed as HTML.
        Either::Right(message_body(&text, me.as_deref()))
    };
    // Reactions, the toolbar and the palette need the server's id.
    let actions = id.filter(|_| !deleted).map(|id| {
        let mine_emoji: Vec<String> = reactions
            .iter()
            .filter(|r| me.as_ref().is_some_and(|me| r.names.contains(me)))
            .map(|r| r.emoji.clone())
            .collect();
        let chips = reaction_chips(store, id, &reactions, me.as_deref());
        let toolbar = toolbar(id, author.clone(), text.clone(), mine, mine_emoji);
        (chips, toolbar)
    });
    let (chips, toolbar) = match actions {
        Some((chips, toolbar)) => (chips, Some(toolbar)),
        None => (None, None),
    };
    view! {
        <li
            class="message"
            class:mine=mine
            class:continued=continues
            class:mention=mentioned
            class:is-deleted=deleted
            data-status=status.as_str()
            data-id=id.map(|id| id.to_string())
        >
            <div class="meta">
                <span class="author">{author}</span>
                // Screen readers are told which messages are one's own; the eye sees the
                // tint (`.mine`).
                {mine.then(|| view! { <span class="visually-hidden">" (you)"</span> })}
                {time}
                {edited}
                <span class="status">{status.label()}</span>
            </div>
            {quote}
            {body}
            {chips}
            {toolbar}
            {failure}
        </li>
    }
}

/// The quote above a reply: who wrote the original and how it starts; a click shows the
/// original in its place in the log.
fn reply_quote(store: ChatStore, preview: ReplyPreview) -> impl IntoView {
    let id = preview.id;
    let (author, excerpt) = if preview.deleted {
        (String::new(), "The original message was deleted".to_owned())
    } else if preview.author.is_empty() {
        (String::new(), "an earlier message".to_owned())
    } else {
        (preview.author, preview.excerpt)
    };
    let label = if author.is_empty() {
        format!("In reply to {excerpt}. Show it")
    } else {
        format!("In reply to {author}: {excerpt}. Show the original")
    };
    view! {
        <button
            type="button"
            class="quote"
            aria-label=label
            title="Show the original message"
            on:click=move |_| store.dispatch(Action::LoadAround(id))
        >
            {(!author.is_empty()).then(|| view! { <span class="quote-author">{author}</span> })}
            <span class="quote-excerpt" dir="auto">{excerpt}</span>
        </button>
    }
}

/// "👍 2" chips under a message; the reader's own are pressed, and a click toggles them.
fn reaction_chips(
    store: ChatStore,
    id: u64,
    reactions: &[Reaction],
    me: Option<&str>,
) -> Option<impl IntoView> {
    if reactions.iter().all(|r| r.names.is_empty()) {
        return None;
    }
    let chips = reactions
        .iter()
        .filter(|r| !r.names.is_empty())
        .map(|reaction| {
            let pressed = me.is_some_and(|me| reaction.names.iter().any(|n| n == me));
            let emoji = reaction.emoji.clone();
            let count = reaction.names.len();
            let who = reaction.names.join(", ");
            // Hover shows who; a screen reader hears the emoji, the count and who.
            let label = format!(
                "{} {count} {}: {who}",
                reaction.emoji,
                if count == 1 { "reaction" } else { "reactions" }
            );
            view! {
                <button
                    type="button"
                    class="reaction"
                    aria-pressed=pressed.to_string()
                    aria-label=label
                    title=who
                    on:click=move |_| {
                        store.dispatch(Action::React { id, emoji: emoji.clone(), add: !pressed })
                    }
                >
                    {reaction.emoji.clone()}" "{count}
                </button>
            }
        })
        .collect_view();
    Some(view! { <div class="reactions">{chips}</div> })
}

/// Reply, React (with its palette), and for one's own message Edit and Delete (with its
/// confirmation).
/// `mine_emoji`: the emoji the reader already gave this message.
fn toolbar(
    id: u64,
    author: String,
    text: String,
    mine: bool,
    mine_emoji: Vec<String>,
) -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let compose = expect_context::<Compose>();
    // One signal and one reactive child for both extras: each reactive closure costs the
    // wasm its own rendering code.
    let open = RwSignal::new(Open::Nothing);
    let confirm_button = NodeRef::<html::Button>::new();
    let react_button = NodeRef::<html::Button>::new();
    let quote = excerpt(&text);
    let reply = move |_| compose.reply(id, author.clone(), quote.clone());
    let edit = move |_| compose.edit(id, text.clone());
    let ask_delete = move |_| {
        open.set(Open::Confirm);
        request_animation_frame(move || {
            if let Some(button) = confirm_button.get_untracked() {
                let _ = button.focus();
            }
        });
    };
    let close = move || {
        open.set(Open::Nothing);
        if let Some(button) = react_button.get_untracked() {
            let _ = button.focus();
        }
    };
    let extras = move || match open.get() {
        Open::Nothing => None,
        Open::Palette => {
            let buttons = PALETTE
                .into_iter()
                .map(|emoji| {
                    let given = mine_emoji.iter().any(|e| e == emoji);
                    view! {
                        <button
                            type="button"
                            aria-label=format!("React with {emoji}")
                            aria-pressed=given.to_string()
                            on:click=move |_| {
                                store.dispatch(Action::React {
                                    id,
                                    emoji: emoji.to_owned(),
                                    add: !given,
                                });
                                close();
                            }
                        >
                            {emoji}
                        </button>
                    }
                })
                .collect_view();
            Some(Either::Left(view! {
                <div
                    class="palette"
                    role="group"
                    aria-label="Reactions"
                    on:keydown=move |ev| {
                        if ev.key() == "Escape" {
                            close();
                        }
                    }
                >
                    {buttons}
                </div>
            }))
        }
        Open::Confirm => Some(Either::Right(view! {
            <div
                class="confirm"
                role="group"
                aria-label="Delete this message?"
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        close();
                    }
                }
            >
                <span>"Delete this message?"</span>
                <button
                    type="button"
                    class="danger"
                    node_ref=confirm_button
                    on:click=move |_| {
                        open.set(Open::Nothing);
                        store.dispatch(Action::Delete(id));
                    }
                >
                    "Yes, delete"
                </button>
                <button type="button" on:click=move |_| close()>"Cancel"</button>
            </div>
        })),
    };
    view! {
        // Stays shown while its palette or confirmation has the focus (`:focus-within`).
        <div class="actions">
            <button type="button" on:click=reply>"Reply"</button>
            <button
                type="button"
                node_ref=react_button
                aria-expanded=move || (open.get() == Open::Palette).to_string()
                on:click=move |_| {
                    open.update(|o| {
                        *o = if *o == Open::Palette { Open::Nothing } else { Open::Palette }
                    })
                }
            >
                "React"
            </button>
            {mine.then(|| view! {
                <button type="button" on:click=edit>"Edit"</button>
                <button type="button" on:click=ask_delete>"Delete"</button>
            })}
        </div>
        {extras}
    }
}

/// What a message's toolbar has open under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Nothing,
    Palette,
    Confirm,
}
