//! Dead letters: inputs that no attempt could handle, kept in the
//! `_cmdr_dead_letters` topic so that nothing is silently dropped.
//!
//! Key decision: the dead letter is appended *before* the input is settled
//! (the command's `processing-failed` rejection and the offset commit are one
//! atomic append after it). A crash between the two can therefore repeat a
//! dead letter but never lose one; [`DeadLetters::list`] hides such repeats.
//!
//! Record format (value, JSON, version 1; key = the processor name):
//! `{"processor", "topic", "partition", "offset", "input", "last_error", "attempts", "timestamp"}`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use cmdr_contract::header;
use cmdr_log::{Log, LogError, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ProcessorError;

/// The topic dead letters are appended to (one partition).
pub const DEAD_LETTERS_TOPIC: &str = "_cmdr_dead_letters";
/// Largest page [`DeadLetters::list`] returns.
pub const MAX_DEAD_LETTER_PAGE: usize = 1000;

/// Room kept in a dead letter's record for its key (the processor name)
/// and headers.
const DEAD_LETTER_HEADROOM: usize = 1024;

/// Bytes of `value` as JSON.
fn json_len(value: &impl Serialize) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// An input that could not be handled, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The processor (SDK group or webhook name) that failed.
    pub processor: String,
    /// The input's topic (`commands` or `events`).
    pub topic: String,
    /// The input's partition.
    pub partition: u32,
    /// The input's offset.
    pub offset: u64,
    /// The input itself (the command or event, as JSON); for one too large
    /// to fit again in a dead letter, its `id`, `action`, `key` and an
    /// `omitted` note (the log keeps it at `partition`/`offset`).
    pub input: Value,
    /// The error of the last attempt (at most
    /// [`crate::records::MAX_ERROR_LEN`] bytes, cut beyond).
    pub last_error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up, ms since the epoch.
    pub timestamp: i64,
}

/// A dead letter and where it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDeadLetter {
    /// Its offset in [`DEAD_LETTERS_TOPIC`] (use it as a cursor).
    pub position: u64,
    /// The dead letter.
    #[serde(flatten)]
    pub letter: DeadLetter,
}

/// A page of dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterPage {
    /// The dead letters, oldest first.
    pub items: Vec<StoredDeadLetter>,
    /// Where the next page starts (pass it as `from`).
    pub next: u64,
}

/// Reads and writes [`DEAD_LETTERS_TOPIC`]; cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    log: Arc<dyn Log>,
}

impl DeadLetters {
    /// Opens the dead letter topic, creating it if needed.
    ///
    /// # Errors
    /// [`ProcessorError::Log`] when the topic cannot be created.
    pub async fn open(log: Arc<dyn Log>) -> Result<Self, ProcessorError> {
        log.create_topic(DEAD_LETTERS_TOPIC, 1)
            .await
            .map_err(|e| ProcessorError::log(format!("creating {DEAD_LETTERS_TOPIC}"), e))?;
        Ok(Self { log })
    }

