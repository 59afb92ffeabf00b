//! Background tasks end on shutdown (issue 14, point 6), in process: the gateway's auth
//! layer is built against a real Redis exactly as `server::run` builds it (`reload::Assembly`), and its tasks are
//! shut down. Proof that they ended is Redis' own `CLIENT LIST`: the invalidation listener's
//! pub/sub connection goes away with the tasks, and every other connection with the owner.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, redis_session, Idp, Redis};

/// The clients connected to `redis` other than the asking one: (all, pub/sub).
async fn clients(redis: &Redis) -> (usize, usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    let others: Vec<&str> = list
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .collect();
    let pubsub = others
        .iter()
        .filter(|l| l.split(' ').any(|f| f == "flags=P"))
        .count();
    (others.len(), pubsub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_stop_and_close_their_redis_connections() {
    let redis = Redis::start().await;
    // No provider needs to answer: its refresh task retries in the background.
    let dead = common::dead_port();
    let idp = Idp::not_running(dead.port);
    let text = format!(
        "{}\n[session]\n{}\n[upstreams.app]\nservers = [\"http://127.0.0.1:9\"]\n\n[[routes]]\nupstream = \"app\"\n",
        idp.provider_toml(),
        redis_session(&redis.url()),
    );
    let config = authgate::config::parse(Path::new("tasks.toml"), &text).expect("config");
    let metrics = Arc::new(authgate::metrics::Metrics::new());
    let tasks = Arc::new(authgate::tasks::Tasks::new());
    let assembly = authgate::reload::Assembly::new(
        metrics.clone(),
        tokio::runtime::Handle::current(),
        tasks.clone(),
    );
    let auth = assembly
        .commit(assembly.build(&config).expect("auth"))
        .expect("a provider is configured");

    // The invalidation listener subscribes; the sweeper syncs the clock on the command
    // connection.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (all, pubsub) = clients(&redis).await;
            pubsub == 1 && all >= 2
        })
        .await,
        "the gateway never connected: {:?}",
        clients(&redis).await
    );
    assert!(!tasks.running().is_empty());

    let aborted = tasks.shutdown(Duration::from_secs(5)).await;
    assert!(aborted.is_empty(), "tasks had to be aborted: {aborted:?}");
    assert!(tasks.running().is_empty(), "{:?}", tasks.running());
    assert!(
        eventually(Duration::from_secs(5), || async {
            clients(&redis).await.1 == 0
        })
        .await,
        "the pub/sub connection outlived the tasks: {:?}",
        clients(&redis).await
    );

    // Nothing holds the auth layer any more but us (and the assembly, which `server::run`
    // drops on its way out): dropping it closes the rest.
    drop(assembly);
    assert_eq!(
        Arc::strong_count(&auth),
        1,
        "a task still holds the auth layer"
    );
    drop(auth);
    assert!(
        eventually(Duration::from_secs(5), || async {
            clients(&redis).await.0 == 0
        })
        .await,
        "connections left after the owner was dropped: {:?}",
        clients(&redis).await
    );
}
