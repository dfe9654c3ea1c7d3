//! Issue 13, hot swap in a cluster: a guest installed on one node becomes
//! the cluster's version and every node rolls it out to the matches it
//! runs, whoever owns them; a rollback on another node takes them all
//! back. `GET /admin/guest` shows the cluster's view on any node.

use std::collections::BTreeSet;
use std::io::Write as _;

use serde_json::Value;

use crate::support::nodes::{TOKEN, cluster, events_in, handled, messages, subscribed, wait_sum};
use crate::support::{Server, Tracker, http_request, wait_for};

fn admin(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (code, text) = http_request(server.http, method, path, &[("Authorization", &auth)], body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {code} {text:?}: {e}"));
    (code, v)
}

/// The matches `server` runs on version `hash`, and whether it runs any
/// on another version; its active version.
fn on_version(server: &Server, hash: &str) -> (BTreeSet<String>, bool, String) {
    let (code, listing) = admin(server, "GET", "/admin/guest", b"");
    assert_eq!(code, 200, "{listing}");
    let (mut on, mut other) = (BTreeSet::new(), false);
    for v in listing["versions"].as_array().expect("versions") {
        let ids = v["match_ids"].as_array().expect("match_ids");
        if v["hash"] == hash {
            on.extend(ids.iter().filter_map(|m| m.as_str().map(str::to_owned)));
        } else {
            other |= !ids.is_empty();
        }
    }
    (on, other, listing["active"].as_str().unwrap_or_default().to_owned())
}

/// Until every node runs every one of its matches on `hash` and all of
/// `ids` are covered; then the cluster view as `nodes[0]` shows it.
fn until_all_on(nodes: &[&Server], hash: &str, ids: &BTreeSet<String>) -> Value {
    wait_for(&format!("every match on {hash}"), || {
        let mut covered = BTreeSet::new();
        for n in nodes {
            let (on, other, active) = on_version(n, hash);
            if other || active != hash {
                return None;
            }
            covered.extend(on);
        }
        (covered == *ids).then_some(())
    });
    wait_for("every node's report", || {
        let (_, listing) = admin(nodes[0], "GET", "/admin/guest", b"");
        let cluster = &listing["cluster"];
        let reports = cluster["nodes"].as_object()?;
        let all = cluster["desired"] == hash
            && reports.len() == nodes.len()
            && reports.values().all(|r| r["active"] == hash && r["live"] == true);
        all.then(|| cluster.clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_on_one_node_is_rolled_out_by_every_node() {
    let (_nats, [a, b, c], _) = cluster(["a", "b", "c"]);
    let nodes = [&a, &b, &c];
    let (msgs, ids, _) = messages(24, 900);
    let (first, rest) = msgs.split_at(300);
    let mut feed = a.feed();
    let v1 = on_version(&a, "").2;
    tokio::task::block_in_place(|| {
        feed.write_all(&first.concat()).expect("feeding a");
        wait_sum(&nodes, "events handled", events_in(first), handled);
    });
    let first_ids: BTreeSet<String> = wait_for("the first matches", || {
        let mut all = BTreeSet::new();
        for n in nodes {
            all.extend(on_version(n, &v1).0);
        }
        (!all.is_empty()).then_some(all)
    });

    // Installed on b: every node follows, for the matches it runs.
    let v2_bytes = std::fs::read(env!("TOUCHLINE_V2_GUEST")).expect("v2 guest");
    let (code, report) = tokio::task::block_in_place(|| admin(&b, "POST", "/admin/guest", &v2_bytes));
    assert_eq!(code, 200, "{report}");
    let v2 = report["to"].as_str().expect("to").to_owned();
    assert_ne!(v2, v1);
    let view = tokio::task::block_in_place(|| until_all_on(&nodes, &v2, &first_ids));
    eprintln!("after the install on b: {view}");

    // Every update from now on, of every match, is made by v2: a client
    // on a sees it (its own matches and the others' through relays).
    let mut ws = subscribed(&a, &ids).await;
    let mut tracker = Tracker::default();
    tokio::task::block_in_place(|| {
        feed.write_all(&rest.concat()).expect("feeding a");
        wait_sum(&nodes, "events handled", events_in(&msgs), handled);
    });
    let mut updated = BTreeSet::new();
    while updated != ids {
        let f = ws.next().await;
        tracker.apply(&f);
        if f["type"] == "update" {
            assert_eq!(f["guest_version"], v2.as_str(), "{}", f["match"]);
            updated.insert(f["match"].as_str().expect("match").to_owned());
        }
    }
    assert_eq!(tracker.gaps, 0, "the swap cost no update");

    // A rollback on c takes the whole cluster back.
    let (code, report) = tokio::task::block_in_place(|| admin(&c, "POST", "/admin/guest/rollback", b""));
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["to"], v1.as_str());
    tokio::task::block_in_place(|| until_all_on(&nodes, &v1, &ids));
}
