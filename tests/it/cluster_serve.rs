//! `touchline serve --cluster`: real server processes on a real
//! nats-server share the partitions between them, `GET /api/nodes` shows
//! who holds what, a `kill -9`'d node's partitions are taken over after the
//! lease TTL, and a stopped one hands its partitions over at once.
//! (Issue 13 in progress: the events themselves are not partitioned yet.)

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cluster::nats;
use crate::support::{DEADLINE, Server, http_get};

const PARTITIONS: u32 = 8;
/// Short, so a takeover after a crash is quick to see.
const TTL_MS: &str = "1000";

fn node(url: &str, id: &str) -> Server {
    Server::start(&[
        "--cluster",
        url,
        "--node-id",
        id,
        "--partitions",
        &PARTITIONS.to_string(),
        "--lease-ttl-ms",
        TTL_MS,
    ])
}

fn nodes(server: &Server) -> Value {
    let (code, body) = http_get(server.http, "/api/nodes");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Node id → partitions held, as `server` sees the cluster.
fn holdings(server: &Server) -> Vec<(String, usize)> {
    nodes(server)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let held = n["partitions"].as_array().map_or(0, Vec::len);
            (n["id"].as_str().unwrap_or_default().to_owned(), held)
        })
        .collect()
}

/// Wait until `server` sees exactly `want`; how long it took.
fn wait_holdings(server: &Server, want: &[(&str, usize)]) -> Duration {
    let want: Vec<(String, usize)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    let start = Instant::now();
    loop {
        let got = holdings(server);
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "cluster is {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_nodes_share_the_partitions_and_take_over_a_lost_node() {
    let nats = nats();
    let url = nats.url();
    let a = node(&url, "a");
    wait_holdings(&a, &[("a", 8)]);
    let b = node(&url, "b");
    wait_holdings(&a, &[("a", 4), ("b", 4)]);
    let view = nodes(&b);
    assert_eq!(view["node"], "b");
    assert_eq!(view["partitions"], PARTITIONS);
    assert_eq!(view["free"].as_array().map(Vec::len), Some(0), "{view}");

    // kill -9: b's leases expire after the TTL and a takes them.
    drop(b.kill9());
    let took = wait_holdings(&a, &[("a", 8)]);
    assert!(took < Duration::from_secs(5), "taken over in {took:?} (TTL 1 s)");
    eprintln!("kill -9 → all partitions held by the survivor after {took:?}");

    // A graceful stop hands over at once (well under the TTL).
    let c = node(&url, "c");
    wait_holdings(&a, &[("a", 4), ("c", 4)]);
    let stopped = Instant::now();
    drop(c.terminate());
    wait_holdings(&a, &[("a", 8)]);
    let handed = stopped.elapsed();
    assert!(handed < Duration::from_secs(5), "{handed:?}");
    eprintln!("SIGTERM → all partitions held by the survivor after {handed:?} (process exit included)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_has_no_nodes_route_and_cluster_flags_are_checked() {
    let single = Server::start(&[]);
    assert_eq!(http_get(single.http, "/api/nodes").0, 404);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args([
            "serve",
            "--cluster",
            "nats://127.0.0.1:1",
            "--feed-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("touchline runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--node-id"), "{err}");
}
