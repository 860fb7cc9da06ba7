//! Live updates: `GET /commands/updates` and `GET /events/updates` as
//! Server-Sent Events, and `GET /ws`, a WebSocket with subscribe/unsubscribe.
//!
//! SSE: each message has `event: command|event`, `data:` the record's JSON
//! and `id:` its position; reconnecting with `Last-Event-ID` (or `?from=`)
//! resumes right after it. `from` is `end` (default; also `latest`, `now`),
//! `start` (also `earliest`) or a position.
//! Filters: `action`, `key` (and `parent`, `root` for events). A comment is
//! sent every [`HEARTBEAT`] when idle.
//!
//! WebSocket messages (JSON text; the only query parameter of `/ws` is
//! `access_token`, anything else is a 400):
//! - client: `{"op":"subscribe","id":"s1","topic":"events","from":"start","action":"..."}`
//! - client: `{"op":"unsubscribe","id":"s1"}`
//! - server: `{"type":"subscribed","id":"s1"}`, `{"type":"unsubscribed","id":"s1"}`,
//!   `{"type":"record","subscription":"s1","position":"42","record":{...}}`,
//!   `{"type":"error","message":"..."}`.
//!
//! A stream ends when the server shuts down (a WebSocket gets a Close frame
//! with 1001, going away) and when a token reload no longer accepts the
//! token it was opened with (1008, policy violation).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Extension;
use axum::Router;
use cmdr_contract::{COMMANDS_TOPIC, EVENTS_TOPIC};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::auth::{Credential, Role};
use crate::error::{ApiError, ApiResult};
use crate::follow::{follow, resolve, Filter, StartAt, Update};
use crate::server::{
    live_streams_per_connection, ConnectionSlot, LiveStreamFlag, MAX_LIVE_STREAMS_PER_CONNECTION,
};
use crate::state::AppState;

/// Updates buffered per SSE client; when full the follower waits (the client
/// is slow) and resumes reading the log once there is room.
pub const SSE_BUFFER: usize = 64;
/// Interval of SSE heartbeat comments when nothing else is sent.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Outgoing WebSocket messages buffered per connection.
pub const WS_BUFFER: usize = 256;
/// Most live followers (SSE streams plus WebSocket subscriptions) at once;
/// beyond it a new SSE stream gets 503 and a subscription an error message.
pub const MAX_LIVE_STREAMS: usize = 4096;
/// Bytes a WebSocket's read buffer starts with (it grows for a larger
/// message, up to [`MAX_WS_MESSAGE`]): clients send only small subscribe
/// and unsubscribe messages. The library's default, 128 KiB filled with
/// zeros, took 1,000 sockets to 257 MiB of resident memory (`cmdr bench
/// live --protocol ws`).
pub const WS_READ_BUFFER: usize = 8 * 1024;
/// Bytes of messages a WebSocket gathers before writing them to the
/// socket (everything ready is written at once anyway, see `run_socket`).
pub const WS_WRITE_BUFFER: usize = 32 * 1024;
/// Most subscriptions one WebSocket may hold.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Largest message (and frame) a WebSocket client may send: subscribe and
/// unsubscribe messages are a few hundred bytes. A larger one closes the
/// socket.
pub const MAX_WS_MESSAGE: usize = 64 * 1024;

/// Routes of this module.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/commands/updates", get(command_updates))
        .route("/events/updates", get(event_updates))
        .route("/ws", get(websocket))
}

/// What ends a live stream opened with `credential`: the server shutting
/// down, or a token reload after which the credential no longer grants
/// reading (a revoked token, or one whose `read` role was taken away, must
/// not keep reading). Becomes `true` then.
fn stop_signal(state: &AppState, credential: Option<Credential>) -> watch::Receiver<bool> {
    let shutdown = state.shutdown_signal();
    let (Some(table), Some(credential)) = (state.inner.config.tokens.clone(), credential) else {
        return shutdown;
    };
    // Subscribed before anything else, and marked changed so that the first
    // pass checks the table as it is now: a reload between the request's
    // authentication and this subscription is not missed.
    let mut changes = table.changes();
    changes.mark_changed();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                changed = changes.changed() => {
                    if changed.is_err() || !table.current().accepts(&credential, Role::Read) {
                        break;
                    }
                }
                // The stream ended first.
                () = stop.closed() => return,
            }
        }
        let _ = stop.send(true);
    });
    stopped
}

fn live_permit(state: &AppState) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
    Arc::clone(&state.inner.live)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "too many live streams (at most {MAX_LIVE_STREAMS})"
            ))
        })
}

