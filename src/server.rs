//! Assembles and runs the Pingora server from a validated config.
//!
//! Services: the proxy (one per h2c setting, sharing one route table and one connection
//! table, [`connections`]), the admin listener and the reload watcher.
//!
//! Signals:
//! - SIGTERM and SIGINT drain: `/readyz` turns 503 and every response carries
//!   `Connection: close` at once; the listeners keep accepting for `server.shutdown_delay`
//!   (the time a load balancer takes to stop sending), then close; in-flight requests get
//!   `server.grace_period`, then the process exits. A second SIGTERM/SIGINT skips the rest of
//!   the delay.
//! - SIGQUIT hands the listening sockets to a new process started with `--upgrade` (Pingora's
//!   zero-downtime upgrade, over `server.upgrade_socket`): both accept for Pingora's 5 s, then
//!   this one stops accepting and drains as above. Without a new process waiting on the
//!   socket, SIGQUIT is refused (logged) instead of leaving nothing listening.
//! - SIGHUP reloads routes and upstreams from the config file without dropping a connection.

use crate::connections;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{AdminService, Health};
use crate::certs::ListenerCert;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Runtime};
use crate::reload::{Assembly, ReloadService, Reloader};
use crate::tasks::Tasks;

/// SIGTERM and SIGINT both drain: an operator's Ctrl-C should not cut requests either.
/// Pingora stops accepting the moment `recv` returns, so the shutdown delay is spent here.
struct Signals {
    health: Arc<Health>,
    drain: Arc<connections::Drain>,
    shutdown_delay: Duration,
    upgrade_socket: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = quit.recv() => {
                    // Pingora sends the sockets, then stops accepting even when no process
                    // took them: only hand over to a process that is waiting for them.
                    // A file left by a killed `--upgrade` process is no listener: Pingora would
                    // fail to connect (ECONNREFUSED) and close the listeners all the same.
                    let waiting = upgrade_listener_waiting(&self.upgrade_socket);
                    if !waiting {
                        tracing::error!(upgrade_socket = %self.upgrade_socket.display(), "SIGQUIT ignored: no new process is listening on the upgrade socket (none, or a stale file left by a process that died; start `authgate run --upgrade` first, then send SIGQUIT within 5 s)");
                        continue;
                    }
                    // The hand-over starts now: this process leaves the load balancer's
                    // rotation, as on SIGTERM.
                    self.health.draining.store(true, Ordering::Release);
                    self.drain.begin();
                    crate::notify::stopping();
                    tracing::info!(upgrade_socket = %self.upgrade_socket.display(), "SIGQUIT: handing the listening sockets to the new process; responses now close their connections");
                    return ShutdownSignal::GracefulUpgrade;
                }
            };
            self.health.draining.store(true, Ordering::Release);
            self.drain.begin();
            crate::notify::stopping();
            tracing::info!(
                shutdown_delay = ?self.shutdown_delay,
                "{name}: draining: /readyz answers 503, responses close their connections, listeners close after the shutdown delay"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.shutdown_delay) => {}
                _ = term.recv() => tracing::info!("SIGTERM again: listeners close now"),
                _ = int.recv() => tracing::info!("SIGINT again: listeners close now"),
            }
            return ShutdownSignal::GracefulTerminate;
        }
    }
}

/// Whether a live process listens on the unix socket at `path` (a new process started with
/// `--upgrade`, waiting for the listening sockets).
///
/// The file alone proves nothing: a process killed while waiting leaves it behind. Nor can the
/// check `connect()`: the waiting process accepts exactly one connection and takes it as the
/// hand-over, so a probe connection would be the one it reads (nothing) while Pingora's own
/// connection is never accepted. The kernel's table of unix sockets (`/proc/net/unix`) says
/// whether a listening socket is bound at that path, which is what a connect would find out,
/// without being accepted. Where that table is not readable (not Linux, where Pingora has no
/// upgrade anyway), the file check remains.
pub fn upgrade_listener_waiting(path: &std::path::Path) -> bool {
    let is_socket = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    match std::fs::read_to_string("/proc/net/unix") {
        Ok(table) => unix_listener_bound(&table, path),
        Err(_) => true,
    }
}

/// `__SO_ACCEPTCON` in the `Flags` column of `/proc/net/unix`: a listening socket.
const SO_ACCEPTCON: u32 = 0x0001_0000;

