//! [`ProcessorBuilder`] registers handlers; [`Processor::run`] runs them as
//! consumer groups until shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use cmdr_contract::{Command, Event, EventDraft, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_log::{Log, LogError, StartPosition};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::dispatch::{CommandDispatch, EventDispatch};
use super::handler::{CommandHandler, Context, Decision, EventHandler, HandlerError};
use crate::dead_letter::DeadLetters;
use crate::engine::{self, EngineConfig, DEFAULT_MAX_IN_FLIGHT};
use crate::{ProcessorError, RetryPolicy};

/// Partitions given to the `commands` and `events` topics when a processor
/// finds them missing (an existing topic keeps its partition count). The same
/// default as `cmdr serve`, so whichever starts first creates the same topics;
/// keys are processed concurrently within a partition either way.
pub const DEFAULT_PARTITIONS: u32 = 1;
/// Suffix of the consumer group that runs a processor's event handlers
/// (`<group>-events`); its command handlers run as `<group>`.
pub const EVENTS_GROUP_SUFFIX: &str = "-events";

/// Registers handlers and settings; [`ProcessorBuilder::build`] checks them.
/// Created by [`Processor::builder`].
pub struct ProcessorBuilder {
    log: Arc<dyn Log>,
    group: Option<String>,
    commands: HashMap<String, CommandHandler>,
    events: HashMap<String, EventHandler>,
    retry: RetryPolicy,
    max_in_flight: usize,
    partitions: u32,
    command_start: StartPosition,
    event_start: StartPosition,
}

