//! Real guest faults (the fault-injection guest): a panic, an infinite
//! loop, a memory bomb, a read past the guest's memory (with and without
//! bounds checks) and a stream of poison events. Each checks the faulting
//! match's seq and state and that another match is untouched.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, Tracker, Ws, http_post, odds_of};

const SICK: &str = "sr:match:666";
const WELL: &str = "sr:match:777";
const TOKEN: &str = "test-admin-token-0123456789";

/// An odds_change with one market: normal (id 1) or poisonous (999001-999003,
/// 999005).
fn odds(event_id: &str, market: u32, odds: f64) -> Vec<u8> {
    format!(
        r#"<odds_change product="1" event_id="{event_id}" timestamp="1"><odds><market id="{market}" status="1"><outcome id="1" odds="{odds}" active="1"/></market></odds></odds_change>"#
    )
    .into_bytes()
}

/// Subscribe to both matches and read frames until `n` updates arrived.
async fn frames_until(ws: &mut Ws, tracker: &mut Tracker, updates: usize) {
    let mut seen = 0;
    while seen < updates {
        let f: Value = ws.next().await;
        if f["type"] == "update" {
            seen += 1;
        }
        tracker.apply(&f);
    }
}

/// The faulty guest serving two matches, each with one event applied, and
/// a client holding both snapshots.
async fn two_matches(extra: &[&str]) -> (Server, std::net::TcpStream, Ws, Tracker) {
    let server = Server::start_faulty(extra);
    let mut feed = server.feed();
    feed.write_all(&odds(SICK, 1, 2.0)).expect("feed");
    feed.write_all(&odds(WELL, 1, 3.0)).expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [SICK, WELL]})).await;
    let mut t = Tracker::default();
    t.apply(&ws.next().await);
    t.apply(&ws.next().await);
    (server, feed, ws, t)
}

/// Feed one poison event between good ones; the server and the dead
/// letter's reason, for more checks.
async fn single_poison_event(market: u32, cause: &str, extra: &[&str]) -> (Server, String) {
    poison_with_odds(market, 9.0, cause, extra).await
}