/// Whether `table` (the text of `/proc/net/unix`) has a listening socket bound at `path`
/// (compared as written and canonicalized, since a relative bind shows as written).
fn unix_listener_bound(table: &str, path: &std::path::Path) -> bool {
    let canonical = std::fs::canonicalize(path).ok();
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(bound)) = (cols.get(3), cols.get(7)) else {
            return false;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        if !listening {
            return false;
        }
        let bound = std::path::Path::new(bound);
        bound == path
            || canonical
                .as_deref()
                .is_some_and(|c| std::fs::canonicalize(bound).is_ok_and(|b| b == c))
    })
}

/// Before a `--upgrade` start: a socket file at `path` with no process listening on it is left
/// from a process that died while waiting; remove it (Pingora also unlinks before binding;
/// this says so in the log). A live one is left alone: another process is waiting there.
fn remove_stale_upgrade_socket(path: &std::path::Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && !upgrade_listener_waiting(path) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::warn!(upgrade_socket = %path.display(), "removed a stale upgrade socket (left by a process that died while waiting)")
            }
            Err(e) => {
                tracing::warn!(upgrade_socket = %path.display(), error = %e, "stale upgrade socket not removable")
            }
        }
    }
}

#[cfg(test)]
mod upgrade_socket_tests {
    use super::*;

    #[test]
    fn a_stale_socket_file_is_no_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.sock");
        assert!(!upgrade_listener_waiting(&path), "no file");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(upgrade_listener_waiting(&path), "live listener");
        drop(l);
        assert!(path.exists(), "the file outlives the socket");
        assert!(!upgrade_listener_waiting(&path), "stale file");
        remove_stale_upgrade_socket(&path);
        assert!(!path.exists());
    }

    #[test]
    fn proc_net_unix_parsing() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a.sock\n\
0000000000000000: 00000002 00000000 00000000 0001 03 1235 /run/b.sock\n";
        assert!(unix_listener_bound(
            table,
            std::path::Path::new("/run/a.sock")
        ));
        assert!(!unix_listener_bound(
            table,
            std::path::Path::new("/run/b.sock")
        ));
        assert!(!unix_listener_bound(
            table,
            std::path::Path::new("/run/c.sock")
        ));
    }
}

#[cfg(test)]
mod ready_tests {
    use super::*;

    #[test]
    fn proc_net_tcp_parsing() {
        // 127.0.0.1:8080 listening (ours), 127.0.0.1:8081 listening (not ours), an established
        // connection on ours; the word order is the host's (little-endian here).
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n\
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        let v6 = "   0: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0\n";
        let ours: std::collections::HashSet<String> =
            ["111", "333", "444"].map(String::from).into();
        let table = format!("{v4}{v6}");
        if cfg!(target_endian = "little") {
            assert_eq!(
                tcp_listeners(&table, &ours),
                vec![
                    "127.0.0.1:8080".parse().unwrap(),
                    "[::1]:8082".parse().unwrap()
                ]
            );
        }
    }

    #[test]
    fn a_bound_listener_is_seen_and_a_reservation_is_not() {
        let mut config = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
        )
        .expect("config");
        let held = reserve_ephemeral(&mut config, false).unwrap();
        let addr = config.listeners[0].address;
        assert_ne!(addr.port(), 0, "the real port is written back");
        assert_eq!(
            listening_here(&[addr]),
            Some(false),
            "reserved, not listening"
        );
        // What Pingora does: SO_REUSEADDR, bind, listen, while the reservation is held.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _enter = rt.enter();
        let _listener = socket.listen(16).unwrap();
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "held from others"
        );
        assert_eq!(listening_here(&[addr]), Some(true));
        drop(held);
        assert!(
            reserve_ephemeral(&mut config.clone(), true).is_ok(),
            "no port 0 left"
        );
        let mut zero = config.clone();
        zero.listeners[0].address.set_port(0);
        assert!(
            reserve_ephemeral(&mut zero, true).is_err(),
            "port 0 under --upgrade"
        );
    }
}

/// Bind-test every public address: Pingora keeps running without a listener whose port is
/// taken, which would look healthy while serving nothing. Port 0 is left to
/// [`reserve_ephemeral`].
fn check_addresses(config: &Config) -> anyhow::Result<()> {
    for l in config.listeners.iter().filter(|l| l.address.port() != 0) {
        std::net::TcpListener::bind(l.address)
            .with_context(|| format!("cannot listen on {}", l.address))?;
    }
    Ok(())
}