impl ProcessorBuilder {
    /// The consumer group name (required). Instances with the same group share
    /// the work; offsets are kept per group, so a renamed processor starts over.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Handles commands of `action` with `handler`. A later registration for
    /// the same action replaces the earlier one.
    pub fn command<F, Fut>(mut self, action: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Command, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Decision, HandlerError>> + Send + 'static,
    {
        let handler: CommandHandler = Arc::new(move |c, ctx| Box::pin(handler(c, ctx)));
        self.commands.insert(action.into(), handler);
        self
    }

    /// Handles events of `action` with `handler`, which returns the events it
    /// causes (possibly none).
    pub fn event<F, Fut>(mut self, action: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Event, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<EventDraft>, HandlerError>> + Send + 'static,
    {
        let handler: EventHandler = Arc::new(move |e, ctx| Box::pin(handler(e, ctx)));
        self.events.insert(action.into(), handler);
        self
    }

    /// How failing handlers are retried. Default [`RetryPolicy::default`]
    /// (5 attempts, 100 ms doubling up to 10 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Most inputs (each of a different key) handled at once, per topic.
    /// Default [`DEFAULT_MAX_IN_FLIGHT`]. At least 1.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Partitions for `commands` and `events` if this processor creates them.
    /// Default [`DEFAULT_PARTITIONS`].
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// Where the command group starts in a partition it never committed.
    /// Default [`StartPosition::Earliest`] (commands sent before the processor
    /// first ran are handled).
    pub fn commands_start(mut self, start: StartPosition) -> Self {
        self.command_start = start;
        self
    }

    /// Where the event group starts in a partition it never committed.
    /// Default [`StartPosition::Earliest`] (a new event processor sees history).
    pub fn events_start(mut self, start: StartPosition) -> Self {
        self.event_start = start;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] without a group name or without any handler.
    pub fn build(self) -> Result<Processor, ProcessorError> {
        let group = self
            .group
            .filter(|g| !g.is_empty())
            .ok_or_else(|| ProcessorError::Config("a processor needs a group name".into()))?;
        if self.commands.is_empty() && self.events.is_empty() {
            return Err(ProcessorError::Config(format!(
                "processor {group} has no handler"
            )));
        }
        Ok(Processor {
            log: self.log,
            group,
            commands: self.commands,
            events: self.events,
            retry: self.retry,
            max_in_flight: self.max_in_flight,
            partitions: self.partitions,
            command_start: self.command_start,
            event_start: self.event_start,
        })
    }
}

/// A configured processor: command handlers consumed as group `<group>` on
/// `commands`, event handlers as group `<group>-events` on `events`.
///
/// Commands whose action has no handler here are skipped (their offset is
/// committed): several processors, each in its own group, may share the
/// commands topic, each owning some actions. Exactly one processor should own
/// each action, or a command gets several outcomes.
///
/// Events are appended exactly once, also when partitions move between
/// members of one group (a member joins or leaves): inputs in flight on the
/// old owner may be handled again by the new one, but each commit is fenced
/// (it names the offset it continues from), so only one of them appends its
/// events; the other member's commit is refused
/// ([`cmdr_log::LogError::Fenced`]), and it rejoins the group from the
/// committed offsets and goes on. A handler's side effects outside the log
/// may happen twice then. Scale one instance up with [`ProcessorBuilder::max_in_flight`]
/// before adding members.
///
/// ```no_run
/// # async fn demo(log: impl cmdr_log::Log) -> Result<(), cmdr_processor::ProcessorError> {
/// use cmdr_contract::EventDraft;
/// use cmdr_processor::{Decision, Processor};
/// use serde_json::json;
///
/// let processor = Processor::builder(log)
///     .group("greeter")
///     .command("greet", |cmd, _ctx| async move {
///         match cmd.data.get("name").and_then(|n| n.as_str()) {
///             Some(name) => Ok(Decision::accept_one("greeted", json!({ "name": name }))),
///             None => Ok(Decision::reject("missing-name", "data.name is required")),
///         }
///     })
///     .event("greeted", |event, _ctx| async move {
///         Ok(vec![EventDraft::new("greeting-logged", json!({ "of": event.id }))])
///     })
///     .build()?;
/// processor.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct Processor {
    log: Arc<dyn Log>,
    group: String,
    commands: HashMap<String, CommandHandler>,
    events: HashMap<String, EventHandler>,
    retry: RetryPolicy,
    max_in_flight: usize,
    partitions: u32,
    command_start: StartPosition,
    event_start: StartPosition,
}

impl Processor {
    /// Starts a builder over `log` (any [`Log`] backend).
    pub fn builder<L: Log>(log: L) -> ProcessorBuilder {
        Self::builder_shared(Arc::new(log))
    }

    /// Starts a builder over an already shared log.
    pub fn builder_shared(log: Arc<dyn Log>) -> ProcessorBuilder {
        ProcessorBuilder {
            log,
            group: None,
            commands: HashMap::new(),
            events: HashMap::new(),
            retry: RetryPolicy::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            partitions: DEFAULT_PARTITIONS,
            command_start: StartPosition::Earliest,
            event_start: StartPosition::Earliest,
        }
    }

