//! A small Socket.IO test client that speaks the Banter wire contract over a real
//! WebSocket, plus a helper that starts a real server on a free loopback port.
//!
//! The Socket.IO itself is the web client's: `app::client::session`, the same state
//! machine the browser drives, so these tests exercise the handshake, pings and ack
//! matching the page uses (one implementation, not two that can disagree). This file
//! only moves frames: a reader task feeds every received frame (and the session's
//! deadlines) into the session and hands out what it reports (acks to the requests
//! waiting for them, events to `next_event`), and a writer task sends what the session
//! and the test queue, in order. Requests are sent when asked, not held back until the
//! CONNECT reply, so tests can also send early on purpose. Every frame in both
//! directions is recorded so that a failing test can show what the server actually sent.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::client::session::{self, CloseReason, Request, Session, SessionEvent};
use app::protocol::{JoinRequest, ProtocolError, SendRequest};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How long a request waits for its ack unless told otherwise.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `next_event` waits for a server-pushed event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the negative checks listen for an event that must not come.
pub const QUIET: Duration = Duration::from_millis(500);

/// Starts a real Banter server on a free loopback port, with a fresh in-memory database,
/// and returns its address.
/// A server without rate limits or connection caps, for tests about everything else.
pub async fn start_server() -> SocketAddr {
    start_server_with(server::ChatOptions::unlimited()).await
}

pub async fn start_server_with(options: server::ChatOptions) -> SocketAddr {
    let storage = server::storage::open("sqlite::memory:").await.unwrap();
    serve(server::app(options, storage)).await
}

