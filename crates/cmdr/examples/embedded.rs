//! An application that embeds cmdr: the HTTP gateway, the indexer and its own
//! command processor (written with the Rust SDK) in one binary, on the
//! embedded log. No other process to run; the same code works unchanged on
//! any other `cmdr_log::Log` backend.
//!
//! Run it, then send commands:
//!
//! ```text
//! cargo run -p cmdr --example embedded -- ./embedded-data 127.0.0.1:3001
//!
//! curl -s -XPOST 'http://127.0.0.1:3001/commands?sync=true' \
//!      -H 'content-type: application/json' -d '{"action": "greet", "data": {"name": "ada"}}'
//! # 201, the command with its `greeted` event
//! curl -s -XPOST 'http://127.0.0.1:3001/commands?sync=true' \
//!      -H 'content-type: application/json' -d '{"action": "greet", "data": {}}'
//! # 409, rejection `name-required`
//! ```
//!
//! Ctrl-C stops it in order: HTTP drains (sync waits get an outcome that
//! comes within 5 s; the processor still runs),
//! then the processor, then the indexer; finally the log is synced.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cmdr_gateway::{serve, AppState, GatewayConfig};
use cmdr_index::Index;
use cmdr_log::embedded::{EmbeddedLog, LogConfig};
use cmdr_log::Log;
use cmdr_processor::sdk::ensure_topics;
use cmdr_processor::{Decision, Processor};
use serde_json::json;
use tokio::sync::watch;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(args.next().unwrap_or_else(|| "./embedded-data".into()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3001".into());
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;

    // Storage: the index first (it locks the data directory), then the log
    // with cmdr's `commands` and `events` topics.
    let index = Index::open(data.join("index.redb")).context("opening the index")?;
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(LogConfig::new(data.join("log")))
            .await
            .context("opening the log")?,
    );
    ensure_topics(log.as_ref(), 1).await?;

    // The indexer follows both topics: statuses, queries and sync waits.
    let indexer = index.spawn_indexer(log.clone()).await?;

    // The application's own command processor: one handler per action. The
    // runtime sets parent/root and the outcome, keeps per-key order, retries
    // errors, and commits its position atomically with the events.
    let processor = Processor::builder_shared(log.clone())
        .group("greeter")
        .command("greet", |cmd, _ctx| async move {
            match cmd.data.get("name").and_then(|n| n.as_str()) {
                Some(name) if !name.is_empty() => Ok(Decision::accept_one(
                    "greeted",
                    json!({ "greeting": format!("hello, {name}") }),
                )),
                _ => Ok(Decision::reject(
                    "name-required",
                    "data.name must be a non-empty string",
                )),
            }
        })
        .build()?;
    let (stop, mut stopped) = watch::channel(false);
    let processing = tokio::spawn(processor.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // The gateway: the whole HTTP API. `cmdr_gateway::serve_router` takes
    // `app(state).merge(your_routes)` to add the application's own routes.
    let state = AppState::new(log.clone(), index, GatewayConfig::default()).await?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;

    let _ = stop.send(true);
    processing.await.context("the processor task")??;
    indexer.shutdown().await?;
    log.sync().await?;
    Ok(())
}
