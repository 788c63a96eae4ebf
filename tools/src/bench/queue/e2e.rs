//! End to end: publish -> deliver -> ack, in-process and through a node
//! process and `redis-server`.

use std::time::{Duration, Instant};

use vigil_actors::queue::Publish;

use super::redis_rows::RedisServer;
use super::vigil::{engine, node_process};
use super::{EndToEnd, Percentiles, Transport};

pub(super) async fn end_to_end(publishers: usize, per: usize, payload: usize) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = engine(dir.path());
    let total = publishers * per;
    let waker = q.waker("e2e").expect("topic");
    let consumer = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < total {
                let notified = waker.notified();
                let (d, _) = q.fetch("e2e", "g", 512).expect("fetch");
                if d.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
                let seqs: Vec<u64> = d.iter().map(|m| m.envelope.seq).collect();
                q.ack_many("e2e", "g", &seqs).expect("ack");
                acked += seqs.len();
            }
        })
    };
    let t0 = Instant::now();
    let pubs: Vec<_> = (0..publishers)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    let msg = Publish {
                        sender: "bench".into(),
                        payload: vec![b'y'; payload],
                        ..Publish::default()
                    };
                    q.publish("e2e", msg).await.expect("publish");
                }
            })
        })
        .collect();
    for p in pubs {
        p.await.expect("publisher");
    }
    consumer.await.expect("consumer");
    total as f64 / t0.elapsed().as_secs_f64()
}

/// Publish -> deliver -> ack through a `vigil dev` node: `publishers` apps
/// publish `per` messages each (waiting for each confirm) to a durable
/// topic; one consumer app in a consumer group receives them and acks what
/// has arrived with one `ack` frame (`seqs`), up to [`ACKS_IN_FLIGHT`] such
/// frames outstanding. Each payload carries its send time, so the consumer
/// measures publish -> delivery.
pub(super) async fn end_to_end_bus(
    publishers: usize,
    per: usize,
    payload: usize,
    transport: Transport,
) -> Result<EndToEnd, String> {
    let (_node, url, token) = node_process("always", transport).await?;
    let connect = || crate::bus::BusClient::connect(&url, "bench", &token);
    let mut consumer = connect().await.map_err(|e| e.to_string())?;
    let sub = consumer
        .subscribe_with("e2e", Some("bench.e2e"), Some(1024))
        .await
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for _ in 0..publishers {
        clients.push(connect().await.map_err(|e| e.to_string())?);
    }
    let total = publishers * per;
    let t0 = Instant::now();
    // An ack frame's answer: every listed delivery acked.
    let all_acked = |v: serde_json::Value| match v["not_acked"].as_array() {
        Some(n) if n.is_empty() => Ok(()),
        _ => Err(format!("deliveries not acked: {v}")),
    };
    let receive = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        // A delivery that comes again (its lease ended) is acked, not counted twice.
        let mut seen = std::collections::HashSet::with_capacity(total);
        let mut acks = std::collections::VecDeque::new();
        while seen.len() < total {
            let Some(first) = consumer.next_msg(Duration::from_secs(30)).await else {
                return Err(format!("no delivery within 30 s after {} of {total}", lat.len()));
            };
            // What has arrived meanwhile, acked together in one frame, as
            // Redis's consumer acks each XREADGROUP batch with one XACK.
            let mut batch = vec![first];
            while batch.len() < 512 {
                match consumer.next_msg(Duration::ZERO).await {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            let now = t0.elapsed().as_nanos() as u64;
            let mut seqs = Vec::with_capacity(batch.len());
            for m in &batch {
                let seq = m["seq"].as_u64().ok_or("a delivery without seq")?;
                // A repeat (its lease ended before the ack arrived) needs no
                // ack of its own: the first one, processed after the repeat
                // was delivered, acks the delivery the session holds.
                if seen.insert(seq) {
                    let sent = sent_at(&crate::bus::payload(m)).ok_or("a delivery without its send time")?;
                    lat.push(now.saturating_sub(sent));
                    seqs.push(seq);
                }
            }
            if seqs.is_empty() {
                continue;
            }
            acks.push_back(consumer.start(serde_json::json!({ "op": "ack", "sub": sub, "seqs": seqs })));
            if acks.len() >= ACKS_IN_FLIGHT {
                all_acked(
                    acks.pop_front()
                        .expect("non-empty")
                        .await
                        .map_err(|e| e.to_string())?,
                )?;
            }
        }
        for a in acks {
            all_acked(a.await.map_err(|e| e.to_string())?)?;
        }
        Ok::<_, String>(lat)
    });
    let pubs: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                for _ in 0..per {
                    c.publish("e2e", &timed_payload(t0, payload))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    measured("vigil-node", transport, publishers, t0, pubs, receive).await
}

/// Batch acks an end-to-end consumer keeps outstanding, vigil and Redis alike.
const ACKS_IN_FLIGHT: usize = 8;

/// The ids and first field values of an `XREADGROUP` reply for one stream.
fn stream_entries(reply: redis::Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    use redis::Value;
    let mut out = Vec::new();
    let Value::Array(streams) = reply else {
        return out; // Nil: nothing within the block time.
    };
    for stream in streams {
        let Value::Array(mut kv) = stream else { continue };
        let Some(Value::Array(entries)) = kv.pop() else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            if let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (parts.next(), parts.next()) {
                let value = match fields.into_iter().nth(1) {
                    Some(Value::BulkString(v)) => v,
                    _ => Vec::new(),
                };
                out.push((id, value));
            }
        }
    }
    out
}

