//! Connections to Redis in its three deployments: one server, a Sentinel-managed primary,
//! or a Cluster. [`RedisConn`] is the command connection (cheap to clone, multiplexed) and
//! [`RedisConn::subscriber`] opens the pub/sub connection for cache invalidations.
//!
//! - **Standalone:** redis-rs' `ConnectionManager` (reconnects by itself).
//! - **Sentinel:** redis-rs has nothing that follows a failover (its `ConnectionManager`
//!   reconnects to the old address, which is now a replica answering `READONLY`), so
//!   [`SentinelConn`] asks the sentinels for the primary, drops its connection on any
//!   connection-level error or `READONLY`, and a watcher polls the sentinels so a promoted
//!   replica is used within a second even while the old primary still answers.
//! - **Cluster:** redis-rs' `ClusterConnection` (follows slot moves and node failures).
//!   Classic `PUBLISH` reaches every node of a cluster, so the subscriber listens on any
//!   one node and moves to the next seed when that one goes away.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::config::model::RedisTopology;

/// How the store reaches Redis, from `[session]`.
pub struct RedisOptions<'a> {
    pub topology: &'a RedisTopology,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// PEM CA for `rediss://` (otherwise the built-in web roots).
    pub ca: Option<&'a [u8]>,
    pub timeout: Duration,
}

fn certificates(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// The command connection.
#[derive(Clone)]
pub enum RedisConn {
    Standalone {
        conn: ConnectionManager,
        /// Shared: every command clones the enum, and a client clone would allocate.
        client: Arc<redis::Client>,
    },
    Sentinel(Arc<SentinelConn>),
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        nodes: Arc<Vec<redis::Client>>,
        next: Arc<AtomicUsize>,
    },
}

impl RedisConn {
    /// Connects lazily: a Redis that is down at start makes requests 503 until it is back.
    /// Must run inside a Tokio runtime.
    pub fn new(o: &RedisOptions<'_>) -> RedisResult<Self> {
        match o.topology {
            RedisTopology::Standalone(url) => {
                let client = match o.ca {
                    Some(ca) => redis::Client::build_with_tls(url.expose(), certificates(ca))?,
                    None => redis::Client::open(url.expose())?,
                };
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(o.timeout))
                    .set_response_timeout(Some(o.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                let conn = client.get_connection_manager_lazy(config)?;
                Ok(RedisConn::Standalone {
                    conn,
                    client: Arc::new(client),
                })
            }
            RedisTopology::Sentinel { sentinels, master } => {
                let conn = SentinelConn::new(sentinels, master, o)?;
                tokio::spawn(conn.clone().watch());
                Ok(RedisConn::Sentinel(conn))
            }
            RedisTopology::Cluster { nodes } => {
                let urls: Vec<&str> = nodes.iter().map(|n| n.expose()).collect();
                let mut b = redis::cluster::ClusterClient::builder(urls.clone())
                    .connection_timeout(o.timeout)
                    .response_timeout(o.timeout)
                    .retries(2)
                    .min_retry_wait(20)
                    .max_retry_wait(200);
                if let Some(u) = o.username {
                    b = b.username(u);
                }
                if let Some(p) = o.password {
                    b = b.password(p);
                }
                if let Some(ca) = o.ca {
                    b = b.certs(certificates(ca));
                }
                let conn = b
                    .build()?
                    .get_pending_async_connection_with_config(Default::default());
                let nodes = urls
                    .iter()
                    .map(|u| node_client(u, o))
                    .collect::<RedisResult<Vec<_>>>()?;
                Ok(RedisConn::Cluster {
                    conn,
                    nodes: Arc::new(nodes),
                    next: Arc::new(AtomicUsize::new(0)),
                })
            }
        }
    }

    /// A fresh pub/sub connection, on the right server for the deployment.
    pub async fn subscriber(&self, timeout: Duration) -> RedisResult<redis::aio::PubSub> {
        let client = match self {
            RedisConn::Standalone { client, .. } => (**client).clone(),
            RedisConn::Sentinel(s) => s.primary_client().await?,
            RedisConn::Cluster { nodes, next, .. } => {
                // Round robin over the seeds: after a node fails, the next attempt tries
                // another one.
                let i = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
                nodes[i].clone()
            }
        };
        match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "pub/sub connect timed out",
            ))),
        }
    }

    /// Bumped whenever the primary behind this connection changes (Sentinel failover): the
    /// subscriber must move too.
    pub fn epoch(&self) -> u64 {
        match self {
            RedisConn::Sentinel(s) => s.epoch.load(Ordering::Acquire),
            _ => 0,
        }
    }
}

