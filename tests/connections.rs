//! Bounded connections (issue 13, point 2), through the real binary on loopback: memory
//! under 10 000 idle connections (with the defaults, and with the shipped Kubernetes sidecar
//! values), the keep-alive and request-head timeouts (a slow-loris on the second request of
//! a connection included), and `server.max_connections`: idle connections closed for room,
//! new ones refused only when every connection is busy.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{anon_rss_bytes, echo, rss_bytes, Gateway, Opts};

fn routes(e: SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

/// One HTTP/1.1 GET on `s`; the status and whether the response said `Connection: close`.
/// `None` when the connection closed or failed before a whole response.
async fn get(s: &mut TcpStream, path: &str) -> Option<(u16, bool)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    read_response(s).await
}

/// Read one response (head, then `Content-Length` bytes of body).
async fn read_response(s: &mut TcpStream) -> Option<(u16, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let close = head.contains("\r\nconnection: close");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((status, close))
}

/// How long until the peer closes `s` (EOF or reset), at most `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(n)) if n > 0 => continue,
            Ok(_) => return Some(start.elapsed()),
        }
    }
}

/// Raise this process's soft limit of open files to its hard limit (children inherit it),
/// with util-linux's `prlimit` (the crate forbids `unsafe`, so no `setrlimit` here). The
/// limit now in force.
fn raise_nofile() -> u64 {
    let read = || {
        let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("open files line")
            .to_string();
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
        (num(f[3]), num(f[4]))
    };
    let (soft, hard) = read();
    if soft < hard {
        let target = hard.min(1 << 20);
        let prlimit = common::require("prlimit", "util-linux (raises the open-files limit)");
        let ok = std::process::Command::new(prlimit)
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={target}:{hard}"),
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "prlimit failed");
    }
    read().0
}

/// `n` connections to `addr`, each after one keep-alive request (so that each holds what a
/// served connection holds), opened 200 at a time. Connections the gateway closed or
/// refused are left out.
async fn hold_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(200);
        left -= batch;
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(addr).await.ok()?;
                    matches!(get(&mut s, "/idle").await, Some((200, false))).then_some(s)
                })
            })
            .collect();
        for t in tasks {
            if let Some(s) = t.await.unwrap() {
                held.push(s);
            }
        }
    }
    held
}

/// A normal client, one request per 50 ms on a new connection each time, until `stop`;
/// every answer that was not 200, as (when, what).
fn normal_client(
    addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut bad) = (0, Vec::new());
        let start = Instant::now();
        while !*stop.borrow() {
            let r = tokio::time::timeout(Duration::from_secs(5), async {
                let mut s = TcpStream::connect(addr).await.ok()?;
                get(&mut s, "/normal").await
            })
            .await;
            match r {
                Ok(Some((200, _))) => ok += 1,
                other => bad.push(format!("{:?}: {other:?}", start.elapsed())),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (ok, bad)
    })
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The flood and its figures: `rounds` times, `n` connections opened against a gateway with
/// `server` settings, each served once and then held idle by the client until all are open,
/// then closed. Per round the gateway's peak RSS, and its RSS 3 s after the client closed
/// them (the normal client's traffic going on); peak descriptors over all rounds; the
/// normal client's tally.
struct Flood {
    served: usize,
    baseline: u64,
    peaks: Vec<u64>,
    /// Peak anonymous RSS per round (see `common::anon_rss_bytes`).
    anon_peaks: Vec<u64>,
    after_close: Vec<u64>,
    base_fds: usize,
    peak_fds: usize,
    normal_ok: usize,
    normal_bad: Vec<String>,
}