/// The send time (ns since the run's start) that leads a payload.
fn sent_at(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(&body[..20.min(body.len())])
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A payload of `size` bytes led by the send time.
fn timed_payload(t0: Instant, size: usize) -> Vec<u8> {
    let mut body = format!("{:<20}", t0.elapsed().as_nanos()).into_bytes();
    body.resize(size.max(20), b'x');
    body
}

/// The Redis side of [`end_to_end_bus`]: `XADD` by each publisher (waiting
/// for each reply), one consumer in a consumer group reading with
/// `XREADGROUP ... COUNT 512 BLOCK` and acking each batch with one `XACK`
/// (up to [`ACKS_IN_FLIGHT`] outstanding); every command fsynced
/// (`appendfsync always`).
pub(super) async fn end_to_end_redis(
    server: &RedisServer,
    publishers: usize,
    per: usize,
    payload: usize,
    transport: Transport,
) -> Result<EndToEnd, String> {
    let client = redis::Client::open(server.url(transport)).map_err(|e| e.to_string())?;
    let key = format!("e2e{}", transport.suffix());
    let mut reader = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut reader)
        .await
        .map_err(|e| e.to_string())?;
    let conns = super::redis_rows::connections(&client, publishers).await?;
    let total = publishers * per;
    let t0 = Instant::now();
    let k = key.clone();
    let receive = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        let mut acks = std::collections::VecDeque::new();
        while lat.len() < total {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(30_000)
                .arg("STREAMS")
                .arg(&k)
                .arg(">")
                .query_async(&mut reader)
                .await
                .map_err(|e| e.to_string())?;
            let entries = stream_entries(reply);
            if entries.is_empty() {
                return Err(format!("no delivery within 30 s after {} of {total}", lat.len()));
            }
            let now = t0.elapsed().as_nanos() as u64;
            let mut ack = redis::cmd("XACK");
            ack.arg(&k).arg("g");
            for (id, body) in &entries {
                lat.push(now.saturating_sub(sent_at(body).ok_or("an entry without its send time")?));
                ack.arg(id);
            }
            let mut c = reader.clone();
            acks.push_back(tokio::spawn(async move { ack.query_async::<u64>(&mut c).await }));
            if acks.len() >= ACKS_IN_FLIGHT {
                let a = acks.pop_front().expect("non-empty").await;
                a.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            }
        }
        for a in acks {
            a.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(lat)
    });
    let pubs: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    redis::cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("p")
                        .arg(timed_payload(t0, payload))
                        .query_async::<String>(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    measured("redis", transport, publishers, t0, pubs, receive).await
}

/// A publisher's or the consumer's task.
type Task<T> = tokio::task::JoinHandle<Result<T, String>>;

/// Waits for the publishers, then the consumer (its publish -> delivery
/// latencies, one per message): the row.
async fn measured(
    system: &str,
    transport: Transport,
    publishers: usize,
    t0: Instant,
    pubs: Vec<Task<()>>,
    receive: Task<Vec<u64>>,
) -> Result<EndToEnd, String> {
    for p in pubs {
        p.await.map_err(|e| e.to_string())??;
    }
    let lat = receive.await.map_err(|e| e.to_string())??;
    Ok(EndToEnd {
        system: system.into(),
        transport,
        publishers,
        msgs_per_sec: lat.len() as f64 / t0.elapsed().as_secs_f64(),
        deliver: Percentiles::from_nanos(lat),
    })
}
