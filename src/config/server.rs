//! `[server]`: threads, shutdown timings, connection and request-head bounds, and the
//! proxies whose forwarding headers are believed.

use http::HeaderName;
use ipnet::IpNet;

use super::defaults as d;
use super::error::Reporter;
use super::fields::{bounded, duration, duration_within, span};
use super::file;
use super::model::ServerSettings;
use crate::limits::HeadLimits;

pub(super) fn server(rep: &mut Reporter, f: &file::Server) -> ServerSettings {
    let threads = match &f.threads {
        None => std::thread::available_parallelism().map_or(d::THREADS_FALLBACK, |n| n.get()),
        Some(t) if d::THREADS.contains(t.get_ref()) => *t.get_ref() as usize,
        Some(t) => {
            rep.error(
                "server.threads",
                span(t),
                format!(
                    "must be between {} and {}",
                    d::THREADS.start(),
                    d::THREADS.end()
                ),
            );
            d::THREADS_FALLBACK
        }
    };
    let trusted_proxies = trusted_proxies(rep, &f.trusted_proxies);
    let request_id_header = match &f.request_id_header {
        None => HeaderName::from_static(d::REQUEST_ID_HEADER),
        Some(h) => super::headers::owned_name(
            rep,
            "server.request_id_header",
            h,
            Some(d::REQUEST_ID_HEADER),
        )
        .unwrap_or(HeaderName::from_static(d::REQUEST_ID_HEADER)),
    };
    let head_limits = HeadLimits {
        max_bytes: bounded(
            rep,
            "server.max_request_header_bytes",
            &f.max_request_header_bytes,
            d::MIN_MAX_BYTES..=d::MAX_MAX_BYTES,
            d::MAX_REQUEST_HEADER_BYTES,
        ),
        max_headers: bounded(
            rep,
            "server.max_request_headers",
            &f.max_request_headers,
            d::MIN_MAX_HEADERS..=d::MAX_MAX_HEADERS,
            d::MAX_REQUEST_HEADERS,
        ),
    };
    ServerSettings {
        threads,
        grace_period: duration(rep, "server.grace_period", &f.grace_period, d::GRACE_PERIOD),
        shutdown_timeout: duration(
            rep,
            "server.shutdown_timeout",
            &f.shutdown_timeout,
            d::SHUTDOWN_TIMEOUT,
        ),
        pid_file: f.pid_file.clone().unwrap_or_else(|| d::PID_FILE.into()),
        upgrade_socket: f
            .upgrade_socket
            .clone()
            .unwrap_or_else(|| d::UPGRADE_SOCKET.into()),
        trusted_proxies,
        request_id_header,
        head_limits,
        max_connections: bounded(
            rep,
            "server.max_connections",
            &f.max_connections,
            d::MAX_CONNECTIONS_RANGE,
            d::MAX_CONNECTIONS,
        ),
        keepalive_timeout: duration_within(
            rep,
            "server.keepalive_timeout",
            &f.keepalive_timeout,
            d::KEEPALIVE_TIMEOUT_RANGE,
            d::KEEPALIVE_TIMEOUT,
        ),
        request_header_timeout: duration_within(
            rep,
            "server.request_header_timeout",
            &f.request_header_timeout,
            d::REQUEST_HEADER_TIMEOUT_RANGE,
            d::REQUEST_HEADER_TIMEOUT,
        ),
        shutdown_delay: duration_within(
            rep,
            "server.shutdown_delay",
            &f.shutdown_delay,
            d::SHUTDOWN_DELAY_RANGE,
            d::SHUTDOWN_DELAY,
        ),
    }
}

/// `server.trusted_proxies`: IP addresses or CIDR blocks.
fn trusted_proxies(rep: &mut Reporter, list: &[toml::Spanned<String>]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let s = p.get_ref();
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
        match net {
            Ok(n) => out.push(n),
            Err(_) => rep.error(
                format!("server.trusted_proxies[{i}]"),
                span(p),
                format!("{s:?} is not an IP address or CIDR block"),
            ),
        }
    }
    out
}
