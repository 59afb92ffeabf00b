//! A real Apache httpd (Debian's `apache2`) with mod_auth_openidc (Debian's
//! `libapache2-mod-auth-openidc`) on a free loopback port, running a site given as config
//! lines, killed on drop. The harness writes only what a distribution's `apache2.conf` would
//! (modules, listener, pid and log files, runtime dir); the site is the caller's, e.g. a vhost
//! taken verbatim from the docs.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, patient, require};

/// Debian's module directory.
const MODULES: &str = "/usr/lib/apache2/modules";

/// A running `apache2 -D FOREGROUND`.
pub struct Apache {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Apache {
    /// The port Apache will listen on, picked before the site is written (the site names its
    /// own address, e.g. in `OIDCRedirectURI`).
    pub fn pick_port() -> u16 {
        free_port()
    }

    /// Run `site` on 127.0.0.1:`port`, with `env` in Apache's environment (a site's
    /// `${VAR}` reads it). Fails with Apache's error log when it exits or does not listen
    /// within 10 s.
    pub async fn start(port: u16, site: &str, env: &[(&str, &str)]) -> Apache {
        let bin = require("apache2", "apt-get install apache2");
        assert!(
            Path::new(MODULES).join("mod_auth_openidc.so").is_file(),
            "mod_auth_openidc is required by this test and was not found: apt-get install \
             libapache2-mod-auth-openidc (./tests/run.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        // As root, the workers switch to an unprivileged user that must read the temp dir.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("headers_module", "mod_headers.so"),
            ("proxy_module", "mod_proxy.so"),
            ("proxy_http_module", "mod_proxy_http.so"),
            ("auth_openidc_module", "mod_auth_openidc.so"),
        ]
        .iter()
        .map(|(name, file)| format!("LoadModule {name} {MODULES}/{file}\n"))
        .collect::<String>();
        let user = if root {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let conf = format!(
            "ServerRoot {d}\nDefaultRuntimeDir {d}\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\nLogLevel warn\n\
             {modules}{user}Listen 127.0.0.1:{port}\nServerName 127.0.0.1\n\n{site}\n"
        );
        std::fs::write(dir.path().join("httpd.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(dir.path().join("httpd.conf"))
            .args(["-D", "FOREGROUND"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn apache2");
        let mut apache = Apache {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + patient(Duration::from_secs(10));
        loop {
            if let Some(status) = apache.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("apache2 exited early ({status}):\n{}", apache.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return apache;
            }
            assert!(
                Instant::now() < deadline,
                "apache2 did not listen on {port} within 10s:\n{}",
                apache.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:port`
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Apache's stderr and error log.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the parent stops its workers (SIGKILL would orphan them, still
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