/// Listeners configured with port 0 get a port the kernel picks, written back into `config`
/// so that Pingora, the log and the ready file all see the real address. Pingora binds by
/// address, not by socket, so the port is held until it has: each returned socket is bound
/// (strictly: the kernel picks a port nobody holds) and then marked `SO_REUSEADDR`, which lets
/// Pingora's own bind (also `SO_REUSEADDR`) share it while any other bind is refused. Drop
/// them once [`listening_here`] sees Pingora's sockets. Not under `--upgrade`: the new process
/// takes the old one's sockets by address, and port 0 names none.
fn reserve_ephemeral(
    config: &mut Config,
    upgrade: bool,
) -> anyhow::Result<Vec<tokio::net::TcpSocket>> {
    let mut held = Vec::new();
    for l in config
        .listeners
        .iter_mut()
        .filter(|l| l.address.port() == 0)
    {
        anyhow::ensure!(
            !upgrade,
            "listener {}: port 0 cannot be taken over with --upgrade; configure the port the running gateway reported",
            l.address
        );
        let context = || format!("cannot listen on {}", l.address);
        let socket = if l.address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .with_context(context)?;
        socket.bind(l.address).with_context(context)?;
        socket.set_reuseaddr(true).with_context(context)?;
        l.address = socket.local_addr().with_context(context)?;
        held.push(socket);
    }
    Ok(held)
}

/// Whether this process has a listening TCP socket on `addr`: its own socket inodes
/// (`/proc/self/fd`) against the kernel's socket tables (`/proc/net/tcp`, `tcp6`). Pingora
/// binds in its service threads and says nothing when it has; a probe connection would be
/// served and counted. Where `/proc` is not readable, `None`.
fn listening_here(addrs: &[std::net::SocketAddr]) -> Option<bool> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.push_str(&std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default());
    let listening = tcp_listeners(&table, &inodes);
    Some(addrs.iter().all(|a| listening.contains(a)))
}

/// `TCP_LISTEN` in the `st` column of `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The local addresses of the listening sockets in `table` (`/proc/net/tcp` or `tcp6` text)
/// whose inode is one of `inodes`.
fn tcp_listeners(
    table: &str,
    inodes: &std::collections::HashSet<String>,
) -> Vec<std::net::SocketAddr> {
    table
        .lines()
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&TCP_LISTEN) || !inodes.contains(*cols.get(9)?) {
                return None;
            }
            let (ip, port) = cols.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // The address is printed as 32-bit words in the host's byte order.
            let mut bytes = Vec::with_capacity(16);
            for i in (0..ip.len()).step_by(8) {
                let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
                bytes.extend_from_slice(&word.to_ne_bytes());
            }
            let ip: std::net::IpAddr = match bytes.len() {
                4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
                16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
                _ => return None,
            };
            Some(std::net::SocketAddr::new(ip, port))
        })
        .collect()
}