    /// Durably appends a dead letter.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn append(&self, letter: &DeadLetter) -> Result<(), ProcessorError> {
        let letter = self.fitted(letter);
        let value = serde_json::to_vec(&letter).unwrap_or_default();
        let record = Record::new(Bytes::from(letter.processor.clone().into_bytes()), value)
            .with_header(header::CONTENT_TYPE, &b"application/json"[..])
            .with_timestamp(letter.timestamp);
        self.log
            .append(DEAD_LETTERS_TOPIC, vec![record])
            .await
            .map(|_| ())
            .map_err(|e| ProcessorError::log(format!("appending to {DEAD_LETTERS_TOPIC}"), e))
    }

    /// `letter` made to fit in one record (and to read back), so that giving up on an input
    /// cannot fail for its size (and stop the processor on it for good):
    /// `last_error` cut to [`crate::records::MAX_ERROR_LEN`] bytes, and an
    /// input near the largest record replaced by its `id`, `action` and
    /// `key` and where the log keeps it.
    fn fitted(&self, letter: &DeadLetter) -> DeadLetter {
        let mut letter = DeadLetter {
            last_error: crate::records::cut_error(&letter.last_error).into_owned(),
            ..letter.clone()
        };
        let room = self
            .log
            .max_record_bytes()
            .map(|max| max.saturating_sub(DEAD_LETTER_HEADROOM));
        let too_large = room.is_some_and(|room| json_len(&letter) > room);
        // Inside the letter the input sits two levels deeper: nested near
        // the JSON parser's limit, the letter could not be read back.
        let too_deep = crate::records::depth(&letter.input) > MAX_INPUT_DEPTH;
        if too_large || too_deep {
            let why = if too_large {
                "too large"
            } else {
                "nested too deep"
            };
            letter.input = serde_json::json!({
                "id": letter.input.get("id"),
                "action": letter.input.get("action"),
                "key": letter.input.get("key"),
                "omitted": format!(
                    "{why} to repeat here; the log keeps it at offset {} of partition {} of {}",
                    letter.offset, letter.partition, letter.topic
                ),
            });
        }
        letter
    }

    /// Gives up on a command that failed every attempt: appends its dead
    /// letter, then returns the `processing-failed` rejection event that ends
    /// the command (so sync waiters get an answer).
    ///
    /// # Errors
    /// [`ProcessorError::Log`] when the dead letter cannot be appended.
    pub async fn give_up(
        &self,
        processor: &str,
        record: &cmdr_log::StoredRecord,
        command: &cmdr_contract::Command,
        last_error: &str,
        attempts: u32,
        now: i64,
    ) -> Result<cmdr_contract::Event, ProcessorError> {
        self.append(&DeadLetter {
            processor: processor.to_string(),
            topic: cmdr_contract::COMMANDS_TOPIC.into(),
            partition: record.partition,
            offset: record.offset,
            input: serde_json::to_value(command).unwrap_or(Value::Null),
            last_error: last_error.to_string(),
            attempts,
            timestamp: now,
        })
        .await?;
        Ok(crate::records::rejected_event(
            command,
            crate::records::processing_failed(attempts, last_error),
            now,
        ))
    }

    /// Up to `limit` (at most [`MAX_DEAD_LETTER_PAGE`]) dead letters from
    /// position `from` on, optionally only those of `processor`. Repeats of
    /// one input by one processor (after a crash) appear once per page.
    ///
    /// # Errors
    /// [`ProcessorError::Log`].
    pub async fn list(
        &self,
        processor: Option<&str>,
        from: u64,
        limit: usize,
    ) -> Result<DeadLetterPage, ProcessorError> {
        let limit = limit.clamp(1, MAX_DEAD_LETTER_PAGE);
        let mut items: Vec<StoredDeadLetter> = Vec::new();
        let mut seen = HashSet::new();
        let mut next = from;
        while items.len() < limit {
            let batch = match self.log.read(DEAD_LETTERS_TOPIC, 0, next, limit).await {
                Ok(b) => b,
                Err(LogError::OffsetOutOfRange { start, .. }) => {
                    next = start;
                    continue;
                }
                Err(e) => {
                    return Err(ProcessorError::log(
                        format!("reading {DEAD_LETTERS_TOPIC}"),
                        e,
                    ))
                }
            };
            if batch.is_empty() {
                break;
            }
            for record in batch {
                next = record.offset + 1;
                let Ok(letter) = serde_json::from_slice::<DeadLetter>(&record.value) else {
                    tracing::warn!(offset = record.offset, "undecodable dead letter skipped");
                    continue;
                };
                if processor.is_some_and(|p| p != letter.processor) {
                    continue;
                }
                let id = (
                    letter.processor.clone(),
                    letter.topic.clone(),
                    letter.partition,
                    letter.offset,
                );
                if seen.insert(id) {
                    items.push(StoredDeadLetter {
                        position: record.offset,
                        letter,
                    });
                }
                if items.len() >= limit {
                    break;
                }
            }
        }
        Ok(DeadLetterPage { items, next })
    }
}

/// Deepest nesting of a dead letter's `input` repeated in full: serde_json
/// reads at most 128 levels, and the letter adds two.
const MAX_INPUT_DEPTH: usize = crate::records::MAX_OUTPUT_DEPTH;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_letter_for_a_deeply_nested_command_reads_back() {
        let log: Arc<dyn Log> = Arc::new(cmdr_log::memory::MemoryLog::new());
        let letters = DeadLetters::open(log).await.unwrap();
        // Nested as deep as a request may be (serde_json's limit, 128).
        let mut data = serde_json::json!(1);
        for _ in 0..125 {
            data = serde_json::json!({ "d": data });
        }
        let input = serde_json::json!({"id": "c1", "action": "a", "key": "k", "data": data});
        letters
            .append(&DeadLetter {
                processor: "p".into(),
                topic: "commands".into(),
                partition: 0,
                offset: 7,
                input,
                last_error: "down".into(),
                attempts: 3,
                timestamp: 0,
            })
            .await
            .unwrap();
        let page = letters.list(Some("p"), 0, 10).await.unwrap();
        assert_eq!(page.items.len(), 1);
        let input = &page.items[0].letter.input;
        assert_eq!(input["id"], "c1");
        assert!(input["omitted"]
            .as_str()
            .unwrap()
            .starts_with("nested too deep"));
    }
}
