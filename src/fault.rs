//! What kind of failure an error is: the error types say which (`JwtError::fault`,
//! `StoreError::fault`), `answer` says what each answers. A leaf, so errors anywhere can
//! name their kind without depending on the module that answers.

/// What kind of failure an error is, for its status: the error types say which
/// (`JwtError::fault`, `StoreError::fault`); this module says what each answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The client's request or credential is refused (4xx): retrying the same will not help.
    Rejected,
    /// Something the gateway depends on is down (503 with `Retry-After`): try again later.
    Unavailable,
    /// The gateway's own data or code is wrong (500): logged as a bug, never "try later".
    Bug,
}
