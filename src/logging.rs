//! Structured logs: human-readable text or one JSON object per line.
//!
//! `RUST_LOG` overrides the configured level. Pingora logs through the `log` crate; those
//! records are bridged into the same subscriber so every line has one format.
//!
//! **No secret in any line, at any level.** Below `info`, other crates print what passes
//! through them: Pingora's debug lines show the upstream request head (`Authorization`, the
//! forwarded access token) and every upstream event (response headers, body bytes); h2,
//! hyper, reqwest and rustls trace frames, connection state and sometimes header blocks;
//! redis traces commands (session records). So every target outside `authgate` is capped at
//! `info`, whatever `RUST_LOG` or `log.level` asks for (a second, global filter after the
//! user's, so no directive can lift it — not even `pingora_proxy::proxy_h1=trace`). At
//! `info` and above those crates print no headers or bodies (Pingora's "Fail to proxy" line
//! with the request summary is suppressed in `proxy::Gateway::suppress_error_log`).
//! authgate's own targets keep every level; they never log a token, a cookie, a `code` or
//! `state`, a client secret or a query string (the access log writes the canonical path).

use tracing::{Level, Metadata};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, EnvFilter};

use crate::config::model::LogFormat;

/// The most verbose level a target outside authgate may log at.
pub const THIRD_PARTY_MAX: Level = Level::INFO;

/// Whether a line from this target at this level may be written at all (before the
/// user's filter): authgate's own at any level, everything else up to [`THIRD_PARTY_MAX`].
/// Records bridged from the `log` crate are judged by their own target.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let ours = target == "authgate" || target.starts_with("authgate::");
    ours || *meta.level() <= THIRD_PARTY_MAX
}

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
    let cap = filter::filter_fn(allowed);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(cap)
            .try_init(),
        LogFormat::Text => builder.finish().with(cap).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(target: &'static str, level: Level) -> bool {
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let m = Metadata::new(
            "test",
            target,
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS)),
            tracing::metadata::Kind::EVENT,
        );
        allowed(&m)
    }

    #[test]
    fn third_party_targets_are_capped_at_info() {
        for t in [
            "pingora_proxy::proxy_h1",
            "pingora_core::protocols::http::v1::client",
            "h2::codec::framed_read",
            "hyper_util::client::legacy::pool",
            "reqwest::connect",
            "rustls::client::hs",
            "redis::aio",
            "log",
            "authgatex",
        ] {
            assert!(!meta(t, Level::DEBUG), "{t} at debug");
            assert!(!meta(t, Level::TRACE), "{t} at trace");
            assert!(meta(t, Level::INFO), "{t} at info");
            assert!(meta(t, Level::ERROR), "{t} at error");
        }
        for t in ["authgate", "authgate::access", "authgate::oidc::refresh"] {
            assert!(meta(t, Level::TRACE), "{t} at trace");
        }
    }
}
