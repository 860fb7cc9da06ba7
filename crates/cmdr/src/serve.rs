//! `cmdr serve`: open the log and index, start the indexer, serve HTTP until
//! SIGTERM or SIGINT, then drain requests, stop the indexer and sync.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cmdr_gateway::AppState;

use crate::config::{ServeArgs, Settings};
use crate::storage;

/// Runs the server.
pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::resolve(&args)?;
    let index = storage::open_index(&settings)?;
    let log = storage::open_log(&settings).await?;
    let indexer = index
        .spawn_indexer(log.clone())
        .await
        .context("starting the indexer")?;
    let state = AppState::new(log.clone(), index, settings.gateway.clone())
        .await
        .context("loading schemas")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    // The first line on stdout says where to connect (tests read it).
    println!("cmdr listening on http://{addr}");
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    cmdr_gateway::serve(listener, state, shutdown_signal()).await?;
    indexer.shutdown().await.context("stopping the indexer")?;
    log.sync().await.context("syncing the log")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
