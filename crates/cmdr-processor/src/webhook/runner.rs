//! Runs one webhook processor: consumes `commands` as its group (see
//! [`group_name`]), POSTs each command of its actions to its URL, and turns
//! the answer into events, a rejection, or (after the last failed attempt) a
//! dead letter plus a `processing-failed` rejection.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cmdr_contract::{Command, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_log::{Log, Record, StartPosition, StoredRecord};

use super::protocol::{
    parse_answer, signature, WebhookAnswer, ATTEMPT_HEADER, PROCESSOR_HEADER, SIGNATURE_HEADER,
};
use super::registry::{WebhookRegistration, WebhookRegistry, PROCESSORS_TOPIC};
use super::settled::SettledCheck;
use crate::dead_letter::DeadLetters;
use crate::engine::{self, Dispatch, EngineConfig, Stopping, DEFAULT_MAX_IN_FLIGHT};
use crate::records::{accepted_events, event_record, fits_in_record, rejected_event};
use crate::sdk::{with_retries, HandlerError, Retried};
use crate::{ProcessorError, RetryPolicy};

/// Default time a processor has to answer one request.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Prefix of a webhook processor's consumer group name.
pub const WEBHOOK_GROUP_PREFIX: &str = "webhook-";

/// Settings shared by webhook runners.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Time allowed for one request (connect, send, answer). Default [`DEFAULT_WEBHOOK_TIMEOUT`].
    pub timeout: Duration,
    /// Attempts and backoff. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Commands (of different keys) in flight at once, per processor. Default [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Largest answer body read from a processor; a larger one is a failed
    /// attempt. Default [`DEFAULT_MAX_ANSWER_BYTES`].
    pub max_answer_bytes: usize,
    /// When set, a command that already has an outcome is skipped rather
    /// than sent (see [`super::settled`]), and a registration whose actions
    /// change goes over the commands topic again (see [`group_name`]).
    /// Default `None`: every command of the registered actions is sent, and
    /// a changed registration continues from its group's position
    /// (`webhook-{name}`), so commands of an added action sent earlier are
    /// not handled.
    pub settled: Option<SettledCheck>,
    /// TLS of `https://` processor URLs (see [`crate::tls::client_config`]).
    /// Default `None`: the system's CA certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Default [`WebhookConfig::max_answer_bytes`]: 8 MiB, the log's default
/// largest record (an answer's events must fit in records anyway).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            retry: RetryPolicy::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            settled: None,
            tls: None,
        }
    }
}

