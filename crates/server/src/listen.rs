//! The connection loop: accept TCP connections, serve HTTP/1.1 (keep-alive) on them with
//! hyper, and bound what each may hold, so that clients that trickle their headers or keep
//! connections open doing nothing cannot use up the process's sockets.
//!
//! ```text
//! listener ──accept──> slot (max_connections at once) ──> task: TCP_NODELAY, hyper http1 ──> router
//!   at the cap: one more is accepted and waits for a slot (the rest wait in the kernel's
//!   backlog), and every connection with nothing in progress is closed to make room
//!   watchdog: a request's headers not in within header_read_timeout ──> closed
//!             nothing received for idle_timeout after a response ──> closed
//! stop ──> no more accepts; idle connections close, requests in progress finish
//! ```
//!
//! The clocks, per connection ([`Limits`]):
//!
//! - **Headers.** The first request's headers must be complete `header_read_timeout` after
//!   the connection was accepted; a later request's, `header_read_timeout` after its first
//!   byte arrived.
//! - **Idle.** After a response has been written to the end, the next request's first byte
//!   must come within `idle_timeout`.
//! - Neither runs while a request is in progress: from its headers until its response's last
//!   byte (a long model call, an SSE stream that stays open, a slow upload: the router's
//!   `request_timeout` bounds those).
//! - **Stalled reader.** A response the client stops reading (its socket accepts no byte)
//!   for `idle_timeout` ends the connection, so a client that asks and never reads cannot
//!   hold a slot for ever; a slow reader that makes progress is never cut.
//!
//! hyper's own `header_read_timeout` (hyper 1.12, `proto/h1/conn.rs`) starts whenever the
//! connection waits for a request head: when the connection starts, and again as soon as a
//! response is written (`State::idle` asks for a read so the timer is armed). So it bounds
//! the idle time between keep-alive requests and the time to send headers with one value, and
//! is not armed while a request is in progress. To have the two limits above, the watchdog
//! here keeps them, and hyper's timer is set to their sum, as a backstop that only fires if
//! the watchdog did not.
//!
//! Graceful stop is hyper-util's [`GracefulShutdown`]: hyper closes idle connections at once
//! and the others after their response; a connection in the middle of sending its headers is
//! closed by its header clock.
//!
//! Malformed requests are refused by hyper before the router sees them: a header value with
//! a control character other than tab (NUL, a bare CR, DEL...), a header name with a space or
//! a line folded onto the next (obs-fold) is a `400 Bad Request`; headers larger than hyper's
//! buffer (about 400 KB) a `431`. The connection is closed after either.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What a connection may hold (`[server]` `header_read_timeout_secs`, `idle_timeout_secs`,
/// `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// How often, while a connection waits for a slot, the connections with nothing in progress
/// are asked again to make room.
const PRESSURE_EVERY: Duration = Duration::from_millis(250);

/// Serve `app` on `listener` until `stop` resolves, then stop accepting and wait for every
/// connection to finish (see the module's doc).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let pressure = Arc::new(Notify::new());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_read_timeout + limits.idle_timeout);
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tokio::select! {
                        () = &mut stop => break,
                        () = accept_error(e) => continue,
                    }
                }
            },
        };
        let permit = tokio::select! {
            biased;
            () = &mut stop => break,
            permit = slot(&slots, &pressure) => permit,
        };
        // Without TCP_NODELAY, a response written in two segments waits for the client's
        // delayed ACK (40-200 ms) before its second goes out: 1-2% of gateway requests paid a
        // whole extra provider round for it under load.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        tokio::spawn(connection(
            tcp,
            app.clone(),
            builder.clone(),
            limits,
            pressure.clone(),
            graceful.watcher(),
            permit,
        ));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A free slot; at the cap, connections with nothing in progress are asked to close until
/// one frees.
async fn slot(slots: &Arc<Semaphore>, pressure: &Notify) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return permit;
        }
        pressure.notify_waiters();
        if let Ok(Ok(permit)) =
            tokio::time::timeout(PRESSURE_EVERY, slots.clone().acquire_owned()).await
        {
            return permit;
        }
    }
}