fn parse_params(raw: Option<&str>, events: bool) -> ApiResult<(Filter, Option<StartAt>)> {
    let pairs = crate::extract::query_pairs(raw)?;
    let mut filter = Filter::default();
    let mut from = None;
    let uuid = |name: &str, v: &str| {
        uuid::Uuid::parse_str(v)
            .map_err(|_| ApiError::parameter(name, format!("{name} must be a UUID, not {v:?}")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "action" => filter.action = Some(crate::extract::action_filter(&v)?),
            "key" => filter.key = Some(crate::extract::key_filter(&v)?),
            "parent" if events => filter.parent = Some(uuid("parent", &v)?),
            "root" if events => filter.root = Some(uuid("root", &v)?),
            "from" => from = Some(crate::follow::parse_from(&v)?),
            // Read by the authentication layer, if any (see `auth`).
            crate::auth::ACCESS_TOKEN_PARAM => {}
            other => {
                return Err(ApiError::parameter(
                    other,
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    Ok((filter, from))
}

async fn sse(
    state: AppState,
    topic: &'static str,
    raw: Option<String>,
    headers: HeaderMap,
    credential: Option<Credential>,
    live: Option<Extension<LiveStreamFlag>>,
) -> ApiResult<Response> {
    let (filter, from) = parse_params(raw.as_deref(), topic == EVENTS_TOPIC)?;
    if headers.get_all("last-event-id").iter().nth(1).is_some() {
        return Err(ApiError::BadRequest(
            "Last-Event-ID given more than once".into(),
        ));
    }
    let resume = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => Some(StartAt::parse(id)?),
        Some(Err(_)) => {
            return Err(ApiError::BadRequest(
                "Last-Event-ID is not a position".into(),
            ))
        }
        _ => None,
    };
    let resumed = resume.is_some();
    let at = resume.or(from).unwrap_or(StartAt::End);
    // A position refused is named as the listings name it: the `from`
    // parameter, unless it came as Last-Event-ID.
    let pos = resolve(state.inner.log.as_ref(), topic, &at)
        .await
        .map_err(|e| match e {
            ApiError::BadRequest(m) if !resumed => ApiError::parameter("from", m),
            other => other,
        })?;
    // Counted on its connection: at shutdown, an HTTP/1.1 connection
    // serving a live stream is closed rather than drained (see `server`).
    let guard = match live {
        Some(Extension(flag)) => {
            let cap = live_streams_per_connection(state.inner.live.available_permits());
            Some(flag.raise(state.shutdown_signal(), cap).ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "the server's live streams run short and this connection serves \
                     {MAX_LIVE_STREAMS_PER_CONNECTION}, the most one connection may then"
                ))
            })?)
        }
        None => None,
    };
    let permit = live_permit(&state)?;
    let (tx, rx) = mpsc::channel::<Update>(SSE_BUFFER);
    let follower = follow(
        state.inner.log.clone(),
        topic,
        pos,
        filter,
        tx,
        stop_signal(&state, credential),
        Arc::clone(&state.inner.live),
    );
    // The follower ends when the client is gone (its channel closes); the
    // stream's place among the live ones is freed with it.
    tokio::spawn(async move {
        let _permit = permit;
        follower.await
    });
    let name = if topic == COMMANDS_TOPIC {
        "command"
    } else {
        "event"
    };
    Ok(crate::sse::response(rx, name, HEARTBEAT, guard))
}

async fn command_updates(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    credential: Option<Extension<Credential>>,
    live: Option<Extension<LiveStreamFlag>>,
) -> ApiResult<Response> {
    let credential = credential.map(|Extension(c)| c);
    sse(state, COMMANDS_TOPIC, raw, headers, credential, live).await
}

async fn event_updates(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    credential: Option<Extension<Credential>>,
    live: Option<Extension<LiveStreamFlag>>,
) -> ApiResult<Response> {
    let credential = credential.map(|Extension(c)| c);
    sse(state, EVENTS_TOPIC, raw, headers, credential, live).await
}

/// Checks `/ws`'s query: it takes only `access_token` (read by the
/// authentication layer); filters go in subscribe messages, so anything else
/// (a filter given as on the SSE endpoints, say) is refused as they refuse
/// an unknown parameter, rather than ignored.
fn check_ws_query(raw: Option<&str>) -> ApiResult<()> {
    match crate::extract::query_pairs(raw)?
        .into_iter()
        .find(|(k, _)| k != crate::auth::ACCESS_TOKEN_PARAM)
    {
        Some((other, _)) => Err(ApiError::parameter(
            &other,
            format!(
                "unknown query parameter {other:?} (/ws takes only {}; filters go in subscribe messages)",
                crate::auth::ACCESS_TOKEN_PARAM
            ),
        )),
        None => Ok(()),
    }
}

async fn websocket(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
    credential: Option<Extension<Credential>>,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    check_ws_query(raw.as_deref())?;
    // Browsers do not apply CORS to WebSockets: a page of any site could
    // read a server without tokens (cross-site WebSocket hijacking).
    crate::cors::check_origin(&headers, state.inner.config.cors.as_ref())?;
    let credential = credential.map(|Extension(c)| c);
    let ws = ws.map_err(|e| match e {
        WebSocketUpgradeRejection::WebSocketKeyHeaderMissing(_) => {
            ApiError::BadRequest(format!("not a valid WebSocket upgrade: {}", e.body_text()))
        }
        other => ApiError::UpgradeRequired(format!(
            "this endpoint speaks WebSocket (version 13) only: {}",
            other.body_text()
        )),
    })?;
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            // The socket holds its connection's place until it closes.
            let _slot = slot;
            run_socket(state, socket, credential).await;
        }))
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe {
        id: String,
        topic: String,
        #[serde(default)]
        from: Option<String>,
        #[serde(flatten)]
        filter: Filter,
    },
    Unsubscribe {
        id: String,
    },
}

