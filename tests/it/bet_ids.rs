//! The bet id as an idempotency key under concurrency: many sessions send
//! the same id at the same moment.

use std::io::Write;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::{Server, Ws, http_get, sample};

const MATCH: &str = "sr:match:10927088";
const CLIENTS: usize = 8;

fn bet(id: &str, stake: f64) -> Value {
    json!({"op": "bet", "id": id, "match": MATCH, "market": 68, "specifiers": "total=2.5", "outcome": 13, "odds": 1.5, "stake": stake})
}

/// Connect `stakes.len()` clients, then have client i send bet `id` with
/// `stakes[i]`, all released at once; their answers in client order.
async fn at_once(server: &Server, id: &str, stakes: &[f64]) -> Vec<Value> {
    let mut clients = Vec::new();
    for _ in stakes {
        clients.push(Ws::connect(server.http).await);
    }
    let go = Arc::new(tokio::sync::Barrier::new(stakes.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(stakes.iter().copied())
        .map(|(mut ws, stake)| {
            let (go, id) = (go.clone(), id.to_owned());
            tokio::spawn(async move {
                go.wait().await;
                ws.send(bet(&id, stake)).await;
                ws.next_matching(|f| f["type"] == "bet").await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("client task"));
    }
    answers
}

/// The worker's bet decisions so far (one guest call each).
fn decisions(server: &Server) -> f64 {
    server.metric("touchline_bet_decision_seconds_count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bet_sent_by_many_clients_at_once_is_decided_once_and_all_get_that_answer() {
    let server = Server::start(&[]);
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let answers = at_once(&server, "dup-1", &[10.0; CLIENTS]).await;
    assert_eq!(answers[0]["status"], "accepted", "{}", answers[0]);
    for a in &answers {
        assert_eq!(a, &answers[0], "every client gets the same answer");
    }
    assert_eq!(decisions(&server), 1.0, "decided exactly once");
    let (code, body) = http_get(server.http, "/api/bets/dup-1");
    assert_eq!(code, 200);
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (stored["seq"].as_u64(), stored["stake"].as_f64()),
        (Some(1), Some(10.0))
    );

    // The same id with other content, at once from many clients: all refused,
    // no new decision.
    let conflicts = at_once(&server, "dup-1", &[20.0; CLIENTS]).await;
    for a in &conflicts {
        assert_eq!(a["status"], "rejected", "{a}");
        assert!(
            a["reason"].as_str().is_some_and(|r| r.starts_with("id_conflict")),
            "{a}"
        );
    }
    assert_eq!(decisions(&server), 1.0);

    // A fresh id sent at once with two different contents: one content wins
    // (decided once); every sender of it gets that answer, every sender of
    // the other gets id_conflict.
    let stakes: Vec<f64> = (0..CLIENTS).map(|i| if i % 2 == 0 { 1.0 } else { 2.0 }).collect();
    let mixed = at_once(&server, "dup-2", &stakes).await;
    assert_eq!(decisions(&server), 2.0, "decided exactly once");
    let winner = mixed
        .iter()
        .find(|a| a["status"] == "accepted")
        .expect("one content was accepted")
        .clone();
    let won_stake = winner["stake"].as_f64().expect("stake");
    for (a, stake) in mixed.iter().zip(&stakes) {
        if *stake == won_stake {
            assert_eq!(a, &winner, "same content, same answer");
        } else {
            assert!(
                a["reason"].as_str().is_some_and(|r| r.starts_with("id_conflict")),
                "{a}"
            );
        }
    }
    let (_, body) = http_get(server.http, "/api/bets/dup-2");
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        stored["stake"].as_f64(),
        Some(won_stake),
        "the stored bet is the one that won"
    );
}
