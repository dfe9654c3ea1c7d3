//! `touchline serve --cluster`: real server processes on a real
//! nats-server share the partitions between them, `GET /api/nodes` shows
//! who holds what, a `kill -9`'d node's partitions are taken over after the
//! lease TTL, and a stopped one hands its partitions over at once.
//! (Events across the nodes: `cluster_events`.)

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cluster::nats;
use crate::support::nodes::{PARTITIONS, node_ttl};
use crate::support::{DEADLINE, Server, http_get, wait_for};

/// Short, so a takeover after a crash is quick to see.
const TTL_MS: &str = "1000";
/// A takeover after a crash: the TTL, the expiry of the dead node's
/// heartbeat and `/api/nodes` reusing its answer for a second, with room
/// for a loaded 2-core machine.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(7);

/// `/api/nodes` (a slow NATS may make one answer 503: asked again).
fn nodes(server: &Server) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = http_get(server.http, "/api/nodes");
        if code == 200 {
            return serde_json::from_str(&body).expect("JSON");
        }
        assert!(code == 503 && start.elapsed() < DEADLINE, "{code}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Node id → partitions held, as `server` sees the cluster; a holder that
/// stopped heartbeating is marked.
fn holdings(server: &Server) -> Vec<(String, usize)> {
    nodes(server)["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let held = n["partitions"].as_array().map_or(0, Vec::len);
            let id = n["id"].as_str().unwrap_or_default();
            let id = if n["live"] == true {
                id.to_owned()
            } else {
                format!("{id} (not live)")
            };
            (id, held)
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

/// `touchline serve` with `extra` that must fail to start: its stderr.
fn refused(extra: &[&str]) -> String {
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["serve", "--http", "127.0.0.1:0", "--feed-listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data.path())
        .args(extra)
        .output()
        .expect("touchline runs");
    assert!(!out.status.success(), "{extra:?} must not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_nodes_share_the_partitions_and_take_over_a_lost_node() {
    let nats = nats();
    let url = nats.url();
    let a = node_ttl(&url, "a", TTL_MS);
    wait_holdings(&a, &[("a", 8)]);
    let b = node_ttl(&url, "b", TTL_MS);
    wait_holdings(&a, &[("a", 4), ("b", 4)]);
    let view = wait_for("every partition held", || {
        let v = nodes(&b);
        (v["free"].as_array().map(Vec::len) == Some(0)).then_some(v)
    });
    assert_eq!(view["node"], "b");
    assert_eq!(view["partitions"], PARTITIONS);
    // The lease metrics agree: 4 each; a took 8 and gave 4 to b.
    for n in [&a, &b] {
        wait_for("4 partitions owned, as the metric says", || {
            (n.metric("touchline_cluster_partitions_owned") == 4.0).then_some(())
        });
    }
    let taken = |n: &Server| n.metric(r#"touchline_cluster_partition_changes_total{kind="taken""#);
    let a_taken = taken(&a);
    assert!(a_taken >= 8.0, "a took every partition first: {a_taken}");

    // kill -9: b's leases expire after the TTL and a takes them.
    drop(b.kill9());
    let took = wait_holdings(&a, &[("a", 8)]);
    assert!(took < TAKEOVER_WITHIN, "taken over in {took:?} (TTL 1 s)");
    a.wait_metric("touchline_cluster_partitions_owned", 8.0);
    assert_eq!(taken(&a), a_taken + 4.0, "a took b's 4");
    eprintln!("kill -9 → all partitions held by the survivor, as /api/nodes shows, after {took:?}");
}

#[test]
fn a_stopped_node_hands_its_partitions_over_long_before_they_would_expire() {
    let nats = nats();
    let url = nats.url();
    // A TTL far longer than the bound below: only a hand-over meets it.
    let ttl = "20000";
    let a = node_ttl(&url, "a", ttl);
    wait_holdings(&a, &[("a", 8)]);
    let c = node_ttl(&url, "c", ttl);
    wait_holdings(&a, &[("a", 4), ("c", 4)]);
    let stopped = Instant::now();
    drop(c.terminate());
    wait_holdings(&a, &[("a", 8)]);
    let handed = stopped.elapsed();
    assert!(handed < Duration::from_secs(8), "{handed:?} (TTL 20 s)");
    eprintln!("SIGTERM → all partitions held by the survivor, as /api/nodes shows, after {handed:?}");

    // Another TTL is refused: the buckets' TTL is every node's lease.
    let err = refused(&[
        "--cluster",
        &url,
        "--node-id",
        "d",
        "--partitions",
        "8",
        "--lease-ttl-ms",
        "3000",
    ]);
    assert!(err.contains("--lease-ttl-ms"), "{err}");
}

#[test]
fn a_single_node_has_no_nodes_route_and_cluster_flags_are_checked() {
    let single = Server::start(&[]);
    assert_eq!(http_get(single.http, "/api/nodes").0, 404);
    let err = refused(&["--cluster", "nats://127.0.0.1:1"]);
    assert!(err.contains("--node-id"), "{err}");
    // Nothing listens there: the start fails, naming the node.
    let err = refused(&["--cluster", "nats://127.0.0.1:1", "--node-id", "x"]);
    assert!(err.contains("node x"), "{err}");
}

#[test]
fn a_node_cut_off_from_nats_is_not_ready_until_it_is_back() {
    let mut nats = nats();
    let a = node_ttl(&nats.url(), "a", TTL_MS);
    wait_holdings(&a, &[("a", 8)]);
    // Ready needs its feed connection too.
    let _feed = a.feed();
    let ready = |want: u16| {
        wait_for(&format!("/readyz {want}"), || {
            let (code, body) = http_get(a.http, "/readyz");
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == want).then_some(v)
        })
    };
    assert_eq!(ready(200)["cluster"], "ok");
    nats.kill_9().expect("kill nats-server");
    let cut = ready(503);
    assert!(
        cut["cluster"]
            .as_str()
            .is_some_and(|c| c.starts_with("NATS connection")),
        "{cut}"
    );
    nats.restart().expect("restart nats-server");
    assert_eq!(ready(200)["cluster"], "ok");
}
