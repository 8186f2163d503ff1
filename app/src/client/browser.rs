//! The browser shell around the chat core: the only part of the client that touches the
//! browser.
//!
//! It opens a gloo-net WebSocket when the core asks (`Effect::Connect`) and feeds its
//! frames and its end back, tagged with the connection number; it feeds the person's
//! actions, the page's visibility, `pagehide` (write what is pending) and the browser's
//! `online` event (reconnect now); it keeps one timer armed for the core's next
//! deadline; it performs localStorage writes; and after every input it copies what the
//! core marks dirty into the Leptos store. Every decision is the core's (`chat.rs`),
//! which is tested natively; this file has none to test.
//!
//! It runs until the store's owner is disposed (the page or the room route goes away):
//! then the action channel closes, the core writes what is pending, and the socket and
//! the window listeners are removed.

use futures::channel::{mpsc, oneshot};
use futures::future::{self, Either};
use futures::stream::SplitSink;
use futures::{select, FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message as WsMessage};
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;

use crate::client::chat::{keys, Action, Chat, Config, Effect};
use crate::store::{ChatStore, RETURNING_COOKIE};

/// Starts the client for this page; it runs until the store's owner is disposed.
pub fn start(store: ChatStore) {
    let (sender, receiver) = mpsc::unbounded();
    store.connect_actions(sender);
    leptos::task::spawn_local(run(store, receiver));
}

enum Input {
    Frame(u64, String),
    Closed(u64, String),
    Visible(bool),
    PageHide,
    Online,
}

/// The open WebSocket: its sending half, and the signal that makes its reader drop the
/// other half (gloo-net closes the socket only when both halves are gone).
struct Socket {
    conn: u64,
    sink: SplitSink<WebSocket, WsMessage>,
    stop: oneshot::Sender<()>,
}

fn now() -> i64 {
    js_sys::Date::now() as i64
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Whether this browser has desktop notifications (the Notification API).
pub(crate) fn notifications_supported() -> bool {
    web_sys::window()
        .is_some_and(|w| js_sys::Reflect::has(w.as_ref(), &"Notification".into()).unwrap_or(false))
}

/// The person's answer so far, if this browser has notifications.
pub(crate) fn notification_permission() -> Option<web_sys::NotificationPermission> {
    notifications_supported().then(web_sys::Notification::permission)
}

/// Asks the person (only ever from a click) whether the page may notify; `answered` runs
/// once they have said.
pub(crate) fn ask_notification_permission(answered: impl FnOnce() + 'static) {
    use wasm_bindgen::closure::Closure;
    if !notifications_supported() {
        return;
    }
    if let Ok(promise) = web_sys::Notification::request_permission() {
        let callback = Closure::once(move |_: wasm_bindgen::JsValue| answered());
        let _ = promise.then(&callback);
        // Called once, by the browser, after this function returns.
        callback.forget();
    }
}

/// Shows a desktop notification if the person allowed them; clicking it brings the page
/// forward. One per `tag`: the browser replaces rather than stacks a repeat.
fn notify(title: &str, body: &str, tag: &str) {
    use wasm_bindgen::{closure::Closure, JsCast};
    if notification_permission() != Some(web_sys::NotificationPermission::Granted) {
        return;
    }
    let options = web_sys::NotificationOptions::new();
    options.set_body(body);
    options.set_tag(tag);
    if let Ok(notification) = web_sys::Notification::new_with_options(title, &options) {
        let on_click = Closure::once_into_js(|| {
            if let Some(window) = web_sys::window() {
                let _ = window.focus();
            }
        });
        notification.set_onclick(Some(on_click.unchecked_ref()));
    }
}

/// A write the core asked for; the name also sets or clears the returning cookie.
fn write(local: Option<&web_sys::Storage>, key: &str, value: Option<String>) {
    if key == keys::NAME {
        set_returning_cookie(value.as_deref().is_some_and(|name| !name.is_empty()));
    }
    if let Some(storage) = local {
        let _ = match value {
            Some(value) => storage.set_item(key, &value),
            None => storage.remove_item(key),
        };
    }
}

/// Keeps [`RETURNING_COOKIE`] in step with the stored name (a year, or gone).
fn set_returning_cookie(returning: bool) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let cookie = if returning {
        format!("{RETURNING_COOKIE}=1; Path=/; Max-Age=31536000; SameSite=Lax")
    } else {
        format!("{RETURNING_COOKIE}=; Path=/; Max-Age=0; SameSite=Lax")
    };
    let _ = js_sys::Reflect::set(document.as_ref(), &"cookie".into(), &cookie.into());
}

fn page_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden())
}

/// The message the URL opens the room at: `?at=<id>`.
fn open_at() -> Option<u64> {
    let search = web_sys::window()?.location().search().ok()?;
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("at="))
        .and_then(|id| id.parse().ok())
}