/// The consumer group of webhook processor `name` registered for
/// `actions`: `webhook-{name}.` and a hash of the set of actions (their
/// order aside). A registration whose actions change gets a new group,
/// which starts at the beginning of the commands topic as a new name does
/// (commands already settled are skipped without a call): the old group
/// had passed over, and committed, the commands of actions it did not
/// have then. A new URL alone keeps the group and its position. (Without
/// a [`WebhookConfig::settled`] check, going over the topic again would
/// send every past command again: such a runner keeps `webhook-{name}`.)
pub fn group_name(name: &str, actions: &[String]) -> String {
    use sha2::Digest;
    let mut set: Vec<&str> = actions.iter().map(String::as_str).collect();
    set.sort_unstable();
    set.dedup();
    let mut hash = sha2::Sha256::new();
    for action in set {
        // Actions cannot hold a newline: each ends unambiguously.
        hash.update(action.as_bytes());
        hash.update(b"\n");
    }
    let digest = hash.finalize();
    let mut id = String::with_capacity(16);
    for b in &digest[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    format!("{WEBHOOK_GROUP_PREFIX}{name}.{id}")
}

/// The consumer group of webhook processor `name` run without a
/// [`WebhookConfig::settled`] check, whatever its actions.
fn unchecked_group_name(name: &str) -> String {
    format!("{WEBHOOK_GROUP_PREFIX}{name}")
}

struct WebhookDispatch {
    name: String,
    registration: WebhookRegistration,
    client: reqwest::Client,
    retry: RetryPolicy,
    max_answer_bytes: usize,
    /// The log's largest record (see [`fits_in_record`]).
    record_limit: Option<usize>,
    dead_letters: DeadLetters,
    /// Set when the runner follows a registry (see [`Freshness`]).
    freshness: Option<Freshness>,
    /// Commands already settled are skipped (see [`super::settled`]).
    settled: Option<SettledCheck>,
}

/// Makes sure a runner never skips a command with a registration that is no
/// longer current. A skipped command's offset is committed; had the
/// registration meanwhile changed to handle its action, the command would
/// never get an outcome. So before skipping, a runner whose registrations
/// topic has grown since it last looked reads its registration again, and
/// stops (without committing) when it changed.
struct Freshness {
    log: Arc<dyn Log>,
    registry: WebhookRegistry,
    /// The registrations topic's offset up to which the registration is known current.
    seen: AtomicU64,
}

impl Freshness {
    async fn check(
        &self,
        name: &str,
        registration: &WebhookRegistration,
    ) -> Result<(), ProcessorError> {
        let end = self
            .log
            .topic(PROCESSORS_TOPIC)
            .await
            .map_err(|e| ProcessorError::log(format!("reading {PROCESSORS_TOPIC}"), e))?
            .partitions
            .first()
            .map_or(0, |p| p.end_offset);
        if end <= self.seen.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.registry.current(name).await? {
            (Some(current), next) if current == *registration => {
                self.seen.fetch_max(next, Ordering::AcqRel);
                Ok(())
            }
            _ => Err(ProcessorError::Superseded(name.to_string())),
        }
    }
}

/// What every attempt to deliver one command sends.
struct Delivery<'a> {
    dispatch: &'a WebhookDispatch,
    /// The command's JSON as logged, for every attempt.
    body: Bytes,
    /// The client's trace context the command carries, sent on as the
    /// `traceparent` and `tracestate` headers.
    trace: Option<cmdr_contract::TraceContext>,
}

/// One POST of a command; the answer or the failure to retry.
async fn call(delivery: &Delivery<'_>, attempt: u32) -> Result<WebhookAnswer, HandlerError> {
    let d = delivery.dispatch;
    let (max_answer_bytes, record_limit) = (d.max_answer_bytes, d.record_limit);
    let mut request = d
        .client
        .post(&d.registration.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(PROCESSOR_HEADER, d.name.as_str())
        .header(ATTEMPT_HEADER, attempt.to_string());
    if let Some(trace) = &delivery.trace {
        request = request.header(
            cmdr_contract::trace_context::TRACEPARENT,
            trace.traceparent.as_str(),
        );
        if let Some(state) = &trace.tracestate {
            request = request.header(cmdr_contract::trace_context::TRACESTATE, state.as_str());
        }
    }
    if let Some(secret) = &d.registration.secret {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        request = request.header(SIGNATURE_HEADER, signature(secret, now, &delivery.body));
    }
    let mut response = request
        .body(delivery.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    // Read with a cap: a runaway endpoint must not fill memory within the timeout.
    let too_large = || format!("answer larger than {max_answer_bytes} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > max_answer_bytes as u64)
    {
        return Err(too_large().into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > max_answer_bytes {
            return Err(too_large().into());
        }
        body.extend_from_slice(&chunk);
    }
    let answer = parse_answer(status, &body).map_err(HandlerError::from)?;
    match &answer {
        WebhookAnswer::Accept(drafts) => fits_in_record(drafts, record_limit)?,
        WebhookAnswer::Reject(rejection) => fits_in_record([rejection], record_limit)?,
    }
    Ok(answer)
}

/// A request error with its causes (the TLS or socket error that an
/// operator needs is usually a few sources deep).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time (timeout)".into();
    }
    let mut text = if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("request failed: {e}")
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    // The client names the URL, credentials included when it could not
    // send them as Basic auth: the text goes into rejections and dead
    // letters, which any reader may see.
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), &super::registry::redacted_url(url.as_str()));
    }
    text
}