/// Once every proxy listener is bound (the admin one is by now), release the port
/// reservations, log the actual addresses in one line, and write them to `ready_file`
/// (atomically: a temporary file renamed) as
/// `{"listeners":["127.0.0.1:8080"],"admin":"127.0.0.1:9090","pid":1234}`. Runs on a thread
/// of its own: Pingora's services start only inside `Server::run`.
fn report_ready(
    listeners: Vec<std::net::SocketAddr>,
    admin: std::net::SocketAddr,
    reserved: Vec<tokio::net::TcpSocket>,
    ready_file: Option<PathBuf>,
) {
    const PATIENCE: Duration = Duration::from_secs(60);
    let started = std::time::Instant::now();
    loop {
        match listening_here(&listeners) {
            Some(false) if started.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Some(false) => {
                tracing::error!(listeners = ?listeners, "listeners not bound after {PATIENCE:?}; no ready report");
                return;
            }
            Some(true) | None => break,
        }
    }
    drop(reserved);
    let pid = std::process::id();
    let list: Vec<String> = listeners.iter().map(|a| a.to_string()).collect();
    tracing::info!(listeners = %list.join(" "), %admin, pid, "ready: every listener is bound");
    crate::notify::ready();
    let Some(path) = ready_file else { return };
    let json = serde_json::json!({"listeners": list, "admin": admin.to_string(), "pid": pid});
    let tmp = PathBuf::from(format!("{}.{pid}.tmp", path.display()));
    let written =
        std::fs::write(&tmp, format!("{json}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::error!(ready_file = %path.display(), error = %e, "cannot write the ready file");
    }
}

/// The admin listener, bound with `SO_REUSEPORT` so that a process started with `--upgrade`
/// can listen on the same address while this one drains (Pingora hands over only the proxy
/// listeners). Outside an upgrade, a plain bind first: another process on the address is
/// an error, as for the proxy listeners.
fn bind_admin(
    addr: std::net::SocketAddr,
    upgrade: bool,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<std::net::TcpListener> {
    let context = || format!("cannot listen on admin address {addr}");
    if !upgrade {
        drop(std::net::TcpListener::bind(addr).with_context(context)?);
    }
    let _enter = rt.enter();
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(context)?;
    socket.set_reuseaddr(true).with_context(context)?;
    socket.set_reuseport(true).with_context(context)?;
    socket.bind(addr).with_context(context)?;
    let listener = socket.listen(1024).with_context(context)?;
    listener.into_std().with_context(context)
}

/// Build and run the server until it is shut down by a signal. `upgrade`: take the
/// listening sockets over from a running process (which hands them over on SIGQUIT).
/// `ready_file`: where to write the bound addresses once every listener is up
/// ([`report_ready`]); a listener or admin address with port 0 gets a free port.
pub fn run(
    mut config: Config,
    config_path: Option<PathBuf>,
    upgrade: bool,
    ready_file: Option<PathBuf>,
    watch: Option<Duration>,
) -> anyhow::Result<()> {
    crate::jwt::crypto::install();
    // In an upgrade the old process holds the addresses until it hands them over.
    if !upgrade {
        check_addresses(&config)?;
    }
    // As loaded: a reload compares the file with this, port 0 and all.
    let loaded = config.clone();
    let reserved = reserve_ephemeral(&mut config, upgrade)?;

    let metrics = Arc::new(Metrics::new());
    let control = control_runtime()?;
    let admin_listener = bind_admin(config.admin_address, upgrade, &control)?;
    config.admin_address = admin_listener
        .local_addr()
        .context("admin listener address")?;
    // Stopped once the server has: no task outlives the gateway (a Redis connection left
    // open, a provider still polled).
    let tasks = Arc::new(Tasks::new());
    let assembly = Arc::new(Assembly::new(
        metrics.clone(),
        control.handle().clone(),
        tasks.clone(),
    ));
    let auth = assembly.commit(assembly.build(&config)?);
    let health = Arc::new(Health::new(assembly.shared()));
    crate::reload::install_pages(&config);
    let runtime = Runtime::new(&config, &metrics, auth);
    // Upstream names are looked up before the first request, then followed in the background;
    // one that does not resolve leaves its upstream without a server, not the gateway down.
    control.block_on(runtime.resolve(crate::upstream::RESOLVE_PATIENCE));
    assembly.follow_upstreams(&runtime);
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));

    let mut server = pingora_server(&config, upgrade);
    // With `upgrade`, this waits (Pingora: 5 s at most) for the old process's sockets; every
    // fallible step of the start is done by now, so a bad config cannot take them and die.
    server.bootstrap();

    let drain = Arc::new(connections::Drain::default());
    let table = connections::Connections::new(connections::Limits {
        max_connections: config.server.max_connections,
        keepalive_timeout: config.server.keepalive_timeout,
        request_header_timeout: config.server.request_header_timeout,
    });
    let otlp = match crate::otlp::from_env(&metrics)? {
        Some((exporter, task)) => {
            let _enter = control.enter();
            tasks.spawn("otlp export", task);
            Some(exporter)
        }
        None => None,
    };
    let gateway = Gateway::new(runtime.clone(), metrics.clone())
        .with_drain(drain.clone())
        .with_otlp(otlp);
    let (services, certs) = proxy_services(&config, &server, &gateway, &table)?;
    for svc in services {
        server.add_service(svc);
    }
    server.add_service(background_service(
        "admin",
        AdminService::new(
            admin_listener,
            metrics.clone(),
            health.clone(),
            crate::admin::sessions::SessionsApi::new(config.admin_token.clone(), assembly.shared()),
        ),
    ));
    if let Some(path) = config_path {
        server.add_service(background_service(
            "reload",
            ReloadService(Arc::new(Reloader {
                path,
                runtime,
                assembly: assembly.clone(),
                metrics,
                loaded,
                bound: config.clone(),
                certs,
                watch,
            })),
        ));
    }

    for l in &config.listeners {
        tracing::info!(address = %l.address, tls = l.tls.is_some(), h2c = l.h2c, upgrade, "listening");
    }
    tracing::info!(address = %config.admin_address, "admin listening (/healthz /readyz /metrics)");
    health.started.store(true, Ordering::Release);
    spawn_ready_reporter(&config, reserved, ready_file)?;
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            health,
            drain,
            shutdown_delay: config.server.shutdown_delay,
            upgrade_socket: config.server.upgrade_socket.clone().into(),
        }),
    });
    let aborted = control.block_on(tasks.shutdown(std::time::Duration::from_secs(1)));
    tracing::debug!(aborted = aborted.len(), "background tasks stopped");
    control.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// The runtime of background work that is not request handling (provider refresh, Redis
