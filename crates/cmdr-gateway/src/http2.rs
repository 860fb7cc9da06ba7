//! HTTP/2 connections: what the connection loop ([`crate::server`]) needs
//! beyond hyper to serve them as safely as HTTP/1.1 ones.
//!
//! An HTTP/1.1 connection serves one request at a time; hyper bounds how
//! long it waits for a request's head, and the send timeout
//! ([`crate::send_timeout`]) closes it when its client takes nothing. An
//! HTTP/2 connection multiplexes streams: hyper bounds neither how long it
//! may sit with no stream open, nor how long one stream's client may leave
//! its bytes untaken (flow control then stops that stream, not the socket,
//! so the send timeout never sees it). So every request of a connection is
//! counted here ([`Tracked`]) and every answer's body watched and handed
//! on in small parts ([`TrackedBody`]), and the connection's task waits on
//! [`Streams::verdict`], which tells it
//! - [`Verdict::Idle`]: no request has been open for the header read
//!   timeout, including before the first one (a client that connects and
//!   says nothing): the connection ends gracefully (`GOAWAY`);
//! - [`Verdict::Stalled`]: an answer had bytes to give and its client's
//!   flow control took none for the send timeout: the connection is
//!   closed, as an HTTP/1.1 one whose client takes nothing is;
//! - [`Verdict::Leaving`]: a request came while the server is leaving (its
//!   shutdown delay): the connection ends gracefully, so the client sends
//!   its next requests on a new one, which a load balancer sends elsewhere
//!   (what `Connection: close` does for HTTP/1.1).
//!
//! A request without `Host` (HTTP/2 carries the authority in its
//! `:authority` pseudo-header) gets one from its URI, so that the
//! same-origin checks ([`crate::cors::check_origin`]) and everything else
//! reading `Host` work alike on both versions.
//!
//! Once a connection's first request is HTTP/1.1, none of this applies to
//! it: its requests pass through untouched, at no cost.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{header, HeaderValue, Request, Version};
use axum::response::Response;
use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use futures::task::AtomicWaker;
use hyper::body::Frame;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection's task should do (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// End gracefully: no request for the header read timeout.
    Idle,
    /// Close: an answer's client took none of its bytes for the send timeout.
    Stalled,
    /// End gracefully: the server is leaving.
    Leaving,
}

/// Which protocol a connection speaks ([`Streams::protocol`]), once its
/// first request tells: one of these.
const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One connection's open requests, shared by its [`Tracked`] service and
/// its task.
#[derive(Debug)]
pub(crate) struct Streams {
    /// When the connection was accepted: what the times below count from.
    epoch: Instant,
    /// [`UNKNOWN`], [`HTTP1`] or [`HTTP2`]; set once, under `state`'s lock.
    protocol: AtomicU8,
    state: Mutex<State>,
    /// Told when the protocol turns out to be HTTP/1.1 and when leaving.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    leaving: bool,
    next_id: u64,
    /// The open requests' body watches, by a number of their own.
    open: HashMap<u64, Arc<BodyWatch>>,
    /// When the last open request ended (or the connection was accepted).
    idle_since: Duration,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            protocol: AtomicU8::new(UNKNOWN),
            state: Mutex::new(State {
                leaving: false,
                next_id: 0,
                open: HashMap::new(),
                idle_since: Duration::ZERO,
            }),
            changed: Notify::new(),
        }
    }
}

impl Streams {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection's requests are HTTP/2 ones.
    pub(crate) fn is_http2(&self) -> bool {
        self.protocol.load(Ordering::Relaxed) == HTTP2
    }

    /// Notes a request of `version`; true if it is an HTTP/2 one.
    fn saw(&self, version: Version) -> bool {
        match self.protocol.load(Ordering::Relaxed) {
            HTTP1 => return false,
            HTTP2 => return true,
            _ => {}
        }
        let http2 = version == Version::HTTP_2;
        let _state = self.state();
        if self.protocol.load(Ordering::Relaxed) == UNKNOWN {
            self.protocol
                .store(if http2 { HTTP2 } else { HTTP1 }, Ordering::Relaxed);
            if !http2 {
                self.changed.notify_one();
            }
        }
        http2
    }

