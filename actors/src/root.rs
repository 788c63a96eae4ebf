//! The root of the actor tree.
//!
//! Children are registered in start order; [`Root::shutdown`] sends each a
//! [`Shutdown`] in reverse order and waits for it within the child's own
//! timeout, so a stuck child delays shutdown by at most that timeout and never
//! blocks the children started before it (which it may depend on) from
//! flushing. Restart-on-crash supervision builds on this (issue 3).

use std::time::{Duration, Instant};

use actix::prelude::*;

/// Asks an actor to release its resources and stop.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// How one child stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// It acknowledged within its timeout.
    Stopped(Duration),
    /// It did not answer within its timeout.
    TimedOut(Duration),
    /// Its mailbox was already closed.
    AlreadyGone,
}

#[derive(Debug)]
struct Child {
    name: &'static str,
    addr: Recipient<Shutdown>,
    timeout: Duration,
}

/// The started children of the node, in start order.
#[derive(Debug, Default)]
pub struct Root {
    children: Vec<Child>,
}

impl Root {
    /// Records a started child.
    pub fn started(&mut self, name: &'static str, addr: Recipient<Shutdown>, timeout: Duration) {
        tracing::debug!(actor = name, "started");
        self.children.push(Child { name, addr, timeout });
    }

    /// Names of the children, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.children.iter().map(|c| c.name).collect()
    }

    /// Stops every child in reverse start order; returns how each stopped.
    pub async fn shutdown(self) -> Vec<(&'static str, StopOutcome)> {
        let mut report = Vec::with_capacity(self.children.len());
        for child in self.children.into_iter().rev() {
            let t0 = Instant::now();
            let outcome = match tokio::time::timeout(child.timeout, child.addr.send(Shutdown)).await {
                Ok(Ok(())) => StopOutcome::Stopped(t0.elapsed()),
                Ok(Err(_)) => StopOutcome::AlreadyGone,
                Err(_) => StopOutcome::TimedOut(child.timeout),
            };
            match &outcome {
                StopOutcome::TimedOut(t) => {
                    tracing::warn!(actor = child.name, timeout = ?t, "actor did not stop in time; moving on")
                }
                o => tracing::info!(actor = child.name, outcome = ?o, "actor stopped"),
            }
            report.push((child.name, outcome));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
        hang: bool,
    }

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl Handler<Shutdown> for Probe {
        type Result = ResponseActFuture<Self, ()>;
        fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
            self.log.lock().unwrap().push(self.name);
            let wait = if self.hang { 3600 } else { 0 };
            Box::pin(
                tokio::time::sleep(Duration::from_secs(wait))
                    .into_actor(self)
                    .map(|_, _, ctx| ctx.stop()),
            )
        }
    }

    #[actix_rt::test]
    async fn stops_in_reverse_order_and_bounds_a_stuck_child() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut root = Root::default();
        for (name, hang) in [("store", false), ("stuck", true), ("rpc", false)] {
            let addr = Probe {
                name,
                log: log.clone(),
                hang,
            }
            .start();
            root.started(name, addr.recipient(), Duration::from_millis(200));
        }
        assert_eq!(root.names(), ["store", "stuck", "rpc"]);
        let report = root.shutdown().await;
        assert_eq!(*log.lock().unwrap(), ["rpc", "stuck", "store"]);
        assert!(matches!(report[0].1, StopOutcome::Stopped(_)));
        assert_eq!(report[1].1, StopOutcome::TimedOut(Duration::from_millis(200)));
        assert!(matches!(report[2].1, StopOutcome::Stopped(_)));
    }
}
