//! The actor runner: polls an actor's `ContextFut` inside `catch_unwind` and
//! obeys its supervisor's commands.
//!
//! States: *running* (the context is polled) and *dormant* (crashed, exited or
//! stopped: the mailbox stays open and queues messages; nothing is polled).
//! `Start` in the dormant state calls `ContextFut::restart()`, which cancels
//! the actor's spawned futures, calls `Supervised::restarting()` and, on the
//! next poll, `started()`.

use actix::dev::ContextFut;
use actix::prelude::*;
use tokio::sync::mpsc;

use super::catch::{catch, CatchPoll};
use super::spec::{Cmd, Event, EventKind, Launch};

type Fut<A> = ContextFut<A, Context<A>>;

pub(crate) fn spawn_actor<A>(actor: A, launch: Launch) -> mpsc::Sender<Cmd>
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let fut = Context::new().into_future(actor);
    launch.registry.register(launch.entry.name, fut.address());
    let (tx, rx) = mpsc::channel(8);
    actix_rt::spawn(run(fut, rx, launch));
    tx
}

async fn report(launch: &Launch, incarnation: u64, kind: EventKind) {
    let ev = Event {
        child: launch.idx,
        incarnation,
        kind,
    };
    // The supervisor is gone only when the whole tree is: nothing to report to.
    let _ = launch.events.send(ev).await;
}

async fn run<A>(mut fut: Fut<A>, mut cmds: mpsc::Receiver<Cmd>, launch: Launch)
where
    A: Actor<Context = Context<A>> + Supervised,
{
    let mut incarnation = 0u64;
    let mut running = true;
    loop {
        if running {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Stop) => {
                        stop(&mut fut, &launch).await;
                        running = false;
                        report(&launch, incarnation, EventKind::Stopped).await;
                    }
                    Some(Cmd::InjectPanic) => {
                        fut.ctx().spawn(actix::fut::ready(()).map(|_, _: &mut A, _| {
                            panic!("injected panic (actors_inject_panic)")
                        }));
                    }
                    Some(Cmd::Start) => incarnation += 1,
                    Some(Cmd::Remove) | None => return,
                    Some(Cmd::RestartChild(_, r) | Cmd::PanicChild(_, r)) => {
                        let _ = r.send(Err("not a supervisor".into()));
                    }
                },
                r = CatchPoll::new(&mut fut) => {
                    running = false;
                    let kind = match r {
                        Ok(()) => EventKind::Exited { abnormal: false, reason: "stopped itself".into() },
                        Err(msg) => {
                            launch.entry.record_crash(&msg);
                            EventKind::Exited { abnormal: true, reason: msg }
                        }
                    };
                    report(&launch, incarnation, kind).await;
                }
            }
        } else {
            match cmds.recv().await {
                Some(Cmd::Start) => {
                    incarnation += 1;
                    match catch(|| fut.restart()) {
                        Ok(true) => running = true,
                        Ok(false) => {
                            let reason = "mailbox closed: no address is left".to_owned();
                            report(
                                &launch,
                                incarnation,
                                EventKind::Exited {
                                    abnormal: false,
                                    reason,
                                },
                            )
                            .await;
                        }
                        Err(msg) => {
                            launch.entry.record_crash(&msg);
                            report(
                                &launch,
                                incarnation,
                                EventKind::Exited {
                                    abnormal: true,
                                    reason: msg,
                                },
                            )
                            .await;
                        }
                    }
                }
                Some(Cmd::Stop) => report(&launch, incarnation, EventKind::Stopped).await,
                Some(Cmd::InjectPanic) => {}
                Some(Cmd::RestartChild(_, r) | Cmd::PanicChild(_, r)) => {
                    let _ = r.send(Err("not a supervisor".into()));
                }
                Some(Cmd::Remove) | None => return,
            }
        }
    }
}

/// Asks the actor to stop and polls it until it has, within the shutdown timeout.
async fn stop<A>(fut: &mut Fut<A>, launch: &Launch)
where
    A: Actor<Context = Context<A>>,
{
    fut.ctx().stop();
    match tokio::time::timeout(launch.shutdown, CatchPoll::new(fut)).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => tracing::error!(actor = launch.entry.name, panic = %msg, "panicked while stopping"),
        Err(_) => {
            tracing::warn!(
                actor = launch.entry.name,
                timeout_ms = launch.shutdown.as_millis() as u64,
                "did not stop in time; left stopped"
            )
        }
    }
}
