//! The Server-Sent Events body of a live stream: the updates of a
//! follower, framed as SSE messages, with a heartbeat comment when idle.
//!
//! Every update ready when the body is polled goes out in one chunk, so a
//! subscriber that is behind, or a round of many records, costs one write
//! rather than one per record: with a hundred subscribers, writes are most
//! of what delivering updates costs.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::follow::Update;
use crate::server::LiveStreamGuard;

/// Most updates framed into one chunk.
const UPDATES_PER_CHUNK: usize = 256;

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
pub(crate) fn response(
    updates: mpsc::Receiver<Update>,
    event: &'static str,
    heartbeat: Duration,
    guard: Option<LiveStreamGuard>,
) -> Response {
    let chunks = futures::stream::unfold(
        (updates, Vec::with_capacity(UPDATES_PER_CHUNK), guard),
        move |(mut rx, mut ready, guard)| async move {
            let chunk =
                match tokio::time::timeout(heartbeat, rx.recv_many(&mut ready, UPDATES_PER_CHUNK))
                    .await
                {
                    Err(_) => Bytes::from_static(HEARTBEAT_COMMENT),
                    // The follower has ended.
                    Ok(0) => return None,
                    Ok(_) => {
                        let mut out = BytesMut::new();
                        // Each update gives its share of the follower's buffer
                        // back as it is dropped here, once framed.
                        for update in ready.drain(..) {
                            frame(&mut out, event, &update);
                        }
                        out.freeze()
                    }
                };
            Some((Ok::<_, std::convert::Infallible>(chunk), (rx, ready, guard)))
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
