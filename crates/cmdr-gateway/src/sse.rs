//! The Server-Sent Events body of a live stream: the updates of a
//! follower, framed as SSE messages, with a heartbeat comment when idle.
//!
//! The updates ready when the body is polled go out in one chunk (up to
//! [`CHUNK_BYTES`]), so a subscriber that is behind, or a round of many
//! records, costs one write rather than one per record: with a hundred
//! subscribers, writes are most of what delivering updates costs.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::follow::Update;
use crate::server::LiveStreamGuard;

/// Most updates taken from the follower at once.
const UPDATES_PER_CHUNK: usize = 256;

/// Most bytes framed into one chunk (a larger update goes alone).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// The heartbeat: an SSE comment, which clients ignore but which keeps
/// proxies and the peer's idle timers from closing the stream.
const HEARTBEAT_COMMENT: &[u8] = b":\n\n";

/// Appends one update as an SSE message named `event` to `out`: its
/// position as the `id`, and the record's JSON as `data` (a position alone
/// when there is no record).
pub(crate) fn frame(out: &mut BytesMut, event: &str, update: &Update) {
    let Some(value) = &update.value else {
        out.reserve(update.position.len() + 6);
        out.put_slice(b"id: ");
        out.put_slice(update.position.as_bytes());
        out.put_slice(b"\n\n");
        return;
    };
    out.reserve(event.len() + update.position.len() + value.len() + 24);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\nid: ");
    out.put_slice(update.position.as_bytes());
    out.put_slice(b"\ndata: ");
    // Checked as bytes: most records are one line of valid UTF-8 that goes
    // out as it is, and every subscriber frames every record.
    let text = match std::str::from_utf8(value) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value),
    };
    let text = text.as_bytes();
    if memchr::memchr2(b'\n', b'\r', text).is_none() {
        out.put_slice(text);
    } else {
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                // A line break of the JSON (only ever whitespace there)
                // starts another `data:` line, which the client joins back
                // with one.
                out.put_slice(b"\ndata: ");
            }
            // Outside JSON strings a CR is only whitespace (inside, it
            // must be escaped); SSE would read it as a line break.
            out.extend(line.iter().map(|b| if *b == b'\r' { b' ' } else { *b }));
        }
    }
    out.put_slice(b"\n\n");
}

/// The response streaming `updates` as SSE messages named `event`, with a
/// heartbeat comment after every `heartbeat` without one; `guard` is
/// dropped with the body.
///
/// A chunk holds at most [`CHUNK_BYTES`] (or one larger update), and its
/// records keep their share of the follower's buffer until hyper asks for
/// the next chunk, having taken this one: the follower's bound then covers
/// the bytes waiting for a slow client, not only those in the channel.
pub(crate) fn response(
    updates: mpsc::Receiver<Update>,
    event: &'static str,
    heartbeat: Duration,
    guard: Option<LiveStreamGuard>,
) -> Response {
    let state = Chunker {
        rx: updates,
        ready: VecDeque::with_capacity(UPDATES_PER_CHUNK),
        received: Vec::with_capacity(UPDATES_PER_CHUNK),
        held: Vec::new(),
        _guard: guard,
    };
    let chunks = futures::stream::unfold(state, move |mut state| async move {
        let chunk = state.next_chunk(event, heartbeat).await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), state))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// The body's state between chunks.
struct Chunker {
    rx: mpsc::Receiver<Update>,
    /// Updates received and not framed yet.
    ready: VecDeque<Update>,
    /// Where `recv_many` puts what it takes.
    received: Vec<Update>,
    /// The follower's buffer shares of the last chunk's records.
    held: Vec<OwnedSemaphorePermit>,
    _guard: Option<LiveStreamGuard>,
}

