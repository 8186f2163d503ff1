//! A client that stops reading must not hold up anyone else or grow the server's memory:
//! once its send buffer is full it is disconnected (it reconnects and catches up), and
//! everyone else still gets every message and every ack.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{client_id, start_server_with, Client};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_nobody_else_loses_anything() {
    let addr = start_server_with(server::ChatOptions {
        socket_buffer: 64,
        ..server::ChatOptions::unlimited()
    })
    .await;

    // The stalled client: joins by hand, then never reads again.
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    // A small receive buffer, so the kernel cannot soak up the flood on its behalf.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();
    stalled.next().await.unwrap().unwrap(); // open packet
    stalled.send(WsMessage::text("40")).await.unwrap();
    loop {
        let frame = stalled.next().await.unwrap().unwrap();
        if frame.to_text().unwrap().starts_with("40") {
            break;
        }
    }
    stalled
        .send(WsMessage::text(
            r#"420["join",{"name":"sloth","room":"flood"}]"#,
        ))
        .await
        .unwrap();

    let mut reader = Client::connect(addr, "reader").await;
    let joined = reader.join("reader", "flood").await;
    assert_eq!(joined["members"], json!(["sloth", "reader"]), "{joined}");
    let sender = Client::connect(addr, "sender").await;
    sender.join("sender", "flood").await;

    // Large messages fill the kernel's socket buffers quickly; then the server's own
    // per-socket buffer fills and the stalled client must be cut loose.
    let text = "x".repeat(3900);
    let total = 3000;
    let mut sent_ids = Vec::with_capacity(total);
    for batch in 0..(total / 100) {
        let pending: Vec<_> = (0..100)
            .map(|i| {
                sender.start_request(
                    "message",
                    json!({"room": "flood", "text": format!("{batch}-{i} {text}"), "client_id": client_id()}),
                )
            })
            .collect();
        for ack in pending {
            let reply = ack.wait().await;
            assert_eq!(reply["ok"], json!(true), "{reply}");
            sent_ids.push(reply["message"]["id"].as_u64().unwrap());
        }
    }
    assert!(
        sent_ids.windows(2).all(|w| w[0] < w[1]),
        "ids must increase in send order"
    );

    let mut received = Vec::with_capacity(total);
    while received.len() < total {
        let message = reader.next_event("message").await;
        received.push(message["id"].as_u64().unwrap());
    }
    let left = reader
        .next_event_within("left", Duration::from_secs(20))
        .await;
    assert_eq!(
        left["name"],
        json!("sloth"),
        "the stalled client was disconnected"
    );
    assert_eq!(received, sent_ids, "the reader got every message, in order");
    drop(stalled);
}
