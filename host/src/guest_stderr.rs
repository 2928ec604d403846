//! The guest's stderr, kept (up to a cap) so that a crash can say why: a
//! Rust guest's panic message goes there. Past the cap, writes are dropped
//! rather than refused, so a chatty guest neither traps nor grows the host.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes of a guest's stderr kept per call.
pub const STDERR_CAP: usize = 4096;

#[derive(Clone, Default)]
pub struct GuestStderr {
    captured: Arc<Mutex<Vec<u8>>>,
}

impl GuestStderr {
    /// What the guest wrote since the last `clear`, as text.
    pub fn text(&self) -> String {
        self.captured.lock().map(|c| String::from_utf8_lossy(&c).trim().to_string()).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut captured) = self.captured.lock() {
            captured.clear();
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(CappedSink { captured: self.captured.clone() })
    }
}

struct CappedSink {
    captured: Arc<Mutex<Vec<u8>>>,
}

impl AsyncWrite for CappedSink {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Ok(mut captured) = self.captured.lock() {
            let room = STDERR_CAP.saturating_sub(captured.len());
            captured.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
