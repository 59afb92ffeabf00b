//! A provider served over HTTPS by a private CA (the real test provider with
//! `IDP_TLS_CERT`/`IDP_TLS_KEY`), the real binary, and a real outbound proxy (Debian's
//! `tinyproxy`): `ca_file` trusts exactly that CA, the bundled web roots do not, another CA
//! does not, `system_trust_store` adds the OS store only when set, and `HTTPS_PROXY` carries
//! the provider traffic.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    auth_config, client, echo, eventually, free_port, http_login_trusting, require, test_pki,
    with_provider_keys, write, Gateway, Idp, Opts, Seen, TestPki, ANY_PORT,
};

/// Proxy variables the gateway could inherit: removed, so each test says exactly which it sets.
const PROXY_VARS: [&str; 9] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

fn env(set: &[(&str, String)]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> =
        PROXY_VARS.iter().map(|k| (k.to_string(), None)).collect();
    out.extend(set.iter().map(|(k, v)| (k.to_string(), Some(v.clone()))));
    out
}

/// A gateway in front of the echo app with `idp` as provider plus `provider_keys` in its
/// `[[providers]]` table, started (not waited for readiness).
async fn gateway(
    idp: &Idp,
    port: u16,
    provider_keys: &str,
    env: Vec<(String, Option<String>)>,
) -> Gateway {
    let e = echo().await;
    let config = with_provider_keys(&auth_config(idp, e, "store = \"memory\""), provider_keys);
    Gateway::start_with(
        &config,
        Opts {
            port: Some(port),
            env,
            ..Opts::default()
        },
    )
    .await
}

fn ca_file(dir: &Path, name: &str, pki: &TestPki) -> PathBuf {
    write(dir, name, &pki.ca_pem)
}

/// Sign in through the HTTPS provider and reach the app as alice.
async fn login_works(gw: &Gateway, pki: &TestPki) {
    gw.wait_ready().await;
    let (cookie, resp) = http_login_trusting(gw, "/app/page", &pki.ca_pem).await;
    assert_eq!(resp.status(), 302, "callback:\n{}", gw.log());
    assert!(!cookie.is_empty(), "no session cookie:\n{}", gw.log());
    let r = gw.get_as("/app/page", &cookie).await;
    assert_eq!(r.status(), 200);
    let seen: Seen = r.json().await.unwrap();
    assert_eq!(seen.header("x-forwarded-user"), Some("alice"));
}

/// The provider is refused: its certificate error is logged, `/readyz` stays 503, and sign-in
/// answers 503 (no redirect to a provider the gateway cannot talk to).
async fn refused(gw: &Gateway) {
    let logged = eventually(Duration::from_secs(10), || async {
        gw.log().contains("cannot connect to the provider")
    })
    .await;
    let log = gw.log();
    assert!(logged, "no connect failure logged:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect to the provider"))
        .unwrap();
    assert!(
        line.contains("invalid peer certificate"),
        "not a certificate error: {line}"
    );
    assert!(log.contains("provider refresh failed"), "{log}");
    let c = client();
    let r = c.get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["provider:test"], false, "{v}");
    let r = c.get(gw.url("/.authgate/login")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c
        .get(gw.url("/app"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(!gw.log().contains("provider ready"), "{}", gw.log());
}

/// (a) `ca_file` = the provider's private CA: sign-in works end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_trusts_a_private_ca() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path(), "idp-ca.pem", &pki);
    let port = ANY_PORT;
    let idp = Idp::start_tls(true, &[port], &pki).await;
    assert!(idp.issuer.starts_with("https://"), "{}", idp.issuer);
    let gw = gateway(
        &idp,
        port,
        &format!("ca_file = \"{}\"\n", ca.display()),
        env(&[]),
    )
    .await;
    login_works(&gw, &pki).await;
}

/// (b) Without `ca_file` only the bundled web roots are trusted: the provider is refused, and
/// `system_trust_store = true` does not change that while the OS store lacks the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_a_private_ca_is_refused() {
    let pki = test_pki();
    let port = ANY_PORT;
    let idp = Idp::start_tls(true, &[port], &pki).await;
    let gw = gateway(&idp, port, "", env(&[])).await;
    refused(&gw).await;
    drop(gw);
    let gw = gateway(&idp, port, "system_trust_store = true\n", env(&[])).await;
    refused(&gw).await;
}

