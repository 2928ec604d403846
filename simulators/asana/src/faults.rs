//! Injected server faults: 500 and 503 answers and dropped connections, at
//! a seeded random rate or forced for the next requests, so that clients'
//! handling of transient failures gets exercised. A faulted request never
//! reaches a handler: a write it carried is not applied.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ApiError, ScimError};
use crate::lock;

/// What an injected fault does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer with this 5xx status and an error body in the API's shape.
    Status(StatusCode),
    /// Start a 200 answer and drop the connection before its body.
    Reset,
}

pub(crate) struct Faults {
    error_rate: f64,
    reset_rate: f64,
    rng: Mutex<ChaCha8Rng>,
    /// The next this many requests get a 503.
    forced: AtomicU32,
    /// The next this many writes (anything but GET and HEAD) get a 503.
    forced_writes: AtomicU32,
}

/// NaN or out-of-range rates would make the rng panic.
fn rate(rate: f64) -> f64 {
    if rate.is_finite() {
        rate.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl Faults {
    pub fn new(error_rate: f64, reset_rate: f64, seed: u64) -> Self {
        Faults {
            error_rate: rate(error_rate),
            reset_rate: rate(reset_rate),
            // Its own stream, so that turning faults on leaves the sequence
            // of injected 429s as it was.
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5e7_fa17)),
            forced: AtomicU32::new(0),
            forced_writes: AtomicU32::new(0),
        }
    }

    pub fn force_next(&self, n: u32) {
        self.forced.store(n, Ordering::SeqCst);
    }

    pub fn force_next_writes(&self, n: u32) {
        self.forced_writes.store(n, Ordering::SeqCst);
    }

    /// The fault for this request, if any.
    pub fn pick(&self, is_read: bool) -> Option<Fault> {
        let take = |counter: &AtomicU32| counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if take(&self.forced) || (!is_read && take(&self.forced_writes)) {
            return Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE));
        }
        if self.error_rate == 0.0 && self.reset_rate == 0.0 {
            return None;
        }
        let mut rng = lock(&self.rng);
        let roll: f64 = rng.random();
        if roll < self.error_rate {
            let status = if rng.random_bool(0.5) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::SERVICE_UNAVAILABLE };
            Some(Fault::Status(status))
        } else if roll < self.error_rate + self.reset_rate {
            Some(Fault::Reset)
        } else {
            None
        }
    }
}

/// The answer a fault gives.
pub(crate) fn respond(fault: Fault, scim: bool) -> Response {
    match fault {
        Fault::Status(status) => {
            let message = if status == StatusCode::SERVICE_UNAVAILABLE { "Asana is temporarily unavailable. Please try again later." } else { "Server Error" };
            if scim {
                ScimError::new(status, None, message).into_response()
            } else {
                ApiError::new(status, message).into_response()
            }
        }
        Fault::Reset => {
            // Hyper aborts the connection when the body fails: the client
            // gets no complete answer.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "asana-sim: injected connection reset"))
            });
            Response::new(Body::from_stream(broken))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_seeded_and_forced_faults_come_first() {
        let run = || {
            let faults = Faults::new(0.2, 0.1, 7);
            (0..500).map(|_| faults.pick(true)).collect::<Vec<_>>()
        };
        let picks = run();
        assert_eq!(picks, run());
        let errors = picks.iter().filter(|f| matches!(f, Some(Fault::Status(_)))).count();
        let resets = picks.iter().filter(|f| **f == Some(Fault::Reset)).count();
        assert!((60..=140).contains(&errors), "{errors}");
        assert!((25..=75).contains(&resets), "{resets}");

        let faults = Faults::new(0.0, 0.0, 1);
        faults.force_next_writes(1);
        assert_eq!(faults.pick(true), None, "reads pass");
        assert_eq!(faults.pick(false), Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE)));
        assert_eq!(faults.pick(false), None);
        faults.force_next(2);
        assert!(faults.pick(true).is_some() && faults.pick(false).is_some());
        assert_eq!(faults.pick(true), None);
    }
}
