//! The live odds page in a real headless Chromium, driven over the DevTools
//! protocol (`support::browser`: which browser, and how a missing one fails
//! or is skipped with `TOUCHLINE_SKIP_BROWSER=1`).

use std::io::Write;

use serde_json::{Value, json};

use crate::support::browser::{Page, find_chromium, launch};
use crate::support::{DEADLINE, Server, http_get, sample, simulator};

const ODDS_13: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-market="68"][data-specifiers="total=2.5"][data-outcome="13"]')?.textContent"#;
const ODDS_35: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-market="68"][data-specifiers="total=3.5"][data-outcome="12"]')?.textContent"#;
const ODDS_35_EL: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-market="68"][data-specifiers="total=3.5"][data-outcome="12"]')"#;
const ODDS_13_EL: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-market="68"][data-specifiers="total=2.5"][data-outcome="13"]')"#;
const SCORE: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-role="score"]')?.textContent"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_shows_odds_and_updates_them() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let server = Server::start(&["--admin-token", TOKEN]);
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let (status, html) = http_get(server.http, "/");
    assert_eq!(status, 200);
    assert!(html.contains("<title>Touchline"));

    let browser = launch(&chromium, &format!("http://{}/", server.http));
    let mut page = Page::open(&browser).await;

    page.wait_eval(ODDS_13, json!("Under1.50")).await;
    page.wait_eval(SCORE, json!("0 : 2")).await;
    // The browser offered permessage-deflate and the server took it: every
    // frame below (and the page's own requests, which Chromium compresses)
    // went through it.
    assert_eq!(
        page.eval("socket.extensions").await,
        json!("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // A live update: market 68 total=3.5 outcome 12 moves to 7.0 (the
    // sample's 6.5 edited, so the page must change; outcome 13 left out of
    // the message, so the update's delta carries outcome 12 alone and the
    // page must keep 13), and a goal changes the score.
    let moved = String::from_utf8(sample("uof/messages/odds_change_single_market.xml"))
        .expect("utf8")
        .replace(r#"<outcome id="13" probabilities="0.91985" active="0"/>"#, "")
        .replace(r#"<outcome id="12" odds="6.5""#, r#"<outcome id="12" odds="7.0""#);
    feed.write_all(moved.as_bytes()).expect("feed");
    let goal = String::from_utf8(sample("uof/messages/odds_change_no_markets.xml"))
        .expect("utf8")
        .replace(r#"home_score="0" away_score="2">"#, r#"home_score="1" away_score="2">"#);
    feed.write_all(goal.as_bytes()).expect("feed");
    page.wait_eval(SCORE, json!("1 : 2")).await;
    page.wait_eval(ODDS_35, json!("Over7.00")).await;
    page.wait_eval(
        &ODDS_35.replace(r#"data-outcome="12""#, r#"data-outcome="13""#),
        json!("Under–"),
    )
    .await;
    page.wait_eval(
        r#"document.getElementById("stats").textContent.includes("0 gaps")"#,
        json!(true),
    )
    .await;

    // A person places a bet: click the outcome, set the stake, place.
    page.eval(&format!("{ODDS_35_EL}.click()")).await;
    page.eval(r#"document.getElementById("slip-stake").value = "12.5"; document.getElementById("slip-place").click()"#)
        .await;
    page.wait_eval(
        r#"document.getElementById("slip-result").dataset.status"#,
        json!("accepted"),
    )
    .await;
    page.wait_eval(
        r#"document.getElementById("slip-result").textContent"#,
        json!("accepted at 7.00"),
    )
    .await;

    // The match logic is swapped under the open page: the card names the
    // new version, the connection stays, updates keep coming without a gap.
    page.wait_eval(LOGIC, json!(format!("logic {}", &v1_prefix(&server))))
        .await;
    let auth = format!("Bearer {TOKEN}");
    let v2 = std::fs::read(env!("TOUCHLINE_V2_GUEST")).expect("v2 guest");
    let (code, report) = crate::support::http_post(server.http, "/admin/guest", &[("Authorization", &auth)], &v2);
    assert_eq!(code, 200, "{report}");
    let report: Value = serde_json::from_str(&report).expect("report");
    let v2_prefix = &report["to"].as_str().expect("to")[..8];
    page.wait_eval(LOGIC, json!(format!("logic {v2_prefix}"))).await;
    let seq = page.eval(SEQ).await;
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    page.wait_eval(SEQ, json!(seq.as_u64().expect("seq") + 1)).await;
    page.wait_eval(ODDS_13, json!("Under1.50")).await;
    page.wait_eval(
        r#"document.getElementById("stats").textContent.includes("0 gaps") && document.getElementById("conn").textContent === "live""#,
        json!(true),
    )
    .await;

    page.screenshot_if_asked("page").await;
}

/// The logic version shown on the card of the sample's match.
const LOGIC: &str = r#"document.querySelector('[data-match="sr:match:10927088"] [data-role="logic"]')?.textContent"#;
/// The page's own count of the match's last seq.
const SEQ: &str = r#"matches.get("sr:match:10927088")?.seq"#;
const TOKEN: &str = "page-admin-token-0123456789";

fn v1_prefix(server: &Server) -> String {
    let auth = format!("Bearer {TOKEN}");
    let (_, text) = crate::support::http_request(server.http, "GET", "/admin/guest", &[("Authorization", &auth)], b"");
    let listing: Value = serde_json::from_str(&text).expect("listing");
    listing["active"].as_str().expect("active")[..8].to_owned()
}

/// The producer banner on the sample match's card (`None`: no banner).
const BANNER: &str =
    r#"document.querySelector('[data-match="sr:match:10927088"] [data-role="producers"]')?.textContent ?? null"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_down_shows_a_banner_and_greys_its_markets_until_it_recovers() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let server = Server::start(&["--recovery-min-interval", "1"]);
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let browser = launch(&chromium, &format!("http://{}/", server.http));
    let mut page = Page::open(&browser).await;
    page.wait_eval(ODDS_13, json!("Under1.50")).await;
    page.wait_eval(BANNER, Value::Null).await;
    let greyed = format!("{ODDS_13_EL}.classList.contains('off')");
    page.wait_eval(&greyed, json!(false)).await;

    // The sample's producer (BetPal, 4) drops the subscription.
    let now = touchline_testkit::provider::now_ms();
    feed.write_all(format!(r#"<alive product="4" timestamp="{now}" subscribed="0"/>"#).as_bytes())
        .expect("feed");
    page.wait_eval(
        BANNER,
        json!("producer 4 unavailable (feed unsubscribed): betting suspended"),
    )
    .await;
    page.wait_eval(&greyed, json!(true)).await;

    // Its recovery completes: the banner goes, the markets are bettable.
    touchline_testkit::provider::bring_up(&server.provider, &mut feed, server.http, DEADLINE).expect("recovered");
    page.wait_eval(BANNER, Value::Null).await;
    page.wait_eval(&greyed, json!(false)).await;
}

/// With the simulator's API the server names matches, markets and
/// outcomes (from its fixtures and market descriptions); the page shows
/// the names and keeps the raw ids in the tooltips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_event_market_and_outcome_names_with_raw_ids_in_tooltips() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = simulator(dir.path(), &["--matches", "2"]);
    let api = sim.api_url();
    let server = Server::start_sim(tempfile::tempdir().expect("tempdir"), &sim, &["--api-url", &api]);
    let browser = launch(&chromium, &format!("http://{}/", server.http));
    let mut page = Page::open(&browser).await;

    // A match on the page with its 1x2 market (every simulated match
    // prices it), and that match's fixture as the simulator serves it.
    let id = page
        .wait_some(r#"document.querySelector('[data-role="market"][data-market="1"][data-specifiers=""]')?.closest("[data-match]").dataset.match ?? null"#)
        .await;
    let id = id.as_str().expect("a match id");
    let (code, xml) = http_get(sim.api, &format!("/v1/sports/en/sport_events/{id}/fixture.xml"));
    assert_eq!(code, 200, "{xml}");
    let fixture = touchline::names::Fixture::parse(&xml).expect("the simulator's fixture parses");
    let home = &fixture.home().expect("a home team").name;
    let tournament = fixture.tournament.as_deref().expect("a tournament");

    // [text, title] of the element `selector` finds in the match's card.
    let shown = |selector: &str| {
        format!(r#"(e => e && [e.textContent, e.title])(document.querySelector('[data-match="{id}"] {selector}'))"#)
    };
    let event = page.wait_some(&shown(r#"[data-role="event"]"#)).await;
    assert_eq!(event[1], json!(id), "the event name's tooltip is the match id");
    page.wait_eval(
        &format!("{}?.[0].includes({})", shown(r#"[data-role="event"]"#), json!(home)),
        json!(true),
    )
    .await;
    page.wait_eval(
        &format!(
            "{}?.[0].includes({})",
            shown(r#"[data-role="meta"]"#),
            json!(tournament)
        ),
        json!(true),
    )
    .await;
    // Names from the simulator's descriptions (`sim/reference.rs`): 1x2's
    // outcome 1 is `{$competitor1}`, winning margin's 1350 is
    // `{$competitor1} by 3+`.
    page.wait_eval(
        &shown(r#"[data-role="market"][data-market="1"][data-specifiers=""]"#),
        json!(["1x2", "market 1"]),
    )
    .await;
    page.wait_eval(
        &shown(r#".odds[data-market="1"][data-specifiers=""][data-outcome="1"] .oid"#),
        json!([home, "outcome 1"]),
    )
    .await;
    let margin = r#"[data-market="15"][data-specifiers="variant=sr:winning_margin:3+"]"#;
    page.wait_eval(
        &shown(&format!(r#"[data-role="market"]{margin}"#)),
        json!(["Winning margin", "market 15 · variant=sr:winning_margin:3+"]),
    )
    .await;
    page.wait_eval(
        &shown(&format!(r#".odds{margin}[data-outcome="1350"] .oid"#)),
        json!([format!("{home} by 3+"), "outcome 1350"]),
    )
    .await;
}
