//! The API's HTTP server: the router, served by hyper with the bounds
//! `axum::serve` does not set. Without them anyone who could connect (no
//! token needed: it is read with the request) held a file descriptor per
//! connection that never sent a request, until the process had none left
//! for its syncs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections served at once; more wait in the listen queue. Far below
/// the usual descriptor limit (1024), which the syncs need too.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client has to send a request's headers, and how long an idle
/// kept-alive connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `quit`, then lets the requests in
/// progress finish (the caller bounds how long).
pub async fn serve(listener: TcpListener, app: Router, mut quit: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = stopped(&mut quit) => break,
        };
        let Ok(slot) = slot else { break };
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
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

async fn stopped(quit: &mut watch::Receiver<bool>) {
    let _ = quit.wait_for(|q| *q).await;
}
