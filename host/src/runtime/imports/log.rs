//! The `log` import: the connector's diagnostics go to tracing, capped per
//! call and scrubbed of secrets.

use std::sync::Arc;

use wasmtime::component::HasData;

use crate::runtime::bindings::tether::connector::log::{self, Level};
use crate::runtime::imports::config::Secrets;
use crate::runtime::limits::{CallBudget, Limits};

/// What the `log` import needs: whose lines these are, what to redact from
/// them, how long one may be, and the current call's line budget.
pub struct LogCtx {
    /// Names the connector in logs.
    pub connector_label: String,
    pub secrets: Arc<Secrets>,
    pub max_bytes_per_line: usize,
    /// Lines the current call has logged, against `log-lines`.
    pub lines: CallBudget,
}

impl LogCtx {
    pub fn new(connector_label: String, secrets: Arc<Secrets>, limits: &Limits) -> Self {
        LogCtx {
            connector_label,
            secrets,
            max_bytes_per_line: limits.log_bytes_per_line,
            lines: CallBudget::new(limits.log_lines_per_call, "log-lines", "log lines"),
        }
    }

    /// Before every call into the guest: a fresh line budget.
    pub fn begin_call(&mut self) {
        self.lines.reset();
    }
}

/// Links `log` with a projection onto a [`LogCtx`].
pub struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogCtx;
}

impl log::Host for LogCtx {
    async fn emit(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.lines.charge()?;
        // Redacted, then escaped: one guest line is one host line, and it can
        // neither drive the terminal nor pass for a line of the host's.
        // Cut before anything else (a 30 MiB line cost 380 MB to escape),
        // leaving room for a secret that starts before the cap to be
        // redacted whole.
        let raw = crate::terminal::clip(&message, self.max_bytes_per_line + self.secrets.longest());
        let mut message = crate::terminal::escape(&self.secrets.redact(&raw)).into_owned();
        if message.len() > self.max_bytes_per_line {
            let mut end = self.max_bytes_per_line;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let connector = &self.connector_label;
        match level {
            Level::Trace => tracing::trace!(target: "connector", connector, "{message}"),
            Level::Debug => tracing::debug!(target: "connector", connector, "{message}"),
            Level::Info => tracing::info!(target: "connector", connector, "{message}"),
            Level::Warn => tracing::warn!(target: "connector", connector, "{message}"),
            Level::Error => tracing::error!(target: "connector", connector, "{message}"),
        }
        Ok(())
    }
}
