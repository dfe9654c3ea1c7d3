//! Producers end to end: the real server fed by the real simulator, whose
//! HTTP API answers the server's recovery requests and injects faults on
//! command, with real WebSocket clients betting and watching. (Hand-over is
//! driven from a raw feed, message by message.)
//!
//! Timers are shortened where the scenario allows (alive timeout 15 s for
//! alives every 10 s; 1 s between recovery requests; a 3 s lag limit) so
//! each test runs in seconds; the triggers and the ways back are the real
//! ones.

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEADLINE, Server, Ws, http_get, metric_in, simulator};

/// Longest wait for a producer to go down or come back.
const LONG: Duration = Duration::from_secs(60);

fn producers(server: &Server) -> Vec<Value> {
    let (code, body) = http_get(server.http, "/api/producers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .expect("JSON")
        .as_array()
        .expect("a list")
        .clone()
}

fn producer(server: &Server, id: u64) -> Value {
    producers(server)
        .into_iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("producer {id} listed"))
}

/// Wait until producer `id`'s state is `state`; its entry then.
fn wait_state(server: &Server, id: u64, state: &str) -> Value {
    let start = Instant::now();
    loop {
        let p = producer(server, id);
        if p["state"] == state {
            return p;
        }
        assert!(start.elapsed() < LONG, "producer {id} never {state}: {p}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_all_up(server: &Server) {
    for id in [1, 3] {
        wait_state(server, id, "up");
    }
}

/// A market of `product` with an active outcome, from a snapshot:
/// (match, market, specifiers, outcome).
fn candidate(snapshot: &Value, product: u64) -> Option<(String, u64, String, String)> {
    let state = &snapshot["state"];
    state["markets"].as_array()?.iter().find_map(|m| {
        let outcome = m["outcomes"].as_array()?.iter().find(|o| o["active"] == true)?;
        (m["product"] == product && m["status"] == 1).then(|| {
            (
                snapshot["match"].as_str().unwrap_or_default().to_owned(),
                m["id"].as_u64().unwrap_or_default(),
                m["specifiers"].as_str().unwrap_or_default().to_owned(),
                outcome["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
    })
}

/// Bet on an active market of `product` (any odds: the servers take
/// better odds), retrying while the market chosen was suspended between
/// the snapshot and the bet; the answer.
async fn bet_on(server: &Server, product: u64, id: &str) -> Value {
    for attempt in 0..20 {
        let mut ws = Ws::connect(server.http).await;
        ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
        let snap = ws
            .next_matching(|f| f["type"] == "snapshot" && candidate(f, product).is_some())
            .await;
        let (m, market, specifiers, outcome) = candidate(&snap, product).expect("candidate");
        let bet_id = format!("{id}-{attempt}");
        ws.send(json!({"op": "bet", "id": bet_id, "match": m, "market": market, "specifiers": specifiers, "outcome": outcome, "odds": 1.01, "stake": 1.0}))
            .await;
        let answer = ws.next_matching(|f| f["type"] == "bet" && f["id"] == bet_id).await;
        let moved = [
            "market_not_active",
            "outcome_inactive",
            "unknown_market",
            "match_ended",
            "odds_changed",
        ];
        if answer["status"] == "rejected" && moved.iter().any(|r| answer["reason"] == *r) {
            continue;
        }
        return answer;
    }
    panic!("no bet on producer {product} got past a suspended market in 20 tries");
}

/// A client following every match; its status frames, read as they come
/// (a client that stops reading would be cut off).
async fn watcher(server: &Server) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    // Attached to every match the server runs (a snapshot from each)
    // before the test injects a fault: a match attached after its producer
    // went down says so in its snapshot's `producers_down`, not in a status
    // frame, and waiting for the first snapshot only once lost that race.
    let matches = server.metric("touchline_live_matches") as usize;
    let mut attached = std::collections::BTreeSet::new();
    while attached.len() < matches.max(1) {
        let snapshot = ws.next_matching(|f| f["type"] == "snapshot").await;
        attached.insert(snapshot["match"].as_str().unwrap_or_default().to_owned());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(f) = ws.next_or_close().await {
            if f["type"] == "status" && tx.send(f).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next `status` frame about `product`.
async fn status_about(frames: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, status: &str, product: u64) -> Value {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let f = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .unwrap_or_else(|_| panic!("no {status} for producer {product}"))
            .expect("the watcher is connected");
        if f["status"] == status && f["product"] == product {
            return f;
        }
    }
}

fn sim_args() -> Vec<&'static str> {
    vec!["--matches", "6", "--rate", "60"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_producer_refuses_bets_and_tells_subscribers_until_it_recovers_while_the_other_keeps_betting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &sim_args());
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--accept-better-odds"]);
    wait_all_up(&server);
    assert_eq!(bet_on(&server, 1, "before").await["status"], "accepted");
    let mut watch = watcher(&server).await;

    let (code, body) = sim
        .control("/control/fault?kind=stop_alive&product=1&seconds=20")
        .expect("fault");
    assert_eq!(code, 200, "{body}");
    let down = wait_state(&server, 1, "down");
    assert_eq!(down["reason"], "alive_timeout");
    let told = status_about(&mut watch, "producer_down", 1).await;
    assert_eq!(told["reason"], "alive_timeout", "{told}");
    assert!(told.get("seq").is_some() && told["type"] == "status");
    let refused = bet_on(&server, 1, "during").await;
    assert_eq!(refused["reason"], "producer_down", "{refused}");
    // Producer 3 is independent: its matches keep taking bets.
    assert_eq!(producer(&server, 3)["state"], "up");
    assert_eq!(bet_on(&server, 3, "ctrl").await["status"], "accepted");

    // Alives resume after 20 s: a recovery is asked for and completes.
    let up = wait_state(&server, 1, "up");
    assert!(up["last_recovery_seconds"].as_f64().is_some(), "{up}");
    status_about(&mut watch, "producer_up", 1).await;
    assert_eq!(bet_on(&server, 1, "after").await["status"], "accepted");
    let requests: Value = serde_json::from_str(&sim.requests().expect("requests")).expect("JSON");
    let lo = requests
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["producer"] == "LO")
        .count();
    assert!(lo >= 2, "startup and the outage: {requests}");
    let metrics = http_get(server.http, "/metrics").1;
    assert_eq!(
        metric_in(
            &metrics,
            r#"touchline_producer_down_total{product="1",reason="alive_timeout"}"#
        ),
        1.0
    );
    assert_eq!(metric_in(&metrics, r#"touchline_producer_up{product="1"}"#), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_is_down_at_once_and_another_request_id_does_not_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &sim_args());
    // The next request may go out only 12 s after the startup ones.
    let server = Server::start_sim(
        tempfile::tempdir().expect("tempdir"),
        &sim,
        &["--accept-better-odds", "--recovery-min-interval", "12"],
    );
    wait_all_up(&server);
    let mut watch = watcher(&server).await;
    sim.control("/control/fault?kind=unsubscribed&product=1")
        .expect("fault");
    let down = wait_state(&server, 1, "down");
    assert_eq!(down["reason"], "unsubscribed");
    status_about(&mut watch, "producer_down", 1).await;
    // A snapshot_complete for a request the server did not make changes nothing.
    let ignored = r#"touchline_snapshot_complete_ignored_total{product="1"}"#;
    sim.control("/control/snapshot_complete?product=1&request_id=12345")
        .expect("snapshot_complete");
    server.wait_metric(ignored, 1.0);
    assert_eq!(producer(&server, 1)["state"], "down");
    assert_eq!(bet_on(&server, 1, "still-down").await["reason"], "producer_down");
    // Its own recovery, once the minimum interval allows, reopens it.
    wait_state(&server, 1, "up");
    status_about(&mut watch, "producer_up", 1).await;
    assert_eq!(bet_on(&server, 1, "reopened").await["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_feed_takes_every_producer_down_and_each_comes_back_through_its_own_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &sim_args());
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--accept-better-odds"]);
    wait_all_up(&server);
    let mut watch = watcher(&server).await;
    let before: Value = serde_json::from_str(&sim.requests().expect("requests")).expect("JSON");
    sim.control("/control/fault?kind=drop").expect("fault");
    // Both producers' matches are told, in whatever order.
    let mut told = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + LONG;
    while told.len() < 2 {
        let f = tokio::time::timeout_at(deadline, watch.recv())
            .await
            .unwrap_or_else(|_| panic!("told only about {told:?}"))
            .expect("the watcher is connected");
        if f["status"] == "producer_down" {
            assert_eq!(f["reason"], "connection_lost", "{f}");
            told.insert(f["product"].as_u64().expect("product"));
        }
    }
    // The server reconnects and asks each producer for a recovery.
    wait_all_up(&server);
    let after: Value = serde_json::from_str(&sim.requests().expect("requests")).expect("JSON");
    let new: Vec<&Value> = after.as_array().expect("list")[before.as_array().expect("list").len()..]
        .iter()
        .collect();
    for name in ["LO", "Ctrl"] {
        assert!(new.iter().any(|r| r["producer"] == name), "{name} recovered: {after}");
    }
    let metrics = http_get(server.http, "/metrics").1;
    for p in [1, 3] {
        assert_eq!(
            metric_in(
                &metrics,
                &format!(r#"touchline_producer_down_total{{product="{p}",reason="connection_lost"}}"#)
            ),
            1.0
        );
    }
    assert_eq!(bet_on(&server, 1, "reconnected").await["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_restored_markets_refuse_bets_until_a_recovery_from_the_last_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &sim_args());
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--accept-better-odds"]);
    wait_all_up(&server);
    // The first alive while up is what a recovery would start from.
    let start = Instant::now();
    let last_alive = loop {
        if let Some(ms) = producer(&server, 1)["recovery_after"].as_i64() {
            break ms;
        }
        assert!(
            start.elapsed() < LONG,
            "no alive from LO while up: {}\nsimulator log:\n{}",
            producer(&server, 1),
            std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A durable bet: everything queued before it (the producer record) is
    // durable too.
    let placed = bet_on(&server, 1, "before-crash").await;
    assert_eq!(placed["status"], "accepted", "{placed}");
    let data = server.kill9();

    // Restarted against a provider that records requests but does not
    // answer them: the producers stay down.
    let provider = touchline_testkit::provider::Provider::start().expect("provider");
    let (feed, url) = (sim.feed.to_string(), provider.url());
    let server = Server::start_in(
        data,
        &[
            "--feed-connect",
            &feed,
            "--recovery-url",
            &url,
            "--producers",
            "1,3",
            "--max-feed-delay",
            "20",
            "--alive-timeout",
            "15",
            "--accept-better-odds",
        ],
    );
    let request = provider.wait_request("LO", 0, DEADLINE).expect("a recovery request");
    assert_eq!(
        request.after,
        Some(last_alive),
        "after = the last alive before the crash"
    );
    assert_eq!(producer(&server, 1)["state"], "recovering");
    let refused = bet_on(&server, 1, "restored").await;
    assert_eq!(refused["reason"], "producer_down", "{refused}");
    // The provider completes that request on the feed: up.
    let (code, body) = sim
        .control(&format!(
            "/control/snapshot_complete?product=1&request_id={}",
            request.request_id
        ))
        .expect("snapshot_complete");
    assert_eq!(code, 200, "{body}");
    wait_state(&server, 1, "up");
    assert_eq!(bet_on(&server, 1, "recovered").await["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_feed_refuses_bets_and_comes_back_without_a_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &sim_args());
    let server = Server::start_sim(
        tempfile::tempdir().expect("tempdir"),
        &sim,
        &["--accept-better-odds", "--max-feed-delay", "3"],
    );
    wait_all_up(&server);
    let requests_before = server.metric(r#"touchline_recovery_requests_total{product="1"}"#);
    // LO's messages arrive 6 s late, for 6 s.
    sim.control("/control/fault?kind=delay&product=1&seconds=6")
        .expect("fault");
    let delayed = wait_state(&server, 1, "delayed");
    assert_eq!(delayed["reason"], "delayed");
    assert_eq!(bet_on(&server, 1, "late").await["reason"], "producer_down");
    wait_state(&server, 1, "up");
    assert_eq!(bet_on(&server, 1, "in-time").await["status"], "accepted");
    assert_eq!(
        server.metric(r#"touchline_recovery_requests_total{product="1"}"#),
        requests_before,
        "no recovery for a delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_over_a_late_handed_over_status_and_stale_prematch_odds_leave_the_live_odds_bettable() {
    let server = Server::start(&["--producers", "1,3"]);
    let mut feed = server.feed_up();
    let m = "sr:match:777";
    let odds = |product: u32, status: i32, price: f64, home: u32| {
        format!(
            r#"<odds_change product="{product}" event_id="{m}" timestamp="1"><sport_event_status status="{status}" home_score="{home}" away_score="0"/><odds><market id="1" status="1"><outcome id="1" odds="{price}" active="1"/><outcome id="2" odds="3.0" active="1"/></market></odds></odds_change>"#
        )
    };
    // Pre-match odds (Ctrl), then live odds (LO) with a goal.
    feed.write_all(odds(3, 0, 2.0, 0).as_bytes()).expect("feed");
    feed.write_all(odds(1, 1, 1.6, 1).as_bytes()).expect("feed");
    // Ctrl's hand-over arrives late, then a stale Ctrl odds_change.
    let handed_over = format!(
        r#"<odds_change product="3" event_id="{m}" timestamp="2"><odds><market id="1" status="-2"/></odds></odds_change>"#
    );
    feed.write_all(handed_over.as_bytes()).expect("feed");
    feed.write_all(odds(3, 0, 2.2, 0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 4.0);

    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [m]})).await;
    let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
    let state = &snap["state"];
    assert_eq!(state["score"]["home"], 1.0, "the scoreboard is LO's: {state}");
    assert_eq!(state["status"], 1, "{state}");
    assert_eq!(state["producer"], 1, "{state}");
    let market = &state["markets"][0];
    assert_eq!(
        (market["status"].as_i64(), market["product"].as_u64()),
        (Some(1), Some(1)),
        "{market}"
    );
    assert_eq!(market["outcomes"][0]["odds"], 1.6, "{market}");
    ws.send(json!({"op": "bet", "id": "live", "match": m, "market": 1, "outcome": "1", "odds": 1.6, "stake": 1.0}))
        .await;
    let answer = ws.next_matching(|f| f["type"] == "bet").await;
    assert_eq!(
        (answer["status"].as_str(), answer["odds"].as_f64()),
        (Some("accepted"), Some(1.6)),
        "{answer}"
    );

    // A -2 from the producer that holds the market suspends it until the
    // new producer's odds arrive.
    let n = "sr:match:778";
    let pre = odds(3, 0, 2.0, 0).replace(m, n);
    let over = handed_over.replace(m, n);
    feed.write_all(pre.as_bytes()).expect("feed");
    feed.write_all(over.as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 6.0);
    ws.send(json!({"op": "bet", "id": "handed", "match": n, "market": 1, "outcome": "1", "odds": 2.0, "stake": 1.0}))
        .await;
    let answer = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "handed").await;
    assert_eq!(answer["reason"], "market_not_active", "{answer}");
    feed.write_all(odds(1, 1, 1.9, 0).replace(m, n).as_bytes())
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 7.0);
    ws.send(
        json!({"op": "bet", "id": "taken-over", "match": n, "market": 1, "outcome": "1", "odds": 1.9, "stake": 1.0}),
    )
    .await;
    let answer = ws
        .next_matching(|f| f["type"] == "bet" && f["id"] == "taken-over")
        .await;
    assert_eq!(answer["status"], "accepted", "{answer}");
}
