//! Multi-process Redis topologies for tests: a Sentinel set (1 primary, 1 replica,
//! 3 sentinels) and a 3-primary Redis Cluster. Every process is a child of the test (never
//! daemonized) on a free loopback port, with its files and log in its own temp dir; every
//! wait is bounded and panics with the logs; dropping the handle kills and reaps every child.
//!
//! They are driven with the `redis` crate's synchronous API (short timeouts), so a helper
//! never hangs on a stopped server. redis-server 7.0 has no separate `redis-sentinel`
//! binary here: sentinels are `redis-server <conf> --sentinel`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{free_port, require};

/// How long a topology may take to become healthy, and a failover to complete.
const LIMIT: Duration = Duration::from_secs(20);
/// Each process's stdout and stderr, in its dir.
const LOG: &str = "redis.log";

/// One `redis-server` child (data node or sentinel) and its dir.
struct Node {
    what: &'static str,
    port: u16,
    // In a Mutex so that waits through `&self` can notice a process that died.
    child: Mutex<Option<Child>>,
    dir: tempfile::TempDir,
}

impl Node {
    fn spawn(what: &'static str, port: u16, dir: tempfile::TempDir, args: &[String]) -> Node {
        let bin = require("redis-server", "apt-get install redis-server");
        let log = std::fs::File::create(dir.path().join(LOG)).unwrap();
        let child = Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        Node {
            what,
            port,
            child: Mutex::new(Some(child)),
            dir,
        }
    }

    /// A data node: AOF fsynced on every write, like [`super::Redis`], plus the `extra`
    /// arguments (given its dir).
    fn data(what: &'static str, port: u16, extra: impl FnOnce(&Path) -> Vec<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra(dir.path()));
        Node::spawn(what, port, dir, &args)
    }

    fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Why the process is gone, if it exited on its own.
    fn exited(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let status = child.as_mut()?.try_wait().ok()??;
        Some(format!("{} :{} exited ({status})", self.what, self.port))
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- {} :{} ({})\n{tail}\n", self.what, self.port, LOG)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn logs<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> String {
    nodes.into_iter().map(Node::log_tail).collect()
}

/// One command to 127.0.0.1:`port` on a fresh connection, every step bounded.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let run = || -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        con.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    };
    run().map_err(|e| format!(":{port} {}: {e}", args.join(" ")))
}

/// The first element of `ROLE`: "master", "slave" or "sentinel".
fn role(port: u16) -> Result<String, String> {
    let v: Vec<redis::Value> = query(port, &["ROLE"])?;
    let first = v.into_iter().next().ok_or("empty ROLE")?;
    redis::from_redis_value(first).map_err(|e| e.to_string())
}

/// One `field:value` line of an `INFO`-style reply.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(field)?.strip_prefix(':'))
        .map(str::to_string)
}

