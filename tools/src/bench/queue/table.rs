//! The table `vigil-bench queue` prints for one run.

use super::Report;

/// Prints one run's rows, ratios, ceilings and end-to-end figures.
pub fn print(r: &Report) {
    println!(
        "queue: durable publish -> confirm, fsync per confirm, {}-byte payloads, {} in flight per publisher over the wire",
        r.payload, r.window
    );
    println!(
        "  {:<16} {:<9} {:>10} {:>12} {:>10} {:>10} {:>14} {:>14} {:>16}",
        "system",
        "confirm",
        "publishers",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "server us/msg",
        "client us/msg",
        "server MiB ½→end"
    );
    let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    for row in &r.rows {
        println!(
            "  {:<16} {:<9} {:>10} {:>12.0} {:>10.3} {:>10.3} {:>14} {:>14} {:>16}",
            row.system,
            row.confirm_mode,
            row.publishers,
            row.msgs_per_sec,
            row.confirm.p50_us / 1000.0,
            row.confirm.p99_us / 1000.0,
            us(row.server_cpu_us),
            us(row.client_cpu_us),
            match (row.server_rss_half_mib, row.server_rss_end_mib) {
                (Some(h), Some(e)) => format!("{h:.0} → {e:.0}"),
                _ => "-".to_owned(),
            }
        );
    }
    for q in &r.ratio_vs_redis {
        let over = match q.transport {
            super::Transport::Tcp => "over the bus",
            super::Transport::Unix => "over Unix sockets",
        };
        println!(
            "  vigil {over} / redis at {} publishers: {:.2}x",
            q.publishers, q.ratio
        );
    }
    let rate = |sys: &str, n: usize| {
        r.rows
            .iter()
            .find(|x| x.system == sys && x.publishers == n)
            .map(|x| x.msgs_per_sec)
    };
    // The in-process engine rows always wait for each confirm:
    // compared with Redis only when Redis does too.
    for row in r.rows.iter().filter(|x| x.system == "vigil" && r.window == 1) {
        if let Some(redis) = rate("redis", row.publishers) {
            println!(
                "  vigil engine in-process / redis at {} publishers: {:.2}x",
                row.publishers,
                row.msgs_per_sec / redis
            );
        }
    }
    if let Some(note) = &r.redis_note {
        println!("  redis: {note}");
    }
    if let Some(us) = r.durable_write_us {
        println!("  one durable write (4 KiB O_DIRECT + fdatasync) before the rows: {us:.0} us");
    }
    for c in &r.ceilings {
        println!(
            "  {} publishers over {}: ceiling publishers / one durable write = {:.0} msg/s; the node reached {:.2} of it",
            c.publishers,
            c.transport.name(),
            c.ceiling_msgs_per_sec,
            c.ratio
        );
    }
    println!(
        "  end to end publish -> deliver -> ack, engine in-process: {:.0} msg/s",
        r.end_to_end_msgs_per_sec
    );
    for e in &r.end_to_end_bus {
        println!(
            "  end to end through {} ({}, {} publishers, one consumer acking): {:.0} msg/s, publish -> delivery p50 {:.2} ms, p99 {:.2} ms",
            e.system,
            e.transport.name(),
            e.publishers,
            e.msgs_per_sec,
            e.deliver.p50_us / 1000.0,
            e.deliver.p99_us / 1000.0
        );
    }
}
