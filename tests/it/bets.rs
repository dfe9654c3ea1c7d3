//! Bets over the real WebSocket against the real sample market state:
//! every rejection reason, acceptance, idempotency, durability across kill -9.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, Ws, http_get, sample, sample_for};

pub(crate) const MATCH: &str = "sr:match:10927088";

/// Send a bet (fields merged over a valid one) and wait for its answer.
pub(crate) async fn bet(ws: &mut Ws, id: &str, tweak: Value) -> Value {
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
pub(crate) async fn ready(extra: &[&str]) -> (Server, std::net::TcpStream, Ws) {
    let server = Server::start(extra);
    let mut feed = server.feed_up();
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
    // Rejected on their face, kept all the same: the id answers the same later.
    for (id, expected) in [
        ("r-stake0", "invalid_stake"),
        ("r-market-bad", "invalid_market"),
        ("r-odds-bad", "invalid_odds"),
    ] {
        let (code, body) = http_get(server.http, &format!("/api/bets/{id}"));
        assert_eq!(code, 200, "{id}: {body}");
        let stored: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(reason(&stored), expected, "{id}");
    }
    // A request answered with an earlier decision is a replay, not a new decision.
    let metrics = http_get(server.http, "/metrics").1;
    for line in [
        r#"touchline_bets_total{decision="rejected",reason="odds_changed"} 1"#,
        r#"touchline_bets_total{decision="accepted",reason="none"} 2"#,
        "touchline_bet_replays_total 2",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
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

/// How far the racing bets have got; the feeder paces itself on it.
#[derive(Default)]
struct RaceProgress {
    answered: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
    odds_changed: std::sync::atomic::AtomicUsize,
}

impl RaceProgress {
    fn get(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn count(&self, answer: &Value) {
        use std::sync::atomic::Ordering::SeqCst;
        if answer["status"] == "accepted" {
            self.accepted.fetch_add(1, SeqCst);
        }
        if answer["reason"] == "odds_changed" {
            self.odds_changed.fetch_add(1, SeqCst);
        }
        self.answered.fetch_add(1, SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bets_get_exactly_the_odds_of_their_turn_and_none_after_the_stop() {
    let server = Server::start(&[]);
    const M: &str = "sr:match:4242";
    let m = M;
    let odds_at = |j: usize| 1.5 + 0.01 * (j % 20) as f64;
    let change = move |j: usize| {
        format!(
            r#"<odds_change product="1" event_id="{m}" timestamp="{j}"><odds><market id="1" status="1"><outcome id="1" odds="{:.2}" active="1"/><outcome id="2" odds="3.5" active="1"/></market></odds></odds_change>"#,
            odds_at(j)
        )
    };
    let mut feed = server.feed_up();
    feed.write_all(change(0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    // Every event applies, in feed order: the journal of this match is the
    // initial book (seq 1), change j (seq j + 1), then the bet_stop (seq 152).
    let odds_at_seq = move |seq: u64| (odds_at(seq as usize - 1) * 100.0).round() / 100.0;
    let stop_seq = 152;
    // Acceptances (and odds_changed refusals) seen before betting stops.
    const ACCEPTED_BEFORE_STOP: usize = 10;

    // Six clients follow the match and bet at the odds of the last update
    // they saw; every fourth bet offers the odds of the update before it (a
    // stale offer). The feed moves the odds 150 times, each change only once
    // two more bets were answered since the previous one, so bets and
    // changes interleave whatever the machine's speed and some fresh offers
    // race a change. After the last change the feeder stops betting only
    // once ACCEPTED_BEFORE_STOP bets were accepted and one was refused for
    // odds_changed: at the last odds every fresh offer is accepted and every
    // stale one refused, so both counts are reached, on a fast machine or a
    // busy one.
    let progress = std::sync::Arc::new(RaceProgress::default());
    let pace = progress.clone();
    let feeder = std::thread::spawn(move || {
        let mut answered = 0;
        for j in 1..=150 {
            answered = crate::support::wait_for("bets to interleave with odds changes", || {
                Some(RaceProgress::get(&pace.answered)).filter(|n| *n >= answered + 2)
            });
            if feed.write_all(change(j).as_bytes()).is_err() {
                return feed;
            }
        }
        crate::support::wait_for("acceptances at the last odds", || {
            Some(()).filter(|_| {
                RaceProgress::get(&pace.accepted) >= ACCEPTED_BEFORE_STOP && RaceProgress::get(&pace.odds_changed) >= 1
            })
        });
        let stop = format!(r#"<bet_stop product="1" event_id="{m}" timestamp="999" groups="all"/>"#);
        let _ = feed.write_all(stop.as_bytes());
        // Kept open: a closed feed connection takes every producer down.
        feed
    });
    let mut bettors = Vec::new();
    for c in 0..6 {
        let http = server.http;
        let progress = progress.clone();
        bettors.push(tokio::spawn(async move {
            let mut ws = Ws::connect(http).await;
            ws.send(json!({"op": "subscribe", "matches": [m]})).await;
            let snap = ws.next().await;
            assert_eq!(snap["type"], "snapshot", "{snap}");
            let mut latest = snap["seq"].as_u64().expect("seq");
            // (seq of the last update seen when the bet was sent, answer)
            let mut answers: Vec<(u64, Value)> = Vec::new();
            for k in 0.. {
                if latest >= stop_seq {
                    break; // saw the bet_stop
                }
                let seen = latest;
                let target = if k % 4 == 3 && seen >= 2 { seen - 1 } else { seen };
                let id = format!("race-{c}-{k}");
                ws.send(json!({"op": "bet", "id": id, "match": m, "market": 1, "outcome": "1", "odds": odds_at_seq(target), "stake": 1.0}))
                    .await;
                // Follow the updates while the answer is on its way.
                let answer = loop {
                    let f = ws.next().await;
                    match f["type"].as_str() {
                        // A snapshot too: a client that lags is resynchronised.
                        Some("update" | "snapshot") => latest = f["seq"].as_u64().expect("seq"),
                        Some("resumed") => {}
                        Some("bet") => break f,
                        _ => panic!("unexpected frame {f}"),
                    }
                };
                assert_eq!(answer["id"], id.as_str());
                progress.count(&answer);
                let refused_by_stop = answer["reason"] == "market_not_active";
                answers.push((seen, answer));
                if refused_by_stop {
                    break;
                }
            }
            answers
        }));
    }
    let _feed = feeder.join().expect("feeder");
    let mut answers = Vec::new();
    for b in bettors {
        answers.extend(b.await.expect("bettor"));
    }
    server.wait_metric("touchline_events_applied_total", stop_seq as f64);
    let mut check = Ws::connect(server.http).await;
    check.send(json!({"op": "subscribe", "matches": [m]})).await;
    let snap = check.next().await;
    assert_eq!(snap["seq"].as_u64(), Some(stop_seq), "the journal is as fed");
    // Bets after the stop: all refused.
    let mut late = Ws::connect(server.http).await;
    for k in 0..5 {
        let id = format!("late-{k}");
        late.send(
            json!({"op": "bet", "id": id, "match": m, "market": 1, "outcome": "1", "odds": odds_at(150), "stake": 1.0}),
        )
        .await;
        answers.push((stop_seq, late.next_matching(|f| f["type"] == "bet").await));
    }

    let accepted: Vec<&(u64, Value)> = answers.iter().filter(|(_, a)| a["status"] == "accepted").collect();
    assert!(
        accepted.len() >= ACCEPTED_BEFORE_STOP,
        "enough bets were accepted to mean something: {}",
        accepted.len()
    );
    assert!(
        answers.iter().any(|(_, a)| a["reason"] == "odds_changed"),
        "and some were refused because the odds had moved"
    );
    for (seen, a) in &accepted {
        let seq = a["seq"].as_u64().expect("seq");
        assert!(seq < stop_seq, "accepted after the bet_stop: {a}");
        assert!(
            seq >= *seen,
            "decided on a state older than the update the bettor saw ({seen}): {a}"
        );
        assert_eq!(
            a["odds"].as_f64(),
            Some(odds_at_seq(seq)),
            "accepted at exactly the odds current at seq {seq}: {a}"
        );
    }
    for (_, a) in answers
        .iter()
        .filter(|(_, a)| a["id"].as_str().is_some_and(|i| i.starts_with("late-")))
    {
        assert_eq!(a["reason"], "market_not_active", "{a}");
    }
}
