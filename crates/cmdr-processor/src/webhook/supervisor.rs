//! Keeps one runner per registered webhook processor: starts runners for new
//! registrations, restarts them when a registration changes, stops them on
//! deletion, and restarts a runner whose log access failed.
//!
//! Key decision: a changed registration restarts its runner (drain, then
//! start with the new actions and URL); with the same actions the consumer
//! group and its offsets stay, with other actions it is a new group from
//! the start of the topic (see [`super::runner::group_name`]), so no
//! command is handled twice or skipped. A change takes effect
//! once the old runner has drained: commands already in its hands go to the
//! old URL. A runner never skips a command under a registration that has
//! changed meanwhile (it stops with [`ProcessorError::Superseded`] first,
//! after the calls it has in flight have answered), so a command of a newly
//! added action is never committed past unhandled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::task_guard::AbortOnDrop;
use cmdr_log::Log;
use tokio::sync::watch;

use super::registry::{WebhookRegistration, WebhookRegistry};
use super::runner::{run_registered, WebhookConfig};
use crate::ProcessorError;

/// Wait before restarting a runner that stopped on a log failure.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

struct Running {
    registration: WebhookRegistration,
    stop: watch::Sender<bool>,
    task: AbortOnDrop<Result<(), ProcessorError>>,
}

/// Stops `runners` together: every one is told first, then all are awaited,
/// so one slow drain (a command mid-retry) does not hold up the others.
async fn stop_all(runners: Vec<Running>) {
    for r in &runners {
        let _ = r.stop.send(true);
    }
    futures::future::join_all(runners.into_iter().map(Running::stop)).await;
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match (&mut task.0).await {
            Ok(Err(e @ ProcessorError::Superseded(_))) => {
                tracing::info!(reason = %e, "webhook runner stopped for its new registration");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook runner stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "webhook runner task failed"),
            Ok(Ok(())) => {}
        }
    }
}

/// Runs every processor registered in `registry` until `shutdown`, following
/// registrations as they change.
///
/// # Errors
/// [`ProcessorError::Log`] when the registry cannot be read.
pub async fn supervise(
    log: Arc<dyn Log>,
    registry: WebhookRegistry,
    config: WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut running: HashMap<String, Running> = HashMap::new();
    let result = loop {
        let wanted = match registry.list().await {
            Ok(w) => w,
            Err(e) => break Err(e),
        };
        let names: Vec<String> = running.keys().cloned().collect();
        let mut stopping = Vec::new();
        for name in names {
            let keep = running.get(&name).is_some_and(|r| {
                wanted.get(&name) == Some(&r.registration) && !r.task.is_finished()
            });
            if !keep {
                stopping.extend(running.remove(&name));
            }
        }
        stop_all(stopping).await;
        for (name, registration) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let (stop, mut stop_rx) = watch::channel(false);
            let (log, registry, config, task_name, reg) = (
                log.clone(),
                registry.clone(),
                config.clone(),
                name.clone(),
                registration.clone(),
            );
            let task = AbortOnDrop(tokio::spawn(async move {
                run_registered(log, registry, &task_name, reg, &config, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
            }));
            tracing::info!(processor = %name, "webhook processor started");
            running.insert(
                name,
                Running {
                    registration,
                    stop,
                    task,
                },
            );
        }
        let any_failed = running.values().any(|r| r.task.is_finished());
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            changed = registry.changed() => if let Err(e) = changed { break Err(e) },
            () = tokio::time::sleep(RESTART_DELAY), if any_failed => {}
            () = first_finished(&running), if !running.is_empty() && !any_failed => {}
        }
    };
    stop_all(running.into_values().collect()).await;
    result
}

/// Resolves when any runner task has ended (checked at [`RESTART_DELAY`] intervals).
async fn first_finished(running: &HashMap<String, Running>) {
    loop {
        if running.values().any(|r| r.task.is_finished()) {
            return;
        }
        tokio::time::sleep(RESTART_DELAY).await;
    }
}
