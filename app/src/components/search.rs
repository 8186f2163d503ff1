//! Search: the field in the top bar (`Action::Search` over every room), and the results
//! above the log, newest first, with "More" and a close button. A result links to its
//! room opened at the message (`/r/<room>?at=<id>`); in this room it shows the message in
//! its place in the log (`Action::LoadAround`). The words searched for are marked in each result's text.

use leptos::either::Either;
use leptos::prelude::*;

use super::{date_time, iso_time};
use crate::protocol::{Message, MAX_SEARCH_CHARS};
use crate::store::{Action, ChatStore, SearchView};

#[component]
pub(crate) fn SearchForm() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let (query, set_query) = signal(String::new());
    view! {
        <form
            class="search"
            role="search"
            on:submit=move |ev: leptos::ev::SubmitEvent| {
                ev.prevent_default();
                store.dispatch(Action::Search { query: query.get_untracked(), room: None });
            }
        >
            <label for="search" class="visually-hidden">"Search messages"</label>
            <input
                id="search"
                type="search"
                placeholder="Search messages"
                autocomplete="off"
                maxlength=MAX_SEARCH_CHARS
                prop:value=query
                on:input=move |ev| set_query.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Escape" {
                        ev.prevent_default();
                        set_query.set(String::new());
                        store.dispatch(Action::ClearSearch);
                    }
                }
            />
            <button type="submit">"Search"</button>
        </form>
    }
}

#[component]
pub(crate) fn SearchPanel() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    // One reactive child drawing the whole panel from the search's state (a few dozen
    // results at most): each reactive closure, `Show` or `For` would cost the wasm its
    // own rendering code.
    move || store.search.with(|search| panel(store, search))
}

fn panel(store: ChatStore, search: &SearchView) -> Option<AnyView> {
    if search.query.is_empty() && search.error.is_none() {
        return None;
    }
    let heading = if search.loading && search.results.is_empty() {
        format!("Searching for “{}”…", search.query)
    } else {
        format!("Results for “{}”", search.query)
    };
    let error = search
        .error
        .clone()
        .map(|message| view! { <p class="error" role="alert">{message}</p> });
    let empty = (!search.loading && search.error.is_none() && search.results.is_empty())
        .then(|| view! { <p class="search-empty">"No messages found."</p> });
    let results = search
        .results
        .iter()
        .map(|message| search_result(store, message, &search.query))
        .collect_view();
    let loading = search.loading;
    let more = search.more.then(|| {
        view! {
            <button
                type="button"
                class="more"
                disabled=loading
                on:click=move |_| store.dispatch(Action::SearchMore)
            >
                {if loading { "Loading…" } else { "More" }}
            </button>
        }
    });
    Some(
        view! {
            <section
                class="search-results"
                aria-label="Search results"
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Escape" {
                        ev.prevent_default();
                        store.dispatch(Action::ClearSearch);
                    }
                }
            >
                <div class="search-head">
                    <h2>{heading}</h2>
                    <button
                        type="button"
                        class="close"
                        aria-label="Close search"
                        title="Close search"
                        on:click=move |_| store.dispatch(Action::ClearSearch)
                    >
                        "✕"
                    </button>
                </div>
                {error}
                {empty}
                <ul>{results}</ul>
                {more}
            </section>
        }
        // Bounds how deeply the room's view types nest.
        .into_any(),
    )
}

/// One result: a link to its room open at the message (`?at=`); in this room a click
/// shows it in the log instead.
fn search_result(store: ChatStore, message: &Message, query: &str) -> impl IntoView {
    let here = message.room == store.room();
    let id = message.id;
    let text = if message.deleted {
        vec![("This message was deleted".to_owned(), false)]
    } else {
        highlight(&message.text, query)
            .into_iter()
            .map(|(piece, hit)| (piece.to_owned(), hit))
            .collect()
    };
    let text = text
        .into_iter()
        .map(|(piece, hit)| {
            if hit {
                Either::Left(view! { <mark>{piece}</mark> })
            } else {
                Either::Right(piece)
            }
        })
        .collect_view();
    view! {
        <li>
            <a
                class="result"
                href=format!("/r/{}?at={}", message.room, message.id)
                on:click=move |ev| {
                    if here {
                        ev.prevent_default();
                        store.dispatch(Action::LoadAround(id));
                    }
                }
            >
                <span class="result-meta">
                    <span class="author">{message.author.clone()}</span>
                    <span class="result-room">"#"{message.room.clone()}</span>
                    <time datetime=iso_time(message.ts)>{date_time(message.ts)}</time>
                </span>
                <span class="result-text" dir="auto">{text}</span>
            </a>
        </li>
    }
}

/// `text` in pieces, each marked if it matches a word of `query` (case-insensitively, in
/// any script; at each place the longest word wins). The pieces cover all of `text`.
fn highlight<'a>(text: &'a str, query: &str) -> Vec<(&'a str, bool)> {
    let words: Vec<Vec<char>> = query
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|word| !word.is_empty())
        .map(|word| word.chars().flat_map(char::to_lowercase).collect())
        .collect();
    let mut pieces = Vec::new();
    let (mut plain_from, mut at) = (0, 0);
    while let Some(c) = text[at..].chars().next() {
        match words.iter().filter_map(|w| match_len(&text[at..], w)).max() {
            Some(len) => {
                if plain_from < at {
                    pieces.push((&text[plain_from..at], false));
                }
                pieces.push((&text[at..at + len], true));
                at += len;
                plain_from = at;
            }
            None => at += c.len_utf8(),
        }
    }
    if plain_from < text.len() {
        pieces.push((&text[plain_from..], false));
    }
    pieces
}

/// How many bytes at the start of `text` spell `word` (lowercase), if they do.
fn match_len(text: &str, word: &[char]) -> Option<usize> {
    let mut matched = 0;
    for (at, c) in text.char_indices() {
        for lower in c.to_lowercase() {
            if word.get(matched) != Some(&lower) {
                return None;
            }
            matched += 1;
        }
        if matched == word.len() {
            return Some(at + c.len_utf8());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::highlight;

    #[test]
    fn the_words_searched_for_are_marked_in_any_case_and_script() {
        assert_eq!(
            highlight("Release note 22", "release NOTE"),
            vec![
                ("Release", true),
                (" ", false),
                ("note", true),
                (" 22", false)
            ]
        );
        assert_eq!(
            highlight("Привет, МИР!", "мир"),
            vec![("Привет, ", false), ("МИР", true), ("!", false)]
        );
        assert_eq!(
            highlight("東京タワー", "タワー"),
            vec![("東京", false), ("タワー", true)]
        );
        // The longest word at a place; quotes and operators' punctuation are not words.
        assert_eq!(
            highlight("notes not", "\"not\" notes"),
            vec![("notes", true), (" ", false), ("not", true)]
        );
        assert_eq!(highlight("nothing here", ""), vec![("nothing here", false)]);
        assert_eq!(highlight("", "x"), Vec::<(&str, bool)>::new());
        // A letter whose lowercase is longer than one char (İ: i + combining dot) matches
        // only as a whole.
        assert_eq!(highlight("İstanbul", "i̇stanbul"), vec![("İstanbul", true)]);
        assert_eq!(highlight("İx", "i"), vec![("İx", false)]);
    }
}
