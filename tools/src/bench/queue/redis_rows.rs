//! The Redis rows: a `redis-server` this benchmark starts and stops, and
//! `XADD` publishers over TCP or its Unix socket.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CpuMark, Row, RssWatch, Transport};

/// One multiplexed connection per publisher.
pub(super) async fn connections(
    client: &redis::Client,
    n: usize,
) -> Result<Vec<redis::aio::MultiplexedConnection>, String> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(conns)
}

/// A `redis-server` with `appendfsync always` in a temp dir, killed on drop.
pub(super) struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// The client URL for `transport`.
    pub(super) fn url(&self, transport: Transport) -> String {
        match transport {
            Transport::Tcp => format!("redis://127.0.0.1:{}/", self.port),
            Transport::Unix => format!("redis+unix://{}", self.dir.path().join("redis.sock").display()),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start_redis() -> Result<RedisServer, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .arg("--unixsocket")
        .arg(dir.path().join("redis.sock"))
        .args(["--unixsocketperm", "700"])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start redis-server ({e}): install it with `apt-get install redis-server`")
        })?;
    let sock = dir.path().join("redis.sock");
    let server = RedisServer { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !sock.exists() {
        if Instant::now() > deadline {
            return Err("redis-server did not start listening within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

pub(super) async fn redis_row(
    server: &RedisServer,
    transport: Transport,
    publishers: usize,
    per: usize,
    payload: usize,
    window: usize,
) -> Result<Row, String> {
    let pid = server.child.id();
    let client = redis::Client::open(server.url(transport)).map_err(|e| e.to_string())?;
    let conns = connections(&client, publishers).await?;
    let key = format!("bench{publishers}{}", transport.suffix());
    let cpu = CpuMark::now(Some(pid));
    let rss = RssWatch::start(Some(pid), publishers * per);
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let key = key.clone();
            let confirmed = rss.confirmed.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let body = vec![b'x'; payload];
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..per {
                    // A multiplexed connection pipelines concurrent commands on one socket.
                    let (mut c, key, body) = (c.clone(), key.clone(), body.clone());
                    let xadd = async move {
                        redis::cmd("XADD")
                            .arg(&key)
                            .arg("*")
                            .arg("p")
                            .arg(&body)
                            .query_async::<String>(&mut c)
                            .await
                    };
                    if window <= 1 {
                        // One at a time: awaited here, no task of its own to pay for.
                        let t = Instant::now();
                        xadd.await?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        confirmed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Spawned so the command is sent now, like the vigil client's.
                    in_flight.push_back((Instant::now(), tokio::spawn(xadd)));
                    while in_flight.len() >= window || (i + 1 == per && !in_flight.is_empty()) {
                        let (t, f) = in_flight.pop_front().expect("non-empty");
                        f.await
                            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))??;
                        lat.push(t.elapsed().as_nanos() as u64);
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, redis::RedisError>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Row::measured(
        (format!("redis{}", transport.suffix()), "fsync"),
        publishers,
        per,
        secs,
        all,
        &cpu,
        rss,
    )
    .await)
}
