//! Abuse limits: token buckets for requests, and caps on connections per client address
//! and in total.
//!
//! A refused request is answered `rate_limited` with the time after which the client
//! may send again; a socket that keeps sending anyway is disconnected. Connections over
//! a cap are refused at the Socket.IO CONNECT with a reason.
//!
//! What counts as "keeps sending anyway": a request refused although it arrived before
//! the wait it had been given was over. A client that waits exactly `retry_after_ms` and
//! sends again may well be refused again (another client of its address took the token,
//! or its own burst is spent), but that refusal does not count against it: a client that
//! does what PROTOCOL.md says is never disconnected.
//!
//! Per-address budgets (messages, requests, room creation) live as long as the address
//! has connections or a bucket that has not refilled, so reconnecting does not reset
//! them; per-connection budgets come on top.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use socketioxide::extract::SocketRef;

use crate::lock;

/// A token bucket's shape: `per_second` tokens flow in, at most `burst` are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: f64) -> Option<Self> {
        // A rate of zero turns the limit off (benchmarks, trusted deployments).
        (per_second > 0.0).then(|| Self {
            per_second,
            burst: burst.max(1.0),
        })
    }
}

/// Every abuse limit of the chat service.
#[derive(Debug, Clone, PartialEq)]
pub struct AbuseLimits {
    /// Messages and changes (edit, delete, react) per connection.
    pub messages: Option<RateLimit>,
    /// Messages and changes per client address, over all its connections.
    pub client_messages: Option<RateLimit>,
    /// Other requests (join, leave, history, rooms, watch, typing) per connection.
    pub requests: Option<RateLimit>,
    /// Other requests per client address, over all its connections.
    pub client_requests: Option<RateLimit>,
    /// Searches per connection (they also count as requests).
    pub searches: Option<RateLimit>,
    /// New rooms (a join to a room with no message and nobody in it) per client address.
    pub room_creation: Option<RateLimit>,
    /// Refusals a connection may collect before it is disconnected for flooding: a
    /// client that waits as told is refused about once per wait, a flood far more often.
    pub refusals: Option<RateLimit>,
    pub max_connections_per_client: usize,
    pub max_connections: usize,
    /// Requests one connection may have waiting for their turn (see `request.rs`).
    pub max_queued_requests: u64,
    /// A header set by a trusted reverse proxy holding the client's address (e.g.
    /// `X-Forwarded-For`); without it the TCP peer is the client.
    pub client_ip_header: Option<String>,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            messages: RateLimit::new(5.0, 10.0),
            client_messages: RateLimit::new(25.0, 50.0),
            requests: RateLimit::new(10.0, 30.0),
            client_requests: RateLimit::new(50.0, 100.0),
            searches: RateLimit::new(1.0, 5.0),
            room_creation: RateLimit::new(0.2, 20.0),
            refusals: RateLimit::new(1.0, 30.0),
            max_connections_per_client: 50,
            max_connections: 10_000,
            max_queued_requests: 256,
            client_ip_header: None,
        }
    }
}

impl AbuseLimits {
    /// No rate limits and no connection caps.
    pub fn unlimited() -> Self {
        Self {
            messages: None,
            client_messages: None,
            requests: None,
            client_requests: None,
            searches: None,
            room_creation: None,
            refusals: None,
            max_connections_per_client: usize::MAX,
            max_connections: usize::MAX,
            max_queued_requests: u64::MAX,
            client_ip_header: None,
        }
    }
}

/// A token bucket that, once it refused, keeps refusing until the announced retry time:
/// otherwise a refill between two queued messages could let the later one through ahead
/// of the refused one, and a client resending after the wait would see its order broken.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
    blocked_until: Option<Instant>,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            refilled_at: now,
            blocked_until: None,
        }
    }

    /// Whether a request that arrived at `arrived` came before the end of the last wait
    /// this bucket announced: a refusal then counts against the client.
    pub fn arrived_early(&self, arrived: Instant) -> bool {
        self.blocked_until.is_some_and(|until| arrived < until)
    }

    /// Takes one token, or says how long to wait for one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Err(until - now);
            }
            self.blocked_until = None;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.limit.per_second);
        self.blocked_until = Some(now + wait);
        Err(wait)
    }

    /// Whether the bucket is back to full: it then carries no state worth keeping.
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens + elapsed * self.limit.per_second >= self.limit.burst
    }
}

