//! What an idle WebSocket connection costs in the libraries under Banter, pinned: small
//! reproductions, without Banter, of the costs docs/PERFORMANCE.md ("What stays after the
//! crowd settles") traces upstream, so each can be reported with a test, and so these
//! tests fail when an upgrade changes them (then re-measure and update that section).
//! Two of those costs Banter patches in its copies of engineioxide and tungstenite
//! (vendor/README.md); the tests here fail if a patch is lost.
//!
//! Each test counts the heap with a global allocator of this test binary's own (nextest
//! runs every test in its own process, so nothing else allocates meanwhile but the
//! runtime). The figures are bytes the code under test keeps, not timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes live that a marked thread allocates and frees
/// into the counter it was given: each test its own, so tests run side by side (`cargo
/// test`) do not count each other, and the test's own clients are not counted.
struct Counting;

thread_local! {
    static COUNTER: Cell<Option<&'static AtomicIsize>> = const { Cell::new(None) };
}

fn count(delta: isize) {
    if let Some(counter) = COUNTER.with(Cell::get) {
        counter.fetch_add(delta, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts what this thread allocates from now on into `counter`.
fn count_this_thread(counter: &'static AtomicIsize) {
    COUNTER.with(|slot| slot.set(Some(counter)));
}

fn live(counter: &AtomicIsize) -> isize {
    counter.load(Ordering::Relaxed)
}

/// tokio's bounded channel allocates its first block of 32 slots when it is made, whatever
/// its bound: engineioxide 0.17.9 as published makes two per socket (its packet queue and
/// its heartbeat's), so every socket holds 32 packets' worth of memory from the start
/// (with the `SmallVec` of packets it queues, about 6 KB). Banter's patch of engineioxide
/// replaces them with a queue that allocates as packets wait (vendor/README.md); the bare
/// server below measures the result.
#[test]
fn a_bounded_tokio_channel_allocates_32_slots_up_front() {
    const SLOT: usize = 170;
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    count_this_thread(&LIVE);
    let before = live(&LIVE);
    let (sender, receiver) = tokio::sync::mpsc::channel::<[u8; SLOT]>(1);
    let kept = live(&LIVE) - before;
    drop((sender, receiver));
    assert!(
        kept >= (32 * SLOT) as isize,
        "a channel bounded to 1 keeps {kept} bytes before anything is sent; it was over \
         32 slots of {SLOT} bytes: tokio changed, re-measure engineioxide's queue"
    );
}

/// tungstenite 0.30 as published keeps its write buffer at the capacity of the largest
/// frame it wrote: a connection that was once sent a large message (a join reply with 500
/// names) keeps that much for the rest of its life. Banter builds it with a patch that
/// frees the buffer once it is written out (vendor/README.md); this fails if that patch is
/// lost (an upgrade that drops the `[patch.crates-io]` line) without the release taking
/// it up.
#[test]
fn tungstenite_frees_its_write_buffer_once_written_out() {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use tokio_tungstenite::tungstenite::Message;

    /// A stream that accepts every write and has nothing to read.
    struct Sink;
    impl std::io::Read for Sink {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const LARGE: usize = 64 * 1024;
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    let mut socket = WebSocket::from_raw_socket(Sink, Role::Server, None);
    socket.send(Message::text("small")).unwrap();
    // Counted from before the message is made: it is freed once written.
    count_this_thread(&LIVE);
    socket.send(Message::text("x".repeat(LARGE))).unwrap();
    // The message is written and flushed, and dropped: what is still live is the buffer.
    let kept = live(&LIVE);
    assert!(
        kept < 1024,
        "after sending a {LARGE}-byte message tungstenite keeps {kept} bytes; with Banter's \
         patch it keeps none: is vendor/tungstenite still patched in? (vendor/README.md)"
    );
    drop(socket);
}

/// tungstenite 0.30 as published keeps its read buffer (`read_buffer_size`, 1 KiB in
/// Banter) for the connection's life; Banter's patch gives it back whenever nothing is
/// buffered and there is nothing to read (vendor/README.md), and reads as much as before
/// once data comes. This fails if that patch is lost.
#[test]
fn tungstenite_frees_its_read_buffer_while_idle() {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Error, Message};

    /// A stream with `pending` to read once, then nothing yet; it takes every write.
    struct Idle {
        pending: Vec<u8>,
        reads: Vec<usize>,
    }
    impl std::io::Read for Idle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads.push(buf.len());
            if self.pending.is_empty() {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }
    impl std::io::Write for Idle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn would_block(result: Result<Message, Error>) -> bool {
        matches!(result, Err(Error::Io(err)) if err.kind() == std::io::ErrorKind::WouldBlock)
    }

    const BUFFER: usize = 16 * 1024;
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    count_this_thread(&LIVE);
    let config = WebSocketConfig::default().read_buffer_size(BUFFER);
    let idle = Idle {
        pending: Vec::new(),
        reads: Vec::new(),
    };
    let mut socket = WebSocket::from_raw_socket(idle, Role::Client, Some(config));
    assert!(
        live(&LIVE) >= BUFFER as isize,
        "the buffer is made with the socket"
    );
    assert!(would_block(socket.read()));
    let kept = live(&LIVE);
    assert!(
        kept < 1024,
        "an idle tungstenite socket keeps {kept} bytes; with Banter's patch it gives its \
         {BUFFER}-byte read buffer back: is vendor/tungstenite still patched in?"
    );
    // A frame arrives (a server's unmasked text frame "hi"): read in one go, as before.
    socket.get_mut().pending = vec![0x81, 0x02, b'h', b'i'];
    assert_eq!(socket.read().unwrap(), Message::text("hi"));
    assert!(would_block(socket.read()));
    // Each read offers about the whole buffer (less what the last frame took from its
    // front), not the 14 bytes of a frame header.
    let reads = &socket.get_ref().reads;
    assert!(
        reads.iter().all(|&len| len >= BUFFER - 16),
        "every read offers the buffer: {reads:?}"
    );
}

/// A bare socketioxide server (no Banter: an empty namespace, default settings but a 1 KiB
/// read buffer, as Banter sets it) and the heap it keeps for each idle WebSocket client
/// connected to its namespace: engineioxide's socket, three tasks per WebSocket, and
/// hyper's read buffer of the upgrade request, which
/// engineioxide keeps alive with the request head (Banter copies the head instead:
/// src/request_head.rs). Built with Banter's patches of engineioxide and tungstenite
/// (vendor/README.md): without them it kept 34.4 KB, the queues' blocks, larger tasks and
/// tungstenite's buffers included. This is the reproduction to report upstream. Only the server's
/// runtime threads are counted; the clients run on the test's thread. It fails if the cost
/// moves by more than a sixth either way. (Banter's own connections, measured with
/// heaptrack on the release build: docs/PERFORMANCE.md, "What stays after the crowd
/// settles".)
#[test]
fn a_bare_socketioxide_server_keeps_its_heap_per_idle_websocket() {
    const CLIENTS: usize = 200;
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| count_this_thread(&LIVE))
        .enable_all()
        .build()
        .unwrap();
    let addr = server.block_on(async {
        tokio::spawn(async {
            let (layer, io) = socketioxide::SocketIo::builder()
                .ws_read_buffer_size(1024)
                .build_layer();
            io.ns("/", async |_: socketioxide::extract::SocketRef| {});
            let app = axum::Router::<()>::new().layer(layer);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            addr
        })
        .await
        .unwrap()
    });
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let per_client = clients.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        // One client first, so the server's one-time allocations are not counted.
        let mut clients = Vec::with_capacity(CLIENTS + 1);
        let mut before = 0;
        for n in 0..=CLIENTS {
            if n == 1 {
                settle().await;
                before = live(&LIVE);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            // Engine.IO open, then Socket.IO CONNECT to "/" and its answer.
            let open = ws.next().await.unwrap().unwrap();
            assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");
            ws.send(Message::text("40")).await.unwrap();
            // Its CONNECT answer, past any ping ("2") that comes first.
            loop {
                let packet = ws.next().await.unwrap().unwrap();
                match packet.to_text().unwrap() {
                    "2" => ws.send(Message::text("3")).await.unwrap(),
                    text if text.starts_with("40") => break,
                    other => panic!("unexpected packet {other:?}"),
                }
            }
            clients.push(ws);
        }
        settle().await;
        (live(&LIVE) - before) as f64 / CLIENTS as f64
    });
    eprintln!("server heap per idle WebSocket client: {per_client:.0} bytes");
    assert!(
        (PINNED * 5.0 / 6.0..PINNED * 7.0 / 6.0).contains(&per_client),
        "a bare socketioxide server keeps {per_client:.0} bytes per idle connection; it \
         kept about {PINNED} on 2026-12-06: re-measure docs/PERFORMANCE.md"
    );
}

/// What [`a_bare_socketioxide_server_keeps_its_heap_per_idle_websocket`] measured, in
/// bytes per connection, with socketioxide 0.18.9 and tungstenite 0.30 as patched in
/// vendor/, in the unoptimized test build (where async tasks are larger than in a release
/// build): 22,707 on 2026-12-06 (34,387 to 34,389 unpatched, 2026-12-05).
const PINNED: f64 = 22_700.0;

/// Lets the server's tasks finish what a connection started (queues drained, handshakes
/// answered).
async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}
