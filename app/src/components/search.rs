//! Search: the field in the top bar (`Action::Search` over every room), and the results
//! above the log, newest first, with "More" and a close button. A result links to its
//! room; in this room it shows the message in its place in the log
//! (`Action::LoadAround`).

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
        .map(|message| search_result(store, message))
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

/// One result: a link to its room; in this room a click shows it in the log instead.
fn search_result(store: ChatStore, message: &Message) -> impl IntoView {
    let here = message.room == store.room();
    let id = message.id;
    let text = if message.deleted {
        "This message was deleted".to_owned()
    } else {
        message.text.clone()
    };
    view! {
        <li>
            <a
                class="result"
                href=format!("/r/{}", message.room)
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
