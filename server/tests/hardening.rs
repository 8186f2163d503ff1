//! Cross-site WebSocket hijacking is refused, and pages carry security headers that
//! still let the wasm app hydrate.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use support::{serve, start_server};

/// A raw HTTP/1.1 GET, so the test controls every header (Origin, Host, Upgrade).
fn get(addr: SocketAddr, path: &str, extra_headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0; 8192];
    // Read the head (and whatever body arrives); a WebSocket upgrade never ends by itself.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") && path.contains("websocket") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

const WS_UPGRADE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_cannot_open_a_chat_connection() {
    let addr = start_server().await;
    let polling = "/socket.io/?EIO=4&transport=polling";
    let websocket = "/socket.io/?EIO=4&transport=websocket";
    tokio::task::spawn_blocking(move || {
        let evil = [("Origin", "https://evil.example")];
        assert_eq!(
            get(addr, polling, &evil).0,
            403,
            "polling from a foreign page"
        );
        let mut ws_evil = WS_UPGRADE.to_vec();
        ws_evil.extend(evil);
        assert_eq!(
            get(addr, websocket, &ws_evil).0,
            403,
            "WebSocket from a foreign page"
        );

        let own = format!("http://{addr}");
        let (status, body) = get(addr, polling, &[("Origin", own.as_str())]);
        assert_eq!(status, 200, "own origin: {body}");
        assert!(body.contains("\"sid\""), "{body}");
        let mut ws_own = WS_UPGRADE.to_vec();
        ws_own.push(("Origin", own.as_str()));
        assert_eq!(get(addr, websocket, &ws_own).0, 101, "own origin upgrades");
        assert_eq!(get(addr, polling, &[]).0, 200, "no Origin: native clients");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_may_connect() {
    let storage = server::storage::open("sqlite::memory:").await.unwrap();
    let options = server::ChatOptions {
        allowed_origins: vec!["https://app.example.com".into()],
        ..server::ChatOptions::default()
    };
    let addr = serve(server::app(options, storage)).await;
    tokio::task::spawn_blocking(move || {
        let polling = "/socket.io/?EIO=4&transport=polling";
        assert_eq!(
            get(addr, polling, &[("Origin", "https://app.example.com")]).0,
            200
        );
        assert_eq!(
            get(addr, polling, &[("Origin", "https://other.example.com")]).0,
            403
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_csp_whose_nonce_matches_the_hydration_script() {
    let addr = start_server().await;
    let (status, page) = tokio::task::spawn_blocking(move || get(addr, "/", &[]))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("x-content-type-options: nosniff"), "{page}");
    assert!(lower.contains("referrer-policy: no-referrer"), "{page}");
    let csp = page
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .expect("a Content-Security-Policy header");
    assert!(csp.contains("'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("'unsafe-inline'"), "{csp}");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a nonce in the policy");
    assert!(
        page.contains(&format!("<script type=\"module\" nonce=\"{nonce}\">")),
        "the hydration script carries the policy's nonce"
    );
}

/// A raw GET with the Host header the test names (a rebound domain, say).
fn get_as_host(addr: SocketAddr, host: &str, path: &str, origin: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_domain_cannot_open_a_chat_connection() {
    const POLL: &str = "/socket.io/?EIO=4&transport=polling";
    let addr = start_server().await;
    let port = addr.port();
    // An attacker's page whose domain now resolves to this server: same origin as far as
    // the browser knows, so Origin matches Host.
    let rebound = format!("rebind.example:{port}");
    let (status, body) = get_as_host(addr, &rebound, POLL, Some(&format!("http://{rebound}")));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("does not answer to this host name"), "{body}");
    // Without a browser in the way (no Origin) a foreign Host is refused too.
    let (status, _) = get_as_host(addr, &rebound, POLL, None);
    assert_eq!(status, 403);
    // Addresses and localhost are this server.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, body) = get_as_host(addr, &host, POLL, Some(&format!("http://{host}")));
        assert_eq!(status, 200, "{host}: {body}");
    }

    // With --public-url only its host (and --allow-host) are.
    let public = serve(server::app(
        server::ChatOptions {
            public_url: Some("https://chat.example.com".into()),
            allowed_origins: vec!["https://chat.example.com".into()],
            allowed_hosts: vec!["chat.internal".into()],
            ..server::ChatOptions::unlimited()
        },
        server::storage::open("sqlite::memory:").await.unwrap(),
    ))
    .await;
    let ok = get_as_host(
        public,
        "chat.example.com",
        POLL,
        Some("https://chat.example.com"),
    );
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(get_as_host(public, "chat.internal:8080", POLL, None).0, 200);
    assert_eq!(get_as_host(public, &public.to_string(), POLL, None).0, 403);
    // Pages themselves are served whatever the Host: they hold nothing to steal.
    assert_eq!(get_as_host(addr, &rebound, "/", None).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_for_operators() {
    let addr = start_server().await;
    let alice = support::Client::connect(addr, "alice").await;
    alice.join("alice", "general").await;
    alice.say("general", "counted").await;
    let refused = alice
        .request(
            "message",
            serde_json::json!({"room": "nowhere", "text": "x", "client_id": "c"}),
        )
        .await;
    support::assert_refused(&refused, "not_joined", "a counted refusal");
    let (status, body) = get(addr, "/healthz", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/readyz", &[]);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/metrics", &[]);
    assert_eq!(status, 200);
    for line in [
        "banter_connections 1",
        "banter_rooms 1",
        "banter_messages_stored_total 1",
        "banter_requests_refused_total{code=\"not_joined\"} 1",
        "banter_ack_latency_seconds_count 2",
        "banter_storage_append_seconds_count 1",
        "banter_draining 0",
    ] {
        assert!(body.contains(line), "no {line:?} in\n{body}");
    }
}