impl Chunker {
    /// The next chunk: the updates ready (waiting for some if there are
    /// none), or a heartbeat after `heartbeat` without any; `None` once the
    /// follower has ended.
    async fn next_chunk(&mut self, event: &str, heartbeat: Duration) -> Option<Bytes> {
        // Asked for the next chunk: the last one is taken.
        self.held.clear();
        if self.ready.is_empty() {
            let wait = self.rx.recv_many(&mut self.received, UPDATES_PER_CHUNK);
            match tokio::time::timeout(heartbeat, wait).await {
                Err(_) => return Some(Bytes::from_static(HEARTBEAT_COMMENT)),
                Ok(0) => return None,
                Ok(_) => self.ready.extend(self.received.drain(..)),
            }
        }
        let (mut take, mut size) = (0, 0);
        for update in &self.ready {
            let n = framed_len(event, update);
            if take > 0 && size + n > CHUNK_BYTES {
                break;
            }
            take += 1;
            size += n;
        }
        let mut out = BytesMut::with_capacity(size);
        for mut update in self.ready.drain(..take) {
            frame(&mut out, event, &update);
            self.held.extend(update.held.take());
        }
        Some(out.freeze())
    }
}

/// About the bytes [`frame`] gives `update` (exact for a one-line record).
fn framed_len(event: &str, update: &Update) -> usize {
    let value = update
        .value
        .as_ref()
        .map_or(0, |v| v.len() + event.len() + 16);
    update.position.len() + value + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn update(position: &str, value: Option<&str>) -> Update {
        Update {
            position: position.into(),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            held: None,
        }
    }

    #[test]
    fn messages_carry_the_position_and_the_record_line_by_line() {
        let mut out = BytesMut::new();
        frame(&mut out, "command", &update("7", None));
        frame(&mut out, "command", &update("8", Some(r#"{"a":1}"#)));
        frame(&mut out, "event", &update("3.9", Some("{\n \"a\":\r\n1}")));
        assert_eq!(
            &out[..],
            b"id: 7\n\n\
              event: command\nid: 8\ndata: {\"a\":1}\n\n\
              event: event\nid: 3.9\ndata: {\ndata:  \"a\": \ndata: 1}\n\n"
        );
    }

    #[tokio::test]
    async fn ready_updates_go_out_in_one_chunk_and_an_idle_stream_beats() {
        use http_body_util::BodyExt;
        let (tx, rx) = mpsc::channel(8);
        for i in 0..3 {
            tx.send(update(&i.to_string(), Some("{}"))).await.unwrap();
        }
        let mut body = response(rx, "command", Duration::from_millis(50), None).into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            first.iter().filter(|b| **b == b'\n').count(),
            3 * 4,
            "three messages in one chunk: {first:?}"
        );
        let beat = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&beat[..], HEARTBEAT_COMMENT);
        drop(tx);
        assert!(body.frame().await.is_none(), "ends with the follower");
    }

    /// Large records go out a chunk of at most `CHUNK_BYTES` at a time, and
    /// hold their share of the follower's buffer until the next chunk is
    /// asked for: a client that takes nothing holds the follower back
    /// instead of the server framing ever more for it.
    #[tokio::test]
    async fn chunks_are_bounded_and_hold_their_records_until_taken() {
        use http_body_util::BodyExt;
        let record = format!("\"{}\"", "x".repeat(100_000));
        let budget = Arc::new(tokio::sync::Semaphore::new(10));
        let (tx, rx) = mpsc::channel(16);
        for i in 0..8 {
            let mut u = update(&i.to_string(), Some(&record));
            u.held = Some(Arc::clone(&budget).try_acquire_owned().unwrap());
            tx.send(u).await.unwrap();
        }
        let mut body = response(rx, "command", Duration::from_secs(60), None).into_body();
        let mut taken = 0;
        while taken < 8 {
            let chunk = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(chunk.len() <= CHUNK_BYTES, "{} bytes", chunk.len());
            let messages = chunk.windows(4).filter(|w| w == b"id: ").count();
            assert!(messages >= 1);
            taken += messages;
            // This chunk's records still hold their shares.
            assert_eq!(budget.available_permits(), 2 + taken - messages);
        }
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(budget.available_permits(), 10, "all given back");
    }
}
