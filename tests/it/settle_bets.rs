//! Settling accepted bets over the real WebSocket: payouts with void and
//! dead-heat factors from the real samples, cancels and their rollbacks
//! (windowed ones by the bets' placement times), each bet told once.

use std::io::Write;

use serde_json::{Value, json};

use crate::bets::{MATCH, bet, ready};
use crate::support::{Server, Ws, http_get, sample};

/// An odds_change making `markets` (id, specifiers, outcome ids) active at `odds`.
pub(crate) fn book(event_id: &str, markets: &[(u32, &str, &[&str])], odds: f64) -> Vec<u8> {
    let mut x = format!(r#"<odds_change product="3" event_id="{event_id}" timestamp="1"><odds>"#);
    for (id, spec, outcomes) in markets {
        x.push_str(&format!(r#"<market id="{id}" specifiers="{spec}" status="1">"#));
        for o in *outcomes {
            x.push_str(&format!(r#"<outcome id="{o}" odds="{odds}" active="1"/>"#));
        }
        x.push_str("</market>");
    }
    x.push_str("</odds></odds_change>");
    x.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_void_dead_heat_cancel_and_rollbacks_from_real_samples() {
    let server = Server::start(&[]);
    let mut feed = server.feed_up();
    // The markets the minus5 bet_settlement sample settles, open for betting.
    let m5 = "sr:match:16807109";
    let variant = "variant=pre:markettext:52751";
    feed.write_all(&book(m5, &[(201, "", &["861", "862", "863", "864"])], 2.0))
        .expect("feed");
    feed.write_all(&book(m5, &[(535, variant, &["pre:outcometext:6388892"])], 3.0))
        .expect("feed");
    // And the market the uof bet_cancel / rollback samples name.
    let uof = "sr:match:10237855";
    feed.write_all(&book(uof, &[(312, "setnr=4|pointnr=45", &["1"])], 2.5))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 3.0);

    let mut ws = Ws::connect(server.http).await;
    let place = |id: &str, m: &str, market: u32, spec: &str, outcome: &str, odds: f64| json!({"op": "bet", "id": id, "match": m, "market": market, "specifiers": spec, "outcome": outcome, "odds": odds, "stake": 10.0});
    for (id, req) in [
        (
            "dead-heat",
            place("dead-heat", m5, 535, variant, "pre:outcometext:6388892", 3.0),
        ),
        ("half-void-won", place("half-void-won", m5, 201, "", "861", 2.0)),
        ("half-void-lost", place("half-void-lost", m5, 201, "", "864", 2.0)),
        ("void", place("void", m5, 201, "", "863", 2.0)),
        ("lost", place("lost", m5, 201, "", "862", 2.0)),
        (
            "cancelled",
            place("cancelled", uof, 312, "setnr=4|pointnr=45", "1", 2.5),
        ),
    ] {
        ws.send(req).await;
        let a = ws.next_matching(|f| f["type"] == "bet" && f["id"] == id).await;
        assert_eq!(a["status"], "accepted", "{a}");
    }

    feed.write_all(&sample("uof-minus5/messages/bet_settlement.xml"))
        .expect("feed");
    let mut got = std::collections::BTreeMap::new();
    while got.len() < 5 {
        let f = ws.next_matching(|f| f["type"] == "bet").await;
        got.insert(f["id"].as_str().unwrap_or_default().to_owned(), f);
    }
    let check = |id: &str, status: &str, payout: f64| {
        let f = &got[id];
        assert_eq!(f["status"], status, "{id}: {f}");
        assert!(
            (f["payout"].as_f64().unwrap_or(-1.0) - payout).abs() < 1e-9,
            "{id}: payout {f}"
        );
    };
    check("dead-heat", "won", 15.0); // 10 × 3.0 × dead_heat_factor 0.5
    check("half-void-won", "won", 15.0); // 10 × 0.5 refunded + 10 × 0.5 × 2.0
    check("half-void-lost", "void", 5.0); // half refunded, half lost
    check("void", "void", 10.0); // void_factor 1
    check("lost", "lost", 0.0);
    let (_, body) = http_get(server.http, "/api/bets/dead-heat");
    let stored: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (stored["status"].as_str(), stored["payout"].as_f64()),
        (Some("won"), Some(15.0)),
        "settlement is stored"
    );

    // Cancel voids the bet; its rollback reopens it.
    feed.write_all(&sample("uof/messages/bet_cancel.xml")).expect("feed");
    let v = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "cancelled").await;
    assert_eq!((v["status"].as_str(), v["payout"].as_f64()), (Some("void"), Some(10.0)));
    feed.write_all(&sample("uof/messages/rollback_bet_cancel.xml"))
        .expect("feed");
    let r = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "cancelled").await;
    assert_eq!(r["status"], "accepted", "reopened: {r}");
    assert!(r.get("payout").is_none(), "{r}");
    let metrics = http_get(server.http, "/metrics").1;
    assert!(
        metrics.contains(r#"touchline_bet_settlements_total{status="won"} 2"#),
        "{metrics}"
    );
}

/// Unix ms now, on the clock the server stamps bets with (same machine).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_cancel_voids_the_bets_placed_inside_and_its_rollback_restores_them() {
    let (server, mut feed, mut ws) = ready(&[]).await;
    let before = bet(&mut ws, "before", json!({})).await;
    assert_eq!(before["status"], "accepted", "{before}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let start = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let inside = bet(&mut ws, "inside", json!({})).await;
    assert_eq!(inside["status"], "accepted", "{inside}");
    // Void the bets on 68 total=2.5 placed since `start`; the market stays
    // open to betting (odds_change decides its status).
    feed.write_all(
        format!(
            r#"<bet_cancel product="1" event_id="{MATCH}" timestamp="2" start_time="{start}"><market id="68" specifiers="total=2.5" void_reason="12"/></bet_cancel>"#
        )
        .as_bytes(),
    )
    .expect("feed");
    let v = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "inside").await;
    assert_eq!(
        (v["status"].as_str(), v["payout"].as_f64()),
        (Some("void"), Some(10.0)),
        "{v}"
    );
    // Under 2.5 (13) wins: the bet placed before the window is paid.
    let settle = |certainty: u8| {
        format!(
            r#"<bet_settlement product="1" event_id="{MATCH}" timestamp="3" certainty="{certainty}"><outcomes><market id="68" specifiers="total=2.5"><outcome id="12" result="0"/><outcome id="13" result="1"/></market></outcomes></bet_settlement>"#
        )
    };
    feed.write_all(settle(1).as_bytes()).expect("feed");
    let w = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "before").await;
    assert_eq!(
        (w["status"].as_str(), w["payout"].as_f64()),
        (Some("won"), Some(15.0)),
        "{w}"
    );
    // Confirmed, then the cancel rolled back: the voided bet stands as the
    // settlement says, and no bet is told twice.
    feed.write_all(settle(2).as_bytes()).expect("feed");
    feed.write_all(
        format!(
            r#"<rollback_bet_cancel product="1" event_id="{MATCH}" timestamp="4" start_time="{start}"><market id="68" specifiers="total=2.5"/></rollback_bet_cancel>"#
        )
        .as_bytes(),
    )
    .expect("feed");
    let r = ws.next_matching(|f| f["type"] == "bet").await;
    assert_eq!(
        (r["id"].as_str(), r["status"].as_str(), r["payout"].as_f64()),
        (Some("inside"), Some("won"), Some(15.0)),
        "the first bet frame after the confirmation is the rollback's: {r}"
    );
    let metrics = http_get(server.http, "/metrics").1;
    for line in [
        r#"touchline_bet_settlements_total{status="void"} 1"#,
        r#"touchline_bet_settlements_total{status="won"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
}
