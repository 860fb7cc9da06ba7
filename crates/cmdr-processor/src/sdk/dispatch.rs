//! Runs the registered handlers on each input: decode, pick the handler by
//! action, retry transient failures, and turn the result into event records.
//!
//! Key decision: a panic in a handler (while making its future or while
//! polling it) is caught and counts as a failed attempt like any error
//! (retried, then settled), not a crash loop.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use cmdr_contract::{header, Command, Event};
use cmdr_log::{Record, StoredRecord};
use serde_json::Value;

use super::handler::{CommandHandler, Context, Decision, EventHandler, HandlerError};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::engine::{Dispatch, Stopping};
use crate::records::{
    accepted_events, caused_events, event_record, fits_in_record, rejected_event,
};
use crate::{ProcessorError, RetryPolicy};

/// How [`with_retries`] ended.
pub(crate) enum Retried<T> {
    /// An attempt succeeded.
    Done(T),
    /// Every attempt failed: the last error and the number of attempts.
    GaveUp(String, u32),
    /// The processor began stopping while the input waited for its next
    /// attempt: it stays unsettled (uncommitted) and is handled again after
    /// the restart.
    Interrupted,
}

/// Runs `attempt(n)` until it succeeds or the policy gives up. Each attempt
/// runs at most [`RetryPolicy::attempt_timeout`]; the wait before a retry is
/// cut short when `stopping` fires (then [`Retried::Interrupted`]).
pub(crate) async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    stopping: &Stopping,
    mut attempt: F,
) -> Retried<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, HandlerError>> + Send,
{
    let mut n = 1;
    loop {
        // A handler may panic while making its future (before any `async`
        // block) as well as while it is polled.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| attempt(n)));
        let polled = match started {
            Ok(future) => {
                tokio::time::timeout(policy.attempt_timeout, CatchUnwind(Box::pin(future))).await
            }
            Err(payload) => Ok(Err(payload)),
        };
        let error = match polled {
            Ok(Ok(Ok(value))) => return Retried::Done(value),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(payload)) => format!("handler panicked: {}", panic_message(payload)),
            Err(_) => format!(
                "attempt timed out after {} ms",
                policy.attempt_timeout.as_millis()
            ),
        };
        if !policy.retries_after(n) {
            return Retried::GaveUp(error, n);
        }
        tracing::debug!(attempt = n, %error, "handler failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(policy.backoff(n)) => {}
            () = stopping.stopped() => return Retried::Interrupted,
        }
        n += 1;
    }
}

/// Polls a future, turning a panic while polling into an `Err` with the
/// panic's payload (a handler bug becomes a failed attempt, not a crash).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Whether the record's action header names an action outside `handled`
/// (records without the header are decoded and checked by action).
fn skip_by_header<V>(record: &StoredRecord, handled: &HashMap<String, V>) -> bool {
    record
        .header(header::ACTION)
        .and_then(|a| std::str::from_utf8(a).ok())
        .is_some_and(|a| !handled.contains_key(a))
}

/// Command handlers of one SDK processor.
pub(crate) struct CommandDispatch {
    pub name: String,
    pub handlers: HashMap<String, CommandHandler>,
    pub retry: RetryPolicy,
    pub dead_letters: DeadLetters,
    /// The log's largest record (see [`fits_in_record`]).
    pub record_limit: Option<usize>,
}

impl Dispatch for CommandDispatch {
    async fn handle(
        &self,
        record: StoredRecord,
        stopping: Stopping,
    ) -> Result<Vec<Record>, ProcessorError> {
        if skip_by_header(&record, &self.handlers) {
            return Ok(Vec::new());
        }
        let command = match Command::from_json(&record.value) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e,
                    "skipping a commands record that is not a command");
                return Ok(Vec::new());
            }
        };
        let Some(handler) = self.handlers.get(&command.action) else {
            return Ok(Vec::new());
        };
        let ctx = Context {
            id: command.id,
            key: command.key.clone(),
            root: command.id,
            attempt: 1,
            partition: record.partition,
            offset: record.offset,
        };
        let limit = self.record_limit;
        let decided = with_retries(&self.retry, &stopping, |attempt| {
            let decision = handler(
                command.clone(),
                Context {
                    attempt,
                    ..ctx.clone()
                },
            );
            async move {
                let decision = decision.await?;
                match &decision {
                    Decision::Accept(drafts) => fits_in_record(drafts, limit)?,
                    Decision::Reject(rejection) => fits_in_record([rejection], limit)?,
                }
                Ok(decision)
            }
        })
        .await;
        let now = cmdr_contract::now_ms();
        let events = match decided {
            Retried::Done(Decision::Accept(drafts)) => accepted_events(&command, drafts, now),
            Retried::Done(Decision::Reject(rejection)) => {
                vec![rejected_event(&command, rejection, now)]
            }
            Retried::Interrupted => return Err(ProcessorError::Interrupted),
            Retried::GaveUp(last_error, attempts) => {
                tracing::error!(processor = %self.name, command = %command.id, %last_error, attempts,
                    "command handler failed on every attempt; rejecting with processing-failed");
                vec![
                    self.dead_letters
                        .give_up(&self.name, &record, &command, &last_error, attempts, now)
                        .await?,
                ]
            }
        };
        Ok(events.iter().map(event_record).collect())
    }
}

/// Event handlers of one SDK processor.
pub(crate) struct EventDispatch {
    pub name: String,
    pub handlers: HashMap<String, EventHandler>,
    pub retry: RetryPolicy,
    pub dead_letters: DeadLetters,
    /// The log's largest record (see [`fits_in_record`]).
    pub record_limit: Option<usize>,
}

impl Dispatch for EventDispatch {
    async fn handle(
        &self,
        record: StoredRecord,
        stopping: Stopping,
    ) -> Result<Vec<Record>, ProcessorError> {
        if skip_by_header(&record, &self.handlers) {
            return Ok(Vec::new());
        }
        let event = match Event::from_json(&record.value) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e,
                    "skipping an events record that is not an event");
                return Ok(Vec::new());
            }
        };
        let Some(handler) = self.handlers.get(&event.action) else {
            return Ok(Vec::new());
        };
        let ctx = Context {
            id: event.id,
            key: event.key.clone(),
            root: event.root.unwrap_or(event.parent),
            attempt: 1,
            partition: record.partition,
            offset: record.offset,
        };
        let limit = self.record_limit;
        let handled = with_retries(&self.retry, &stopping, |attempt| {
            let drafts = handler(
                event.clone(),
                Context {
                    attempt,
                    ..ctx.clone()
                },
            );
            async move {
                let drafts = drafts.await?;
                fits_in_record(&drafts, limit)?;
                Ok(drafts)
            }
        })
        .await;
        let now = cmdr_contract::now_ms();
        match handled {
            Retried::Done(drafts) => Ok(caused_events(&event, drafts, now)
                .iter()
                .map(event_record)
                .collect()),
            Retried::Interrupted => Err(ProcessorError::Interrupted),
            Retried::GaveUp(last_error, attempts) => {
                tracing::error!(processor = %self.name, event = %event.id, %last_error, attempts,
                    "event handler failed on every attempt; dead-lettered");
                self.dead_letters
                    .append(&DeadLetter {
                        processor: self.name.clone(),
                        topic: cmdr_contract::EVENTS_TOPIC.into(),
                        partition: record.partition,
                        offset: record.offset,
                        input: serde_json::to_value(&event).unwrap_or(Value::Null),
                        last_error,
                        attempts,
                        timestamp: now,
                    })
                    .await?;
                Ok(Vec::new())
            }
        }
    }
}
