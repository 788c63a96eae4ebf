//! A test actor whose life is recorded in a shared log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use vigil_actors::store::{SledStore, Store};

#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<String>,
}

pub type SharedLog = Arc<Mutex<Log>>;

pub fn log(l: &SharedLog, s: String) {
    l.lock().unwrap().events.push(s);
}

pub fn count(l: &SharedLog, s: &str) -> usize {
    l.lock().unwrap().events.iter().filter(|e| *e == s).count()
}

/// Counts in sled; `restarting()` reloads the count from sled, never keeping the
/// half-updated in-memory value.
pub struct Probe {
    pub name: &'static str,
    pub log: SharedLog,
    pub store: Option<SledStore>,
    pub count: u64,
    pub panic_in_started: Arc<Mutex<u32>>,
}

impl Probe {
    pub fn new(name: &'static str, log: SharedLog) -> Self {
        Self {
            name,
            log,
            store: None,
            count: 0,
            panic_in_started: Arc::new(Mutex::new(0)),
        }
    }
    fn load(&mut self) {
        self.count = 0;
        if let Some(s) = &self.store {
            self.count = s
                .get("probe", self.name.as_bytes())
                .unwrap()
                .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
                .unwrap_or(0);
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        log(&self.log, format!("start {}", self.name));
        let mut left = self.panic_in_started.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            drop(left);
            panic!("panic in started() of {}", self.name);
        }
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        log(&self.log, format!("stop {}", self.name));
    }
}

impl Supervised for Probe {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.load();
    }
}

/// Adds to the durable count and returns it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct Add(pub u64);

impl Handler<Add> for Probe {
    type Result = u64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> u64 {
        self.count += m.0; // updated in memory first: a panic below leaves it half-done
        if m.0 == 13 {
            panic!("unlucky {}", m.0);
        }
        if let Some(s) = &self.store {
            s.insert("probe", self.name.as_bytes(), &self.count.to_be_bytes())
                .unwrap();
        }
        self.count
    }
}

/// Panics in the handler.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for Probe {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("crash requested for {}", self.name);
    }
}

/// Stops the actor normally.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Exit;

impl Handler<Exit> for Probe {
    type Result = ();
    fn handle(&mut self, _: Exit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Schedules a panic in a timer.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PanicLater;

impl Handler<PanicLater> for Probe {
    type Result = ();
    fn handle(&mut self, _: PanicLater, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_millis(20), |act, _| {
            panic!("timer panic in {}", act.name)
        });
    }
}

/// Returns the count.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct Get;

impl Handler<Get> for Probe {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.count
    }
}

/// Waits until `f` holds, up to 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
