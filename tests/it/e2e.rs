//! The real binary over real sockets: feed in over TCP, frames out over WebSocket.

use std::io::Write;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, Ws, http_get, odds_of, sample, sample_for, wait_for};

const MATCH: &str = "sr:match:10927088";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_feed_reaches_websocket_client() {
    let server = Server::start(&[]);
    // Alive, but not ready before its feed is connected.
    assert_eq!(http_get(server.http, "/livez").0, 200);
    let (code, body) = http_get(server.http, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""feed":"no feed connection""#), "{body}");
    let mut feed = server.feed_up();
    let (code, body) = http_get(server.http, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""store":"ok""#), "{body}");
    feed.write_all(&sample("uof/messages/odds_change.xml"))
        .expect("feed write");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["match"], MATCH);
    let seq = snap["seq"].as_u64().expect("seq");
    assert_eq!(seq, 1);
    let state = &snap["state"];
    assert_eq!(odds_of(&state["markets"], 68, "total=2.5", "13"), Some(1.5), "{state}");
    assert_eq!(state["status"], 1);
    assert_eq!(state["score"], json!({"home": 0.0, "away": 2.0}));
    assert_eq!(state["markets"].as_array().map(Vec::len), Some(42));

    // More events for the same match: each one is an update, contiguous.
    let more = [
        sample("uof/messages/odds_change_single_market.xml"),
        sample_for("uof/messages/bet_stop.xml", MATCH),
        sample("uof/messages/odds_change_no_markets.xml"),
        sample_for("uof/messages/bet_settlement.xml", MATCH),
        sample_for("uof/messages/rollback_bet_settlement.xml", MATCH),
    ];
    for m in &more {
        feed.write_all(m).expect("feed write");
    }
    let mut expected = seq;
    let mut updates = Vec::new();
    for _ in &more {
        let u = ws.next().await;
        assert_eq!(u["type"], "update", "{u}");
        expected += 1;
        assert_eq!(u["seq"].as_u64(), Some(expected), "contiguous seq");
        updates.push(u);
    }
    // single market: 68 total=3.5 resent unchanged (12 at 6.5): an update
    // that changes nothing, still with its seq.
    assert_eq!(updates[0]["delta"]["markets"], json!([]));
    // bet_stop groups=all: every active market reported suspended
    let stopped = updates[1]["delta"]["markets"].as_array().expect("markets");
    assert!(
        !stopped.is_empty() && stopped.iter().all(|m| m["status"] == -1),
        "{}",
        updates[1]
    );
    // odds_change without markets changes nothing: still an update, no markets
    assert_eq!(updates[2]["delta"]["markets"], json!([]));
    assert_eq!(updates[3]["delta"]["event"], "bet_settlement");
    // The session was idle: the match wrote its updates to the socket
    // itself (the WebSocket upgrade handed the socket to the session).
    server.wait_metric("touchline_ws_frames_direct_total", 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feed_input_is_counted_and_the_rest_flows() {
    let server = Server::start(&["--max-message-bytes", "65536"]);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    let mut feed = server.feed();
    let mut stream = Vec::new();
    stream.extend(b"\x00\x01garbage before anything");
    stream.extend(sample("uof/messages/odds_change.xml"));
    stream.extend(b"<odds_change event_id=\"sr:match:1\"><odds><market id=\"1\">"); // truncated
    stream.extend(sample("uof/messages/product_down.xml")); // known, not used: counted
    stream.extend(b"<product_up product=\"1\"/>"); // unknown type
    stream.extend(b"<odds_change event_id=\"sr:match:2\"><odds><market id=\"x\"/></odds></odds_change>"); // bad value
    stream.extend(b"<bet_stop timestamp=\"later\"/>"); // no event_id: missing attribute
    stream.extend(b"<bet_stop event_id=\"sr:match:3\" timestamp=\"later\"/>"); // applies, problem counted
    stream.extend(sample("uof/messages/odds_change_prematch_full.xml")); // 81 KB > limit
    stream.extend(sample_for("uof/messages/bet_stop.xml", MATCH));
    feed.write_all(&stream).expect("feed write");

    // sr:match:3 (its bet_stop applied) is announced too.
    let snap = ws
        .next_matching(|v| v["type"] == "snapshot" && v["match"] == MATCH)
        .await;
    let first = snap["seq"].as_u64().expect("seq");
    let mut seen = first;
    while seen < 2 {
        let u = ws.next_matching(|v| v["type"] == "update" && v["match"] == MATCH).await;
        assert_eq!(u["seq"].as_u64(), Some(seen + 1));
        seen += 1;
    }
    assert_eq!(
        server.wait_metric("touchline_events_applied_total", 3.0),
        3.0,
        "only the three valid events applied (one with an unreadable timestamp)"
    );
    let text = http_get(server.http, "/metrics").1;
    for (kind, n) in [
        ("garbage", 1),
        ("truncated", 1),
        ("unknown_type", 1),
        ("bad_value", 1),
        ("missing_attribute", 1),
        ("oversized", 1),
    ] {
        let line = format!("touchline_feed_errors_total{{kind=\"{kind}\"}} {n}");
        assert!(text.contains(&line), "missing `{line}` in\n{text}");
    }
    for line in [
        r#"touchline_feed_messages_total{kind="product_down"} 1"#,
        r#"touchline_feed_problems_total{kind="bet_stop",field="timestamp"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    // The connection survived all that: one more event still flows.
    feed.write_all(&sample("uof/messages/odds_change_single_market.xml"))
        .expect("feed still open");
    let u = ws.next_matching(|v| v["type"] == "update" && v["match"] == MATCH).await;
    assert_eq!(u["seq"].as_u64(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_frames_get_errors_and_the_session_continues() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.http).await;
    ws.send_raw(Message::Text("not json".into())).await;
    let e = ws.next().await;
    assert_eq!(e["type"], "error");
    assert!(e["reason"].as_str().is_some_and(|r| r.contains("bad request")), "{e}");
    ws.send(json!({"op": "dance"})).await;
    assert!(ws.next().await["reason"].as_str().is_some_and(|r| r.contains("dance")));
    ws.send(json!({"op": "subscribe"})).await;
    assert!(
        ws.next().await["reason"]
            .as_str()
            .is_some_and(|r| r.contains("matches"))
    );
    ws.send_raw(Message::Binary(vec![1u8, 2, 3].into())).await;
    assert!(ws.next().await["reason"].as_str().is_some_and(|r| r.contains("binary")));

    // Still a working session: subscribe to a match that does not exist yet.
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    server
        .feed()
        .write_all(&sample("uof/messages/odds_change.xml"))
        .expect("feed write");
    let snap = ws.next().await;
    assert_eq!(
        (snap["type"].as_str(), snap["match"].as_str()),
        (Some("snapshot"), Some(MATCH))
    );
    let seq = snap["seq"].as_u64().expect("seq");
    if seq == 0 {
        // The subscription raced the first event: it follows as update 1.
        let u = ws.next().await;
        assert_eq!((u["type"].as_str(), u["seq"].as_u64()), (Some("update"), Some(1)));
        assert_eq!(odds_of(&u["delta"]["markets"], 68, "total=2.5", "13"), Some(1.5));
    } else {
        assert_eq!(odds_of(&snap["state"]["markets"], 68, "total=2.5", "13"), Some(1.5));
    }
    assert_eq!(server.metric("touchline_ws_client_errors_total"), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_updates_and_other_matches_are_unaffected() {
    let server = Server::start(&[]);
    let other = "sr:match:1";
    let mut feed = server.feed();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("write");
    feed.write_all(&sample_for("uof/messages/odds_change.xml", other))
        .expect("write");
    server.wait_metric("touchline_events_applied_total", 2.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH, other]})).await;
    let a = ws.next().await;
    let b = ws.next().await;
    let mut got: Vec<&str> = vec![a["match"].as_str().expect("id"), b["match"].as_str().expect("id")];
    got.sort_unstable();
    assert_eq!(got, [other, MATCH]);
    ws.send(json!({"op": "unsubscribe", "matches": [MATCH]})).await;
    // The unsubscribe is processed before the session sees later updates, but
    // make sure by round-tripping an error frame.
    ws.send(json!({"op": "ping"})).await;
    assert_eq!(ws.next().await["type"], "error");
    feed.write_all(&sample("uof/messages/odds_change_single_market.xml"))
        .expect("write");
    feed.write_all(&sample_for("uof/messages/odds_change_single_market.xml", other))
        .expect("write");
    let u: Value = ws.next().await;
    assert_eq!(
        (u["type"].as_str(), u["match"].as_str(), u["seq"].as_u64()),
        (Some("update"), Some(other), Some(2))
    );
    wait_for("both events applied", || {
        Some(()).filter(|_| server.metric("touchline_events_applied_total") >= 4.0)
    });
    // Nothing from the unsubscribed match came before or after: the next
    // frame is the answer to a request sent now.
    ws.send(json!({"op": "ping"})).await;
    let next = ws.next().await;
    assert_eq!(
        next["type"], "error",
        "no update of {MATCH} after unsubscribing: {next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_connect_redials_after_the_feed_drops() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = upstream.local_addr().expect("addr").to_string();
    let server = Server::start(&["--feed-connect", &addr]);
    let (mut first, _) = upstream.accept().expect("server dials the feed");
    first.write_all(&sample("uof/messages/odds_change.xml")).expect("write");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    assert_eq!(ws.next().await["seq"].as_u64(), Some(1));
    // A real dropped socket: the server must dial again and carry on.
    first.shutdown(std::net::Shutdown::Both).expect("drop the feed");
    drop(first);
    let (mut second, _) = upstream.accept().expect("server redials");
    second
        .write_all(&sample("uof/messages/odds_change_single_market.xml"))
        .expect("write");
    let u = ws.next().await;
    assert_eq!((u["type"].as_str(), u["seq"].as_u64()), (Some("update"), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_match_hibernates_and_wakes_with_its_state() {
    let server = Server::start(&["--hibernate-after-ms", "50", "--clean-after-ms", "10"]);
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_hibernated_matches", 1.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["seq"].as_u64(), Some(1));
    assert_eq!(
        odds_of(&snap["state"]["markets"], 68, "total=2.5", "13"),
        Some(1.5),
        "state survives hibernation"
    );
    feed.write_all(&sample_for("uof/messages/bet_stop.xml", MATCH))
        .expect("feed");
    let u = ws.next().await;
    assert_eq!((u["type"].as_str(), u["seq"].as_u64()), (Some("update"), Some(2)));
    assert!(server.metric("touchline_wake_seconds_count") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_what_flags_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("touchline.toml");
    std::fs::write(&good, "max-message-bytes = 65536\nmax-sessions = 1\n").expect("write config");
    // The flag wins over the file for max-sessions; the file sets the message limit.
    let server = Server::start(&["--config", good.to_str().expect("utf8 path"), "--max-sessions", "5"]);
    let mut feed = server.feed();
    feed.write_all(&sample("uof/messages/odds_change_prematch_full.xml"))
        .expect("feed"); // 81 KB
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    assert_eq!(
        server.metric("touchline_feed_errors_total"),
        1.0,
        "the 81 KB message exceeded the file's limit"
    );
    let _a = Ws::connect(server.http).await;
    let _b = Ws::connect(server.http).await; // a second session: the flag's 5, not the file's 1

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no-such-setting = 1\n").expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["serve", "--feed-listen", "127.0.0.1:0", "--config"])
        .arg(&bad)
        .output()
        .expect("run touchline");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-setting"), "names the unknown setting: {err}");
}

/// Market descriptions come from the provider's API (the simulator's),
/// are fetched again on demand, and are kept: a restart while the API is
/// away still has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_descriptions_come_from_the_provider_and_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = crate::support::simulator(dir.path(), &["--matches", "2"]);
    const TOKEN: &str = "reference-admin-token-0123";
    let api = sim.api_url();
    let server = Server::start_sim(
        tempfile::tempdir().expect("tempdir"),
        &sim,
        &["--api-url", &api, "--admin-token", TOKEN],
    );
    let markets = |server: &Server| -> u64 {
        let (code, body) = http_get(server.http, "/api/reference");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("JSON")["markets"]
            .as_u64()
            .expect("a count")
    };
    let n = crate::support::wait_for("descriptions fetched", || Some(markets(&server)).filter(|n| *n > 100));
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = crate::support::http_post(
        server.http,
        "/admin/reference/refresh",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!((code, body), (200, format!(r#"{{"markets":{n}}}"#)));
    let (code, _) = crate::support::http_post(server.http, "/admin/reference/refresh", &[], b"");
    assert_eq!(code, 401);
    let data = server.terminate();
    drop(sim);
    let server = Server::start_in(data, &["--api-url", "http://127.0.0.1:1"]);
    assert_eq!(markets(&server), n, "the kept copy, with the API away");
}

/// Bytes of a sample file before its root element (BOM, declaration).
fn prolog_len(file: &[u8]) -> usize {
    file.windows(2)
        .position(|w| w[0] == b'<' && w[1].is_ascii_alphabetic())
        .expect("a root element")
}

/// Issue 15's corruptions over a real feed connection, each followed by a
/// valid message: every valid one applies, the drops are counted by reason
/// in messages and bytes, and a partial message at a clean close is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_feed_input_never_costs_the_next_valid_message() {
    let server = Server::start(&[]);
    let valid = [
        sample("uof/messages/odds_change.xml"),
        sample("uof/messages/odds_change_single_market.xml"),
        sample_for("uof/messages/bet_stop.xml", MATCH),
        sample("uof/messages/odds_change_no_markets.xml"),
        sample("uof/messages/odds_change_single_market.xml"),
    ];
    // (bytes, reason): each is followed by the next valid message.
    let broken: [(&[u8], &str); 4] = [
        // Cut off inside a start tag.
        (
            b"<odds_change product=\"4\" event_id=\"sr:match:1\" timest",
            "truncated",
        ),
        // `<` followed by garbage.
        (b"<\x00\x01garbage<<&\xFF", "garbage"),
        // A stray quote in a start tag: the next quote is in the next message.
        (
            b"<odds_change product=\"4\" event_id=\"sr:match:2 timestamp=\"1\"><odds/></odds_change>",
            "truncated",
        ),
        // An unterminated quote.
        (b"<alive product=\"1 subscribed=\"1\"/>", "truncated"),
    ];
    let partial: &[u8] = b"<odds_change product=\"4\" event_id=\"sr:match:3\"><odds><market id=\"1\"";
    let mut stream = valid[0].clone();
    let mut bytes = std::collections::BTreeMap::<&str, usize>::new();
    for ((junk, reason), next) in broken.iter().zip(&valid[1..]) {
        stream.extend_from_slice(junk);
        stream.extend_from_slice(next);
        // A drop runs up to the next message's root: its BOM and
        // declaration go with it.
        *bytes.entry(*reason).or_default() += junk.len() + prolog_len(next);
    }
    stream.extend_from_slice(partial);
    bytes.insert("incomplete_at_close", partial.len());
    let mut feed = server.feed();
    feed.write_all(&stream).expect("feed write");
    feed.shutdown(std::net::Shutdown::Write).expect("clean close");

    server.wait_metric(
        r#"touchline_feed_dropped_messages_total{reason="incomplete_at_close""#,
        1.0,
    );
    assert_eq!(server.wait_metric("touchline_events_applied_total", 5.0), 5.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next().await;
    assert_eq!(
        (snap["type"].as_str(), snap["seq"].as_u64()),
        (Some("snapshot"), Some(5)),
        "every valid message applied: {snap}"
    );
    let text = http_get(server.http, "/metrics").1;
    for (reason, messages) in [("truncated", 3), ("garbage", 1), ("incomplete_at_close", 1)] {
        for line in [
            format!("touchline_feed_dropped_messages_total{{reason=\"{reason}\"}} {messages}"),
            format!(
                "touchline_feed_dropped_bytes_total{{reason=\"{reason}\"}} {}",
                bytes[reason]
            ),
        ] {
            assert!(text.contains(&line), "missing `{line}` in\n{text}");
        }
    }
    assert_eq!(
        crate::support::metric_in(&text, "touchline_feed_dropped_messages_total"),
        5.0,
        "nothing else dropped"
    );
}

/// A message still incomplete when the feed goes quiet for `--feed-stall-ms`
/// is dropped and counted (`stalled`); what comes later frames afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stalled_mid_way_is_dropped_and_counted() {
    let server = Server::start(&["--feed-stall-ms", "200"]);
    let mut feed = server.feed();
    let first: &[u8] = b"<odds_change product=\"4\" event_id=\"sr:match:7\"><odds>";
    feed.write_all(first).expect("feed write");
    server.wait_metric(r#"touchline_feed_dropped_messages_total{reason="stalled""#, 1.0);
    assert_eq!(
        server.metric(r#"touchline_feed_dropped_bytes_total{reason="stalled""#),
        first.len() as f64
    );
    // The rest of it, late, is garbage; the next message applies.
    feed.write_all(b"</odds></odds_change>").expect("feed write");
    feed.write_all(&sample("uof/messages/odds_change.xml"))
        .expect("feed write");
    server.wait_metric("touchline_events_applied_total", 1.0);
    assert_eq!(
        server.metric(r#"touchline_feed_dropped_messages_total{reason="garbage""#),
        1.0
    );
}
