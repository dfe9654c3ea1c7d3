//! Hot swap and sleeping matches: a rollout passes by a match asleep on
//! the version it replaces, and the match takes the new version as it
//! wakes (its state migrated then, on probation); one that fails it there
//! goes back and does not try it again at its next wake; a killed host
//! restores a match that slept through a rollout on its own version,
//! asleep, and it takes the active one at its first command.

use std::io::Write;

use serde_json::json;

use crate::support::{Server, Ws, odds_of, wait_for};
use crate::swap::{
    TOKEN, active, admin, faulty_guest, install, listing, match_id, odds, placement, serving, still_serving, v2_guest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_passes_sleeping_matches_by_and_each_takes_the_version_as_it_wakes() {
    let (server, mut feed, ids) = serving(&["--hibernate-after-ms", "1500", "--rollout-probation-ms", "0"], None);
    let v1 = active(&server);
    server.wait_metric("touchline_hibernated_matches", ids.len() as f64);
    let (code, report) = install(&server, &v2_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    let (switched, deferred) = (report["switched"].as_u64(), report["deferred"].as_u64());
    assert_eq!((switched, deferred), (Some(0), Some(ids.len() as u64)), "{report}");
    // None woke for it: each sleeps on, on v1.
    assert_eq!(server.metric("touchline_hibernated_matches"), ids.len() as f64);
    assert_eq!(placement(&server)[&v1].len(), ids.len());
    let v2 = report["to"].as_str().expect("to").to_owned();
    // An event wakes the first: it takes v2 (its v1 state migrated)
    // before applying the event.
    feed.write_all(&odds(&ids[0], 1, 2.5)).expect("feed");
    server.wait_metric("touchline_events_applied_total", 4.0);
    let placed = placement(&server);
    assert_eq!(placed[&v2], [ids[0].clone()], "{placed:?}");
    assert_eq!(placed[&v1], [ids[1].clone(), ids[2].clone()], "{placed:?}");
    // Durably clean (nothing pushed beyond the journal), then kill -9.
    wait_for("clean marks", || {
        Some(()).filter(|_| server.metric("touchline_unclean_matches") == 0.0)
    });
    drop(feed);
    let data = server.kill9();

    let server = Server::start_in(data, &["--admin-token", TOKEN]);
    let l = listing(&server);
    assert_eq!(
        (l["active"].as_str(), l["previous"].as_str()),
        (Some(&*v2), Some(&*v1)),
        "{l}"
    );
    // Each is restored on the version it ran; the two behind go to sleep
    // at once...
    server.wait_metric("touchline_hibernated_matches", 2.0);
    assert_eq!(server.metric("touchline_hibernated_matches"), 2.0, "the first is on v2");
    let placed = placement(&server);
    assert_eq!(placed[&v2], [ids[0].clone()], "{placed:?}");
    assert_eq!(placed[&v1], [ids[1].clone(), ids[2].clone()], "{placed:?}");
    // ...and take v2 at their first command, a subscription here.
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [ids[0].clone(), ids[1].clone()]}))
        .await;
    for _ in 0..2 {
        let snap = ws.next().await;
        assert_eq!(snap["guest_version"], v2, "{snap}");
        let (seq, seen) = if snap["match"] == *ids[0] { (2, 1) } else { (1, 0) };
        assert_eq!(snap["seq"].as_u64(), Some(seq), "{snap}");
        assert_eq!(
            snap["state"]["events_seen"].as_u64(),
            Some(seen),
            "v2's field survived: {snap}"
        );
    }
    assert_eq!(placement(&server)[&v1], [ids[2].clone()]);
    // The previous version is kept in the store to roll back to. The one
    // still asleep on it has nothing to do.
    let (code, report) = admin(&server, "POST", "/admin/guest/rollback", b"");
    assert_eq!(code, 200, "{report}");
    let (switched, unchanged) = (report["switched"].as_u64(), report["unchanged"].as_u64());
    assert_eq!((switched, unchanged), (Some(2), Some(1)), "{report}");
    let mut feed = server.feed();
    let fed = still_serving(&server, &mut feed, &ids[0], &v1).await;
    let snap = {
        let mut ws = Ws::connect(server.http).await;
        ws.send(json!({"op": "subscribe", "matches": [ids[0].clone()]})).await;
        ws.next().await
    };
    assert_eq!(odds_of(&snap["state"]["markets"], 1, "", "1"), Some(fed), "{snap}");
    assert!(snap["state"].get("events_seen").is_none(), "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_match_that_fails_the_version_as_it_wakes_goes_back_and_does_not_try_again() {
    // No canary: the first match to wake meets the trap.
    let poisoned = match_id(1);
    let args = [
        "--canary-matches",
        "0",
        "--hibernate-after-ms",
        "300",
        "--rollout-probation-ms",
        "0",
    ];
    let (server, mut feed, ids) = serving(&args, Some(&poisoned));
    let v1 = active(&server);
    server.wait_metric("touchline_hibernated_matches", ids.len() as f64);
    let (code, report) = install(&server, &faulty_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    assert_eq!(report["deferred"].as_u64(), Some(ids.len() as u64), "{report}");
    let faulty = report["to"].as_str().expect("to").to_owned();
    // Woken by a subscription, the poisoned match takes the new version,
    // whose migration of its state traps: back on v1.
    let failed = r#"touchline_match_switches_total{kind="probation_failed""#;
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [poisoned.clone()]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["guest_version"], v1, "{snap}");
    assert_eq!(server.metric(failed), 1.0);
    let probation = &listing(&server)["last_rollout"]["probation_failures"];
    assert_eq!(probation[0]["match"], *poisoned, "{probation}");
    // Asleep again, then woken by an event: it keeps to v1 and does not
    // try the version again.
    server.wait_metric("touchline_hibernated_matches", ids.len() as f64);
    feed.write_all(&odds(&poisoned, 1, 3.0)).expect("feed");
    let u = ws
        .next_matching(|f| {
            assert_ne!(f["status"], "rolled_back", "tried again: {f}");
            f["type"] == "update"
        })
        .await;
    assert_eq!(u["seq"].as_u64(), snap["seq"].as_u64().map(|s| s + 1), "{u}");
    assert_eq!(u["guest_version"], v1, "{u}");
    assert_eq!(server.metric(failed), 1.0);
    // The others take the new version as they wake; the last still
    // sleeps on v1.
    still_serving(&server, &mut feed, &ids[0], &faulty).await;
    assert_eq!(placement(&server)[&v1], [poisoned, ids[2].clone()]);
    assert_eq!(server.metric("touchline_worker_failures_total"), 0.0);
}
