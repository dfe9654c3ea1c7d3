//! The server's limits over real sockets: `--max-sessions`, `--max-matches`,
//! ids per request, client message size; and `unsubscribe ["*"]`.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{DEADLINE, Server, Ws, http_get, metric_in, sample, sample_for};

/// Try a WebSocket upgrade: a session, or the HTTP status it was refused with.
async fn upgrade(server: &Server) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http)).await {
        Ok((ws, _)) => Ok(Ws { ws, closed: None }),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("websocket upgrade failed without an HTTP answer: {e}"),
    }
}

/// A session is alive: a request sent now is answered (a bad one, with an error).
async fn answers(ws: &mut Ws) {
    ws.send(json!({"op": "ping"})).await;
    let e = ws.next().await;
    assert_eq!(e["type"], "error", "{e}");
}

fn labelled(server: &Server, series: &str) -> f64 {
    metric_in(&http_get(server.http, "/metrics").1, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_sessions_an_upgrade_gets_503_until_a_session_closes() {
    let server = Server::start(&["--max-sessions", "2"]);
    let mut a = upgrade(&server).await.expect("first session");
    let mut b = upgrade(&server).await.expect("second session");
    assert_eq!(upgrade(&server).await.err(), Some(503), "the third is refused");
    assert_eq!(
        labelled(&server, r#"touchline_ws_client_errors_total{kind="session_limit"}"#),
        1.0
    );
    answers(&mut a).await;
    answers(&mut b).await;

    // One leaves: its place is given to the next client (once the server
    // has seen the close; until then the answer may still be 503).
    b.ws.close(None).await.expect("close");
    while b.next_or_close().await.is_some() {}
    let start = Instant::now();
    let mut c = loop {
        match upgrade(&server).await {
            Ok(ws) => break ws,
            Err(503) => {
                assert!(start.elapsed() < DEADLINE, "a closed session never freed its place");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(code) => panic!("unexpected HTTP {code}"),
        }
    };
    answers(&mut c).await;
    answers(&mut a).await;
    assert_eq!(upgrade(&server).await.err(), Some(503), "still at most two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_matches_events_of_a_new_match_are_dropped_and_counted() {
    let server = Server::start(&["--max-matches", "2"]);
    let (a, b, c) = ("sr:match:1", "sr:match:2", "sr:match:3");
    let capacity = r#"touchline_route_errors_total{kind="capacity"}"#;
    let mut feed = server.feed_up();
    feed.write_all(&sample_for("uof/messages/odds_change.xml", a))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/odds_change.xml", b))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/odds_change.xml", c))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", a))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 3.0);
    crate::support::wait_for("the third match's event counted", || {
        Some(()).filter(|_| labelled(&server, capacity) == 1.0)
    });
    assert_eq!(server.metric("touchline_live_matches"), 2.0);

    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [a, b, c]})).await;
    let mut snaps: Vec<(String, u64)> = Vec::new();
    for _ in 0..2 {
        let s = ws.next().await;
        assert_eq!(s["type"], "snapshot", "{s}");
        snaps.push((
            s["match"].as_str().expect("id").to_owned(),
            s["seq"].as_u64().expect("seq"),
        ));
    }
    snaps.sort();
    assert_eq!(
        snaps,
        [(a.to_owned(), 2), (b.to_owned(), 1)],
        "the first two matches work"
    );

    // More for the dropped match: dropped again. The others carry on.
    feed.write_all(&sample_for("uof/messages/odds_change.xml", c))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", b))
        .expect("feed");
    let u = ws.next().await;
    assert_eq!(
        (u["type"].as_str(), u["match"].as_str(), u["seq"].as_u64()),
        (Some("update"), Some(b), Some(2)),
        "{u}"
    );
    crate::support::wait_for("the second dropped event counted", || {
        Some(()).filter(|_| labelled(&server, capacity) == 2.0)
    });
    answers(&mut ws).await; // nothing about the dropped match came before
    assert_eq!(server.metric("touchline_live_matches"), 2.0);
    assert_eq!(server.metric("touchline_events_applied_total"), 4.0);
    ws.send(json!({"op": "bet", "id": "on-dropped", "match": c, "market": 68, "specifiers": "total=2.5", "outcome": 13, "odds": 1.5, "stake": 1.0}))
        .await;
    let bet = ws.next_matching(|f| f["type"] == "bet").await;
    assert_eq!(bet["reason"], "unknown_match", "{bet}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_star_stops_every_update_also_of_new_matches() {
    let server = Server::start(&[]);
    let (a, b, new) = ("sr:match:1", "sr:match:2", "sr:match:3");
    let mut feed = server.feed_up();
    feed.write_all(&sample_for("uof/messages/odds_change.xml", a))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/odds_change.xml", b))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);

    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    for _ in 0..2 {
        assert_eq!(ws.next().await["type"], "snapshot");
    }
    // Live: an update arrives.
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", a))
        .expect("feed");
    let u = ws.next().await;
    assert_eq!((u["type"].as_str(), u["match"].as_str()), (Some("update"), Some(a)));

    ws.send(json!({"op": "unsubscribe", "matches": ["*"]})).await;
    answers(&mut ws).await; // the unsubscribe has been processed
    feed.write_all(&sample_for("uof/messages/odds_change.xml", a))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", b))
        .expect("feed");
    feed.write_all(&sample_for("uof/messages/odds_change.xml", new))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 6.0);
    // Nothing of a, b or the new match: the next frame answers a request sent now.
    ws.send(json!({"op": "ping"})).await;
    let next = ws.next().await;
    assert_eq!(
        next["type"], "error",
        "no update after unsubscribing everything: {next}"
    );
}

