//! Behind a reverse proxy: a real nginx (Debian's package, started by the test on a
//! free loopback port) in front of Banter, WebSocket upgrade included. The client
//! address comes from the right-most entry of the proxy's header, strictly: what a
//! client writes into the header itself never counts.

mod process;
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use process::{free_addr, TempDir};
use server::chat::limits::AbuseLimits;
use support::start_server_with;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

struct Nginx {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    /// nginx on a free port, proxying to `backend`; `headers` are its proxy_set_header
    /// lines for the client address.
    async fn start(backend: SocketAddr, headers: &str) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("nginx is not installed: apt-get install nginx (scripts/test does)");
        let dir = TempDir::new("nginx");
        let addr = free_addr();
        let config = format!(
            "worker_processes 1;
             error_log {dir}/error.log warn;
             pid {dir}/nginx.pid;
             events {{ worker_connections 256; }}
             http {{
                 access_log off;
                 client_body_temp_path {dir}/body;
                 proxy_temp_path {dir}/proxy;
                 fastcgi_temp_path {dir}/fastcgi;
                 uwsgi_temp_path {dir}/uwsgi;
                 scgi_temp_path {dir}/scgi;
                 server {{
                     listen {addr};
                     location / {{
                         proxy_pass http://{backend};
                         proxy_http_version 1.1;
                         proxy_set_header Upgrade $http_upgrade;
                         proxy_set_header Connection \"upgrade\";
                         proxy_set_header Host $http_host;
                         {headers}
                         proxy_read_timeout 60s;
                     }}
                 }}
             }}",
            dir = dir.0.display()
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(binary)
            .args([
                "-p",
                &dir.0.display().to_string(),
                "-c",
                &path.display().to_string(),
            ])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Nginx {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx did not start on {addr}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a WebSocket (with `forged` as the client's own X-Forwarded-For and Forwarded
/// headers, when given), connects to the namespace, and returns what the server
/// answered to `40`: `40{...}` (admitted) or `44{...}` (refused), with the socket.
async fn connect(
    addr: SocketAddr,
    forged: Option<&str>,
) -> (
    String,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let mut request = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
        .into_client_request()
        .unwrap();
    if let Some(forged) = forged {
        request
            .headers_mut()
            .insert("x-forwarded-for", forged.parse().unwrap());
        request
            .headers_mut()
            .insert("forwarded", format!("for={forged}").parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.next().await; // open packet
    ws.send(WsMessage::text("40")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = ws.next().await {
            if let WsMessage::Text(text) = frame {
                if text.starts_with("40") || text.starts_with("44") {
                    return text.to_string();
                }
                if text.as_str() == "2" {
                    let _ = ws.send(WsMessage::text("3")).await;
                }
            }
        }
        String::from("(closed)")
    })
    .await
    .expect("an answer to CONNECT");
    (reply, ws)
}

fn behind_proxy(header: &str) -> server::ChatOptions {
    server::ChatOptions {
        limits: AbuseLimits {
            max_connections_per_client: 2,
            client_ip_header: Some(header.to_owned()),
            ..AbuseLimits::unlimited()
        },
        ..server::ChatOptions::unlimited()
    }
}

async fn forged_addresses_do_not_escape_the_per_address_cap(proxy: SocketAddr) {
    // Each client claims to be someone else; nginx appends the real address last.
    let (first, a) = connect(proxy, Some("6.6.6.1")).await;
    let (second, b) = connect(proxy, Some("6.6.6.2")).await;
    assert!(
        first.starts_with("40{") && second.starts_with("40{"),
        "{first} {second}"
    );
    let (third, _c) = connect(proxy, Some("6.6.6.3")).await;
    assert!(
        third.starts_with("44") && third.contains("too many connections"),
        "a forged header must not buy a third connection: {third}"
    );
    drop((a, b));
    // Chatting through the proxy works (over the WebSocket upgrade) once slots are free.
    let mut client = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut attempt = support::Client::open(proxy, "through nginx").await;
        if attempt
            .try_wait_connected(Duration::from_secs(5))
            .await
            .is_ok()
        {
            client = Some(attempt);
            break;
        }
    }
    let client = client.expect("a connection once the others closed");
    client.join("alice", "general").await;
    client.say("general", "hello through nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_through_nginx() {
    let banter = start_server_with(behind_proxy("X-Forwarded-For")).await;
    let nginx = Nginx::start(
        banter,
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    )
    .await;
    forged_addresses_do_not_escape_the_per_address_cap(nginx.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_through_nginx() {
    let banter = start_server_with(behind_proxy("Forwarded")).await;
    // RFC 7239: append this hop to what the client sent.
    let nginx = Nginx::start(
        banter,
        "proxy_set_header Forwarded \"$http_forwarded, for=$remote_addr\";",
    )
    .await;
    forged_addresses_do_not_escape_the_per_address_cap(nginx.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_missing_right_most_entry_is_refused() {
    let banter = start_server_with(behind_proxy("X-Forwarded-For")).await;
    // Straight to Banter, not through the proxy: the header is the client's own.
    let (garbage, _a) = connect(banter, Some("1.2.3.4, garbage")).await;
    assert!(
        garbage.starts_with("44") && garbage.contains("X-Forwarded-For"),
        "{garbage}"
    );
    let (missing, _b) = connect(banter, None).await;
    assert!(missing.starts_with("44"), "{missing}");
}
