//! One connected app: authentication, then its frames, one at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::confirms::{Confirm, Confirms};
use super::consumer::consume;
use super::frame_out::FrameOut;
use super::leases::Unacked;
use super::outbound::{fan_out, msg_frame, ok, ok_published};
use super::router::Sink;
use super::wire::{self, put_payload, FrameError, In};
use super::{Bus, SessionInfo, Verb};
use crate::queue::{check_name, check_topic, Publish, Settle, HDR_MSG_ID};

mod settle;

enum Sub {
    /// A live subscription to this topic or pattern.
    Live(String),
    Durable {
        topic: String,
        group: String,
        task: JoinHandle<()>,
        unacked: Unacked,
    },
}

/// A subscribe frame that passed its checks.
enum Subscribing {
    Live(String),
    Durable { topic: String, group: String },
}

struct Session {
    bus: Arc<Bus>,
    id: u64,
    app: String,
    out: mpsc::Sender<String>,
    subs: HashMap<u64, Sub>,
    next_sub: u64,
    confirms: Confirms,
    /// `BUS_FRAMES`, looked up once per session, not per frame.
    frames: metrics::Counter,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a session over a stream of frames; answers go to `out` (the
/// writer task), durable publishes' confirms to `direct`, written by the
/// flusher thread (`confirms.rs`).
pub(crate) async fn run<S>(
    bus: Arc<Bus>,
    mut frames: S,
    out: mpsc::Sender<String>,
    peer: String,
    direct: Arc<FrameOut>,
) where
    S: Stream<Item = Result<String, (Option<u64>, FrameError)>> + Unpin,
{
    let max = bus.settings.max_frame_bytes;
    let first = tokio::time::timeout(bus.settings.hello_timeout, frames.next()).await;
    // Every failed hello is audited, with what the peer sent instead.
    let refuse = |id, e: FrameError| {
        let (out, bus, peer) = (out.clone(), bus.clone(), peer.clone());
        async move {
            metrics::counter!(crate::metrics::BUS_ERRORS, "code" => e.code).increment(1);
            bus.auth_failed(&peer, json!({ "peer": peer, "code": e.code, "why": e.message }));
            let _ = out.send(wire::error_frame(id, &e)).await;
        }
    };
    let (app, token) = match first {
        Err(_) => return refuse(None, FrameError::new("unauthorized", "no hello within bus.hello_timeout: send {\"op\":\"hello\",\"app\":NAME,\"token\":TOKEN} first")).await,
        Ok(None) => return,
        Ok(Some(Err((id, e)))) => return refuse(id, e).await,
        Ok(Some(Ok(text))) => match wire::parse(&text, max) {
            Ok(In::Hello { app, token }) if bus.apps.authenticate(&app, &token) => (app, token),
            Ok(In::Hello { app, .. }) => {
                let e = FrameError::new("unauthorized", format!("wrong token for app `{app}` (or no such app): ask the operator for a token (vigilctl bus app-add)"));
                bus.auth_failed(&peer, json!({ "app": app, "peer": peer, "code": e.code, "why": e.message }));
                metrics::counter!(crate::metrics::BUS_ERRORS, "code" => e.code).increment(1);
                let _ = out.send(wire::error_frame(None, &e)).await;
                return;
            }
            Ok(_) => return refuse(None, FrameError::new("unauthorized", "the first frame must be hello")).await,
            Err((id, e)) => return refuse(id, e).await,
        },
    };
    let (kick, kicked) = oneshot::channel();
    let mut revoked = bus.revoked.subscribe();
    let id = {
        let mut st = bus.state();
        // Checked again under the state lock: `remove_app` takes the app out
        // of memory before it scans the sessions under this lock, so a
        // removal either fails this check or finds this session listed.
        if !bus.apps.authenticate(&app, &token) {
            drop(st);
            let e = FrameError::new(
                "unauthorized",
                format!("app `{app}` was removed while it connected"),
            );
            return refuse(None, e).await;
        }
        st.next_session += 1;
        let id = st.next_session;
        st.sessions.insert(
            id,
            SessionInfo {
                app: app.clone(),
                tx: out.clone(),
                serves: HashSet::new(),
                _kick: kick,
            },
        );
        id
    };
    metrics::gauge!(crate::metrics::BUS_SESSIONS).increment(1.0);
    tracing::info!(app = %app, session = id, %peer, "app connected");
    // Through the confirms' path, which no later confirm can overtake.
    let confirms = Confirms::new(&bus, direct);
    confirms.send_first(&json!({ "op": "welcome", "app": app, "session": id }).to_string());
    let mut s = Session {
        bus,
        id,
        app,
        out,
        subs: HashMap::new(),
        next_sub: 1,
        confirms,
        frames: metrics::counter!(crate::metrics::BUS_FRAMES),
    };
    // The app's removal ends the session even while a frame's handling waits
    // on an app that stopped reading; the farewell is sent only if it fits.
    let kicked = async move {
        let _ = kicked.await;
    };
    tokio::pin!(kicked);
    loop {
        // `None`: a revoke to apply; `Some`: a frame.
        let next = tokio::select! {
            biased;
            _ = &mut kicked => {
                s.farewell();
                break;
            }
            Ok(()) = revoked.changed() => None,
            item = frames.next() => match item {
                Some(item) => Some(item),
                None => break,
            },
        };
        let step = async {
            match next.map(|item| item.map(|t| wire::parse(&t, max))) {
                None => s.recheck().await,
                Some(Ok(Ok(frame))) => {
                    let fid = frame.id();
                    if let Err(e) = s.handle(frame).await {
                        s.error(fid, e).await;
                    }
                }
                Some(Ok(Err((id, e)))) => s.error(id, e).await,
                Some(Err((id, e))) => s.error(id, e).await,
            }
        };
        let removed = tokio::select! {
            biased;
            _ = &mut kicked => true,
            _ = step => false,
        };
        if removed {
            s.farewell();
            break;
        }
    }
    s.cleanup().await;
}

impl Session {
    /// Tells the app it was removed, if its outbound queue has room (it may
    /// have stopped reading: the connection closes either way).
    fn farewell(&self) {
        let e = FrameError::new(
            "app_removed",
            format!(
                "app `{}` was removed by the operator: this connection is closed",
                self.app
            ),
        );
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => e.code).increment(1);
        let _ = self.out.try_send(wire::error_frame(None, &e));
    }

    async fn send(&self, frame: String) {
        let _ = self.out.send(frame).await;
    }

    async fn error(&self, id: Option<u64>, e: FrameError) {
        metrics::counter!(crate::metrics::BUS_ERRORS, "code" => e.code).increment(1);
        self.send(wire::error_frame(id, &e)).await;
    }

    fn check(&self, verb: Verb, name: &str) -> Result<(), FrameError> {
        if self.bus.apps.allowed(&self.app, verb, name) {
            return Ok(());
        }
        self.bus.audit(
            &self.app,
            "bus.denied",
            json!({ "app": self.app, "verb": verb, "name": name }),
        );
        Err(FrameError::new(
            "forbidden",
            format!("app `{}` may not {} `{name}`: the operator grants it with `vigilctl bus grant {} {} PATTERN`", self.app, verb.as_str(), self.app, verb.as_str()),
        ))
    }

    fn forged(&self, claimed: &Option<String>) {
        if let Some(c) = claimed {
            self.bus.audit(
                &self.app,
                "bus.violation",
                json!({ "app": self.app, "claimed_sender": c }),
            );
            tracing::warn!(app = %self.app, claimed = %c, "sender field ignored: the node stamps the sender");
        }
    }

    async fn handle(&mut self, f: In) -> Result<(), FrameError> {
        self.frames.increment(1);
        match f {
            In::Hello { .. } => Err(FrameError::new(
                "bad_frame",
                "already authenticated: hello comes once",
            )),
            In::Publish {
                id,
                topic,
                body,
                headers,
                correlation,
                msg_id,
                sender,
            } => {
                check_topic(&topic).map_err(|m| FrameError::new("bad_frame", m))?;
                self.check(Verb::Publish, &topic)?;
                self.forged(&sender);
                let payload = body.bytes().map_err(|m| FrameError::new("bad_frame", m))?;
                let correlation = correlation.unwrap_or_default();
                let t0 = std::time::Instant::now();
                let span = tracing::info_span!("bus_msg", correlation = %correlation, app = %self.app, topic = %topic);
                let sinks = self.bus.state().router.route(&topic);
                if self.bus.is_ephemeral(&topic) {
                    let n = fan_out(&sinks, |sub| {
                        msg_frame(&self.app, sub, &topic, None, &correlation, &payload, json!({}))
                    });
                    span.in_scope(|| tracing::debug!(delivered = n, "ephemeral publish"));
                    self.send(ok(id, json!({ "delivered": n }))).await;
                    return Ok(());
                }
                let mut hdrs: std::collections::BTreeMap<String, Vec<u8>> =
                    headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                if let Some(m) = msg_id {
                    hdrs.insert(HDR_MSG_ID.into(), m.into_bytes());
                }
                // A copy only for live subscribers, if there are any.
                let live = (!sinks.is_empty()).then(|| (payload.clone(), correlation.clone()));
                let p = Publish {
                    sender: self.app.clone(),
                    correlation,
                    headers: hdrs,
                    payload,
                };
                let (published, ticket) = self
                    .bus
                    .queues
                    .publish_nowait(&topic, p)
                    .map_err(|e| FrameError::new("rejected", e.to_string()))?;
                if let (false, Some((payload, correlation))) = (published.duplicate, live) {
                    fan_out(&sinks, |sub| {
                        msg_frame(
                            &self.app,
                            sub,
                            &topic,
                            Some(published.seq),
                            &correlation,
                            &payload,
                            json!({ "live": true }),
                        )
                    });
                }
                // Confirmed off the read loop, in order, by the flusher (`confirms.rs`):
                // an app can pipeline publishes, and one wait covers a whole batch.
                let confirm = Confirm {
                    id,
                    frame: ok_published(id, published),
                    t0,
                    span,
                };
                self.confirms.send(&self.bus, ticket, confirm).await;
                Ok(())
            }
            In::Send {
                id,
                app,
                topic,
                body,
                correlation,
                sender,
            } => {
                check_topic(&topic).map_err(|m| FrameError::new("bad_frame", m))?;
                self.check(Verb::Send, &topic)?;
                self.forged(&sender);
                let payload = body.bytes().map_err(|m| FrameError::new("bad_frame", m))?;
                let (connected, sinks) = {
                    let st = self.bus.state();
                    let connected = st.sessions.values().any(|s| s.app == app);
                    let sinks: Vec<Sink> = st
                        .router
                        .route(&topic)
                        .into_iter()
                        .filter(|s| s.app == app)
                        .collect();
                    (connected, sinks)
                };
                if !connected {
                    return Err(FrameError::new(
                        "not_connected",
                        format!("app `{app}` is not connected"),
                    ));
                }
                let c = correlation.unwrap_or_default();
                let n = fan_out(&sinks, |sub| {
                    msg_frame(&self.app, sub, &topic, None, &c, &payload, json!({ "to": app }))
                });
                self.send(ok(id, json!({ "delivered": n }))).await;
                Ok(())
            }
            In::Subscribe {
                id,
                topic,
                pattern,
                group,
                auto_ack,
                max_in_flight,
            } => {
                let what = self.check_subscribe(topic, pattern, group)?;
                let sub = self.next_sub;
                self.next_sub += 1;
                // The `ok` goes out before the subscription starts, so it
                // comes before the subscription's first message.
                self.send(ok(id, json!({ "sub": sub }))).await;
                match what {
                    Subscribing::Live(name) => self.live(&name, sub),
                    Subscribing::Durable { topic, group } => {
                        let unacked: Unacked = Arc::default();
                        let credit = max_in_flight.unwrap_or(256).clamp(1, 10_000) as usize;
                        let task = tokio::spawn(consume(
                            self.bus.clone(),
                            topic.clone(),
                            group.clone(),
                            sub,
                            self.out.clone(),
                            unacked.clone(),
                            auto_ack,
                            credit,
                        ));
                        self.subs.insert(
                            sub,
                            Sub::Durable {
                                topic,
                                group,
                                task,
                                unacked,
                            },
                        );
                    }
                }
                Ok(())
            }
            In::Unsubscribe { id, sub, ack } => {
                let s = self
                    .subs
                    .remove(&sub)
                    .ok_or_else(|| FrameError::new("not_found", format!("no subscription {sub}")))?;
                let acked = self.end_sub(sub, s, &ack);
                self.send(ok(id, json!({ "acked": acked }))).await;
                Ok(())
            }
            In::Ack {
                id,
                sub,
                seq: Some(seq),
                seqs,
            } if seqs.is_empty() => self.settle(id, sub, seq, Settle::Ack).await,
            In::Ack {
                id,
                sub,
                seq: None,
                seqs,
            } if !seqs.is_empty() => self.ack_batch(id, sub, seqs).await,
            In::Ack { .. } => Err(FrameError::new(
                "bad_frame",
                format!(
                    "ack takes `seq` (one delivery) or `seqs` (1 to {} deliveries), not both or neither",
                    super::MAX_ACK_BATCH
                ),
            )),
            In::Nak {
                id,
                sub,
                seq,
                delay_ms,
            } => {
                self.settle(id, sub, seq, Settle::Nak(Duration::from_millis(delay_ms)))
                    .await
            }
            In::Term { id, sub, seq, reason } => {
                let r = reason.unwrap_or_else(|| "terminated by the consumer".into());
                self.settle(id, sub, seq, Settle::Term(r)).await
            }
            // Keeps it unacked: only extends the lease.
            In::InProgress { id, sub, seq } => self.settle(id, sub, seq, Settle::InProgress).await,
            In::Request {
                id,
                app,
                action,
                body,
                deadline_ms,
                correlation,
            } => {
                self.request(id, app, action, body, deadline_ms, correlation)
                    .await
            }
            In::Serve { id, action } => {
                check_name("action", &action).map_err(|m| FrameError::new("bad_frame", m))?;
                self.check(Verb::Serve, &action)?;
                if let Some(s) = self.bus.state().sessions.get_mut(&self.id) {
                    s.serves.insert(action);
                }
                self.send(ok(id, json!({}))).await;
                Ok(())
            }
            In::Reply { id, rid, body, error } => {
                let waiter = {
                    let mut st = self.bus.state();
                    match st.requests.get(&rid) {
                        Some((server, _, _)) if *server == self.id => {
                            st.requests.remove(&rid).map(|(_, _, tx)| tx)
                        }
                        _ => None,
                    }
                };
                let tx = waiter.ok_or_else(|| {
                    FrameError::new(
                        "not_found",
                        format!("request {rid} is not pending here (its deadline may have passed)"),
                    )
                })?;
                let answer = match error {
                    Some(e) => Err(e),
                    None => body
                        .bytes()
                        .map_err(|m| format!("the server's reply was malformed: {m}")),
                };
                let _ = tx.send(answer);
                self.send(ok(id, json!({}))).await;
                Ok(())
            }
        }
    }

    /// After a revoke: ends every subscription and served action of this
    /// session its grants no longer cover, telling the app and the audit log.
    async fn recheck(&mut self) {
        let apps = &self.bus.apps;
        let gone: Vec<(u64, String)> = self
            .subs
            .iter()
            .filter_map(|(id, s)| {
                let name = match s {
                    Sub::Live(name) => name,
                    Sub::Durable { topic, .. } => topic,
                };
                (!apps.allowed(&self.app, Verb::Subscribe, name)).then(|| (*id, name.clone()))
            })
            .collect();
        for (sub, name) in gone {
            if let Some(s) = self.subs.remove(&sub) {
                self.end_sub(sub, s, &[]);
            }
            self.bus.audit(
                &self.app,
                "bus.revoked_end",
                json!({ "app": self.app, "sub": sub, "name": name }),
            );
            let e = FrameError::new(
                "forbidden",
                format!("subscription {sub} to `{name}` ended: the operator revoked the grant"),
            );
            let mut v: Value = serde_json::from_str(&wire::error_frame(None, &e)).unwrap_or_default();
            v["sub"] = sub.into();
            self.send(v.to_string()).await;
        }
        let served: Vec<String> = {
            let mut st = self.bus.state();
            let Some(info) = st.sessions.get_mut(&self.id) else {
                return;
            };
            let gone: Vec<String> = info
                .serves
                .iter()
                .filter(|a| !apps.allowed(&self.app, Verb::Serve, a))
                .cloned()
                .collect();
            for a in &gone {
                info.serves.remove(a);
            }
            gone
        };
        for action in served {
            self.bus.audit(
                &self.app,
                "bus.revoked_end",
                json!({ "app": self.app, "action": action }),
            );
            self.error(
                None,
                FrameError::new(
                    "forbidden",
                    format!("serving `{action}` ended: the operator revoked the grant"),
                ),
            )
            .await;
        }
    }

    /// Checks a subscribe frame: names, limits, grants, group ownership.
    fn check_subscribe(
        &self,
        topic: Option<String>,
        pattern: Option<String>,
        group: Option<String>,
    ) -> Result<Subscribing, FrameError> {
        if self.subs.len() >= super::MAX_SUBSCRIPTIONS {
            return Err(FrameError::new(
                "rejected",
                format!(
                    "this connection holds {} subscriptions, the limit: unsubscribe first",
                    self.subs.len()
                ),
            ));
        }
        match (topic, pattern) {
            (Some(_), Some(_)) | (None, None) => Err(FrameError::new(
                "bad_frame",
                "subscribe takes `topic` or `pattern` (prefix.*), one of them",
            )),
            (None, Some(p)) => {
                super::check_pattern(&p).map_err(|e| FrameError::new("bad_frame", e.to_string()))?;
                self.check(Verb::Subscribe, &p)?;
                Ok(Subscribing::Live(p))
            }
            (Some(t), None) => {
                check_topic(&t).map_err(|m| FrameError::new("bad_frame", m))?;
                self.check(Verb::Subscribe, &t)?;
                if self.bus.is_ephemeral(&t) {
                    return Ok(Subscribing::Live(t));
                }
                let group = group.unwrap_or_else(|| self.app.clone());
                check_name("group", &group).map_err(|m| FrameError::new("bad_frame", m))?;
                // Consumer groups are per app: another app's group would let
                // this one settle or pin its deliveries.
                if !super::apps::owns_group(&self.app, &group) {
                    self.bus.audit(
                        &self.app,
                        "bus.denied",
                        json!({ "app": self.app, "verb": Verb::Subscribe, "name": t, "group": group }),
                    );
                    return Err(FrameError::new(
                        "forbidden",
                        format!(
                            "consumer group `{group}` is not one of app `{app}`'s: its groups are `{app}` (the default) and `{app}.NAME`",
                            app = self.app
                        ),
                    ));
                }
                Ok(Subscribing::Durable { topic: t, group })
            }
        }
    }

    fn live(&mut self, name: &str, sub: u64) {
        let sink = Sink {
            app: self.app.clone(),
            session: self.id,
            sub,
            tx: self.out.clone(),
        };
        self.bus.state().router.add(name, sink);
        self.subs.insert(sub, Sub::Live(name.to_owned()));
    }

    async fn request(
        &self,
        id: u64,
        app: String,
        action: String,
        body: wire::Body,
        deadline_ms: u64,
        correlation: Option<String>,
    ) -> Result<(), FrameError> {
        if deadline_ms == 0 || deadline_ms > super::MAX_DEADLINE_MS {
            return Err(FrameError::new(
                "bad_frame",
                format!(
                    "deadline_ms is {deadline_ms}: use 1 to {}",
                    super::MAX_DEADLINE_MS
                ),
            ));
        }
        check_name("action", &action).map_err(|m| FrameError::new("bad_frame", m))?;
        let target = format!("{app}.{action}");
        self.check(Verb::Request, &target)?;
        let payload = body.bytes().map_err(|m| FrameError::new("bad_frame", m))?;
        let (rid, server_tx, rx) = {
            let mut st = self.bus.state();
            let server = st
                .sessions
                .iter()
                .find(|(_, s)| s.app == app && s.serves.contains(&action))
                .map(|(sid, s)| (*sid, s.tx.clone()));
            let Some((server_id, server_tx)) = server else {
                return Err(FrameError::new(
                    "no_server",
                    format!("no connected app `{app}` serves `{action}`"),
                ));
            };
            let mine = st.requests.values().filter(|r| r.1 == self.id).count();
            if mine >= super::MAX_PENDING_REQUESTS {
                return Err(FrameError::new(
                    "rejected",
                    format!(
                        "{mine} requests of this connection are waiting for answers (the limit is {}): wait for some first",
                        super::MAX_PENDING_REQUESTS
                    ),
                ));
            }
            st.next_rid += 1;
            let rid = st.next_rid;
            let (tx, rx) = oneshot::channel();
            st.requests.insert(rid, (server_id, self.id, tx));
            (rid, server_tx, rx)
        };
        let mut frame = json!({ "op": "request", "rid": rid, "from": self.app, "action": action, "deadline_ms": deadline_ms, "correlation": correlation.unwrap_or_default() });
        put_payload(&mut frame, &payload);
        if server_tx.try_send(frame.to_string()).is_err() {
            self.bus.state().requests.remove(&rid);
            return Err(FrameError::new(
                "no_server",
                format!("app `{app}` is not keeping up; try again"),
            ));
        }
        let (bus, out) = (self.bus.clone(), self.out.clone());
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(Duration::from_millis(deadline_ms), rx).await {
                Ok(Ok(Ok(bytes))) => {
                    let mut v = json!({ "op": "reply", "id": id });
                    put_payload(&mut v, &bytes);
                    v.to_string()
                }
                Ok(Ok(Err(e))) => wire::error_frame(
                    Some(id),
                    &FrameError::new("failed", format!("`{app}` answered with an error: {e}")),
                ),
                Ok(Err(_)) => wire::error_frame(
                    Some(id),
                    &FrameError::new("no_server", format!("`{app}` disconnected before answering")),
                ),
                Err(_) => {
                    bus.state().requests.remove(&rid);
                    wire::error_frame(
                        Some(id),
                        &FrameError::new(
                            "deadline",
                            format!("no answer from `{app}` within {deadline_ms} ms"),
                        ),
                    )
                }
            };
            let _ = out.send(answer).await;
        });
        Ok(())
    }

    /// Ends a subscription: its deliveries listed in `ack` are acked, every
    /// other one it holds is handed back. Returns how many were acked.
    fn end_sub(&self, sub: u64, s: Sub, ack: &[u64]) -> usize {
        match s {
            Sub::Live(_) => {
                self.bus.state().router.remove(self.id, sub);
                0
            }
            Sub::Durable {
                topic,
                group,
                task,
                unacked,
            } => {
                task.abort();
                // Release the leases at once: the messages go to the group's
                // other consumers (each only if it is still this delivery).
                let held = {
                    let mut l = lock(&unacked);
                    l.closed = true;
                    std::mem::take(&mut l.held)
                };
                let ack: HashSet<u64> = ack.iter().copied().collect();
                let mut acked = 0;
                for (seq, h) in held {
                    if ack.contains(&seq) {
                        let r = self.bus.queues.settle(&topic, &group, seq, h.count, Settle::Ack);
                        acked += usize::from(r.is_ok());
                    } else {
                        let _ = self.bus.queues.release(&topic, &group, seq, h.count);
                    }
                }
                acked
            }
        }
    }

    async fn cleanup(mut self) {
        for (sub, s) in std::mem::take(&mut self.subs) {
            self.end_sub(sub, s, &[]);
        }
        {
            let mut st = self.bus.state();
            st.router.remove_session(self.id);
            st.sessions.remove(&self.id);
            // Requests it serves fail at once with `no_server`; its own requests
            // are dropped, which ends the tasks waiting for their answers.
            st.requests
                .retain(|_, (server, requester, _)| *server != self.id && *requester != self.id);
        }
        metrics::gauge!(crate::metrics::BUS_SESSIONS).decrement(1.0);
        tracing::info!(app = %self.app, session = self.id, "app disconnected");
        // Confirms already queued are still sent (the connection may be half-closed).
        self.confirms.finish().await;
    }
}
