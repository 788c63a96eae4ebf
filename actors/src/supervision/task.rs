//! Tokio tasks owned by an actor: a panic in the task panics the actor with
//! the same message, so its supervisor restarts both.

use actix::prelude::*;
use tokio::task::JoinHandle;

use super::catch::payload_text;

/// Watches `task` from actor `A`'s context; `what` names the task in the panic.
pub fn watch_task<A>(ctx: &mut Context<A>, task: JoinHandle<()>, what: &'static str)
where
    A: Actor<Context = Context<A>>,
{
    ctx.spawn(fut::wrap_future::<_, A>(task).map(move |r, _, _| {
        if let Err(e) = r {
            if e.is_panic() {
                panic!("{what} panicked: {}", payload_text(&*e.into_panic()));
            }
        }
    }));
}
