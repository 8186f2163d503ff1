//! The Leptos UI: the HTML shell, the pages and the chat page.
//!
//! [`route`] says which page a path shows and moves between rooms in place. The chat page's
//! parts: [`message`] (one line of the log: a message with its reply
//! quote, reactions and actions, or a notice), [`composer`] (writing, replying and
//! editing), [`text`] (a message's formatted text) and [`search`] (the search field and
//! its results).

mod composer;
mod message;
mod room_code;
pub mod route;
mod search;
mod text;

use leptos::either::EitherOf3;
use leptos::prelude::*;

use crate::protocol::{validate_room, MAX_NAME_CHARS};
use crate::store::{typing_text, Action, ChatStore, Connection};

use composer::{Compose, Composer};
use message::LogLine;
use room_code::RoomCode;
use route::{CurrentPath, Page, RequestPath};
use search::SearchPanel;

pub use room_code::ROOM_MODULE_FILE;
#[cfg(feature = "browser")]
pub use room_code::{
    load_before_hydrating as load_room_code, needed_to_hydrate as room_code_needed_to_hydrate,
};

/// The HTML document around the app, rendered on the server. `asset_root` prefixes the
/// site's `/pkg/…` URLs: the server versions them so browsers may cache them for good.
/// `room_module` is the URL of the room's wasm module in a build that has one: a page the
/// server draws with the room asks for it at once, beside the main module, since it
/// hydrates only once both are in (room_code.rs).
pub fn shell(
    options: LeptosOptions,
    asset_root: String,
    room_module: Option<String>,
) -> impl IntoView {
    let stylesheet = format!(
        "{asset_root}/{}/{}.css",
        options.site_pkg_dir, options.output_name
    );
    // The page's title as it stands before anything is unread; the browser keeps it up to
    // date from there (`set_title`).
    let page = use_context::<RequestPath>().map(|RequestPath(path)| Page::of(&path));
    let title = match &page {
        Some(Page::Room(room)) => room_title(room, 0, 0),
        _ => "Banter".to_owned(),
    };
    let returning = use_context::<crate::store::ReturningVisitor>().is_some_and(|r| r.0);
    // As the link module fetches it (same origin, CORS mode), so that the fetch takes it.
    let room_module = room_module
        .filter(|_| returning && matches!(page, Some(Page::Room(_))))
        .map(|href| view! { <link rel="preload" href=href r#as="fetch" crossorigin="anonymous"/> });
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <AutoReload options=options.clone()/>
                // `id="leptos"` is the sheet cargo-leptos watch swaps when the CSS changes.
                <link id="leptos" rel="stylesheet" href=stylesheet/>
                <HydrationScripts options root=asset_root/>
                {room_module}
                <title>{title}</title>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    let path = CurrentPath::provide();
    // A new page only when the path names another one: a query (`?at=`) is the page's own.
    let page = Memo::new(move |_| Page::of(&path.get()));
    // A room's page keeps its own title (ChatPage); the others are "Banter".
    Effect::new(move |_| {
        if !matches!(page.get(), Page::Room(_)) {
            set_title("Banter");
        }
    });
    view! {
        {move || match page.get() {
            Page::Room(room) => EitherOf3::A(view! { <ChatPage room/> }),
            Page::NoSuchRoom(why) => EitherOf3::B(view! {
                <main class="page-message">
                    <h1>"No such room"</h1>
                    <p role="alert">{why}</p>
                    <p><a href="/">"Go to #general"</a></p>
                </main>
            }),
            Page::NotFound => EitherOf3::C(view! {
                <main class="page-message">
                    <h1>"Page not found"</h1>
                    <p><a href="/">"Go to #general"</a></p>
                </main>
            }),
        }}
    }
}

#[component]
fn ChatPage(room: String) -> impl IntoView {
    // A returning visitor sees the room at once: the server knows one from a cookie, and
    // the browser reads the same cookie to hydrate the same view.
    #[cfg(feature = "browser")]
    let returning = crate::store::returning_in_cookies(&document_cookies());
    #[cfg(not(feature = "browser"))]
    let returning = use_context::<crate::store::ReturningVisitor>().is_some_and(|r| r.0);
    let store = ChatStore::new(room.clone(), returning);
    provide_context(store);
    let code = RoomCode::new();
    provide_context(code);
    // The room is drawn once, whether for a returning visitor before the join or after
    // one: a rebuild when `me` arrives would drop what was typed and where focus was.
    let in_room = Memo::new(move |_| store.in_room());

    // Runs only in the browser, after hydration: the server renders the initial state.
    Effect::new(move |started: Option<()>| {
        if started.is_none() {
            store.hydrated.set(true);
            #[cfg(feature = "browser")]
            crate::client::start(store);
        }
    });

    // Unread messages in the joined rooms, in the tab title, and how many mention the reader.
    {
        let room = room.clone();
        Effect::new(move |_| {
            set_title(&room_title(
                &room,
                store.unread_total.get(),
                store.mentions_total.get(),
            ))
        });
    }
    view! {
        <div
            id="banter"
            class="app"
            data-hydrated=move || store.hydrated.get().to_string()
            data-connection=move || store.connection.get().as_str()
        >
            {move || in_room.get().then(|| view! { <SkipLink/> })}
            <header class="topbar">
                <h1 class="room-title">
                    <span class="brand">"Banter"</span>
                    <span class="room-name">"# "{room.clone()}</span>
                </h1>
                {move || in_room.get().then(|| code.search_form())}
                <ConnectionBanner/>
            </header>
            {move || {
                if in_room.get() {
                    code.room().into_any()
                } else {
                    view! { <JoinForm/> }.into_any()
                }
            }}
        </div>
    }
}

/// A room page's title: the room, with the unread messages of the joined rooms and how
/// many of them mention the reader.
fn room_title(room: &str, unread: u32, mentions: u32) -> String {
    match (unread, mentions) {
        (0, _) => format!("#{room} · Banter"),
        (unread, 0) => format!("({unread}) #{room} · Banter"),
        (unread, mentions) => format!("({unread} · @{mentions}) #{room} · Banter"),
    }
}

/// Sets the tab's title (in the browser; the server writes `<title>` in `shell`). Banter's
/// own instead of leptos_meta's `<Title>`, which brought its tag registry and an
/// `indexmap` into the first page's wasm for one element.
fn set_title(title: &str) {
    #[cfg(feature = "browser")]
    document().set_title(title);
    #[cfg(not(feature = "browser"))]
    let _ = title;
}

/// The page's cookies as `document.cookie` gives them.
#[cfg(feature = "browser")]
fn document_cookies() -> String {
    js_sys::Reflect::get(document().as_ref(), &"cookie".into())
        .ok()
        .and_then(|value| value.as_string())
        .unwrap_or_default()
}

/// The first stop of the keyboard: straight to the message field, past the search, the
/// room list and the online list.
#[component]
fn SkipLink() -> impl IntoView {
    let on_click = move |ev: leptos::ev::MouseEvent| {
        ev.prevent_default();
        if let Some(field) = document().get_element_by_id("message") {
            use leptos::wasm_bindgen::JsCast;
            if let Ok(field) = field.dyn_into::<leptos::web_sys::HtmlElement>() {
                let _ = field.focus();
            }
        }
    };
    view! { <a class="skip-link" href="#message" on:click=on_click>"Skip to the message field"</a> }
}

#[component]
fn ConnectionBanner() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    view! {
        <Show when=move || store.connection.get() == Connection::Offline>
            <div class="banner reconnecting">
                <p role="status">"Reconnecting… messages you send will go out once the connection is back."</p>
                // Outside the status: a countdown there would be read out every second.
                {move || store.reconnect_in.get().map(|s| view! { <span class="countdown">{format!("Next try in {s} s.")}</span> })}
                <button type="button" on:click=move |_| store.dispatch(Action::RetryNow)>"Retry now"</button>
            </div>
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

/// The name field's text as the server's page holds it, before hydration.
fn typed_before_hydration() -> Option<String> {
    #[cfg(feature = "browser")]
    {
        use leptos::wasm_bindgen::JsCast;
        let field = document().get_element_by_id("name")?;
        let value = field
            .dyn_into::<leptos::web_sys::HtmlInputElement>()
            .ok()?
            .value();
        (!value.is_empty()).then_some(value)
    }
    #[cfg(not(feature = "browser"))]
    None
}

#[component]
fn JoinForm() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    // What was typed before the wasm arrived is in the field now, before hydration: keep
    // it (hydrating `prop:value` would write the empty signal over it). Else the name
    // this page just left the room under.
    let (name, set_name) = signal(
        typed_before_hydration()
            .or_else(|| store.left_as())
            .unwrap_or_default(),
    );
    let (local_error, set_local_error) = signal(None::<String>);
    // The room's code comes while the name is typed (room_code.rs).
    let code = expect_context::<RoomCode>();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        code.fetch();
        // The server checks the rest (writing systems, look-alikes) and answers with the
        // same kind of message, shown at the same field.
        match crate::protocol::validate_name_shape(&name.get_untracked()) {
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
            <form class="join-form" on:submit=on_submit on:focusin=move |_| code.fetch()>
                <h2>"Join the conversation"</h2>
                <label for="name">"Name"</label>
                <input
                    id="name"
                    name="name"
                    type="text"
                    autocomplete="nickname"
                    maxlength=MAX_NAME_CHARS
                    required
                    aria-invalid=move || error().is_some().then_some("true")
                    aria-describedby=move || error().is_some().then_some("name-error")
                    prop:value=name
                    on:input=move |ev| set_name.set(event_target_value(&ev))
                />
                <button type="submit" disabled=move || !store.hydrated.get() || store.joining.get()>
                    {move || {
                        if !store.hydrated.get() {
                            "Loading…"
                        } else if store.joining.get() {
                            "Joining…"
                        } else {
                            "Join"
                        }
                    }}
                </button>
                {move || error().map(|message| view! { <p id="name-error" class="error" role="alert">{message}</p> })}
            </form>
            <OtherRooms/>
        </main>
    }
}

/// "Notify me when mentioned": asks for the browser's permission, on this click only
/// (never on load), while the person has not answered yet. Drawn after hydration: the
/// server cannot know the answer.
#[component]
fn NotificationsOptIn() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let answered = RwSignal::new(0u32);
    let unasked = move || {
        answered.track();
        store.hydrated.get() && notifications_unasked()
    };
    let ask = move |_| {
        #[cfg(feature = "browser")]
        crate::client::browser::ask_notification_permission(move || answered.update(|n| *n += 1));
    };
    move || {
        unasked().then(|| {
            view! {
                <button type="button" class="notify-opt-in" on:click=ask>
                    "Notify me when mentioned"
                </button>
            }
        })
    }
}

fn notifications_unasked() -> bool {
    #[cfg(feature = "browser")]
    {
        crate::client::browser::notification_permission()
            == Some(leptos::web_sys::NotificationPermission::Default)
    }
    #[cfg(not(feature = "browser"))]
    false
}

/// What the side panel shows on a phone, where it is a drawer over the conversation
/// (on a wider screen it always shows both parts, and the drawer's buttons are hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawer {
    Closed,
    Rooms,
    People,
}

