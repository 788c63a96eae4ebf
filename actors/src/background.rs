//! Work a peer asks for that costs the node seconds of CPU (audits, epoch
//! ranges, continuity proofs) runs here: on a small pool of threads at a
//! lower CPU priority (nice +10), so that when the machine is busy it yields
//! to the node's own work (the VDF, verifying epochs, answering challenges,
//! the RPC) instead of competing with it as an equal. When the machine is
//! idle it runs at full speed: a lower priority only changes who waits when
//! both want a core. RocksDB lowers its compaction threads the same way.
//!
//! The per-peer limits (`net::limits`) bound how much of this work there is;
//! this bounds what it costs everything else while it runs.

use std::sync::OnceLock;

/// Threads in the pool (the limiter admits one audit, four ranges and four
/// continuity answers at once; more threads would only queue on 2 cores).
const THREADS: usize = 2;

/// How much lower than the rest of the node the pool runs (`nice`, 0..=19).
pub const NICENESS: i32 = 10;

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(THREADS)
            .thread_name(|i| format!("vigil-peer-work-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .expect("the peer work pool starts")
    })
}

/// Runs `f` on the low-priority pool and waits for it without blocking the
/// caller's task. `None` when `f` panicked (the pool itself lives on).
pub async fn run<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool().spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out.ok());
    });
    rx.await.ok().flatten()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux a thread id names one thread for get/setpriority(2), and a
    // new thread starts at its creator's niceness: lower it from there.
    // SAFETY: the calls take plain integers and touch no memory of ours.
    let rc = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICENESS).min(19))
    };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the priority of a peer work thread; peers' audits compete with the node's own work"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn my_nice() -> i32 {
        // SAFETY: plain integers in, an integer out.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[tokio::test]
    async fn work_runs_at_a_lower_priority_than_the_caller_and_returns_its_result() {
        let caller = my_nice();
        let (nice, name) = run(|| (my_nice(), std::thread::current().name().map(str::to_owned)))
            .await
            .expect("the job ran");
        assert_eq!(
            nice,
            (caller + NICENESS).min(19),
            "pool threads run at nice +{NICENESS}"
        );
        assert!(name.unwrap_or_default().starts_with("vigil-peer-work-"));
        assert_eq!(my_nice(), caller, "the caller's own priority is untouched");
    }

    #[tokio::test]
    async fn a_panicking_job_gives_none_and_the_pool_keeps_working() {
        assert_eq!(run(|| -> u8 { panic!("a bad job") }).await, None);
        assert_eq!(run(|| 7u8).await, Some(7));
    }
}
