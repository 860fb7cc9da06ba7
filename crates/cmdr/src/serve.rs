//! `cmdr serve`: open the log and index, start the indexer, the webhook
//! processors (and the example domain when asked), serve HTTP until SIGTERM or
//! SIGINT, then drain requests, stop the processors and the indexer, and sync.
//!
//! Key decision: processors stop only after HTTP has drained, so a request
//! waiting for its command's outcome (`?sync=true`) still gets it. A processor
//! that fails for good (the log failed) shuts the whole server down: serving
//! commands that nothing processes would only pile them up. So does a log
//! that can no longer take appends, or an indexer that stopped: the process
//! exits with an error, for a supervisor to restart it (which repairs both).
//!
//! Shutdown is bounded: HTTP drains for at most the configured drain time,
//! processors for at most [`PROCESSING_GRACE`] (webhook calls still in
//! flight then are abandoned, and sent again at the next start). A second
//! SIGTERM or SIGINT during shutdown exits at once: every acknowledged
//! command is already on disk.

use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use cmdr_gateway::AppState;
use cmdr_log::Log;
use cmdr_processor::{webhook, ProcessorError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Example, LogFormat, ServeArgs, Settings};
use crate::storage;

/// How long processors get to finish at shutdown (webhook calls in flight)
/// before they are abandoned.
pub const PROCESSING_GRACE: Duration = Duration::from_secs(5);

/// Why the server began to stop.
enum StopCause {
    /// SIGTERM or SIGINT.
    Signal,
    /// A processor failed (its task says why).
    ProcessorFailed,
    /// The indexer or the log failed: the exit is an error with this reason.
    Fault(String),
}

/// A future resolving when `rx` turns `true`.
async fn when_set(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The in-process processors: each task's name and result; `failed` is set
/// when one ends with an error before it was told to stop.
struct Processing {
    tasks: JoinSet<(&'static str, Result<(), ProcessorError>)>,
    stop: watch::Sender<bool>,
    failed: watch::Sender<bool>,
}

impl Processing {
    fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
            failed: watch::channel(false).0,
        }
    }

    /// A future resolving when processing must stop.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        when_set(self.stop.subscribe())
    }

    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), ProcessorError>> + Send + 'static,
    ) {
        let failed = self.failed.clone();
        self.tasks.spawn(async move {
            let result = task.await;
            if let Err(e) = &result {
                tracing::error!(task = name, error = %e, "processing stopped; shutting down");
                let _ = failed.send(true);
            }
            (name, result)
        });
    }

    /// Stops every task and waits for them to drain, for at most
    /// [`PROCESSING_GRACE`], then abandons what is left; the first error, if any.
    async fn shutdown(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + PROCESSING_GRACE;
        let mut first = Ok(());
        let mut abandoned = false;
        loop {
            let next = if abandoned {
                Ok(self.tasks.join_next().await)
            } else {
                tokio::time::timeout_at(deadline, self.tasks.join_next()).await
            };
            let done = match next {
                Ok(Some(done)) => done,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        grace = ?PROCESSING_GRACE,
                        "processors still busy (webhook calls in flight); abandoning them: \
                         their commands are sent again at the next start"
                    );
                    self.tasks.abort_all();
                    abandoned = true;
                    continue;
                }
            };
            let result = match done {
                Ok((name, r)) => r.with_context(|| format!("{name} failed")),
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(anyhow::anyhow!("a processing task panicked: {e}")),
            };
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// Runs the server.
pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let Some(settings) = settings_or_report(Settings::resolve(&args), &args.storage)? else {
        return Ok(ExitCode::FAILURE);
    };
    init_logging(settings.log_format);
    let format = settings.log_format;
    match serve(args, settings).await {
        // A log collector reading JSON lines gets why the server stopped
        // as one of them (as text, `main` prints it).
        Err(e) if format == LogFormat::Json => {
            tracing::error!(error = %format!("{e:#}"), "cmdr serve stopped on an error");
            Ok(ExitCode::FAILURE)
        }
        other => other,
    }
}

