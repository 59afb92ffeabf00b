//! The admin listener is bounded like a public one (SRE review of issue 13): a request head
//! must arrive within `admin::HEAD_TIMEOUT`, the next head on a keep-alive connection too (so
//! an idle keep-alive connection is closed after it), and beyond `admin::MAX_CONNECTIONS` open connections new ones are
//! closed at once while the gateway keeps answering. Raw sockets, the real binary, loopback.

mod common;

use std::time::{Duration, Instant};

use authgate::admin::{HEAD_TIMEOUT, MAX_CONNECTIONS};
use common::{client, echo, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn routes(e: std::net::SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

/// Read until the peer closes (bounded by `limit`): the time it took, or `None`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn partial_heads_and_idle_connections_are_closed() {
    let gw = Gateway::start(&routes(echo().await)).await;
    let slack = Duration::from_secs(3);

    // A head that never completes.
    let mut partial = TcpStream::connect(gw.admin).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(gw.admin).await.unwrap();
    // A keep-alive connection, idle after one answered request.
    let mut idle = TcpStream::connect(gw.admin).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);

    let t0 = Instant::now();
    let p = closed_within(&mut partial, HEAD_TIMEOUT + slack).await;
    let s = closed_within(&mut silent, HEAD_TIMEOUT + slack).await;
    let i = closed_within(&mut idle, HEAD_TIMEOUT + slack).await;
    let all = t0.elapsed();
    println!("admin: partial head, silent and idle keep-alive connections all closed within {all:?} (head timeout {HEAD_TIMEOUT:?})");
    assert!(all < HEAD_TIMEOUT + slack, "{all:?}");
    assert!(
        p.is_some(),
        "partial head not closed within {:?}",
        HEAD_TIMEOUT + slack
    );
    assert!(s.is_some(), "silent connection not closed");
    assert!(
        i.is_some(),
        "idle keep-alive connection not closed within {:?}",
        HEAD_TIMEOUT + slack
    );
    let r = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_the_listener_keeps_serving() {
    let gw = Gateway::start(&routes(echo().await)).await;
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(gw.admin).await.unwrap());
    }
    // The next one is accepted by the kernel and closed by the gateway at once, unanswered.
    let mut over = TcpStream::connect(gw.admin).await.unwrap();
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(2), over.read(&mut buf)).await;
    assert!(
        start.elapsed() < HEAD_TIMEOUT,
        "the held connections timed out before the check; the machine is too slow for this test"
    );
    match r {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("connection {} answered: {other:?}", MAX_CONNECTIONS + 1),
    }
    // Freeing a few makes room again.
    held.truncate(MAX_CONNECTIONS - 4);
    // Until the gateway has seen the closes (no fixed pause): refused or cut connections
    // meanwhile are retried, and the answer must then be 200.
    let healthz = || async {
        client()
            .get(gw.admin_url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    };
    common::eventually(Duration::from_secs(5), healthz).await;
    let r = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
    assert!(
        gw.log().contains("admin listener: connection refused"),
        "{}",
        gw.log()
    );
}
