//! Field readers shared by the section validators: each turns one `Spanned` value into its
//! type or reports the problem with the value's position and key, returning a fallback so
//! validation goes on and every error is reported in one pass.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::{Reporter, OFFLINE_PLACEHOLDER};
use super::secret::{self, Secret};

pub(super) fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

pub(super) fn duration(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d <= super::defaults::MAX_DURATION => d,
            Ok(_) => {
                rep.error(key, span(s), "longer than 100 years");
                default
            }
            Err(e) => {
                rep.error(
                    key,
                    span(s),
                    format!(
                        "invalid duration {:?} ({e}); write e.g. \"5s\" or \"250ms\"",
                        s.get_ref()
                    ),
                );
                default
            }
        },
    }
}

/// A duration within `range`, or `default` when unset; out of range is reported with its
/// line.
pub(super) fn duration_within(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<String>>,
    range: std::ops::RangeInclusive<Duration>,
    default: Duration,
) -> Duration {
    let d = duration(rep, key, v, default);
    match v {
        Some(s) if !range.contains(&d) => {
            rep.error(
                key,
                span(s),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end())
                ),
            );
            default
        }
        _ => d,
    }
}

/// An integer within `range`, or `default` when unset; out of range is reported with its line.
pub(super) fn bounded(
    rep: &mut Reporter,
    key: &str,
    v: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<usize>,
    default: usize,
) -> usize {
    match v {
        None => default,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(x) if range.contains(&x) => x,
            _ => {
                rep.error(
                    key,
                    span(n),
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                default
            }
        },
    }
}

pub(super) fn socket_addr(
    rep: &mut Reporter,
    key: &str,
    v: &Spanned<String>,
) -> Option<SocketAddr> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            rep.error(
                key,
                span(v),
                format!("invalid address {:?}; write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"", v.get_ref()),
            );
            None
        }
    }
}

/// A file that must exist at start (a TLS certificate or key: secret volumes, so absent is
/// fine offline, like every other secret).
pub(super) fn readable_file(rep: &mut Reporter, key: &str, v: &Spanned<String>) -> Option<String> {
    match std::fs::metadata(v.get_ref()) {
        Err(e) if rep.offline && e.kind() == std::io::ErrorKind::NotFound => {
            Some(v.get_ref().clone())
        }
        Ok(m) if m.is_file() => Some(v.get_ref().clone()),
        Ok(_) => {
            rep.error(key, span(v), format!("{} is not a file", v.get_ref()));
            None
        }
        Err(e) => {
            rep.error(key, span(v), format!("cannot read {}: {e}", v.get_ref()));
            None
        }
    }
}

/// A secret from `key` (with `${ENV}` expansion) or from the file named by `key_file`.
pub(super) fn secret_value(
    rep: &mut Reporter,
    key: &str,
    inline: &Option<Spanned<String>>,
    file_key: &str,
    file: &Option<Spanned<String>>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(f)) => {
            rep.error(
                file_key,
                span(f),
                format!("set either {key} or {file_key}, not both"),
            );
            None
        }
        (Some(v), None) => match secret::expand_env(v.get_ref(), |k| rep.env_var(k)) {
            Ok(s) => Some(Secret::new(s)),
            Err(e) => {
                rep.error(key, span(v), e);
                None
            }
        },
        (None, Some(f)) => match secret::read_file(f.get_ref()) {
            Ok(s) => Some(Secret::new(s)),
            // Offline (CI): the secret volume is not mounted there.
            Err(_) if rep.offline && !std::path::Path::new(f.get_ref()).exists() => {
                Some(Secret::new(OFFLINE_PLACEHOLDER))
            }
            Err(e) => {
                rep.error(file_key, span(f), e);
                None
            }
        },
        (None, None) => None,
    }
}

pub(super) fn header_name(
    rep: &mut Reporter,
    key: &str,
    v: &Spanned<String>,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(v.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            rep.error(
                key,
                span(v),
                format!("{:?} is not a valid header name", v.get_ref()),
            );
            None
        }
    }
}

/// Parse PEM certificates and check each is well-formed DER X.509, so nothing can fail on
/// the request path later.
pub(super) fn load_ca(rep: &mut Reporter, key: &str, v: &Spanned<String>) -> Option<Vec<Vec<u8>>> {
    let pem = match super::secret::read_bounded(v.get_ref().as_ref()) {
        Ok(p) => p,
        Err(e) => {
            rep.error(key, span(v), format!("cannot read {}: {e}", v.get_ref()));
            return None;
        }
    };
    let mut certs = Vec::new();
    for item in rustls_pemfile::certs(&mut pem.as_slice()) {
        match item {
            Ok(der) if x509_parser::parse_x509_certificate(&der).is_ok() => {
                certs.push(der.to_vec())
            }
            _ => {
                rep.error(
                    key,
                    span(v),
                    format!("{} holds an invalid certificate", v.get_ref()),
                );
                return None;
            }
        }
    }
    if certs.is_empty() {
        rep.error(
            key,
            span(v),
            format!("{} holds no PEM certificate", v.get_ref()),
        );
        return None;
    }
    Some(certs)
}

/// What is wrong with a regex, on one line: the regex crate's message spans several (the
/// pattern, a caret, then `error: ...`), which would break the file:line form of `check`.
pub(super) fn regex_why(e: &regex::Error) -> String {
    let why = e.to_string();
    let last = why.lines().last().unwrap_or("invalid").trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}
