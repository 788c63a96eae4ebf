//! Catching panics where actor code runs, and keeping their messages.
//!
//! [`install_panic_hook`] replaces the process panic hook once: a panic on a
//! thread that is inside [`catch`] (a supervised poll or worker) is recorded for
//! the supervisor (message and location) and logged at `error` without a
//! backtrace dump; any other panic goes to the previous hook unchanged.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    static SUPERVISED: Cell<u32> = const { Cell::new(0) };
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the supervision panic hook (idempotent).
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if SUPERVISED.with(Cell::get) == 0 {
                previous(info);
                return;
            }
            let msg = payload_text(info.payload());
            let text = match info.location() {
                Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
                None => msg,
            };
            LAST.with(|last| *last.borrow_mut() = Some(text));
        }));
    });
}

pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs `f`, turning a panic into `Err(message)`.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    SUPERVISED.with(|s| s.set(s.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    SUPERVISED.with(|s| s.set(s.get() - 1));
    r.map_err(|payload| {
        LAST.with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()))
    })
}

/// Polls a future inside [`catch`]: `Ready(Err(msg))` when a poll panicked.
#[derive(Debug)]
pub(crate) struct CatchPoll<'a, F> {
    inner: &'a mut F,
}

impl<'a, F: Future + Unpin> CatchPoll<'a, F> {
    /// Wraps a borrowed future; dropping the wrapper leaves the future intact.
    pub(crate) fn new(inner: &'a mut F) -> Self {
        Self { inner }
    }
}

impl<F: Future + Unpin> Future for CatchPoll<'_, F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut *self.inner;
        match catch(|| Pin::new(inner).poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(msg) => Poll::Ready(Err(msg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_location_are_kept() {
        install_panic_hook();
        let err = catch(|| panic!("boom {}", 7)).unwrap_err();
        assert!(
            err.starts_with("boom 7 (at ") && err.contains("catch.rs"),
            "{err}"
        );
        assert_eq!(catch(|| 5), Ok(5));
    }
}
