//! Connections to Redis in its three deployments: one server, a Sentinel-managed primary,
//! or a Cluster. [`RedisConn`] is the command connection (cheap to clone, multiplexed),
//! [`RedisConn::subscriber`] opens the pub/sub connection for cache invalidations, and
//! [`RedisConn::write_durably`] runs the writes that must survive a failover (session ends).
//!
//! - **Standalone:** redis-rs' `ConnectionManager` (reconnects after the command that found
//!   the connection dead; the store retries idempotent commands once, see `store.rs`).
//! - **Sentinel:** redis-rs has nothing that follows a failover (its `ConnectionManager`
//!   reconnects to the old address, which is now a replica answering `READONLY`), so
//!   [`SentinelConn`] asks the sentinels for the primary (the answer with the newest
//!   configuration epoch), checks its `ROLE`, drops its connections on any connection-level
//!   error or `READONLY`, subscribes to `+switch-master` on every sentinel, and polls them
//!   every 500 ms as a fallback, so a promoted replica is used as soon as a sentinel
//!   announces it.
//! - **Cluster:** redis-rs' `ClusterConnection` (follows slot moves and node failures).
//!   Classic `PUBLISH` reaches every node of a cluster, so the subscriber listens on any
//!   one node and moves to the next seed when that one goes away.
//!
//! Durable writes go through their own connection (standalone, Sentinel): `WAIT` blocks the
//! connection it runs on, and on the shared one it would hold up every request behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::config::model::RedisTopology;

/// How the store reaches Redis, from `[session]`.
pub(crate) struct RedisOptions<'a> {
    pub(crate) topology: &'a RedisTopology,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    /// PEM CA for `rediss://` (otherwise the built-in web roots).
    pub(crate) ca: Option<&'a [u8]>,
    pub(crate) timeout: Duration,
    /// `redis_min_replicas_ack`: replicas that must acknowledge a durable write (`WAIT`);
    /// `None`: the deployment's default (see [`RedisConn::replicas_to_ack`]).
    pub(crate) min_replicas_ack: Option<u32>,
    /// Where the Sentinel watchers run: they stop when these tasks are shut down.
    pub(crate) tasks: &'a crate::tasks::Tasks,
}

fn certificates(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// Whether a command failed because its connection is dead (closed by Redis, reset, never
/// established) or points at a node that is no longer the primary: the command did not run
/// where it should have, and a fresh connection may succeed. A timeout is not one of these
/// (the command may still be running, and the deadline is spent anyway).
pub(crate) fn dead_connection(e: &RedisError) -> bool {
    if e.is_timeout() {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Parse
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(ServerErrorKind::ReadOnly)
        )
}

/// Why a durable write did not happen (yet).
#[derive(Debug)]
pub(crate) enum WriteError {
    Redis(RedisError),
    /// The connection is to a replica (a demoted primary, or a sentinel that named one).
    NotPrimary(String),
    /// The primary ran the write but fewer replicas acknowledged it than required: a failover
    /// now could promote a replica without it.
    Acks {
        got: i64,
        want: u32,
    },
    /// The primary changed while the write waited for its acknowledgements.
    Moved,
}

impl From<RedisError> for WriteError {
    fn from(e: RedisError) -> Self {
        WriteError::Redis(e)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Redis(e) => write!(f, "{e}"),
            WriteError::NotPrimary(role) => write!(f, "connected to a {role}, not the primary"),
            WriteError::Acks { got, want } => write!(
                f,
                "{got} of {want} required replicas acknowledged the write"
            ),
            WriteError::Moved => write!(f, "the primary changed during the write"),
        }
    }
}

