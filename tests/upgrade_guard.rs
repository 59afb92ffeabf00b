//! A stale upgrade socket (left by a `run --upgrade` process killed while it waited) must not
//! pass the SIGQUIT guard (SRE review of issue 13): Pingora would fail to hand the listeners
//! over (ECONNREFUSED) and close them anyway, refusing every request. The real binary.

mod common;

use std::time::Duration;

use common::{client, echo, Gateway};

fn routes(e: std::net::SocketAddr) -> String {
    format!("[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n")
}

#[tokio::test]
async fn sigquit_with_a_stale_upgrade_socket_is_ignored() {
    let gw = Gateway::start(&routes(echo().await)).await;
    gw.wait_ready().await;
    // What a killed `--upgrade` process leaves: a socket file nobody listens on.
    let sock = gw.dir.path().join("upgrade.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    assert!(!authgate::server::upgrade_listener_waiting(&sock));

    gw.signal("QUIT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..20 {
        let r = client()
            .get(gw.url(&format!("/after-quit/{i}")))
            .send()
            .await;
        assert_eq!(
            r.map(|r| r.status().as_u16()).ok(),
            Some(200),
            "request {i} after SIGQUIT with a stale socket:\n{}",
            gw.log()
        );
    }
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "still ready: nothing was handed over");
    let log = gw.log();
    assert!(log.contains("SIGQUIT ignored"), "{log}");
    assert!(!log.contains("handing the listening sockets"), "{log}");
}

/// A live listener on the path is one: the guard lets a real hand-over through.
#[test]
fn a_live_listener_is_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("u.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert!(authgate::server::upgrade_listener_waiting(&sock));
    drop(l);
    // The socket closes when its last descriptor does. The other test in this binary spawns
    // processes: a child forked while `l` was open holds a copy until its exec closes it
    // (close-on-exec), so the kernel may list the listener a little longer. Bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while authgate::server::upgrade_listener_waiting(&sock) {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed listener still counts as waiting after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