/// Under the join form (after leaving, say): the other rooms the server listed, one
/// click away.
#[component]
fn OtherRooms() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let current = store.room();
    move || {
        let others: Vec<_> = store
            .rooms
            .get()
            .into_iter()
            .filter(|room| room.name != current)
            .collect();
        (!others.is_empty()).then(|| {
            view! {
                <nav class="other-rooms" aria-labelledby="other-rooms-heading">
                    <h2 id="other-rooms-heading">"Or go to another room"</h2>
                    <ul>
                        {others
                            .into_iter()
                            .map(|room| {
                                let href = format!("/r/{}", room.name);
                                let online = room.online;
                                view! {
                                    <li>
                                        <a href=href>"# "{room.name}</a>
                                        <span class="online-count">{format!("{online} online")}</span>
                                    </li>
                                }
                            })
                            .collect_view()}
                    </ul>
                </nav>
            }
        })
    }
}

#[component]
fn ChatRoom() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    provide_context(Compose::new());
    provide_context(Clock::start());
    let drawer = RwSignal::new(Drawer::Closed);
    let toggle = move |which: Drawer| {
        drawer.update(|open| {
            *open = if *open == which {
                Drawer::Closed
            } else {
                which
            }
        });
    };
    let rooms_toggle = NodeRef::<leptos::html::Button>::new();
    let people_toggle = NodeRef::<leptos::html::Button>::new();
    // Escape closes the drawer and gives focus back to the button that opened it.
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        let open = drawer.get_untracked();
        if ev.key() != "Escape" || open == Drawer::Closed {
            return;
        }
        ev.stop_propagation();
        drawer.set(Drawer::Closed);
        let button = if open == Drawer::Rooms {
            rooms_toggle
        } else {
            people_toggle
        };
        if let Some(button) = button.get_untracked() {
            let _ = button.focus();
        }
    };
    let expanded = move |which: Drawer| move || (drawer.get() == which).to_string();
    view! {
        <main class="room" on:keydown=on_keydown>
            <div class="drawer-bar">
                <button
                    type="button"
                    class="drawer-toggle"
                    aria-controls="side"
                    aria-expanded=expanded(Drawer::Rooms)
                    node_ref=rooms_toggle
                    on:click=move |_| toggle(Drawer::Rooms)
                >
                    "Rooms"
                    {move || unread_badge(store.unread_total.get())}
                </button>
                <button
                    type="button"
                    class="drawer-toggle"
                    aria-controls="side"
                    aria-expanded=expanded(Drawer::People)
                    node_ref=people_toggle
                    on:click=move |_| toggle(Drawer::People)
                >
                    {move || format!("{} online", store.online.get())}
                </button>
            </div>
            <aside
                id="side"
                class="members"
                class:show-rooms=move || drawer.get() == Drawer::Rooms
                class:show-people=move || drawer.get() == Drawer::People
            >
                <RoomList/>
                <section class="people" aria-labelledby="online-heading">
                    // While the connection is down the list is only what was last known
                    // (the dots go grey too): nobody is shown as reachable for sure.
                    <h2 id="online-heading">
                        "Online "<span class="count">{move || store.online.get()}</span>
                        {move || (store.connection.get() == Connection::Offline).then_some(" · last known")}
                    </h2>
                    <ul aria-label="Online">
                        <For each=move || store.members.get() key=|name| name.clone() let:name>
                            <li class:me=move || store.me.get().as_deref() == Some(name.as_str())>{name.clone()}</li>
                        </For>
                    </ul>
                </section>
                <NotificationsOptIn/>
            </aside>
            <section class="conversation">
                <SearchPanel/>
                <MessageLog/>
                // Not a live region: it changes at every start and stop of typing, and
                // would be read out each time (Slack and Element do not announce it).
                <p class="typing">{move || typing_text(&store.typing.get())}</p>
                <Composer/>
            </section>
        </main>
    }
}

