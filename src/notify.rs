//! Service manager notifications (`sd_notify`): `READY=1` once every listener is bound,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` when draining starts. For
//! `Type=notify` in `deploy/authgate.service`. Without `$NOTIFY_SOCKET` (not under systemd)
//! every call does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

/// Whether `READY=1` has been sent: a reload must not report ready before the start has.
static READY: AtomicBool = AtomicBool::new(false);

/// Every listener is bound: the start is over.
pub(crate) fn ready() {
    READY.store(true, Ordering::Release);
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload begins. systemd (253 and later) wants the monotonic time with it.
pub(crate) fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    states.extend(NotifyState::monotonic_usec_now().ok());
    send(&states);
}

/// A reload ended (applied or refused: the gateway serves either way).
pub(crate) fn reloaded() {
    if READY.load(Ordering::Acquire) {
        send(&[NotifyState::Ready]);
    }
}

/// Draining has begun; the process exits once it is over.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// The environment stays as it is (`notify`, not `notify_and_unset_env`): the gateway sends
/// several notifications, and unsetting a variable with threads running is unsound.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}
