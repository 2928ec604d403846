//! The API's HTTP server: the router, served by hyper with the bounds
//! `axum::serve` does not set. Without them anyone who could connect (no
//! token needed: it is read with the request) held a file descriptor per
//! connection that never sent a request, until the process had none left
//! for its syncs.
//!
//! At most `MAX_CONNECTIONS` are open. When one more comes, the oldest
//! connection with no request in progress (one that sent nothing yet, or
//! kept alive between requests) or whose request's body is still coming
//! in is closed to make room: idle or slow sockets cannot hold the API,
//! and the health check behind them, shut; a request being answered is
//! never cut.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};

/// Connections open at once (see the module's note). Far below the usual
/// descriptor limit (1024), which the syncs need too.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client has to send a request's headers, and how long an idle
/// kept-alive connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `quit`, then lets the requests in
/// progress finish (the caller bounds how long).
pub async fn serve(listener: TcpListener, app: Router, mut quit: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = OpenConnections::default();
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = stopped(&mut quit) => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Full: an idle connection makes room; with none, every
                // slot is answering a request, one of which will end.
                open.close_oldest_idle();
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    _ = stopped(&mut quit) => break,
                };
                let Ok(slot) = slot else { break };
                slot
            }
        };
        let state = open.add();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let service = CountingService { inner: TowerToHyperService::new(app.clone()), state: state.clone() };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                // Dropped: hyper closes the socket.
                _ = state.close.notified() => {}
            }
            open.remove(&state);
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

/// One connection as the server tracks it.
#[derive(Default)]
struct ConnectionState {
    /// Requests received and not yet answered to their last byte.
    in_progress: AtomicUsize,
    /// Requests whose body is still coming in: not being served yet, so
    /// the connection may be closed to make room as an idle one is (a
    /// body sent a byte at a time otherwise held its slot until the
    /// body's deadline, and enough of them the health check).
    receiving: AtomicUsize,
    /// Told to close (see `OpenConnections::close_oldest_idle`).
    close: Notify,
}

/// The open connections, oldest first.
#[derive(Clone, Default)]
struct OpenConnections(Arc<Mutex<VecDeque<Arc<ConnectionState>>>>);

impl OpenConnections {
    fn add(&self) -> Arc<ConnectionState> {
        let state = Arc::new(ConnectionState::default());
        self.lock().push_back(state.clone());
        state
    }

    fn remove(&self, state: &Arc<ConnectionState>) {
        self.lock().retain(|open| !Arc::ptr_eq(open, state));
    }

    /// Closes the oldest connection with no request in progress, or only
    /// one still sending its body, if any.
    fn close_oldest_idle(&self) {
        let mut open = self.lock();
        let idle = |c: &Arc<ConnectionState>| c.in_progress.load(Ordering::SeqCst) == 0 || c.receiving.load(Ordering::SeqCst) > 0;
        if let Some(at) = open.iter().position(idle) {
            if let Some(idle) = open.remove(at) {
                // A permit, should its task not be waiting yet.
                idle.close.notify_one();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<ConnectionState>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The router, counting a connection's requests in progress until their
/// answer's last byte is sent.
#[derive(Clone)]
struct CountingService {
    inner: TowerToHyperService<Router>,
    state: Arc<ConnectionState>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for CountingService {
    type Response = hyper::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let guard = InProgress::enter(&self.state);
        let answer = self.inner.call(request.map(|body| ReceivingBody::new(body, &self.state)));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Body::new(CountedBody { inner: body, _in_progress: guard })))
        })
    }
}

/// A request in progress, until dropped.
struct InProgress(Arc<ConnectionState>);

impl InProgress {
    fn enter(state: &Arc<ConnectionState>) -> Self {
        state.in_progress.fetch_add(1, Ordering::SeqCst);
        InProgress(state.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request's body, counted as still coming in (see `ConnectionState`)
/// until its last frame is read or it is dropped.
struct ReceivingBody {
    inner: hyper::body::Incoming,
    receiving: Option<Receiving>,
}

impl ReceivingBody {
    fn new(inner: hyper::body::Incoming, state: &Arc<ConnectionState>) -> Self {
        let receiving = (!hyper::body::Body::is_end_stream(&inner)).then(|| Receiving::enter(state));
        ReceivingBody { inner, receiving }
    }
}

impl hyper::body::Body for ReceivingBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.inner.is_end_stream() {
            self.receiving = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request whose body is still coming in, until dropped.
struct Receiving(Arc<ConnectionState>);

impl Receiving {
    fn enter(state: &Arc<ConnectionState>) -> Self {
        state.receiving.fetch_add(1, Ordering::SeqCst);
        Receiving(state.clone())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.receiving.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body, holding its request in progress until sent or dropped.
struct CountedBody {
    inner: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn stopped(quit: &mut watch::Receiver<bool>) {
    let _ = quit.wait_for(|q| *q).await;
}