    /// Counts a request as open until the returned guard is dropped.
    fn open(self: &Arc<Self>) -> OpenStream {
        let watch = Arc::new(BodyWatch {
            epoch: self.epoch,
            pending_since: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        });
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.open.insert(id, Arc::clone(&watch));
        OpenStream {
            streams: Arc::clone(self),
            id,
            watch,
        }
    }

    /// Notes that the server is leaving.
    fn leave(&self) {
        let mut state = self.state();
        if !state.leaving {
            state.leaving = true;
            self.changed.notify_one();
        }
    }

    /// Resolves with what the connection's task should do (see the module
    /// documentation); never for an HTTP/1.1 connection. While
    /// `draining` (the connection is already ending gracefully), only
    /// with [`Verdict::Stalled`].
    pub(crate) async fn verdict(&self, idle: Duration, send: Duration, draining: bool) -> Verdict {
        // A body that begins to wait is not told here: while requests are
        // open, look at least this often.
        let every = (send / 4).max(Duration::from_millis(10));
        loop {
            let notified = self.changed.notified();
            let now = self.epoch.elapsed();
            let wake_at = {
                if self.protocol.load(Ordering::Relaxed) == HTTP1 {
                    return std::future::pending().await;
                }
                let state = self.state();
                if state.leaving && !draining {
                    return Verdict::Leaving;
                }
                if state.open.values().any(|w| w.stalled_for(now) >= send) {
                    return Verdict::Stalled;
                }
                if state.open.is_empty() {
                    if draining {
                        None
                    } else if now >= state.idle_since + idle {
                        return Verdict::Idle;
                    } else {
                        Some(state.idle_since + idle)
                    }
                } else {
                    Some(now + every)
                }
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.epoch + at) => {}
                        () = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// An open request: counted among its connection's until dropped (with
/// its answer's body, or with the request if it never got one).
#[derive(Debug)]
struct OpenStream {
    streams: Arc<Streams>,
    id: u64,
    watch: Arc<BodyWatch>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut state = self.streams.state();
        state.open.remove(&self.id);
        if state.open.is_empty() {
            state.idle_since = self.streams.epoch.elapsed();
        }
    }
}

/// Whether an answer's body has bytes its client's flow control does not
/// take. Also the waker its body is polled with: the body waking (it has
/// something to give) while hyper does not poll it means it waits for
/// flow control.
#[derive(Debug)]
struct BodyWatch {
    epoch: Instant,
    /// Since when (µs after `epoch`, plus one) the body has had something
    /// to give without being asked for it; 0 while it has not.
    pending_since: AtomicU64,
    /// hyper's waker, woken in turn.
    waker: AtomicWaker,
}

impl BodyWatch {
    /// Notes that the body has something to give, if not noted yet.
    fn has_bytes(&self) {
        if self.pending_since.load(Ordering::Relaxed) == 0 {
            let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
            self.pending_since.store(now + 1, Ordering::Relaxed);
        }
    }

    /// How long, at `now`, the body has had bytes without being asked.
    fn stalled_for(&self, now: Duration) -> Duration {
        match self.pending_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => now.saturating_sub(Duration::from_micros(since - 1)),
        }
    }
}

impl Wake for BodyWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.has_bytes();
        self.waker.wake();
    }
}

/// Most bytes of an answer's body handed to HTTP/2 at once. hyper asks
/// for the next part only once the stream's flow control has room, so an
/// answer whose client takes nothing is noticed while most of it is still
/// unsent (a body given whole would be done, and unwatched, at once), and
/// what waits in HTTP/2's buffers stays small.
pub(crate) const FRAME_BYTES: usize = 16 * 1024;

/// An answer's body on an HTTP/2 connection, watched (see [`BodyWatch`])
/// and handed on in parts of at most [`FRAME_BYTES`].
///
/// It ends only when hyper asks for more after its last part: hyper asks
/// only once the stream's flow control has room past what it holds, so
/// until every byte can go the answer is open and watched (one that ended
/// with its last part could leave that part waiting in HTTP/2's buffer for
/// ever, unwatched).
struct TrackedBody {
    inner: Body,
    /// What is left of the last data frame `inner` gave.
    rest: Bytes,
    /// Whether a part was given.
    given: bool,
    /// Whether hyper asked after the last part (the answer has ended).
    done: bool,
    open: OpenStream,
    /// `open.watch` as a waker, made once.
    waker: Waker,
}

