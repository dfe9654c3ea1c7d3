//! Names beside ids, with the simulator as the provider's API: snapshots
//! carry the event's names (from its fixture) and every market's and
//! outcome's (from the market descriptions); a fixture endpoint that is
//! down or slow holds no update back, and the names follow when it answers.

use serde_json::Value;
use touchline::names::Fixture;

use crate::support::{Server, Ws, http_get, simulator, wait_for};

/// The fixture the simulator serves for `event_id`.
fn fixture(event_id: &str) -> Fixture {
    let xml = touchline::sim::reference::fixture_xml(event_id).expect("a simulated match");
    Fixture::parse(&xml).expect("the simulator's fixture parses")
}

/// The number of market descriptions the server holds.
fn described(server: &Server) -> u64 {
    let (code, body) = http_get(server.http, "/api/reference");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).expect("JSON")["markets"]
        .as_u64()
        .expect("a count")
}

/// The name given to market `id` (no specifiers) and to its outcome.
fn market_names<'a>(names: &'a Value, id: u64, outcome: &str) -> Option<(&'a str, &'a str)> {
    let m = names["markets"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id && m["specifiers"] == "")?;
    Some((m["name"].as_str()?, m["outcomes"][outcome].as_str()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_name_the_event_its_markets_and_outcomes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &["--matches", "2"]);
    let api = sim.api_url();
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--api-url", &api]);
    wait_for("descriptions fetched", || Some(described(&server)).filter(|n| *n > 10));
    // Both matches' fixtures fetched (the matches exist once their first event came).
    wait_for("fixtures fetched", || {
        let text = http_get(server.http, "/metrics").1;
        Some(()).filter(|_| crate::support::metric_in(&text, r#"touchline_fixtures_total{outcome="fetched"}"#) >= 2.0)
    });
    let mut ws = Ws::connect(server.http).await;
    ws.send(serde_json::json!({"op": "subscribe", "matches": ["*"]})).await;
    let snap = ws
        .next_matching(|f| f["type"] == "snapshot" && f["state"]["markets"].as_array().is_some_and(|m| !m.is_empty()))
        .await;
    let id = snap["match"].as_str().expect("match id").to_owned();
    // The fixture was fetched, but its worker may take it after the
    // snapshot: then the names frame brings the whole set.
    let names = if snap["names"]["event"].is_string() {
        snap["names"].clone()
    } else {
        ws.next_matching(|f| f["type"] == "names" && f["match"] == id.as_str())
            .await["names"]
            .clone()
    };
    let names = &names;
    let want = fixture(&id);
    let (home, away) = (want.home().expect("home"), want.away().expect("away"));
    assert_eq!(names["home"], home.name.as_str(), "{names}");
    assert_eq!(names["away"], away.name.as_str(), "{names}");
    assert_eq!(names["event"], format!("{} vs. {}", home.name, away.name), "{names}");
    assert_eq!(
        names["tournament"],
        want.tournament.as_deref().expect("tournament"),
        "{names}"
    );
    assert_eq!(names["sport"], "Soccer");
    assert_eq!(names["scheduled"], want.scheduled_ms.expect("scheduled"));
    // Every market of the state is named, with every outcome.
    let markets = snap["state"]["markets"].as_array().expect("markets");
    let named = names["markets"].as_array().expect("market names");
    assert!(named.len() >= markets.len(), "{names}");
    for m in markets {
        let n = named
            .iter()
            .find(|n| n["id"] == m["id"] && n["specifiers"] == m["specifiers"])
            .unwrap_or_else(|| panic!("no name for {m}"));
        for o in m["outcomes"].as_array().expect("outcomes") {
            let oid = o["id"].as_str().expect("outcome id");
            assert!(n["outcomes"][oid].is_string(), "outcome {oid} of {n}");
        }
    }
    // 1x2: the template's name, its outcomes the competitors.
    assert_eq!(
        market_names(names, 1, "1"),
        Some(("1x2", home.name.as_str())),
        "{names}"
    );
    assert_eq!(market_names(names, 1, "3").map(|n| n.1), Some(away.name.as_str()));
    // A handicap line renders its specifier.
    let hcp = named
        .iter()
        .find(|n| n["id"] == 16 && n["specifiers"] == "hcp=-1.5")
        .expect("handicap -1.5 offered");
    assert_eq!(hcp["outcomes"]["1714"], format!("{} (-1.5)", home.name), "{hcp}");
}

/// Updates of one match until `until` holds for a frame of it; how many
/// updates came first.
async fn updates_until(ws: &mut Ws, id: &str, until: impl Fn(&Value) -> bool) -> (usize, Value) {
    let mut updates = 0;
    loop {
        let f = ws.next().await;
        if f["match"] != id {
            continue;
        }
        if until(&f) {
            return (updates, f);
        }
        if f["type"] == "update" {
            updates += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_or_slow_fixture_endpoint_holds_no_update_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &["--matches", "1"]);
    let (code, body) = sim.control("/control/fixtures?mode=down").expect("control");
    assert_eq!(code, 200, "{body}");
    let api = sim.api_url();
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--api-url", &api]);
    wait_for("descriptions fetched", || Some(described(&server)).filter(|n| *n > 10));
    let mut ws = Ws::connect(server.http).await;
    ws.send(serde_json::json!({"op": "subscribe", "matches": ["*"]})).await;
    let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
    let id = snap["match"].as_str().expect("match id").to_owned();
    assert!(snap["names"]["event"].is_null(), "no fixture yet: {}", snap["names"]);
    // The endpoint is down: updates flow while the fetch fails and is retried.
    let metrics = || http_get(server.http, "/metrics").1;
    let (n, _) = updates_until(&mut ws, &id, |_| {
        crate::support::metric_in(&metrics(), r#"touchline_fixtures_total{outcome="failed"}"#) >= 2.0
    })
    .await;
    assert!(n >= 1, "updates arrived while the fixture was down");
    // Slow: each answer takes 3 s (under the 5 s request timeout). The
    // match's updates keep coming meanwhile; then the names follow.
    let (code, body) = sim.control("/control/fixtures?mode=slow&ms=3000").expect("control");
    assert_eq!(code, 200, "{body}");
    let (n, names) = updates_until(&mut ws, &id, |f| f["type"] == "names").await;
    assert!(n >= 3, "only {n} updates while the slow fixture was fetched");
    let want = fixture(&id);
    assert_eq!(
        names["names"]["home"],
        want.home().expect("home").name.as_str(),
        "{names}"
    );
    assert!(
        names["names"]["markets"].as_array().is_some_and(|m| !m.is_empty()),
        "{names}"
    );
    // Later snapshots carry them too.
    let mut late = Ws::connect(server.http).await;
    late.send(serde_json::json!({"op": "subscribe", "matches": [id]})).await;
    let snap = late.next_matching(|f| f["type"] == "snapshot").await;
    assert_eq!(snap["names"]["event"], names["names"]["event"]);
}