impl WriteError {
    /// Worth redoing (on the primary as it is found again) while time is left.
    fn retryable(&self) -> bool {
        match self {
            WriteError::Redis(e) => {
                dead_connection(e)
                    || matches!(
                        e.kind(),
                        ErrorKind::Server(
                            ServerErrorKind::MasterDown
                                | ServerErrorKind::TryAgain
                                | ServerErrorKind::ClusterDown
                                | ServerErrorKind::BusyLoading
                        ) | ErrorKind::MasterNameNotFoundBySentinel
                    )
            }
            WriteError::NotPrimary(_) | WriteError::Acks { .. } | WriteError::Moved => true,
        }
    }
}

fn not_primary(what: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::ReadOnly),
        "not the primary",
        what.to_string(),
    ))
}

/// The role in a `ROLE` answer (`master`, `slave`, `sentinel`).
fn role_name(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items
            .first()
            .and_then(|r| redis::from_redis_value_ref::<String>(r).ok()),
        _ => None,
    }
}

/// `ROLE` on a fresh connection: `Ok(())` when it is a primary, or when the ACL user may not
/// run `ROLE` (then `READONLY` and `WAIT`'s refusal on replicas are the check).
async fn check_primary(c: &mut MultiplexedConnection) -> RedisResult<()> {
    match redis::cmd("ROLE").query_async::<Value>(c).await {
        Ok(v) => match role_name(&v).as_deref() {
            Some("master") => Ok(()),
            other => Err(not_primary(other.unwrap_or("unknown role"))),
        },
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `ROLE`, the writes, then `WAIT acks` as one pipeline on one connection: the role check and
/// the acknowledgement are about exactly these writes.
async fn primary_pipeline(
    c: &mut impl ConnectionLike,
    cmds: &[Cmd],
    acks: u32,
    wait: Duration,
) -> Result<(), WriteError> {
    let mut p = redis::pipe();
    p.ignore_errors();
    p.cmd("ROLE");
    for cmd in cmds {
        p.add_command(cmd.clone());
    }
    if acks > 0 {
        p.cmd("WAIT").arg(acks).arg(wait.as_millis().max(1) as u64);
    }
    let mut answers = p
        .query_async::<Vec<RedisResult<Value>>>(c)
        .await?
        .into_iter();
    let mut next = || {
        answers.next().unwrap_or_else(|| {
            Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "short pipeline answer",
            )))
        })
    };
    match next() {
        Ok(role) => match role_name(&role).as_deref() {
            Some("master") => {}
            other => return Err(WriteError::NotPrimary(other.unwrap_or("?").to_string())),
        },
        // An ACL user without ROLE: READONLY and WAIT's refusal on a replica are the check.
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) => {}
        Err(e) => return Err(e.into()),
    }
    for _ in cmds {
        next()?;
    }
    if acks > 0 {
        let got = match next() {
            Ok(v) => redis::from_redis_value::<i64>(v).map_err(RedisError::from)?,
            // "WAIT cannot be used with replica instances": a writable replica.
            Err(e) if e.to_string().contains("replica") => {
                return Err(WriteError::NotPrimary("replica".into()))
            }
            Err(e) => return Err(e.into()),
        };
        if got < i64::from(acks) {
            return Err(WriteError::Acks { got, want: acks });
        }
    }
    Ok(())
}

/// The command connection.
#[derive(Clone)]
pub(crate) enum RedisConn {
    Standalone {
        conn: ConnectionManager,
        /// Durable writes only: their `WAIT` blocks the connection it runs on.
        writer: ConnectionManager,
        /// Shared: every command clones the enum, and a client clone would allocate.
        client: Arc<redis::Client>,
        acks: u32,
    },
    Sentinel(Arc<SentinelConn>),
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        nodes: Arc<Vec<redis::Client>>,
        next: Arc<AtomicUsize>,
        acks: u32,
    },
}

