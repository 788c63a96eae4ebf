//! Several runs of `vigil-bench queue --runs N` summed up: the median, min
//! and max of every row's rate, p99 and server CPU, and of every ratio (the
//! machines are noisy: one run proves little).

use serde::Serialize;

use super::{Report, Transport};

/// Median, min and max over the runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// The middle run (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The lowest run.
    pub min: f64,
    /// The highest run.
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One row over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct RowSummary {
    /// As in [`super::Row`].
    pub system: String,
    /// As in [`super::Row`].
    pub confirm_mode: &'static str,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Confirmed messages per second.
    pub msgs_per_sec: Spread,
    /// p99 publish -> confirm, ms.
    pub p99_ms: Spread,
    /// Server CPU per message, µs.
    pub server_cpu_us: Option<Spread>,
}

/// A ratio over the runs, per transport and publisher count.
#[derive(Debug, Clone, Serialize)]
pub struct RatioSummary {
    /// How the clients connected.
    pub transport: Transport,
    /// Concurrent publishers.
    pub publishers: usize,
    /// The ratio.
    pub ratio: Spread,
}

/// Every run summed up.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Runs measured.
    pub runs: usize,
    /// Publishes in flight per publisher.
    pub window: usize,
    /// Every row.
    pub rows: Vec<RowSummary>,
    /// vigil node / Redis msg/s.
    pub ratio_vs_redis: Vec<RatioSummary>,
    /// The node's msg/s over publishers / one durable write (window 1).
    pub ratio_to_ceiling: Vec<RatioSummary>,
    /// One durable write, µs.
    pub durable_write_us: Option<Spread>,
}

/// One ratio per (transport, publishers) of a run.
type Picked = Vec<(Transport, usize, f64)>;

/// Sums up `reports` (runs of the same options).
pub fn summarize(reports: &[Report]) -> Summary {
    let mut rows: Vec<RowSummary> = Vec::new();
    let first = reports.first();
    for row in first.map(|r| r.rows.as_slice()).unwrap_or_default() {
        let same = || {
            reports.iter().filter_map(|r| {
                r.rows
                    .iter()
                    .find(|x| x.system == row.system && x.publishers == row.publishers)
            })
        };
        let cpu: Vec<f64> = same().filter_map(|x| x.server_cpu_us).collect();
        rows.push(RowSummary {
            system: row.system.clone(),
            confirm_mode: row.confirm_mode,
            publishers: row.publishers,
            msgs_per_sec: Spread::of(same().map(|x| x.msgs_per_sec).collect()).expect("this row"),
            p99_ms: Spread::of(same().map(|x| x.confirm.p99_us / 1000.0).collect()).expect("this row"),
            server_cpu_us: Spread::of(cpu),
        });
    }
    let ratios = |pick: &dyn Fn(&Report) -> Picked| {
        let mut out: Vec<RatioSummary> = Vec::new();
        for (t, n, _) in first.map(pick).unwrap_or_default() {
            let v = reports
                .iter()
                .flat_map(pick)
                .filter(|(t2, n2, _)| *t2 == t && *n2 == n)
                .map(|(_, _, r)| r)
                .collect();
            if let Some(ratio) = Spread::of(v) {
                out.push(RatioSummary {
                    transport: t,
                    publishers: n,
                    ratio,
                });
            }
        }
        out
    };
    Summary {
        runs: reports.len(),
        window: first.map_or(1, |r| r.window),
        rows,
        ratio_vs_redis: ratios(&|r| {
            r.ratio_vs_redis
                .iter()
                .map(|q| (q.transport, q.publishers, q.ratio))
                .collect()
        }),
        ratio_to_ceiling: ratios(&|r| {
            r.ceilings
                .iter()
                .map(|c| (c.transport, c.publishers, c.ratio))
                .collect()
        }),
        durable_write_us: Spread::of(reports.iter().filter_map(|r| r.durable_write_us).collect()),
    }
}

/// Prints `s` as a table.
pub fn print(s: &Summary) {
    println!(
        "queue: {} runs, {} in flight per publisher: median [min – max]",
        s.runs, s.window
    );
    println!(
        "  {:<16} {:<9} {:>5} {:>26} {:>22} {:>22}",
        "system", "confirm", "pubs", "msg/s", "p99 ms", "server us/msg"
    );
    let f =
        |v: &Spread, digits: usize| format!("{:.d$} [{:.d$} – {:.d$}]", v.median, v.min, v.max, d = digits);
    for r in &s.rows {
        println!(
            "  {:<16} {:<9} {:>5} {:>26} {:>22} {:>22}",
            r.system,
            r.confirm_mode,
            r.publishers,
            f(&r.msgs_per_sec, 0),
            f(&r.p99_ms, 3),
            r.server_cpu_us.as_ref().map_or("-".into(), |c| f(c, 1))
        );
    }
    for q in &s.ratio_vs_redis {
        println!(
            "  vigil node / redis, {} publishers over {}: {}x",
            q.publishers,
            q.transport.name(),
            f(&q.ratio, 2)
        );
    }
    if let Some(w) = &s.durable_write_us {
        println!("  one durable write (4 KiB O_DIRECT + fdatasync): {} us", f(w, 0));
    }
    for q in &s.ratio_to_ceiling {
        println!(
            "  vigil node / (publishers / one durable write), {} publishers over {}: {}",
            q.publishers,
            q.transport.name(),
            f(&q.ratio, 2)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_is_the_middle_run_and_the_extremes() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Spread::of(vec![]).is_none());
    }
}
