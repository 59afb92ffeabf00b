//! The shipped systemd unit (`deploy/authgate.service`), verbatim: its `systemd-analyze
//! security` exposure, and the `Type=notify` protocol it relies on, through the real binary
//! with `$NOTIFY_SOCKET` pointing at a datagram socket the test holds (what systemd does).

mod common;

use std::process::Command;
use std::time::Duration;

use tokio::net::UnixDatagram;

use common::{client, echo, patient, require, Gateway, Opts};

/// The worst exposure the unit may score (`systemd-analyze security`, 0 to 10).
const MAX_EXPOSURE: f64 = 2.0;

fn unit_path() -> String {
    format!("{}/deploy/authgate.service", env!("CARGO_MANIFEST_DIR"))
}

fn unit() -> String {
    std::fs::read_to_string(unit_path()).unwrap()
}

#[test]
fn the_shipped_unit_scores_2_0_or_better_and_parses_cleanly() {
    let analyze = require("systemd-analyze", "apt-get install systemd");
    // --offline: reads the file alone, no running systemd needed. --threshold is the exposure
    // times ten; the process fails above it.
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32))
        .arg(unit_path())
        .output()
        .expect("systemd-analyze");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let level: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for authgate.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}\n{stderr}"));
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(
        level <= MAX_EXPOSURE,
        "exposure {level} > {MAX_EXPOSURE}:\n{stdout}"
    );
    assert!(
        out.status.success(),
        "over the threshold:\n{stdout}\n{stderr}"
    );
    // systemd ignores an unknown key or a bad value with a warning: none may be ignored.
    assert!(stderr.trim().is_empty(), "unit warnings:\n{stderr}");
}

#[test]
fn the_unit_waits_for_readiness_and_gives_the_assertion_key_a_state_directory() {
    let unit = unit();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    assert!(has("Type=notify"), "Type=notify");
    assert!(
        unit.lines().any(|l| l.starts_with("LimitNOFILE=")),
        "LimitNOFILE"
    );
    // DynamicUser + ProtectSystem=strict: only the state directory is writable for the key,
    // and it is where config.toml documents `assertion.key_file`.
    assert!(has("DynamicUser=yes") && has("ProtectSystem=strict"));
    assert!(has("StateDirectory=authgate"), "StateDirectory=authgate");
    let config =
        std::fs::read_to_string(format!("{}/config.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        config.contains("key_file = \"/var/lib/authgate/assertion.pem\""),
        "config.toml documents the assertion key in the state directory"
    );
    assert!(unit.contains("key_file = \"/var/lib/authgate/assertion.pem\""));
}

/// The next notification, as its `KEY=value` lines.
async fn next(sock: &UnixDatagram, what: &str) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(patient(Duration::from_secs(20)), sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no notification while waiting for {what}"))
        .expect("recv");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn ready_reload_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let e = echo().await;
    let body = format!(
        "[upstreams.app]\nservers = [\"http://{e}\"]\n\n[[routes]]\nupstream = \"app\"\npublic = true\n"
    );
    let mut gw = Gateway::start_with(
        &body,
        Opts {
            env: vec![(
                "NOTIFY_SOCKET".into(),
                Some(path.to_string_lossy().into_owned()),
            )],
            ..Opts::default()
        },
    )
    .await;

    // The first notification is READY=1, and by then the listener serves.
    let ready = next(&sock, "READY=1").await;
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // SIGHUP: RELOADING=1 (with the monotonic time systemd 253+ wants), then READY=1.
    gw.signal("HUP");
    let reloading = next(&sock, "RELOADING=1").await;
    assert!(
        reloading.contains(&"RELOADING=1".to_string()),
        "{reloading:?}"
    );
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let reloaded = next(&sock, "READY=1 after the reload").await;
    assert!(reloaded.contains(&"READY=1".to_string()), "{reloaded:?}");
    assert!(gw.log().contains("config reloaded"), "{}", gw.log());

    // SIGTERM: STOPPING=1 as the drain begins.
    gw.signal("TERM");
    let stopping = next(&sock, "STOPPING=1").await;
    assert!(stopping.contains(&"STOPPING=1".to_string()), "{stopping:?}");
    assert!(gw.wait_exit(Duration::from_secs(10)).await, "clean exit");
}