async fn flood(server: &str, n: usize, rounds: usize) -> Flood {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    let e = echo().await;
    let gw = Gateway::start_with(
        &routes(e),
        Opts {
            server_extra: server.to_string(),
            log_extra: "access_log = false".into(),
            ..Opts::default()
        },
    )
    .await;
    let pid = gw.pid();
    // Warm up (threads, pools, the first allocations), then the baseline.
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        assert_eq!(get(&mut s, "/warm").await.map(|r| r.0), Some(200));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_bytes(pid);
    let base_fds = fds(pid);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let normal = normal_client(gw.addr, stop_rx);
    let (peak, peak_anon, peak_fds, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let watch = tokio::spawn({
        let (peak, peak_anon, peak_fds, done) = (
            peak.clone(),
            peak_anon.clone(),
            peak_fds.clone(),
            done.clone(),
        );
        async move {
            let mut tick = 0u32;
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                peak_anon.fetch_max(anon_rss_bytes(pid), Ordering::Relaxed);
                if tick % 10 == 0 {
                    peak_fds.fetch_max(fds(pid), Ordering::Relaxed);
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (mut served, mut peaks, mut after_close) = (usize::MAX, Vec::new(), Vec::new());
    let mut anon_peaks = Vec::new();
    for _ in 0..rounds {
        peak.store(0, Ordering::Relaxed);
        peak_anon.store(0, Ordering::Relaxed);
        let held = hold_idle(gw.addr, n).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        served = served.min(held.len());
        drop(held);
        tokio::time::sleep(Duration::from_secs(3)).await;
        peaks.push(peak.load(Ordering::Relaxed));
        anon_peaks.push(peak_anon.load(Ordering::Relaxed));
        after_close.push(rss_bytes(pid));
    }
    stop_tx.send(true).unwrap();
    done.store(true, Ordering::Relaxed);
    let (normal_ok, normal_bad) = normal.await.unwrap();
    watch.await.unwrap();
    assert!(
        gw.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        gw.log()
    );
    for l in gw.log().lines().filter(|l| l.contains("connection limit")) {
        eprintln!("gateway: {l}");
    }
    Flood {
        served,
        baseline,
        peaks,
        anon_peaks,
        after_close,
        base_fds,
        peak_fds: peak_fds.load(Ordering::Relaxed),
        normal_ok,
        normal_bad,
    }
}

const MIB: u64 = 1 << 20;

/// The connections the flood opens: 10 000, or as many as this process's open-files limit
/// allows (each side of a loopback connection is one descriptor in each process).
/// The two floods run one at a time: together they would need 20 000 client sockets in this
/// process, the usual hard open-files limit (connections then fail with EMFILE).
static FLOOD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn flood_size() -> usize {
    let limit = raise_nofile();
    let n = 10_000usize.min(limit.saturating_sub(500) as usize);
    if n < 10_000 {
        eprintln!("open-files limit {limit}: flooding with {n} connections instead of 10 000");
    }
    assert!(
        n >= 1_000,
        "open-files limit {limit} is too low for this test"
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_under_the_memory_bound_and_a_client_is_served() {
    let _one_flood = FLOOD.lock().await;
    let n = flood_size();
    let f = flood("max_connections = 20000", n, 2).await;
    let growth = f.peaks[0].saturating_sub(f.baseline);
    let per_conn = growth / f.served.max(1) as u64;
    eprintln!(
        "{} idle connections: baseline {} MiB, peak {} MiB (+{} MiB, {} KiB per connection), peak descriptors {} (baseline {}), {} MiB 3 s after they closed; a second flood: peak {} MiB, {} MiB after; normal client {} ok, {} failed",
        f.served,
        f.baseline / MIB,
        f.peaks[0] / MIB,
        growth / MIB,
        per_conn / 1024,
        f.peak_fds,
        f.base_fds,
        f.after_close[0] / MIB,
        f.peaks[1] / MIB,
        f.after_close[1] / MIB,
        f.normal_ok,
        f.normal_bad.len()
    );
    assert_eq!(f.served, n, "every connection is served under the limit");
    assert!(f.peak_fds >= f.base_fds + n, "all {n} were open at once");
    // Measured 15 KiB per idle connection (this debug build; 15-16 KiB in release); the
    // bound leaves room for allocator slack. Before: ~125 KiB (debug), mostly Pingora's
    // 64 KiB read buffer and its request future, held while waiting for a request.
    assert!(
        per_conn <= 24 * 1024,
        "{per_conn} bytes per idle connection"
    );
    // What the first flood's connections held is used again by the second's, whether or
    // not the allocator gave it back to the OS in between. Allocator slack varies from run
    // to run (seen: +16 MiB on +152 MiB, 10.5 %); a leak of what the connections held would
    // add about their whole growth again.
    assert!(
        f.peaks[1] <= f.peaks[0] + growth / 5,
        "second flood: peak {} MiB after {} MiB",
        f.peaks[1] / MIB,
        f.peaks[0] / MIB
    );
    assert!(
        f.normal_bad.is_empty(),
        "normal client failed: {:?}",
        f.normal_bad
    );
    assert!(
        f.normal_ok >= 10,
        "normal client served {} times",
        f.normal_ok
    );
}

/// `deploy/sidecar.toml`'s `[server]` values (connection limits and timeouts, threads) and
/// the container memory limit of `deploy/kubernetes/sidecar.yaml`.
fn shipped_sidecar() -> (String, u64) {
    let root = env!("CARGO_MANIFEST_DIR");
    let toml_text = std::fs::read_to_string(format!("{root}/deploy/sidecar.toml")).unwrap();
    let doc: toml::Table = toml_text.parse().unwrap();
    let server = doc["server"].as_table().unwrap();
    let mut extra = String::new();
    for key in [
        "max_connections",
        "keepalive_timeout",
        "request_header_timeout",
    ] {
        let v = server
            .get(key)
            .unwrap_or_else(|| panic!("deploy/sidecar.toml sets server.{key}"));
        extra.push_str(&format!("{key} = {v}\n"));
    }
    let yaml = std::fs::read_to_string(format!("{root}/deploy/kubernetes/sidecar.yaml")).unwrap();
    // The ConfigMap there is the same file: the same values.
    for key in [
        "max_connections",
        "keepalive_timeout",
        "request_header_timeout",
    ] {
        assert!(
            yaml.contains(&format!("{key} = {}", server[key])),
            "sidecar.yaml's config sets {key} as deploy/sidecar.toml does"
        );
    }
    let limit = yaml
        .lines()
        .find_map(|l| l.split("limits: { memory: ").nth(1))
        .and_then(|r| r.split("Mi").next())
        .and_then(|m| m.trim().parse::<u64>().ok())
        .expect("a memory limit in Mi in sidecar.yaml");
    (extra, limit * MIB)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_sidecar_limits_survive_the_flood_within_the_container_memory_limit() {
    let _one_flood = FLOOD.lock().await;
    let n = flood_size();
    let (server, limit) = shipped_sidecar();
    let f = flood(&server, n, 1).await;
    let max: usize = server
        .lines()
        .find_map(|l| l.strip_prefix("max_connections = "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "sidecar values ({}): {n} connections served one request each and held; peak {} descriptors (baseline {}); peak RSS {} MiB ({} MiB anonymous) of the {} MiB container limit; normal client {} ok, {} failed",
        server.trim().replace('\n', "; "),
        f.peak_fds,
        f.base_fds,
        f.peaks[0] / MIB,
        f.anon_peaks[0] / MIB,
        limit / MIB,
        f.normal_ok,
        f.normal_bad.len()
    );
    // What the flood makes the gateway hold is anonymous memory: it must stay within half
    // the limit (the rest: sessions and the app's other work). RSS adds the mapped binary,
    // ~35 MiB of clean file pages for this debug build (a few MiB released), which the kernel
    // drops under the limit rather than kill; RSS must still fit the limit whole.
    assert!(
        f.anon_peaks[0] < limit / 2,
        "peak anonymous RSS {} MiB with a {} MiB limit",
        f.anon_peaks[0] / MIB,
        limit / MIB
    );
    assert!(
        f.peaks[0] < limit,
        "peak RSS {} MiB with a {} MiB limit",
        f.peaks[0] / MIB,
        limit / MIB
    );
    assert!(
        f.normal_bad.is_empty(),
        "normal client failed: {:?}",
        f.normal_bad
    );
    // Idle connections were closed for the new ones: never more than the limit open, plus
    // the upstream connections of the (at most 200) requests in flight and the new
    // connections waiting for the room being made.
    assert_eq!(f.served, n);
    assert!(
        f.peak_fds <= f.base_fds + max + 2 * 200 + 16,
        "{} descriptors open with max_connections = {max}",
        f.peak_fds
    );
}

async fn gateway_with(server: &str) -> Gateway {
    let e = echo().await;
    Gateway::start_with(
        &routes(e),
        Opts {
            server_extra: server.to_string(),
            ..Opts::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_on_the_second_request_is_closed_within_the_head_timeout() {
    let gw = gateway_with("request_header_timeout = \"2s\"\nkeepalive_timeout = \"30s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut s, "/first").await, Some((200, false)));
    // The second request, one byte every 300 ms: each read alone is quick, the head never
    // completes.
    let head =
        b"GET /second HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut closed = None;
    for b in head {
        if s.write_all(&[*b]).await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        let mut chunk = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Err(_) => {}
            Ok(_) => {
                closed = Some(started.elapsed());
                break;
            }
        }
    }
    let closed = closed.expect("still open after the whole slow head (over 20 s)");
    eprintln!("slow second head: connection closed {closed:?} after its first byte");
    assert!(
        closed >= Duration::from_millis(1700) && closed <= Duration::from_millis(3500),
        "closed after {closed:?}; the head timeout is 2 s"
    );

    // The first request has the same bound, from the connection's start.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(6)).await;
    eprintln!("incomplete first head: closed after {t:?}");
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1700)),
        "first head: {t:?}"
    );
    // A silent connection too.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let t = closed_within(&mut s, Duration::from_secs(6)).await;
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1700)),
        "silent: {t:?}"
    );
    // A head that completes in time is served, slow or not.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut s, "/a").await, Some((200, false)));
    for part in ["GET /b HTTP/1.1\r\n", "Host: test\r\n", "\r\n"] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(part.as_bytes()).await.unwrap();
    }
    assert_eq!(read_response(&mut s).await, Some((200, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_keepalive_timeout() {
    let gw = gateway_with("keepalive_timeout = \"2s\"\nrequest_header_timeout = \"10s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut s, "/one").await, Some((200, false)));
    // Used again within the timeout: still open.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&mut s, "/two").await, Some((200, false)));
    let t = closed_within(&mut s, Duration::from_secs(8)).await;
    eprintln!("idle keep-alive connection closed after {t:?}");
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(1700) && t <= Duration::from_millis(3500)),
        "closed after {t:?}; the keep-alive timeout is 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_limit_idle_connections_make_room_and_busy_ones_are_never_cut() {
    let gw = gateway_with("max_connections = 4").await;
    // Four idle keep-alive connections fill the table.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        assert_eq!(get(&mut s, "/idle").await, Some((200, false)));
        idle.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fifth is served: the oldest idle one was closed for it, the others still work.
    let mut fifth = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut fifth, "/fifth").await, Some((200, false)));
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(2))
            .await
            .is_some(),
        "the oldest idle connection was closed for room"
    );
    for s in &mut idle[1..] {
        assert_eq!(get(s, "/still").await, Some((200, false)));
    }
    drop(idle);
    drop(fifth);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Four requests in progress (the upstream takes 2 s): a fifth connection is refused
    // (closed without an answer), and the four finish and keep working.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /slow?echo_sleep_ms=2000 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    // All four are in progress (not a fixed pause that a loaded machine may outlast).
    gw.wait_in_flight(4).await;
    let started = Instant::now();
    let mut refused = TcpStream::connect(gw.addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), get(&mut refused, "/over")).await;
    assert!(
        matches!(answer, Ok(None)),
        "over the limit with every connection busy: {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "refused at once"
    );
    for s in &mut busy {
        assert_eq!(read_response(s).await, Some((200, false)));
        assert_eq!(get(s, "/again").await, Some((200, false)));
    }
    assert!(
        gw.log().contains("connection limit reached"),
        "the refusal is logged:\n{}",
        gw.log()
    );
}

#[test]
fn the_connection_settings_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[server]\nmax_connections = 0\nkeepalive_timeout = \"0s\"\nrequest_header_timeout = \"10m\"\nshutdown_delay = \"soon\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "c.toml:2:19: server.max_connections: must be between 1 and 1000000",
        "c.toml:3:21: server.keepalive_timeout: must be between 1s and 1h",
        "c.toml:4:26: server.request_header_timeout: must be between 1s and 5m",
        "c.toml:5:18: server.shutdown_delay: invalid duration",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

/// An HTTP/2 cleartext client that says hello (preface and an empty SETTINGS, then the ACK
/// of the server's) and nothing else.
async fn h2_hello(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap();
    s
}

/// The frame types the server sent on `s` until it closed it (`None`: still open after
/// `limit`).
async fn h2_frames_until_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
        }
    }
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= buf.len() {
        let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
        types.push(buf[at + 3]);
        at += 9 + len;
    }
    Some(types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_for_room_and_after_the_head_timeout() {
    let e = echo().await;
    let gw = Gateway::start_with(
        &routes(e),
        Opts {
            listener_extra: "h2c = true".into(),
            server_extra: "max_connections = 4\nrequest_header_timeout = \"3s\"".into(),
            ..Opts::default()
        },
    )
    .await;
    // Four HTTP/2 connections that never open a stream fill the table.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(h2_hello(gw.addr).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A new client is served at once: the oldest idle HTTP/2 connection made room, with a
    // GOAWAY (frame type 7).
    let started = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut s, "/new").await, Some((200, false)));
    eprintln!(
        "served beside 4 idle HTTP/2 connections in {:?}",
        started.elapsed()
    );
    let frames = h2_frames_until_close(&mut idle[0], Duration::from_secs(2)).await;
    eprintln!("oldest idle HTTP/2 connection, frames before close: {frames:?}");
    assert!(
        frames.as_ref().is_some_and(|f| f.contains(&7)),
        "the oldest idle HTTP/2 connection closed with a GOAWAY: {frames:?}"
    );
    drop(s);
    // The others never sent a HEADERS: closed after request_header_timeout (3 s) from their start.
    for s in &mut idle[1..] {
        let f = h2_frames_until_close(s, Duration::from_secs(6)).await;
        assert!(
            f.is_some_and(|f| f.contains(&7)),
            "idle HTTP/2 connection closed"
        );
    }
    let t = started.elapsed();
    eprintln!("idle HTTP/2 connections closed by {t:?} after the new client");
    assert!(t >= Duration::from_millis(2000), "closed too early: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_is_cut_and_a_fast_one_is_served() {
    let gw = gateway_with("max_connections = 4").await;
    // A body that arrives at a normal pace is served.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let body = vec![b'x'; 200_000];
    s.write_all(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: 200000\r\n\r\n")
        .await
        .unwrap();
    for part in body.chunks(20_000) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(200));

    // Content-Length 100000, one byte a second: cut after about BODY_TIMEOUT (30 s).
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut = None;
    while started.elapsed() < Duration::from_secs(50) {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut chunk)).await {
            Err(_) => {}
            Ok(_) => {
                cut = Some(started.elapsed());
                break;
            }
        }
        if slow.write_all(b"x").await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("a body at one byte a second still held its connection after 50 s");
    eprintln!("slow body (1 byte/s): connection cut after {cut:?}");
    assert!(
        cut >= Duration::from_secs(28) && cut <= Duration::from_secs(40),
        "cut after {cut:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_is_made_from_idle_connections_first_never_from_a_progressing_keepalive_head() {
    let gw = gateway_with("max_connections = 3").await;
    // A: the oldest, served once, idle; B: newer, idle; C: a slow-loris on its first head.
    let mut a = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut a, "/a").await, Some((200, false)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut b, "/b").await, Some((200, false)));
    let mut c = TcpStream::connect(gw.addr).await.unwrap();
    c.write_all(b"GET /c HTTP/1.1\r\n").await.unwrap();
    // A starts its next head and keeps sending it.
    a.write_all(b"GET /a2 HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // D arrives: B (idle, no byte of a next request) is closed, not A.
    let mut d = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut d, "/d").await, Some((200, false)));
    assert!(
        closed_within(&mut b, Duration::from_secs(2))
            .await
            .is_some(),
        "the idle connection made room"
    );
    drop(d);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // F: a request in progress (the upstream takes 3 s) fills the table again.
    let mut f = TcpStream::connect(gw.addr).await.unwrap();
    f.write_all(b"GET /f?echo_sleep_ms=3000 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // E arrives with no idle connection left: C (first head, silent for over 1 s) is closed;
    // A, mid-head on a later request, keeps progressing and is served.
    for part in ["X-A: 1\r\n", "X-B: 2\r\n"] {
        a.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut e = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut e, "/e").await, Some((200, false)));
    assert!(
        closed_within(&mut c, Duration::from_secs(2))
            .await
            .is_some(),
        "the stalled first head made room"
    );
    a.write_all(b"Host: test\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut a).await, Some((200, false)));
    assert_eq!(read_response(&mut f).await, Some((200, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_large_response_frees_its_connection() {
    let gw = gateway_with("max_connections = 4").await;
    // 64 MiB streamed; the client reads nothing for 40 s, then drains what is left.
    let total = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(format!("GET /big?echo_bytes={total} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let started = Instant::now();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let eof = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got += n,
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    eprintln!(
        "reader silent for 40 s: {} KiB were buffered, then the connection was {}",
        got / 1024,
        if eof { "closed" } else { "still open" }
    );
    assert!(
        eof && got < total,
        "the stalled response was cut (write timeout 30 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelined_requests_get_one_answer_that_says_connection_close() {
    let gw = gateway_with("max_connections = 4").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: test\r\n\r\nGET /two HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s)).await;
    assert_eq!(first, Ok(Some((200, true))), "the first answer says close");
    let t = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(
        t.is_some(),
        "then the connection closes (the second is not served)"
    );
    // One request alone still keeps its connection.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut s, "/alone").await, Some((200, false)));
    assert_eq!(get(&mut s, "/again").await, Some((200, false)));
}
