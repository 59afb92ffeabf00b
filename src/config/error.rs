//! Config errors that name the file, line, column and key, like a compiler does.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) file: PathBuf,
    /// 1-based; 0 when the problem has no single place (e.g. an unreadable file).
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// Dotted key path, e.g. `routes[2].upstream`.
    pub(crate) key: String,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one load; `check` prints every one, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What an absent secret reads as under `check --offline`: long enough for every length
/// bound (session secret, admin token), and never used to run anything.
pub(crate) const OFFLINE_PLACEHOLDER: &str =
    "authgate-check-offline-placeholder-for-an-absent-secret";

/// Turns byte spans into line/column and collects errors.
pub(crate) struct Reporter<'a> {
    file: &'a Path,
    src: &'a str,
    pub(crate) errors: Vec<ConfigError>,
    /// `check --offline`: secrets that are referenced but absent
    /// (unset variables, missing files) stand in as placeholders; all else is checked alike.
    pub(crate) offline: bool,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            errors: Vec::new(),
            offline: false,
        }
    }

    /// An environment variable; offline, an unset one reads as [`OFFLINE_PLACEHOLDER`].
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        match std::env::var(name) {
            Ok(v) => Some(v),
            Err(_) if self.offline => Some(OFFLINE_PLACEHOLDER.to_string()),
            Err(_) => None,
        }
    }

    /// 1-based line and column of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    pub(crate) fn error(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        msg: impl Into<String>,
    ) {
        let (line, column) = span.map_or((0, 0), |s| self.position(s.start));
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: msg.into(),
        });
    }
}
