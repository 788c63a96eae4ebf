//! `vigil-bench supervision`: the cost of restart-on-crash.
//!
//! 1. Panic -> restarted -> first reply: an actor under a `one_for_one`
//!    supervisor (no backoff, unlimited intensity, as a crash loop would be
//!    measured without policy delays) gets a message that panics, then a ping;
//!    the time from queuing the panic to the ping's reply is one sample.
//! 2. Throughput: pipelined request/response (batches of 256 in flight) to a
//!    supervised actor and to a plain `Actor::start()` actor, alternating
//!    rounds in the same process; the ratio compares medians.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use serde::Serialize;
use vigil_actors::supervision::{
    start_tree, Backoff, ChildSpec, Intensity, Registry, Strategy, SupervisorSpec,
};

use super::{median, Percentiles};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Crashes to time.
    pub crashes: usize,
    /// Messages per throughput round.
    pub messages: usize,
    /// Throughput rounds per actor kind.
    pub rounds: usize,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Panic -> restarted -> first reply.
    pub restart_latency: Percentiles,
    /// Replies per second, supervised actor (median of rounds).
    pub supervised_msgs_per_sec: f64,
    /// Replies per second, plain actix actor (median of rounds).
    pub plain_msgs_per_sec: f64,
    /// Replies per second through `SupervisedAddr::call` (poison-message protection).
    pub call_msgs_per_sec: f64,
    /// 1 - supervised / plain, percent (negative: supervised was faster).
    pub overhead_percent: f64,
    /// Options used.
    pub crashes: usize,
    /// Options used.
    pub messages: usize,
    /// Options used.
    pub rounds: usize,
}

struct Bench {
    count: u64,
}

impl Actor for Bench {
    type Context = Context<Self>;
}

impl Supervised for Bench {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.count = 0;
    }
}

#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
struct Ping;

#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Ping> for Bench {
    type Result = u64;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u64 {
        self.count += 1;
        self.count
    }
}

impl Handler<Crash> for Bench {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("benchmark crash");
    }
}

async fn throughput(addr: &Addr<Bench>, messages: usize) -> f64 {
    let t0 = Instant::now();
    let mut left = messages;
    while left > 0 {
        let batch = left.min(256);
        let replies = join_all((0..batch).map(|_| addr.send(Ping))).await;
        assert!(replies.iter().all(|r| r.is_ok()), "a ping failed");
        left -= batch;
    }
    messages as f64 / t0.elapsed().as_secs_f64()
}

/// Runs the benchmark on a fresh actix system.
pub fn run(opts: &Options, progress: &dyn Fn(&str)) -> Report {
    actix_rt::System::new().block_on(run_async(opts.clone(), progress))
}

async fn run_async(opts: Options, progress: &dyn Fn(&str)) -> Report {
    let spec = SupervisorSpec::new("bench", Strategy::OneForOne)
        .intensity(Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_millis(1),
        })
        .backoff(Backoff::none())
        .child(ChildSpec::actor("supervised", || Bench { count: 0 }));
    let registry = Registry::default();
    let _tree = start_tree(spec, registry.clone()).expect("valid tree");
    let sup = registry.get::<Bench>("supervised").expect("registered");
    let addr = sup.addr().clone();

    progress("restart latency");
    for _ in 0..100 {
        let _ = addr.try_send(Crash);
        let _ = addr.send(Ping).await;
    }
    let mut samples = Vec::with_capacity(opts.crashes);
    for _ in 0..opts.crashes {
        let t0 = Instant::now();
        addr.try_send(Crash).expect("mailbox has room");
        let first = addr.send(Ping).await.expect("reply after restart");
        samples.push(t0.elapsed().as_nanos() as u64);
        debug_assert_eq!(first, 1, "state was rebuilt by restarting()");
    }
    let restart_latency = Percentiles::from_nanos(samples);

    progress("throughput");
    let plain = Bench { count: 0 }.start();
    let (mut s, mut p, mut c) = (Vec::new(), Vec::new(), Vec::new());
    throughput(&addr, opts.messages / 10).await;
    throughput(&plain, opts.messages / 10).await;
    for _ in 0..opts.rounds {
        s.push(throughput(&addr, opts.messages).await);
        p.push(throughput(&plain, opts.messages).await);
        let t0 = Instant::now();
        let mut left = opts.messages;
        while left > 0 {
            let batch = left.min(256);
            let replies = join_all((0..batch).map(|_| sup.call(Ping))).await;
            assert!(replies.iter().all(|r| r.is_ok()), "a call failed");
            left -= batch;
        }
        c.push(opts.messages as f64 / t0.elapsed().as_secs_f64());
    }
    let (supervised, plain) = (median(s), median(p));
    Report {
        restart_latency,
        supervised_msgs_per_sec: supervised,
        plain_msgs_per_sec: plain,
        call_msgs_per_sec: median(c),
        overhead_percent: (1.0 - supervised / plain) * 100.0,
        crashes: opts.crashes,
        messages: opts.messages,
        rounds: opts.rounds,
    }
}
