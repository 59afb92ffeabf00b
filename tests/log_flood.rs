//! Clients cannot flood the log through Pingora's own ERROR lines (SRE review of issue 13):
//! 50 connections reset in the middle of a request head are one "Fail to proxy" line and,
//! at the end of the 10 s window, one line counting the rest. The real binary, loopback.

mod common;

use std::time::{Duration, Instant};

use common::{echo, Gateway};
use tokio::io::AsyncWriteExt;

fn routes(e: std::net::SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

#[tokio::test]
async fn fifty_reset_connections_are_a_bounded_number_of_lines_with_the_count() {
    let gw = Gateway::start(&routes(echo().await)).await;
    gw.wait_ready().await;
    for _ in 0..50 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_zero_linger().unwrap();
        let mut s = sock.connect(gw.addr).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(s); // RST: SO_LINGER 0
    }
    let fail_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Fail to proxy") && !l.contains("more lines like this"))
            .count()
    };
    // The count line comes at the end of the window (10 s).
    let start = Instant::now();
    let mut log = gw.log();
    while !log.contains("more lines like this") && start.elapsed() < Duration::from_secs(13) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        log = gw.log();
    }
    let written = fail_lines(&log);
    let count_line = log.lines().find(|l| l.contains("more lines like this"));
    println!("50 resets: {written} 'Fail to proxy' lines, count line: {count_line:?}");
    assert!(written >= 1, "no line at all for 50 resets:\n{log}");
    assert!(written <= 2, "{written} lines for 50 resets:\n{log}");
    let count_line = count_line.unwrap_or_else(|| panic!("no count line:\n{log}"));
    assert!(count_line.contains("pingora"), "{count_line}");
    // The requests are still served.
    let r = common::client().get(gw.url("/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
