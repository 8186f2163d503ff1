//! The Leptos UI: the HTML shell, the routes and the chat page.

use leptos::html;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::hooks::use_params_map;
use leptos_router::path;

use crate::protocol::{validate_room, DEFAULT_ROOM, MAX_NAME_CHARS, MAX_TEXT_CHARS};
use crate::store::{
    typing_text, Action, ChatStore, Connection, Delivery, Line, LineKind, MessageLine,
};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/banter.css"/>
        <Title text="Banter"/>
        <Router>
            <Routes fallback=NotFound>
                <Route path=path!("/") view=|| view! { <ChatPage room=DEFAULT_ROOM.to_owned()/> }/>
                <Route path=path!("/r/:room") view=RoomRoute/>
            </Routes>
        </Router>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <main class="page-message">
            <h1>"Page not found"</h1>
            <p><a href="/">"Go to #general"</a></p>
        </main>
    }
}

#[component]
fn RoomRoute() -> impl IntoView {
    let params = use_params_map();
    let room = move || params.read().get("room").unwrap_or_default();
    view! {
        {move || {
            let room = room();
            match validate_room(&room) {
                Ok(()) => view! { <ChatPage room/> }.into_any(),
                Err(error) => view! {
                    <main class="page-message">
                        <h1>"No such room"</h1>
                        <p role="alert">{error.message}</p>
                        <p><a href="/">"Go to #general"</a></p>
                    </main>
                }
                .into_any(),
            }
        }}
    }
}

#[component]
fn ChatPage(room: String) -> impl IntoView {
    let store = ChatStore::new(room.clone());
    provide_context(store);

    // Runs only in the browser, after hydration: the server renders the initial state.
    Effect::new(move |started: Option<()>| {
        if started.is_none() {
            store.hydrated.set(true);
            #[cfg(feature = "browser")]
            crate::client::start(store);
        }
    });

    // Unread messages in the joined rooms, in the tab title.
    let title = {
        let room = room.clone();
        move || {
            let total = store.unread_total.get();
            if total > 0 {
                format!("({total}) #{room} · Banter")
            } else {
                format!("#{room} · Banter")
            }
        }
    };
    view! {
        <Title text=title/>
        <div
            id="banter"
            class="app"
            data-hydrated=move || store.hydrated.get().to_string()
            data-connection=move || store.connection.get().as_str()
        >
            <header class="topbar">
                <h1 class="room-title">
                    <span class="brand">"Banter"</span>
                    <span class="room-name">"# "{room.clone()}</span>
                </h1>
                <ConnectionBanner/>
            </header>
            {move || {
                if store.me.get().is_some() {
                    view! { <ChatRoom/> }.into_any()
                } else {
                    view! { <JoinForm/> }.into_any()
                }
            }}
        </div>
    }
}

#[component]
fn ConnectionBanner() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    view! {
        <Show when=move || store.connection.get() == Connection::Offline>
            <p class="banner" role="status">"Reconnecting… messages you send will go out once the connection is back."</p>
        </Show>
        {move || {
            store.throttled.get().map(|seconds| {
                view! {
                    <p class="banner throttled" role="status">
                        {format!(
                            "You are sending faster than this server allows; your messages go out in {seconds} s."
                        )}
                    </p>
                }
            })
        }}
    }
}

#[component]
fn JoinForm() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let (name, set_name) = signal(String::new());
    let (local_error, set_local_error) = signal(None::<String>);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match crate::protocol::validate_name(&name.get_untracked()) {
            Ok(valid) => {
                set_local_error.set(None);
                store.dispatch(Action::Join(valid));
            }
            Err(error) => set_local_error.set(Some(error.message)),
        }
    };
    let error = move || local_error.get().or_else(|| store.join_error.get());
    view! {
        <main class="join">
            <form class="join-form" on:submit=on_submit>
                <h2>"Join the conversation"</h2>
                <label for="name">"Name"</label>
                <input
                    id="name"
                    name="name"
                    type="text"
                    autocomplete="nickname"
                    maxlength=MAX_NAME_CHARS
                    required
                    prop:value=name
                    on:input=move |ev| set_name.set(event_target_value(&ev))
                />
                <button type="submit" disabled=move || !store.hydrated.get() || store.joining.get()>
                    {move || if store.joining.get() { "Joining…" } else { "Join" }}
                </button>
                {move || error().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            </form>
        </main>
    }
}

