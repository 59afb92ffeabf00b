//! A real Caddy (Debian's `caddy`) running a Caddyfile on a free port, killed on drop, with
//! its state (HOME, XDG dirs) in a temp dir so parallel tests never share any; and an echo
//! upstream that records every byte it receives, to tell what the app behind it saw.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use super::require;

/// A running `caddy run`.
pub struct Caddy {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// Run `caddyfile`, whose site listens on `port`. Fails with Caddy's log when it exits or
    /// does not listen within 10 s.
    pub async fn start(port: u16, caddyfile: &str) -> Caddy {
        let bin = require("caddy", "apt-get install caddy");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, caddyfile).unwrap();
        let log = File::create(dir.path().join("caddy.log")).unwrap();
        let child = Command::new(bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn caddy");
        let mut caddy = Caddy {
            child: Some(child),
            port,
            dir,
        };
        let addr = caddy.addr();
        let deadline = Instant::now() + super::patient(Duration::from_secs(10));
        loop {
            if let Some(status) = caddy.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("caddy exited early ({status}):\n{}", caddy.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return caddy;
            }
            if Instant::now() > deadline {
                panic!(
                    "caddy did not listen on {addr} within 10s:\n{}",
                    caddy.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:port`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Caddy's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Every byte an upstream received, over all its connections.
#[derive(Clone, Default)]
pub struct Tap(Arc<Mutex<Vec<u8>>>);

impl Tap {
    /// Whether `needle` is anywhere in what the upstream received.
    pub fn saw(&self, needle: &str) -> bool {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        bytes
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    }
}

/// The echo upstream (see [`super::echo`]) recording everything it reads into a [`Tap`].
pub async fn tapped_echo() -> (SocketAddr, Tap) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().unwrap();
    let tap = Tap::default();
    let t = tap.clone();
    tokio::spawn(authgate::demo::serve_echo_with(l, move |s| {
        let tap = t.clone();
        async move { Ok::<_, std::io::Error>(Tapped { inner: s, tap }) }
    }));
    (addr, tap)
}

struct Tapped<S> {
    inner: S,
    tap: Tap,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let mut bytes = self.tap.0.lock().unwrap_or_else(|e| e.into_inner());
            bytes.extend_from_slice(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
