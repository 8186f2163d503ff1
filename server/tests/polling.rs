//! The contract over HTTP long-polling, with a minimal hand-written HTTP/1.1 client, and
//! talking to a WebSocket client in the same room.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use app::codec::{decode_polling_payload, decode_socket, EnginePacket, SocketPacket};
use app::protocol::event;
use serde_json::{json, Value};
use support::{client_id, start_server, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let raw = String::from_utf8(raw).expect("response is UTF-8");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("HTTP response without header end");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

struct PollingClient {
    addr: SocketAddr,
    sid: String,
    /// Socket.IO packets received and not yet claimed.
    inbox: Vec<SocketPacket>,
}

impl PollingClient {
    async fn connect(addr: SocketAddr) -> PollingClient {
        let (status, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!(status, 200, "handshake: {body}");
        let packets = decode_polling_payload(&body).unwrap();
        let EnginePacket::Open(open) = &packets[0] else {
            panic!("expected an open packet, got {body}")
        };
        let mut client = PollingClient {
            addr,
            sid: open.sid.clone(),
            inbox: Vec::new(),
        };
        client.post("40").await;
        let connect = client
            .wait_for(|p| matches!(p, SocketPacket::Connect { .. }))
            .await;
        let SocketPacket::Connect {
            data: Some(data), ..
        } = connect
        else {
            panic!("connect reply without data: {connect:?}")
        };
        assert!(data["sid"].is_string(), "{data}");
        client
    }

    fn path(&self) -> String {
        format!("/socket.io/?EIO=4&transport=polling&sid={}", self.sid)
    }

    async fn post(&self, payload: &str) {
        let (status, body) = http(self.addr, "POST", &self.path(), payload).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "POST {payload}");
    }

    /// One long-poll; answers pings.
    async fn poll(&mut self) {
        let (status, body) = http(self.addr, "GET", &self.path(), "").await;
        assert_eq!(status, 200, "poll: {body}");
        for packet in decode_polling_payload(&body).unwrap() {
            match packet {
                EnginePacket::Ping(data) => self.post(&format!("3{data}")).await,
                EnginePacket::Message(text) => self.inbox.push(decode_socket(&text).unwrap()),
                EnginePacket::Noop => {}
                other => panic!("unexpected packet while polling: {other:?}"),
            }
        }
    }

    async fn wait_for(&mut self, pred: impl Fn(&SocketPacket) -> bool) -> SocketPacket {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pos) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(pos);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing matching; inbox {:?}",
                self.inbox
            );
            self.poll().await;
        }
    }

    async fn request(&mut self, id: u64, event: &str, payload: Value) -> Value {
        let frame = app::codec::encode_socket(&SocketPacket::event(event, vec![payload], Some(id)));
        self.post(&format!("4{frame}")).await;
        let ack = self
            .wait_for(|p| matches!(p, SocketPacket::Ack { id: got, .. } if *got == id))
            .await;
        let SocketPacket::Ack { mut args, .. } = ack else {
            unreachable!()
        };
        args.remove(0)
    }

    async fn next_event(&mut self, name: &str) -> Value {
        let packet = self
            .wait_for(|p| matches!(p, SocketPacket::Event { event, .. } if event == name))
            .await;
        let SocketPacket::Event { mut args, .. } = packet else {
            unreachable!()
        };
        args.remove(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_speaks_the_same_contract() {
    let addr = start_server().await;
    let mut bob = Client::connect(addr, "bob").await;
    bob.join("bob", "general").await;

    let mut polly = PollingClient::connect(addr).await;
    let reply = polly
        .request(0, "join", json!({"name": "polly", "room": "general"}))
        .await;
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["name"], "polly");
    assert_eq!(bob.next_event(event::JOINED).await["name"], "polly");

    let reply = polly
        .request(
            1,
            "message",
            json!({"room": "general", "text": "from polling", "client_id": client_id()}),
        )
        .await;
    assert_eq!(reply["message"]["author"], "polly", "{reply}");
    assert_eq!(bob.next_event(event::MESSAGE).await, reply["message"]);

    let m = bob.say("general", "from websocket").await;
    assert_eq!(polly.next_event(event::MESSAGE).await, m);

    let reply = polly
        .request(2, "join", json!({"name": "", "room": "general"}))
        .await;
    assert_eq!(reply["error"]["code"], "invalid_name", "{reply}");
}