    /// The consumer group name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Runs until `shutdown` resolves, then drains: handlers already running
    /// finish and their events are appended; inputs not started stay
    /// uncommitted and are handled on the next run.
    ///
    /// Dropping the future instead stops at once and is also safe: nothing
    /// half-done is committed. An append already handed to the log may still
    /// land afterwards, exactly as it may reach the disk before a process
    /// dies; so before running the same group again *in the same process*,
    /// let the old tasks finish being cancelled (for example by dropping the
    /// runtime they ran on) and call [`Log::sync`]. A new process needs nothing.
    ///
    /// # Errors
    /// [`ProcessorError::Log`] when the log fails; the processor stops and can
    /// be run again (it resumes from the committed offsets).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProcessorError> {
        let log = self.log;
        ensure_topics(log.as_ref(), self.partitions).await?;
        let dead_letters = DeadLetters::open(log.clone()).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut engines: JoinSet<Result<(), ProcessorError>> = JoinSet::new();
        if !self.commands.is_empty() {
            let config = EngineConfig {
                group: self.group.clone(),
                input_topic: COMMANDS_TOPIC.into(),
                output_topic: EVENTS_TOPIC.into(),
                start: self.command_start,
                max_in_flight: self.max_in_flight,
            };
            let dispatch = Arc::new(CommandDispatch {
                name: self.group.clone(),
                handlers: self.commands,
                retry: self.retry,
                dead_letters: dead_letters.clone(),
                record_limit: log.max_record_bytes(),
            });
            engines.spawn(run_rejoining(
                log.clone(),
                config,
                dispatch,
                stop_rx.clone(),
            ));
        }
        if !self.events.is_empty() {
            let config = EngineConfig {
                group: format!("{}{EVENTS_GROUP_SUFFIX}", self.group),
                input_topic: EVENTS_TOPIC.into(),
                output_topic: EVENTS_TOPIC.into(),
                start: self.event_start,
                max_in_flight: self.max_in_flight,
            };
            let dispatch = Arc::new(EventDispatch {
                name: self.group.clone(),
                handlers: self.events,
                retry: self.retry,
                dead_letters,
                record_limit: log.max_record_bytes(),
            });
            engines.spawn(run_rejoining(log.clone(), config, dispatch, stop_rx));
        }
        run_until_stopped(engines, stop_tx, shutdown).await
    }
}

/// Runs one engine until `stop` turns true, rejoining its group whenever a
/// rebalance fenced it: another member took a partition over and committed
/// past this one ([`LogError::Fenced`]; nothing of the refused batch was
/// appended). The engine has then stopped its handlers and left the group;
/// the log is synced, so that whatever was handed to it has landed, and the
/// member joins again from the group's committed offsets, like a restarted
/// process. Any other error ends the run.
async fn run_rejoining<D: engine::Dispatch>(
    log: Arc<dyn Log>,
    config: EngineConfig,
    dispatch: Arc<D>,
    stop: watch::Receiver<bool>,
) -> Result<(), ProcessorError> {
    loop {
        let mut rx = stop.clone();
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let result = engine::run(log.clone(), config.clone(), dispatch.clone(), stopped).await;
        match result {
            Err(ProcessorError::Log {
                source: source @ LogError::Fenced { .. },
                ..
            }) if !*stop.borrow() => {
                tracing::warn!(group = %config.group, error = %source,
                    "a rebalance moved a partition away from this member; rejoining from the committed offsets");
                log.sync()
                    .await
                    .map_err(|e| ProcessorError::log("syncing before rejoining the group", e))?;
            }
            other => return other,
        }
    }
}

/// Creates the `commands` and `events` topics with `partitions` partitions
/// if they are missing (existing topics are left as they are).
///
/// # Errors
/// [`ProcessorError::Log`].
pub async fn ensure_topics(log: &dyn Log, partitions: u32) -> Result<(), ProcessorError> {
    for topic in [COMMANDS_TOPIC, EVENTS_TOPIC] {
        if log.topic(topic).await.is_err() {
            log.create_topic(topic, partitions)
                .await
                .map_err(|e| ProcessorError::log(format!("creating {topic}"), e))?;
        }
    }
    Ok(())
}

/// Waits for `shutdown` or the first engine to end, then stops and joins all;
/// returns the first error.
async fn run_until_stopped(
    mut engines: JoinSet<Result<(), ProcessorError>>,
    stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let mut result = Ok(());
    tokio::select! {
        () = shutdown => {}
        Some(first) = engines.join_next() => result = flatten(first),
    }
    let _ = stop.send(true);
    while let Some(done) = engines.join_next().await {
        let r = flatten(done);
        if result.is_ok() {
            result = r;
        }
    }
    result
}

fn flatten(
    done: Result<Result<(), ProcessorError>, tokio::task::JoinError>,
) -> Result<(), ProcessorError> {
    done.unwrap_or_else(|e| Err(ProcessorError::Internal(format!("engine task: {e}"))))
}
