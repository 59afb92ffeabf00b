//! Multi-process Redis deployments for the replica tests: a Sentinel set (1 primary,
//! 1 replica, 3 sentinels) and a 3-primary Cluster. Every process is a child of the test on a
//! free loopback port, with its files in a temp dir, killed on drop; every wait is bounded.
//! They are driven with `redis-cli` (installed with `redis-server`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require};

fn cli(port: u16, args: &[&str]) -> String {
    let bin = require("redis-cli", "apt-get install redis-tools");
    Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn spawn_redis(dir: &Path, args: &[String]) -> Child {
    let bin = require("redis-server", "apt-get install redis-server");
    let log = std::fs::File::create(dir.join("redis.log")).unwrap();
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

fn data_node(dir: &Path, port: u16, extra: &[String]) -> Child {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    spawn_redis(dir, &args)
}

/// Wait until `ok()` holds, or panic with `what` and the logs under `dir`.
async fn wait(limit: Duration, what: &str, dir: &Path, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + super::patient(limit);
    while !ok() {
        if Instant::now() > deadline {
            let mut logs = String::new();
            for e in walk(dir) {
                logs += &format!(
                    "--- {}\n{}\n",
                    e.display(),
                    std::fs::read_to_string(&e).unwrap_or_default()
                );
            }
            panic!("{what} not reached within {limit:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
    out
}

fn kill_all(children: &mut Vec<Child>) {
    for mut c in children.drain(..) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// 1 primary + 1 replica + 3 sentinels monitoring them as [`SentinelSet::MASTER`].
pub struct SentinelSet {
    children: Vec<Child>,
    nodes: [u16; 2],
    sentinels: [u16; 3],
    dir: tempfile::TempDir,
}

impl SentinelSet {
    pub const MASTER: &'static str = "authgate";

    pub async fn start() -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [free_port(), free_port()];
        let sentinels = [free_port(), free_port(), free_port()];
        let mut children = Vec::new();
        for (i, port) in nodes.iter().enumerate() {
            let d = dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&d).unwrap();
            // No 5 s wait before a replica's first full sync (nor a demoted primary's resync).
            let mut extra: Vec<String> = vec!["--repl-diskless-sync-delay".into(), "0".into()];
            if i == 1 {
                extra.extend([
                    "--replicaof".into(),
                    "127.0.0.1".into(),
                    nodes[0].to_string(),
                ]);
            }
            children.push(data_node(&d, *port, &extra));
        }
        for port in sentinels {
            let d = dir.path().join(format!("sentinel-{port}"));
            std::fs::create_dir_all(&d).unwrap();
            // Sentinel rewrites its config file: it must be its own, writable.
            let conf = d.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {m} 127.0.0.1 {p} 2\nsentinel down-after-milliseconds {m} 1000\nsentinel failover-timeout {m} 5000\nsentinel parallel-syncs {m} 1\n",
                    dir = d.display(),
                    m = Self::MASTER,
                    p = nodes[0],
                ),
            )
            .unwrap();
            children.push(spawn_redis(
                &d,
                &[conf.display().to_string(), "--sentinel".into()],
            ));
        }
        let set = SentinelSet {
            children,
            nodes,
            sentinels,
            dir,
        };
        let path = set.dir.path().to_path_buf();
        wait(
            Duration::from_secs(30),
            "a healthy Sentinel set",
            &path,
            || set.agreed_primary().is_some() && set.healthy(),
        )
        .await;
        set
    }

    pub fn master_name(&self) -> &'static str {
        Self::MASTER
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// The primary's port when all sentinels agree on it and it says it is a primary.
    fn agreed_primary(&self) -> Option<u16> {
        let mut agreed = None;
        for s in self.sentinels {
            let out = cli(s, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER]);
            let port: u16 = out.lines().nth(1)?.parse().ok()?;
            if agreed.is_some_and(|a| a != port) {
                return None;
            }
            agreed = Some(port);
        }
        let port = agreed?;
        cli(port, &["ROLE"])
            .lines()
            .next()?
            .eq("master")
            .then_some(port)
    }

    /// Every sentinel knows the two others and a replica whose link is up.
    fn healthy(&self) -> bool {
        self.sentinels.iter().all(|s| {
            let master = cli(*s, &["SENTINEL", "MASTER", Self::MASTER]);
            let others = master
                .lines()
                .skip_while(|l| *l != "num-other-sentinels")
                .nth(1)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let replicas = cli(*s, &["SENTINEL", "REPLICAS", Self::MASTER]);
            others >= 2 && replicas.contains("master-link-status\nok")
        })
    }

    pub fn primary_port(&self) -> u16 {
        self.agreed_primary().expect("an agreed primary")
    }

    /// `SENTINEL FAILOVER`, then wait until every sentinel names the other node and it
    /// answers as primary. Returns how long that took. One failover per set: for ~10 s after
    /// it the old primary is still writable, and a second failover then may promote it back.
    pub async fn failover(&self) -> Duration {
        let old = self.primary_port();
        let started = Instant::now();
        let answer = cli(self.sentinels[0], &["SENTINEL", "FAILOVER", Self::MASTER]);
        assert_eq!(answer, "OK", "SENTINEL FAILOVER refused");
        let path = self.dir.path().to_path_buf();
        wait(Duration::from_secs(30), "a new primary", &path, || {
            self.agreed_primary().is_some_and(|p| p != old)
        })
        .await;
        started.elapsed()
    }
}

impl SentinelSet {
    /// Wait until the sentinels agree on a primary and again see a replica whose link is up.
    /// After a failover: the old primary has resynced from the new one, so whatever only it
    /// held is gone by now.
    pub async fn wait_replicated(&self) {
        let path = self.dir.path().to_path_buf();
        wait(
            Duration::from_secs(30),
            "a replica in sync after the failover",
            &path,
            || self.agreed_primary().is_some() && self.healthy(),
        )
        .await;
    }

    /// `redis-cli ARGS` against the current primary.
    pub fn primary_cli(&self, args: &[&str]) -> String {
        cli(self.primary_port(), args)
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        kill_all(&mut self.children);
        let _ = self.nodes;
    }
}

/// Three primaries (no replicas) sharing the 16384 slots.
pub struct RedisCluster {
    children: Vec<Child>,
    ports: [u16; 3],
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let mut children = Vec::new();
        for port in ports {
            let d = dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&d).unwrap();
            let extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &d.join("nodes.conf").display().to_string(),
                "--cluster-port",
                &free_port().to_string(),
                "--cluster-node-timeout",
                "2000",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            children.push(data_node(&d, port, &extra));
        }
        let path = dir.path().to_path_buf();
        wait(Duration::from_secs(10), "cluster nodes up", &path, || {
            ports.iter().all(|p| cli(*p, &["PING"]) == "PONG")
        })
        .await;
        let bin = require("redis-cli", "apt-get install redis-tools");
        let out = Command::new(bin)
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {out:?}");
        wait(Duration::from_secs(20), "cluster_state:ok", &path, || {
            ports.iter().all(|p| {
                let info = cli(*p, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        })
        .await;
        RedisCluster {
            children,
            ports,
            _dir: dir,
        }
    }

    pub fn node_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        kill_all(&mut self.children);
    }
}

/// Three primaries each with one replica (six nodes) sharing the 16384 slots, for failover
/// tests: a node can be killed (SIGKILL) and restarted on its port with its files (it rejoins
/// the cluster, as a replica of whoever took its slots). Node timeout 1 s; a replica may
/// always be promoted (`cluster-replica-validity-factor 0`).
pub struct ReplicatedCluster {
    children: Vec<Option<Child>>,
    ports: Vec<u16>,
    extra: Vec<Vec<String>>,
    dirs: Vec<std::path::PathBuf>,
    dir: tempfile::TempDir,
}

impl ReplicatedCluster {
    pub async fn start() -> ReplicatedCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let mut set = ReplicatedCluster {
            children: Vec::new(),
            ports: ports.clone(),
            extra: Vec::new(),
            dirs: Vec::new(),
            dir,
        };
        for port in &ports {
            let d = set.dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&d).unwrap();
            let extra: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &d.join("nodes.conf").display().to_string(),
                "--cluster-port",
                &free_port().to_string(),
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            set.children.push(Some(data_node(&d, *port, &extra)));
            set.extra.push(extra);
            set.dirs.push(d);
        }
        let path = set.dir.path().to_path_buf();
        wait(Duration::from_secs(10), "cluster nodes up", &path, || {
            ports.iter().all(|p| cli(*p, &["PING"]) == "PONG")
        })
        .await;
        let bin = require("redis-cli", "apt-get install redis-tools");
        let out = Command::new(bin)
            .args(["--cluster", "create"])
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {out:?}");
        set.wait_healthy().await;
        set
    }

    /// Every node's URL (primaries and replicas).
    pub fn node_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// `redis-cli ARGS` against the node on `port`.
    pub fn node_cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    fn alive(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Running nodes that answer `ROLE` as a primary.
    pub fn primaries(&self) -> Vec<u16> {
        self.alive()
            .into_iter()
            .filter(|p| cli(*p, &["ROLE"]).lines().next() == Some("master"))
            .collect()
    }

    /// Keys matching `pattern` held by the node on `port`.
    pub fn keys_on(&self, port: u16, pattern: &str) -> Vec<String> {
        cli(port, &["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The running primary that serves `key`'s slot (the others answer `MOVED`).
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.primaries()
            .into_iter()
            .find(|p| cli(*p, &["EXISTS", key]).parse::<u32>().is_ok())
    }

    /// Every running node says `cluster_state:ok` with all slots served.
    fn all_slots_ok(&self) -> bool {
        self.alive().iter().all(|p| {
            let info = cli(*p, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        })
    }

    /// Three primaries, each with a replica whose link is up, and every slot served.
    pub async fn wait_healthy(&self) {
        let path = self.dir.path().to_path_buf();
        wait(
            Duration::from_secs(30),
            "3 primaries with a replica each, all slots ok",
            &path,
            || {
                let primaries = self.primaries();
                primaries.len() == 3
                    && primaries.iter().all(|p| {
                        cli(*p, &["INFO", "replication"])
                            .lines()
                            .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
                    })
                    && self.all_slots_ok()
            },
        )
        .await;
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait until the running nodes serve every slot again (a replica took over the killed
    /// primary's slots). Returns how long that took.
    pub async fn wait_failed_over(&self) -> Duration {
        let started = Instant::now();
        let path = self.dir.path().to_path_buf();
        wait(
            Duration::from_secs(30),
            "every slot served after the failover",
            &path,
            || self.primaries().len() == 3 && self.all_slots_ok(),
        )
        .await;
        started.elapsed()
    }

    /// Start the node on `port` again with its files (it rejoins the cluster).
    pub async fn restart(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        assert!(self.children[i].is_none(), "node {port} is running");
        self.children[i] = Some(data_node(&self.dirs[i], port, &self.extra[i]));
        let path = self.dir.path().to_path_buf();
        wait(Duration::from_secs(10), "restarted node up", &path, || {
            cli(port, &["PING"]) == "PONG"
        })
        .await;
    }
}

impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        let mut all: Vec<Child> = self.children.iter_mut().filter_map(Option::take).collect();
        kill_all(&mut all);
    }
}