/// A failed accept: a connection that went away before it was accepted is nothing; anything
/// else (most often the process's open-file limit, EMFILE) waits a second, as hyper and
/// axum do, so that the loop does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection (retrying in 1 s)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection: hyper serves it while the watchdog keeps its clocks.
async fn connection(
    tcp: TcpStream,
    app: Router,
    builder: http1::Builder,
    limits: Limits,
    pressure: Arc<Notify>,
    watcher: Watcher,
    permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        io: tcp,
        activity: activity.clone(),
        stall_limit: limits.idle_timeout,
        stalled: None,
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let mut app = app.clone();
            async move {
                let response = tower_service::Service::call(&mut app, request).await?;
                Ok::<_, Infallible>(response.map(|body| Guarded { body, _busy: busy }))
            }
        })
    };
    let conn = watcher.watch(builder.serve_connection(io, service));
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            biased;
            served = &mut conn => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended");
                }
                break;
            }
            () = activity.changed.notified() => {}
            () = pressure.notified() => {
                if activity.idle() {
                    tracing::debug!("closing an idle connection: [server] max_connections reached");
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(why) = activity.expired(&limits, Instant::now()) {
                    tracing::debug!("closing a connection: {why}");
                    break;
                }
            }
        }
    }
    drop(permit);
}

/// Where a connection stands, for its clocks.
#[derive(Debug)]
struct Activity {
    state: Mutex<State>,
    /// The deadline moved: a response ended, or a next request's first byte came.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// Requests whose response has not been written to the end.
    in_flight: usize,
    /// Requests begun on this connection.
    requests: u64,
    /// When the connection began waiting for a request (accepted, or the last response
    /// ended).
    waiting_since: Instant,
    /// When the first byte came since then.
    first_byte: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                in_flight: 0,
                requests: 0,
                waiting_since: Instant::now(),
                first_byte: None,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in
    /// progress.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.state();
        if s.in_flight > 0 {
            return None;
        }
        Some(match (s.requests, s.first_byte) {
            (0, _) => s.waiting_since + limits.header_read_timeout,
            (_, Some(first)) => first + limits.header_read_timeout,
            (_, None) => s.waiting_since + limits.idle_timeout,
        })
    }

    /// Why the connection is to be closed at `now`, if it is.
    fn expired(&self, limits: &Limits, now: Instant) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if now < deadline {
            return None;
        }
        let s = self.state();
        Some(if s.requests > 0 && s.first_byte.is_none() {
            "idle longer than [server] idle_timeout_secs"
        } else {
            "headers not received within [server] header_read_timeout_secs"
        })
    }

    /// Nothing in progress and nothing of a next request received.
    fn idle(&self) -> bool {
        let s = self.state();
        s.in_flight == 0 && s.first_byte.is_none()
    }

    /// Bytes came in: the first of a next request starts its header clock.
    fn received(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && s.first_byte.is_none() {
            s.first_byte = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }
}

/// A request in progress, from its headers until its response is dropped (written to the
/// end, or the connection closed).
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut s = activity.state();
        s.in_flight += 1;
        s.requests += 1;
        s.first_byte = None;
        drop(s);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.waiting_since = Instant::now();
            s.first_byte = None;
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in progress until hyper drops it.
#[derive(Debug)]
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes of a next request arrive, and ending a write that makes no
/// progress for `stall_limit`.
#[derive(Debug)]
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
    stall_limit: Duration,
    /// Set while writes are pending: when it fires, the client has read nothing for
    /// `stall_limit`.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tracked {
    /// `polled`, unless writes have been pending for `stall_limit`: then an error that ends
    /// the connection.
    fn stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !polled.is_pending() {
            self.stalled = None;
            return polled;
        }
        let limit = self.stall_limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            tracing::debug!("closing a connection: the client read nothing of its response");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its response for [server] idle_timeout_secs",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stall(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.stall(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
