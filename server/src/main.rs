use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot open the database: {0}")]
    Storage(#[from] server::storage::StorageError),
}

#[tokio::main]
async fn main() -> Result<(), StartError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = server::Config::parse();

    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!("Banter listening on http://{}", listener.local_addr()?);
    let storage = server::storage::open(&config.database).await?;
    tracing::info!(database = %config.database, "storage ready");
    let (router, io) = server::build(config.chat_options(), storage);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            io.close().await;
        })
        .await?;
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
