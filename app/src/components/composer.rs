//! The composer: a textarea that grows with its text (up to a few lines), Enter sends and
//! Shift+Enter starts a new line; it writes a new message, a reply (shown above it, with
//! a cancel button) or an edit of one's own message. Escape cancels a reply or an edit;
//! ArrowUp in an empty composer edits one's last message; PageUp and PageDown scroll the
//! log without leaving the composer. It takes focus when the room opens (on wide screens:
//! on a phone that would pull up the keyboard over the conversation).
//!
//! The composer takes text of any length, pasted or typed, so nothing is cut without a
//! word: within [`COUNTER_MARGIN`] characters of the limit a counter shows how many are
//! left, and past it how many are too many (the field is then `aria-invalid`, and Send
//! says so and keeps the text).
//!
//! Typing `@` at the start of a word offers the room's members whose name starts with
//! what follows (a listbox the field points into with `aria-activedescendant`): ArrowUp
//! and ArrowDown choose, Enter or Tab inserts the mention (`@bob `, or `@[Mary Jane] ` for
//! a name with spaces), Escape or leaving the field closes the list, and a click picks.

use leptos::either::Either;
use leptos::html;
use leptos::prelude::*;

use crate::mentions;
use crate::protocol::MAX_TEXT_CHARS;
use crate::store::{Action, ChatStore};

/// How many names the mention list offers at once.
const OFFERED: usize = 8;

/// The mention being completed: the `@` at byte `start`, the caret at byte `caret`, the
/// names offered and the one chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Suggestions {
    start: usize,
    caret: usize,
    names: Vec<String>,
    active: usize,
}

/// The byte offset in `text` of a caret the browser gives in UTF-16 code units.
fn byte_offset(text: &str, utf16: usize) -> usize {
    let mut units = 0;
    for (at, c) in text.char_indices() {
        if units >= utf16 {
            return at;
        }
        units += c.len_utf16();
    }
    text.len()
}

/// The caret in UTF-16 code units (what the browser takes) for byte offset `byte`.
fn utf16_offset(text: &str, byte: usize) -> usize {
    text.get(..byte).unwrap_or(text).encode_utf16().count()
}

/// How close to [`MAX_TEXT_CHARS`] the text gets before the counter shows.
const COUNTER_MARGIN: usize = 500;

/// The counter's text for a draft of `chars` characters, if it shows.
fn counter_text(chars: usize) -> Option<String> {
    if chars + COUNTER_MARGIN <= MAX_TEXT_CHARS {
        None
    } else if chars <= MAX_TEXT_CHARS {
        Some(format!("{} characters left", MAX_TEXT_CHARS - chars))
    } else {
        Some(format!("{} characters too many", chars - MAX_TEXT_CHARS))
    }
}

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

/// The composer's state, shared with the log and its message actions (provided by the
/// room).
#[derive(Clone, Copy)]
pub(crate) struct Compose {
    pub mode: RwSignal<Option<Mode>>,
    pub draft: RwSignal<String>,
    pub input: NodeRef<html::Textarea>,
    /// The log's scrolling element, which PageUp and PageDown scroll.
    pub log: NodeRef<html::Div>,
}

