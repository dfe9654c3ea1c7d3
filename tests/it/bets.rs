//! Bets over the real WebSocket against the real sample market state:
//! every rejection reason, acceptance, idempotency, durability across kill -9.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, Ws, http_get, sample, sample_for};

const MATCH: &str = "sr:match:10927088";

/// Send a bet (fields merged over a valid one) and wait for its answer.
async fn bet(ws: &mut Ws, id: &str, tweak: Value) -> Value {
    let mut req = json!({
        "op": "bet", "id": id, "match": MATCH, "market": 68, "specifiers": "total=2.5",
        "outcome": 13, "odds": 1.5, "stake": 10.0
    });
    for (k, v) in tweak.as_object().expect("tweak is an object") {
        req[k] = v.clone();
    }
    ws.send(req).await;
    ws.next_matching(|f| f["type"] == "bet" && f["id"] == id).await
}

fn reason(answer: &Value) -> &str {
    assert_eq!(answer["status"], "rejected", "{answer}");
    answer["reason"]
        .as_str()
        .and_then(|r| r.split(':').next())
        .unwrap_or("")
}

/// A server holding the sample odds_change for MATCH, and a client.
async fn ready(extra: &[&str]) -> (Server, std::net::TcpStream, Ws) {
    let server = Server::start(extra);
    let mut feed = server.feed();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let ws = Ws::connect(server.http).await;
    (server, feed, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_and_acceptance() {
    let (server, mut feed, mut ws) = ready(&[]).await;

    let a = bet(&mut ws, "ok-1", json!({})).await;
    assert_eq!(
        (a["status"].as_str(), a["odds"].as_f64(), a["seq"].as_u64()),
        (Some("accepted"), Some(1.5), Some(1))
    );
    let s = bet(&mut ws, "ok-2", json!({"market": "68", "outcome": "13"})).await;
    assert_eq!(s["status"], "accepted", "ids as strings too: {s}");

    for (id, tweak, expected) in [
        ("r-odds", json!({"odds": 1.6}), "odds_changed"),
        ("r-market", json!({"market": 12345}), "unknown_market"),
        ("r-spec", json!({"specifiers": "total=9.5"}), "unknown_market"),
        ("r-outcome", json!({"outcome": "99"}), "unknown_outcome"),
        (
            "r-inactive",
            json!({"market": 10, "specifiers": "", "outcome": 11, "odds": 2.0}),
            "outcome_inactive",
        ),
        ("r-settled", json!({"specifiers": "total=1.5"}), "market_not_active"),
        ("r-match", json!({"match": "sr:match:1"}), "unknown_match"),
        ("r-stake0", json!({"stake": 0.0}), "invalid_stake"),
        ("r-stake-neg", json!({"stake": -5.0}), "invalid_stake"),
        ("r-stake-max", json!({"stake": 1e9}), "invalid_stake"),
        ("r-odds-bad", json!({"odds": 0.5}), "invalid_odds"),
        ("r-market-bad", json!({"market": "x"}), "invalid_market"),
    ] {
        assert_eq!(reason(&bet(&mut ws, id, tweak).await), expected, "{id}");
    }

    // Malformed: never reaches a worker, answered as a bad request.
    ws.send(json!({"op": "bet", "id": "m-1", "match": MATCH})).await;
    let e = ws.next_matching(|f| f["type"] == "error").await;
    assert!(e["reason"].as_str().is_some_and(|r| r.contains("bad request")), "{e}");

    // bet_stop suspends the market: no bet after it.
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", MATCH))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);
    assert_eq!(reason(&bet(&mut ws, "r-stopped", json!({})).await), "market_not_active");

    // An ended match takes no bets.
    let ended = String::from_utf8(sample_for("uof/messages/odds_change.xml", "sr:match:2"))
        .expect("utf8")
        .replace(r#"<sport_event_status status="1""#, r#"<sport_event_status status="3""#);
    feed.write_all(ended.as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 3.0);
    assert_eq!(
        reason(&bet(&mut ws, "r-ended", json!({"match": "sr:match:2"})).await),
        "match_ended"
    );

    // Idempotency: the same id returns the original decision; other content is refused.
    let again = bet(&mut ws, "ok-1", json!({})).await;
    assert_eq!(
        (again["status"].as_str(), again["seq"].as_u64()),
        (Some("accepted"), Some(1))
    );
    assert_eq!(
        reason(&bet(&mut ws, "ok-1", json!({"stake": 20.0})).await),
        "id_conflict"
    );
    assert_eq!(
        reason(&bet(&mut ws, "r-odds", json!({"odds": 1.6})).await),
        "odds_changed",
        "rejections are kept too"
    );

    let (code, body) = http_get(server.http, "/api/bets/ok-1");
    assert_eq!(code, 200);
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (
            stored["status"].as_str(),
            stored["odds"].as_f64(),
            stored["stake"].as_f64()
        ),
        (Some("accepted"), Some(1.5), Some(10.0))
    );
    assert_eq!(http_get(server.http, "/api/bets/never-placed").0, 404);
    let metrics = http_get(server.http, "/metrics").1;
    assert!(
        metrics.contains(r#"touchline_bets_total{decision="rejected",reason="odds_changed"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn better_odds_policy_accepts_at_the_current_odds() {
    let (_server, _feed, mut ws) = ready(&["--accept-better-odds"]).await;
    let a = bet(&mut ws, "b-1", json!({"odds": 1.4})).await;
    assert_eq!(
        (a["status"].as_str(), a["odds"].as_f64()),
        (Some("accepted"), Some(1.5))
    );
    assert_eq!(
        reason(&bet(&mut ws, "b-2", json!({"odds": 1.6})).await),
        "odds_changed",
        "worse odds still refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_match_takes_no_bets() {
    let server = Server::start_faulty(&[]);
    let mut feed = server.feed();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    let poison = format!(
        r#"<odds_change product="1" event_id="{MATCH}" timestamp="2"><odds><market id="999001" status="1"><outcome id="1" odds="2" active="1"/></market></odds></odds_change>"#
    );
    feed.write_all(poison.repeat(2).as_bytes()).expect("feed");
    server.wait_metric("touchline_quarantined_matches", 1.0);
    let mut ws = Ws::connect(server.http).await;
    assert_eq!(reason(&bet(&mut ws, "q-1", json!({})).await), "match_quarantined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_bets_survive_kill_9_and_keep_their_decision() {
    let (server, _feed, mut ws) = ready(&[]).await;
    let mut answers = Vec::new();
    for i in 0..20 {
        let odds = if i % 4 == 3 { 1.7 } else { 1.5 };
        answers.push(
            bet(
                &mut ws,
                &format!("k-{i}"),
                json!({"odds": odds, "stake": 1.0 + f64::from(i)}),
            )
            .await,
        );
    }
    assert_eq!(answers.iter().filter(|a| a["status"] == "accepted").count(), 15);
    let data = server.kill9();
    let server = Server::start_in(data, &[]);
    for (i, before) in answers.iter().enumerate() {
        let (code, body) = http_get(server.http, &format!("/api/bets/k-{i}"));
        assert_eq!(code, 200, "k-{i} is stored");
        let after: Value = serde_json::from_str(&body).expect("json");
        for field in ["status", "odds", "reason", "seq", "stake"] {
            assert_eq!(after[field], before[field], "k-{i} {field}");
        }
    }
    let mut ws = Ws::connect(server.http).await;
    for (i, before) in answers.iter().enumerate() {
        let odds = if i % 4 == 3 { 1.7 } else { 1.5 };
        let again = bet(
            &mut ws,
            &format!("k-{i}"),
            json!({"odds": odds, "stake": 1.0 + i as f64}),
        )
        .await;
        assert_eq!(
            (&again["status"], &again["odds"], &again["seq"]),
            (&before["status"], &before["odds"], &before["seq"])
        );
    }
}