/// [`run`] once logging is set up.
async fn serve(args: ServeArgs, mut settings: Settings) -> Result<ExitCode> {
    // First: a SIGHUP during the (maybe long) recovery below must not end
    // the process.
    crate::reload::on_sighup(&args, &settings);
    // Listened to from here on, before anything is served: a listener made
    // later would miss a signal sent before it (a supervisor's SIGTERM
    // soon after start, or the second one that forces the exit).
    let mut first_signal = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    let more_signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    // On Linux the connections are fitted under the limit once the log is
    // open (below), which warns then.
    crate::fd_limit::raise(settings.gateway.max_connections, cfg!(target_os = "linux"));
    // Bound before the data directory is opened (or made): a taken port
    // stops the start with nothing created, recovered or started. Clients
    // that connect during recovery wait in the backlog until it is done.
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    settings.make_data_dir()?;
    let index = storage::open_index(&settings)?;
    let log = storage::open_log(&settings).await?;
    // TLS sockets besides the connections: handshakes in progress, and
    // finished ones not yet taken.
    let tls_sockets = if settings.gateway.tls.is_some() {
        cmdr_gateway::tls::MAX_HANDSHAKES + cmdr_gateway::tls::ACCEPTED_BACKLOG
    } else {
        0
    };
    settings.gateway.max_connections =
        crate::fd_limit::connections_within_limit(settings.gateway.max_connections, tls_sockets);
    let indexer = index
        .spawn_indexer(log.clone())
        .await
        .context("starting the indexer")?;
    let watched = index.clone();
    let state = AppState::new(log.clone(), index, settings.gateway.clone())
        .await
        .context("loading schemas and processors")?;
    state.watch_disk_space(&settings.data_dir);
    if let Some(Example::Accounts) = settings.example {
        // Before any webhook runner starts: none may have these actions too.
        state
            .webhooks()
            .reserve(
                "the accounts example",
                &cmdr_processor::example::COMMAND_ACTIONS,
            )
            .await?;
    }
    let mut processing = Processing::new();
    // Commands an earlier owner of an action settled are not sent again to
    // the processor that takes the action over.
    let webhooks = webhook::WebhookConfig {
        settled: Some(webhook::SettledCheck(std::sync::Arc::new(
            crate::settled::IndexedOutcomes {
                log: log.clone(),
                index: state.index().clone(),
            },
        ))),
        ..settings.webhooks.clone()
    };
    if settings.start_webhooks {
        processing.spawn(
            "the webhook supervisor",
            webhook::supervise(
                log.clone(),
                state.webhooks().clone(),
                webhooks,
                processing.stopped(),
            ),
        );
    } else {
        tracing::warn!(
            "webhook processors not started (--no-webhooks): commands of their actions stay pending"
        );
    }
    let mut router = cmdr_gateway::app(state.clone());
    if let Some(Example::Accounts) = settings.example {
        let balances = cmdr_processor::example::Balances::new();
        let stopped = processing.stopped();
        processing.spawn(
            "the accounts example",
            cmdr_processor::example::run(log.clone(), balances.clone(), stopped),
        );
        let replayed = balances.clone();
        state.add_readiness_check(
            "accounts_example",
            std::sync::Arc::new(move || replayed.is_replayed()),
        );
        router = router.merge(crate::example::router(balances));
        let (paths, schemas) = crate::example::openapi();
        state.document_routes(paths, schemas);
        tracing::info!("running the accounts example (GET /accounts)");
    }
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    // The first line on stdout says where to connect (tests read it).
    let scheme = if settings.gateway.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("cmdr listening on {scheme}://{addr}");
    tracing::info!(%addr, data_dir = %settings.data_dir.display(), "serving");
    match &settings.gateway.tokens {
        Some(table) => {
            tracing::info!(
                tokens = table.current().len(),
                "bearer tokens required (SIGHUP rereads them)"
            );
        }
        None if !addr.ip().is_loopback() => tracing::warn!(
            %addr,
            "no [[tokens]] configured: anyone who reaches this address can send commands"
        ),
        None => {}
    }
    let failed = when_set(processing.failed.subscribe());
    // Why the server stopped, when it was not asked to.
    let fault: Arc<Mutex<Option<String>>> = Arc::default();
    let fault_seen = Arc::clone(&fault);
    let watched_log = log.clone();
    // Set once shutdown has begun for any reason but a signal: then the
    // first signal already forces the exit.
    let stopping_anyway = Arc::new(AtomicBool::new(false));
    let force = tokio::spawn(force_exit_on_second_signal(
        more_signals,
        Arc::clone(&stopping_anyway),
    ));
    let stopping_state = state.clone();
    let shutdown = async move {
        let cause = tokio::select! {
            () = first_signal.next() => StopCause::Signal,
            // Logged, and reported at exit, by the processing task.
            () = failed => StopCause::ProcessorFailed,
            () = stopped(&watched) => StopCause::Fault("the indexer stopped".to_string()),
            why = log_failed(watched_log.as_ref()) => StopCause::Fault(
                format!("the log cannot take appends until restarted: {why}"),
            ),
        };
        if !matches!(cause, StopCause::Signal) {
            stopping_anyway.store(true, Ordering::Release);
        }
        if !matches!(cause, StopCause::Signal) {
            // Broken: no shutdown delay (see `cmdr_gateway::serve_router`).
            stopping_state.begin_shutdown();
        }
        if let StopCause::Fault(why) = cause {
            tracing::error!("{why}; shutting down");
            *fault_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    };
    let served = cmdr_gateway::serve_router(listener, state, router, shutdown).await;
    let processed = processing.shutdown().await;
    // Every step runs even if an earlier one failed; the first error is reported.
    let indexed = indexer.shutdown().await.context("stopping the indexer");
    let synced = log.sync().await.context("syncing the log");
    force.abort();
    served?;
    processed?;
    indexed?;
    synced?;
    if let Some(why) = fault.lock().unwrap_or_else(|p| p.into_inner()).take() {
        anyhow::bail!("{why}");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The settings, or why they were refused. Asked (by flag or environment)
/// for JSON log lines, the refusal is one of them (logged here: `None`);
/// otherwise it is the error, which `main` prints as text.
pub fn settings_or_report(
    settings: Result<Settings>,
    storage: &crate::config::StorageArgs,
) -> Result<Option<Settings>> {
    match settings {
        Err(e) if storage.log_format == Some(LogFormat::Json) => {
            json_refusal("the settings are refused", &format!("{e:#}"));
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// Writes one error line, as the JSON log lines are, to standard error,
/// whatever `RUST_LOG` says: the reason the process stops before it serves
/// must not be filtered away.
pub fn json_refusal(message: &str, error: &str) {
    let line = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .finish();
    tracing::subscriber::with_default(line, || {
        tracing::error!(target: "cmdr", error = %error, "{message}");
    });
}

/// Writes log lines to standard error, filtered by `RUST_LOG` (default
/// `info`), as text or JSON.
pub fn init_logging(format: LogFormat) {
    let (filter, bad_filter) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => {
            // Unset is the common case; a value that does not parse is a
            // mistake worth a line once logging works.
            let set = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
            ("info".into(), set.then(|| e.to_string()))
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours for a terminal only: a log file or collector gets plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if let Some(e) = bad_filter {
        tracing::warn!(error = %e, "RUST_LOG is not a valid filter: logging at info");
    }
}

/// Resolves when the indexer has stopped, which it does only on a failure
/// before shutdown: the server then stops too, rather than accept commands
/// whose status nobody can see. Checked every second (a subscription to the
/// index's progress would count as a waiter and speed up its commits).
async fn stopped(index: &cmdr_index::Index) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if !index.is_running() {
            return;
        }
    }
}

/// Resolves, with the reason, once `log` can no longer take appends (see
/// [`Log::failure`]). Checked every second.
async fn log_failed(log: &dyn Log) -> String {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(why) = log.failure() {
            return why;
        }
    }
}

/// A signal this soon after the first is the same request: `timeout` and
/// some supervisors signal the process and then its process group.
const SAME_SIGNAL: Duration = Duration::from_millis(250);

/// Exits the process at the second SIGTERM/SIGINT (the first starts the
/// graceful shutdown; one within [`SAME_SIGNAL`] of it does not count), or
/// at the first once `stopping_anyway` is set. Every acknowledged command
/// is already on disk.
async fn force_exit_on_second_signal(mut signals: Signals, stopping_anyway: Arc<AtomicBool>) {
    let mut first: Option<std::time::Instant> = None;
    loop {
        signals.next().await;
        let again = match first {
            None => {
                first = Some(std::time::Instant::now());
                false
            }
            Some(at) if at.elapsed() < SAME_SIGNAL => continue,
            Some(_) => true,
        };
        if again || stopping_anyway.load(Ordering::Acquire) {
            tracing::warn!(
                "another signal during shutdown: exiting now (acknowledged commands are on disk)"
            );
            std::process::exit(1);
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), each heard by every `Signals` that exists
/// when it comes.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening.
    fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal sent after `Signals::listen` and before anyone waits is
    /// still heard: a listener made when its task first runs missed it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_signal_before_the_wait_is_heard() {
        let mut signals = Signals::listen().unwrap();
        // SAFETY: raising a signal this process handles (tokio's handler
        // is installed by `listen`).
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        tokio::time::timeout(Duration::from_secs(10), signals.next())
            .await
            .expect("the SIGTERM sent before the wait is heard");
        // SAFETY: as above.
        assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
        tokio::time::timeout(Duration::from_secs(10), signals.next())
            .await
            .expect("and so is a SIGINT");
    }
}
