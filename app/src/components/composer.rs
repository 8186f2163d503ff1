//! The composer: a textarea that grows with its text (up to a few lines), Enter sends and
//! Shift+Enter starts a new line; it writes a new message, a reply (shown above it, with
//! a cancel button) or an edit of one's own message. Escape cancels a reply or an edit;
//! ArrowUp in an empty composer edits one's last message.

use leptos::either::Either;
use leptos::html;
use leptos::prelude::*;

use crate::protocol::MAX_TEXT_CHARS;
use crate::store::{Action, ChatStore};

/// What the composer's text will become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A reply to message `id` by `author`, which starts with `excerpt`.
    Reply {
        id: u64,
        author: String,
        excerpt: String,
    },
    /// The new text of one's own message `id`.
    Edit { id: u64 },
}

/// The composer's state, shared with the log's message actions (provided by the room).
#[derive(Clone, Copy)]
pub(crate) struct Compose {
    pub mode: RwSignal<Option<Mode>>,
    pub draft: RwSignal<String>,
    pub input: NodeRef<html::Textarea>,
}

impl Compose {
    pub fn new() -> Self {
        Compose {
            mode: RwSignal::new(None),
            draft: RwSignal::new(String::new()),
            input: NodeRef::new(),
        }
    }

    /// Starts a reply to message `id`; what was being written stays, unless it was an edit.
    pub fn reply(&self, id: u64, author: String, excerpt: String) {
        if matches!(self.mode.get_untracked(), Some(Mode::Edit { .. })) {
            self.draft.set(String::new());
        }
        self.mode.set(Some(Mode::Reply {
            id,
            author,
            excerpt,
        }));
        self.focus();
    }

    /// Starts editing one's message `id`, its text in the composer.
    pub fn edit(&self, id: u64, text: String) {
        self.mode.set(Some(Mode::Edit { id }));
        self.draft.set(text);
        self.focus();
    }

    /// Drops the reply or the edit (and the edit's text).
    pub fn cancel(&self) {
        if matches!(self.mode.get_untracked(), Some(Mode::Edit { .. })) {
            self.draft.set(String::new());
        }
        self.mode.set(None);
        self.focus();
    }

    fn focus(&self) {
        if let Some(input) = self.input.get_untracked() {
            let _ = input.focus();
        }
    }
}

/// Fits the textarea's height to its text; CSS caps it (`max-height`) and scrolls beyond.
fn fit_height(input: &leptos::web_sys::HtmlTextAreaElement) {
    let style = leptos::web_sys::HtmlElement::style(input);
    let _ = style.set_property("height", "auto");
    let borders = input.offset_height() - input.client_height();
    let _ = style.set_property("height", &format!("{}px", input.scroll_height() + borders));
}

/// One's own newest message that can be edited: its id and text.
fn last_own_message(store: ChatStore) -> Option<(u64, String)> {
    let me = store.me.get_untracked()?;
    store.lines.with_untracked(|lines| {
        lines
            .iter()
            .rev()
            .filter_map(|line| line.message())
            .find_map(|m| match m.id {
                Some(id) if m.author == me && !m.deleted => Some((id, m.text.clone())),
                _ => None,
            })
    })
}

#[component]
pub(crate) fn Composer() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let compose = expect_context::<Compose>();
    let draft = compose.draft;
    let (error, set_error) = signal(None::<String>);
    let submit = move || match crate::protocol::validate_text(&draft.get_untracked()) {
        Ok(text) => {
            set_error.set(None);
            let action = match compose.mode.get_untracked() {
                None => Action::Send(text),
                Some(Mode::Reply { id, .. }) => Action::Reply { to: id, text },
                Some(Mode::Edit { id }) => Action::Edit { id, text },
            };
            compose.mode.set(None);
            draft.set(String::new());
            store.dispatch(action);
        }
        Err(e) => set_error.set(Some(e.message)),
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| match ev.key().as_str() {
        "Enter" if !ev.shift_key() && !ev.is_composing() => {
            ev.prevent_default();
            submit();
        }
        "Escape" if compose.mode.get_untracked().is_some() => {
            ev.prevent_default();
            compose.cancel();
        }
        "ArrowUp"
            if compose.mode.get_untracked().is_none() && draft.with_untracked(String::is_empty) =>
        {
            if let Some((id, text)) = last_own_message(store) {
                ev.prevent_default();
                compose.edit(id, text);
            }
        }
        _ => {}
    };
    // The height follows the text, also when it is set from here (an edit, a send).
    Effect::new(move |_| {
        draft.track();
        request_animation_frame(move || {
            if let Some(input) = compose.input.get_untracked() {
                fit_height(&input);
            }
        });
    });
    let editing = move || matches!(compose.mode.get(), Some(Mode::Edit { .. }));
    let context = move || {
        compose.mode.get().map(|mode| match mode {
            Mode::Reply { author, excerpt, .. } => Either::Left(view! {
                <div class="compose-context" role="status">
                    <p>
                        "Replying to "<strong>{author}</strong>": "
                        <span class="compose-excerpt">{excerpt}</span>
                    </p>
                    <button type="button" class="cancel" aria-label="Cancel reply" title="Cancel reply (Esc)" on:click=move |_| compose.cancel()>
                        "✕"
                    </button>
                </div>
            }),
            Mode::Edit { .. } => Either::Right(view! {
                <div class="compose-context editing" role="status">
                    <p>"Editing your message"</p>
                    <button type="button" class="cancel" aria-label="Cancel editing" title="Cancel editing (Esc)" on:click=move |_| compose.cancel()>
                        "✕"
                    </button>
                </div>
            }),
        })
    };
    view! {
        <form
            class="composer"
            on:submit=move |ev: leptos::ev::SubmitEvent| {
                ev.prevent_default();
                submit();
            }
        >
            {context}
            <label for="message" class="visually-hidden">"Message"</label>
            <textarea
                id="message"
                name="message"
                rows="1"
                autocomplete="off"
                placeholder="Write a message"
                aria-keyshortcuts="Enter"
                maxlength=MAX_TEXT_CHARS
                node_ref=compose.input
                prop:value=draft
                on:keydown=on_keydown
                on:input=move |ev| {
                    let value = event_target_value(&ev);
                    if !matches!(compose.mode.get_untracked(), Some(Mode::Edit { .. })) {
                        store.dispatch(Action::Typing(!value.trim().is_empty()));
                    }
                    draft.set(value);
                }
            ></textarea>
            <button type="submit">{move || if editing() { "Save" } else { "Send" }}</button>
            <button type="button" class="leave" on:click=move |_| store.dispatch(Action::Leave)>"Leave"</button>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
        </form>
    }
    // Bounds how deeply the room's view types nest.
    .into_any()
}
