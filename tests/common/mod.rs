//! The one integration-test harness: the real `authgate` binary on free loopback ports in
//! front of real upstream servers (the echo app from `authgate::demo`, a WebSocket echo, a
//! TLS echo with a test CA). Every wait is bounded; every process dies with its handle.
//!
//! Every wait, timeout and deadline here is scaled by one setting, [`patience`]
//! (`AUTHGATE_TEST_PATIENCE`), for slow machines. A gateway whose port no test needs before
//! the start binds port 0 and reports its ports in a ready file (`run --ready-file`), so no
//! port is picked, released and raced for. The test OpenID provider binds port 0 too (its
//! ready line names the issuer) and, for gateways registered as [`ANY_PORT`], accepts a
//! loopback redirect URI on any port (RFC 8252 section 7.3); chromedriver names its port
//! on stdout. [`free_port`] is left for what cannot report a port it picked (redis-server,
//! nginx, Caddy, tinyproxy), a port a peer must know before the start (a provider restarted
//! where the gateway expects it, a back-channel logout URI), and dead addresses.

#![allow(dead_code)]
// A harness shared by many test crates: its `pub` is its API, not the library's.
#![allow(unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

pub mod apache;
pub mod caddy;
pub mod forwarding;
pub mod redis_sets;

pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// How patient the harness is: `AUTHGATE_TEST_PATIENCE` (a factor, e.g. `2` or `1.5`;
/// default 1) multiplies every wait, timeout and deadline of the harness (process starts,
/// health waits, [`eventually`], client timeouts), for slow or overloaded machines. It never
/// changes what a test asserts, only how long it waits before deciding.
pub fn patience() -> f64 {
    static FACTOR: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *FACTOR.get_or_init(|| {
        std::env::var("AUTHGATE_TEST_PATIENCE")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 1.0)
            .unwrap_or(1.0)
    })
}

/// `d` scaled by [`patience`].
pub fn patient(d: Duration) -> Duration {
    d.mul_f64(patience())
}

/// A free port on 127.0.0.1 (bound and released), never the same one twice in a test
/// process: tests pick several ports before starting the servers that take them. Taken below
/// the kernel's ephemeral range (`ip_local_port_range`, 32768 and up on Linux): a port from
/// that range can be handed to an outgoing connection (any client of any test) between the
/// pick and the server's bind, which made a gateway fail with "address in use".
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    // A different start per test process (test binaries run one after another, but a
    // lingering TIME_WAIT socket of the previous one should not be met first).
    let low = 20000u32.min(ephemeral_low.saturating_sub(2000));
    let span = ephemeral_low.saturating_sub(low).max(1);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (low + seed.wrapping_add(n) % span) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A loopback port where nothing listens and nothing else can, while this value lives: a
/// socket bound to it (port 0: the kernel picks) that never listens, so a connection there is
/// refused. For "the upstream / provider / proxy is down" tests, with no port picked,
/// released and raced for.
pub struct DeadPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn dead_port() -> DeadPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a dead port");
    let port = socket.local_addr().expect("bound").port();
    DeadPort {
        port,
        _socket: socket,
    }
}

/// What a process that did not answer was doing: its scheduler state, kernel wait channel,
/// CPU time, threads, and who listens on `port` (to tell a spin from a block from a clash).
fn process_state(pid: u32, port: u16) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let state = read("status")
        .lines()
        .filter(|l| l.starts_with("State:") || l.starts_with("Threads:") || l.starts_with("VmRSS:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(", ");
    // Fields 14 and 15 of /proc/PID/stat: user and system time in clock ticks.
    let stat = read("stat");
    let ticks: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2).collect())
        .unwrap_or_default();
    let listeners = Command::new("ss")
        .args(["-Htanp", &format!("( sport = :{port} or dport = :{port} )")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "pid {pid}: {state}, wchan {}, utime+stime ticks {ticks:?}; sockets on :{port}: [{listeners}]",
        read("wchan")
    )
}

/// The echo upstream on a free port, served on the test's runtime.
pub async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().unwrap();
    tokio::spawn(authgate::demo::serve_echo(l));
    addr
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Every harness gateway's `admin.token`.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Options the harness writes into `[server]`, `[admin]` and the first listener.
pub struct Opts {
    /// Port of the first listener (default: a free one).
    pub port: Option<u16>,
    pub grace_period: &'static str,
    /// Extra TOML placed inside the first `[[listeners]]` table (e.g. `h2c = true`).
    pub listener_extra: String,
    /// Extra TOML placed inside `[server]` (e.g. `trusted_proxies = [...]`).
    pub server_extra: String,
    /// Environment of the gateway process, applied after `RUST_LOG` is removed: `Some` sets a
    /// variable (e.g. `RUST_LOG`, `HTTPS_PROXY`), `None` removes an inherited one (`NO_PROXY`).
    pub env: Vec<(String, Option<String>)>,
    /// Extra TOML placed inside `[log]` (e.g. `format = "json"`).
    pub log_extra: String,
    /// Extra arguments of `authgate run` (e.g. `--watch`).
    pub run_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            port: None,
            grace_period: "1s",
            listener_extra: String::new(),
            server_extra: String::new(),
            env: Vec::new(),
            log_extra: String::new(),
            run_args: Vec::new(),
        }
    }
}

impl Gateway {
    /// Start with `body` (routes, upstreams, paths...) plus harness-chosen ports.
    pub async fn start(body: &str) -> Gateway {
        Self::start_with(body, Opts::default()).await
    }

