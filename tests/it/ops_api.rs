//! The operator console's admin API without a browser (`docs/ops.md`):
//! every match's card, a match's detail with its dead letters' and held
//! events' raw XML, the actions (hibernate, wake, quarantine, replay, heal)
//! and the activity log naming who did what, and the admin WebSocket: the
//! token first, then a tick a second.

use std::io::Write;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, Server, http_get, http_request, wait_for};

const TOKEN: &str = "ops-api-token-0123456789";
const A: &str = "sr:match:41";
const B: &str = "sr:match:42";

fn odds(event_id: &str, market: u32, odds: f64) -> String {
    format!(
        r#"<odds_change product="1" event_id="{event_id}" timestamp="1"><odds><market id="{market}" status="1"><outcome id="1" odds="{odds}" active="1"/></market></odds></odds_change>"#
    )
}

/// An admin call as operator `who`: (status, body).
fn admin(server: &Server, method: &str, path: &str, who: &str, body: &[u8]) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    http_request(
        server.http,
        method,
        path,
        &[("Authorization", &auth), ("X-Touchline-Operator", who)],
        body,
    )
}

fn json_of(server: &Server, path: &str) -> Value {
    let (code, body) = admin(server, "GET", path, "reader", b"");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn card(server: &Server, id: &str) -> Value {
    let list = json_of(server, "/admin/ops/matches");
    list["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no card for {id}: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_detail_and_actions_each_logged_with_who_did_it() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let mut feed = server.feed();
    feed.write_all(odds(A, 1, 2.0).as_bytes()).expect("feed");
    feed.write_all(odds(B, 1, 3.0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);

    let a = card(&server, A);
    assert_eq!(
        (a["state"].as_str(), a["seq"].as_u64(), a["epoch"].as_u64()),
        (Some("live"), Some(1), Some(1))
    );
    assert_eq!(a["version"].as_str().map(str::len), Some(64), "a content hash: {a}");
    assert!(a["memory_bytes"].as_u64() > Some(0), "{a}");
    let overview = json_of(&server, "/admin/ops");
    assert_eq!(overview["counts"]["total"], 2, "{overview}");
    assert_eq!(overview["counts"]["live"], 2);
    assert_eq!(overview["feed"]["by_kind"]["odds_change"]["total"], 2.0);
    assert_eq!(overview["store"]["status"], "ok");
    assert!(
        overview["store"]["disk_bytes"].as_u64() > Some(0),
        "{}",
        overview["store"]
    );
    assert_eq!(overview["guests"]["active"], a["version"]);

    // Hibernate and wake on the operator's word.
    let (code, text) = admin(&server, "POST", &format!("/admin/matches/{A}/hibernate"), "carol", b"");
    assert_eq!((code, text.as_str()), (200, "hibernated at seq 1"));
    assert_eq!(card(&server, A)["state"], "hibernated");
    assert_eq!(json_of(&server, "/admin/ops")["counts"]["hibernated"], 1);
    assert_eq!(
        admin(&server, "POST", &format!("/admin/matches/{A}/hibernate"), "carol", b"").0,
        409
    );
    assert_eq!(
        admin(&server, "POST", &format!("/admin/matches/{A}/wake"), "carol", b"").0,
        200
    );
    assert_eq!(card(&server, A)["state"], "live");

    // Quarantined by hand: the next event is held with its XML as sent.
    let (code, text) = admin(
        &server,
        "POST",
        &format!("/admin/matches/{A}/quarantine"),
        "carol",
        b"odd prices",
    );
    assert_eq!((code, text.as_str()), (200, "quarantined at seq 1"));
    assert_eq!(
        admin(&server, "POST", &format!("/admin/matches/{A}/quarantine"), "dave", b"").0,
        409
    );
    let held = odds(A, 1, 2.4);
    feed.write_all(held.as_bytes()).expect("feed");
    server.wait_metric("touchline_events_held_total", 1.0);
    let a = card(&server, A);
    assert_eq!(a["state"], "quarantined");
    assert_eq!(a["quarantine_reason"], "quarantined by an operator: odd prices");
    let detail = wait_for("the held event in the detail", || {
        let d = json_of(&server, &format!("/admin/ops/matches/{A}"));
        (d["held"].as_array().map(Vec::len) == Some(1)).then_some(d)
    });
    assert_eq!(detail["held"][0]["xml"].as_str(), Some(held.as_str()));
    assert_eq!(detail["snapshot"]["quarantined"], a["quarantine_reason"]);
    assert_eq!(detail["card"]["held"], 1);
    assert_eq!(card(&server, A)["held"], 1);

    let (code, text) = admin(&server, "POST", &format!("/admin/matches/{A}/heal"), "erin", b"");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("1 held events; seq 2; healthy"), "{text}");
    let a = card(&server, A);
    assert_eq!(
        (a["state"].as_str(), a["seq"].as_u64(), a["held"].as_u64()),
        (Some("live"), Some(2), Some(0))
    );
    let detail = json_of(&server, &format!("/admin/ops/matches/{A}"));
    let last = detail["frames"]
        .as_array()
        .and_then(|f| f.last())
        .expect("recent frames");
    assert_eq!((last["type"].as_str(), last["seq"].as_u64()), (Some("update"), Some(2)));

    assert_eq!(
        admin(&server, "POST", "/admin/matches/sr:match:0/wake", "erin", b"").0,
        404
    );
    assert_eq!(
        admin(&server, "GET", "/admin/ops/matches/sr:match:0", "erin", b"").0,
        404
    );

    // Every action, newest first, with who, from where and how it went.
    let log = json_of(&server, "/admin/activity");
    let entries: Vec<(String, String, String, String)> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("who"), s("action"), s("target"), s("outcome"))
        })
        .collect();
    let want: Vec<(String, String, String, String)> = [
        ("erin", "wake", "sr:match:0", "refused"),
        ("erin", "heal", A, "ok"),
        ("dave", "quarantine", A, "refused"),
        ("carol", "quarantine", A, "ok"),
        ("carol", "wake", A, "ok"),
        ("carol", "hibernate", A, "refused"),
        ("carol", "hibernate", A, "ok"),
    ]
    .iter()
    .map(|(w, a, t, o)| (w.to_string(), a.to_string(), t.to_string(), o.to_string()))
    .collect();
    assert_eq!(entries, want);
    assert_eq!(log["entries"][0]["from"], "127.0.0.1");

    // Every read and action wants the token.
    let routes = [
        ("GET", "/admin/ops".to_owned()),
        ("GET", "/admin/ops/matches".to_owned()),
        ("GET", format!("/admin/ops/matches/{A}")),
        ("GET", "/admin/activity".to_owned()),
        ("POST", format!("/admin/matches/{A}/heal")),
        ("POST", format!("/admin/matches/{A}/quarantine")),
        ("POST", format!("/admin/matches/{A}/hibernate")),
        ("POST", format!("/admin/matches/{A}/wake")),
        ("POST", format!("/admin/matches/{A}/dead-letters/1/replay")),
    ];
    for (method, path) in &routes {
        let none = http_request(server.http, method, path, &[], b"");
        assert_eq!(none.0, 401, "{method} {path} without a token");
    }
    assert_eq!(card(&server, A)["state"], "live", "nothing was done");
    assert_eq!(http_get(server.http, "/ops").0, 200, "the page itself is public");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_console_api_does_not_exist() {
    let server = Server::start(&[]);
    assert_eq!(http_get(server.http, "/admin/ops").0, 404);
    assert_eq!(http_get(server.http, "/admin/activity").0, 404);
    let (code, page) = http_get(server.http, "/ops");
    assert_eq!(code, 200);
    assert!(page.contains("--admin-token"), "the page says how to enable it");
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/admin/ops/ws", server.http)).await;
    assert!(refused.is_err(), "no admin socket without a token");
}

