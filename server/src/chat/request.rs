//! One incoming request: the extractor that gives a handler its connection, its place in
//! line and how to answer, and the steps every request goes through in order: wait its
//! turn, stop if the connection closed meanwhile, pass the rate limits, do the work,
//! answer through the outlet.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use app::protocol::{self, ErrorCode, ErrorNotice, ProtocolError};
use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::adapter::LocalAdapter;
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as PacketValue;
use socketioxide::socket::Socket;

use super::connection::{connection_of, Bucket, Peer};
use super::limits::{retry_after_ms, ClientBudget};
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

/// The outcome of the rate limits for one request.
enum Throttle {
    Pass,
    Refuse(ProtocolError),
    /// Neither handled nor answered.
    Drop,
}

impl Request {
    /// Waits for this connection's earlier requests to finish, does the work, and answers.
    pub async fn handle<T, F, Fut>(self, chat: ChatState, event: &str, cost: Cost, work: F)
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

/// `{"ok":true, ...the body's fields}`: the body serialized as it is, with `"ok":true`
/// put in front of its fields. The same JSON as a struct with `ok` and a
/// `#[serde(flatten)]` body, without serde's flatten, which goes through a map serializer
/// field by field and cost a fifth of answering a message. `None` if the body is not a
/// JSON object (every reply type is a struct) or does not serialize.
fn ok_reply<T: Serialize>(body: &T) -> Option<Box<RawValue>> {
    let body = serde_json::to_string(body).ok()?;
    let fields = body.strip_prefix('{')?;
    let mut json = String::with_capacity(body.len() + 10);
    json.push_str("{\"ok\":true");
    if fields != "}" {
        json.push(',');
    }
    json.push_str(fields);
    RawValue::from_string(json).ok()
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
    use super::*;
    use app::protocol::{EmptyReply, Message, SendReply};

    #[derive(Serialize)]
    struct Flattened<'a, T: Serialize> {
        ok: bool,
        #[serde(flatten)]
        body: &'a T,
    }

    fn flattened<T: Serialize>(body: &T) -> String {
        serde_json::to_string(&Flattened { ok: true, body }).unwrap()
    }

    #[test]
    fn an_ok_reply_is_what_a_flattened_struct_gives() {
        let message = SendReply {
            message: Message {
                id: 7,
                room: "general".into(),
                author: "ann \"the\" {brace}".into(),
                text: "}{ \\ ünï".into(),
                ts: 1,
                client_id: "c-1".into(),
                ..Message::default()
            },
        };
        assert_eq!(ok_reply(&message).unwrap().get(), flattened(&message));
        assert_eq!(
            ok_reply(&EmptyReply {}).unwrap().get(),
            flattened(&EmptyReply {})
        );
        assert_eq!(ok_reply(&EmptyReply {}).unwrap().get(), r#"{"ok":true}"#);
        // Not an object: no reply rather than a broken one.
        assert!(ok_reply(&5).is_none());
        assert!(ok_reply(&vec![1]).is_none());
    }
}
