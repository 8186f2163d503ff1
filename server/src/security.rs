//! HTTP-level protections: which pages may open a chat connection (cross-site WebSocket
//! hijacking and DNS rebinding), and the security headers on every response.
//!
//! Rebinding: a page on an attacker's domain whose DNS is switched to this server's
//! address (127.0.0.1, a LAN address) is "same origin" with it in the browser, and its
//! requests carry `Host: attacker.example`. So the Host of a Socket.IO handshake is
//! checked too: with `--public-url`, only its host and `--allow-host` entries; without
//! it, only IP addresses, `localhost` and `--allow-host` entries (the rule Vite adopted
//! for the same attack). A request without a Host (no browser sends one) is allowed.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Origins allowed to open Socket.IO connections besides the server's own, and the
/// hosts the server answers to.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
    /// Host names (lowercase, no port) accepted besides IP addresses and localhost.
    hosts: Vec<String>,
    /// With a public URL, only `hosts` are accepted.
    only_listed_hosts: bool,
}

impl OriginPolicy {
    /// `allowed` holds origins such as `https://chat.example.com` (case and a trailing
    /// slash do not matter).
    pub fn new(allowed: impl IntoIterator<Item = String>) -> Self {
        Self {
            allowed: allowed.into_iter().map(|o| normalize(&o)).collect(),
            hosts: Vec::new(),
            only_listed_hosts: false,
        }
    }

    /// Sets the hosts accepted in the Host header: the public URL's host (which then
    /// becomes the only one, with `extra`) and `extra`.
    pub fn with_hosts(mut self, public_url: Option<&str>, extra: &[String]) -> Self {
        if let Some(url) = public_url {
            let origin = normalize(url);
            if let Some((_, authority)) = origin.split_once("://") {
                self.hosts.push(host_name(authority).to_owned());
            }
            self.only_listed_hosts = true;
        }
        self.hosts.extend(
            extra
                .iter()
                .map(|h| host_name(&h.trim().to_ascii_lowercase()).to_owned()),
        );
        self
    }

    /// Whether the request's Host names this server (see the module docs).
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        let name = host_name(&host);
        if self.hosts.iter().any(|h| h == name) {
            return true;
        }
        !self.only_listed_hosts
            && (name == "localhost"
                || name.parse::<std::net::IpAddr>().is_ok()
                || name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok()))
    }

    /// A request without an Origin (native apps, scripts) is allowed: browsers always
    /// send one on cross-site requests, so its absence cannot be a hijacked page. A page
    /// from the same host the request went to is the server's own.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = normalize(origin);
        let same_host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, origin_host)| origin_host.eq_ignore_ascii_case(host))
            });
        same_host || self.allowed.contains(&origin)
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`), without the port.
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `scheme://host[:port]`, lowercase: an origin, also when given as a URL with a path.
fn normalize(origin: &str) -> String {
    let origin = origin.trim().to_ascii_lowercase();
    match origin.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        None => origin,
    }
}

/// Refuses Socket.IO handshakes (polling and WebSocket alike) from foreign pages.
pub async fn check_origin(
    State(policy): State<OriginPolicy>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/socket.io") && !policy.host_allowed(request.headers()) {
        tracing::warn!(host = ?request.headers().get(header::HOST), "refused a connection to an unknown host name");
        return (
            StatusCode::FORBIDDEN,
            "This Banter server does not answer to this host name (see --public-url and --allow-host).",
        )
            .into_response();
    }
    if request.uri().path().starts_with("/socket.io") && !policy.allows(request.headers()) {
        tracing::warn!(origin = ?request.headers().get(header::ORIGIN), "refused a connection from a foreign origin");
        return (
            StatusCode::FORBIDDEN,
            "This page's origin may not connect to this Banter server (see --allow-origin).",
        )
            .into_response();
    }
    next.run(request).await
}

/// The policy for server-rendered pages: only our own scripts and the one inline
/// hydration script carrying this response's nonce; wasm may be compiled.
/// `extra_connect` adds sources pages may connect to (the live-reload socket of
/// `cargo leptos watch`).
pub fn page_policy(nonce: &str, extra_connect: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self'; img-src 'self' data:; connect-src 'self'{extra_connect}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Headers for every response; pages set their own, stricter Content-Security-Policy.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn own_origin_and_no_origin_are_allowed() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(&headers(None, "127.0.0.1:3000")));
        assert!(policy.allows(&headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000")));
        assert!(policy.allows(&headers(
            Some("HTTPS://Chat.Example.com"),
            "chat.example.com"
        )));
    }

    #[test]
    fn hosts_must_be_addresses_or_localhost_unless_listed() {
        let open = OriginPolicy::default();
        for host in [
            "127.0.0.1:3000",
            "localhost:3000",
            "[::1]:3000",
            "192.168.1.5",
            "LOCALHOST",
        ] {
            assert!(open.host_allowed(&headers(None, host)), "{host}");
        }
        for host in [
            "rebind.example:3000",
            "evil.localhost.example",
            "127.0.0.1.nip.io",
        ] {
            assert!(!open.host_allowed(&headers(None, host)), "{host}");
        }
        let listed = OriginPolicy::default().with_hosts(None, &["chat.lan".to_owned()]);
        assert!(listed.host_allowed(&headers(None, "chat.lan:3000")));
        assert!(listed.host_allowed(&headers(None, "127.0.0.1:3000")));
        let public = OriginPolicy::default().with_hosts(
            Some("https://Chat.Example.com/"),
            &["alt.example.com".to_owned()],
        );
        assert!(public.host_allowed(&headers(None, "chat.example.com")));
        assert!(public.host_allowed(&headers(None, "alt.example.com:443")));
        assert!(!public.host_allowed(&headers(None, "127.0.0.1:3000")));
        assert!(!public.host_allowed(&headers(None, "rebind.example")));
    }

    #[test]
    fn foreign_origins_need_to_be_listed() {
        let policy = OriginPolicy::new(["https://app.example.com/chat/".to_owned()]);
        assert!(!policy.allows(&headers(Some("https://evil.example"), "127.0.0.1:3000")));
        assert!(!policy.allows(&headers(Some("null"), "127.0.0.1:3000")));
        assert!(!policy.allows(&headers(Some("http://127.0.0.1:3001"), "127.0.0.1:3000")));
        assert!(policy.allows(&headers(Some("https://APP.example.com"), "127.0.0.1:3000")));
    }
}