impl RedisConn {
    /// Connects lazily: a Redis that is down at start makes requests 503 until it is back.
    /// Must run inside a Tokio runtime (Sentinel: its watchers are spawned on `o.tasks`).
    pub(crate) fn new(o: &RedisOptions<'_>) -> RedisResult<Self> {
        match o.topology {
            RedisTopology::Standalone(url) => {
                let client = match o.ca {
                    Some(ca) => redis::Client::build_with_tls(url.expose(), certificates(ca))?,
                    None => redis::Client::open(url.expose())?,
                };
                let config = || {
                    redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(o.timeout))
                        .set_response_timeout(Some(o.timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_secs(2))
                };
                let conn = client.get_connection_manager_lazy(config())?;
                let writer = client.get_connection_manager_lazy(config())?;
                Ok(RedisConn::Standalone {
                    conn,
                    writer,
                    client: Arc::new(client),
                    // One server: nothing to wait for unless replicas were configured.
                    acks: o.min_replicas_ack.unwrap_or(0),
                })
            }
            RedisTopology::Sentinel { sentinels, master } => {
                let conn = SentinelConn::new(sentinels, master, o)?;
                o.tasks.spawn("sentinel poll", conn.clone().watch());
                for i in 0..conn.sentinels.len() {
                    o.tasks
                        .spawn("sentinel +switch-master", conn.clone().follow(i));
                }
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
                    .map(|u| node_client(u, o.username, o.password, o.ca))
                    .collect::<RedisResult<Vec<_>>>()?;
                Ok(RedisConn::Cluster {
                    conn,
                    nodes: Arc::new(nodes),
                    next: Arc::new(AtomicUsize::new(0)),
                    // Cluster failover promotes a replica too, but the gateway cannot tell
                    // from here whether the shards have any: opt in with the setting.
                    acks: o.min_replicas_ack.unwrap_or(0),
                })
            }
        }
    }

