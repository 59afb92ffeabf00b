//! `authgate check` and `run` on good and bad configs, through the binary.

use std::process::Command;

use crate::common::{free_port, BIN};

fn check(src: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, src).unwrap();
    let out = Command::new(BIN).arg("check").arg(&p).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn every_example_config_checks_ok() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files = vec![
        format!("{root}/config.toml"),
        format!("{root}/src/demo.toml"),
    ];
    for entry in std::fs::read_dir(format!("{root}/deploy")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            files.push(p.display().to_string());
        }
    }
    for f in files {
        let out = Command::new(BIN).arg("check").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn errors_name_key_and_line() {
    let (ok, out) =
        check("[server]\nthreads = 1\n\n[[routes]]\nupstream = \"app\"\nbogus = true\n");
    assert!(!ok);
    assert!(
        out.contains("c.toml:6:1: routes[0].bogus: unknown field `bogus`"),
        "{out}"
    );

    let (ok, out) = check(
        "[upstreams.app]\nservers = [\"htp:/x\"]\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n\n[[routes]]\nupstream = \"nope\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains("c.toml:2:12: upstreams.app.servers[0]:"),
        "{out}"
    );
    assert!(
        out.contains("c.toml:9:8: routes[1].path: duplicate route"),
        "{out}"
    );
    assert!(
        out.contains("c.toml:13:12: routes[2].upstream: unknown upstream \"nope\""),
        "{out}"
    );

    let (ok, out) =
        check("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\ngrace_period = \"forever\"\n");
    assert!(!ok);
    assert!(
        out.contains(":2:") && out.contains("server.trusted_proxies[0]"),
        "{out}"
    );
    assert!(
        out.contains(":3:") && out.contains("server.grace_period"),
        "{out}"
    );

    let (ok, out) =
        check("[session]\nstore = \"redis\"\nredis_url = \"${AUTHGATE_SURELY_UNSET}\"\n");
    assert!(!ok);
    assert!(out.contains("AUTHGATE_SURELY_UNSET is not set"), "{out}");
}

#[test]
fn run_refuses_bad_config_and_taken_ports() {
    let out = Command::new(BIN)
        .args(["run", "-c", "/nonexistent/authgate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[[listeners]]\naddress = \"{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n[server]\npid_file = \"{d}/pid\"\nupgrade_socket = \"{d}/sock\"\n",
            taken.local_addr().unwrap(),
            free_port(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_is_useful() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "demo"] {
        assert!(s.contains(word), "{s}");
    }
}