/// Where limits attribute a connection to. IPv6 clients usually hold a whole /64, so they
/// are counted by that prefix rather than by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
            v4 => Self(v4),
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(_) => write!(f, "{}/64", self.0),
            IpAddr::V4(_) => write!(f, "{}", self.0),
        }
    }
}

/// The client's address: from the configured proxy header when one is set, else the TCP
/// peer. `Ok(None)` when the server was started without connection info (some tests):
/// per-address limits are then off.
///
/// Behind a proxy only the right-most entry can be trusted: it is the one our own proxy
/// added, while anything left of it came from the client. So the right-most entry is
/// used and must parse; a missing header or an unreadable right-most entry refuses the
/// connection rather than fall back to an address the client may have written.
pub fn client_key(
    socket: &SocketRef,
    proxy_header: Option<&str>,
) -> Result<Option<ClientKey>, ConnectRefusal> {
    let parts = socket.req_parts();
    if let Some(header) = proxy_header {
        let values: Vec<&str> = parts
            .headers
            .get_all(header)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        return forwarded_client(header, &values)
            .map(|ip| Some(ClientKey::from_ip(ip)))
            .ok_or_else(|| ConnectRefusal::ProxyHeader(header.to_owned()));
    }
    Ok(parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| ClientKey::from_ip(addr.ip())))
}

