//! systemd's notify protocol (`sd_notify(3)`), for `Type=notify` units
//! (`packaging/vigil.service`): `READY=1` once the node serves, a `STATUS=`
//! line, `RELOADING=1` around a SIGHUP reload, `STOPPING=1` when it begins
//! to stop, and `WATCHDOG=1` every half `WatchdogSec` while the runtime
//! runs, so systemd restarts a node whose runtime hangs. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// The node serves: readiness and a status line for `systemctl status`.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`reloaded`] ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The reload is done (applied or refused: the node runs on either way).
pub(crate) fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The node begins to stop.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// `WATCHDOG_USEC` when it is meant for this process: as libsystemd's
/// `sd_watchdog_enabled(3)`, `WATCHDOG_PID` (systemd sets it) must be this
/// process if it is set at all. (The `sd-notify` crate's own check also
/// refuses an unset `WATCHDOG_PID`.)
fn watchdog_usec() -> Option<u64> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => (usec > 0).then_some(usec),
    }
}

/// Pings the watchdog every half interval when the unit has `WatchdogSec`
/// (systemd sets `WATCHDOG_USEC` for this process). The ping runs on the
/// node's runtime: a runtime that stops scheduling tasks stops pinging.
pub(crate) fn spawn_watchdog() {
    let Some(usec) = watchdog_usec() else { return };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
