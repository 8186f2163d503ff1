//! One incoming request: the extractor that gives a handler its connection, its place in
//! line and how to answer, and the steps every request goes through in order: wait its
//! turn, stop if the connection closed meanwhile, pass the rate limits, do the work,
//! answer through the outlet.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use app::protocol::{self, ErrorCode, ErrorNotice, ProtocolError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use socketioxide::adapter::LocalAdapter;
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::Socket;

use super::connection::{connection_of, Bucket, Peer};
use super::limits::{retry_after_ms, ClientBudget};
use super::ok_reply::ok_reply;
use super::outlet::{shared_json, Outgoing};
use super::{disconnect_flooder, ChatState};

/// What a request costs against the rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A message or a change to one (edit, delete, react).
    Message,
    /// Any other request.
    Request,
    /// A search: a request, and one of the few searches allowed.
    Search,
    /// Typing: a request whose refusals are silent (extra notices are just dropped).
    Typing,
}

pub struct Request {
    peer: Option<Peer>,
    ack_id: Option<i64>,
    /// The packet carried binary attachments, which no event of the contract takes.
    binary: bool,
    ticket: u64,
    arrived: Instant,
}

impl FromMessageParts<LocalAdapter> for Request {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut PacketValue,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let arrived = Instant::now();
        // Every admitted socket has its connection from the connect middleware, before
        // any handler can run; without one there is nobody to answer.
        let peer = connection_of(s).map(|conn| Peer {
            socket: s.clone(),
            conn,
        });
        let ticket = peer.as_ref().map_or(0, |p| p.conn.turnstile.ticket());
        if let Some(peer) = &peer {
            // A client that follows the rate limits has a few requests waiting; one with
            // this many sent far more than the limits take, and every waiting request
            // holds memory until its turn.
            if peer.conn.turnstile.queued() > peer.conn.max_queued {
                disconnect_flooder(peer, "");
            }
        }
        let binary = match v {
            PacketValue::Str(_, attachments) => attachments.as_ref().is_some_and(|a| !a.is_empty()),
            PacketValue::Bytes(_) => true,
        };
        Ok(Request {
            peer,
            ack_id: *ack_id,
            binary,
            ticket,
            arrived,
        })
    }
}

/// A request's payload: the JSON text of its event's first argument, read into the
/// request's type by [`Payload::decode`] when its turn comes (see
/// `protocol::event_payload` for why not socketioxide's `TryData`).
pub struct Payload(Option<Box<str>>);

impl FromMessageParts<LocalAdapter> for Payload {
    type Error = Infallible;

    fn from_message_parts(
        _: &Arc<Socket<LocalAdapter>>,
        v: &mut PacketValue,
        _: &Option<i64>,
    ) -> Result<Self, Infallible> {
        // Banter's sockets use the common (JSON) parser, whose packets are text; a binary
        // packet has no payload the contract knows.
        let payload = match v {
            PacketValue::Str(data, _) => protocol::event_payload(data.as_str()).map(Box::from),
            PacketValue::Bytes(_) => None,
        };
        Ok(Payload(payload))
    }
}

impl Payload {
    /// The payload read into its request type; a missing one or any other shape is
    /// `bad_request`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        match &self.0 {
            Some(json) => protocol::decode_request(json),
            None => Err(ProtocolError::new(
                ErrorCode::BadRequest,
                "the request needs a JSON object payload",
            )),
        }
    }

    /// Whether the request came with a JSON object.
    pub fn is_object(&self) -> bool {
        self.0.as_deref().is_some_and(|json| json.starts_with('{'))
    }
}

/// The outcome of the rate limits for one request.
enum Throttle {
    Pass,
    Refuse(ProtocolError),
    /// Neither handled nor answered.
    Drop,
}