/// "99+" on screen, ", 120 unread" for screen readers (`aria-label` would be dropped on a
/// `span`); nothing when there is nothing unread.
fn unread_badge(n: u32) -> impl IntoView {
    (n > 0).then(|| {
        view! {
            <span class="unread">
                <span aria-hidden="true">{if n > 99 { "99+".to_owned() } else { n.to_string() }}</span>
                <span class="visually-hidden">{format!(", {n} unread")}</span>
            </span>
        }
    })
}

/// "@2": unread messages that mention the reader, counted apart; nothing when none.
fn mention_badge(n: u32) -> impl IntoView {
    (n > 0).then(|| {
        view! {
            <span class="mention-count">
                <span aria-hidden="true">{format!("@{}", n.min(99))}</span>
                <span class="visually-hidden">{format!(", {n} mentioning you")}</span>
            </span>
        }
    })
}

#[component]
fn RoomList() -> impl IntoView {
    let store = expect_context::<ChatStore>();
    let current = store.room();
    let (draft, set_draft) = signal(String::new());
    let (error, set_error) = signal(None::<String>);
    let on_create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = draft.get_untracked().trim().to_lowercase();
        match validate_room(&name) {
            Ok(()) => {
                set_error.set(None);
                set_draft.set(String::new());
                route::navigate(&format!("/r/{name}"));
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
                    key=|room| (room.name.clone(), room.online, room.last_id, room.unread, room.mentions)
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
                                // Short on screen, whole for screen readers ("3 online",
                                // "120 unread"); `aria-label` would be dropped on a `span`.
                                <span class="online-count" title="online now">
                                    <span aria-hidden="true">{online}</span>
                                    <span class="visually-hidden">{format!(", {online} online")}</span>
                                </span>
                                {move || unread_badge(count())}
                                {mention_badge(room.mentions)}
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
    let log = expect_context::<Compose>().log;
    // Follow new messages only while the reader is at the bottom; when older messages are
    // put above, keep what the reader was looking at in place.
    let stick_to_bottom = StoredValue::new(true);
    let from_bottom = StoredValue::new(0);
    let first_uid = StoredValue::new(None::<u64>);
    // Messages from others that arrived below the view while the reader was scrolled up:
    // the "N new messages" button counts them and jumps down to them.
    let last_uid = StoredValue::new(None::<u64>);
    let unseen = RwSignal::new(0usize);
    // Coming back to more new messages than the log shows at once, the reader starts at
    // the "new since you left" line rather than below the last of them (once per page).
    let new_since_seen = StoredValue::new(false);
    // The message at the top of the view when older messages were asked for, and how far
    // below the log's top edge it was: it is put back there once they are in. (Keeping
    // the distance from the bottom instead moved the view whenever something below it
    // changed height in between.)
    let anchor = StoredValue::new(None::<(String, i32)>);
    let load_older = move || {
        if store.loading_older.get_untracked() {
            return;
        }
        anchor.set_value(log.get_untracked().and_then(|el| top_message(&el)));
        store.dispatch(Action::LoadOlder);
    };
    // Set while "Load older messages" takes focus: the browser scrolls it into view, and
    // that scroll to the top must not load anything by itself (only a press, or the
    // reader's own scrolling, does).
    let focus_scroll = StoredValue::new(false);
    // A page of older messages is history the reader asked for, not news: the log stops
    // being a live region while one is on its way and for a moment after it is drawn
    // (assistive technology reads the tree after the page's own task), so that fifty
    // old messages are not read out as if they had just been said.
    let quiet = RwSignal::new(false);
    Effect::new(move |_| {
        if store.loading_older.get() {
            quiet.set(true);
        } else if quiet.get_untracked() {
            let speak_again = move || {
                if !store.loading_older.get_untracked() {
                    quiet.set(false);
                }
            };
            set_timeout(speak_again, std::time::Duration::from_millis(1_000));
        }
    });
    let on_older_focus = move |_| {
        focus_scroll.set_value(true);
        set_timeout(
            move || focus_scroll.set_value(false),
            std::time::Duration::from_millis(200),
        );
    };
    let on_scroll = move |_| {
        if let Some(el) = log.get_untracked() {
            let distance = el.scroll_height() - el.scroll_top() - el.client_height();
            stick_to_bottom.set_value(distance < 48);
            from_bottom.set_value(distance);
            if distance < 48 && unseen.get_untracked() > 0 {
                unseen.set(0);
            }
            if el.scroll_top() < 32
                && store.older_available.get_untracked()
                && !focus_scroll.get_value()
            {
                load_older();
            }
        }
    };
    Effect::new(move |_| {
        let me = store.me.get_untracked();
        let (first, arrived) = store.lines.with(|lines| {
            let arrived = last_uid
                .get_value()
                .and_then(|uid| lines.iter().rposition(|line| line.uid == uid))
                .map_or(0, |last| {
                    lines[last + 1..]
                        .iter()
                        .filter_map(|line| line.message())
                        .filter(|m| me.as_deref() != Some(m.author.as_str()))
                        .count()
                });
            last_uid.set_value(lines.last().map(|line| line.uid));
            (lines.first().map(|line| line.uid), arrived)
        });
        let Some(el) = log.get() else { return };
        if stick_to_bottom.get_value() {
            el.set_scroll_top(el.scroll_height());
        } else if arrived > 0 {
            unseen.update(|n| *n += arrived);
        }
        if !stick_to_bottom.get_value() && first != first_uid.get_value() {
            let anchored = anchor.get_value().and_then(|(id, offset)| {
                let item = message_element(&el, &id)?;
                Some(item.offset_top() - offset)
            });
            el.set_scroll_top(anchored.unwrap_or_else(|| {
                el.scroll_height() - el.client_height() - from_bottom.get_value()
            }));
            anchor.set_value(None);
        }
        first_uid.set_value(first);
        if !new_since_seen.get_value() {
            if let Ok(Some(line)) = el.query_selector("li.new-since") {
                use leptos::wasm_bindgen::JsCast;
                new_since_seen.set_value(true);
                let line: leptos::web_sys::HtmlElement = line.unchecked_into();
                if line.offset_top() < el.scroll_top() {
                    el.set_scroll_top((line.offset_top() - 8).max(0));
                    stick_to_bottom.set_value(false);
                }
            }
        }
    });
    // A reply's original or a search result asked for (`Action::LoadAround`): once its
    // line is drawn, scroll it to the middle of the log and flash it.
    Effect::new(move |_| {
        let Some(id) = store.focus.get() else { return };
        request_animation_frame(move || {
            use leptos::wasm_bindgen::JsCast;
            let Some(el) = log.get_untracked() else {
                return;
            };
            let Ok(Some(item)) = el.query_selector(&format!("li.message[data-id=\"{id}\"]")) else {
                return;
            };
            let item: leptos::web_sys::HtmlElement = item.unchecked_into();
            let top = item.offset_top() - (el.client_height() - item.offset_height()) / 2;
            el.set_scroll_top(top.max(0));
            stick_to_bottom.set_value(false);
            let classes = item.class_list();
            let _ = classes.remove_1("focused");
            // Restart the animation if the same message is asked for again.
            let _ = item.offset_width();
            let _ = classes.add_1("focused");
            set_timeout(
                move || {
                    let _ = item.class_list().remove_1("focused");
                },
                std::time::Duration::from_millis(2_000),
            );
        });
    });
    // The scrolling `div` is the log (a live region, focusable to be scrolled with the
    // keyboard); the list inside keeps its list semantics, which `role="log"` on the `ul`
    // itself would replace. While loading, the button is `aria-disabled` rather than
    // `disabled`, so that it keeps focus.
    let jump_down = move |_| {
        if let Some(el) = log.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        stick_to_bottom.set_value(true);
        unseen.set(0);
    };
    view! {
        <div class="log-frame">
        <div
            class="log"
            role="log"
            aria-label="Messages"
            aria-live=move || quiet.get().then_some("off")
            tabindex="0"
            node_ref=log
            on:scroll=on_scroll
        >
        <ul class="lines">
            <Show when=move || store.older_available.get()>
                <li class="older">
                    <button
                        type="button"
                        aria-disabled=move || store.loading_older.get().then_some("true")
                        on:focus=on_older_focus
                        on:click=move |_| load_older()
                    >
                        {move || if store.loading_older.get() { "Loading…" } else { "Load older messages" }}
                    </button>
                </li>
            </Show>
            <For
                each=move || {
                    let me = store.me.get();
                    let new_since = store.new_since.get().map(|mark| NewSince { mark, me });
                    store.lines.with(|lines| rows(lines, local_day, new_since.as_ref()))
                }
                key=|row| (row.line.render_key(), row.day.is_some(), row.continues, row.new_since)
                let:row
            >
                <LogLine line=row.line day=row.day continues=row.continues new_since=row.new_since/>
            </For>
        </ul>
        </div>
        {move || {
            let n = unseen.get();
            (n > 0).then(|| {
                let label = if n == 1 { "1 new message".to_owned() } else { format!("{n} new messages") };
                view! { <button type="button" class="jump" on:click=jump_down>{label}" ↓"</button> }
            })
        }}
        </div>
    }
    .into_any()
}

/// Messages by one author less than this far apart are shown as one group.
const GROUP_GAP_MS: i64 = 5 * 60 * 1000;

/// A line of the log with how it sits among its neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub line: crate::store::Line,
    /// A divider above it, naming its day: it is the first line, or the first of a day.
    pub day: Option<String>,
    /// It goes on from the message above: same author, same day, within
    /// [`GROUP_GAP_MS`], and no gap in the history between them.
    pub continues: bool,
    /// The "new since you left" line is above it: it is the first message by someone
    /// else that arrived after the reader's read mark.
    pub new_since: bool,
}

/// Where the "new since you left" line goes: above the first message after `mark` that
/// `me` did not write.
pub(crate) struct NewSince {
    pub mark: u64,
    pub me: Option<String>,
}

/// The log's lines as rows; `day_of` gives a time's day number in the reader's time zone.
fn rows(
    lines: &[crate::store::Line],
    day_of: impl Fn(i64) -> i64,
    new_since: Option<&NewSince>,
) -> Vec<Row> {
    let mut out = Vec::with_capacity(lines.len());
    let mut previous: Option<&crate::store::Line> = None;
    let mut new_since_placed = new_since.is_none();
    for line in lines {
        let day = day_of(line.ts);
        let new_day = previous.is_none_or(|p| day_of(p.ts) != day);
        let starts_new = !new_since_placed
            && new_since.is_some_and(|new| {
                line.message().is_some_and(|m| {
                    m.id.is_some_and(|id| id > new.mark)
                        && new.me.as_deref() != Some(m.author.as_str())
                })
            });
        new_since_placed |= starts_new;
        let continues = !new_day
            && !starts_new
            && match (previous.and_then(|p| p.message()), line.message()) {
                (Some(above), Some(this)) => {
                    above.author == this.author
                        && !this.gap_before
                        && line.ts - previous.map_or(0, |p| p.ts) < GROUP_GAP_MS
                }
                _ => false,
            };
        out.push(Row {
            line: line.clone(),
            day: new_day.then(|| day_label(line.ts)),
            continues,
            new_since: starts_new,
        });
        previous = Some(line);
    }
    out
}

/// The day a time falls on in the reader's time zone (UTC while rendering on the server),
/// as days since 1970-01-01.
fn local_day(ts: i64) -> i64 {
    #[cfg(feature = "browser")]
    let offset_ms = {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        // Minutes behind UTC.
        -(date.get_timezone_offset() as i64) * 60_000
    };
    #[cfg(not(feature = "browser"))]
    let offset_ms = 0;
    (ts + offset_ms).div_euclid(86_400_000)
}

/// "Wednesday, 2 December 2026": a day divider's label, in the reader's time zone.
fn day_label(ts: i64) -> String {
    const WEEKDAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let day = local_day(ts);
    let (y, m, d) = civil_from_days(day);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[day.rem_euclid(7) as usize];
    format!("{weekday}, {d} {} {y}", MONTHS[m as usize - 1])
}

/// The first delivered message at least partly in the log's view: its id, and how far
/// its top is below the view's top edge (negative when it starts above it). The log is
/// the messages' offset parent (`position: relative`); its one child is their list.
fn top_message(log: &leptos::web_sys::HtmlElement) -> Option<(String, i32)> {
    use leptos::wasm_bindgen::JsCast;
    let top = log.scroll_top();
    let mut next = log.first_element_child()?.first_element_child();
    while let Some(element) = next {
        next = element.next_element_sibling();
        let Some(id) = element.get_attribute("data-id") else {
            continue;
        };
        let Ok(item) = element.dyn_into::<leptos::web_sys::HtmlElement>() else {
            continue;
        };
        if item.offset_top() + item.offset_height() > top {
            return Some((id, item.offset_top() - top));
        }
    }
    None
}

/// The log's line for the message with this id.
fn message_element(
    log: &leptos::web_sys::HtmlElement,
    id: &str,
) -> Option<leptos::web_sys::HtmlElement> {
    use leptos::wasm_bindgen::JsCast;
    let item = log
        .query_selector(&format!("li.message[data-id=\"{id}\"]"))
        .ok()??;
    item.dyn_into().ok()
}

/// `HH:MM` in the reader's time zone (UTC while rendering on the server).
/// The time a line shows: "just now" and "12 min ago" within the hour, the clock time
/// after that (the day is on the divider above, the exact time on hover).
fn shown_time(ts: i64, now: i64) -> String {
    let age = now - ts;
    if now == 0 || age >= 60 * 60_000 {
        clock_time(ts)
    } else if age < 60_000 {
        // Also a time a little ahead of this clock: the server's clock is not the reader's.
        "just now".to_owned()
    } else {
        format!("{} min ago", age / 60_000)
    }
}

/// The reader's clock for relative times, ticking every 30 s (0 on the server, which
/// renders no message lines).
#[derive(Clone, Copy)]
pub(crate) struct Clock(pub RwSignal<i64>);

impl Clock {
    fn start() -> Clock {
        #[cfg(feature = "browser")]
        {
            let now = || js_sys::Date::now() as i64;
            let clock = RwSignal::new(now());
            if let Ok(handle) = set_interval_with_handle(
                move || clock.set(now()),
                std::time::Duration::from_secs(30),
            ) {
                on_cleanup(move || handle.clear());
            }
            Clock(clock)
        }
        #[cfg(not(feature = "browser"))]
        Clock(RwSignal::new(0))
    }
}

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

/// `YYYY-MM-DD HH:MM` in the reader's time zone (UTC while rendering on the server).
fn date_time(ts: i64) -> String {
    #[cfg(feature = "browser")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            date.get_full_year(),
            date.get_month() + 1,
            date.get_date(),
            date.get_hours(),
            date.get_minutes()
        )
    }
    #[cfg(not(feature = "browser"))]
    {
        let (y, m, d) = civil_from_days(ts.div_euclid(86_400_000));
        format!("{y:04}-{m:02}-{d:02} {}", clock_time(ts))
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
    fn times_within_the_hour_are_relative() {
        let ts = 1_000_000_000_000;
        let minute = 60_000;
        assert_eq!(shown_time(ts, ts + 59_000), "just now");
        assert_eq!(
            shown_time(ts, ts - 5_000),
            "just now",
            "a clock a little behind"
        );
        assert_eq!(shown_time(ts, ts + minute), "1 min ago");
        assert_eq!(shown_time(ts, ts + 59 * minute), "59 min ago");
        assert_eq!(shown_time(ts, ts + 60 * minute), clock_time(ts));
        assert_eq!(
            shown_time(ts, 0),
            clock_time(ts),
            "no clock: the clock time"
        );
    }

    #[test]
    fn iso_time_formats_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_764_240_000_123), "2025-11-27T10:40:00.123Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn day_labels() {
        assert_eq!(day_label(0), "Thursday, 1 January 1970");
        assert_eq!(day_label(1_764_240_000_123), "Thursday, 27 November 2025");
        assert_eq!(day_label(951_782_400_000), "Tuesday, 29 February 2000");
    }

    fn message(uid: u64, ts: i64, author: &str, gap_before: bool) -> crate::store::Line {
        crate::store::Line {
            uid,
            ts,
            revision: 0,
            kind: crate::store::LineKind::Message(crate::store::MessageLine {
                id: Some(uid),
                client_id: String::new(),
                author: author.to_owned(),
                text: "hi".to_owned(),
                status: crate::store::Delivery::Delivered,
                rev: 1,
                edited_ts: None,
                deleted: false,
                reply_to: None,
                reactions: Vec::new(),
                gap_before,
            }),
        }
    }

    #[test]
    fn rows_group_by_author_and_divide_days() {
        let day = 86_400_000;
        let minute = 60_000;
        let lines = vec![
            message(1, 10 * minute, "ann", false),
            message(2, 11 * minute, "ann", false),
            message(3, 12 * minute, "bob", false),
            message(4, 13 * minute, "bob", true),
            message(5, 20 * minute, "bob", false),
            message(6, day + 21 * minute, "bob", false),
            crate::store::Line {
                uid: 7,
                ts: day + 22 * minute,
                revision: 0,
                kind: crate::store::LineKind::Notice("bob left".to_owned()),
            },
            message(8, day + 23 * minute, "bob", false),
        ];
        let rows = rows(&lines, |ts| ts.div_euclid(day), None);
        assert!(rows.iter().all(|r| !r.new_since));
        let shape: Vec<(bool, bool)> = rows
            .iter()
            .map(|r| (r.day.is_some(), r.continues))
            .collect();
        assert_eq!(
            shape,
            vec![
                (true, false),  // the first line: a divider
                (false, true),  // ann again, a minute later
                (false, false), // bob
                (false, false), // after a gap in the history
                (false, false), // seven minutes later
                (true, false),  // the next day
                (false, false), // a notice
                (false, false), // after a notice
            ]
        );
        assert_eq!(rows[5].day.as_deref(), Some("Friday, 2 January 1970"));
    }

    #[test]
    fn the_new_since_line_goes_above_the_first_later_message_by_someone_else() {
        let minute = 60_000;
        let mut pending = message(6, 6 * minute, "bob", false);
        if let crate::store::LineKind::Message(m) = &mut pending.kind {
            m.id = None;
        }
        let lines = vec![
            message(1, minute, "ann", false),
            message(2, 2 * minute, "ann", false),
            message(3, 3 * minute, "me", false), // mine, though later than the mark
            message(4, 4 * minute, "ann", false),
            message(5, 5 * minute, "ann", false),
            pending,
        ];
        let new = |mark: u64| NewSince {
            mark,
            me: Some("me".to_owned()),
        };
        let marked = |mark: u64| -> Vec<u64> {
            rows(&lines, |_| 0, Some(&new(mark)))
                .iter()
                .filter(|r| r.new_since)
                .map(|r| r.line.uid)
                .collect()
        };
        assert_eq!(marked(2), vec![4], "one line, skipping my own message");
        assert_eq!(marked(0), vec![1]);
        assert_eq!(marked(5), Vec::<u64>::new(), "nothing new: no line");
        let rows = rows(&lines, |_| 0, Some(&new(2)));
        assert!(
            !rows[3].continues,
            "the line splits a group: the author is named again"
        );
        assert!(rows[4].continues);
    }

    #[test]
    fn date_time_formats_utc_on_the_server() {
        assert_eq!(date_time(1_764_240_000_123), "2025-11-27 10:40");
    }
}