/// pub/sub): one thread, alive as long as the server.
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("authgate-control")
        .enable_all()
        .build()
        .context("control runtime")
}

/// The Pingora server `[server]` describes (threads, grace periods, pid file, upgrade
/// socket), taking the listening sockets over from a running process with `upgrade`.
fn pingora_server(config: &Config, upgrade: bool) -> Server {
    // Pingora counts whole seconds; round up so "500ms" still drains.
    let secs = |d: std::time::Duration| Some(d.as_secs_f64().ceil() as u64);
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: secs(config.server.grace_period),
        graceful_shutdown_timeout_seconds: secs(config.server.shutdown_timeout),
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_socket.clone(),
        ..ServerConf::default()
    };
    if upgrade {
        remove_stale_upgrade_socket(std::path::Path::new(&config.server.upgrade_socket));
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    Server::new_with_opt_and_conf(Some(opt), conf)
}

/// Report the bound addresses ([`report_ready`]) from a thread of its own, once every
/// listener is up.
fn spawn_ready_reporter(
    config: &Config,
    reserved: Vec<tokio::net::TcpSocket>,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let listeners = config.listeners.iter().map(|l| l.address).collect();
    let admin = config.admin_address;
    std::thread::Builder::new()
        .name("authgate-ready".into())
        .spawn(move || report_ready(listeners, admin, reserved, ready_file))
        .context("ready reporter thread")?;
    Ok(())
}

/// The proxy services: one for the HTTP/1.1 (and TLS) listeners, one for the h2c ones, each
/// on every listener of its kind, sharing the connection table; and the TLS listeners'
/// certificates, which a reload renews.
fn proxy_services(
    config: &Config,
    server: &Server,
    gateway: &Gateway,
    table: &Arc<connections::Connections>,
) -> anyhow::Result<(Vec<ProxyService>, Vec<Arc<ListenerCert>>)> {
    let mut services = Vec::new();
    let mut certs = Vec::new();
    for h2c in [false, true] {
        let listeners: Vec<_> = config.listeners.iter().filter(|l| l.h2c == h2c).collect();
        if listeners.is_empty() {
            continue;
        }
        let name = if h2c {
            "authgate proxy (h2c)"
        } else {
            "authgate proxy"
        };
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway.clone());
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        opts.h2_idle_timeout = Some(config.server.keepalive_timeout);
        proxy.server_options = Some(opts);
        let mut svc = Service::new(
            name.to_string(),
            connections::Driver::new(proxy, table.clone(), h2c),
        );
        for l in listeners {
            let addr = l.address.to_string();
            // No read buffer under the parser: Pingora reads a request head into a buffer of
            // its own (4 KiB to start) and bodies into another, so its default 64 KiB one per
            // connection only holds memory (most of what an idle connection cost).
            let mut endpoint = ListenerConfig::tcp(addr.clone())
                .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE));
            if let Some(tls) = &l.tls {
                // Served through a resolver a reload can update (`certs`).
                let cert = Arc::new(
                    ListenerCert::load(&tls.cert_file, &tls.key_file)
                        .map_err(|e| anyhow::anyhow!("TLS listener {addr}: {e}"))?,
                );
                let mut settings = TlsSettings::intermediate("", "")
                    .map_err(|e| anyhow::anyhow!("TLS listener {addr}: {e}"))?;
                settings.set_cert_resolver(cert.clone());
                settings.enable_h2();
                certs.push(cert);
                endpoint = endpoint.tls(settings);
            }
            svc.add_listener(endpoint);
        }
        services.push(svc);
    }
    Ok((services, certs))
}

type ProxyService = Service<connections::Driver<pingora::proxy::HttpProxy<Gateway>>>;