/// Wait (bounded) until `check` returns `Ok`; panic with `what`, the last error, early exits
/// and the logs of `nodes` if it does not.
async fn wait_until<T>(
    what: &str,
    nodes: &[&Node],
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        let exited: Vec<String> = nodes.iter().filter_map(|n| n.exited()).collect();
        if !exited.is_empty() || Instant::now() > deadline {
            panic!(
                "{what}: not reached within {LIMIT:?} (last: {last}; {exited:?})\n{}",
                logs(nodes.iter().copied())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 1 primary + 1 replica + 3 sentinels (quorum 2) monitoring them as [`SentinelSet::MASTER`].
pub struct SentinelSet {
    // Sentinels first: they are dropped (killed) before the data nodes, so they never start
    // a failover of a set that is being torn down.
    sentinels: Vec<Node>,
    /// The two data nodes; `data[0]` started as the primary. Roles change with failovers.
    data: Vec<Node>,
}

impl SentinelSet {
    /// The name the sentinels monitor the primary under.
    pub const MASTER: &'static str = "authgate";

    pub async fn start() -> SentinelSet {
        let primary = free_port();
        let data = vec![
            Node::data("primary", primary, |_| vec![]),
            Node::data("replica", free_port(), |_| {
                strings(&["--replicaof", "127.0.0.1", &primary.to_string()])
            }),
        ];

        // Sentinels read a replica's link state from its INFO only every 10 s: start them once
        // the link is up, or they may report it down for those 10 s (and refuse to fail over).
        let replica = data[1].port;
        wait_until("replica in sync", &[&data[0], &data[1]], || {
            let info: String = query(replica, &["INFO", "replication"])?;
            match info_field(&info, "master_link_status").as_deref() {
                Some("up") => Ok(()),
                other => Err(format!("master_link_status {other:?}")),
            }
        })
        .await;

        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = tempfile::tempdir().unwrap();
                // Sentinel rewrites its config (epochs, known nodes): its own writable file.
                let conf = dir.path().join("sentinel.conf");
                let m = Self::MASTER;
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                         sentinel monitor {m} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {m} 1000\n\
                         sentinel failover-timeout {m} 5000\n\
                         sentinel parallel-syncs {m} 1\n",
                        dir.path().display()
                    ),
                )
                .unwrap();
                let args = [conf.display().to_string(), "--sentinel".into()];
                Node::spawn("sentinel", port, dir, &args)
            })
            .collect();
        let set = SentinelSet { sentinels, data };
        let t0 = Instant::now();
        set.wait_healthy().await;
        eprintln!("sentinel set ready in {:?}", t0.elapsed());
        set
    }

    pub fn master_name(&self) -> &'static str {
        Self::MASTER
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}/", s.port))
            .collect()
    }

    /// The ports of both data nodes (whichever is primary now).
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// The primary's port as the first sentinel that answers reports it.
    pub fn primary_port(&self) -> u16 {
        let mut errors = Vec::new();
        for s in &self.sentinels {
            match master_addr(s.port) {
                Ok(p) => return p,
                Err(e) => errors.push(e),
            }
        }
        panic!("no sentinel names a primary: {errors:?}");
    }

    /// `SENTINEL FAILOVER`, then wait (bounded) until every sentinel names the other data node
    /// and it answers `ROLE` as master. Returns the time from the accepted command to that.
    ///
    /// First waits until the set is healthy ([`SentinelSet::wait_healthy`]): after a failover
    /// the old primary stays a writable master until sentinel demotes it (~10 s), yet sentinel
    /// already lists it as a replica and will promote it, losing every write made since.
    pub async fn failover(&self) -> Duration {
        self.wait_healthy().await;
        let old = self.primary_port();
        let deadline = Instant::now() + LIMIT;
        let started = loop {
            match query::<String>(
                self.sentinels[0].port,
                &["SENTINEL", "FAILOVER", Self::MASTER],
            ) {
                Ok(_) => break Instant::now(),
                // NOGOODSLAVE: no replica fit to promote yet; INPROG: a failover is running.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("SENTINEL FAILOVER refused, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("SENTINEL FAILOVER: {e}\n{}", logs(self.iter())),
            }
        };
        self.wait_new_primary(old).await;
        started.elapsed()
    }

    /// SIGKILL the current primary; returns its port. Sentinels notice after
    /// down-after-milliseconds (1 s) and elect the replica: see [`SentinelSet::wait_new_primary`].
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        let node = self.data.iter().find(|n| n.port == port);
        node.expect("primary is one of the data nodes").kill();
        port
    }

    /// Wait (bounded) until every sentinel names a primary other than `old` and it answers
    /// `ROLE` as master; returns its port.
    pub async fn wait_new_primary(&self, old: u16) -> u16 {
        let sentinels: Vec<u16> = self.sentinels.iter().map(|s| s.port).collect();
        let deadline = Instant::now() + LIMIT;
        loop {
            let last = match agreed_primary(&sentinels) {
                Ok(p) if p == old => format!("sentinels still name :{old}"),
                Ok(p) => return p,
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "no new primary within {LIMIT:?} (last: {last})\n{}",
                    logs(self.iter())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait (bounded) until the set is as healthy as after [`SentinelSet::start`]: agreed
    /// primary, every sentinel sees the others and a replica with its link up. After a
    /// failover this takes until sentinel has demoted the old primary (~10 s).
    pub async fn wait_healthy(&self) {
        let (sentinels, data) = self.ports();
        let nodes: Vec<&Node> = self.iter().collect();
        wait_until("a healthy Sentinel set", &nodes, || {
            healthy(&sentinels, &data)
        })
        .await;
    }

    fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        let ports = |v: &[Node]| v.iter().map(|n| n.port).collect();
        (ports(&self.sentinels), ports(&self.data))
    }

    fn iter(&self) -> impl Iterator<Item = &Node> {
        self.sentinels.iter().chain(&self.data)
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME` on one sentinel: the primary's port.
fn master_addr(sentinel: u16) -> Result<u16, String> {
    let addr: Vec<String> = query(
        sentinel,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelSet::MASTER],
    )?;
    match &addr[..] {
        [_, port] => port.parse().map_err(|e| format!("port {port:?}: {e}")),
        _ => Err(format!(":{sentinel} names no primary: {addr:?}")),
    }
}

/// The primary all `sentinels` name, if they agree and it says it is a master.
fn agreed_primary(sentinels: &[u16]) -> Result<u16, String> {
    let ports = sentinels
        .iter()
        .map(|s| master_addr(*s))
        .collect::<Result<Vec<u16>, String>>()?;
    if ports.iter().any(|p| *p != ports[0]) {
        return Err(format!("sentinels disagree on the primary: {ports:?}"));
    }
    match role(ports[0])?.as_str() {
        "master" => Ok(ports[0]),
        r => Err(format!("named primary :{} has role {r}", ports[0])),
    }
}

/// An agreed primary whose replica (the other data node) says it is linked to it; every
/// sentinel sees the primary healthy, sees the 2 other sentinels, and knows a replica whose
/// link is up (else `SENTINEL FAILOVER` refuses).
fn healthy(sentinels: &[u16], data: &[u16]) -> Result<(), String> {
    let primary = agreed_primary(sentinels)?;
    // The replica itself, not sentinel's view of it: that is refreshed only every 10 s, and
    // sentinel lists a demoted primary as a replica before it actually is one.
    for d in data.iter().filter(|d| **d != primary) {
        let info: String = query(*d, &["INFO", "replication"])?;
        let linked = info_field(&info, "role").as_deref() == Some("slave")
            && info_field(&info, "master_port") == Some(primary.to_string())
            && info_field(&info, "master_link_status").as_deref() == Some("up");
        if !linked {
            return Err(format!(":{d} is not a replica linked to :{primary}"));
        }
    }
    for s in sentinels {
        let m: HashMap<String, String> = query(*s, &["SENTINEL", "MASTER", SentinelSet::MASTER])?;
        let others: u32 = m
            .get("num-other-sentinels")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if m.get("flags").map(String::as_str) != Some("master") || others < 2 {
            return Err(format!(
                ":{s} sees the primary as {:?} with {others} other sentinels",
                m.get("flags")
            ));
        }
        let replicas: Vec<HashMap<String, String>> =
            query(*s, &["SENTINEL", "REPLICAS", SentinelSet::MASTER])?;
        let ok = replicas.iter().any(|r| {
            let field = |k: &str| r.get(k).map(String::as_str);
            field("flags") == Some("slave")
                && field("master-link-status") == Some("ok")
                && field("port").and_then(|p| p.parse().ok()) != Some(primary)
                && field("port").is_some_and(|p| data.iter().any(|d| d.to_string() == p))
        });
        if !ok {
            return Err(format!(":{s} knows no linked replica: {replicas:?}"));
        }
    }
    Ok(())
}

/// Three primaries (no replicas) sharing the 16384 slots.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let cli = require("redis-cli", "apt-get install redis-tools");
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                // The bus port from free_port() too: port + 10000 may be taken (or > 65535).
                let bus = free_port().to_string();
                Node::data("cluster node", free_port(), |dir| {
                    strings(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &dir.join("nodes.conf").display().to_string(),
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "2000",
                    ])
                })
            })
            .collect();
        let t0 = Instant::now();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let all: Vec<&Node> = nodes.iter().collect();
        wait_until("cluster nodes answer PING", &all, || {
            ports
                .iter()
                .try_for_each(|p| query::<String>(*p, &["PING"]).map(drop))
        })
        .await;

        // `--cluster create` assigns the slots and sends CLUSTER MEET (with the bus ports).
        let out = all[0].dir.path().join("cluster-create.log");
        let log = std::fs::File::create(&out).unwrap();
        let mut create = Reap(
            Command::new(cli)
                .args(["--cluster", "create"])
                .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn redis-cli --cluster create"),
        );
        let status = wait_until("redis-cli --cluster create exits", &all, || {
            create
                .0
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_string())
        })
        .await;
        if !status.success() {
            panic!(
                "redis-cli --cluster create: {status}\n{}\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                logs(all.iter().copied())
            );
        }

        wait_until("cluster_state:ok on every node", &all, || {
            ports.iter().try_for_each(|p| {
                let info: String = query(*p, &["CLUSTER", "INFO"])?;
                let state = info_field(&info, "cluster_state");
                let slots = info_field(&info, "cluster_slots_ok");
                let known = info_field(&info, "cluster_known_nodes");
                match (state.as_deref(), slots.as_deref(), known.as_deref()) {
                    (Some("ok"), Some("16384"), Some("3")) => Ok(()),
                    s => Err(format!(":{p} (state, slots_ok, known_nodes) = {s:?}")),
                }
            })
        })
        .await;
        eprintln!("redis cluster ready in {:?}", t0.elapsed());
        RedisCluster { nodes }
    }

    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }
}

/// A helper process killed and reaped on drop (also when a wait panics).
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}
