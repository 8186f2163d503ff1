//! The Socket.IO session layer: one Engine.IO v4 / Socket.IO v5 connection to the main
//! namespace, as a state machine that does no I/O.
//!
//! **Why.** Banter speaks Socket.IO by hand in two places: the browser (over a gloo-net
//! WebSocket) and the Rust test client that plays a stock client against a real server
//! (`server/tests/support`). Both drive this one type, so the tests exercise the very
//! handshake, heartbeat and ack matching the page uses, and the two cannot disagree.
//! Like quinn-proto, it owns no socket, no clock and no task: its owner feeds it what
//! happened and performs what it asks for.
//!
//! **Driving it.** Feed text frames with [`Session::handle_frame`], the transport's end
//! with [`Session::handle_transport_closed`], and time with [`Session::handle_timeout`]
//! when [`Session::poll_timeout`] says a deadline is due. After every call, send what
//! [`Session::poll_transmit`] returns (in order) and act on [`Session::poll_event`].
//! Time is milliseconds on any clock the owner likes; the session never lets it run
//! backwards (an earlier `now` than seen before counts as the latest one).
//!
//! **Guaranteed.**
//! - The Socket.IO CONNECT (`40`, or `40{auth}` with an auth payload) is queued exactly
//!   once, right after the Engine.IO open packet.
//! - Every ping is answered with a pong, in any state, in the order frames were fed.
//! - Every request gets a fresh ack id and ends exactly once: with its [`SessionEvent::Ack`],
//!   with [`AckFailure::TimedOut`] at its own deadline, or with [`AckFailure::Closed`]
//!   when the session ends first.
//! - With `heartbeat`, the session closes itself when no frame arrived for the server's
//!   `pingInterval + pingTimeout` (socket.io-client's rule: any packet counts).
//! - After [`SessionEvent::Closed`] nothing more is transmitted or reported.
//!
//! **Not done here.** Requests are not held back until the server's CONNECT reply: they
//! are transmitted when asked, because some tests must send early on purpose; the chat
//! layer waits for [`SessionEvent::Connected`] itself. There is no reconnection (one
//! session is one connection), no binary packets and no long-polling framing. Events on
//! namespaces other than `/` are passed through as [`SessionEvent::Foreign`].

use std::collections::VecDeque;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::codec::{
    decode_engine, decode_socket, encode_engine, encode_frame, CodecError, EnginePacket, OpenInfo,
    SocketPacket,
};
use crate::protocol::{
    decode_reply, event, ActivityNotice, ConnectAuth, DeleteRequest, EditRequest, EmptyReply,
    ErrorNotice, HistoryReply, HistoryRequest, JoinReply, JoinRequest, LeaveRequest, Message,
    Presence, PresenceNotice, ProtocolError, ReactRequest, RoomsReply, RoomsRequest, SearchReply,
    SearchRequest, SendReply, SendRequest, TypingNotice, TypingRequest, WatchReply, WatchRequest,
};

/// Milliseconds on the owner's clock.
pub type Millis = u64;

/// A typed client → server request: its event name and the body of a successful ack.
/// Every request of the contract implements it, so a client cannot send a payload of the
/// wrong shape by accident.
pub trait Request: Serialize {
    const EVENT: &'static str;
    type Reply: DeserializeOwned;
}

macro_rules! requests {
    ($($request:ty => $event:expr, $reply:ty;)*) => {
        $(impl Request for $request {
            const EVENT: &'static str = $event;
            type Reply = $reply;
        })*
    };
}

requests! {
    JoinRequest => event::JOIN, JoinReply;
    SendRequest => event::MESSAGE, SendReply;
    EditRequest => event::EDIT, SendReply;
    DeleteRequest => event::DELETE, SendReply;
    ReactRequest => event::REACT, SendReply;
    HistoryRequest => event::HISTORY, HistoryReply;
    RoomsRequest => event::ROOMS, RoomsReply;
    WatchRequest => event::WATCH, WatchReply;
    SearchRequest => event::SEARCH, SearchReply;
    TypingRequest => event::TYPING, EmptyReply;
    LeaveRequest => event::LEAVE, EmptyReply;
}

/// How a session behaves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The CONNECT payload (`40{...}`); none sends a bare `40`.
    pub auth: Option<Value>,
    /// Close when not connected this long after the session was created.
    pub handshake_timeout: Option<Millis>,
    /// Close when the server goes quiet for longer than its ping interval plus timeout.
    pub heartbeat: bool,
}

