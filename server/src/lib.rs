//! The Banter server: the Leptos app rendered on the server, its static assets, and the
//! Socket.IO chat service, all behind one axum [`Router`].

mod assets;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod logging;
pub mod memory;
pub mod metrics;
mod request_head;
pub mod security;
pub mod storage;

use app::components::shell;
use axum::Router;
use leptos::config::LeptosOptions;
use socketioxide::SocketIo;

use std::sync::Arc;

pub use chat::ChatOptions;
pub use config::Config;
use storage::Storage;

/// The whole application: pages, assets and `/socket.io/`.
pub fn app(options: ChatOptions, storage: Arc<dyn Storage>) -> Router {
    build(options, storage).0
}

/// The application and a handle on its Socket.IO server, to close every connection on
/// shutdown (open WebSockets would otherwise hold a graceful shutdown forever).
pub fn build(options: ChatOptions, storage: Arc<dyn Storage>) -> (Router, SocketIo) {
    let built = build_server(options, storage);
    (built.router, built.io)
}

/// Everything a running server needs: the router, the Socket.IO handle, and the chat
/// service (to drain it on shutdown).
pub struct Built {
    pub router: Router,
    pub io: SocketIo,
    pub chat: chat::ChatState,
}

pub fn build_server(options: ChatOptions, storage: Arc<dyn Storage>) -> Built {
    build_node(options, storage, None)
}

/// A server that is one node of several, sharing state through `cluster` (`--redis`).
pub fn build_node(
    options: ChatOptions,
    storage: Arc<dyn Storage>,
    cluster: Option<Arc<cluster::Cluster>>,
) -> Built {
    let leptos_options = leptos_options();
    let chat = chat::Chat::with_cluster(options.clone(), storage, cluster);
    let (socket_layer, io) = SocketIo::builder()
        .max_buffer_size(options.socket_buffer)
        // What a connection holds while idle (4 KiB by default): most frames are far
        // smaller, and a larger one is read in several steps into a buffer grown for it.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        // One limit for both transports: socketioxide's max_payload covers only polling.
        .max_payload(MAX_MESSAGE_BYTES as u64)
        .ws_max_message_size(MAX_MESSAGE_BYTES)
        .ws_max_frame_size(MAX_MESSAGE_BYTES)
        // An Engine.IO session that never joins the namespace (or was refused at CONNECT
        // by a connection cap) holds a socket and counts toward no cap: close it soon.
        .connect_timeout(CONNECT_TIMEOUT)
        .with_state(chat.clone())
        .build_layer();
    io.ns(
        "/",
        socketioxide::handler::ConnectHandler::with(chat::on_connect, chat::register_handlers),
    );

    let operator = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get({
                let chat = chat.clone();
                move || {
                    let chat = chat.clone();
                    async move {
                        match chat.ready().await {
                            Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_owned()),
                            Err(why) => (
                                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                format!("not ready: {why}\n"),
                            ),
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get({
                let chat = chat.clone();
                move || {
                    let chat = chat.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            chat.render_metrics(),
                        )
                    }
                }
            }),
        );
    // Rendering a page spawns tasks through Leptos's executor: tokio's (as leptos_axum's
    // own route setup does; a second call changes nothing).
    let _ = any_spawner::Executor::init_tokio();
    let page = leptos_axum::render_app_to_stream_with_context(
        {
            let leptos_options = leptos_options.clone();
            move || leptos::prelude::provide_context(leptos_options.clone())
        },
        {
            let leptos_options = leptos_options.clone();
            // Under `cargo leptos watch`, pages also open the live-reload socket.
            let live_reload = std::env::var_os("LEPTOS_WATCH")
                .map(|_| {
                    let port = leptos_options.reload_port;
                    format!(" ws://127.0.0.1:{port} ws://localhost:{port}")
                })
                .unwrap_or_default();
            let asset_root = assets::asset_root();
            let room_module = assets::room_module_url(&leptos_options);
            move || {
                set_page_policy(&live_reload);
                provide_request_facts();
                shell(
                    leptos_options.clone(),
                    asset_root.clone(),
                    room_module.clone(),
                )
            }
        },
    );
    let router = Router::new()
        .merge(operator)
        // The pages, server-rendered: the paths `app::components::route::Page` names.
        .route("/", axum::routing::get(page.clone()))
        .route("/r/{room}", axum::routing::get(page))
        .fallback(assets::static_files)
        .with_state(leptos_options)
        .layer(socket_layer)
        .layer(axum::middleware::from_fn_with_state(
            request_head::SocketHead::new(options.limits.client_ip_header.as_deref()),
            request_head::own_socket_request_head,
        ))
        .layer(axum::middleware::from_fn_with_state(
            security::OriginPolicy::new(options.allowed_origins.clone())
                .with_hosts(options.public_url.as_deref(), &options.allowed_hosts),
            security::check_origin,
        ))
        .layer(axum::middleware::from_fn(security::security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    Built { router, io, chat }
}

/// Locks a mutex, recovering from poisoning: shared state stays consistent between
/// statements, so a panicked handler must not take the whole server down with it.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a client has to connect to the namespace after opening its transport.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest Socket.IO message a client may send, over either transport.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The WebSocket read buffer each connection keeps (socketioxide's default is 4 KiB).
/// Requests and messages are mostly under a kilobyte; a larger frame grows the buffer
/// while it is read. See docs/PERFORMANCE.md, "Where a connection's memory goes".
const WS_READ_BUFFER_BYTES: usize = 1024;

/// Tells the page's render what it needs of the request: its path (which page), and
/// whether it comes from a returning visitor (the browser's returning cookie), who is drawn
/// the room rather than the join form.
fn provide_request_facts() {
    use leptos::prelude::{provide_context, use_context};
    let parts = use_context::<axum::http::request::Parts>();
    let returning = parts.as_ref().is_some_and(|parts| {
        parts
            .headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(app::store::returning_in_cookies)
    });
    provide_context(app::store::ReturningVisitor(returning));
    let path = parts.map_or_else(|| "/".to_owned(), |parts| parts.uri.path().to_owned());
    provide_context(app::components::route::RequestPath(path));
}

/// Sets this page's Content-Security-Policy, allowing its hydration script by nonce.
fn set_page_policy(extra_connect: &str) {
    let (Some(nonce), Some(response)) = (
        leptos::nonce::use_nonce(),
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>(),
    ) else {
        return;
    };
    if let Ok(value) =
        axum::http::HeaderValue::from_str(&security::page_policy(&nonce.to_string(), extra_connect))
    {
        response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The site layout cargo-leptos built, taken from its environment (or the values baked in
/// when the binary was compiled), so `cargo leptos watch` and the shipped binary agree.
fn leptos_options() -> LeptosOptions {
    let mut options = leptos::config::get_configuration(None)
        .map(|conf| conf.leptos_options)
        .unwrap_or_else(|err| {
            tracing::warn!(%err, "no Leptos configuration; using defaults");
            LeptosOptions::builder().output_name("banter").build()
        });
    if options.output_name.is_empty() {
        options.output_name = "banter".into();
    }
    options
}