/// (c) `ca_file` naming another CA (same name, other key) is refused: the web roots are not
/// consulted either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_of_another_ca_is_refused() {
    let pki = test_pki();
    let other = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path(), "other-ca.pem", &other);
    let port = ANY_PORT;
    let idp = Idp::start_tls(true, &[port], &pki).await;
    let gw = gateway(
        &idp,
        port,
        &format!("ca_file = \"{}\"\n", ca.display()),
        env(&[]),
    )
    .await;
    refused(&gw).await;
}

/// `system_trust_store = true` adds the OS store (here: rustls-native-certs reads
/// `SSL_CERT_FILE`, pointed at the private CA); the same OS store without the key is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_trust_store_adds_the_os_store_only_when_set() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path(), "os-store.pem", &pki);
    let os_store = [("SSL_CERT_FILE", ca.display().to_string())];
    let port = ANY_PORT;
    let idp = Idp::start_tls(true, &[port], &pki).await;
    let gw = gateway(&idp, port, "", env(&os_store)).await;
    refused(&gw).await;
    drop(gw);
    let gw = gateway(&idp, port, "system_trust_store = true\n", env(&os_store)).await;
    login_works(&gw, &pki).await;
}

/// A real tinyproxy on a free loopback port, logging every connection to its log file.
struct Tinyproxy {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    async fn start() -> Tinyproxy {
        let bin = require("tinyproxy", "apt-get install tinyproxy-bin");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // No ConnectPort line: CONNECT to any port (the provider's is not 443).
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\nLogLevel Connect\nLogFile \"{}\"\n",
            dir.path().join("tinyproxy.log").display()
        );
        let conf_path = write(dir.path(), "tinyproxy.conf", &conf);
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tinyproxy");
        let mut tp = Tinyproxy {
            child: Some(child),
            port,
            dir,
        };
        let up = eventually(Duration::from_secs(10), || async {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        if !up {
            let status = tp.child.as_mut().unwrap().try_wait();
            panic!(
                "tinyproxy did not listen on {port} ({status:?}):\n{}",
                tp.log()
            );
        }
        tp
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }

    /// How many CONNECT requests to `authority` the proxy received.
    fn connects_to(&self, authority: &str) -> usize {
        let needle = format!("CONNECT {authority} ");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// (d) `HTTPS_PROXY` carries every provider call (discovery, JWKS, token endpoint) through a
/// real proxy, as CONNECT tunnels, also to a loopback provider (reqwest exempts no address
/// by itself); `NO_PROXY` naming the provider's address sends it direct again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_carries_the_provider_traffic() {
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path(), "idp-ca.pem", &pki);
    let port = ANY_PORT;
    let idp = Idp::start_tls(true, &[port], &pki).await;
    let authority = format!("127.0.0.1:{}", idp.port);
    let proxy = Tinyproxy::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let keys = format!("ca_file = \"{}\"\n", ca.display());

    let gw = gateway(
        &idp,
        port,
        &keys,
        env(&[("HTTPS_PROXY", proxy_url.clone())]),
    )
    .await;
    login_works(&gw, &pki).await;
    let tunnels = proxy.connects_to(&authority);
    assert!(
        tunnels >= 1,
        "no CONNECT {authority} in tinyproxy's log:\n{}",
        proxy.log()
    );
    drop(gw);

    // NO_PROXY naming the provider's address: direct, the proxy sees nothing new.
    let port2 = ANY_PORT;
    let idp2 = Idp::start_tls(true, &[port2], &pki).await;
    let authority2 = format!("127.0.0.1:{}", idp2.port);
    let gw = gateway(
        &idp2,
        port2,
        &keys,
        env(&[
            ("HTTPS_PROXY", proxy_url.clone()),
            ("NO_PROXY", "localhost,127.0.0.1".into()),
        ]),
    )
    .await;
    login_works(&gw, &pki).await;
    assert_eq!(
        proxy.connects_to(&authority2),
        0,
        "NO_PROXY ignored:\n{}",
        proxy.log()
    );

    drop(gw);

    // And a proxy that is down leaves the provider unreachable: with HTTPS_PROXY set, no
    // connection goes direct.
    let down = common::dead_port();
    let dead = format!("http://127.0.0.1:{}", down.port);
    let gw = gateway(&idp2, ANY_PORT, &keys, env(&[("HTTPS_PROXY", dead)])).await;
    let logged = eventually(Duration::from_secs(10), || async {
        gw.log().contains("cannot connect to the provider")
    })
    .await;
    assert!(logged, "{}", gw.log());
    assert_eq!(
        client()
            .get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
}