impl Compose {
    pub fn new() -> Self {
        Compose {
            mode: RwSignal::new(None),
            draft: RwSignal::new(String::new()),
            input: NodeRef::new(),
            log: NodeRef::new(),
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

    pub fn focus(&self) {
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

/// Whether the window is as narrow as a phone's (the stylesheet's single-column layout).
fn narrow_screen() -> bool {
    window()
        .inner_width()
        .ok()
        .and_then(|width| width.as_f64())
        .is_some_and(|width| width <= 640.0)
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
    let suggest = RwSignal::new(None::<Suggestions>);
    let offer = move |text: &str, caret: usize| {
        let next = mentions::typing_at(text, caret).and_then(|typing| {
            let me = store.me.get_untracked();
            let names: Vec<String> = store.members.with_untracked(|members| {
                mentions::candidates(members, &typing.partial, me.as_deref(), OFFERED)
                    .into_iter()
                    .cloned()
                    .collect()
            });
            (!names.is_empty()).then_some(Suggestions {
                start: typing.start,
                caret,
                names,
                active: 0,
            })
        });
        if suggest.get_untracked() != next {
            suggest.set(next);
        }
    };
    let accept = move |index: usize| {
        let Some(offered) = suggest.get_untracked() else {
            return;
        };
        let Some(name) = offered.names.get(index) else {
            return;
        };
        let (text, caret) =
            mentions::complete(&draft.get_untracked(), offered.start, offered.caret, name);
        let caret = utf16_offset(&text, caret) as u32;
        draft.set(text);
        suggest.set(None);
        // Once the field shows the new text, the caret goes after the mention.
        request_animation_frame(move || {
            if let Some(input) = compose.input.get_untracked() {
                let _ = input.set_selection_range(caret, caret);
                let _ = input.focus();
            }
        });
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| match ev.key().as_str() {
        "Enter" if !ev.shift_key() && !ev.is_composing() => {
            ev.prevent_default();
            submit();
        }
        "Escape" if compose.mode.get_untracked().is_some() => {
            ev.prevent_default();
            compose.cancel();
        }
        key @ ("PageUp" | "PageDown") => {
            if let Some(log) = compose.log.get_untracked() {
                ev.prevent_default();
                // Most of a screen, keeping a line or two of context, like the browser's own.
                let step = log.client_height() * 7 / 8;
                let step = if key == "PageUp" { -step } else { step };
                log.set_scroll_top(log.scroll_top() + step);
            }
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
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if let Some(offered) = suggest.get_untracked() {
            let count = offered.names.len();
            match ev.key().as_str() {
                key @ ("ArrowDown" | "ArrowUp") => {
                    ev.prevent_default();
                    let active = if key == "ArrowDown" {
                        (offered.active + 1) % count
                    } else {
                        (offered.active + count - 1) % count
                    };
                    suggest.set(Some(Suggestions { active, ..offered }));
                    return;
                }
                "Enter" | "Tab" if !ev.shift_key() && !ev.is_composing() => {
                    ev.prevent_default();
                    accept(offered.active);
                    return;
                }
                "Escape" => {
                    ev.prevent_default();
                    ev.stop_propagation();
                    suggest.set(None);
                    return;
                }
                _ => {}
            }
        }
        on_key(ev)
    };
    // Ready to write as soon as the room opens, except on a phone, where focusing would pull
    // up the keyboard over the conversation.
    Effect::new(move |_| {
        if compose.input.get().is_some() && !narrow_screen() {
            compose.focus();
        }
    });
    // The height follows the text, also when it is set from here (an edit, a send).
    Effect::new(move |_| {
        draft.track();
        request_animation_frame(move || {
            if let Some(input) = compose.input.get_untracked() {
                fit_height(&input);
            }
        });
    });
    let chars = Memo::new(move |_| draft.with(|text| text.chars().count()));
    let over = move || chars.get() > MAX_TEXT_CHARS;
    let counter = move || {
        counter_text(chars.get()).map(|text| {
            view! { <p id="message-count" class="count" class:over=over>{text}</p> }
        })
    };
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
            {move || suggest.get().map(|offered| {
                let active = offered.active;
                view! {
                    <ul id="mention-list" class="mention-list" role="listbox" aria-label="People to mention">
                        {offered
                            .names
                            .into_iter()
                            .enumerate()
                            .map(|(index, name)| {
                                view! {
                                    <li
                                        id=format!("mention-{index}")
                                        role="option"
                                        aria-selected=(index == active).to_string()
                                        // Before the field would lose focus to the click.
                                        on:mousedown=move |ev: leptos::ev::MouseEvent| {
                                            ev.prevent_default();
                                            accept(index);
                                        }
                                    >
                                        {name}
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                }
            })}
            <label for="message" class="visually-hidden">"Message"</label>
            <textarea
                id="message"
                name="message"
                rows="1"
                dir="auto"
                autocomplete="off"
                placeholder="Write a message"
                aria-keyshortcuts="Enter"
                aria-autocomplete="list"
                aria-controls=move || suggest.with(Option::is_some).then_some("mention-list")
                aria-activedescendant=move || {
                    suggest.with(|offered| offered.as_ref().map(|o| format!("mention-{}", o.active)))
                }
                on:blur=move |_| suggest.set(None)
                aria-invalid=move || over().then_some("true")
                aria-describedby=move || counter_text(chars.get()).map(|_| "message-count")
                node_ref=compose.input
                prop:value=draft
                on:keydown=on_keydown
                on:input=move |ev| {
                    let value = event_target_value(&ev);
                    if !matches!(compose.mode.get_untracked(), Some(Mode::Edit { .. })) {
                        store.dispatch(Action::Typing(!value.trim().is_empty()));
                    }
                    let caret = compose
                        .input
                        .get_untracked()
                        .and_then(|input| input.selection_start().ok().flatten())
                        .map_or(value.len(), |units| byte_offset(&value, units as usize));
                    offer(&value, caret);
                    draft.set(value);
                }
            ></textarea>
            {counter}
            <button type="submit">{move || if editing() { "Save" } else { "Send" }}</button>
            <LeaveButton/>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
        </form>
    }
    // Bounds how deeply the room's view types nest.
    .into_any()
}

/// "Leave", which asks first: it sits one tap from Send. Leaving keeps the name for the
/// join form that follows.
#[component]
fn LeaveButton() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let compose = expect_context::<Compose>();
    let asking = RwSignal::new(false);
    let stay = NodeRef::<html::Button>::new();
    // The question takes focus, so that Enter does not leave by accident.
    Effect::new(move |_| {
        if let Some(button) = stay.get() {
            let _ = button.focus();
        }
    });
    let cancel = move || {
        asking.set(false);
        compose.focus();
    };
    let leave = move |_| {
        store.set_left_as(store.me.get_untracked());
        store.dispatch(Action::Leave);
    };
    move || {
        if asking.get() {
            Either::Left(view! {
                <div
                    class="leave-confirm"
                    role="group"
                    aria-label=format!("Leave #{}?", store.room())
                    on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                        if ev.key() == "Escape" {
                            ev.prevent_default();
                            cancel();
                        }
                    }
                >
                    <span>{format!("Leave #{}?", store.room())}</span>
                    <button type="button" class="leave" on:click=leave>"Leave room"</button>
                    <button type="button" node_ref=stay on:click=move |_| cancel()>"Stay"</button>
                </div>
            })
        } else {
            Either::Right(view! {
                <button type="button" class="leave" on:click=move |_| asking.set(true)>"Leave"</button>
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carets_convert_between_utf16_units_and_bytes() {
        let text = "a😀é@b";
        // a: 1 unit, 😀: 2 units, é: 1 unit; bytes 1, 4, 2.
        assert_eq!(byte_offset(text, 0), 0);
        assert_eq!(byte_offset(text, 1), 1);
        assert_eq!(byte_offset(text, 3), 5);
        assert_eq!(byte_offset(text, 4), 7);
        assert_eq!(byte_offset(text, 99), text.len());
        for byte in [0, 1, 5, 7, 8, 9] {
            assert_eq!(byte_offset(text, utf16_offset(text, byte)), byte);
        }
    }

    #[test]
    fn the_counter_shows_near_the_limit_and_past_it() {
        assert_eq!(counter_text(0), None);
        assert_eq!(counter_text(MAX_TEXT_CHARS - COUNTER_MARGIN), None);
        assert_eq!(
            counter_text(MAX_TEXT_CHARS - COUNTER_MARGIN + 1).as_deref(),
            Some("499 characters left")
        );
        assert_eq!(
            counter_text(MAX_TEXT_CHARS).as_deref(),
            Some("0 characters left")
        );
        assert_eq!(
            counter_text(MAX_TEXT_CHARS + 1_000).as_deref(),
            Some("1000 characters too many")
        );
    }
}