fn socket_url() -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!(
        "{scheme}://{}/socket.io/?EIO=4&transport=websocket",
        location.host().ok()?
    ))
}

/// Opens connection `conn`; its frames and its end come back as inputs.
fn open(conn: u64, inputs: &mpsc::UnboundedSender<Input>) -> Result<Socket, String> {
    let url = socket_url().ok_or("no window location")?;
    let socket = WebSocket::open(&url).map_err(|e| e.to_string())?;
    let (sink, mut stream) = socket.split();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let inputs = inputs.clone();
    leptos::task::spawn_local(async move {
        let reason = loop {
            select! {
                frame = stream.next().fuse() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        if inputs.unbounded_send(Input::Frame(conn, text)).is_err() {
                            return;
                        }
                    }
                    Some(Ok(WsMessage::Bytes(_))) => {}
                    Some(Err(error)) => break error.to_string(),
                    None => break "closed".to_owned(),
                },
                _ = stopped => return,
            }
        };
        let _ = inputs.unbounded_send(Input::Closed(conn, reason));
    });
    Ok(Socket { conn, sink, stop })
}

async fn run(store: ChatStore, mut actions: mpsc::UnboundedReceiver<Action>) {
    let (input_sender, mut inputs) = mpsc::unbounded::<Input>();
    let listeners = {
        let on = |name: &str, input: fn() -> Input| {
            let sender = input_sender.clone();
            window_event_listener_untyped(name, move |_| {
                let _ = sender.unbounded_send(input());
            })
        };
        [
            on("visibilitychange", || Input::Visible(!page_hidden())),
            on("pagehide", || Input::PageHide),
            on("online", || Input::Online),
        ]
    };

    let local = storage();
    let stored = |key: &str| local.as_ref().and_then(|s| s.get_item(key).ok().flatten());
    let mut config = Config::new(store.room());
    config.visible = !page_hidden();
    config.open_at = open_at();
    let seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64 ^ (now() as u64) << 20;
    let mut chat = Chat::new(config, &stored, now(), seed);
    // Pages from before the cookie existed hold a name without it.
    set_returning_cookie(stored(keys::NAME).is_some_and(|name| !name.is_empty()));
    let mut socket: Option<Socket> = None;

    loop {
        while let Some(effect) = chat.poll_effect() {
            match effect {
                Effect::Connect { conn } => {
                    socket = None;
                    match open(conn, &input_sender) {
                        Ok(opened) => socket = Some(opened),
                        Err(reason) => chat.handle_closed(now(), conn, &reason),
                    }
                }
                Effect::Send { conn, frame } => {
                    if let Some(open) = socket.as_mut().filter(|s| s.conn == conn) {
                        if let Err(error) = open.sink.send(WsMessage::Text(frame)).await {
                            chat.handle_closed(now(), conn, &error.to_string());
                        }
                    }
                }
                Effect::Close { conn } => {
                    if socket.as_ref().is_some_and(|s| s.conn == conn) {
                        if let Some(closed) = socket.take() {
                            let _ = closed.stop.send(());
                        }
                    }
                }
                Effect::Store { key, value } => write(local.as_ref(), &key, value),
                Effect::Log(line) => leptos::logging::log!("banter: {line}"),
                Effect::Notify { title, body, tag } => notify(&title, &body, &tag),
            }
        }
        let dirty = chat.take_dirty();
        store.apply(chat.view(), chat.lines(), dirty);

        let mut timer = match chat.poll_timeout() {
            Some(delay) => Either::Left(TimeoutFuture::new(delay.min(i32::MAX as u64) as u32)),
            None => Either::Right(future::pending::<()>()),
        }
        .fuse();
        select! {
            action = actions.next() => match action {
                Some(action) => chat.handle_action(now(), action),
                None => break,
            },
            input = inputs.next() => match input {
                Some(Input::Frame(conn, text)) => chat.handle_frame(now(), conn, &text),
                Some(Input::Closed(conn, reason)) => chat.handle_closed(now(), conn, &reason),
                Some(Input::Visible(visible)) => {
                    chat.handle_action(now(), Action::SetVisible(visible))
                }
                Some(Input::PageHide) => chat.flush(now()),
                Some(Input::Online) => chat.handle_action(now(), Action::RetryNow),
                None => break,
            },
            () = timer => chat.handle_timeout(now()),
        }
    }

    // The page went away: write what is pending, close the socket, stop listening.
    chat.stop(now());
    while let Some(effect) = chat.poll_effect() {
        if let Effect::Store { key, value } = effect {
            write(local.as_ref(), &key, value);
        }
    }
    if let Some(open) = socket.take() {
        let _ = open.stop.send(());
    }
    for listener in listeners {
        listener.remove();
    }
}
