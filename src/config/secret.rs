//! Secrets in config: never required inline, never printed.
//!
//! A secret value may be written as `${ENV_VAR}` (expanded from the environment at load) or
//! read from a file named by the sibling `*_file` key (Kubernetes secret volumes). `Secret`'s
//! `Debug` prints a redaction so a config dump or an error log cannot leak it.

use std::fmt;

/// A secret string; compare with [`Secret::ct_eq`], never `==`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality, so timing does not reveal how much of a guess was right.
    pub(crate) fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Expand every `${NAME}` from `env`; the error names the first missing variable.
pub(crate) fn expand_env(
    value: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated '${' in value".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let v = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Read a secret file, trimming the trailing newline editors and `kubectl` leave behind.
pub(crate) fn read_file(path: &str) -> Result<String, String> {
    read_bounded(path.as_ref())
        .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other))
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read {path}: {e}"))
}

/// The most the config loader reads of one file (the config, a secret, a CA bundle).
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;

/// Every file the config names is read through here: a regular file (a `*_file` naming
/// `/dev/zero` or a FIFO is refused, not read forever) of at most [`MAX_FILE_BYTES`].
pub(crate) fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_files_are_refused_not_read() {
        assert!(read_file("/dev/zero")
            .unwrap_err()
            .contains("not a regular file"));
        let dir = tempfile::tempdir().unwrap();
        assert!(read_file(dir.path().to_str().unwrap()).is_err());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert!(read_file(big.to_str().unwrap())
            .unwrap_err()
            .contains("larger than"));
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "s3cret\n").unwrap();
        assert_eq!(read_file(ok.to_str().unwrap()).unwrap(), "s3cret");
    }

    #[test]
    fn expands_and_reports_missing() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("pre-${A}-post", env).unwrap(), "pre-x-post");
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        assert!(expand_env("${B}", env)
            .unwrap_err()
            .contains("B is not set"));
        assert!(expand_env("${A", env).is_err());
        assert!(expand_env("${}", env).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(s.ct_eq(b"hunter2"));
        assert!(!s.ct_eq(b"hunter3"));
    }
}