    /// A fresh pub/sub connection, on the right server for the deployment.
    pub(crate) async fn subscriber(&self, timeout: Duration) -> RedisResult<redis::aio::PubSub> {
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
    pub(crate) fn epoch(&self) -> u64 {
        match self {
            RedisConn::Sentinel(s) => s.epoch.load(Ordering::Acquire),
            _ => 0,
        }
    }

    /// How many replicas must acknowledge a durable write: `redis_min_replicas_ack` when set;
    /// otherwise 0 for one server and for a Cluster, and for Sentinel 1 while the sentinels
    /// know a replica that is up and replicating, or report the primary down or a failover in
    /// progress (a failover promotes a replica: a write that it does not have is undone when
    /// the old primary resyncs). 0 when there is no such replica (nothing could be promoted:
    /// right after a failover, the old primary is still listed but answers as a primary until
    /// the sentinels convert it, and its full resync from the new one brings every write).
    pub(crate) fn replicas_to_ack(&self) -> u32 {
        match self {
            RedisConn::Standalone { acks, .. } | RedisConn::Cluster { acks, .. } => *acks,
            RedisConn::Sentinel(s) => s
                .acks
                .unwrap_or_else(|| s.replicas_up.load(Ordering::Acquire).min(1)),
        }
    }

    /// Run `cmds` (writes) so that no failover undoes them: on the primary (its `ROLE` checked
    /// on the same connection), then `WAIT` for [`Self::replicas_to_ack`] replicas. A
    /// connection that died, a demoted primary (`READONLY`) or too few acknowledgements (the
    /// primary lost its replicas: it is probably being failed over) make it try again on the
    /// primary as the sentinels then name it, until `budget` is spent. The commands must be
    /// safe to repeat (a delete is).
    pub(crate) async fn write_durably(&self, cmds: &[Cmd], budget: Duration) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + budget;
        // Each WAIT gets a slice of the budget: when it comes back short there is still time
        // to redo the write on the new primary.
        let slice = (budget / 4).max(Duration::from_millis(50));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let acks = self.replicas_to_ack();
            // A primary change abandons the WAIT on the old one at once.
            let moved = async {
                match self {
                    RedisConn::Sentinel(s) => s.changed.notified().await,
                    _ => std::future::pending().await,
                }
            };
            let once = async {
                tokio::select! {
                    r = self.durable_once(cmds, acks, slice.min(left)) => r,
                    () = moved => Err(WriteError::Moved),
                }
            };
            let e = match tokio::time::timeout(left, once).await {
                Ok(Ok(())) => {
                    if attempt > 1 {
                        tracing::info!(
                            attempt,
                            took_ms = started.elapsed().as_millis() as u64,
                            "durable Redis write succeeded after a retry"
                        );
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => return Err(format!("timed out after {attempt} attempt(s)")),
            };
            let pause = Duration::from_millis(20 * u64::from(attempt.min(5)));
            if !e.retryable() || Instant::now() + pause >= deadline {
                return Err(format!("{e} (after {attempt} attempt(s))"));
            }
            tracing::debug!(error = %e, attempt, "durable Redis write not done yet; retrying");
            match self {
                RedisConn::Sentinel(s) => s.changed_or(pause).await,
                _ => tokio::time::sleep(pause).await,
            }
        }
    }

    async fn durable_once(
        &self,
        cmds: &[Cmd],
        acks: u32,
        wait: Duration,
    ) -> Result<(), WriteError> {
        match self {
            RedisConn::Standalone { writer, .. } => {
                let mut c = writer.clone();
                primary_pipeline(&mut c, cmds, acks, wait).await
            }
            RedisConn::Sentinel(s) => {
                let (epoch, mut c) = s.connection(WRITES).await?;
                // Counted again: finding the primary may have changed it.
                let acks = self.replicas_to_ack();
                let r = primary_pipeline(&mut c, cmds, acks, wait).await;
                match &r {
                    Err(WriteError::Redis(e)) => s.check(epoch, e),
                    Err(WriteError::NotPrimary(_)) => s.drop_connection(epoch),
                    // The primary may be right and a replica slow, or it may be the old one
                    // mid-failover: `+switch-master` or the poll will tell.
                    _ => {}
                }
                r
            }
            RedisConn::Cluster { conn, .. } => {
                // Each key's command goes to its slot's primary (redis-rs follows MOVED and
                // READONLY); WAIT goes to every primary and answers the lowest count.
                let mut c = conn.clone();
                for cmd in cmds {
                    cmd.query_async::<Value>(&mut c).await?;
                }
                if acks > 0 {
                    let got: i64 = redis::cmd("WAIT")
                        .arg(acks)
                        .arg(wait.as_millis().max(1) as u64)
                        .query_async(&mut c)
                        .await?;
                    if got < i64::from(acks) {
                        return Err(WriteError::Acks { got, want: acks });
                    }
                }
                Ok(())
            }
        }
    }
}

/// A client for one node, with the discovery credentials unless the URL has its own.
fn node_client(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
    ca: Option<&[u8]>,
) -> RedisResult<redis::Client> {
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
    match ca {
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
                let (epoch, mut c) = s.connection(SHARED).await?;
                let r = c.req_packed_command(cmd).await;
                if let Err(e) = &r {
                    s.check(epoch, e);
                }
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
                let (epoch, mut c) = s.connection(SHARED).await?;
                let r = c.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &r {
                    s.check(epoch, e);
                }
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

/// Slot of the connection every command uses.
const SHARED: usize = 0;
/// Slot of the connection durable writes use (their `WAIT` would hold up the shared one).
const WRITES: usize = 1;

/// A connection to the primary, valid while the epoch it was made in is current.
struct Slot {
    epoch: u64,
    conn: MultiplexedConnection,
    addr: String,
}

/// One sentinel and a cached connection to it.
struct Sentinel {
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
}

/// The current primary of a Sentinel-managed set, re-resolved after failover.
pub(crate) struct SentinelConn {
    /// One resolution at a time.
    resolving: tokio::sync::Mutex<()>,
    slots: [ArcSwapOption<Slot>; 2],
    /// Bumped when the connections must be made again (the primary moved or a connection
    /// failed); connections of older epochs are not used.
    epoch: AtomicU64,
    /// Woken on every bump: durable writes waiting to redo themselves.
    changed: tokio::sync::Notify,
    /// The primary last named by the sentinels (poll or `+switch-master`).
    known: ArcSwapOption<String>,
    config: redis::AsyncConnectionConfig,
    sentinels: Vec<Sentinel>,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    master: String,
    timeout: Duration,
    /// `redis_min_replicas_ack` when set.
    acks: Option<u32>,
    /// Replicas the sentinels know, consider up and that report themselves replicas; 1 while
    /// a failover is in progress (the default acknowledgement count is 1 while this is not
    /// 0). 1 until the first poll says otherwise.
    replicas_up: AtomicU32,
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, what))
}

/// `host:port`, with IPv6 hosts bracketed.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl SentinelConn {
    fn new(
        sentinels: &[crate::config::secret::Secret],
        master: &str,
        o: &RedisOptions<'_>,
    ) -> RedisResult<Arc<Self>> {
        let urls: Vec<&str> = sentinels.iter().map(|s| s.expose()).collect();
        if urls.is_empty() {
            return Err(RedisError::from((
                ErrorKind::EmptySentinelList,
                "no sentinel configured",
            )));
        }
        let sentinels = urls
            .iter()
            .map(|u| {
                Ok(Sentinel {
                    client: redis::Client::open(*u)?,
                    conn: ArcSwapOption::empty(),
                })
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(Arc::new(Self {
            resolving: tokio::sync::Mutex::new(()),
            slots: [ArcSwapOption::empty(), ArcSwapOption::empty()],
            epoch: AtomicU64::new(1),
            changed: tokio::sync::Notify::new(),
            known: ArcSwapOption::empty(),
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(o.timeout))
                .set_response_timeout(Some(o.timeout)),
            sentinels,
            username: o.username.map(str::to_string),
            password: o.password.map(str::to_string),
            tls: urls.iter().any(|u| u.starts_with("rediss:")),
            master: master.to_string(),
            timeout: o.timeout,
            acks: o.min_replicas_ack,
            replicas_up: AtomicU32::new(1),
        }))
    }

    /// The connection in `slot`, made (to the primary the sentinels name, its role checked)
    /// when there is none for the current epoch.
    async fn connection(&self, slot: usize) -> RedisResult<(u64, MultiplexedConnection)> {
        let current = |s: &Self| {
            let epoch = s.epoch.load(Ordering::Acquire);
            s.slots[slot]
                .load_full()
                .filter(|c| c.epoch == epoch)
                .map(|c| (c.epoch, c.conn.clone()))
        };
        if let Some(c) = current(self) {
            return Ok(c);
        }
        let _resolving = self.resolving.lock().await;
        // Somebody else may have resolved while we waited for the lock.
        if let Some(c) = current(self) {
            return Ok(c);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let (host, port, i, failing_over) = self
            .primary_addr_from()
            .await
            .ok_or_else(|| timed_out("no sentinel named a primary"))?;
        let addr = host_port(&host, port);
        // The acknowledgement count for this primary, from the sentinel that named it: right
        // after a failover the new primary has no replica yet, and the count must not be the
        // old primary's.
        self.count_replicas(i, failing_over).await;
        let client = self.node_client(&host, port)?;
        let mut conn = tokio::time::timeout(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&self.config),
        )
        .await
        .map_err(|_| timed_out("connect to the primary timed out"))??;
        // A sentinel may name a node that is not (yet, or any more) the primary.
        check_primary(&mut conn).await?;
        let other = self.slots[1 - slot].load_full();
        if other.is_none_or(|o| o.addr != addr) {
            tracing::info!(master = %self.master, primary = %addr, "connected to the Redis primary found through Sentinel");
        }
        self.slots[slot].store(Some(Arc::new(Slot {
            epoch,
            conn: conn.clone(),
            addr,
        })));
        Ok((epoch, conn))
    }

    fn node_client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        node_client(
            &format!("{scheme}://{}/", host_port(host, port)),
            self.username.as_deref(),
            self.password.as_deref(),
            None,
        )
    }

