//! Socket.IO requests reach socketioxide with a head (URI and headers) of their own, not
//! one that borrows hyper's read buffer, and with only the headers anything reads later.
//!
//! Why: hyper parses a request without copying: every header value and the URI are
//! slices of the connection's read buffer (8 to 16 KiB), and a slice keeps the whole
//! buffer alive. engineioxide keeps the request's head for the life of the session (it is
//! what `socket.req_parts()` returns), so each connected socket pinned its read buffer:
//! 16 KB of a 49 KB connection, measured with heaptrack (docs/PERFORMANCE.md, "Where a
//! connection's memory goes"). Copying the head, a few hundred bytes, lets the buffer go
//! once the upgrade is done. And of the headers a browser sends (cookies, its user agent,
//! languages, WebSocket extensions: a kilobyte or more) nothing past the handshake reads
//! more than three, so only those are copied: see [`SocketHead`].
//!
//! axum's `OriginalUri` extension, a copy of the URI as it arrived, is one of these slices
//! as well.
//!
//! What is guaranteed: the request socketioxide sees has the same method, URI and
//! extensions as the one hyper parsed, and the headers [`SocketHead`] keeps, with their
//! values and sensitivity; the origin check runs before, on the whole head. Requests
//! outside `/socket.io/` are left alone, since nothing keeps them. What is not: that the
//! copies are smaller than the originals (they are the same bytes, in allocations of their
//! own).

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::header::{CONTENT_TYPE, SEC_WEBSOCKET_KEY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;

/// Where socketioxide serves (its default path), with both transports.
const SOCKET_PATH: &str = "/socket.io/";

/// Which headers a Socket.IO request keeps: those read after the origin check.
/// engineioxide answers a WebSocket upgrade with `Sec-WebSocket-Key` and reads a polling
/// POST's `Content-Type`; Banter reads the client's address from the proxy's header at
/// CONNECT, when one is configured (`--client-ip-header`, `chat::limits::client_key`).
#[derive(Debug, Clone, Default)]
pub struct SocketHead {
    client_ip_header: Option<HeaderName>,
}

impl SocketHead {
    /// `client_ip_header` as configured; a name that is not a valid header name keeps
    /// nothing more (no request can carry it).
    pub fn new(client_ip_header: Option<&str>) -> Self {
        Self {
            client_ip_header: client_ip_header
                .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
        }
    }

    fn keeps(&self, name: &HeaderName) -> bool {
        name == SEC_WEBSOCKET_KEY
            || name == CONTENT_TYPE
            || self.client_ip_header.as_ref() == Some(name)
    }
}

/// Middleware: gives Socket.IO requests a head that owns its bytes and holds only the
/// headers [`SocketHead`] keeps (see the module doc).
pub async fn own_socket_request_head(
    State(kept): State<SocketHead>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with(SOCKET_PATH) {
        own_head(&mut request, &kept);
    }
    next.run(request).await
}

/// Replaces the URI and the kept headers with copies that share no buffer, and drops the
/// other headers.
fn own_head(request: &mut Request<Body>, kept: &SocketHead) {
    let headers = request.headers();
    // Sized for what is kept: the map lives as long as the session.
    let count = headers.keys().filter(|name| kept.keeps(name)).count();
    let mut owned = HeaderMap::with_capacity(count);
    for (name, value) in headers.iter().filter(|(name, _)| kept.keeps(name)) {
        // Standard names are static already; only custom ones are copied.
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    *request.headers_mut() = owned;
    if let Some(uri) = owned_uri(request.uri()) {
        *request.uri_mut() = uri;
    }
    // axum's router keeps the URI as it arrived, too.
    if let Some(OriginalUri(original)) = request.extensions_mut().get_mut::<OriginalUri>() {
        if let Some(uri) = owned_uri(original) {
            *original = uri;
        }
    }
}

fn owned_uri(uri: &Uri) -> Option<Uri> {
    Uri::try_from(uri.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use std::ops::Range;

    fn within(buffer: &Bytes, bytes: &[u8]) -> bool {
        let Range { start, end } = buffer.as_ptr_range();
        let ptr = bytes.as_ptr();
        ptr >= start && ptr < end
    }

    /// The bytes of a request as hyper reads them, for [`borrowed_request`].
    const REQUEST: &[u8] = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
        Origin: http://127.0.0.1:3000\r\n\
        X-Forwarded-For: 203.0.113.7\r\n\r\n";

    /// A request whose head borrows `buffer`, as hyper builds them.
    fn borrowed_request(buffer: &Bytes) -> Request<Body> {
        let text = std::str::from_utf8(buffer).unwrap();
        let uri_at = text.find("/socket.io/").unwrap();
        let uri_end = uri_at + text[uri_at..].find(' ').unwrap();
        let origin_at = text.find("http://").unwrap();
        let origin_end = origin_at + text[origin_at..].find('\r').unwrap();
        let forwarded_at = text.find("203.0.113.7").unwrap();
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = Uri::from_maybe_shared(buffer.slice(uri_at..uri_end)).unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "origin",
            HeaderValue::from_maybe_shared(buffer.slice(origin_at..origin_end)).unwrap(),
        );
        let mut cookie = HeaderValue::from_static("banter_returning=1");
        cookie.set_sensitive(true);
        headers.insert("cookie", cookie);
        let mut key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        key.set_sensitive(true);
        headers.insert("sec-websocket-key", key);
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_maybe_shared(buffer.slice(forwarded_at..forwarded_at + 11)).unwrap(),
        );
        request.extensions_mut().insert(42u32);
        let original = Uri::from_maybe_shared(buffer.slice(uri_at..uri_end)).unwrap();
        request.extensions_mut().insert(OriginalUri(original));
        request
    }

    #[test]
    fn the_owned_head_keeps_what_is_read_and_borrows_nothing() {
        let buffer = Bytes::from_static(REQUEST);
        let mut request = borrowed_request(&buffer);
        let before = (request.uri().clone(), request.headers().clone());
        assert!(within(&buffer, request.uri().path().as_bytes()));
        assert!(within(&buffer, request.headers()["origin"].as_bytes()));

        own_head(&mut request, &SocketHead::new(Some("X-Forwarded-For")));

        assert_eq!(request.uri(), &before.0);
        let kept: Vec<_> = request.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(
            kept,
            ["sec-websocket-key", "content-type", "x-forwarded-for"]
        );
        for name in kept {
            assert_eq!(request.headers()[name], before.1[name]);
        }
        assert!(request.headers()["sec-websocket-key"].is_sensitive());
        assert_eq!(request.extensions().get::<u32>(), Some(&42));
        assert!(!within(&buffer, request.uri().path().as_bytes()));
        let OriginalUri(original) = request.extensions().get::<OriginalUri>().unwrap();
        assert_eq!(original, &before.0);
        assert!(!within(&buffer, original.path().as_bytes()));
        for value in request.headers().values() {
            assert!(
                !within(&buffer, value.as_bytes()),
                "{value:?} still borrows"
            );
        }
    }

    #[test]
    fn without_a_proxy_header_only_what_engineioxide_reads_is_kept() {
        let buffer = Bytes::from_static(REQUEST);
        let mut request = borrowed_request(&buffer);
        own_head(&mut request, &SocketHead::new(None));
        let kept: Vec<_> = request.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(kept, ["sec-websocket-key", "content-type"]);
        // A configured name that no header can have keeps nothing more.
        let mut request = borrowed_request(&buffer);
        own_head(&mut request, &SocketHead::new(Some("not a header")));
        assert_eq!(request.headers().len(), 2);
    }

    /// Pins what makes this module needed: hyper's header values are slices of the
    /// connection's read buffer (two headers sent back to back sit back to back in
    /// memory). When this fails, hyper copies headers and the middleware can go.
    #[tokio::test]
    async fn hyper_parses_headers_into_one_shared_buffer() {
        use std::io::{Read, Write};

        let router = axum::Router::new().route(
            "/probe",
            axum::routing::get(|headers: HeaderMap| async move {
                let first = headers["x-first"].as_bytes().as_ptr() as usize;
                let second = headers["x-second"].as_bytes().as_ptr() as usize;
                // "aaaa\r\nx-second: " lies between the two values.
                (second.wrapping_sub(first) == "aaaa\r\nx-second: ".len()).to_string()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(
                    b"GET /probe HTTP/1.1\r\nhost: x\r\nx-first: aaaa\r\nx-second: bbbb\r\n\
                      connection: close\r\n\r\n",
                )
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        server.abort();
        assert!(
            response.ends_with("true"),
            "hyper no longer shares its read buffer with header values: {response}"
        );
    }
}
