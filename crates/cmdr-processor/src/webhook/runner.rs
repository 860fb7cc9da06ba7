//! Runs one webhook processor: consumes `commands` as group
//! `webhook-<name>`, POSTs each command of its actions to its URL, and turns
//! the answer into events, a rejection, or (after the last failed attempt) a
//! dead letter plus a `processing-failed` rejection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cmdr_contract::{Command, COMMANDS_TOPIC, EVENTS_TOPIC};
use cmdr_log::{Log, Record, StartPosition, StoredRecord};

use super::protocol::{parse_answer, WebhookAnswer, ATTEMPT_HEADER, PROCESSOR_HEADER};
use super::registry::WebhookRegistration;
use crate::dead_letter::DeadLetters;
use crate::engine::{self, Dispatch, EngineConfig, DEFAULT_MAX_IN_FLIGHT};
use crate::records::{accepted_events, event_record, rejected_event};
use crate::sdk::{with_retries, HandlerError};
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
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            retry: RetryPolicy::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// The consumer group of webhook processor `name`.
pub fn group_name(name: &str) -> String {
    format!("{WEBHOOK_GROUP_PREFIX}{name}")
}

struct WebhookDispatch {
    name: String,
    registration: WebhookRegistration,
    client: reqwest::Client,
    retry: RetryPolicy,
    dead_letters: DeadLetters,
}

/// One POST of `command`; the answer or the failure to retry.
async fn call(
    client: reqwest::Client,
    url: String,
    name: String,
    command: Arc<Command>,
    attempt: u32,
) -> Result<WebhookAnswer, HandlerError> {
    let response = client
        .post(&url)
        .header(PROCESSOR_HEADER, name)
        .header(ATTEMPT_HEADER, attempt.to_string())
        .json(command.as_ref())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| describe(&e))?;
    parse_answer(status, &body).map_err(HandlerError::from)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time (timeout)".into()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        format!("request failed: {e}")
    }
}

impl Dispatch for WebhookDispatch {
    async fn handle(&self, record: StoredRecord) -> Result<Vec<Record>, ProcessorError> {
        let by_header = record
            .header(cmdr_contract::header::ACTION)
            .and_then(|a| std::str::from_utf8(a).ok())
            .map(|a| self.registration.handles(a));
        if by_header == Some(false) {
            return Ok(Vec::new());
        }
        let command = match Command::from_json(&record.value) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e, "skipping a commands record that is not a command");
                return Ok(Vec::new());
            }
        };
        if !self.registration.handles(&command.action) {
            return Ok(Vec::new());
        }
        let answer = with_retries(&self.retry, |attempt| {
            call(
                self.client.clone(),
                self.registration.url.clone(),
                self.name.clone(),
                command.clone(),
                attempt,
            )
        })
        .await;
        let now = cmdr_contract::now_ms();
        let events = match answer {
            Ok(WebhookAnswer::Accept(drafts)) => accepted_events(&command, drafts, now),
            Ok(WebhookAnswer::Reject(rejection)) => vec![rejected_event(&command, rejection, now)],
            Err((last_error, attempts)) => {
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
    crate::sdk::ensure_topics(log.as_ref(), crate::sdk::DEFAULT_PARTITIONS).await?;
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| ProcessorError::Config(format!("building the HTTP client: {e}")))?;
    let dispatch = Arc::new(WebhookDispatch {
        name: name.to_string(),
        registration,
        client,
        retry: config.retry,
        dead_letters: DeadLetters::open(log.clone()).await?,
    });
    let engine_config = EngineConfig {
        group: group_name(name),
        input_topic: COMMANDS_TOPIC.into(),
        output_topic: EVENTS_TOPIC.into(),
        start: StartPosition::Earliest,
        max_in_flight: config.max_in_flight,
    };
    engine::run(log, engine_config, dispatch, shutdown).await
}
