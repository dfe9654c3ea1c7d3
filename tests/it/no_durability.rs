//! `--no-durability`: the server works (snapshots, contiguous updates, bets
//! decided) but keeps nothing, so a restart on the same data dir restores
//! nothing.

use std::io::Write;

use serde_json::json;

use crate::support::{Server, Tracker, Ws, http_get, odds_of, sample, sample_for};

const MATCH: &str = "sr:match:10927088";

/// After a restart: no match, no bet from before.
async fn nothing_restored(server: &Server) {
    assert_eq!(server.metric("touchline_live_matches"), 0.0, "no match restored");
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    ws.send(json!({"op": "ping"})).await;
    let next = ws.next().await;
    assert_eq!(next["type"], "error", "no snapshot of a match from before: {next}");
    assert_eq!(http_get(server.http, "/api/bets/nd-1").0, 404, "no bet from before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_durability_the_server_serves_and_a_restart_restores_nothing() {
    let server = Server::start(&["--no-durability"]);
    // The guest registry is kept even without durability: its writes are
    // done (and counted) before READY. Nothing of a match may follow.
    let registry_ops = server.metric("touchline_store_ops_total");
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let mut ws = Ws::connect(server.http).await;
    let mut view = Tracker::default();
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next().await;
    assert_eq!(
        (snap["type"].as_str(), snap["seq"].as_u64()),
        (Some("snapshot"), Some(1))
    );
    assert_eq!(odds_of(&snap["state"]["markets"], 68, "total=2.5", "13"), Some(1.5));
    view.apply(&snap);

    ws.send(json!({"op": "bet", "id": "nd-1", "match": MATCH, "market": 68, "specifiers": "total=2.5", "outcome": 13, "odds": 1.5, "stake": 10.0}))
        .await;
    let a = ws.next().await;
    assert_eq!(
        (
            a["type"].as_str(),
            a["status"].as_str(),
            a["odds"].as_f64(),
            a["seq"].as_u64()
        ),
        (Some("bet"), Some("accepted"), Some(1.5), Some(1)),
        "{a}"
    );
    ws.send(json!({"op": "bet", "id": "nd-2", "match": MATCH, "market": 68, "specifiers": "total=2.5", "outcome": 13, "odds": 1.6, "stake": 10.0}))
        .await;
    assert_eq!(ws.next().await["reason"], "odds_changed");

    for m in [
        sample("uof/messages/odds_change_single_market.xml"),
        sample_for("uof/messages/bet_stop.xml", MATCH),
        sample("uof/messages/odds_change_no_markets.xml"),
    ] {
        feed.write_all(&m).expect("feed");
    }
    for seq in 2..=4 {
        let u = ws.next().await;
        assert_eq!(
            (u["type"].as_str(), u["seq"].as_u64()),
            (Some("update"), Some(seq)),
            "{u}"
        );
        view.apply(&u);
    }
    assert_eq!(view.gaps, 0);
    assert_eq!(
        server.metric("touchline_store_ops_total"),
        registry_ops,
        "nothing of a match written to the store"
    );

    // Graceful restart with the same flag: nothing was kept.
    drop(ws);
    drop(feed);
    let data = server.terminate();
    let server = Server::start_in(data, &["--no-durability"]);
    nothing_restored(&server).await;
    // Nor was anything journaled that a durable start could find.
    let data = server.terminate();
    let server = Server::start_in(data, &[]);
    nothing_restored(&server).await;
}