async fn admin_socket(
    server: &Server,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/admin/ops/ws", server.http))
        .await
        .expect("admin socket");
    let login = json!({"token": token, "operator": "frank"}).to_string();
    ws.send(Message::Text(login.into())).await.expect("login");
    ws
}

/// The next text message as JSON, or `None` at the close (with its code).
async fn next(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Result<Value, Option<u16>> {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_wants_the_token_first_then_ticks_with_everything() {
    let server = Server::start(&["--admin-token", TOKEN]);
    let mut feed = server.feed();
    feed.write_all(odds(A, 1, 2.0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let mut wrong = admin_socket(&server, "wrong-token-00000000").await;
    let denied = next(&mut wrong).await.expect("an answer");
    assert_eq!(denied["type"], "denied", "{denied}");
    assert_eq!(next(&mut wrong).await.err(), Some(Some(1008)));

    let mut ws = admin_socket(&server, TOKEN).await;
    let tick = next(&mut ws).await.expect("a tick");
    assert_eq!(tick["type"], "tick");
    assert_eq!(tick["overview"]["counts"]["total"], 1, "{tick}");
    assert_eq!(tick["matches"][0]["id"], A);
    assert_eq!(tick["matches"][0]["seq"], 1);

    // A message the parser refuses turns up among the last rejected ones;
    // events show on the match's card.
    feed.write_all(br#"<odds_change product="1"><odds/></odds_change>"#)
        .expect("feed");
    feed.write_all(odds(A, 1, 2.2).as_bytes()).expect("feed");
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no tick showed the rejected message and seq 2"
        );
        let tick = next(&mut ws).await.expect("a tick");
        let rejected = &tick["overview"]["feed"]["rejected"];
        if tick["matches"][0]["seq"] == 2 && rejected.as_array().is_some_and(|r| !r.is_empty()) {
            assert!(
                rejected[0]["excerpt"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("<odds_change")),
                "{rejected}"
            );
            assert!(rejected[0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
            break;
        }
    }
    // An action shows in the activity of the next ticks.
    assert_eq!(
        admin(&server, "POST", &format!("/admin/matches/{A}/hibernate"), "gina", b"").0,
        200
    );
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "no tick showed gina's action");
        let tick = next(&mut ws).await.expect("a tick");
        if tick["activity"][0]["who"] == "gina" {
            assert_eq!(tick["matches"][0]["state"], "hibernated");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_by_its_index_and_the_socket_lists_what_its_filter_asks() {
    let server = Server::start_faulty(&["--admin-token", TOKEN]);
    let mut feed = server.feed();
    feed.write_all(odds(A, 1, 2.0).as_bytes()).expect("feed");
    feed.write_all(odds(B, 1, 3.0).as_bytes()).expect("feed");
    let poison = odds(A, 999_001, 9.0);
    feed.write_all(poison.as_bytes()).expect("feed");
    server.wait_metric("touchline_dead_letters_total", 1.0);
    let detail = wait_for("the dead letter in the detail", || {
        let d = json_of(&server, &format!("/admin/ops/matches/{A}"));
        (d["dead_letters"].as_array().map(Vec::len) == Some(1)).then_some(d)
    });
    let letter = &detail["dead_letters"][0];
    assert_eq!(letter["xml"].as_str(), Some(poison.as_str()));
    assert!(
        letter["reason"].as_str().is_some_and(|r| r.contains("trap")),
        "{letter}"
    );
    assert_eq!(detail["totals"]["dead_letters"], 1);
    let index = letter["index"].as_u64().expect("index");

    // Still poison: dead-lettered anew (a new index), the match stays live.
    let path = format!("/admin/matches/{A}/dead-letters/{index}/replay");
    let (code, text) = admin(&server, "POST", &path, "hana", b"");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("failed again"), "{text}");
    let detail = json_of(&server, &format!("/admin/ops/matches/{A}"));
    assert_eq!(detail["dead_letters"].as_array().map(Vec::len), Some(1));
    assert_ne!(detail["dead_letters"][0]["index"].as_u64(), Some(index));
    assert_eq!(detail["dead_letters"][0]["xml"].as_str(), Some(poison.as_str()));
    assert_eq!(card(&server, A)["state"], "live");
    assert_eq!(admin(&server, "POST", &path, "hana", b"").0, 404, "that index is gone");

    // The socket lists what its filter asks for.
    let mut ws = admin_socket(&server, TOKEN).await;
    let tick = next(&mut ws).await.expect("a tick");
    assert_eq!(
        (tick["matches_total"].as_u64(), tick["matches_shown"].as_u64()),
        (Some(2), Some(2))
    );
    ws.send(Message::Text(json!({"filter": "42"}).to_string().into()))
        .await
        .expect("view");
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "no tick with the filter applied");
        let tick = next(&mut ws).await.expect("a tick");
        if tick["matches_shown"] == 1 {
            assert_eq!(tick["matches"][0]["id"], B);
            assert_eq!(tick["matches"].as_array().map(Vec::len), Some(1));
            break;
        }
    }
}