/// The client address in the right-most entry of a proxy header's values (all lines of
/// it, in order). `Forwarded` (RFC 7239) is read by its `for=` parameter; any other
/// header as a comma-separated list of addresses (`X-Forwarded-For`, `X-Real-IP`).
pub fn forwarded_client(header: &str, values: &[&str]) -> Option<IpAddr> {
    let last = values
        .iter()
        .flat_map(|value| value.split(','))
        .next_back()?
        .trim();
    if header.eq_ignore_ascii_case("forwarded") {
        let node = last.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("for")
                .then(|| value.trim().trim_matches('"'))
        })?;
        parse_node(node)
    } else {
        parse_node(last)
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`. Obfuscated identifiers (`unknown`, `_hidden`) are not addresses.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, _port) = rest.split_once(']')?;
        return ip.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    node.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("too many connections from your address ({0} at most); close some and retry")]
    PerClient(usize),
    #[error("the server is full ({0} connections); retry later")]
    Total(usize),
    #[error("the request did not come through the expected proxy: no usable {0} header")]
    ProxyHeader(String),
    #[error("the server is shutting down; reconnect in a moment")]
    ShuttingDown,
    #[error("the server cannot reach the state it shares with its other nodes; retry")]
    Unavailable,
}

#[derive(Default)]
struct ClientState {
    connections: usize,
    messages: Option<TokenBucket>,
    requests: Option<TokenBucket>,
    rooms: Option<TokenBucket>,
}

impl ClientState {
    /// Whether nothing is left worth remembering: no connection, every bucket full.
    fn is_idle(&self, now: Instant) -> bool {
        self.connections == 0
            && [&self.messages, &self.requests, &self.rooms]
                .iter()
                .all(|bucket| bucket.as_ref().is_none_or(|b| b.is_full(now)))
    }
}

/// Which of an address' shared budgets a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBudget {
    Messages,
    Requests,
    RoomCreation,
}

/// Connections and message buckets per client address, and the connection total.
pub struct ClientLimits {
    max_per_client: usize,
    max_total: usize,
    message_limit: Option<RateLimit>,
    request_limit: Option<RateLimit>,
    room_limit: Option<RateLimit>,
    state: Mutex<(usize, HashMap<ClientKey, ClientState>)>,
    admitted: AtomicUsize,
}

/// Admissions between sweeps of addresses left with no connection: a client gone with a
/// part-spent bucket is remembered until the bucket refilled, not forever.
const SWEEP_EVERY: usize = 1024;

impl ClientLimits {
    pub fn new(limits: &AbuseLimits) -> Self {
        Self {
            max_per_client: limits.max_connections_per_client,
            max_total: limits.max_connections,
            message_limit: limits.client_messages,
            request_limit: limits.client_requests,
            room_limit: limits.room_creation,
            state: Mutex::new((0, HashMap::new())),
            admitted: Default::default(),
        }
    }

    /// Counts a new connection in, or refuses it. The slot counts it out when dropped.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<ClientKey>,
    ) -> Result<ConnectionSlot, ConnectRefusal> {
        let mut guard = lock(&self.state);
        let (total, clients) = &mut *guard;
        if *total >= self.max_total {
            return Err(ConnectRefusal::Total(self.max_total));
        }
        if let Some(key) = client {
            let entry = clients.entry(key).or_default();
            if entry.connections >= self.max_per_client {
                return Err(ConnectRefusal::PerClient(self.max_per_client));
            }
            entry.connections += 1;
        }
        *total += 1;
        let admitted = self.admitted.fetch_add(1, Ordering::Relaxed);
        if admitted % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = Instant::now();
            clients.retain(|_, state| !state.is_idle(now));
        }
        Ok(ConnectionSlot {
            limits: self.clone(),
            client,
            cluster: None,
        })
    }

    /// Connections admitted and not yet gone.
    pub fn total(&self) -> usize {
        lock(&self.state).0
    }

    /// Takes a token from one of the client's shared buckets. On refusal, also says
    /// whether the request arrived before a wait this bucket had announced.
    pub fn take(
        &self,
        client: Option<ClientKey>,
        budget: ClientBudget,
        arrived: Instant,
        now: Instant,
    ) -> Result<(), (Duration, bool)> {
        let limit = match budget {
            ClientBudget::Messages => self.message_limit,
            ClientBudget::Requests => self.request_limit,
            ClientBudget::RoomCreation => self.room_limit,
        };
        let (Some(limit), Some(key)) = (limit, client) else {
            return Ok(());
        };
        let mut guard = lock(&self.state);
        let state = guard.1.entry(key).or_default();
        let bucket = match budget {
            ClientBudget::Messages => &mut state.messages,
            ClientBudget::Requests => &mut state.requests,
            ClientBudget::RoomCreation => &mut state.rooms,
        }
        .get_or_insert_with(|| TokenBucket::new(limit, now));
        let early = bucket.arrived_early(arrived);
        bucket.take(now).map_err(|wait| (wait, early))
    }

    fn release(&self, client: Option<ClientKey>) {
        let now = Instant::now();
        let mut guard = lock(&self.state);
        let (total, clients) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(key) = client {
            if let Some(state) = clients.get_mut(&key) {
                state.connections = state.connections.saturating_sub(1);
                // Forget an address once it has nothing left to remember; a client that
                // reconnects to dodge its bucket finds it refilled only as time allows.
                if state.is_idle(now) {
                    clients.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        lock(&self.state).1.len()
    }
}

/// One admitted connection; dropping it (with the socket's session) counts it out.
pub struct ConnectionSlot {
    limits: Arc<ClientLimits>,
    client: Option<ClientKey>,
    /// Where the connection is also counted for the whole cluster, if it is.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl ConnectionSlot {
    pub fn client(&self) -> Option<ClientKey> {
        self.client
    }

    /// The connection is counted in the cluster too: it is counted out there as well.
    pub fn counted_in(&mut self, cluster: Arc<crate::cluster::Cluster>) {
        self.cluster = Some(cluster);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.release(self.client);
        if let (Some(cluster), Some(client)) = (self.cluster.take(), self.client) {
            tokio::spawn(async move {
                if let Err(err) = cluster.release_connection(&client.to_string()).await {
                    tracing::warn!(%err, "could not count a connection out in Redis");
                }
            });
        }
    }
}

/// Rounds a wait up to whole milliseconds, so a client that waits exactly that long
/// finds a token.
pub fn retry_after_ms(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: f64) -> RateLimit {
        RateLimit::new(per_second, burst).expect("a positive rate")
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_the_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(5.0, 10.0), start);
        for i in 0..10 {
            assert_eq!(bucket.take(start), Ok(()), "token {i} of the burst");
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert_eq!(retry_after_ms(wait), 200);
    }

    #[test]
    fn a_refused_bucket_stays_shut_until_the_announced_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(5.0, 1.0), start);
        bucket.take(start).expect("the one token");
        let wait = bucket.take(start).expect_err("empty");
        // Just before the announced time a token has almost refilled; still refused, so
        // a later message cannot overtake the refused one.
        let almost = start + wait - Duration::from_millis(1);
        assert!(bucket.take(almost).is_err());
        assert_eq!(bucket.take(start + wait), Ok(()));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(2.0, 3.0), start);
        for _ in 0..3 {
            bucket.take(start).expect("burst");
        }
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err(), "refill is capped at the burst");
    }

    #[test]
    fn a_request_is_early_only_before_the_announced_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(5.0, 1.0), start);
        bucket.take(start).expect("the one token");
        assert!(!bucket.arrived_early(start), "nothing was announced yet");
        let wait = bucket.take(start).expect_err("empty");
        assert!(bucket.arrived_early(start + wait / 2));
        assert!(!bucket.arrived_early(start + wait));
    }

    #[test]
    fn a_zero_rate_means_no_limit() {
        assert_eq!(RateLimit::new(0.0, 10.0), None);
    }

    #[test]
    fn connections_are_capped_per_client_and_in_total() {
        let limits = Arc::new(ClientLimits::new(&AbuseLimits {
            max_connections_per_client: 2,
            max_connections: 3,
            ..AbuseLimits::unlimited()
        }));
        let a = Some(ClientKey::from_ip("10.0.0.1".parse().unwrap()));
        let b = Some(ClientKey::from_ip("10.0.0.2".parse().unwrap()));
        let a1 = limits.admit(a).expect("first");
        let _a2 = limits.admit(a).expect("second");
        assert_eq!(limits.admit(a).err(), Some(ConnectRefusal::PerClient(2)));
        let _b1 = limits.admit(b).expect("another address");
        assert_eq!(limits.admit(b).err(), Some(ConnectRefusal::Total(3)));
        drop(a1);
        limits.admit(a).expect("a slot was freed");
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let limits = Arc::new(ClientLimits::new(&AbuseLimits {
            max_connections_per_client: 5,
            max_connections: 10,
            ..AbuseLimits::default()
        }));
        let a = Some(ClientKey::from_ip("10.0.0.1".parse().unwrap()));
        drop(limits.admit(a).expect("admitted"));
        assert_eq!(limits.tracked_clients(), 0);
    }

    #[test]
    fn proxy_headers_are_read_right_most_and_strictly() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |values: &[&str]| forwarded_client("X-Forwarded-For", values);
        assert_eq!(xff(&["1.2.3.4"]), Some(ip("1.2.3.4")));
        assert_eq!(xff(&["6.6.6.6, 1.2.3.4"]), Some(ip("1.2.3.4")));
        assert_eq!(
            xff(&["6.6.6.6", "1.2.3.4"]),
            Some(ip("1.2.3.4")),
            "header lines in order"
        );
        assert_eq!(
            xff(&["1.2.3.4, garbage"]),
            None,
            "never skips to an entry the client wrote"
        );
        assert_eq!(xff(&["1.2.3.4, "]), None);
        assert_eq!(xff(&[]), None);
        assert_eq!(xff(&["[2001:db8::1]:4711"]), Some(ip("2001:db8::1")));
        assert_eq!(xff(&["10.0.0.1:80"]), Some(ip("10.0.0.1")));
        let fwd = |values: &[&str]| forwarded_client("Forwarded", values);
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            Some(ip("192.0.2.60"))
        );
        assert_eq!(
            fwd(&["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\""]),
            Some(ip("2001:db8:cafe::17"))
        );
        assert_eq!(fwd(&["for=1.2.3.4, for=unknown"]), None);
        assert_eq!(fwd(&["for=1.2.3.4, proto=https"]), None);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_prefix() {
        let one = ClientKey::from_ip("2001:db8:1:2::1".parse().unwrap());
        let other = ClientKey::from_ip("2001:db8:1:2:ffff::9".parse().unwrap());
        let elsewhere = ClientKey::from_ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, other);
        assert_ne!(one, elsewhere);
        let mapped = ClientKey::from_ip("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(
            mapped,
            ClientKey::from_ip("10.0.0.1".parse().unwrap()),
            "IPv4-mapped addresses are the IPv4 client"
        );
    }
}
