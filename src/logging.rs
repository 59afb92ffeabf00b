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
//!
//! **Other crates' lines are rate-limited** ([`Flood`]): clients can make Pingora log an
//! ERROR line each (a connection reset while its request head is read, a failed TLS
//! handshake), so 50 resets would be 50 lines. Per (target, message template: the message's
//! start with its digits masked) the first line of a [`crate::ratelimit_log::WINDOW`] is
//! written, the rest of that window are counted, and at the end of the window one line from
//! `authgate::logging` says how many were left out (`suppressed`, `source`, the template).
//! authgate's own lines are never dropped here (they are throttled where they are written,
//! [`crate::ratelimit_log`]).

use std::collections::HashMap;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, fmt, EnvFilter};

use crate::config::model::LogFormat;

/// The most verbose level a target outside authgate may log at.
pub(crate) const THIRD_PARTY_MAX: Level = Level::INFO;

/// Whether a line from this target at this level may be written at all (before the
/// user's filter): authgate's own at any level, everything else up to [`THIRD_PARTY_MAX`].
/// Records bridged from the `log` crate are judged by their own target.
pub(crate) fn allowed(meta: &Metadata<'_>) -> bool {
    is_ours(meta.target()) || *meta.level() <= THIRD_PARTY_MAX
}

fn is_ours(target: &str) -> bool {
    target == "authgate" || target.starts_with("authgate::")
}

/// Characters of a message that make its template.
const TEMPLATE_CHARS: usize = 60;
/// Templates tracked in one window at most; further ones share one count.
const MAX_TEMPLATES: usize = 64;

/// The template of a message: its first [`TEMPLATE_CHARS`] characters, digits masked (ports,
/// addresses, counts, error numbers vary per occurrence).
pub(crate) fn template(message: &str) -> String {
    message
        .chars()
        .take(TEMPLATE_CHARS)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

/// Lines of one (target, template) in the current window.
struct Seen {
    target: String,
    template: String,
    suppressed: u64,
}

/// The rate limit of other crates' lines (see the module doc), a [`Layer`] that vetoes
/// repeats. [`Flood::flush`] (every window, from a thread of its own) writes the counts.
#[derive(Default)]
pub(crate) struct Flood {
    seen: Mutex<HashMap<(String, String), Seen>>,
}

/// The `message` field and, for lines bridged from the `log` crate (whose event target is
/// `log`), their real target (`log.target`).
#[derive(Default)]
struct MessageOf {
    message: String,
    log_target: Option<String>,
}

impl Visit for MessageOf {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

impl Flood {
    /// Whether a line of `target` with `message` is written now (else it is counted).
    pub(crate) fn admit(&self, target: &str, message: &str) -> bool {
        if is_ours(target) {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (target.to_string(), template(message));
        if !seen.contains_key(&key) && seen.len() >= MAX_TEMPLATES {
            key = ("(any)".to_string(), "(other messages)".to_string());
        }
        match seen.get_mut(&key) {
            Some(s) => {
                s.suppressed += 1;
                false
            }
            None => {
                seen.insert(
                    key.clone(),
                    Seen {
                        target: key.0,
                        template: key.1,
                        suppressed: 0,
                    },
                );
                true
            }
        }
    }

    /// End the window: one line per template with lines left out, then everything is
    /// forgotten (the next line of each template is written at once).
    pub(crate) fn flush(&self) -> Vec<(String, String, u64)> {
        let drained: Vec<Seen> = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.drain().map(|(_, s)| s).collect()
        };
        let mut out = Vec::new();
        for s in drained.into_iter().filter(|s| s.suppressed > 0) {
            tracing::warn!(
                target: "authgate::logging",
                source = %s.target,
                suppressed = s.suppressed,
                "{} more lines like this from {} in the last {} s (rate-limited): {}",
                s.suppressed,
                s.target,
                crate::ratelimit_log::WINDOW.as_secs(),
                s.template
            );
            out.push((s.target, s.template, s.suppressed));
        }
        out
    }
}

/// The layer over a shared [`Flood`].
struct FloodLayer(&'static Flood);

impl<S: Subscriber> Layer<S> for FloodLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let target = event.metadata().target();
        if is_ours(target) {
            return true;
        }
        let mut m = MessageOf::default();
        event.record(&mut m);
        self.0
            .admit(m.log_target.as_deref().unwrap_or(target), &m.message)
    }
}

static FLOOD: std::sync::OnceLock<Flood> = std::sync::OnceLock::new();

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
    let flood = FLOOD.get_or_init(Flood::default);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(cap)
            .with(FloodLayer(flood))
            .try_init(),
        LogFormat::Text => builder
            .finish()
            .with(cap)
            .with(FloodLayer(flood))
            .try_init(),
    };
    if installed.is_ok() {
        let _ = std::thread::Builder::new()
            .name("authgate-logflood".into())
            .spawn(move || loop {
                std::thread::sleep(crate::ratelimit_log::WINDOW);
                flood.flush();
            });
    }
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
    fn repeated_third_party_lines_are_counted_not_written() {
        let f = Flood::default();
        let reset = |port: u16| {
            format!("Fail to proxy: Downstream ReadError context: Connection reset by peer (os error 104) peer 127.0.0.1:{port}")
        };
        assert!(f.admit("pingora_proxy", &reset(40000)));
        for port in 40001..40050 {
            assert!(!f.admit("pingora_proxy", &reset(port)), "{port}");
        }
        // Another template, another target, and authgate's own lines: written.
        assert!(f.admit("pingora_proxy", "TLS handshake failed"));
        assert!(f.admit("pingora_core::listeners", &reset(1)));
        for _ in 0..5 {
            assert!(f.admit("authgate::access", "GET / 200"));
        }
        let counts = f.flush();
        assert_eq!(counts.len(), 1, "{counts:?}");
        assert_eq!(counts[0].0, "pingora_proxy");
        assert_eq!(counts[0].2, 49);
        // A new window: the first is written again.
        assert!(f.admit("pingora_proxy", &reset(1)));
        // Many templates: bounded.
        for i in 0..1000 {
            // Distinct templates (digits would be masked): i in binary, as letters.
            let m = format!("{i:b}").replace('0', "a").replace('1', "b");
            f.admit("x", &m);
        }
        assert!(f.seen.lock().unwrap().len() <= MAX_TEMPLATES + 1);
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