/// Serves a router on a free loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the binary serves: TCP_NODELAY, so small frames sent back to back do not wait
    // on delayed ACKs, and connection info, so per-address limits see the client.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    addr
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A process-wide unique `client_id` for `message` requests.
pub fn client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("cid-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Asserts a refusal `{"ok":false,"error":{"code":code,"message":"<non-empty>"}}`.
#[track_caller]
pub fn assert_refused(reply: &Value, code: &str, context: &str) {
    assert_eq!(
        reply["ok"],
        json!(false),
        "{context}: expected a refusal, got {reply}"
    );
    assert_eq!(
        reply["error"]["code"],
        json!(code),
        "{context}: wrong error code in {reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "{context}: the refusal needs a human readable message: {reply}"
    );
}

/// Asserts `{"ok":true, ...}`.
#[track_caller]
pub fn assert_ok(reply: &Value, context: &str) {
    assert_eq!(
        reply["ok"],
        json!(true),
        "{context}: expected success, got {reply}"
    );
}

/// Shared frame log, newest last, bounded.
#[derive(Clone, Default)]
struct Trace(Arc<Mutex<VecDeque<String>>>);

impl Trace {
    const KEEP: usize = 60;

    fn push(&self, line: String) {
        let mut log = self.0.lock().unwrap();
        if log.len() == Self::KEEP {
            log.pop_front();
        }
        log.push_back(line);
    }

    fn dump(&self) -> String {
        let log = self.0.lock().unwrap();
        let mut out = String::new();
        for line in log.iter() {
            let mut line = line.clone();
            if line.len() > 300 {
                let mut cut = 300;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
                line.push('…');
            }
            out.push_str("    ");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The session and what waits on it, shared by the test's calls and the reader task.
/// The lock is never held across an await.
struct Shared {
    session: Session,
    /// Requests waiting for their ack, by ack id.
    acks: HashMap<u64, oneshot::Sender<Vec<Value>>>,
    connected: Option<oneshot::Sender<Result<Value, Value>>>,
    events: mpsc::UnboundedSender<(String, Value)>,
    out: mpsc::UnboundedSender<WsMessage>,
    trace: Trace,
    closed: Arc<AtomicBool>,
    /// The session's clock starts here.
    base: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Sends what the session queued and hands out what it reported.
    fn pump(&mut self) {
        while let Some(frame) = self.session.poll_transmit() {
            let _ = self.out.send(WsMessage::text(frame));
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Opened(_) => {}
                SessionEvent::Connected { data, .. } => {
                    if let Some(tx) = self.connected.take() {
                        let _ = tx.send(Ok(data));
                    }
                }
                SessionEvent::ConnectRefused(data) => {
                    if let Some(tx) = self.connected.take() {
                        let _ = tx.send(Err(data));
                    }
                }
                SessionEvent::Event(incoming) => {
                    let name = incoming.name.clone();
                    let _ = self.events.send((name, incoming.into_payload()));
                }
                SessionEvent::Ack { id, args } => {
                    if let Some(tx) = self.acks.remove(&id) {
                        let _ = tx.send(args);
                    }
                }
                SessionEvent::UnmatchedAck { id, .. } => self
                    .trace
                    .push(format!("   (ack {id} matches no pending request)")),
                // Dropping the sender wakes the request with "connection closed".
                SessionEvent::AckFailed { id, .. } => {
                    self.acks.remove(&id);
                }
                SessionEvent::Foreign(packet) => self
                    .trace
                    .push(format!("   (a packet for another namespace: {packet:?})")),
                SessionEvent::Malformed { error, .. } => {
                    self.trace.push(format!("   (undecodable packet: {error})"))
                }
                SessionEvent::Closed(reason) => {
                    if reason == CloseReason::Disconnected {
                        self.trace
                            .push("   (server disconnected the socket)".into());
                    } else {
                        self.trace.push(format!("   (session ended: {reason})"));
                    }
                    self.closed.store(true, Ordering::SeqCst);
                    self.acks.clear();
                }
            }
        }
    }

    /// Waits for ack `id` (already reserved in the session).
    fn wait_ack(&mut self, id: u64) -> oneshot::Receiver<Vec<Value>> {
        let (tx, rx) = oneshot::channel();
        if self.session.is_closed() {
            // The sender is dropped: the request fails as "connection closed".
            self.session.cancel(id);
        } else {
            self.acks.insert(id, tx);
        }
        rx
    }
}

type Locked = Arc<Mutex<Shared>>;

/// An ack that has been requested but not awaited yet.
pub struct PendingAck {
    id: u64,
    event: String,
    rx: oneshot::Receiver<Vec<Value>>,
    trace: Trace,
    label: String,
    shared: Locked,
}

impl PendingAck {
    /// The ack's first argument, waiting at most [`ACK_TIMEOUT`].
    pub async fn wait(self) -> Value {
        self.wait_for(ACK_TIMEOUT).await
    }

    pub async fn wait_for(self, limit: Duration) -> Value {
        match self.try_wait_for(limit).await {
            Ok(value) => value,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`PendingAck::wait_for`], but returns a description instead of panicking.
    pub async fn try_wait_for(self, limit: Duration) -> Result<Value, String> {
        let PendingAck {
            id,
            event,
            rx,
            trace,
            label,
            shared,
        } = self;
        match timeout(limit, rx).await {
            Ok(Ok(mut args)) => Ok(if args.is_empty() {
                Value::Null
            } else {
                args.remove(0)
            }),
            Ok(Err(_)) => Err(format!(
                "[{label}] connection closed before the ack for `{event}` (id {id}) arrived; frames:\n{}",
                trace.dump()
            )),
            Err(_) => {
                let mut shared = shared.lock().unwrap();
                shared.session.cancel(id);
                shared.acks.remove(&id);
                drop(shared);
                Err(format!(
                    "[{label}] no ack for `{event}` (id {id}) within {limit:?}; frames:\n{}",
                    trace.dump()
                ))
            }
        }
    }

    /// The ack read as the reply to a typed request: its body, or the server's refusal.
    pub async fn reply<T: serde::de::DeserializeOwned>(self) -> Result<T, ProtocolError> {
        app::protocol::decode_reply(self.wait().await)
    }
}

/// One Socket.IO connection to the main namespace over a real WebSocket.
pub struct Client {
    label: String,
    shared: Locked,
    out: mpsc::UnboundedSender<WsMessage>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    stash: VecDeque<(String, Value)>,
    connected: Option<oneshot::Receiver<Result<Value, Value>>>,
    closed: Arc<AtomicBool>,
    trace: Trace,
    /// The Socket.IO session id from the server's `40{"sid":...}`, once connected.
    pub sid: Option<String>,
    /// The Engine.IO open packet's data.
    pub open: app::codec::OpenInfo,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

/// A stock client's session: a bare `40`, and the heartbeat deadline; the tests bound
/// every wait themselves.
fn stock_config() -> session::Config {
    session::Config {
        auth: None,
        handshake_timeout: None,
        heartbeat: true,
    }
}

impl Client {
    /// Connects and waits for the namespace connect reply `40{"sid":...}`.
    pub async fn connect(addr: SocketAddr, label: &str) -> Client {
        let mut client = Client::open(addr, label).await;
        client.wait_connected().await;
        client
    }

    /// Connects as a protocol 2 client (`40{"protocol":2}`), as the web client does:
    /// joins and departures come as batched `presence` events.
    pub async fn connect_v2(addr: SocketAddr, label: &str) -> Client {
        let config = session::Config {
            auth: Some(json!({ "protocol": app::protocol::PROTOCOL_VERSION })),
            ..stock_config()
        };
        let mut client = match Client::try_open_with(addr, label, config).await {
            Ok(client) => client,
            Err(e) => panic!("{e}"),
        };
        client.wait_connected().await;
        client
    }

    /// Opens the WebSocket, reads the Engine.IO open packet and sends `40`, without
    /// waiting for the server's connect reply.
    pub async fn open(addr: SocketAddr, label: &str) -> Client {
        match Client::try_open(addr, label).await {
            Ok(client) => client,
            Err(e) => panic!("{e}"),
        }
    }

    pub async fn try_open(addr: SocketAddr, label: &str) -> Result<Client, String> {
        Client::try_open_with(addr, label, stock_config()).await
    }

    /// Like [`Client::try_open`], with a session configured by the test.
    pub async fn try_open_with(
        addr: SocketAddr,
        label: &str,
        config: session::Config,
    ) -> Result<Client, String> {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        // tungstenite zeroes its whole read buffer (128 KiB by default) before every
        // read; small frames need far less, and the storm and bench run many clients.
        let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), false);
        let (ws, _) = timeout(ACK_TIMEOUT, connect)
            .await
            .map_err(|_| format!("[{label}] WebSocket handshake timed out"))?
            .map_err(|e| format!("[{label}] WebSocket handshake failed: {e}"))?;
        let (mut sink, mut stream) = ws.split();
        let trace = Trace::default();
        let base = Instant::now();
        let mut session = Session::new(config, 0);

        // The first frame must be the Engine.IO open packet.
        let first = timeout(ACK_TIMEOUT, stream.next())
            .await
            .map_err(|_| format!("[{label}] no Engine.IO open packet"))?;
        let open = match first {
            Some(Ok(WsMessage::Text(text))) => {
                trace.push(format!("<- {}", text.as_str()));
                session.handle_frame(base.elapsed().as_millis() as u64, text.as_str());
                match session.poll_event() {
                    Some(SessionEvent::Opened(info)) => info,
                    other => {
                        return Err(format!(
                            "[{label}] expected an open packet, got {other:?} from {:?}",
                            text.as_str()
                        ));
                    }
                }
            }
            other => return Err(format!("[{label}] expected an open packet, got {other:?}")),
        };

        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let writer_trace = trace.clone();
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if let WsMessage::Text(text) = &msg {
                    writer_trace.push(format!("-> {}", text.as_str()));
                }
                let is_close = matches!(msg, WsMessage::Close(_));
                if sink.send(msg).await.is_err() {
                    break;
                }
                if is_close {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let (events_tx, events) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let (connected_tx, connected_rx) = oneshot::channel();
        let shared = Arc::new(Mutex::new(Shared {
            session,
            acks: HashMap::new(),
            connected: Some(connected_tx),
            events: events_tx,
            out: out.clone(),
            trace: trace.clone(),
            closed: closed.clone(),
            base,
        }));
        // Sends the CONNECT the session queued on the open packet.
        shared.lock().unwrap().pump();
        let reader = tokio::spawn(read_loop(stream, shared.clone()));

        Ok(Client {
            label: label.to_owned(),
            shared,
            out,
            events,
            stash: VecDeque::new(),
            connected: Some(connected_rx),
            closed,
            trace,
            sid: None,
            open,
            reader,
            writer,
        })
    }

    /// Waits for `40{"sid":...}`; panics on `44{...}` or a timeout.
    pub async fn wait_connected(&mut self) {
        if let Err(e) = self.try_wait_connected(ACK_TIMEOUT).await {
            panic!("{e}");
        }
    }

    pub async fn try_wait_connected(&mut self, limit: Duration) -> Result<(), String> {
        let Some(rx) = self.connected.take() else {
            return Ok(());
        };
        match timeout(limit, rx).await {
            Ok(Ok(Ok(data))) => {
                self.sid = data.get("sid").and_then(Value::as_str).map(str::to_owned);
                if self.sid.is_none() {
                    return Err(format!(
                        "[{}] the connect reply carries no sid: {data}",
                        self.label
                    ));
                }
                Ok(())
            }
            Ok(Ok(Err(data))) => Err(format!("[{}] connect refused: {data}", self.label)),
            Ok(Err(_)) => Err(format!(
                "[{}] connection closed before the connect reply; frames:\n{}",
                self.label,
                self.trace.dump()
            )),
            Err(_) => Err(format!(
                "[{}] no connect reply within {limit:?}; frames:\n{}",
                self.label,
                self.trace.dump()
            )),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends one raw WebSocket text frame, e.g. a malformed packet.
    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(WsMessage::text(text.to_owned()));
    }

    /// Sends one raw WebSocket binary frame, e.g. a Socket.IO attachment.
    pub fn send_binary(&self, bytes: Vec<u8>) {
        let _ = self.out.send(WsMessage::binary(bytes));
    }

    /// Emits `42[event,payload]` without an ack id.
    pub fn emit(&self, event: &str, payload: Value) {
        self.emit_args(event, vec![payload]);
    }

    /// Emits `42[event,...args]` without an ack id.
    pub fn emit_args(&self, event: &str, args: Vec<Value>) {
        let mut shared = self.shared.lock().unwrap();
        shared.session.emit_value(event, args);
        shared.pump();
    }

    /// Emits a typed request without an ack id (`typing`).
    pub fn emit_typed<R: Request>(&self, request: &R) {
        let mut shared = self.shared.lock().unwrap();
        shared.session.emit(request);
        shared.pump();
    }

    /// Emits `42<id>[event,payload]` and waits for `43<id>[reply]`; returns `reply`.
    pub async fn request(&self, event: &str, payload: Value) -> Value {
        self.start_request(event, payload).wait().await
    }

    /// Like [`Client::request`] with arbitrary arguments (none, or several).
    pub async fn request_args(&self, event: &str, args: Vec<Value>) -> Value {
        self.start_request_args(event, args).wait().await
    }

    /// Sends a request now; the ack is awaited later through the returned handle.
    pub fn start_request(&self, event: &str, payload: Value) -> PendingAck {
        self.start_request_args(event, vec![payload])
    }

    pub fn start_request_args(&self, event: &str, args: Vec<Value>) -> PendingAck {
        let mut shared = self.shared.lock().unwrap();
        let now = shared.now();
        let id = shared.session.request_value(now, event, args, None);
        self.pending(shared, id, event)
    }

    /// Sends a typed request of the contract now; the ack is awaited later.
    pub fn start_typed<R: Request>(&self, request: &R) -> PendingAck {
        let mut shared = self.shared.lock().unwrap();
        let now = shared.now();
        let id = shared.session.request(now, request, None);
        self.pending(shared, id, R::EVENT)
    }

    /// Sends a typed request and reads its ack as the request's reply or a refusal.
    pub async fn call<R: Request>(&self, request: &R) -> Result<R::Reply, ProtocolError> {
        self.start_typed(request).reply().await
    }

    fn pending(
        &self,
        mut shared: std::sync::MutexGuard<'_, Shared>,
        id: u64,
        event: &str,
    ) -> PendingAck {
        let rx = shared.wait_ack(id);
        shared.pump();
        drop(shared);
        PendingAck {
            id,
            event: event.to_owned(),
            rx,
            trace: self.trace.clone(),
            label: self.label.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Sends a hand-written request frame built around a fresh ack id, e.g. a binary
    /// event `451-<id>[...]`; its ack is awaited like any other.
    pub fn start_raw_request(&self, event: &str, frame: impl FnOnce(u64) -> String) -> PendingAck {
        let (id, pending) = self.reserve_ack(event);
        self.send_text(&frame(id));
        pending
    }

    /// `join` with the given name and room; panics unless the reply is `ok`.
    pub async fn join(&self, name: &str, room: &str) -> Value {
        let request = JoinRequest {
            name: name.to_owned(),
            room: room.to_owned(),
            since: None,
            session: None,
            resume: false,
        };
        let reply = self.start_typed(&request).wait().await;
        assert_ok(&reply, &format!("[{}] join {name:?} {room:?}", self.label));
        reply
    }

    /// `join` presenting a session token from an earlier join's reply (`reply["session"]`),
    /// as a reconnecting client does to reclaim its name; panics unless the reply is `ok`.
    pub async fn rejoin(&self, name: &str, room: &str, session: &Value) -> Value {
        let request = JoinRequest {
            name: name.to_owned(),
            room: room.to_owned(),
            since: None,
            session: session.as_str().map(str::to_owned),
            resume: false,
        };
        let reply = self.start_typed(&request).wait().await;
        assert_ok(
            &reply,
            &format!("[{}] rejoin {name:?} {room:?}", self.label),
        );
        reply
    }

    /// `message` with a fresh client_id; panics unless the reply is `ok`; returns the
    /// stored message.
    pub async fn say(&self, room: &str, text: &str) -> Value {
        let request = SendRequest {
            room: room.to_owned(),
            text: text.to_owned(),
            client_id: client_id(),
            reply_to: None,
        };
        let reply = self.start_typed(&request).wait().await;
        assert_ok(&reply, &format!("[{}] message to {room:?}", self.label));
        reply["message"].clone()
    }

    /// The next server-pushed event called `name`, waiting at most [`EVENT_TIMEOUT`].
    /// Events with other names are kept, in order, for later calls.
    pub async fn next_event(&mut self, name: &str) -> Value {
        self.next_event_within(name, EVENT_TIMEOUT).await
    }

    pub async fn next_event_within(&mut self, name: &str, limit: Duration) -> Value {
        self.next_event_where(name, limit, |_| true).await
    }

    /// The next event called `name` whose payload satisfies `pred`. Events that do not
    /// match are kept for later calls.
    pub async fn next_event_where(
        &mut self,
        name: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.try_next_event_where(name, limit, pred).await {
            Some(value) => value,
            None => panic!(
                "[{}] no `{name}` event (matching the test's condition) within {limit:?}; \
                 unclaimed events: {:?}; frames:\n{}",
                self.label,
                self.stash,
                self.trace.dump()
            ),
        }
    }

    pub async fn try_next_event_where(
        &mut self,
        name: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(pos) = self.stash.iter().position(|(n, v)| n == name && pred(v)) {
            return self.stash.remove(pos).map(|(_, v)| v);
        }
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) => {
                    if n == name && pred(&v) {
                        return Some(v);
                    }
                    self.stash.push_back((n, v));
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Panics if an event called `name` is pending or arrives within `quiet`.
    pub async fn expect_no_event(&mut self, name: &str, quiet: Duration) {
        self.expect_no_event_where(name, quiet, |_| true).await
    }

    pub async fn expect_no_event_where(
        &mut self,
        name: &str,
        quiet: Duration,
        pred: impl Fn(&Value) -> bool,
    ) {
        if let Some(found) = self.try_next_event_where(name, quiet, pred).await {
            panic!(
                "[{}] unexpected `{name}` event: {found}; frames:\n{}",
                self.label,
                self.trace.dump()
            );
        }
    }

    /// All events received so far (and within `settle`), in arrival order.
    pub async fn drain_events(&mut self, settle: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + settle;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.stash.push_back(ev);
        }
        self.stash.drain(..).collect()
    }

    /// Whether the server closed the connection (or the socket was disconnected).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Panics if the connection has been closed.
    #[track_caller]
    pub fn assert_open(&self) {
        assert!(
            !self.is_closed(),
            "[{}] the server closed the connection; frames:\n{}",
            self.label,
            self.trace.dump()
        );
    }

    /// The recorded frames, for diagnostics.
    pub fn frames(&self) -> String {
        self.trace.dump()
    }

    /// Closes the WebSocket with a close frame, like a browser tab going away.
    pub async fn close(mut self) {
        let _ = self.out.send(WsMessage::Close(None));
        let _ = timeout(Duration::from_secs(5), &mut self.writer).await;
        self.reader.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Feeds received frames and the session's deadlines into the session until the
/// connection ends.
async fn read_loop(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    shared: Locked,
) {
    let (trace, base) = {
        let shared = shared.lock().unwrap();
        (shared.trace.clone(), shared.base)
    };
    let end = loop {
        let deadline = shared.lock().unwrap().session.poll_timeout();
        let frame = match deadline {
            Some(at) => {
                let at = base + Duration::from_millis(at);
                tokio::select! {
                    frame = stream.next() => frame,
                    () = tokio::time::sleep_until(at) => {
                        let mut shared = shared.lock().unwrap();
                        let now = shared.now();
                        shared.session.handle_timeout(now);
                        shared.pump();
                        if shared.session.is_closed() {
                            break "the session ended".to_owned();
                        }
                        continue;
                    }
                }
            }
            None => stream.next().await,
        };
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(frame))) => {
                trace.push(format!("<- (websocket close {frame:?})"));
                break "websocket close".to_owned();
            }
            Some(Ok(WsMessage::Binary(bytes))) => {
                trace.push(format!("<- (binary frame, {} bytes)", bytes.len()));
                continue;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                trace.push(format!("<- (websocket error {e})"));
                break e.to_string();
            }
            None => break "stream ended".to_owned(),
        };
        trace.push(format!("<- {}", text.as_str()));
        let mut shared = shared.lock().unwrap();
        let now = shared.now();
        shared.session.handle_frame(now, text.as_str());
        shared.pump();
        if shared.session.is_closed() {
            break "the session ended".to_owned();
        }
    };
    let mut shared = shared.lock().unwrap();
    shared.session.handle_transport_closed(end);
    shared.pump();
    shared.closed.store(true, Ordering::SeqCst);
    // Dropping the ack senders wakes every pending request with "connection closed".
    shared.acks.clear();
}

// Helpers for the hostile-input suite (`hostile.rs`).

impl Client {
    /// Sends any WebSocket message as it is: binary frames, or raw frames whose payload
    /// is not valid UTF-8.
    pub fn send_ws(&self, message: WsMessage) {
        let _ = self.out.send(message);
    }

    /// Reserves the next ack id without sending anything, for a request the test frames
    /// by hand (binary events, odd namespaces); the ack is matched like any other.
    pub fn reserve_ack(&self, event: &str) -> (u64, PendingAck) {
        let mut shared = self.shared.lock().unwrap();
        let now = shared.now();
        let id = shared.session.reserve_ack(now, None);
        let pending = self.pending(shared, id, event);
        (id, pending)
    }

    /// Waits until the server has closed the connection; false if it is still open after
    /// `limit`.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.is_closed() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Waits for a received frame (as recorded, e.g. `<- 44/admin,{...}`) that satisfies
    /// `pred`; returns it, or `None` after `limit`.
    pub async fn wait_frame(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = {
                let log = self.trace.0.lock().unwrap();
                log.iter()
                    .filter_map(|line| line.strip_prefix("<- "))
                    .find(|frame| pred(frame))
                    .map(str::to_owned)
            };
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Like [`start_server_with`], also returning the Socket.IO handle, through which a test
/// can count the sockets the server still holds.
pub async fn start_server_with_io(
    options: server::ChatOptions,
) -> (SocketAddr, socketioxide::SocketIo) {
    let storage = server::storage::open("sqlite::memory:").await.unwrap();
    let (router, io) = server::build(options, storage);
    (serve(router).await, io)
}

/// One raw HTTP/1.1 request with `Connection: close` and an arbitrary body (bytes, so it
/// may be invalid UTF-8); returns the status and the raw body (chunked framing, if any,
/// left in place).
pub async fn http_raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before reading a body it refuses.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let read = timeout(ACK_TIMEOUT, async {
        let mut buf = [0; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{method} {path}: no complete HTTP response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head}"));
    (status, raw[end + 4..].to_vec())
}