#[component]
fn ChatRoom() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    view! {
        <div class="room">
            <aside class="members">
                <RoomList/>
                <h2 id="online-heading">"Online"</h2>
                <ul aria-label="Online">
                    <For each=move || store.members.get() key=|name| name.clone() let:name>
                        <li class:me=move || store.me.get().as_deref() == Some(name.as_str())>{name.clone()}</li>
                    </For>
                </ul>
            </aside>
            <section class="conversation">
                <MessageLog/>
                <p class="typing" aria-live="polite">{move || typing_text(&store.typing.get())}</p>
                <Composer/>
            </section>
        </div>
    }
}

#[component]
fn RoomList() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let current = store.room();
    let (draft, set_draft) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let navigate = leptos_router::hooks::use_navigate();
    let on_create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = draft.get_untracked().trim().to_lowercase();
        match validate_room(&name) {
            Ok(()) => {
                set_error.set(None);
                set_draft.set(String::new());
                navigate(&format!("/r/{name}"), Default::default());
            }
            Err(e) => set_error.set(Some(e.message)),
        }
    };
    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <ul>
                <For
                    each=move || store.rooms.get()
                    key=|room| (room.name.clone(), room.online, room.last_id, room.unread)
                    let:room
                >
                    {
                        let is_current = room.name == current;
                        let online = room.online;
                        let name = room.name.clone();
                        let href = format!("/r/{}", room.name);
                        let count = move || room.unread;
                        view! {
                            <li class:current=is_current>
                                <a href=href aria-current=is_current.then_some("page")>
                                    "# "{name}
                                </a>
                                <span class="online-count" title="online now">{online}</span>
                                {move || {
                                    let n = count();
                                    (n > 0).then(|| view! {
                                        <span class="unread" aria-label=format!("{n} unread")>
                                            {if n > 99 { "99+".to_owned() } else { n.to_string() }}
                                        </span>
                                    })
                                }}
                            </li>
                        }
                    }
                </For>
            </ul>
            <form class="new-room" on:submit=on_create>
                <label for="new-room">"Room name"</label>
                <input
                    id="new-room"
                    type="text"
                    placeholder="new-room"
                    maxlength=crate::protocol::MAX_ROOM_CHARS
                    prop:value=draft
                    on:input=move |ev| set_draft.set(event_target_value(&ev))
                />
                <button type="submit">"Create"</button>
                {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            </form>
        </nav>
    }
    .into_any()
}

#[component]
fn MessageLog() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let log = NodeRef::<html::Ul>::new();
    // Follow new messages only while the reader is at the bottom; when older messages are
    // put above, keep what the reader was looking at in place.
    let stick_to_bottom = StoredValue::new(true);
    let from_bottom = StoredValue::new(0);
    let first_uid = StoredValue::new(None::<u64>);
    let on_scroll = move |_| {
        if let Some(el) = log.get_untracked() {
            let distance = el.scroll_height() - el.scroll_top() - el.client_height();
            stick_to_bottom.set_value(distance < 48);
            from_bottom.set_value(distance);
            if el.scroll_top() < 32 && store.older_available.get_untracked() {
                store.dispatch(Action::LoadOlder);
            }
        }
    };
    Effect::new(move |_| {
        let first = store.lines.with(|lines| lines.first().map(|line| line.uid));
        let Some(el) = log.get() else { return };
        if stick_to_bottom.get_value() {
            el.set_scroll_top(el.scroll_height());
        } else if first != first_uid.get_value() {
            el.set_scroll_top(el.scroll_height() - el.client_height() - from_bottom.get_value());
        }
        first_uid.set_value(first);
    });
    view! {
        <ul class="log" role="log" aria-label="Messages" node_ref=log on:scroll=on_scroll>
            <Show when=move || store.older_available.get()>
                <li class="older">
                    <button
                        type="button"
                        disabled=move || store.loading_older.get()
                        on:click=move |_| store.dispatch(Action::LoadOlder)
                    >
                        {move || if store.loading_older.get() { "Loading…" } else { "Load older messages" }}
                    </button>
                </li>
            </Show>
            <For each=move || store.lines.get() key=|line| line.render_key() let:line>
                <LogLine line/>
            </For>
        </ul>
    }
    .into_any()
}