/// A subscribe/unsubscribe naming `n` ids (all "x": short, so 10,001 of
/// them stay far under the 64 KiB message limit).
fn naming(op: &str, n: usize) -> Value {
    json!({"op": op, "matches": vec!["x"; n]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_more_than_10000_ids_is_refused_and_the_session_continues() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.http).await;
    for op in ["subscribe", "unsubscribe"] {
        let request = naming(op, 10_001);
        assert!(request.to_string().len() < 64 * 1024);
        ws.send(request).await;
        let e = ws.next().await;
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str()),
            (Some("error"), Some("at most 10000 matches per request")),
            "{op}: {e}"
        );
    }
    // Exactly 10,000 is allowed: no error, the next frame answers the ping.
    ws.send(naming("subscribe", 10_000)).await;
    ws.send(json!({"op": "ping"})).await;
    let e = ws.next().await;
    assert!(e["reason"].as_str().is_some_and(|r| r.contains("ping")), "{e}");

    // The session still works: the subscription of a real match delivers.
    ws.send(json!({"op": "subscribe", "matches": ["sr:match:10927088"]}))
        .await;
    server
        .feed()
        .write_all(&sample("uof/messages/odds_change.xml"))
        .expect("feed");
    let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
    assert_eq!(snap["match"], "sr:match:10927088");
}

/// A valid subscribe request of exactly `len` bytes (padded with JSON
/// whitespace: a match id that long would be refused for its length).
fn request_of(len: usize) -> String {
    let head = r#"{"op":"subscribe","matches":["x"]"#;
    let tail = "}";
    let text = format!("{head}{}{tail}", " ".repeat(len - head.len() - tail.len()));
    assert_eq!(text.len(), len);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_over_64_kib_closes_the_session_with_1009() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.http).await;
    // 64 KiB exactly is accepted.
    ws.send_raw(Message::Text(request_of(64 * 1024).into())).await;
    answers(&mut ws).await;
    // One byte more closes the session, saying why.
    ws.send_raw(Message::Text(request_of(64 * 1024 + 1).into())).await;
    let after = ws.next_or_close().await;
    assert_eq!(after, None, "no answer, the session ends");
    assert_eq!(ws.closed, Some(Some(1009)), "close code 1009 (message too big)");
    crate::support::wait_for("the session to end", || {
        Some(()).filter(|_| server.metric("touchline_ws_sessions") == 0.0)
    });
}