impl Config {
    /// What the web client uses: `40{"protocol":version}`, a 10 s handshake limit, and
    /// the heartbeat deadline.
    pub fn protocol(version: u32) -> Self {
        Config {
            auth: serde_json::to_value(ConnectAuth { protocol: version }).ok(),
            handshake_timeout: Some(10_000),
            heartbeat: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for the Engine.IO open packet.
    Opening,
    /// CONNECT sent, waiting for the server's reply.
    Connecting,
    Connected,
    /// The server refused the CONNECT (`44`); the transport may still be open.
    Refused,
    Closed(CloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    HandshakeTimeout,
    HeartbeatTimeout,
    /// The server sent a Socket.IO DISCONNECT (`41`).
    Disconnected,
    /// The server sent an Engine.IO close (`1`).
    EngineClosed,
    /// The transport closed or failed, as its owner reported.
    Transport(String),
    /// The owner closed the session.
    Local,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::HandshakeTimeout => f.write_str("handshake timed out"),
            CloseReason::HeartbeatTimeout => f.write_str("no heartbeat from the server"),
            CloseReason::Disconnected => f.write_str("disconnected by the server"),
            CloseReason::EngineClosed => f.write_str("closed by the server"),
            CloseReason::Transport(reason) => write!(f, "transport closed: {reason}"),
            CloseReason::Local => f.write_str("closed"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckFailure {
    /// No ack within the request's timeout.
    TimedOut,
    /// The session ended before the ack arrived.
    Closed,
}

/// A server-pushed event, as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub name: String,
    pub args: Vec<Value>,
    /// The ack id, if the server asked for one (Banter's server never does).
    pub ack: Option<u64>,
}

impl Incoming {
    /// The first argument (Banter's events carry one), or null.
    pub fn into_payload(mut self) -> Value {
        if self.args.is_empty() {
            Value::Null
        } else {
            self.args.swap_remove(0)
        }
    }

    /// The event as a typed value of the contract.
    pub fn decode(self) -> Result<ServerEvent, serde_json::Error> {
        let name = self.name.clone();
        let payload = self.into_payload();
        Ok(match name.as_str() {
            event::MESSAGE => ServerEvent::Message(serde_json::from_value(payload)?),
            event::UPDATED => ServerEvent::Updated(serde_json::from_value(payload)?),
            event::JOINED => ServerEvent::Joined(serde_json::from_value(payload)?),
            event::LEFT => ServerEvent::Left(serde_json::from_value(payload)?),
            event::PRESENCE => ServerEvent::Presence(serde_json::from_value(payload)?),
            event::TYPING => ServerEvent::Typing(serde_json::from_value(payload)?),
            event::ACTIVITY => ServerEvent::Activity(serde_json::from_value(payload)?),
            event::ERROR => ServerEvent::Error(serde_json::from_value(payload)?),
            _ => ServerEvent::Unknown(name, payload),
        })
    }
}

/// The server → client events of the contract.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    Message(Message),
    Updated(Message),
    Joined(Presence),
    Left(Presence),
    Presence(PresenceNotice),
    Typing(TypingNotice),
    Activity(ActivityNotice),
    Error(ErrorNotice),
    /// An event this client does not know (a newer server).
    Unknown(String, Value),
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The Engine.IO open packet arrived; CONNECT is queued.
    Opened(OpenInfo),
    /// The server accepted the CONNECT; `data` is its payload (`{"sid":...}`).
    Connected {
        sid: Option<String>,
        data: Value,
    },
    /// The server refused the CONNECT (`44{...}`).
    ConnectRefused(Value),
    Event(Incoming),
    Ack {
        id: u64,
        args: Vec<Value>,
    },
    AckFailed {
        id: u64,
        reason: AckFailure,
    },
    /// An ack for no pending request.
    UnmatchedAck {
        id: u64,
        args: Vec<Value>,
    },
    /// A Socket.IO packet for another namespace.
    Foreign(SocketPacket),
    /// A frame that could not be read; the session carries on.
    Malformed {
        frame: String,
        error: CodecError,
    },
    Closed(CloseReason),
}

/// One Socket.IO connection; see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    open: Option<OpenInfo>,
    sid: Option<String>,
    next_ack: u64,
    /// Pending acks and their deadlines, in the order sent (few at a time; a vector
    /// keeps a map's code out of the wasm).
    pending: Vec<(u64, Option<Millis>)>,
    transmit: VecDeque<String>,
    events: VecDeque<SessionEvent>,
    handshake_deadline: Option<Millis>,
    heartbeat_deadline: Option<Millis>,
    now: Millis,
}

impl Session {
    pub fn new(config: Config, now: Millis) -> Self {
        let handshake_deadline = config.handshake_timeout.map(|t| now.saturating_add(t));
        Session {
            config,
            state: State::Opening,
            open: None,
            sid: None,
            next_ack: 0,
            pending: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            handshake_deadline,
            heartbeat_deadline: None,
            now,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The Engine.IO open packet's data, once it arrived.
    pub fn open_info(&self) -> Option<&OpenInfo> {
        self.open.as_ref()
    }

    /// The Socket.IO session id from the server's CONNECT reply.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// Requests still waiting for their ack.
    pub fn pending_acks(&self) -> usize {
        self.pending.len()
    }

    fn tick(&mut self, now: Millis) -> Millis {
        self.now = self.now.max(now);
        self.now
    }

    /// One text frame from the transport.
    pub fn handle_frame(&mut self, now: Millis, text: &str) {
        let now = self.tick(now);
        if self.is_closed() {
            return;
        }
        if let (true, Some(open)) = (self.config.heartbeat, &self.open) {
            self.heartbeat_deadline = Some(now + open.ping_interval + open.ping_timeout);
        }
        let packet = match decode_engine(text) {
            Ok(packet) => packet,
            Err(error) => return self.malformed(text, error),
        };
        match packet {
            EnginePacket::Open(info) => {
                if self.state != State::Opening {
                    return self.malformed(text, CodecError::InvalidOpen("a second open".into()));
                }
                if self.config.heartbeat {
                    self.heartbeat_deadline = Some(now + info.ping_interval + info.ping_timeout);
                }
                self.open = Some(info.clone());
                self.state = State::Connecting;
                self.transmit
                    .push_back(encode_frame(&SocketPacket::Connect {
                        ns: "/".into(),
                        data: self.config.auth.clone(),
                    }));
                self.events.push_back(SessionEvent::Opened(info));
            }
            EnginePacket::Ping(data) => {
                self.transmit
                    .push_back(encode_engine(&EnginePacket::Pong(data)));
            }
            EnginePacket::Close => self.finish(CloseReason::EngineClosed),
            EnginePacket::Message(body) => match decode_socket(&body) {
                Ok(packet) => self.handle_packet(packet),
                Err(error) => self.malformed(text, error),
            },
            EnginePacket::Pong(_) | EnginePacket::Upgrade | EnginePacket::Noop => {}
        }
    }

    fn handle_packet(&mut self, packet: SocketPacket) {
        let main = |ns: &str| ns == "/" || ns.is_empty();
        match packet {
            SocketPacket::Connect { ns, data } if main(&ns) => {
                let data = data.unwrap_or(Value::Null);
                let sid = data.get("sid").and_then(Value::as_str).map(str::to_owned);
                self.sid.clone_from(&sid);
                self.state = State::Connected;
                self.handshake_deadline = None;
                self.events.push_back(SessionEvent::Connected { sid, data });
            }
            SocketPacket::ConnectError { ns, data } if main(&ns) => {
                if self.state != State::Connected {
                    self.state = State::Refused;
                    self.handshake_deadline = None;
                }
                self.events.push_back(SessionEvent::ConnectRefused(data));
            }
            SocketPacket::Disconnect { ns } if main(&ns) => self.finish(CloseReason::Disconnected),
            SocketPacket::Event {
                ns,
                event,
                args,
                ack,
            } if main(&ns) => self.events.push_back(SessionEvent::Event(Incoming {
                name: event,
                args,
                ack,
            })),
            SocketPacket::Ack { ns, id, args } if main(&ns) => {
                if self.take_pending(id) {
                    self.events.push_back(SessionEvent::Ack { id, args });
                } else {
                    self.events
                        .push_back(SessionEvent::UnmatchedAck { id, args });
                }
            }
            other => self.events.push_back(SessionEvent::Foreign(other)),
        }
    }

    fn malformed(&mut self, frame: &str, error: CodecError) {
        self.events.push_back(SessionEvent::Malformed {
            frame: frame.to_owned(),
            error,
        });
    }

    /// The transport closed (or failed to open).
    pub fn handle_transport_closed(&mut self, reason: impl Into<String>) {
        if !self.is_closed() {
            self.finish(CloseReason::Transport(reason.into()));
        }
    }

    /// Ends the session from this side (the owner closes the transport).
    pub fn close(&mut self) {
        if !self.is_closed() {
            self.finish(CloseReason::Local);
        }
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed(reason.clone());
        self.transmit.clear();
        self.handshake_deadline = None;
        self.heartbeat_deadline = None;
        for (id, _) in std::mem::take(&mut self.pending) {
            self.events.push_back(SessionEvent::AckFailed {
                id,
                reason: AckFailure::Closed,
            });
        }
        self.events.push_back(SessionEvent::Closed(reason));
    }

    /// The next deadline: call [`Session::handle_timeout`] once it has passed.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let acks = self.pending.iter().filter_map(|(_, deadline)| *deadline);
        [self.handshake_deadline, self.heartbeat_deadline]
            .into_iter()
            .flatten()
            .chain(acks)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.tick(now);
        if self.is_closed() {
            return;
        }
        if self.handshake_deadline.is_some_and(|at| at <= now) {
            return self.finish(CloseReason::HandshakeTimeout);
        }
        if self.heartbeat_deadline.is_some_and(|at| at <= now) {
            return self.finish(CloseReason::HeartbeatTimeout);
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, deadline)| deadline.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.take_pending(id);
            self.events.push_back(SessionEvent::AckFailed {
                id,
                reason: AckFailure::TimedOut,
            });
        }
    }

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Sends a typed request asking for an ack; returns its ack id. `timeout` bounds the
    /// wait for the ack (none: wait as long as the session lives).
    pub fn request<R: Request>(
        &mut self,
        now: Millis,
        request: &R,
        timeout: Option<Millis>,
    ) -> u64 {
        let id = self.reserve_ack(now, timeout);
        if !self.is_closed() {
            self.transmit
                .push_back(event_frame(R::EVENT, request, Some(id)));
        }
        id
    }

    /// Sends `42<id>[event,...args]`: any arguments, for tests that send odd shapes.
    pub fn request_value(
        &mut self,
        now: Millis,
        event: &str,
        args: Vec<Value>,
        timeout: Option<Millis>,
    ) -> u64 {
        let id = self.reserve_ack(now, timeout);
        if !self.is_closed() {
            self.transmit
                .push_back(encode_frame(&SocketPacket::event(event, args, Some(id))));
        }
        id
    }

    /// Takes the next ack id and waits for it, without sending anything: for a request
    /// framed by hand.
    pub fn reserve_ack(&mut self, now: Millis, timeout: Option<Millis>) -> u64 {
        let now = self.tick(now);
        let id = self.next_ack;
        self.next_ack += 1;
        if self.is_closed() {
            self.events.push_back(SessionEvent::AckFailed {
                id,
                reason: AckFailure::Closed,
            });
        } else {
            self.pending
                .push((id, timeout.map(|t| now.saturating_add(t))));
        }
        id
    }

    /// Stops waiting for an ack; a late one is reported as unmatched.
    pub fn cancel(&mut self, id: u64) {
        self.take_pending(id);
    }

    fn take_pending(&mut self, id: u64) -> bool {
        match self.pending.iter().position(|(pending, _)| *pending == id) {
            Some(index) => {
                self.pending.remove(index);
                true
            }
            None => false,
        }
    }

    /// Sends a typed request without an ack (`typing`).
    pub fn emit<R: Request>(&mut self, request: &R) {
        if !self.is_closed() {
            self.transmit
                .push_back(event_frame(R::EVENT, request, None));
        }
    }

    /// Sends `42[event,...args]`.
    pub fn emit_value(&mut self, event: &str, args: Vec<Value>) {
        if !self.is_closed() {
            self.transmit
                .push_back(encode_frame(&SocketPacket::event(event, args, None)));
        }
    }
}

/// `42<id>["event",payload]`, the payload written straight from its type (fields in
/// declaration order, no intermediate JSON tree).
fn event_frame<T: Serialize>(event: &str, payload: &T, ack: Option<u64>) -> String {
    let body = serde_json::to_string(&(event, payload)).unwrap_or_default();
    match ack {
        Some(id) => format!("42{id}{body}"),
        None => format!("42{body}"),
    }
}

/// Reads an ack's arguments as the reply to a request: its body, or the server's refusal.
pub fn decode_ack<T: DeserializeOwned>(mut args: Vec<Value>) -> Result<T, ProtocolError> {
    let reply = if args.is_empty() {
        Value::Null
    } else {
        args.swap_remove(0)
    };
    decode_reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use serde_json::json;

    const OPEN: &str = r#"0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":100000}"#;

    fn drain(session: &mut Session) -> (Vec<String>, Vec<SessionEvent>) {
        let frames = std::iter::from_fn(|| session.poll_transmit()).collect();
        let events = std::iter::from_fn(|| session.poll_event()).collect();
        (frames, events)
    }

    fn connected(config: Config) -> Session {
        let mut session = Session::new(config, 0);
        session.handle_frame(0, OPEN);
        session.handle_frame(1, r#"40{"sid":"s"}"#);
        drain(&mut session);
        session
    }

    #[test]
    fn the_handshake_sends_connect_with_auth_and_answers_early_pings() {
        let mut session = Session::new(Config::protocol(2), 0);
        session.handle_frame(5, OPEN);
        session.handle_frame(6, "2");
        let (frames, events) = drain(&mut session);
        assert_eq!(
            frames,
            vec![r#"40{"protocol":2}"#.to_owned(), "3".to_owned()]
        );
        assert!(matches!(&events[..], [SessionEvent::Opened(info)] if info.ping_interval == 25000));
        assert_eq!(session.state(), &State::Connecting);
        session.handle_frame(7, r#"40{"sid":"abc"}"#);
        let (_, events) = drain(&mut session);
        assert!(
            matches!(&events[..], [SessionEvent::Connected { sid: Some(s), .. }] if s == "abc")
        );
        assert!(session.is_connected());
        assert_eq!(session.sid(), Some("abc"));

        let mut bare = Session::new(Config::default(), 0);
        bare.handle_frame(0, OPEN);
        assert_eq!(drain(&mut bare).0, vec!["40".to_owned()]);
    }

    #[test]
    fn a_refused_connect_is_reported() {
        let mut session = Session::new(Config::protocol(2), 0);
        session.handle_frame(0, OPEN);
        session.handle_frame(1, r#"44{"message":"the server is full"}"#);
        let (_, events) = drain(&mut session);
        assert_eq!(
            events.last(),
            Some(&SessionEvent::ConnectRefused(
                json!({"message": "the server is full"})
            ))
        );
        assert_eq!(session.state(), &State::Refused);
        // No handshake deadline is left to fire.
        assert_eq!(session.poll_timeout(), Some(45_001));
    }

    #[test]
    fn typed_requests_get_fresh_ids_and_their_acks() {
        let mut session = connected(Config::protocol(2));
        let join = JoinRequest {
            name: "alice".into(),
            room: "general".into(),
            since: Some(4),
            session: None,
            resume: true,
        };
        let first = session.request(10, &join, Some(10_000));
        let second = session.request(
            10,
            &LeaveRequest {
                room: "general".into(),
            },
            None,
        );
        assert_eq!((first, second), (0, 1));
        session.emit(&TypingRequest {
            room: "general".into(),
            typing: true,
        });
        let (frames, _) = drain(&mut session);
        assert_eq!(
            frames,
            vec![
                r#"420["join",{"name":"alice","room":"general","since":4,"resume":true}]"#,
                r#"421["leave",{"room":"general"}]"#,
                r#"42["typing",{"room":"general","typing":true}]"#,
            ]
        );
        session.handle_frame(20, r#"431[{"ok":true}]"#);
        session.handle_frame(21, r#"437[{"ok":true}]"#);
        let (_, events) = drain(&mut session);
        assert_eq!(
            events,
            vec![
                SessionEvent::Ack {
                    id: 1,
                    args: vec![json!({"ok": true})]
                },
                SessionEvent::UnmatchedAck {
                    id: 7,
                    args: vec![json!({"ok": true})]
                },
            ]
        );
        assert_eq!(session.pending_acks(), 1);
        let refusal = vec![
            json!({"ok": false, "error": {"code": "rate_limited", "message": "slow", "retry_after_ms": 300}}),
        ];
        let err = decode_ack::<SendReply>(refusal).unwrap_err();
        assert_eq!(
            (err.code, err.retry_after_ms),
            (ErrorCode::RateLimited, Some(300))
        );
    }

    #[test]
    fn each_request_times_out_at_its_own_deadline() {
        let mut session = connected(Config::default());
        let slow = session.request_value(100, "history", vec![json!({})], Some(5_000));
        let quick = session.request_value(200, "rooms", vec![json!({})], Some(1_000));
        let forever = session.request_value(200, "join", vec![json!({})], None);
        assert_eq!(session.poll_timeout(), Some(1_200));
        session.handle_timeout(1_199);
        assert_eq!(drain(&mut session).1, vec![]);
        session.handle_timeout(1_200);
        assert_eq!(
            drain(&mut session).1,
            vec![SessionEvent::AckFailed {
                id: quick,
                reason: AckFailure::TimedOut
            }]
        );
        // Time going backwards fires nothing and loses nothing.
        session.handle_timeout(3);
        assert_eq!(drain(&mut session).1, vec![]);
        session.handle_timeout(1_000_000);
        assert_eq!(
            drain(&mut session).1,
            vec![SessionEvent::AckFailed {
                id: slow,
                reason: AckFailure::TimedOut
            }]
        );
        session.close();
        assert_eq!(
            drain(&mut session).1,
            vec![
                SessionEvent::AckFailed {
                    id: forever,
                    reason: AckFailure::Closed
                },
                SessionEvent::Closed(CloseReason::Local)
            ]
        );
    }

    #[test]
    fn a_silent_server_ends_the_session_and_every_pending_request() {
        let mut session = connected(Config::protocol(2));
        let id = session.request_value(10, "message", vec![json!({})], None);
        // Any frame pushes the deadline out.
        session.handle_frame(30_000, "2");
        assert_eq!(session.poll_timeout(), Some(75_000));
        session.handle_timeout(74_999);
        assert!(session.is_connected());
        session.handle_timeout(75_000);
        let (frames, events) = drain(&mut session);
        assert!(
            frames.is_empty(),
            "the queued pong is dropped with the session"
        );
        assert_eq!(
            events,
            vec![
                SessionEvent::AckFailed {
                    id,
                    reason: AckFailure::Closed
                },
                SessionEvent::Closed(CloseReason::HeartbeatTimeout)
            ]
        );
        // Nothing happens after the end.
        session.handle_frame(75_001, "2");
        let late = session.request_value(75_001, "join", vec![], None);
        let (frames, events) = drain(&mut session);
        assert!(frames.is_empty());
        assert_eq!(
            events,
            vec![SessionEvent::AckFailed {
                id: late,
                reason: AckFailure::Closed
            }]
        );
    }

    #[test]
    fn a_handshake_that_never_completes_times_out() {
        let mut session = Session::new(Config::protocol(2), 1_000);
        assert_eq!(session.poll_timeout(), Some(11_000));
        session.handle_frame(2_000, OPEN);
        session.handle_timeout(11_000);
        assert_eq!(
            drain(&mut session).1.last(),
            Some(&SessionEvent::Closed(CloseReason::HandshakeTimeout))
        );
    }

    #[test]
    fn server_disconnects_and_unreadable_frames() {
        let mut session = connected(Config::default());
        session.handle_frame(1, "4xyz");
        session.handle_frame(1, r#"42["message",{"id":1}]"#);
        session.handle_frame(1, r#"42/admin,["x"]"#);
        let (_, events) = drain(&mut session);
        assert!(matches!(&events[0], SessionEvent::Malformed { frame, .. } if frame == "4xyz"));
        assert!(matches!(&events[1], SessionEvent::Event(e) if e.name == "message"));
        assert!(matches!(&events[2], SessionEvent::Foreign(_)));
        session.handle_frame(2, "41");
        assert_eq!(
            drain(&mut session).1,
            vec![SessionEvent::Closed(CloseReason::Disconnected)]
        );
    }

    #[test]
    fn incoming_events_decode_to_the_contract_types() {
        let incoming = Incoming {
            name: "presence".into(),
            args: vec![json!({"room": "r", "joined": ["bob"], "online": 2, "ts": 5})],
            ack: None,
        };
        let ServerEvent::Presence(notice) = incoming.decode().unwrap() else {
            panic!()
        };
        assert_eq!((notice.joined, notice.online), (vec!["bob".to_owned()], 2));
        let unknown = Incoming {
            name: "future".into(),
            args: vec![],
            ack: None,
        };
        assert_eq!(
            unknown.decode().unwrap(),
            ServerEvent::Unknown("future".into(), Value::Null)
        );
        let bad = Incoming {
            name: "message".into(),
            args: vec![json!(5)],
            ack: None,
        };
        assert!(bad.decode().is_err());
    }
}
