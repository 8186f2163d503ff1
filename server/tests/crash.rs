//! `kill -9` while 20 clients send: every acknowledged message is stored exactly once, and
//! after reconnecting (rejoin with `since`, resend what was unacknowledged with the same
//! client_id) every client's view equals the server's history.

mod process;
mod support;

use process::{free_addr, ServerProcess};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::Client;
use tokio::sync::Mutex;

const CLIENTS: usize = 20;
const ROOM: &str = "durable";
/// 20 senders from one address, as fast as acks come back: no rate limit.
const FLAGS: &[&str] = &["--message-rate", "0", "--ip-message-rate", "0"];

/// What one client knows: messages by id, and its own sends by client_id.
#[derive(Default)]
struct View {
    messages: BTreeMap<u64, (String, String)>,
    acked: Vec<(u64, String)>,
    unacked: Vec<(String, String)>,
    /// The session token that owns this client's name.
    session: Option<String>,
}

impl View {
    fn add(&mut self, message: &Value) {
        let id = message["id"].as_u64().unwrap();
        let key = (
            message["author"].as_str().unwrap().to_owned(),
            message["client_id"].as_str().unwrap().to_owned(),
        );
        if let Some(existing) = self.messages.insert(id, key.clone()) {
            assert_eq!(existing, key, "two different messages with id {id}");
        }
    }

    fn last_id(&self) -> u64 {
        self.messages.keys().next_back().copied().unwrap_or(0)
    }
}

/// Joins (with `since` when given, and the session token once there is one, as
/// PROTOCOL.md's Reconnecting asks) and pages through the catch-up until complete.
async fn join_and_catch_up(client: &Client, name: &str, view: &mut View, since: Option<u64>) {
    let mut since = since;
    loop {
        let mut payload = json!({"name": name, "room": ROOM});
        if let Some(since) = since {
            payload["since"] = json!(since);
        }
        if let Some(session) = &view.session {
            payload["session"] = json!(session);
            payload["resume"] = json!(true);
        }
        let reply = client.request("join", payload).await;
        assert_eq!(reply["ok"], json!(true), "{reply}");
        view.session = reply["session"].as_str().map(str::to_owned);
        for message in reply["history"].as_array().unwrap() {
            view.add(message);
        }
        if reply["truncated"] != json!(true) {
            return;
        }
        since = Some(view.last_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_message_and_views_converge() {
    let dir = std::env::temp_dir().join(format!("banter-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.join("banter.db").display());
    let addr = free_addr();
    let mut server = ServerProcess::start(addr, &database, FLAGS, "warn").await;

    // Phase 1: 20 clients send as fast as their acks come back until the server dies.
    let views: Vec<Arc<Mutex<View>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    // Everyone is in the room before anyone sends, so every view starts empty.
    let mut clients = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let client = Client::connect(addr, &format!("c{i}")).await;
        join_and_catch_up(&client, &format!("c{i}"), &mut *view.lock().await, None).await;
        clients.push(client);
    }
    let mut senders = Vec::new();
    for (i, (view, mut client)) in views.iter().cloned().zip(clients).enumerate() {
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let client_id = format!("c{i}-{n}");
                let text = format!("message {n} from c{i}");
                let ack = client.start_request(
                    "message",
                    json!({"room": ROOM, "text": text, "client_id": client_id}),
                );
                let reply = ack.try_wait_for(Duration::from_secs(3)).await;
                // Take in whatever the others' messages brought meanwhile.
                for (_, message) in client.drain_events(Duration::ZERO).await {
                    if message["room"] == json!(ROOM) && message.get("id").is_some() {
                        view.lock().await.add(&message);
                    }
                }
                let mut view = view.lock().await;
                match reply {
                    Ok(reply) if reply["ok"] == json!(true) => {
                        view.add(&reply["message"]);
                        view.acked
                            .push((reply["message"]["id"].as_u64().unwrap(), client_id));
                    }
                    _ => {
                        view.unacked.push((client_id, text));
                        return;
                    }
                }
            }
        }));
    }
    // Let them run until a few hundred messages are acknowledged, then kill -9.
    loop {
        let mut acked = 0;
        for view in &views {
            acked += view.lock().await.acked.len();
        }
        if acked >= 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_9();
    for sender in senders {
        sender.await.unwrap();
    }

    // Phase 2: restart on the same database; everyone reconnects, catches up, resends.
    let _server = ServerProcess::start(addr, &database, FLAGS, "warn").await;
    let mut clients = Vec::new();
    for (i, view) in views.iter().enumerate() {
        let client = Client::connect(addr, &format!("c{i} again")).await;
        let mut view = view.lock().await;
        let since = view.last_id();
        join_and_catch_up(&client, &format!("c{i}"), &mut view, Some(since)).await;
        for (client_id, text) in std::mem::take(&mut view.unacked) {
            let reply = client
                .request(
                    "message",
                    json!({"room": ROOM, "text": text, "client_id": client_id}),
                )
                .await;
            assert_eq!(reply["ok"], json!(true), "{reply}");
            view.add(&reply["message"]);
            view.acked
                .push((reply["message"]["id"].as_u64().unwrap(), client_id));
        }
        clients.push(client);
    }
    // Live messages still in flight reach the clients that were already back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (client, view) in clients.iter_mut().zip(&views) {
        for (name, message) in client.drain_events(Duration::from_millis(50)).await {
            if name == "message" {
                view.lock().await.add(&message);
            }
        }
    }

    // The server's history, read by a fresh client from the beginning.
    let reader = Client::connect(addr, "auditor").await;
    let mut history = View::default();
    join_and_catch_up(&reader, "auditor", &mut history, Some(0)).await;

    let stored: HashSet<&(String, String)> = history.messages.values().collect();
    assert_eq!(
        stored.len(),
        history.messages.len(),
        "a message was stored twice"
    );
    for (i, view) in views.iter().enumerate() {
        let view = view.lock().await;
        for (id, client_id) in &view.acked {
            let key = (format!("c{i}"), client_id.clone());
            assert_eq!(
                history.messages.get(id),
                Some(&key),
                "acked message {client_id} lost"
            );
        }
        assert_eq!(
            view.messages, history.messages,
            "c{i}'s view differs from the server's history"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