impl TrackedBody {
    /// The next part of `data`, the rest kept for the next poll.
    fn part(&mut self, mut data: Bytes) -> Frame<Bytes> {
        if data.len() > FRAME_BYTES {
            self.rest = data.split_off(FRAME_BYTES);
        }
        self.given = true;
        Frame::data(data)
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        this.open.watch.pending_since.store(0, Ordering::Relaxed);
        this.open.watch.waker.register(cx.waker());
        let poll = if this.rest.is_empty() {
            let mut own = Context::from_waker(&this.waker);
            match Pin::new(&mut this.inner).poll_frame(&mut own) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(this.part(data)))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(None) => {
                    this.done = true;
                    Poll::Ready(None)
                }
                other => other,
            }
        } else {
            let rest = std::mem::take(&mut this.rest);
            Poll::Ready(Some(Ok(this.part(rest))))
        };
        if matches!(poll, Poll::Ready(Some(Ok(_)))) && !this.is_end_stream() {
            // hyper asks again at once, unless flow control holds it.
            this.open.watch.has_bytes();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        // An answer without a byte ends at once.
        self.done || (!self.given && self.rest.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = hyper::body::SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}

/// A hyper service that counts and watches the HTTP/2 requests of one
/// connection for its [`Streams`], and passes HTTP/1.1 ones on untouched.
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    /// The service answering.
    pub inner: S,
    /// The connection's streams.
    pub streams: Arc<Streams>,
    /// Whether the server is leaving.
    pub leaving: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl<S, B> hyper::service::Service<Request<B>> for Tracked<S>
where
    S: hyper::service::Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn call(&self, mut req: Request<B>) -> Self::Future {
        if !self.streams.saw(req.version()) {
            return Either::Left(self.inner.call(req));
        }
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let open = self.streams.open();
        if (self.leaving)() {
            self.streams.leave();
        }
        let answer = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let res = answer.await?;
            if !res.body().is_end_stream() {
                // Bytes to give from the start: a client whose flow control
                // never takes the first of them stalls too.
                open.watch.has_bytes();
            }
            let waker = Waker::from(Arc::clone(&open.watch));
            Ok(res.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    rest: Bytes::new(),
                    given: false,
                    done: false,
                    open,
                    waker,
                })
            }))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const SEND: Duration = Duration::from_secs(45);

    /// Answers `/two` with a body of two frames, `/pending` with one that
    /// never gives any, `/large` with 40,000 bytes in one frame, and
    /// anything else with its `Host` header.
    async fn answer(req: Request<Body>) -> Result<Response, Infallible> {
        let body = match req.uri().path() {
            "/two" => Body::from_stream(futures::stream::iter([
                Ok::<_, Infallible>(Bytes::from_static(b"one")),
                Ok(Bytes::from_static(b"two")),
            ])),
            "/pending" => {
                Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>())
            }
            "/large" => Body::from(vec![b'x'; 40_000]),
            _ => Body::from(
                req.headers()
                    .get(header::HOST)
                    .map(|h| h.as_bytes().to_vec())
                    .unwrap_or_default(),
            ),
        };
        Ok(Response::new(body))
    }

    fn tracked(
        streams: &Arc<Streams>,
        leaving: bool,
    ) -> Tracked<
        impl hyper::service::Service<
            Request<Body>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        >,
    > {
        Tracked {
            inner: hyper::service::service_fn(answer),
            streams: Arc::clone(streams),
            leaving: Arc::new(move || leaving),
        }
    }

    fn h2(path: &str) -> Request<Body> {
        Request::builder()
            .version(Version::HTTP_2)
            .uri(format!("http://example.com:3000{path}"))
            .body(Body::empty())
            .unwrap()
    }

    async fn call(
        service: &impl hyper::service::Service<Request<Body>, Response = Response, Error = Infallible>,
        req: Request<Body>,
    ) -> Body {
        match service.call(req).await {
            Ok(res) => res.into_body(),
            Err(never) => match never {},
        }
    }

    fn poll(body: &mut Body) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let waker = futures::task::noop_waker();
        Pin::new(body).poll_frame(&mut Context::from_waker(&waker))
    }

    /// The verdict if one is due now.
    async fn verdict(streams: &Streams, draining: bool) -> Option<Verdict> {
        tokio::time::timeout(
            Duration::from_millis(1),
            streams.verdict(IDLE, SEND, draining),
        )
        .await
        .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_idle_after_the_header_read_timeout() {
        let streams = Arc::new(Streams::default());
        assert_eq!(verdict(&streams, false).await, None);
        tokio::time::advance(IDLE).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Idle));
        // Already ending: nothing more to say while nothing stalls.
        assert_eq!(verdict(&streams, true).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_is_left_to_hyper() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, true);
        let req = Request::builder()
            .uri("http://example.com/")
            .body(Body::empty())
            .unwrap();
        let body = call(&service, req).await;
        // No Host made up, no leaving verdict, never idle.
        assert!(axum::body::to_bytes(body, 1024).await.unwrap().is_empty());
        assert!(!streams.is_http2());
        tokio::time::advance(IDLE * 10).await;
        assert_eq!(verdict(&streams, false).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_request_keeps_the_connection_and_its_end_starts_the_idle_clock() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, false);
        // A live stream between messages: open, nothing to give.
        let mut live = call(&service, h2("/pending")).await;
        assert!(poll(&mut live).is_pending());
        assert!(streams.is_http2());
        tokio::time::advance(IDLE * 2).await;
        assert_eq!(verdict(&streams, false).await, None);
        // The authority became the Host header.
        let host = axum::body::to_bytes(call(&service, h2("/")).await, 1024)
            .await
            .unwrap();
        assert_eq!(&host[..], b"example.com:3000");
        drop(live);
        tokio::time::advance(IDLE - Duration::from_secs(1)).await;
        assert_eq!(verdict(&streams, false).await, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_asked_for_its_next_frame_stalls_after_the_send_timeout() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, false);
        let mut body = call(&service, h2("/two")).await;
        // Not asked for its first bytes (flow control never opened).
        tokio::time::advance(SEND).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Stalled));
        // One frame given and not asked again: flow control holds the rest.
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert_eq!(verdict(&streams, false).await, None);
        tokio::time::advance(SEND - Duration::from_secs(1)).await;
        assert_eq!(verdict(&streams, false).await, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Stalled));
        // Even while draining.
        assert_eq!(verdict(&streams, true).await, Some(Verdict::Stalled));
        // Asked again (the client gave room): no stall.
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert_eq!(verdict(&streams, false).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_frame_is_handed_on_in_parts_each_watched() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, false);
        let mut body = call(&service, h2("/large")).await;
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = poll(&mut body) {
            sizes.push(frame.into_data().unwrap().len());
            // A part given and not asked after, the last one too (it may
            // wait for flow control): a stall.
            assert!(!body.is_end_stream());
            tokio::time::advance(SEND).await;
            assert_eq!(verdict(&streams, false).await, Some(Verdict::Stalled));
        }
        assert_eq!(sizes, [FRAME_BYTES, FRAME_BYTES, 40_000 - 2 * FRAME_BYTES]);
        // Asked after the last part: ended, and no longer open.
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(verdict(&streams, false).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_woken_but_not_polled_stalls_and_one_with_nothing_to_give_does_not() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, false);
        let mut body = call(&service, h2("/pending")).await;
        // A live stream between messages: nothing to give.
        assert!(poll(&mut body).is_pending());
        tokio::time::advance(SEND * 2).await;
        assert_eq!(verdict(&streams, false).await, None);
        // Woken (it has bytes) and not polled again.
        let watch = Arc::clone(streams.state().open.values().next().unwrap());
        Waker::from(watch).wake_by_ref();
        tokio::time::advance(SEND).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Stalled));
        assert!(poll(&mut body).is_pending());
        assert_eq!(verdict(&streams, false).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_ends_the_connection_once_a_request_comes() {
        let streams = Arc::new(Streams::default());
        let service = tracked(&streams, true);
        assert_eq!(verdict(&streams, false).await, None);
        let _body = call(&service, h2("/")).await;
        assert_eq!(verdict(&streams, false).await, Some(Verdict::Leaving));
        assert_eq!(verdict(&streams, true).await, None);
    }
}