    /// After a command: a connection-level failure or `READONLY` (we are talking to a demoted
    /// primary) means the next command must find the primary again.
    fn check(&self, epoch: u64, e: &RedisError) {
        if dead_connection(e) || e.is_unrecoverable_error() {
            self.drop_connection(epoch);
        }
    }

    /// Connections of `epoch` are not used any more (once: later callers with the same epoch
    /// find it already moved on).
    fn drop_connection(&self, epoch: u64) {
        if self
            .epoch
            .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(master = %self.master, "Redis primary connection dropped; asking Sentinel again");
            self.changed.notify_waiters();
        }
    }

    /// Wait until the connections move on, or `pause`.
    async fn changed_or(&self, pause: Duration) {
        let _ = tokio::time::timeout(pause, self.changed.notified()).await;
    }

    async fn primary_client(&self) -> RedisResult<redis::Client> {
        let (host, port) = self
            .primary_addr()
            .await
            .ok_or_else(|| timed_out("no sentinel named a primary"))?;
        self.node_client(&host, port)
    }

    /// A command to sentinel `i`, on its cached connection (made again after a failure).
    async fn ask<T: redis::FromRedisValue>(&self, i: usize, cmd: &Cmd) -> RedisResult<T> {
        let s = &self.sentinels[i];
        let mut c = match s.conn.load_full() {
            Some(c) => (*c).clone(),
            None => {
                let c = tokio::time::timeout(
                    self.timeout,
                    s.client
                        .get_multiplexed_async_connection_with_config(&self.config),
                )
                .await
                .map_err(|_| timed_out("connect to a sentinel timed out"))??;
                s.conn.store(Some(Arc::new(c.clone())));
                c
            }
        };
        let r = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut c)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out("sentinel timed out")),
        };
        if r.as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_unrecoverable_error())
        {
            s.conn.store(None);
        }
        r
    }

    /// What the sentinels say the primary is: of the answers, the one with the newest
    /// configuration epoch (a sentinel that missed the last failover still names the old
    /// primary), with the index of the sentinel that gave it.
    async fn primary_addr_from(&self) -> Option<(String, u16, usize, bool)> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("MASTER").arg(&self.master);
        let answers = futures_util::future::join_all(
            (0..self.sentinels.len()).map(|i| self.ask::<HashMap<String, String>>(i, &cmd)),
        )
        .await;
        let mut best: Option<(u64, String, u16, usize)> = None;
        let mut failing_over = false;
        for (i, a) in answers.into_iter().enumerate() {
            let Ok(m) = a else { continue };
            // Only the leader of a failover knows it is under way, until it announces it.
            failing_over |= m.get("flags").is_some_and(|f| {
                f.split(',')
                    .any(|x| matches!(x, "failover_in_progress" | "s_down" | "o_down"))
            });
            let (Some(ip), Some(port)) = (m.get("ip"), m.get("port").and_then(|p| p.parse().ok()))
            else {
                continue;
            };
            let epoch = m
                .get("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            if best.as_ref().is_none_or(|b| epoch > b.0) {
                best = Some((epoch, ip.clone(), port, i));
            }
        }
        best.map(|(_, ip, port, i)| (ip, port, i, failing_over))
    }

    async fn primary_addr(&self) -> Option<(String, u16)> {
        self.primary_addr_from().await.map(|(h, p, _, _)| (h, p))
    }

    /// The sentinels name `primary`: when a connection in use goes elsewhere, or the named
    /// primary changed, the connections (and the invalidation subscriber) move on at once
    /// instead of waiting for the old node to be demoted (writes there would be lost).
    fn primary_is(&self, primary: &str, source: &'static str) {
        let epoch = self.epoch.load(Ordering::Acquire);
        let elsewhere = self.slots.iter().find_map(|s| {
            s.load_full()
                .filter(|c| c.epoch == epoch && c.addr != primary)
                .map(|c| c.addr.clone())
        });
        let before = self.known.swap(Some(Arc::new(primary.to_string())));
        let moved = before.as_ref().is_some_and(|b| **b != primary);
        if elsewhere.is_some() || moved {
            tracing::warn!(master = %self.master, old = ?elsewhere.or(before.map(|b| (*b).clone())), new = %primary, source, "Sentinel reports another Redis primary");
            if self
                .epoch
                .compare_exchange(epoch, epoch + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.changed.notify_waiters();
            }
        }
    }

    /// Replicas of the set that the sentinel `i` knows and considers up.
    async fn replicas_up(&self, i: usize) -> Option<u32> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("REPLICAS").arg(&self.master);
        let replicas = self
            .ask::<Vec<HashMap<String, String>>>(i, &cmd)
            .await
            .ok()?;
        let up = replicas.iter().filter(|r| {
            r.get("role-reported").is_some_and(|r| r == "slave")
                && r.get("flags").is_some_and(|f| {
                    !f.split(',')
                        .any(|x| matches!(x, "s_down" | "o_down" | "disconnected"))
                })
        });
        Some(up.count() as u32)
    }

    /// Update the default acknowledgement count from sentinel `i` (unless it is configured).
    async fn count_replicas(&self, i: usize, failing_over: bool) {
        if self.acks.is_some() {
            return;
        }
        let up = match failing_over {
            true => Some(1),
            false => self.replicas_up(i).await,
        };
        if let Some(n) = up {
            let before = self.replicas_up.swap(n, Ordering::AcqRel);
            if before.min(1) != n.min(1) {
                tracing::info!(master = %self.master, replicas_up = n, "Sentinel-managed Redis: logouts now wait for {} replica(s)", n.min(1));
            }
        }
    }

    /// Poll the sentinels (a fallback for missed `+switch-master` messages), and count the
    /// replicas for the default acknowledgement count: every 500 ms, and at once when the
    /// connections move on (after a failover the count changes).
    async fn watch(self: Arc<Self>) {
        loop {
            let changed = self.changed.notified();
            if let Some((host, port, i, failing_over)) = self.primary_addr_from().await {
                self.primary_is(&host_port(&host, port), "poll");
                self.count_replicas(i, failing_over).await;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
        }
    }

    /// Follow `+switch-master` on sentinel `i`: the moment a sentinel announces the promoted
    /// replica, connections move there.
    async fn follow(self: Arc<Self>, i: usize) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let subscribed = async {
                let mut ps =
                    tokio::time::timeout(self.timeout, self.sentinels[i].client.get_async_pubsub())
                        .await
                        .map_err(|_| timed_out("sentinel pub/sub connect timed out"))??;
                ps.subscribe("+switch-master").await?;
                RedisResult::Ok(ps)
            }
            .await;
            match subscribed {
                Ok(mut ps) => {
                    backoff = Duration::from_millis(500);
                    let mut messages = ps.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else {
                            continue;
                        };
                        // <master name> <old ip> <old port> <new ip> <new port>
                        let parts: Vec<&str> = text.split(' ').collect();
                        if let [name, _, _, ip, port] = parts[..] {
                            if name == self.master {
                                if let Ok(port) = port.parse() {
                                    self.primary_is(&host_port(ip, port), "+switch-master");
                                }
                            }
                        }
                    }
                    tracing::debug!(sentinel = i, "+switch-master subscription lost");
                }
                Err(e) => {
                    tracing::debug!(sentinel = i, error = %e, "cannot subscribe to +switch-master")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
