//! The live odds page in a real headless Chromium, driven over the DevTools
//! protocol with the same WebSocket client the other tests use.
//!
//! The browser is `TOUCHLINE_CHROMIUM` if set, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH`. Without one the test
//! fails, saying how to install it (`make browser`), unless
//! `TOUCHLINE_SKIP_BROWSER=1` says to skip it on purpose.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, Server, http_get, sample, simulator};

/// Browser names looked up on `PATH` when `TOUCHLINE_CHROMIUM` is not set.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The Chromium to drive; `None` only when `TOUCHLINE_SKIP_BROWSER=1`.
/// Panics when there is none, so the page is never left untested by accident.
fn find_chromium() -> Option<String> {
    if let Ok(path) = std::env::var("TOUCHLINE_CHROMIUM") {
        return Some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| BROWSERS.iter().map(move |b| dir.join(b)))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return Some(p.to_string_lossy().into_owned());
    }
    if std::env::var("TOUCHLINE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("page test skipped: TOUCHLINE_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "the page test needs Chromium and found none (TOUCHLINE_CHROMIUM is unset; no {} on PATH).\n\
         Install it with `make browser` (or `apt-get install chromium`), or point TOUCHLINE_CHROMIUM at one.\n\
         To skip this test on purpose, set TOUCHLINE_SKIP_BROWSER=1.",
        BROWSERS.join(", ")
    );
}

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: std::net::SocketAddr,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(chromium: &str, url: &str) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let devtools = loop {
        let line = lines
            .next()
            .expect("chromium exited before DevTools came up")
            .expect("stderr");
        if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
            let addr = rest.split('/').next().expect("host:port");
            break addr.parse().expect("DevTools address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Browser {
        child,
        _profile: profile,
        devtools,
    }
}

struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Page {
    /// The DevTools session of the browser's page.
    async fn open(browser: &Browser) -> Page {
        let (_, list) = http_get(browser.devtools, "/json/list");
        let targets: Value = serde_json::from_str(&list).expect("target list");
        let url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("cdp connect");
        Page { ws, next_id: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("cdp send");
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("cdp reply")
                .expect("open")
                .expect("ok");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("cdp json");
                if v["id"] == id {
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}))
            .await["result"]["value"]
            .clone()
    }

    /// Evaluate `expr` until it returns something other than null, within
    /// the deadline, and return that.
    async fn wait_some(&mut self, expr: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let got = self.eval(expr).await;
            if !got.is_null() {
                return got;
            }
            assert!(start.elapsed() < DEADLINE, "page: `{expr}` stays null");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Evaluate `expr` until it returns `want`, within the deadline.
    async fn wait_eval(&mut self, expr: &str, want: Value) {
        let start = std::time::Instant::now();
        loop {
            let got = self.eval(expr).await;
            if got == want {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "page: `{expr}` is {got}, want {want}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

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

    if let Ok(dir) = std::env::var("TOUCHLINE_SCREENSHOT_DIR") {
        let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = shot["data"].as_str().expect("png data");
        let bytes = base64::engine::general_purpose::STANDARD.decode(png).expect("base64");
        std::fs::File::create(std::path::Path::new(&dir).join("page.png"))
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write png");
    }
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