impl Request {
    /// Waits for this connection's earlier requests to finish, does the work, and answers.
    ///
    /// Boxed: socketioxide spawns a task for every packet and moves the handler's future
    /// into it, and the future of a whole request (its turn, the limits, the work, the
    /// answer) is kilobytes, copied at the spawn and again as the task stores its result.
    /// Boxed, the handler's own future holds its arguments and a pointer.
    pub fn handle<'a, T, F, Fut>(
        self,
        chat: ChatState,
        event: &'a str,
        cost: Cost,
        work: F,
    ) -> Pin<Box<impl Future<Output = ()> + 'a>>
    where
        T: Serialize + 'a,
        F: FnOnce(ChatState, Peer) -> Fut + 'a,
        Fut: Future<Output = Result<T, ProtocolError>> + 'a,
    {
        Box::pin(self.run(chat, event, cost, work))
    }

    async fn run<T, F, Fut>(self, chat: ChatState, event: &str, cost: Cost, work: F)
    where
        T: Serialize,
        F: FnOnce(ChatState, Peer) -> Fut,
        Fut: Future<Output = Result<T, ProtocolError>>,
    {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let conn = peer.conn.clone();
        // Counted from before the turn: shutdown waits for it, or it sees the drain.
        let _busy = chat.begin_request();
        let _turn = conn.turnstile.wait(self.ticket).await;
        // A request still waiting when its connection closed must not act for it: it
        // would join rooms, claim names or post for a client that is gone.
        if conn.is_flooding() || conn.is_closed() || conn.outlet.is_evicted() {
            return;
        }
        let result = if chat.is_draining() {
            Err(ProtocolError::new(
                ErrorCode::Unavailable,
                "The server is shutting down; reconnect in a moment.",
            ))
        } else {
            match throttle(&chat, &peer, event, cost, self.arrived).await {
                Throttle::Drop => return,
                Throttle::Refuse(refusal) => Err(refusal),
                Throttle::Pass if self.binary => Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    "Binary attachments are not accepted; send JSON text.",
                )),
                Throttle::Pass => work(chat.clone(), peer.clone()).await,
            }
        };
        if let Err(error) = &result {
            chat.metrics.refused(error.code);
        }
        let arrived = self.arrived;
        self.respond(&peer, event, result);
        if cost == Cost::Message {
            chat.metrics.ack_latency.observe(arrived.elapsed());
        }
    }

    /// Answers the request: on its ack when the client asked for one; a refusal without
    /// an ack becomes an `error` event so the client still learns why.
    fn respond<T: Serialize>(self, peer: &Peer, event: &str, result: Result<T, ProtocolError>) {
        match (result, self.ack_id) {
            (Ok(body), Some(id)) => {
                if let Some(json) = ok_reply(&body) {
                    peer.send(Outgoing::Ack { id, json });
                }
            }
            (Err(error), Some(id)) => {
                if let Ok(json) = serde_json::value::to_raw_value(&protocol::err_reply(&error)) {
                    peer.send(Outgoing::Ack { id, json });
                }
            }
            (Ok(_), None) => {}
            (Err(error), None) => {
                let notice = ErrorNotice {
                    event: event.to_owned(),
                    code: error.code,
                    message: error.message,
                    retry_after_ms: error.retry_after_ms,
                };
                if let Some(json) = shared_json(&notice) {
                    peer.send(Outgoing::event(protocol::event::ERROR, json));
                }
            }
        }
    }
}

/// Applies the rate limits to one request, in arrival order (the caller holds the
/// connection's turn). A refusal of a request that arrived before the wait it had been
/// given was over counts against the connection; too many of those disconnect it.
async fn throttle(
    chat: &ChatState,
    peer: &Peer,
    event: &str,
    cost: Cost,
    arrived: Instant,
) -> Throttle {
    let now = Instant::now();
    let limits = &chat.options.limits;
    let conn = &peer.conn;
    let (bucket, limit, budget) = match cost {
        Cost::Message => (Bucket::Messages, limits.messages, ClientBudget::Messages),
        Cost::Request | Cost::Typing | Cost::Search => {
            (Bucket::Requests, limits.requests, ClientBudget::Requests)
        }
    };
    let mut allowed = conn.take(bucket, limit, arrived, now);
    if allowed.is_ok() {
        allowed = chat.take_client_budget(conn.client, budget, arrived).await;
    }
    if cost == Cost::Search {
        allowed = allowed.and_then(|()| conn.take(Bucket::Searches, limits.searches, arrived, now));
    }
    let Err((wait, early)) = allowed else {
        return Throttle::Pass;
    };
    if early
        && conn
            .take(Bucket::Refusals, limits.refusals, arrived, now)
            .is_err()
    {
        disconnect_flooder(peer, event);
        return Throttle::Drop;
    }
    if cost == Cost::Typing {
        return Throttle::Drop;
    }
    let retry_after = retry_after_ms(wait);
    Throttle::Refuse(ProtocolError::rate_limited(
        format!("You are sending too fast; try again in {retry_after} ms."),
        retry_after,
    ))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fmt::Display;

    use serde::de::{DeserializeSeed, IntoDeserializer, SeqAccess, Visitor};

    thread_local! {
        static ERRORS_MADE: Cell<usize> = const { Cell::new(0) };
    }

    /// A deserializer error that counts how many are made.
    #[derive(Debug)]
    struct Counted;
    impl Display for Counted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("counted")
        }
    }
    impl std::error::Error for Counted {}
    impl serde::de::Error for Counted {
        fn custom<T: Display>(_: T) -> Self {
            ERRORS_MADE.with(|made| made.set(made.get() + 1));
            Counted
        }
    }

    /// `["message", 7]`, as a sequence.
    struct TwoElements(usize);
    impl<'de> SeqAccess<'de> for TwoElements {
        type Error = Counted;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Counted> {
            self.0 += 1;
            match self.0 {
                1 => seed.deserialize("message".into_deserializer()).map(Some),
                2 => seed.deserialize(7u32.into_deserializer()).map(Some),
                _ => Ok(None),
            }
        }
    }

    /// socketioxide-core 0.20's `FirstElement`, through which socketioxide reads every
    /// packet's event name (and `TryData` its payload), builds its "first element not
    /// found" error with `ok_or`, eagerly, also when the element is there: a serde_json
    /// error costs an allocation and a search of its message, about 800 instructions a
    /// packet. Banter reads payloads itself (`Payload`, `protocol::event_payload`); the
    /// event name still goes through it. When this fails, upstream has fixed it (`ok_or_else`).
    #[test]
    fn pinned_upstream_first_element_makes_an_error_for_every_packet() {
        let found = socketioxide_core::parser::FirstElement::<String>::default()
            .visit_seq(TwoElements(0))
            .unwrap();
        assert_eq!(found, "message");
        assert_eq!(ERRORS_MADE.with(Cell::get), 1);
    }
}