impl WebhookDispatch {
    /// No events for a command of an action this processor does not handle,
    /// once its registration is known to be current.
    async fn skip(&self) -> Result<Vec<Record>, ProcessorError> {
        if let Some(f) = &self.freshness {
            f.check(&self.name, &self.registration).await?;
        }
        Ok(Vec::new())
    }
}

impl Dispatch for WebhookDispatch {
    async fn handle(
        &self,
        record: StoredRecord,
        stopping: Stopping,
    ) -> Result<Vec<Record>, ProcessorError> {
        let by_header = record
            .header(cmdr_contract::header::ACTION)
            .and_then(|a| std::str::from_utf8(a).ok())
            .map(|a| self.registration.handles(a));
        if by_header == Some(false) {
            return self.skip().await;
        }
        let command = match Command::from_json(&record.value) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e, "skipping a commands record that is not a command");
                return Ok(Vec::new());
            }
        };
        if !self.registration.handles(&command.action) {
            return self.skip().await;
        }
        if let Some(SettledCheck(settled)) = &self.settled {
            let done = settled.is_settled(command.id).await.map_err(|e| {
                ProcessorError::Internal(format!("checking command {}: {e}", command.id))
            })?;
            if done {
                tracing::info!(processor = %self.name, command = %command.id,
                    "command already settled (by an earlier owner of its action); not sent");
                return Ok(Vec::new());
            }
        }
        let delivery = Delivery {
            dispatch: self,
            // The command exactly as logged (the same JSON `Command` reads).
            body: record.value.clone(),
            trace: cmdr_contract::TraceContext::of(&command.meta),
        };
        let answer = with_retries(&self.retry, &stopping, |attempt| call(&delivery, attempt)).await;
        let now = cmdr_contract::now_ms();
        let events = match answer {
            Retried::Done(WebhookAnswer::Accept(drafts)) => accepted_events(&command, drafts, now),
            Retried::Done(WebhookAnswer::Reject(rejection)) => {
                vec![rejected_event(&command, rejection, now)]
            }
            Retried::Interrupted => return Err(ProcessorError::Interrupted),
            Retried::GaveUp(last_error, attempts) => {
                tracing::warn!(processor = %self.name, command = %command.id, %last_error, attempts,
                    "webhook failed on every attempt; dead-lettered");
                vec![
                    self.dead_letters
                        .give_up(
                            &self.name,
                            &record,
                            command.as_ref(),
                            &last_error,
                            attempts,
                            now,
                        )
                        .await?,
                ]
            }
        };
        Ok(events.iter().map(event_record).collect())
    }
}

/// Runs webhook processor `name` until `shutdown` (then drains, like
/// [`crate::Processor::run`]). Starts at the earliest command it never handled.
///
/// # Errors
/// [`ProcessorError::Log`] when the log fails; [`ProcessorError::Config`] when
/// the HTTP client cannot be built.
pub async fn run_webhook(
    log: Arc<dyn Log>,
    name: &str,
    registration: WebhookRegistration,
    config: &WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    run(log, name, registration, None, config, shutdown).await
}

/// Like [`run_webhook`], for a registration read from `registry`: the
/// runner stops with [`ProcessorError::Superseded`] rather than skip a
/// command while its registration has changed (see [`Freshness`]).
pub(crate) async fn run_registered(
    log: Arc<dyn Log>,
    registry: WebhookRegistry,
    name: &str,
    registration: WebhookRegistration,
    config: &WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    let (current, seen) = registry.current(name).await?;
    if current.as_ref() != Some(&registration) {
        return Err(ProcessorError::Superseded(name.to_string()));
    }
    let freshness = Freshness {
        log: log.clone(),
        registry,
        seen: AtomicU64::new(seen),
    };
    run(log, name, registration, Some(freshness), config, shutdown).await
}

