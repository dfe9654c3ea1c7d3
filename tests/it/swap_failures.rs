//! Hot swap failures on the real binary: a guest trapping during migration
//! (the canary refuses it, a match whose migration traps stays on the old
//! version, too many such matches abort the rollout), first-event failures
//! within the probation window, and a quarantined match healed by a fixed
//! version. The rollout under load and its refusals: `swap`.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, Tracker, Ws, http_request, odds_of, wait_for};
use crate::swap::{
    TOKEN, active, admin, bearer, faulty_guest, install, listing, match_id, odds, placement, serving, still_serving,
    v2_guest,
};
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_refuses_a_guest_that_traps_during_migration() {
    let (server, mut feed, ids) = serving(&[], Some(&match_id(1)));
    let v1 = active(&server);
    let (code, body) = install(&server, &faulty_guest());
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["kind"], "canary", "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains(&match_id(1)) && error.contains("taking over its state") && error.contains("trapped"),
        "{error}"
    );
    assert_eq!(active(&server), v1);
    assert_eq!(placement(&server)[&v1].len(), ids.len());
    for id in &ids {
        still_serving(&server, &mut feed, id, &v1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_whose_migration_traps_stays_on_the_old_version() {
    // No canary: the live rollout meets the trap. No hibernation: every
    // match switches at once (an idle one would switch asleep and meet the
    // trap at its next command; that case is further down).
    let poisoned = match_id(1);
    let (server, mut feed, ids) = serving(&["--canary-matches", "0", "--hibernate-after-ms", "0"], Some(&poisoned));
    let v1 = active(&server);
    let (code, report) = install(&server, &faulty_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "partial", "{report}");
    assert_eq!(report["switched"], ids.len() - 1, "{report}");
    let failed = report["failed"].as_array().expect("failed");
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["match"], *poisoned);
    assert!(
        failed[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("migration failed")),
        "{report}"
    );
    let faulty = report["to"].as_str().expect("to").to_owned();
    let placed = placement(&server);
    assert_eq!(placed[&v1], std::slice::from_ref(&poisoned));
    assert_eq!(placed[&faulty].len(), ids.len() - 1);
    // The poisoned match serves on v1; the others on the new version.
    still_serving(&server, &mut feed, &poisoned, &v1).await;
    still_serving(&server, &mut feed, &ids[0], &faulty).await;

    // A switched match whose first event traps under the new version goes
    // back to the old one, and the event is applied there.
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [ids[2].clone()]})).await;
    let snap = ws.next().await;
    feed.write_all(&odds(&ids[2], 999_001, 7.0)).expect("feed"); // panics the faulty guest
    let status = ws.next_matching(|f| f["type"] == "status").await;
    assert_eq!(status["status"], "rolled_back", "{status}");
    let u = ws.next_matching(|f| f["type"] == "update").await;
    assert_eq!(u["seq"].as_u64(), snap["seq"].as_u64().map(|s| s + 1), "{u}");
    assert_eq!(u["guest_version"], v1, "{u}");
    assert_eq!(odds_of(&u["delta"]["markets"], 999_001, "", "1"), Some(7.0));
    assert_eq!(placement(&server)[&v1].len(), 2);
    let probation = &listing(&server)["last_rollout"]["probation_failures"];
    assert_eq!(probation[0]["match"], *ids[2], "{probation}");
    assert_eq!(
        server.metric("touchline_worker_failures_total"),
        0.0,
        "no restarts, no dead letters"
    );

    // A restart keeps the two stragglers on v1 (the version they fell back
    // to) and the rest on the active version.
    drop(feed);
    let server = Server::start_in(server.terminate(), &["--admin-token", TOKEN, "--canary-matches", "0"]);
    let placed = placement(&server);
    assert_eq!(placed[&v1], [ids[1].clone(), ids[2].clone()], "{placed:?}");
    assert_eq!(placed[&faulty], [ids[0].clone()], "{placed:?}");
    // Installing the active version again retries them. Both are idle
    // (clean), so both switch asleep and migrate at their next command:
    // the poisoned one still cannot, and goes back to v1 there, its event
    // applied on v1; the other runs the new version.
    let (code, report) = install(&server, &faulty_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["switched"], 2, "{report}");
    let mut feed = server.feed();
    still_serving(&server, &mut feed, &poisoned, &v1).await;
    still_serving(&server, &mut feed, &ids[2], &faulty).await;
    let placed = placement(&server);
    assert_eq!(placed[&v1], std::slice::from_ref(&poisoned), "{placed:?}");
    let l = listing(&server);
    assert_eq!(
        (l["active"].as_str(), l["previous"].as_str()),
        (Some(&*faulty), Some(&*v1)),
        "{l}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failed_matches_abort_the_whole_rollout() {
    // No hibernation: every match switches at once, so the migration that
    // traps fails the rollout itself.
    let (server, mut feed, ids) = serving(
        &[
            "--canary-matches",
            "0",
            "--rollout-max-failed",
            "0",
            "--hibernate-after-ms",
            "0",
        ],
        Some(&match_id(1)),
    );
    let v1 = active(&server);
    let (code, report) = install(&server, &faulty_guest());
    assert_eq!(code, 409, "{report}");
    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(active(&server), v1);
    let placed = placement(&server);
    assert_eq!(placed[&v1].len(), ids.len(), "every match back on v1: {placed:?}");
    for id in &ids {
        still_serving(&server, &mut feed, id, &v1).await;
    }
    let metrics = crate::support::http_get(server.http, "/metrics").1;
    assert!(
        metrics.contains("touchline_rollouts_total{kind=\"aborted\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_event_failures_during_the_probation_window_abort_the_rollout() {
    // Migration works everywhere; the first event of one match traps.
    let (server, mut feed, ids) = serving(
        &[
            "--canary-matches",
            "0",
            "--rollout-max-failed",
            "0",
            "--rollout-probation-ms",
            "20000",
        ],
        None,
    );
    let v1 = active(&server);
    let http = server.http;
    let installing = std::thread::spawn(move || {
        let auth = bearer();
        let (code, text) = http_request(
            http,
            "POST",
            "/admin/guest",
            &[("Authorization", &auth)],
            &faulty_guest(),
        );
        (code, serde_json::from_str::<Value>(&text).expect("JSON report"))
    });
    // Once every match has switched (the rollout now waits for first
    // events), one gets a poison event.
    wait_for("every match switched", || {
        let text = crate::support::http_get(server.http, "/metrics").1;
        text.contains("touchline_match_switches_total{kind=\"switched\"} 3")
            .then_some(())
    });
    // One rollout at a time.
    assert_eq!(listing(&server)["rollout_in_progress"], true);
    let (code, body) = install(&server, &v2_guest());
    assert_eq!((code, body["kind"].as_str()), (409, Some("busy")), "{body}");
    let (code, body) = admin(&server, "POST", "/admin/guest/rollback", b"");
    assert_eq!((code, body["kind"].as_str()), (409, Some("busy")), "{body}");
    feed.write_all(&odds(&ids[0], 999_001, 7.0)).expect("feed");
    let (code, report) = installing.join().expect("install thread");
    assert_eq!(code, 409, "{report}");
    assert_eq!(report["outcome"], "aborted", "{report}");
    assert_eq!(report["probation_failures"][0]["match"], *ids[0], "{report}");
    assert_eq!(report["revert_failed"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(active(&server), v1);
    assert_eq!(placement(&server)[&v1].len(), ids.len(), "every match back on v1");
    for id in &ids {
        still_serving(&server, &mut feed, id, &v1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_version_heals_a_quarantined_match_without_losing_an_event() {
    // The faulty guest runs; its panic on market 999001 quarantines SICK.
    let server = Server::start_faulty(&["--admin-token", TOKEN]);
    const SICK: &str = "sr:match:666";
    const WELL: &str = "sr:match:777";
    let mut feed = server.feed();
    feed.write_all(&odds(SICK, 1, 2.0)).expect("feed");
    feed.write_all(&odds(WELL, 1, 3.0)).expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);
    let faulty = active(&server);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [SICK, WELL]})).await;
    let mut t = Tracker::default();
    t.apply(&ws.next().await);
    t.apply(&ws.next().await);
    for i in 0..3 {
        feed.write_all(&odds(SICK, 999_001, 9.0 + f64::from(i))).expect("feed");
    }
    feed.write_all(&odds(SICK, 1, 2.7)).expect("feed");
    server.wait_metric("touchline_quarantined_matches", 1.0);
    server.wait_metric("touchline_events_held_total", 3.0);

    // The fixed version: the normal guest, to which market 999001 is a market.
    let (code, report) = install(&server, touchline::DEFAULT_GUEST);
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    let healed = report["healed"].as_array().expect("healed");
    assert_eq!(healed.len(), 1, "{report}");
    assert_eq!(healed[0]["match"], SICK);
    assert!(
        healed[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("replayed 1 dead letters and 3 held events") && r.contains("healthy")),
        "{report}"
    );
    let v1 = report["to"].as_str().expect("to").to_owned();
    assert_ne!(v1, faulty);
    // SICK now has all five of its events, in order, from the fixed version.
    while t.matches[SICK].seq < 5 {
        t.apply(&ws.next().await);
    }
    assert_eq!(t.gaps, 0);
    let state = &t.matches[SICK].state["markets"];
    assert_eq!(odds_of(state, 1, "", "1"), Some(2.7));
    assert_eq!(
        odds_of(state, 999_001, "", "1"),
        Some(11.0),
        "the last poison event, applied"
    );
    assert_eq!(server.metric("touchline_quarantined_matches"), 0.0);
    assert_eq!(placement(&server)[&v1].len(), 2);
    still_serving(&server, &mut feed, SICK, &v1).await;
    still_serving(&server, &mut feed, WELL, &v1).await;
}