async fn run_socket(state: AppState, socket: WebSocket, credential: Option<Credential>) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(WS_BUFFER);
    // When the peer last took a message: a slow reader is alive too.
    let born = tokio::time::Instant::now();
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = tokio::spawn({
        let delivered = Arc::clone(&delivered);
        async move {
            // A record's share of its follower's buffer is given back once
            // its message is handed to the socket (`held` dropped after
            // each `feed`; the socket's own buffer is bounded).
            let mut ready = Vec::with_capacity(WS_BUFFER);
            while out_rx.recv_many(&mut ready, WS_BUFFER).await > 0 {
                // Every message ready goes out in one flush.
                let mut sent = true;
                for (msg, _held) in ready.drain(..) {
                    if sink.feed(msg).await.is_err() {
                        sent = false;
                        break;
                    }
                }
                if !sent || sink.flush().await.is_err() {
                    break;
                }
                let ms = born.elapsed().as_millis() as u64;
                delivered.store(ms, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let mut subs: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let stop = stop_signal(&state, credential);
    let mut stopped = stop.clone();
    let mut close = None;
    // Pings, so that a peer gone without a close (a NAT timeout, a laptop
    // asleep) does not hold its connection and live streams for ever.
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = tokio::time::Instant::now();
    loop {
        let msg = tokio::select! {
            m = stream.next() => {
                heard = tokio::time::Instant::now();
                m
            }
            _ = beat.tick() => {
                let took = born
                    + Duration::from_millis(delivered.load(std::sync::atomic::Ordering::Relaxed));
                if heard.max(took).elapsed() > HEARTBEAT * 3 {
                    close = Some((close_code::AWAY, "no answer to pings"));
                    break;
                }
                // Skipped when the outgoing buffer is full: the peer is
                // reading slowly, not gone.
                let _ = out_tx.try_send((Message::Ping(bytes::Bytes::new()), None));
                continue;
            }
            _ = stopped.wait_for(|s| *s) => {
                close = Some(if *state.shutdown_signal().borrow() {
                    (close_code::AWAY, "the server is shutting down")
                } else {
                    (close_code::POLICY, "the token was revoked")
                });
                break;
            }
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if is_too_long(e) {
                    // Said, not only dropped: the client learns why.
                    close = Some((close_code::SIZE, "a message may be at most 64 KiB"));
                }
                break;
            }
            None => break,
        };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match client_message(&text) {
            Err((id, message)) => match id {
                Some(id) => json!({"type": "error", "id": id, "message": message}),
                None => json!({"type": "error", "message": message}),
            },
            Ok(ClientMessage::Unsubscribe { id }) => match subs.remove(&id) {
                Some(h) => {
                    // Ended, not only told to end: no record of it follows
                    // this answer.
                    h.abort();
                    let _ = h.await;
                    json!({"type": "unsubscribed", "id": id})
                }
                None => json!({"type": "error", "id": id, "message": "no such subscription"}),
            },
            Ok(ClientMessage::Subscribe {
                id,
                topic,
                from,
                filter,
            }) => {
                match subscribe(
                    &state,
                    &subs,
                    &id,
                    &topic,
                    from.as_deref(),
                    filter,
                    (out_tx.clone(), stop.clone()),
                )
                .await
                {
                    Ok(handle) => {
                        // `subscribed` is sent already, before any record.
                        subs.insert(id.clone(), handle);
                        continue;
                    }
                    Err(e) => json!({"type": "error", "id": id, "message": e.to_string()}),
                }
            }
        };
        if out_tx.send((text_message(reply), None)).await.is_err() {
            break;
        }
    }
    for (_, h) in subs {
        h.abort();
    }
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = out_tx.send((Message::Close(Some(frame)), None)).await;
    }
    drop(out_tx);
    let _ = writer.await;
}

/// Whether a read failed on a message over [`MAX_WS_MESSAGE`] (the
/// connection is still open: it can be closed with 1009, "message too big").
fn is_too_long(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

/// Reads a client's message, refusing unknown fields (a misspelt filter
/// must not subscribe to everything) and `parent`/`root` on `commands`, as
/// the SSE endpoints do; an error carries the message's `id` if it has one.
fn client_message(text: &str) -> Result<ClientMessage, (Option<String>, String)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, format!("invalid message: {e}")))?;
    let id = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
    // A member given twice (`"op"` twice) would be read as one of them.
    if let Err(v) = cmdr_contract::exact::check(text.as_bytes()) {
        return Err((
            id,
            format!("invalid message: {} (at {:?})", v.message, v.pointer),
        ));
    }
    if let Some(fields) = value.as_object() {
        let allowed: &[&str] = match fields.get("op").and_then(|v| v.as_str()) {
            Some("subscribe") if fields.get("topic").and_then(|v| v.as_str()) == Some("events") => {
                &[
                    "op", "id", "topic", "from", "action", "key", "parent", "root",
                ]
            }
            Some("subscribe") => &["op", "id", "topic", "from", "action", "key"],
            Some("unsubscribe") => &["op", "id"],
            _ => &[],
        };
        if !allowed.is_empty() {
            if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err((
                    id,
                    format!("unknown field {unknown:?} (this message takes {allowed:?})"),
                ));
            }
        }
    }
    serde_json::from_value(value).map_err(|e| (id, format!("invalid message: {e}")))
}

