use std::future::IntoFuture;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use tokio::sync::Notify;

// glibc's allocator spent a tenth of the server's CPU under load (small frames, rows and
// strings freed on other threads than they were allocated on); mimalloc is cheaper there.
// (`--features system-allocator` keeps the C library's malloc, for heaptrack.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long in-flight HTTP requests get to finish once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot open the database: {0}")]
    Storage(#[from] server::storage::StorageError),
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] server::cluster::ClusterError),
    #[error("--redis needs a database every node shares: --database postgres://…")]
    SharedDatabase,
}

fn main() -> ExitCode {
    let no_huge_pages = server::memory::without_huge_pages();
    server::logging::init();
    if !no_huge_pages {
        tracing::debug!("cannot turn transparent huge pages off; the server uses more memory");
    }
    let config = server::Config::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("banter: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("banter: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: server::Config) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    // Taken before serving: a second server on the same database stops here, naming us.
    let holder = format!(
        "Banter pid {}, listening on http://{addr}",
        std::process::id()
    );
    #[cfg(not(feature = "system-allocator"))]
    tokio::spawn(server::memory::give_back_freed_memory());
    let storage = server::storage::open_as(&config.database, &holder).await?;
    tracing::info!(database = %config.database, "storage ready");
    tracing::info!("Banter listening on http://{addr}");
    // Acks and events are small frames, often sent back to back: with Nagle's algorithm
    // on, the second waits for the client's delayed ACK (40 ms on Linux).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    let cluster = match &config.redis {
        Some(url) => {
            if config.database.starts_with("sqlite:") {
                return Err(StartError::SharedDatabase);
            }
            Some(server::cluster::Cluster::connect(url).await?)
        }
        None => None,
    };
    let server::Built { router, io, chat } =
        server::build_node(config.chat_options(), storage, cluster);
    let stopping = Arc::new(Notify::new());
    // Connection info gives the per-address limits the client's address.
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown({
        let stopping = stopping.clone();
        async move {
            shutdown_signal().await;
            // Drain: no new connection or request, what was accepted is committed and
            // answered, then every socket is told why and closed.
            chat.shut_down(&io).await;
            stopping.notify_one();
        }
    })
    .into_future();
    // A graceful stop waits for open HTTP requests, and a long-poll that belongs to no
    // Socket.IO connection is not closed by `io.close()`: bound the wait, so a supervisor
    // never has to SIGKILL us.
    tokio::select! {
        result = serve => result?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("requests still open {SHUTDOWN_GRACE:?} after shutdown began; exiting"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
