//! The `log` import: the connector's diagnostics go to tracing, capped per
//! call and scrubbed of secrets.

use crate::bindings::tether::connector::log::{self, Level};
use crate::state::{charge, HostState};

impl log::Host for HostState {
    async fn emit(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        charge(&mut self.usage.log_lines, self.limits.log_lines_per_call, "log-lines", "log lines")?;
        // Redacted, then escaped: one guest line is one host line, and it can
        // neither drive the terminal nor pass for a line of the host's.
        let mut message = crate::terminal::escape(&self.secrets.redact(&message)).into_owned();
        if message.len() > self.limits.log_bytes_per_line {
            let mut end = self.limits.log_bytes_per_line;
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