    pub fn config_text(&self, body: &str, opts: &Opts) -> String {
        format!(
            "[server]\nthreads = 1\ngrace_period = \"{grace}\"\nshutdown_timeout = \"1s\"\npid_file = \"{dir}/pid\"\nupgrade_socket = \"{dir}/upgrade.sock\"\n{server_extra}\n\n[log]\nlevel = \"info\"\n{log_extra}\n\n[admin]\naddress = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n\n[[listeners]]\naddress = \"{addr}\"\n{listener_extra}\n\n{body}\n",
            grace = opts.grace_period,
            dir = self.dir.path().display(),
            admin = self.admin,
            addr = self.addr,
            server_extra = opts.server_extra,
            listener_extra = opts.listener_extra,
            log_extra = opts.log_extra,
        )
    }

    /// Without `opts.port`, the listener and the admin listener bind port 0: the gateway
    /// picks free ports and reports them in its ready file, and the harness then writes them
    /// into the config file (so a reload, an `--upgrade` or the `sessions` CLI that reads the
    /// file finds the same addresses).
    pub async fn start_with(body: &str, opts: Opts) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        let mut gw = Gateway {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], opts.port.unwrap_or(0))),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
            config_path,
        };
        std::fs::write(&gw.config_path, gw.config_text(body, &opts)).unwrap();
        let log = std::fs::File::create(gw.dir.path().join("log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--ready-file"])
            .arg(gw.ready_file())
            .arg("-c")
            .arg(&gw.config_path)
            .args(&opts.run_args)
            .env_remove("RUST_LOG")
            // A test run under a service manager (a CI runner unit) must not have every
            // gateway report READY=1/STOPPING=1 to it; tests/systemd.rs sets its own.
            .env_remove("NOTIFY_SOCKET")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        for (k, v) in &opts.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let child = cmd.spawn().expect("spawn authgate");
        gw.child = Some(child);
        gw.wait_listening().await;
        // The config as it would be written had the ports been known before the start.
        std::fs::write(&gw.config_path, gw.config_text(body, &opts)).unwrap();
        gw
    }

    /// Where the gateway reports its bound addresses (`run --ready-file`).
    pub fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Wait for the ready file (every listener bound), then take the addresses from it.
    async fn wait_listening(&mut self) {
        let limit = patient(Duration::from_secs(20));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("authgate exited early ({status}):\n{}", self.log());
            }
            if let Some((addr, admin)) = self.read_ready_file() {
                self.addr = addr;
                self.admin = admin;
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "authgate did not report its listeners (on {}) within {limit:?}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first listener's and the admin listener's addresses from the ready file, once it
    /// is there (it is renamed into place whole) and written by this process.
    fn read_ready_file(&self) -> Option<(SocketAddr, SocketAddr)> {
        let text = std::fs::read_to_string(self.ready_file()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        if v["pid"].as_u64() != Some(u64::from(self.pid())) {
            return None;
        }
        let addr = v["listeners"][0].as_str()?.parse().ok()?;
        let admin = v["admin"].as_str()?.parse().ok()?;
        Some((addr, admin))
    }

    /// The bound address of listener `i` (config order: the harness's first, then the
    /// body's), from the ready file: for more listeners on port 0.
    pub fn listener(&self, i: usize) -> SocketAddr {
        let text = std::fs::read_to_string(self.ready_file()).expect("ready file");
        let v: serde_json::Value = serde_json::from_str(&text).expect("ready file JSON");
        v["listeners"][i]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listener {i} in the ready file: {text}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Wait (at most 10 s, times [`patience`]) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(10), || async {
            matches!(client().get(self.admin_url("/readyz")).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ok, "gateway never became ready:\n{}", self.log());
    }

    /// Wait (bounded) until `n` requests are in flight (past the gateway's request head
    /// parsing, `authgate_http_requests_in_flight`): the event a test used to sleep for
    /// before a signal.
    pub async fn wait_in_flight(&self, n: u32) {
        let ok = eventually(Duration::from_secs(10), || async {
            metric_value(&self.metrics().await, "authgate_http_requests_in_flight")
                .is_some_and(|v| v >= f64::from(n))
        })
        .await;
        assert!(ok, "never {n} requests in flight:\n{}", self.log());
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET `path` as an API client holding `cookie`.
    /// The `/readyz` JSON (`{"ready": .., "checks": {..}}`), or `null` if it cannot be read.
    pub async fn readyz(&self) -> serde_json::Value {
        match client().get(self.admin_url("/readyz")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// A call to the admin API with the harness token.
    pub async fn admin_api(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        client()
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// GET `path` as an API client (JSON) holding `cookie`.
    pub async fn get_as(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.get_accepting(path, cookie, "application/json").await
    }

    /// GET `path` as a browser navigation (HTML) holding `cookie`.
    pub async fn browse_as(&self, path: &str, cookie: &str) -> reqwest::Response {
        self.get_accepting(path, cookie, "text/html").await
    }

    async fn get_accepting(&self, path: &str, cookie: &str, accept: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .header("cookie", cookie)
            .header("accept", accept)
            .send()
            .await
            .unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait (bounded) for the process to exit; returns its success.
    pub async fn wait_exit(&mut self, limit: Duration) -> bool {
        let limit = patient(limit);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                panic!("authgate did not exit within {limit:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll `cond` every 50 ms until it holds or `limit` (times [`patience`]) passes; whether it
/// held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patient(limit);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client that shows every redirect instead of following it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(patient(Duration::from_secs(15)))
        .build()
        .unwrap()
}

/// What the echo upstream reported.
#[derive(Debug, serde::Deserialize)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
    pub server: String,
    pub peer: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A raw HTTP/1.1 exchange: the request bytes go out exactly as written (clients normalise
/// paths and headers, and these tests are about what a hostile client can send).
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn seen(&self) -> Seen {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an echo body ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Send `request` and read one response: by Content-Length, by chunked framing, or to EOF.
pub fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    let mut s =
        TcpStream::connect_timeout(&addr, patient(Duration::from_secs(5))).expect("connect");
    s.set_read_timeout(Some(patient(Duration::from_secs(10))))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let complete = |buf: &[u8]| -> bool {
        let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
        let body = &buf[split + 4..];
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return body.len() >= len;
        }
        if head.contains("transfer-encoding: chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
        false
    };
    while !complete(&buf) {
        match s.read(&mut chunk) {
            // A signal (a child exiting) interrupts a blocking read: retry it.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    RawResponse { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// `GET path` with extra raw header lines.
pub fn raw_get(addr: SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    raw(addr, &req)
}

/// A self-signed test CA and a server certificate for `localhost` / 127.0.0.1.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "authgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// The echo app behind TLS with `pki`'s server certificate (ALPN h2 and http/1.1).
pub async fn tls_echo(pki: &TestPki) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(authgate::demo::serve_echo_with(l, move |s| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(s).await }
    }));
    addr
}

/// Fail (never skip) when a component the tests need is missing.
pub fn require(cmd: &str, hint: &str) -> String {
    match Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "{cmd} is required by this test and was not found: {hint} (./tests/run.sh installs it)"
        ),
    }
}

/// A real `redis-server` on a free loopback port, with its data in a temp dir (AOF on, so a
/// restart keeps sessions).
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
    /// ACL user (`default` is then off) and TLS port, for [`Redis::start_secure`].
    acl_user: Option<String>,
    pub tls_port: Option<u16>,
}

impl Redis {
    pub async fn start() -> Redis {
        Self::start_with_password(None).await
    }

    /// With `requirepass`: clients must AUTH.
    pub async fn start_with_password(password: Option<&str>) -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            password: password.map(str::to_string),
            acl_user: None,
            tls_port: None,
        };
        r.spawn_fresh().await;
        r
    }

    /// TLS (certificate from `pki`, files in the server's dir) and an ACL user `authgate`
    /// with `password`; the `default` user is off. [`Redis::url`] is then the `rediss://` one.
    pub async fn start_secure(pki: &TestPki, password: &str) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cert.pem", &pki.cert_pem);
        write(dir.path(), "key.pem", &pki.key_pem);
        write(dir.path(), "ca.pem", &pki.ca_pem);
        let mut r = Redis {
            child: None,
            port: free_port(),
            dir,
            password: Some(password.to_string()),
            acl_user: Some("authgate".into()),
            tls_port: Some(free_port()),
        };
        r.spawn_fresh().await;
        r
    }

    pub fn url(&self) -> String {
        match (&self.password, &self.acl_user, self.tls_port) {
            (Some(p), Some(u), Some(tls)) => format!("rediss://{u}:{p}@127.0.0.1:{tls}/"),
            (Some(p), _, _) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            _ => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The first start: its ports were picked by [`free_port`] (bound, released, handed on),
    /// so another process may have taken one in between; a server that exits at once is
    /// started again on new ports (a restart keeps its ports: clients know them).
    async fn spawn_fresh(&mut self) {
        for _ in 0..3 {
            if self.try_spawn().await {
                return;
            }
            eprintln!(
                "redis-server exited at start on port {} (taken?); trying new ports",
                self.port
            );
            self.port = free_port();
            self.tls_port = self.tls_port.map(|_| free_port());
        }
        panic!("redis-server exited at start three times");
    }

    async fn spawn(&mut self) {
        assert!(
            self.try_spawn().await,
            "redis-server exited at start on port {}",
            self.port
        );
    }

    /// Start the server and wait until it answers; `false` if it exited first.
    async fn try_spawn(&mut self) -> bool {
        let bin = require("redis-server", "apt-get install redis-server");
        let child = Command::new(bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(self.dir.path())
            .args(match (&self.password, &self.acl_user) {
                // One argument per ACL rule: redis-server joins them into the config line.
                (Some(p), Some(u)) => [
                    "--user",
                    u,
                    "on",
                    &format!(">{p}"),
                    "~*",
                    "&*",
                    "+@all",
                    "--user",
                    "default",
                    "off",
                ]
                .map(str::to_string)
                .to_vec(),
                (Some(p), None) => vec!["--requirepass".to_string(), p.clone()],
                _ => vec![],
            })
            .args(self.tls_port.iter().flat_map(|t| {
                let f = |n: &str| self.dir.path().join(n).display().to_string();
                [
                    "--tls-port".to_string(),
                    t.to_string(),
                    "--tls-cert-file".to_string(),
                    f("cert.pem"),
                    "--tls-key-file".to_string(),
                    f("key.pem"),
                    "--tls-ca-cert-file".to_string(),
                    f("ca.pem"),
                    "--tls-auth-clients".to_string(),
                    "no".to_string(),
                ]
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + patient(Duration::from_secs(10));
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                if let Some(p) = &self.password {
                    let user = self.acl_user.as_deref().unwrap_or("");
                    let _ = s.write_all(format!("AUTH {user} {p}\r\n").as_bytes());
                    let mut ok = [0u8; 5];
                    let _ = s.read_exact(&mut ok);
                }
                let _ = s.write_all(b"PING\r\n");
                let mut b = [0u8; 7];
                if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                    return true;
                }
            }
            if let Some(mut c) = self
                .child
                .take_if(|c| c.try_wait().is_ok_and(|s| s.is_some()))
            {
                let _ = c.wait();
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) the server: unreachable without closing sockets.
    pub fn pause(&self, paused: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sig = if paused { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// The real OpenID provider (`oidc-provider` from npm, run by tests/idp/idp.js).
pub struct Idp {
    child: Option<Child>,
    pub port: u16,
    pub issuer: String,
    /// The provider's stderr, kept for failure messages and removed on drop.
    log: Option<PathBuf>,
}

/// A gateway port not known before the provider starts: the gateway binds port 0 (see
/// [`Gateway::start_with`]). In `Idp::start*`'s `gateway_ports` it registers port-less
/// loopback redirect URIs that the provider matches on any port (`IDP_LOOPBACK_ANY_PORT`,
/// RFC 8252 section 7.3).
pub const ANY_PORT: u16 = 0;

/// A `backchannel_logout_uri` to register before the gateway's port is known; the test then
/// points the provider at the gateway with [`Idp::set_backchannel_logout_uri`].
pub const BACKCHANNEL_PLACEHOLDER: &str = "http://127.0.0.1/.authgate/backchannel-logout";

impl Idp {
    /// `auto_login`: log in as alice without forms (HTTP tests). `gateway_ports`: the client
    /// gets redirect URIs for these gateway ports on 127.0.0.1 and localhost ([`ANY_PORT`]:
    /// any port). On a port the kernel picks (`IDP_PORT=0`), named by its ready line.
    pub async fn start(auto_login: bool, gateway_ports: &[u16]) -> Idp {
        Self::start_on(0, auto_login, gateway_ports).await
    }

    /// On `port` (0: any; a fixed one for a provider restarted where the gateway expects it).
    pub async fn start_on(port: u16, auto_login: bool, gateway_ports: &[u16]) -> Idp {
        Self::start_with_env(port, auto_login, gateway_ports, &[]).await
    }

    /// With extra environment for idp.js (e.g. `IDP_USERS`, `IDP_AUTO_LOGIN_ACCOUNT`).
    pub async fn start_with_env(
        port: u16,
        auto_login: bool,
        gateway_ports: &[u16],
        env: &[(&str, &str)],
    ) -> Idp {
        Self::start_full(port, auto_login, gateway_ports, env, serde_json::json!({})).await
    }

    /// With extra client metadata merged into the `authgate` client (e.g.
    /// `backchannel_logout_uri`).
    pub async fn start_full(
        port: u16,
        auto_login: bool,
        gateway_ports: &[u16],
        env: &[(&str, &str)],
        client_extra: serde_json::Value,
    ) -> Idp {
        Self::start_inner(port, auto_login, gateway_ports, env, client_extra).await
    }

    async fn start_inner(
        port: u16,
        auto_login: bool,
        gateway_ports: &[u16],
        env: &[(&str, &str)],
        client_extra: serde_json::Value,
    ) -> Idp {
        let node = require("node", "apt-get install nodejs npm");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/idp/node_modules is missing: run `npm ci` in tests/idp (./tests/run.sh does)"
        );
        let mut redirects = Vec::new();
        let mut post_logout = Vec::new();
        let mut ports = gateway_ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        for p in &ports {
            let port = match *p {
                ANY_PORT => String::new(),
                p => format!(":{p}"),
            };
            for h in ["127.0.0.1", "localhost"] {
                redirects.push(format!("http://{h}{port}/.authgate/callback"));
                post_logout.push(format!("http://{h}{port}/"));
            }
        }
        let mut client = serde_json::json!({
            "client_id": "authgate",
            "client_secret": "authgate-secret",
            "redirect_uris": redirects,
            "post_logout_redirect_uris": post_logout,
        });
        if let (Some(c), Some(extra)) = (client.as_object_mut(), client_extra.as_object()) {
            c.extend(extra.clone());
        }
        let clients = serde_json::json!([client]);
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let stderr_path = std::env::temp_dir().join(format!(
            "authgate-idp-{}-{}.log",
            std::process::id(),
            STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let stderr_file = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(node);
        cmd.arg("idp.js")
            .current_dir(&dir)
            .env("IDP_PORT", port.to_string())
            .env("IDP_CLIENTS", clients.to_string())
            .stdout(Stdio::piped())
            .stderr(stderr_file.try_clone().unwrap())
            .stdin(Stdio::null());
        if auto_login {
            cmd.env("IDP_AUTO_LOGIN", "1");
        }
        if gateway_ports.contains(&ANY_PORT) {
            cmd.env("IDP_LOOPBACK_ANY_PORT", "1");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Rarely (three times in many CI runs, on a busy 2-core VM; never reproduced here,
        // even with the CPUs saturated: then it starts in 3 s) node stalls before it listens
        // and never prints its ready line. A fresh start is the remedy; three must fail for
        // the test to fail, and the message then says what the process was doing.
        let mut attempt = 0;
        let mut stalls = Vec::new();
        let (child, issuer) = loop {
            attempt += 1;
            let mut child = cmd.spawn().expect("spawn node idp.js");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(issuer) = line.strip_prefix("IDP READY ") {
                        let _ = tx.send(issuer.to_string());
                    }
                }
            });
            // Ready line (with the issuer, so the port), or the process died (e.g. a fixed port
            // was taken): fail at once, with its log.
            let deadline = Instant::now() + patient(Duration::from_secs(30));
            let ready = loop {
                if let Ok(issuer) = rx.try_recv() {
                    break Some(issuer);
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "the test IdP exited ({status}) before it was ready:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
                if Instant::now() > deadline {
                    stalls.push(process_state(child.id(), port));
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if let Some(issuer) = ready {
                break (child, issuer);
            }
            assert!(
                attempt < 3,
                "the test IdP did not start within 30s, three times:\n{}\nits state when given up:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                stalls.join("\n")
            );
            eprintln!(
                "the test IdP on port {port} did not start within 30s ({}); starting it again",
                stalls.last().map(String::as_str).unwrap_or_default()
            );
        };
        let port = url::Url::parse(&issuer)
            .ok()
            .and_then(|u| u.port())
            .unwrap_or_else(|| panic!("the test IdP's issuer names no port: {issuer}"));
        Idp {
            child: Some(child),
            port,
            issuer,
            log: Some(stderr_path),
        }
    }

    /// A provider address with nothing running there (for "provider down" tests).
    pub fn not_running(port: u16) -> Idp {
        Idp {
            child: None,
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            log: None,
        }
    }

    /// A `[[providers]]` block for this IdP, with id "test".
    pub fn provider_toml(&self) -> String {
        self.provider_toml_as("test")
    }

    /// A `[[providers]]` block for this IdP with the given id.
    pub fn provider_toml_as(&self, id: &str) -> String {
        format!(
            "[[providers]]\nid = \"{id}\"\nissuer = \"{}\"\nclient_id = \"authgate\"\nclient_secret = \"authgate-secret\"\nscopes = [\"openid\", \"email\", \"profile\"]\nrefresh_interval = \"2s\"\n",
            self.issuer
        )
    }

    /// A client-credentials JWT access token for `resource` (e.g. `urn:authgate:api`), scope
    /// `api:read`, straight from the provider's token endpoint.
    pub async fn client_token(&self, resource: &str) -> String {
        let r = client()
            .post(format!("{}/token", self.issuer))
            .basic_auth("authgate", Some("authgate-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "api:read"),
            ])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "token endpoint: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let t = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(
            t.split('.').count(),
            3,
            "expected a JWT access token, got {t}"
        );
        t
    }

    /// POST to one of the IdP's test endpoints (`/__test/...`); its JSON answer.
    pub async fn test_post(&self, path_and_query: &str) -> serde_json::Value {
        client()
            .post(format!("{}{path_and_query}", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default()
    }

    pub async fn stats(&self) -> serde_json::Value {
        client()
            .get(format!("{}/__test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deliver the `authgate` client's back-channel logout tokens to `uri` from now on (a
    /// gateway that bound port 0 after the provider started). The client must have been
    /// started with a `backchannel_logout_uri` (a placeholder such as
    /// [`BACKCHANNEL_PLACEHOLDER`]).
    pub async fn set_backchannel_logout_uri(&self, uri: &str) {
        let r = client()
            .post(format!("{}/__test/clients", self.issuer))
            .query(&[("client_id", "authgate"), ("backchannel_logout_uri", uri)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    }

    /// The provider's process id (e.g. to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
        if let Some(log) = self.log.take() {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// `config` (from [`auth_config`]) with `keys` added to its `[[providers]]` table.
pub fn with_provider_keys(config: &str, keys: &str) -> String {
    let at = config.find("\n[session]").expect("auth_config layout");
    format!("{}\n{keys}{}", &config[..at], &config[at..])
}

/// Shared by every replica of a test: sessions made by one must open on the others.
pub const SESSION_SECRET: &str = "session-secret-for-tests-0123456789abcdef";

/// `[session]` keys for a Redis store at `url`.
pub fn redis_session(url: &str) -> String {
    format!(
        "store = \"redis\"\nredis_url = \"{url}\"\nsecret = \"{SESSION_SECRET}\"\nredis_timeout = \"500ms\"\n"
    )
}

/// Wait until a Redis-backed gateway's session cache is coherent (subscribed to
/// invalidations): before that, a cross-replica test proves nothing.
pub async fn wait_coherent(gw: &Gateway) {
    let coherent = || async { gw.readyz().await["checks"]["session_cache_coherent"] == true };
    assert!(
        eventually(Duration::from_secs(10), coherent).await,
        "session cache never coherent:\n{}",
        gw.log()
    );
}

/// Replicas of one gateway, one per port, sharing the session settings (and so the store),
/// each ready and coherent. `extra`: more TOML after the routes (e.g. `[admin]` keys go in
/// through [`Opts`], not here).
pub async fn replicas(idp: &Idp, ports: &[u16], session: &str, extra: &str) -> Vec<Gateway> {
    let mut out = Vec::new();
    for &p in ports {
        out.push(auth_gateway_with(idp, p, session, extra).await);
    }
    for gw in &out {
        wait_coherent(gw).await;
    }
    out
}

/// A config body: the IdP as provider, the echo upstream, `/public` public and `/` protected.
pub fn auth_config(idp: &Idp, echo: SocketAddr, session: &str) -> String {
    format!(
        "{provider}\n[session]\n{session}\n\n[upstreams.app]\nservers = [\"http://{echo}\"]\n\n[[routes]]\nid = \"public\"\npath = \"/public\"\nupstream = \"app\"\npublic = true\n\n[[routes]]\nid = \"app\"\npath = \"/\"\nupstream = \"app\"\n",
        provider = idp.provider_toml(),
    )
}

/// The `name=value` part of every `Set-Cookie` in a response.
pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The login transaction cookie (`name=value`) a `/.authgate/login` answer set.
pub fn tx_cookie(resp: &reqwest::Response) -> String {
    set_cookies(resp)
        .into_iter()
        .find(|c| c.contains("_tx_"))
        .expect("transaction cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Run the whole browser login over HTTP against an auto-login IdP: protected page → login
/// → IdP → callback. Returns the session cookie (`name=value`) and the callback response.
pub async fn http_login(gw: &Gateway, path: &str) -> (String, reqwest::Response) {
    http_login_with_cookie(gw, path, "").await
}

/// [`http_login`] from a browser that already holds `cookie` (e.g. a planted one), which it
/// sends along with the callback.
pub async fn http_login_with_cookie(
    gw: &Gateway,
    path: &str,
    cookie: &str,
) -> (String, reqwest::Response) {
    login_flow(&format!("http://{}", gw.addr), path, cookie).await
}

/// [`http_login`] through any front at `base` (e.g. nginx in front of the gateway): returns
/// the session cookie.
pub async fn http_login_via(base: &str, path: &str) -> String {
    let (cookie, _) = login_flow(base, path, "").await;
    assert!(!cookie.is_empty(), "no session cookie from the callback");
    cookie
}

/// The login as a browser makes it: protected page → sign-in redirect → provider (auto-login,
/// following its redirects with its own cookie jar) → callback with the transaction cookie
/// (plus `planted`). Returns the session cookie (`name=value`, empty if none) and the
/// callback's response.
async fn login_flow(base: &str, path: &str, planted: &str) -> (String, reqwest::Response) {
    let idp_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .no_proxy()
        .build()
        .unwrap();
    login_flow_with(base, path, planted, idp_client).await
}

/// [`login_flow`] with the browser's client for the provider (e.g. one that trusts a test CA).
async fn login_flow_with(
    base: &str,
    path: &str,
    planted: &str,
    idp_client: reqwest::Client,
) -> (String, reqwest::Response) {
    let c = client();
    let base_url = reqwest::Url::parse(base).unwrap();
    let r = c
        .get(base_url.join(path).unwrap())
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "protected page must redirect to sign in");
    let login = base_url
        .join(r.headers()["location"].to_str().unwrap())
        .unwrap();
    assert_eq!(login.path(), "/.authgate/login", "{login}");
    let r = c
        .get(login)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "login must redirect to the provider");
    let tx = set_cookies(&r)
        .into_iter()
        .find(|c| c.contains("_tx_"))
        .expect("transaction cookie");
    let mut cookie = tx.split(';').next().unwrap().to_string();
    if !planted.is_empty() {
        cookie = format!("{planted}; {cookie}");
    }
    let mut url = reqwest::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let callback = base_url.join("/.authgate/callback").unwrap();
    for _ in 0..10 {
        let r = idp_client.get(url.clone()).send().await.unwrap();
        assert!(
            r.status().is_redirection(),
            "IdP answered {} at {url}",
            r.status()
        );
        let next = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
        if next.as_str().starts_with(callback.as_str()) {
            let r = c
                .get(next)
                .header("accept", "text/html")
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let session = set_cookies(&r)
                .into_iter()
                .find(|c| c.starts_with("authgate_session=v1"))
                .map(|c| c.split(';').next().unwrap().to_string())
                .unwrap_or_default();
            return (session, r);
        }
        url = next;
    }
    panic!("the IdP never redirected back to {base}");
}

/// The echo upstream behind a gateway on `port` with `idp` as provider (see [`auth_config`])
/// plus `extra` TOML (more routes), ready (providers fetched) when it returns.
pub async fn auth_gateway(idp: &Idp, port: u16, session: &str) -> Gateway {
    auth_gateway_with(idp, port, session, "").await
}

pub async fn auth_gateway_with(idp: &Idp, port: u16, session: &str, extra: &str) -> Gateway {
    let e = echo().await;
    let gw = Gateway::start_with(
        &format!("{}{extra}", auth_config(idp, e, session)),
        Opts {
            port: Some(port),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

/// Headless Chromium driven over WebDriver: a `chromedriver` on a free loopback port (in its
/// own process group, so Chromium dies with it) with a fresh profile in a temp dir. Every
/// wait is bounded. Call [`Browser::close`] at the end of a test; on any other exit (a
/// panic) `Drop` kills chromedriver and Chromium.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Option<Child>,
    pub port: u16,
    /// The Chromium profile, chromedriver's log (`chromedriver.log`) and anything the test
    /// saves there (screenshots).
    pub dir: tempfile::TempDir,
}

/// The longest any single browser wait may take.
pub const BROWSER_WAIT: Duration = Duration::from_secs(15);

impl Browser {
    pub async fn start() -> Browser {
        use std::os::unix::process::CommandExt;

        let driver_bin = require("chromedriver", "apt-get install chromium-driver");
        let chromium = require("chromium", "apt-get install chromium");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("chromedriver.out");
        let log = std::fs::File::create(&out).unwrap();
        // Port 0: chromedriver takes a free port and names it on stdout.
        let child = Command::new(driver_bin)
            .arg("--port=0")
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn chromedriver");
        let mut driver = Some(child);

        // Wait (bounded) for its port, then until it answers /status with ready: true.
        let deadline = Instant::now() + patient(Duration::from_secs(10));
        let port = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let named = text
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = named {
                break port;
            }
            if let Some(status) = driver.as_mut().unwrap().try_wait().unwrap() {
                panic!("chromedriver exited early ({status}):\n{text}");
            }
            if Instant::now() > deadline {
                kill_group(&mut driver);
                panic!("chromedriver named no port within 10s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let base = format!("http://127.0.0.1:{port}");
        loop {
            if let Some(status) = driver.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "chromedriver exited early ({status}):\n{}",
                    std::fs::read_to_string(dir.path().join("chromedriver.out"))
                        .unwrap_or_default()
                );
            }
            let ready = match client().get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                kill_group(&mut driver);
                panic!("chromedriver did not become ready on port {port} within 10s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = dir.path().join("profile");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 15_000, "script": 10_000},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--disable-sync",
                    "--disable-quic",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                // No "save password?" / leaked-password prompts over the login form.
                "prefs": {
                    "credentials_enable_service": false,
                    "profile.password_manager_enabled": false,
                    "profile.password_manager_leak_detection": false,
                },
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = fantoccini::ClientBuilder::new(connector);
        builder.capabilities(caps);
        let client =
            match tokio::time::timeout(patient(Duration::from_secs(30)), builder.connect(&base))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    kill_group(&mut driver);
                    panic!(
                        "could not start a Chromium session: {e}\n{}",
                        std::fs::read_to_string(dir.path().join("chromedriver.log"))
                            .unwrap_or_default()
                    );
                }
                Err(_) => {
                    kill_group(&mut driver);
                    panic!("Chromium session did not start within 30s");
                }
            };
        Browser {
            client,
            driver,
            port,
            dir,
        }
    }

    /// chromedriver's log (includes Chromium's console and every WebDriver command).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Navigate to `url` and wait for the page to load (bounded by the page-load timeout).
    pub async fn goto(&self, url: &str) {
        bounded(&format!("goto {url}"), self.client.goto(url)).await;
    }

    pub async fn url(&self) -> url::Url {
        bounded("current_url", self.client.current_url()).await
    }

    pub async fn source(&self) -> String {
        bounded("page source", self.client.source()).await
    }

    /// Wait (bounded) until the current URL satisfies `ok`; returns it.
    pub async fn wait_url(&self, what: &str, ok: impl Fn(&url::Url) -> bool) -> url::Url {
        let deadline = Instant::now() + patient(BROWSER_WAIT);
        loop {
            let u = self.url().await;
            if ok(&u) {
                return u;
            }
            if Instant::now() > deadline {
                panic!(
                    "browser never reached {what} within {BROWSER_WAIT:?}; at {u}:\n{}",
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (bounded) until `css` matches an element on the current page.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(BROWSER_WAIT)
            .for_element(fantoccini::Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "no element {css:?} at {} ({e}):\n{}",
                self.url().await,
                self.source().await
            ),
        }
    }

    /// Whether `css` matches an element on the current page right now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        !bounded(
            &format!("find_all {css}"),
            self.client.find_all(fantoccini::Locator::Css(css)),
        )
        .await
        .is_empty()
    }

    /// A PNG screenshot of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = bounded("screenshot", self.client.screenshot()).await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        std::fs::write(path, png).unwrap();
    }

    /// A PNG screenshot of the whole page (the window is grown to the page's height for it).
    pub async fn screenshot_full_page(&self, path: &Path) {
        let (w, h) = bounded("window size", self.client.get_window_size()).await;
        let page_h = bounded(
            "page height",
            self.client
                .execute("return document.documentElement.scrollHeight", vec![]),
        )
        .await
        .as_u64()
        .unwrap_or(h);
        let grow = page_h.clamp(h, 8000) as u32;
        bounded(
            "grow window",
            self.client.set_window_size(w as u32, grow + 150),
        )
        .await;
        self.screenshot(path).await;
        bounded(
            "restore window",
            self.client.set_window_size(w as u32, h as u32),
        )
        .await;
    }

    /// End the WebDriver session (Chromium exits), then stop chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            patient(Duration::from_secs(10)),
            self.client.clone().close(),
        )
        .await;
        kill_group(&mut self.driver);
    }
}

/// Await a WebDriver command for at most [`BROWSER_WAIT`]; panic on an error or a timeout.
pub async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(patient(BROWSER_WAIT), f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("browser: {what} failed: {e}"),
        Err(_) => panic!("browser: {what} took longer than {BROWSER_WAIT:?}"),
    }
}

/// Kill chromedriver's whole process group (chromedriver, Chromium and its helpers).
fn kill_group(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", c.id())])
            .stderr(Stdio::null())
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// A real nginx (Debian's, with the auth_request module) on a free loopback port, running
/// `server` (the body of one `server {}` block) until dropped.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(port: u16, server: &str) -> Nginx {
        let bin = require("nginx", "apt-get install nginx");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // As root, workers would drop to an unprivileged user that cannot use the temp dir.
        let user = if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
        {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port};\n{server}\n }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let up = eventually(Duration::from_secs(10), || async {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(up, "nginx did not start on {port}:\n{log}");
        Nginx {
            child: Some(child),
            port,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the master stops its workers too (SIGKILL would orphan them, still
            // listening). Bounded wait, then SIGKILL.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + patient(Duration::from_secs(5));
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The identity headers a forward-auth answer carries (empty when there is no value), so a
/// front proxy's copy replaces whatever the client sent.
pub const ANSWERED_IDENTITY: [&str; 6] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-authgate-assertion",
];

/// A gateway in forward-auth mode for `proxy` (a front proxy on 127.0.0.1, trusted), with
/// [`auth_config`]'s routes plus `/admin` for bob only; ready when it returns.
pub async fn forward_auth_gateway(idp: &Idp, app: SocketAddr, port: u16, proxy: &str) -> Gateway {
    let routes = format!(
        "\n[forward_auth]\nproxy = \"{proxy}\"\n\n[[routes]]\nid = \"admin\"\npath = \"/admin\"\nupstream = \"app\"\n[routes.policy]\nusers = [\"bob\"]\n"
    );
    let gw = Gateway::start_with(
        &format!("{}{routes}", auth_config(idp, app, "store = \"memory\"")),
        Opts {
            port: Some(port),
            server_extra: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    gw.wait_ready().await;
    gw
}

/// A snippet the docs tell users to paste (`docs/...`), with its placeholder addresses
/// replaced by the test's (`from` → `to`); otherwise verbatim. The README must show the same
/// text, so what users copy is what the tests run.
pub fn snippet(rel: &str, replace: &[(&str, String)]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(text.trim_end()),
        "README.md does not show {rel} verbatim"
    );
    let mut out = text;
    for (from, to) in replace {
        assert!(out.contains(from), "{rel} has no {from}");
        out = out.replace(from, to);
    }
    out
}

impl Idp {
    /// The provider over HTTPS with `pki`'s server certificate (names `localhost` and
    /// 127.0.0.1), issuer `https://127.0.0.1:<port>`; otherwise as [`Idp::start`]. Its own
    /// auto-login logout hop trusts `pki`'s CA (`NODE_EXTRA_CA_CERTS`).
    pub async fn start_tls(auto_login: bool, gateway_ports: &[u16], pki: &TestPki) -> Idp {
        // node reads the files at startup: they may go once it is ready.
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, pem: &str| write(dir.path(), name, pem).display().to_string();
        let (cert, key, ca) = (
            path("cert.pem", &pki.cert_pem),
            path("key.pem", &pki.key_pem),
            path("ca.pem", &pki.ca_pem),
        );
        let env = [
            ("IDP_TLS_CERT", cert.as_str()),
            ("IDP_TLS_KEY", key.as_str()),
            ("NODE_EXTRA_CA_CERTS", ca.as_str()),
        ];
        Self::start_with_env(0, auto_login, gateway_ports, &env).await
    }
}

/// A client (no redirects, no proxy) that trusts only `ca_pem` for HTTPS, plus a cookie
/// store when `cookies` (a browser at the provider).
pub fn client_trusting(ca_pem: &str, cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(patient(Duration::from_secs(15)))
        .build()
        .unwrap()
}

/// [`http_login`] against a provider served over HTTPS by a CA only `idp_ca_pem` holds (see
/// [`Idp::start_tls`]): the browser trusts that CA at the provider.
pub async fn http_login_trusting(
    gw: &Gateway,
    path: &str,
    idp_ca_pem: &str,
) -> (String, reqwest::Response) {
    let base = format!("http://{}", gw.addr);
    login_flow_with(&base, path, "", client_trusting(idp_ca_pem, true)).await
}

/// Resident memory (VmRSS) of process `pid`, in bytes; 0 when it cannot be read.
pub fn rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Anonymous resident memory (`RssAnon`): the heap and stacks, what requests and connections
/// make the process hold. RSS adds the mapped binary (tens of MiB for a debug build), clean
/// file pages the kernel can drop under a container's limit.
pub fn anon_rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The value of an unlabelled metric in a Prometheus text (`None` when absent).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// `n` anonymous `GET /.authgate/login` (each starts a login: a stored transaction and a
/// 302 to the provider) over `conns` keep-alive HTTP/1.1 connections to `addr`, as fast as
/// the gateway answers. Panics on any other answer. Returns how long they took.
pub async fn login_flood(addr: SocketAddr, n: usize, conns: usize) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let count = n / conns + usize::from(c < n % conns);
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).unwrap();
            let req = format!(
                "GET /.authgate/login?rd=%2Fapp%2Fpage HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\n\r\n"
            );
            let mut buf = Vec::with_capacity(4096);
            for i in 0..count {
                s.write_all(req.as_bytes()).await.expect("write");
                // One response: the head, then Content-Length bytes of body.
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    let got = s.read(&mut chunk).await.expect("read");
                    assert!(got > 0, "connection closed after {i} logins");
                    buf.extend_from_slice(&chunk[..got]);
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                assert!(
                    head.starts_with("http/1.1 302"),
                    "login {i}: {}",
                    head.lines().next().unwrap_or("")
                );
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    let got = s.read(&mut chunk).await.expect("read body");
                    assert!(got > 0, "connection closed in a body");
                    buf.extend_from_slice(&chunk[..got]);
                }
                buf.drain(..head_end + len);
            }
        }));
    }
    for t in tasks {
        t.await.expect("flood task");
    }
    started.elapsed()
}
