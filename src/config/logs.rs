//! `[log]`: format, filter and the access log.

use super::defaults as d;
use super::error::Reporter;
use super::fields::span;
use super::file;
use super::model::{LogFormat, LogSettings};

pub(super) fn log(rep: &mut Reporter, f: &file::Log) -> LogSettings {
    let format = match f.format.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, s)) => {
            rep.error(
                "log.format",
                span(s),
                format!("{other:?}: expected \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = match &f.level {
        None => d::LOG_LEVEL.to_string(),
        Some(l) => {
            if tracing_subscriber::EnvFilter::builder()
                .parse(l.get_ref())
                .is_err()
            {
                rep.error(
                    "log.level",
                    span(l),
                    format!("invalid log filter {:?}", l.get_ref()),
                );
            }
            l.get_ref().clone()
        }
    };
    LogSettings {
        format,
        level,
        access_log: f.access_log.unwrap_or(d::ACCESS_LOG),
    }
}
