//! Structured logs: human-readable text or one JSON object per line.
//!
//! `RUST_LOG` overrides the configured level. Pingora logs through the `log` crate; those
//! records are bridged into the same subscriber so every line has one format.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::model::LogFormat;

/// Install the global subscriber. Safe to call twice (the second call is ignored).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour only for people at a terminal: log files and collectors get plain text.
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