#[component]
fn LogLine(line: Line) -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let time = view! { <time datetime=iso_time(line.ts)>{clock_time(line.ts)}</time> };
    match line.kind {
        LineKind::Notice(text) => {
            view! { <li class="notice">{time}" "<span>{text}</span></li> }.into_any()
        }
        LineKind::Message(MessageLine {
            author,
            text,
            status,
            id,
            ..
        }) => {
            let mine = store.me.get_untracked().as_deref() == Some(author.as_str());
            let uid = line.uid;
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
            view! {
                <li class="message" class:mine=mine data-status=status.as_str() data-id=id.map(|id| id.to_string())>
                    <div class="meta">
                        <span class="author">{author}</span>
                        {time}
                        <span class="status">{status_label(&status)}</span>
                    </div>
                    // Text is only ever text nodes, never parsed as HTML; http(s) URLs in
                    // it become links.
                    <p class="text">{message_text(&text)}</p>
                    {failure}
                </li>
            }
            .into_any()
        }
    }
}

/// A message's text as text nodes and `<a>` links. Only `http(s)://` URLs are links
/// (`crate::linkify`), opened in a new tab without handing the opener, the referrer or
/// any search-ranking endorsement to the linked site.
pub(crate) fn message_text(text: &str) -> Vec<AnyView> {
    crate::linkify::segments(text)
        .into_iter()
        .map(|segment| match segment {
            crate::linkify::Segment::Text(text) => text.to_owned().into_any(),
            crate::linkify::Segment::Link(url) => view! {
                <a href=url.to_owned() target="_blank" rel="noopener noreferrer nofollow">
                    {url.to_owned()}
                </a>
            }
            .into_any(),
        })
        .collect()
}

fn status_label(status: &Delivery) -> &'static str {
    status.label()
}

#[component]
fn Composer() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let (draft, set_draft) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match crate::protocol::validate_text(&draft.get_untracked()) {
            Ok(text) => {
                set_error.set(None);
                set_draft.set(String::new());
                store.dispatch(Action::Send(text));
            }
            Err(e) => set_error.set(Some(e.message)),
        }
    };
    view! {
        <form class="composer" on:submit=on_submit>
            <label for="message" class="visually-hidden">"Message"</label>
            <input
                id="message"
                name="message"
                type="text"
                autocomplete="off"
                placeholder="Write a message"
                maxlength=MAX_TEXT_CHARS
                prop:value=draft
                on:input=move |ev| {
                    let value = event_target_value(&ev);
                    store.dispatch(Action::Typing(!value.trim().is_empty()));
                    set_draft.set(value);
                }
            />
            <button type="submit">"Send"</button>
            <button type="button" class="leave" on:click=move |_| store.dispatch(Action::Leave)>"Leave"</button>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
        </form>
    }
}

/// `HH:MM` in the reader's time zone (UTC while rendering on the server).
fn clock_time(ts: i64) -> String {
    #[cfg(feature = "browser")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        format!("{:02}:{:02}", date.get_hours(), date.get_minutes())
    }
    #[cfg(not(feature = "browser"))]
    {
        let minutes = ts.div_euclid(60_000);
        format!(
            "{:02}:{:02}",
            minutes.div_euclid(60).rem_euclid(24),
            minutes.rem_euclid(60)
        )
    }
}

/// An RFC 3339 UTC timestamp for the `datetime` attribute.
fn iso_time(ts: i64) -> String {
    let secs = ts.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ts.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_formats_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_764_240_000_123), "2025-11-27T10:40:00.123Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