/// A message for the socket's writer, with the share of its follower's
/// buffer a record holds until it is written (see
/// [`crate::follow::follow_buffer_bytes`]).
type Outgoing = (Message, Option<tokio::sync::OwnedSemaphorePermit>);

/// The `record` message of subscription `sub_json` (its id as a JSON
/// string) for the record `value` at `position`. The record's JSON goes in
/// as it is, checked but not parsed into a tree and written out again:
/// every subscriber sends every record. A value that is not JSON (never
/// written by cmdr or its processors) goes as `null`. The check is the
/// RFC's grammar: a record nested close to serde_json's default depth
/// limit (128) is sent, one level deeper inside the message, though a
/// client parsing with that limit would refuse it (cmdr's intake takes
/// nothing deeper than that limit).
fn record_message(sub_json: &str, position: &str, value: &[u8]) -> Message {
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok();
    let record = match std::str::from_utf8(value) {
        Ok(text) if is_json => text,
        _ => "null",
    };
    let mut msg = String::with_capacity(record.len() + sub_json.len() + position.len() + 64);
    msg.push_str(r#"{"type":"record","subscription":"#);
    msg.push_str(sub_json);
    msg.push_str(r#","position":""#);
    // Positions are digits and dots.
    msg.push_str(position);
    msg.push_str(r#"","record":"#);
    msg.push_str(record);
    msg.push('}');
    Message::Text(msg.into())
}

fn text_message(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

async fn subscribe(
    state: &AppState,
    subs: &HashMap<String, tokio::task::JoinHandle<()>>,
    id: &str,
    topic: &str,
    from: Option<&str>,
    filter: Filter,
    (out, stop): (mpsc::Sender<Outgoing>, watch::Receiver<bool>),
) -> ApiResult<tokio::task::JoinHandle<()>> {
    // An ended subscription (see below) frees its id and its place.
    if subs.get(id).is_some_and(|h| !h.is_finished()) {
        return Err(ApiError::BadRequest(format!("subscription {id:?} exists")));
    }
    if subs.values().filter(|h| !h.is_finished()).count() >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_SUBSCRIPTIONS} subscriptions per socket"
        )));
    }
    let topic: &'static str = match topic {
        "commands" => COMMANDS_TOPIC,
        "events" => EVENTS_TOPIC,
        other => {
            return Err(ApiError::BadRequest(format!(
                "topic must be commands or events, not {other:?}"
            )))
        }
    };
    // As on the query strings: an empty key or action would match nothing.
    if let Some(key) = &filter.key {
        crate::extract::key_filter(key)?;
    }
    if let Some(action) = &filter.action {
        crate::extract::action_filter(action)?;
    }
    let at = from
        .map(StartAt::parse)
        .transpose()?
        .unwrap_or(StartAt::End);
    let pos = resolve(state.inner.log.as_ref(), topic, &at).await?;
    let start = crate::follow::format_position(&pos);
    let told = start.clone();
    let permit = live_permit(state)?;
    let log = state.inner.log.clone();
    let places = Arc::clone(&state.inner.live);
    let sub = id.to_string();
    let sub_json = serde_json::Value::from(id).to_string();
    // Queued before the follower starts, so that no record of the
    // subscription comes before it.
    let subscribed = json!({"type": "subscribed", "id": id, "position": start});
    out.send((text_message(subscribed), None))
        .await
        .map_err(|_| ApiError::Unavailable("the socket is closing".into()))?;
    let task = tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel::<Update>(SSE_BUFFER);
        // Stopped with this task, however it ends (an abort included).
        let follower = AbortOnDrop(tokio::spawn(follow(
            log,
            topic,
            pos,
            filter,
            tx,
            stop.clone(),
            places,
        )));
        let mut last = None;
        loop {
            let Some(u) = rx.recv().await else {
                // The follower stopped on its own: the log could not be
                // read. Said, so the client can subscribe again (the id is
                // free once this task ends), unless the server is stopping.
                if !*stop.borrow() {
                    let msg = json!({"type": "error", "id": sub, "message": "the subscription ended: the log could not be read; subscribe again from the last position", "position": last});
                    let _ = out.send((text_message(msg), None)).await;
                }
                break;
            };
            // A position alone: where the follower has read to, past
            // records the filter skipped (the first is the start, already
            // in `subscribed`). A client resumes from the last it saw.
            let Some(value) = u.value else {
                if u.position != told {
                    let msg =
                        json!({"type": "position", "subscription": sub, "position": u.position});
                    last = Some(u.position);
                    if out.send((text_message(msg), None)).await.is_err() {
                        break;
                    }
                }
                continue;
            };
            let msg = record_message(&sub_json, &u.position, &value);
            last = Some(u.position);
            if out.send((msg, u.held)).await.is_err() {
                break;
            }
        }
        drop(follower);
        drop(permit);
    });
    Ok(task)
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_messages_carry_the_record_as_it_is() {
        let parsed = |value: &[u8]| {
            let sub = serde_json::Value::from(r#"s"1"#).to_string();
            let Message::Text(text) = record_message(&sub, "4.2", value) else {
                panic!("a text message");
            };
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let record = r#"{"id":"x","data":{"n":[1, 2]},"s":"caf\u00e9 é"}"#.as_bytes();
        assert_eq!(
            parsed(record),
            json!({"type": "record", "subscription": "s\"1", "position": "4.2",
                   "record": serde_json::from_slice::<serde_json::Value>(record).unwrap()})
        );
        assert_eq!(parsed(b"not json")["record"], serde_json::Value::Null);
        assert_eq!(
            parsed(b"{\"a\":\"\xff\"}")["record"],
            serde_json::Value::Null
        );
        assert_eq!(parsed(b"{} {}")["record"], serde_json::Value::Null);
    }

    #[test]
    fn the_websocket_endpoint_takes_only_an_access_token() {
        assert!(check_ws_query(None).is_ok());
        assert!(check_ws_query(Some("")).is_ok());
        assert!(check_ws_query(Some("access_token=t")).is_ok());
        for bad in ["from=start", "access_token=t&action=x", "topic=events"] {
            let err = check_ws_query(Some(bad)).unwrap_err();
            assert_eq!(err.code(), "bad-request", "{bad}");
        }
    }

    #[test]
    fn live_endpoints_refuse_unknown_parameters() {
        assert!(parse_params(Some("from=earliest&action=a"), false).is_ok());
        assert!(parse_params(Some("root=x"), false).is_err());
        assert!(parse_params(Some("acton=a"), true).is_err());
        assert!(parse_params(Some("action=a&action=b"), true).is_err());
    }
}