async fn run(
    log: Arc<dyn Log>,
    name: &str,
    registration: WebhookRegistration,
    freshness: Option<Freshness>,
    config: &WebhookConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProcessorError> {
    crate::sdk::ensure_topics(log.as_ref(), crate::sdk::DEFAULT_PARTITIONS).await?;
    let client = crate::tls::client_builder(config.tls.as_ref())
        .map_err(ProcessorError::Config)?
        .timeout(config.timeout)
        // A redirect is an answer like any other status but 200 and 422: a
        // failed attempt (followed, a 303 would turn into a GET whose answer
        // became the outcome, and a 307 would re-send the command elsewhere).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ProcessorError::Config(format!("building the HTTP client: {e}")))?;
    let dispatch = Arc::new(WebhookDispatch {
        name: name.to_string(),
        registration,
        client,
        // The request timeout bounds an attempt; a second bound just above
        // it only backs it up (its message names the request's phase).
        retry: config
            .retry
            .attempt_timeout(config.timeout.saturating_add(Duration::from_secs(1))),
        max_answer_bytes: config.max_answer_bytes,
        record_limit: log.max_record_bytes(),
        dead_letters: DeadLetters::open(log.clone()).await?,
        freshness,
        settled: config.settled.clone(),
    });
    if let Some(SettledCheck(settled)) = &config.settled {
        // Every outcome an earlier owner of these actions wrote is known
        // before the first command is looked at (it has stopped by now).
        settled
            .catch_up()
            .await
            .map_err(|e| ProcessorError::Internal(format!("catching up on outcomes: {e}")))?;
    }
    let engine_config = EngineConfig {
        group: match config.settled {
            Some(_) => group_name(name, &dispatch.registration.actions),
            None => unchecked_group_name(name),
        },
        input_topic: COMMANDS_TOPIC.into(),
        output_topic: EVENTS_TOPIC.into(),
        start: StartPosition::Earliest,
        max_in_flight: config.max_in_flight,
    };
    engine::run(log, engine_config, dispatch, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_error_does_not_show_credentials_in_its_url() {
        // Credentials that are not UTF-8 stay in the URL the client names
        // (registrations refuse them; older ones may hold them). Nothing
        // listens on port 1 of loopback: the connection is refused.
        let e = crate::tls::client_builder(None)
            .expect("a client builder")
            .build()
            .expect("a client")
            .post("http://%FF:s3cret@127.0.0.1:1/pay")
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(e.to_string().contains("s3cret"), "the client names it: {e}");
        let said = describe(&e);
        assert!(!said.contains("s3cret"), "{said}");
        assert!(said.contains("127.0.0.1:1"), "{said}");
    }
    use cmdr_contract::{header, CommandRequest, Meta};
    use cmdr_log::memory::MemoryLog;
    use serde_json::json;

    /// Waits (bounded) for `runner` to stop by itself, superseded.
    async fn ends_superseded(runner: tokio::task::JoinHandle<Result<(), ProcessorError>>) {
        let ended = tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .expect("the runner stops by itself")
            .unwrap();
        assert!(
            matches!(ended, Err(ProcessorError::Superseded(_))),
            "{ended:?}"
        );
    }

    fn billing(actions: &[&str]) -> WebhookRegistration {
        WebhookRegistration {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            // Never called: no command of a handled action is sent.
            url: "http://127.0.0.1:9/never".into(),
            secret: None,
        }
    }

    async fn send(log: &dyn Log, action: &str) -> cmdr_log::Appended {
        let req = CommandRequest::from_value(json!({"action": action, "data": {}})).unwrap();
        let c = Command::from_request(req, cmdr_contract::now_ms(), Meta::new()).unwrap();
        let record =
            Record::new(c.key.clone(), c.to_json()).with_header(header::ACTION, action.to_string());
        log.append(COMMANDS_TOPIC, vec![record]).await.unwrap()[0]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superseded_runner_lets_its_calls_in_flight_finish() {
        // A webhook whose answers wait for the test's go-ahead.
        let calls = Arc::new(AtomicU64::new(0));
        let (go, gate) = tokio::sync::watch::channel(false);
        let app = axum::Router::new().route(
            "/pay",
            axum::routing::post({
                let calls = calls.clone();
                move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.clone().wait_for(|go| *go).await;
                    axum::Json(json!({"events": [{"action": "paid", "data": {}}]}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/pay", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let registration = |actions: &[&str]| WebhookRegistration {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            url: url.clone(),
            secret: None,
        };

        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        crate::sdk::ensure_topics(log.as_ref(), 1).await.unwrap();
        let registry = WebhookRegistry::open(log.clone()).await.unwrap();
        registry
            .put("billing", registration(&["pay"]))
            .await
            .unwrap();
        let runner = {
            let (log, registry, first) = (log.clone(), registry.clone(), registration(&["pay"]));
            tokio::spawn(async move {
                let config = WebhookConfig::default();
                run_registered(
                    log,
                    registry,
                    "billing",
                    first,
                    &config,
                    std::future::pending(),
                )
                .await
            })
        };
        let pay = send(log.as_ref(), "pay").await;
        for _ in 0..500 {
            if calls.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the call is in flight");

        // The registration changes and a command the runner would skip
        // arrives: it stops, but only once the call in flight has answered.
        registry
            .put("billing", registration(&["pay", "refund"]))
            .await
            .unwrap();
        let ship = send(log.as_ref(), "ship").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!runner.is_finished(), "the runner waits for its call");
        go.send(true).unwrap();
        ends_superseded(runner).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "called once, not cut off");
        let group = unchecked_group_name("billing");
        assert_eq!(
            log.committed(&group, COMMANDS_TOPIC, 0).await.unwrap(),
            Some(ship.offset),
            "the payment is settled and committed; the rest is left for the next runner"
        );
        assert!(ship.offset > pay.offset);
        let events = log.topic(EVENTS_TOPIC).await.unwrap();
        assert_eq!(events.partitions[0].end_offset, 1, "the payment's outcome");
    }

    #[tokio::test]
    async fn a_runner_stops_instead_of_skipping_with_a_changed_registration() {
        let log: Arc<dyn Log> = Arc::new(MemoryLog::new());
        crate::sdk::ensure_topics(log.as_ref(), 1).await.unwrap();
        let registry = WebhookRegistry::open(log.clone()).await.unwrap();
        registry.put("billing", billing(&["pay"])).await.unwrap();
        let config = WebhookConfig::default();

        // Running with the first registration: other actions are skipped.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = {
            let (log, registry, config) = (log.clone(), registry.clone(), config.clone());
            tokio::spawn(async move {
                run_registered(
                    log,
                    registry,
                    "billing",
                    billing(&["pay"]),
                    &config,
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
            })
        };
        let other = send(log.as_ref(), "ship").await;
        let group = unchecked_group_name("billing");
        for _ in 0..500 {
            if log.committed(&group, COMMANDS_TOPIC, 0).await.unwrap() == Some(other.offset + 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            log.committed(&group, COMMANDS_TOPIC, 0).await.unwrap(),
            Some(other.offset + 1),
            "a command of another action is skipped and committed"
        );

        // The registration now handles refunds too, and a refund arrives
        // before anyone restarts the runner: it must not be skipped.
        registry
            .put("billing", billing(&["pay", "refund"]))
            .await
            .unwrap();
        let refund = send(log.as_ref(), "refund").await;
        ends_superseded(runner).await;
        assert_eq!(
            log.committed(&group, COMMANDS_TOPIC, 0).await.unwrap(),
            Some(refund.offset),
            "the refund is left for the next runner"
        );
        drop(stop);

        // A runner started with a registration that is no longer current
        // stops at once.
        let stale = run_registered(
            log.clone(),
            registry,
            "billing",
            billing(&["pay"]),
            &config,
            std::future::pending(),
        )
        .await;
        assert!(matches!(stale, Err(ProcessorError::Superseded(_))));
    }
}