/// [`single_poison_event`] with the poison's outcome at `poison_odds`.
async fn poison_with_odds(market: u32, poison_odds: f64, cause: &str, extra: &[&str]) -> (Server, String) {
    let (server, mut feed, mut ws, mut t) = two_matches(extra).await;

    feed.write_all(&odds(SICK, market, poison_odds)).expect("feed"); // the poison
    feed.write_all(&odds(WELL, 1, 3.1)).expect("feed");
    feed.write_all(&odds(SICK, 1, 2.5)).expect("feed");
    feed.write_all(&odds(WELL, 1, 3.2)).expect("feed");
    frames_until(&mut ws, &mut t, 3).await;

    assert_eq!(t.gaps, 0, "no seq gaps");
    let sick = &t.matches[SICK];
    let well = &t.matches[WELL];
    assert_eq!(sick.seq, 2, "the poison event took no seq");
    assert_eq!(well.seq, 3);
    assert_eq!(
        odds_of(&sick.state["markets"], 1, "", "1"),
        Some(2.5),
        "the match carried on after the poison"
    );
    assert!(
        odds_of(&sick.state["markets"], u64::from(market), "", "1").is_none(),
        "the poison was not applied"
    );
    assert_eq!(odds_of(&well.state["markets"], 1, "", "1"), Some(3.2));
    let status = t
        .statuses
        .iter()
        .find(|s| s["match"] == SICK)
        .expect("a status frame for the sick match");
    assert_eq!(status["status"], "dead_letter", "{status}");
    assert!(
        t.statuses.iter().all(|s| s["match"] == SICK),
        "the healthy match saw no status: {:?}",
        t.statuses
    );

    let metrics = crate::support::http_get(server.http, "/metrics").1;
    assert_eq!(crate::support::metric_in(&metrics, "touchline_dead_letters_total"), 1.0);
    let failures = format!("touchline_worker_failures_total{{cause=\"{cause}\"}} 2");
    assert!(
        metrics.contains(&failures),
        "first try and retry both fail as {cause}:\n{metrics}"
    );
    assert_eq!(
        crate::support::metric_in(&metrics, "touchline_quarantined_matches"),
        0.0
    );

    // A fresh subscriber sees exactly the state the first one built.
    let mut ws2 = Ws::connect(server.http).await;
    ws2.send(json!({"op": "subscribe", "matches": [SICK]})).await;
    let snap = ws2.next().await;
    assert_eq!((snap["seq"].as_u64(), &snap["state"]), (Some(2), &sick.state));
    let reason = status["reason"].as_str().unwrap_or_default().to_owned();
    (server, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_dead_lettered_and_the_match_carries_on() {
    single_poison_event(999_001, "trap", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_at_the_deadline() {
    single_poison_event(999_002, "deadline", &["--guest-deadline-ms", "50"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_at_the_limit() {
    // Filling 16 MiB takes milliseconds, but a guest call's deadline is
    // wall-clock time: on a loaded 2-core CI machine the retry once ran
    // past the default 100 ms and failed as `deadline`. A deadline well
    // past any stall leaves the memory limit the only thing to stop it.
    single_poison_event(
        999_003,
        "memory",
        &["--guest-memory-mib", "16", "--guest-deadline-ms", "5000"],
    )
    .await;
}

/// The page after the end of the guest's memory (market 999005's odds of 0).
const PAST_THE_END: f64 = 0.0;
/// The top of the 32-bit index space.
const TOP: f64 = 4_294_967_280.0;

/// Each read traps as an out-of-bounds access, in a server whose guest
/// memories each reserve `reservation` bytes.
async fn reads_trap(addresses: &[f64], extra: &[&str], reservation_bytes: f64) {
    for &at in addresses {
        let (server, reason) = poison_with_odds(999_005, at, "trap", extra).await;
        assert_eq!(
            server.metric("touchline_guest_memory_reservation_bytes"),
            reservation_bytes,
            "read at {at}"
        );
        assert!(reason.contains("out of bounds"), "read at {at}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_past_the_memory_traps_where_bounds_are_not_checked() {
    // The default pool fits the address budget: full 4 GiB reservations,
    // whose pages past the memory's end are inaccessible up to the guard.
    reads_trap(&[PAST_THE_END, TOP], &[], 4_294_967_296.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_past_the_memory_traps_where_bounds_are_checked() {
    // 20,000 slots of 4 GiB exceed the 64 TiB budget (x86-64): each memory reserves
    // its cap (32 MiB) and the compiled guest checks every access, also one
    // where the next slot's memory begins (the cap and a 64 KiB guard on).
    let next_slot = f64::from((32 << 20) + (64 << 10) + 8);
    reads_trap(
        &[PAST_THE_END, next_slot, TOP],
        &["--max-matches", "20000"],
        32.0 * 1_048_576.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_stream_quarantines_one_match_and_heal_replays_what_was_held() {
    let (server, mut feed, mut ws, mut t) = two_matches(&["--admin-token", TOKEN]).await;

    // Two poison events = four failures > 3 in 5 s: quarantine.
    for i in 0..3 {
        feed.write_all(&odds(SICK, 999_001, 9.0)).expect("feed");
        feed.write_all(&odds(WELL, 1, 3.0 + f64::from(i) / 10.0)).expect("feed");
    }
    feed.write_all(&odds(SICK, 1, 2.7)).expect("feed"); // held, not applied
    frames_until(&mut ws, &mut t, 3).await;
    server.wait_metric("touchline_quarantined_matches", 1.0);
    server.wait_metric("touchline_events_held_total", 2.0);
    while !t.statuses.iter().any(|s| s["status"] == "quarantined") {
        t.apply(&ws.next().await);
    }
    assert_eq!(t.gaps, 0);
    assert_eq!(t.matches[SICK].seq, 1, "nothing applied to the quarantined match");
    assert_eq!(t.matches[WELL].seq, 4, "the healthy match kept updating");
    assert!(t.statuses.iter().all(|s| s["match"] == SICK));

    // Quarantined: a new subscriber is told so, with the last good state.
    let mut ws2 = Ws::connect(server.http).await;
    ws2.send(json!({"op": "subscribe", "matches": [SICK]})).await;
    let snap = ws2.next().await;
    assert!(
        snap["quarantined"].as_str().is_some_and(|r| r.contains("intensity")),
        "{snap}"
    );
    assert_eq!(odds_of(&snap["state"]["markets"], 1, "", "1"), Some(2.0));

    // The admin route wants the token.
    let path = format!("/admin/matches/{SICK}/heal");
    assert_eq!(http_post(server.http, &path, &[], b"").0, 401);
    assert_eq!(
        http_post(
            server.http,
            &path,
            &[("Authorization", "Bearer wrong-token-000000000")],
            b""
        )
        .0,
        401
    );
    let bearer = format!("Bearer {TOKEN}");
    let (code, report) = http_post(server.http, &path, &[("Authorization", &bearer)], b"");
    assert_eq!(code, 200, "{report}");
    // Heal gives every kept event one more chance: the three poison events
    // fail again and stay dead letters, the held normal one applies as seq 2.
    assert!(report.contains("replayed 1 dead letters and 3 held events"), "{report}");
    assert!(report.contains("healthy"), "{report}");
    let u = ws.next_matching(|f| f["type"] == "update" && f["match"] == SICK).await;
    assert_eq!(u["seq"].as_u64(), Some(2));
    assert_eq!(odds_of(&u["delta"]["markets"], 1, "", "1"), Some(2.7));
    assert_eq!(server.metric("touchline_quarantined_matches"), 0.0);
    assert_eq!(
        server.metric("touchline_dead_letters_total"),
        4.0,
        "1 before the quarantine, 3 during the heal"
    );
    // Healthy again: new events apply.
    feed.write_all(&odds(SICK, 1, 2.9)).expect("feed");
    let u = ws.next_matching(|f| f["type"] == "update" && f["match"] == SICK).await;
    assert_eq!(u["seq"].as_u64(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_absent_without_a_token() {
    let server = Server::start(&[]);
    assert_eq!(
        http_post(server.http, "/admin/matches/sr:match:1/heal", &[], b"").0,
        404
    );
}
