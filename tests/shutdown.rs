//! Zero-drop shutdown and upgrade (issue 13, point 6), through the real binary on loopback:
//! steady load (clients that keep their connection alive and clients that open one per
//! request) across SIGTERM with a shutdown delay, and across a SIGQUIT hand-over to a
//! process started with `run --upgrade`.
//!
//! What "0 failed" counts: under SIGTERM, every request on a connection that was
//! established before the listener closed (`shutdown_delay` after the signal; 100 ms of
//! margin) must be answered 200, including the ones sent on such a connection after the
//! listener closed. Connection attempts after the close are refused (that is the point of
//! closing), and are counted apart. Across an upgrade, every request and every connection
//! attempt must succeed: the listening socket never closes.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{client, echo, Gateway, Opts, BIN};

fn routes(e: SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

/// Read one response (head, then `Content-Length` bytes of body): status and whether it
/// said `Connection: close`.
async fn read_response(s: &mut TcpStream) -> Result<(u16, bool), String> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let close = head.contains("\r\nconnection: close");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.map_err(|e| format!("body: {e}"))?;
        if n == 0 {
            return Err("closed in the body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, close))
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Sent {
    /// When its connection was established (since the load started).
    connected: Duration,
    /// When the request was written.
    at: Duration,
    reused: bool,
    result: Result<u16, String>,
}

#[derive(Default)]
struct Tally {
    sent: Vec<Sent>,
    /// Connection attempts that failed, and when.
    refused: Vec<Duration>,
}

/// `keepalive` clients that reuse their connection until told to close it, and `fresh`
/// clients that open one per request, looping until `stop`; each request waits 20 ms at
/// the upstream, so some are always in flight.
fn load(
    addr: SocketAddr,
    keepalive: usize,
    fresh: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Instant, Arc<Mutex<Tally>>, Vec<tokio::task::JoinHandle<()>>) {
    let start = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for i in 0..keepalive + fresh {
        let (tally, stop) = (tally.clone(), stop.clone());
        let reuse = i < keepalive;
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<(TcpStream, Duration, bool)> = None;
            while !*stop.borrow() {
                let (mut s, connected, reused) = match conn.take() {
                    Some(c) => c,
                    None => match TcpStream::connect(addr).await {
                        Ok(s) => (s, start.elapsed(), false),
                        Err(_) => {
                            tally.lock().unwrap().refused.push(start.elapsed());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let at = start.elapsed();
                let req = format!(
                    "GET /load?echo_sleep_ms=20 HTTP/1.1\r\nHost: test\r\n{}\r\n",
                    if reuse { "" } else { "Connection: close\r\n" }
                );
                let result = async {
                    s.write_all(req.as_bytes())
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                    read_response(&mut s).await
                }
                .await;
                if let Ok((_, false)) = result {
                    if reuse {
                        conn = Some((s, connected, true));
                    }
                }
                tally.lock().unwrap().sent.push(Sent {
                    connected,
                    at,
                    reused,
                    result: result.map(|r| r.0),
                });
            }
        }));
    }
    (start, tally, tasks)
}

fn failures(sent: &[Sent], cond: impl Fn(&Sent) -> bool) -> Vec<Sent> {
    sent.iter()
        .filter(|s| cond(s) && s.result != Ok(200))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_across_sigterm_loses_no_request_sent_before_the_listener_closed() {
    let e = echo().await;
    let delay = Duration::from_secs(2);
    let mut gw = Gateway::start_with(
        &routes(e),
        Opts {
            grace_period: "3s",
            server_extra: "shutdown_delay = \"2s\"".into(),
            log_extra: "access_log = false".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    // An idle keep-alive connection, used again only after the listener closed.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /idle HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, Ok((200, false)));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (start, tally, tasks) = load(gw.addr, 4, 2, stop_rx);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = start.elapsed();
    gw.signal("TERM");
    // Not ready at once, while the listener still accepts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let close = signalled + delay;
    // Past the close: the idle connection answers once more, with `Connection: close`.
    tokio::time::sleep((close + Duration::from_millis(500)).saturating_sub(start.elapsed())).await;
    idle.write_all(b"GET /idle-again HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut idle).await,
        Ok((200, true)),
        "an idle keep-alive connection after the listener closed"
    );
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "the listener is closed after the shutdown delay"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        gw.wait_exit(Duration::from_secs(15)).await,
        "non-zero exit:\n{}",
        gw.log()
    );

    let t = tally.lock().unwrap();
    let margin = Duration::from_millis(100);
    let before_close = |s: &Sent| s.connected + margin <= close;
    let counted: Vec<_> = t.sent.iter().filter(|s| before_close(s)).collect();
    let failed = failures(&t.sent, before_close);
    let in_delay = t
        .sent
        .iter()
        .filter(|s| !s.reused && s.connected > signalled && before_close(s))
        .count();
    let after_close_reused = counted.iter().filter(|s| s.at > close).count();
    let edge = t.sent.iter().filter(|s| !before_close(s)).count();
    let edge_failed = failures(&t.sent, |s| !before_close(s)).len();
    let refused_after = t.refused.iter().filter(|r| **r > close).count();
    let refused_before = t.refused.iter().filter(|r| **r + margin <= close).count();
    eprintln!(
        "SIGTERM at {signalled:?}, listener closed at {close:?}: {} requests on connections made before the close, {} failed; {in_delay} on new connections during the delay; {after_close_reused} sent after the close on open connections; {edge} on connections made within {margin:?} of the close ({edge_failed} failed); {refused_after} connection attempts refused after the close, {refused_before} before",
        counted.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert_eq!(refused_before, 0, "refused while the listener was open");
    assert!(
        in_delay > 10,
        "new connections were accepted during the delay"
    );
    assert!(counted.len() > 100, "load ran: {}", counted.len());
}

/// A process started with `run --upgrade`, killed with its handle.
struct Upgraded(std::process::Child);

impl Drop for Upgraded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_across_an_upgrade_loses_no_request() {
    let e = echo().await;
    let mut gw = Gateway::start_with(
        &routes(e),
        Opts {
            grace_period: "3s",
            log_extra: "access_log = false".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    // SIGQUIT with no process waiting for the sockets is refused: still serving.
    gw.signal("QUIT");
    // Wait for the signal's verdict (no fixed pause before the checks).
    common::eventually(Duration::from_secs(5), || async {
        gw.log().contains("SIGQUIT ignored")
    })
    .await;
    let r = client().get(gw.url("/still")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw.log().contains("SIGQUIT ignored"), "{}", gw.log());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (start, tally, tasks) = load(gw.addr, 4, 2, stop_rx);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let log = std::fs::File::create(gw.dir.path().join("new.log")).unwrap();
    let new = Upgraded(
        std::process::Command::new(BIN)
            .args(["run", "--upgrade", "-c"])
            .arg(&gw.config_path)
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the new process"),
    );
    let sock = gw.dir.path().join("upgrade.sock");
    let waiting = common::eventually(Duration::from_secs(4), || async { sock.exists() }).await;
    let new_log_path = gw.dir.path().join("new.log");
    let new_log = || std::fs::read_to_string(&new_log_path).unwrap_or_default();
    assert!(
        waiting,
        "the new process waits for the sockets:\n{}",
        new_log()
    );
    let quit_at = start.elapsed();
    gw.signal("QUIT");
    // Pingora: both accept for 5 s, then the old one drains for the grace period.
    assert!(
        gw.wait_exit(Duration::from_secs(20)).await,
        "old process exit:\n{}",
        gw.log()
    );
    let exited = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let r = client().get(gw.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the new process serves");
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the new process is ready:\n{}",
        new_log()
    );

    let t = tally.lock().unwrap();
    let failed = failures(&t.sent, |_| true);
    let after_quit = t.sent.iter().filter(|s| s.at > quit_at).count();
    let after_exit = t.sent.iter().filter(|s| s.at > exited).count();
    eprintln!(
        "upgrade: SIGQUIT at {quit_at:?}, old process exited at {exited:?}: {} requests, {} failed, {} connection attempts refused; {after_quit} after SIGQUIT, {after_exit} after the old process exited",
        t.sent.len(),
        failed.len(),
        t.refused.len()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(t.refused.is_empty(), "refused at {:?}", t.refused);
    assert!(after_exit > 10, "load ran past the hand-over");
    drop(new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_is_answered_with_connection_close() {
    let e = echo().await;
    let mut gw = Gateway::start_with(
        &routes(e),
        Opts {
            grace_period: "5s",
            server_extra: "shutdown_delay = \"1s\"".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    // Its head is read (and `early_request_filter` has run) before the signal; the upstream
    // answers 1.5 s later, while draining.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow?echo_sleep_ms=1500 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    gw.wait_in_flight(1).await;
    gw.signal("TERM");
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s)).await;
    assert_eq!(
        answer,
        Ok(Ok((200, true))),
        "in flight at SIGTERM: 200 with Connection: close"
    );
    assert!(gw.wait_exit(Duration::from_secs(15)).await, "{}", gw.log());
}
