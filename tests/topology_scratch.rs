//! Scratch check of tests/common/topology.rs (to be deleted).
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::topology::{RedisCluster, SentinelSet};

fn conn(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(1))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    con
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_set() {
    let t0 = Instant::now();
    let mut set = SentinelSet::start().await;
    eprintln!(
        "start took {:?}; sentinels {:?}",
        t0.elapsed(),
        set.sentinel_urls()
    );
    let p = set.primary_port();
    // Ask a sentinel directly, then write through the primary.
    let s = redis::Client::open(set.sentinel_urls()[1].as_str()).unwrap();
    let mut sc = s
        .get_connection_with_timeout(Duration::from_secs(1))
        .unwrap();
    let addr: Vec<String> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(set.master_name())
        .query(&mut sc)
        .unwrap();
    assert_eq!(addr[1], p.to_string());
    let mut c = conn(p);
    let _: () = redis::cmd("SET").arg("k").arg("v1").query(&mut c).unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut c).unwrap();
    let took = set.failover().await;
    let np = set.primary_port();
    eprintln!("failover 1 {p} -> {np} took {took:?}");
    assert_ne!(np, p);
    let v: String = redis::cmd("GET").arg("k").query(&mut conn(np)).unwrap();
    assert_eq!(v, "v1");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v2")
        .query(&mut conn(np))
        .unwrap();

    // Immediately again: retried until the old primary is demoted.
    let t1 = Instant::now();
    let took = set.failover().await;
    eprintln!(
        "failover 2 -> {} took {took:?} (call {:?})",
        set.primary_port(),
        t1.elapsed()
    );
    let v: String = redis::cmd("GET")
        .arg("k")
        .query(&mut conn(set.primary_port()))
        .unwrap();
    assert_eq!(v, "v2");

    let t2 = Instant::now();
    set.wait_healthy().await;
    eprintln!("healthy again after {:?}", t2.elapsed());

    let t3 = Instant::now();
    let killed = set.kill_primary();
    let newp = set.wait_new_primary(killed).await;
    eprintln!("kill {killed}: new primary {newp} after {:?}", t3.elapsed());
    let v: String = redis::cmd("GET").arg("k").query(&mut conn(newp)).unwrap();
    assert_eq!(v, "v2");
    eprintln!("data ports {:?}", set.data_ports());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!(
        "cluster start took {:?}: {:?}",
        t0.elapsed(),
        cluster.node_urls()
    );
    let port = cluster.ports()[0].to_string();
    let cli = |args: &[&str]| {
        let o = Command::new("redis-cli")
            .args(["-c", "-p", &port])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // "a" and "b" hash to slots 15495 and 3300: different nodes.
    for k in ["a", "b", "{x}1"] {
        assert_eq!(cli(&["SET", k, "val"]), "OK");
        assert_eq!(cli(&["GET", k]), "val");
    }
    let owners: Vec<String> = cluster
        .ports()
        .iter()
        .map(|p| {
            let mut c = conn(*p);
            let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
            format!("{p}:{n}")
        })
        .collect();
    eprintln!("keys per node {owners:?}");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut conn(cluster.ports()[2]))
        .unwrap();
    assert!(info.contains("cluster_state:ok"));
}