/// A client for one node, with the discovery credentials unless the URL has its own.
fn node_client(url: &str, o: &RedisOptions<'_>) -> RedisResult<redis::Client> {
    let (username, password) = (o.username, o.password);
    let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let redis_info = info.redis_settings().clone();
    if redis_info.password().is_none() {
        let mut r = redis_info;
        if let Some(u) = username {
            r = r.set_username(u);
        }
        if let Some(p) = password {
            r = r.set_password(p);
        }
        info = info.set_redis_settings(r);
    }
    match o.ca {
        Some(ca) => redis::Client::build_with_tls(info, certificates(ca)),
        None => redis::Client::open(info),
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Standalone { conn, .. } => conn.req_packed_command(cmd),
            RedisConn::Cluster { conn, .. } => conn.req_packed_command(cmd),
            RedisConn::Sentinel(s) => Box::pin(async move {
                let (epoch, mut c) = s.connection().await?;
                let r = c.req_packed_command(cmd).await;
                s.check(epoch, &r);
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Standalone { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster { conn, .. } => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Sentinel(s) => Box::pin(async move {
                let (epoch, mut c) = s.connection().await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                s.check(epoch, &r);
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Standalone { conn, .. } => conn.get_db(),
            RedisConn::Cluster { .. } => 0,
            RedisConn::Sentinel(_) => 0,
        }
    }
}

/// The current primary of a Sentinel-managed set, re-resolved after failover.
pub struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use, the epoch it belongs to and the address it goes to; `None`:
    /// resolve on next use.
    current: ArcSwapOption<(u64, MultiplexedConnection, String)>,
    epoch: AtomicU64,
    config: redis::AsyncConnectionConfig,
    /// Direct clients to each sentinel, for the watcher.
    sentinels: Vec<redis::Client>,
    master: String,
    timeout: Duration,
}

impl SentinelConn {
    fn new(
        sentinels: &[crate::config::secret::Secret],
        master: &str,
        o: &RedisOptions<'_>,
    ) -> RedisResult<Arc<Self>> {
        let urls: Vec<&str> = sentinels.iter().map(|s| s.expose()).collect();
        let mut node = redis::RedisConnectionInfo::default();
        if let Some(u) = o.username {
            node = node.set_username(u);
        }
        if let Some(p) = o.password {
            node = node.set_password(p);
        }
        let mut info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        if urls.iter().any(|u| u.starts_with("rediss:")) {
            info = info.set_tls_mode(redis::TlsMode::Secure);
        }
        let client =
            SentinelClient::build(urls.clone(), master, Some(info), SentinelServerType::Master)?;
        let sentinels = urls
            .iter()
            .map(|u| redis::Client::open(*u))
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Arc::new(Self {
            sentinel: tokio::sync::Mutex::new(client),
            current: ArcSwapOption::empty(),
            epoch: AtomicU64::new(1),
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(o.timeout))
                .set_response_timeout(Some(o.timeout)),
            sentinels,
            master: master.to_string(),
            timeout: o.timeout,
        }))
    }

    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.current.load_full() {
            return Ok((c.0, c.1.clone()));
        }
        let mut sentinel = self.sentinel.lock().await;
        // Somebody else may have resolved while we waited for the lock.
        if let Some(c) = self.current.load_full() {
            return Ok((c.0, c.1.clone()));
        }
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let epoch = self.epoch.load(Ordering::Acquire);
        self.current
            .store(Some(Arc::new((epoch, conn.clone(), addr.clone()))));
        tracing::info!(master = %self.master, primary = %addr, "connected to the Redis primary found through Sentinel");
        Ok((epoch, conn))
    }

    /// After a command: a connection-level failure or `READONLY` (we are talking to a demoted
    /// primary) means the next command must find the primary again.
    fn check<T>(&self, epoch: u64, r: &RedisResult<T>) {
        let Err(e) = r else { return };
        let stale = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
            || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        if stale {
            self.drop_connection(epoch);
        }
    }

    fn drop_connection(&self, epoch: u64) {
        let current = self.current.load_full();
        let Some(c) = current.as_ref().filter(|c| c.0 == epoch) else {
            return;
        };
        let prev = self.current.compare_and_swap(&current, None);
        if prev.as_ref().is_some_and(|p| Arc::ptr_eq(p, c)) {
            // Connections made from now on belong to a new epoch.
            self.epoch.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(master = %self.master, "Redis primary connection dropped; asking Sentinel again");
        }
    }

    async fn primary_client(&self) -> RedisResult<redis::Client> {
        self.sentinel.lock().await.async_get_client().await
    }

    /// What the sentinels say the primary is: the first that answers.
    async fn primary_addr(&self) -> Option<(String, u16)> {
        for s in &self.sentinels {
            let ask = async {
                let mut c = s.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&self.master)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
            };
            if let Ok(Ok(Some(addr))) = tokio::time::timeout(self.timeout, ask).await {
                return Some(addr);
            }
        }
        None
    }

    /// Poll the sentinels; when they name another primary than the one we are connected to,
    /// drop the connection at once instead of waiting for the old one to be demoted (writes
    /// there would be lost). Comparing with the connection's own address, not the previous
    /// poll, also catches a reconnect that raced with the failover and landed on the old node.
    async fn watch(self: Arc<Self>) {
        let mut last = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some((host, port)) = self.primary_addr().await else {
                continue;
            };
            let primary = format!("{host}:{port}");
            if let Some(current) = self.current.load_full() {
                if current.2 != primary {
                    tracing::warn!(master = %self.master, old = %current.2, new = %primary, "Sentinel reports another Redis primary");
                    self.drop_connection(current.0);
                }
            }
            // The subscriber follows the same signal, connected or not.
            if last.as_ref().is_some_and(|l| *l != primary) {
                self.epoch.fetch_add(1, Ordering::AcqRel);
            }
            last = Some(primary);
        }
    }
}
