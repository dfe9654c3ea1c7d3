//! The operator console (`/ops`, `docs/ops.md`) in a real headless
//! Chromium (`support::browser`): the login and its refusals, a
//! quarantined match shown with its dead letter and healed from the page,
//! a guest uploaded from the page, a quarantine by hand through the page's
//! confirmation step. The page is driven as a person would (values typed,
//! buttons clicked); what it did is checked on the page and against the
//! server (its admin API, a WebSocket subscriber).

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::browser::{Page, find_chromium, launch};
use crate::support::{Server, Tracker, Ws, http_get, http_request, odds_of, wait_for};

const TOKEN: &str = "ops-admin-token-0123456789";
const SICK: &str = "sr:match:666";
const WELL: &str = "sr:match:777";

/// An odds_change with one market: normal (id 1) or, for the faulty
/// guest, poisonous (999001: a panic).
fn odds(event_id: &str, market: u32, odds: f64) -> String {
    format!(
        r#"<odds_change product="1" event_id="{event_id}" timestamp="1"><odds><market id="{market}" status="1"><outcome id="1" odds="{odds}" active="1"/></market></odds></odds_change>"#
    )
}

/// JS: whether the element `selector` finds is rendered (not `hidden`,
/// not inside something hidden).
fn visible(selector: &str) -> String {
    format!(
        "(e => !!e && e.getClientRects().length > 0)(document.querySelector({}))",
        json!(selector)
    )
}

/// JS: the text of the element `selector` finds (null if none).
fn text(selector: &str) -> String {
    format!("document.querySelector({})?.textContent ?? null", json!(selector))
}

/// JS: click the element `selector` finds; false if there is none.
fn click(selector: &str) -> String {
    format!(
        "(e => {{ if (!e) return false; e.click(); return true; }})(document.querySelector({}))",
        json!(selector)
    )
}

/// JS selector of one cell of a match's row in the supervision table.
fn cell(id: &str, col: &str) -> String {
    format!(r#"#matches tr[data-match="{id}"] [data-col="{col}"]"#)
}

/// Open `/ops` of `server` in a fresh browser; the login form is up.
async fn open_ops(chromium: &str, server: &Server) -> (crate::support::browser::Browser, Page) {
    let browser = launch(chromium, &format!("http://{}/ops", server.http));
    let mut page = Page::open(&browser).await;
    page.wait_eval(&visible("#login"), json!(true)).await;
    (browser, page)
}

/// Type a token and a name into the login form and submit it.
async fn log_in(page: &mut Page, token: &str, operator: &str) {
    let js = format!(
        r#"document.getElementById("login-token").value = {}; document.getElementById("login-operator").value = {}; document.getElementById("login-submit").click(); true"#,
        json!(token),
        json!(operator)
    );
    assert_eq!(page.eval(&js).await, json!(true));
}

/// Log in with the right token and wait for the live view.
async fn log_in_live(page: &mut Page, operator: &str) {
    log_in(page, TOKEN, operator).await;
    page.wait_eval(&visible("#console"), json!(true)).await;
    page.wait_eval(&text("#ops-conn"), json!("live")).await;
}

/// The outcome of the action just started from the page, once it has one:
/// (`data-status`, text of `#action-result`).
async fn action_result(page: &mut Page) -> (String, String) {
    let got = page
        .wait_some(
            r#"(r => r.dataset.status && r.dataset.status !== "pending" ? [r.dataset.status, r.textContent] : null)(document.getElementById("action-result"))"#,
        )
        .await;
    (
        got[0].as_str().expect("status").to_owned(),
        got[1].as_str().expect("text").to_owned(),
    )
}

/// One admin call with the token: (status, body).
fn admin(server: &Server, method: &str, path: &str) -> (u16, String) {
    let bearer = format!("Bearer {TOKEN}");
    http_request(server.http, method, path, &[("Authorization", &bearer)], b"")
}

/// An admin read that must succeed, as JSON.
fn admin_json(server: &Server, path: &str) -> Value {
    let (code, body) = admin(server, "GET", path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// One match's card as the admin API gives it.
fn card(server: &Server, id: &str) -> Value {
    admin_json(server, &format!("/admin/ops/matches/{id}"))["card"].clone()
}

/// Whether the activity log (admin API) has `action` on `target` by `who`.
fn logged(server: &Server, who: &str, action: &str, target: &str) -> bool {
    admin_json(server, "/admin/activity")["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["who"] == who && e["action"] == action && e["target"] == target)
}

/// JS: whether the page's activity list shows an action named like
/// `action` (`docs/ops.md` names the actions by their routes, not their
/// log words) by `who` with `outcome` (on `target`, if given).
fn activity_shown(who: &str, action: &str, target: Option<&str>, outcome: &str) -> String {
    format!(
        r##"[...document.querySelectorAll("#activity [data-activity]")].some(r => {{
            const c = k => r.querySelector(`[data-col="${{k}}"]`)?.textContent;
            return c("who") === {} && c("action")?.includes({}) && ({} === null || c("target") === {}) && c("outcome") === {};
        }})"##,
        json!(who),
        json!(action),
        json!(target),
        json!(target),
        json!(outcome)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_without_a_token_shows_the_login_and_refuses_a_wrong_token() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let server = Server::start(&["--admin-token", TOKEN]);
    let mut feed = server.feed();
    feed.write_all(odds(WELL, 1, 2.0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let (status, html) = http_get(server.http, "/ops");
    assert_eq!(status, 200);
    assert!(html.contains("<title>Touchline"), "{html}");

    // Before any login: the form, nothing else.
    let (_browser, mut page) = open_ops(&chromium, &server).await;
    assert_eq!(page.eval(&visible("#console")).await, json!(false));
    assert_eq!(page.eval(&visible("#admin-disabled")).await, json!(false));
    assert_eq!(page.eval(&text("#login-error")).await, json!(""));

    // A wrong token: refused, said so, and nothing from the API shown.
    let denied = server.metric("touchline_admin_denied_total");
    log_in(&mut page, "wrong-token-0123456789abcdef", "mallory").await;
    page.wait_eval(
        r#"/refused/i.test(document.getElementById("login-error").textContent)"#,
        json!(true),
    )
    .await;
    assert_eq!(
        server.metric("touchline_admin_denied_total"),
        denied + 1.0,
        "the page asked the server once"
    );
    assert_eq!(page.eval(&visible("#login")).await, json!(true));
    assert_eq!(page.eval(&visible("#console")).await, json!(false));
    let shown = r##"[document.querySelectorAll("#matches tbody tr").length, document.querySelectorAll("[data-count]").length,
        document.getElementById("guest-active").textContent, sessionStorage.getItem("touchline.ops.token")]"##;
    assert_eq!(page.eval(shown).await, json!([0, 0, "", null]));

    // The right token: the console, live, with the match; kept for the tab
    // (a reload needs no login); logging out clears it all.
    log_in_live(&mut page, "alice").await;
    page.wait_eval(&text(&cell(WELL, "state")), json!("live")).await;
    page.wait_eval(&text(r#"[data-count="total"]"#), json!("1")).await;
    page.eval("window.beforeReload = true").await;
    page.call("Page.reload", json!({})).await;
    page.wait_eval(
        &format!(
            "!window.beforeReload && {} && {}",
            visible("#console"),
            visible(&cell(WELL, "state"))
        ),
        json!(true),
    )
    .await;
    page.wait_eval(&text("#ops-conn"), json!("live")).await;
    assert_eq!(page.eval(&visible("#login")).await, json!(false));
    assert_eq!(page.eval(&click("#logout")).await, json!(true));
    page.wait_eval(&visible("#login"), json!(true)).await;
    assert_eq!(page.eval(&visible("#console")).await, json!(false));
    assert_eq!(page.eval(shown).await, json!([0, 0, "", null]));

    // Guessing: past 10 wrong tokens a minute the server refuses the
    // address, even the right token, and the page says to wait.
    let mut tries = 1;
    loop {
        assert!(tries <= 12, "still no 429 after {tries} wrong tokens");
        log_in(&mut page, "wrong-token-0123456789abcdef", "mallory").await;
        let said = page
            .wait_some(r#"document.getElementById("login-error").textContent || null"#)
            .await;
        if said.as_str().is_some_and(|s| s.starts_with("Too many wrong tokens")) {
            break;
        }
        tries += 1;
    }
    log_in(&mut page, TOKEN, "alice").await;
    let said = page
        .wait_some(r#"document.getElementById("login-error").textContent || null"#)
        .await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.starts_with("Too many wrong tokens") && s.contains("retry in")),
        "{said}"
    );
    assert_eq!(page.eval(&visible("#console")).await, json!(false));

    // A server without an admin token: the page says how to enable it.
    let bare = Server::start(&[]);
    page.navigate(&format!("http://{}/ops", bare.http)).await;
    page.wait_eval(
        &format!(
            "location.host === {} && document.readyState === 'complete' && {}",
            json!(bare.http.to_string()),
            visible("#login")
        ),
        json!(true),
    )
    .await;
    // Said at once, before anyone types a token...
    page.wait_eval(&visible("#admin-disabled"), json!(true)).await;
    // ...and again after a login attempt.
    log_in(&mut page, TOKEN, "alice").await;
    page.wait_eval(&visible("#admin-disabled"), json!(true)).await;
    let said = page.eval(&text("#admin-disabled")).await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("--admin-token") && s.contains("TOUCHLINE_ADMIN_TOKEN")),
        "{said}"
    );
    assert_eq!(page.eval(&visible("#console")).await, json!(false));
    page.screenshot_if_asked("ops-admin-disabled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_match_is_shown_with_its_dead_letter_and_healed_from_the_page() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let server = Server::start_faulty(&["--admin-token", TOKEN]);
    let mut feed = server.feed();
    feed.write_all(odds(SICK, 1, 2.0).as_bytes()).expect("feed");
    feed.write_all(odds(WELL, 1, 3.0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [SICK]})).await;
    let mut t = Tracker::default();
    t.apply(&ws.next().await);
    let epoch = t.matches[SICK].epoch;
    assert_eq!(t.matches[SICK].seq, 1);

    // Two poison events = four failures > 3 in 5 s: quarantine; the events
    // after it are held, the normal one last.
    let poison = odds(SICK, 999_001, 9.0);
    let held = odds(SICK, 1, 2.7);
    for i in 0..3 {
        feed.write_all(poison.as_bytes()).expect("feed");
        feed.write_all(odds(WELL, 1, 3.0 + f64::from(i) / 10.0).as_bytes())
            .expect("feed");
    }
    feed.write_all(held.as_bytes()).expect("feed");
    server.wait_metric("touchline_quarantined_matches", 1.0);
    while !t.statuses.iter().any(|s| s["status"] == "quarantined") {
        t.apply(&ws.next().await);
    }

    let (_browser, mut page) = open_ops(&chromium, &server).await;
    log_in_live(&mut page, "alice").await;
    page.wait_eval(&text(&cell(SICK, "state")), json!("quarantined")).await;
    page.wait_eval(&text(&cell(WELL, "state")), json!("live")).await;
    page.wait_eval(&text(r#"[data-count="quarantined"]"#), json!("1")).await;
    page.wait_eval(&text(r#"[data-count="live"]"#), json!("1")).await;
    let reason = page.eval(&text(&cell(SICK, "last_error"))).await;
    assert!(
        reason.as_str().is_some_and(|r| r.contains("trap")),
        "the row names the last failure: {reason}"
    );

    // The detail: the dead letter as it arrived, why, what is held.
    assert_eq!(
        page.eval(&click(&format!(r#"#matches tr[data-match="{SICK}"]"#))).await,
        json!(true)
    );
    page.wait_eval(r#"document.getElementById("detail").dataset.match"#, json!(SICK))
        .await;
    let letters = r##"[...document.querySelectorAll("#detail-dead-letters [data-dead-letter]")].map(d =>
        [d.querySelector('[data-role="reason"]')?.textContent, d.querySelector('pre[data-role="xml"]')?.textContent])"##;
    page.wait_eval(&format!("{letters}.length"), json!(1)).await;
    let letter = page.eval(letters).await;
    assert_eq!(letter[0][1], json!(poison), "the poison message exactly as sent");
    assert!(
        letter[0][0].as_str().is_some_and(|r| r.contains("trap")),
        "the reason names the failure: {letter}"
    );
    // Quarantined: a single replay would be refused; the page says to heal.
    assert_eq!(
        page.eval(r#"document.querySelectorAll('#detail-dead-letters button[data-action="replay"]').length"#)
            .await,
        json!(0)
    );
    assert_eq!(
        page.eval(r#"document.querySelector('#detail-dead-letters [data-dead-letter]').textContent.includes("heal the match to replay it")"#)
            .await,
        json!(true)
    );
    let held_shown =
        r#"[...document.querySelectorAll('#detail-held [data-held] pre[data-role="xml"]')].map(p => p.textContent)"#;
    page.wait_eval(&format!("{held_shown}.length"), json!(3)).await;
    assert_eq!(
        page.eval(held_shown).await,
        json!([poison, poison, held]),
        "held in arrival order"
    );
    let state = page
        .wait_some(r#"(t => t ? JSON.parse(t) : null)(document.getElementById("detail-state").textContent)"#)
        .await;
    assert_eq!(
        odds_of(&state["markets"], 1, "", "1"),
        Some(2.0),
        "the last good state: {state}"
    );
    page.screenshot_if_asked("ops-quarantined").await;

    let shown_letters =
        r##"[...document.querySelectorAll("#detail-dead-letters [data-dead-letter]")].map(d => d.dataset.deadLetter)"##;
    let before_heal = page.eval(shown_letters).await;

    // Heal from the page: live again, the held event applied as the next
    // seq of the same epoch, no gap for the subscriber.
    assert_eq!(
        page.eval(&click(r#"#detail button[data-action="heal"]"#)).await,
        json!(true)
    );
    let (status, said) = action_result(&mut page).await;
    assert_eq!(status, "ok", "{said}");
    assert!(said.contains("healthy"), "{said}");
    page.wait_eval(&text(&cell(SICK, "state")), json!("live")).await;
    page.wait_eval(&text(r#"[data-count="quarantined"]"#), json!("0")).await;
    let update = loop {
        let f = ws.next().await;
        t.apply(&f);
        if f["type"] == "update" && f["match"] == SICK {
            break f;
        }
    };
    assert_eq!(update["seq"].as_u64(), Some(2), "{update}");
    assert_eq!(update["epoch"].as_u64(), Some(epoch), "{update}");
    assert_eq!(odds_of(&update["delta"]["markets"], 1, "", "1"), Some(2.7));
    assert_eq!(t.gaps, 0);

    // Who did it, from the page and in the server's log.
    page.wait_eval(&activity_shown("alice", "heal", Some(SICK), "ok"), json!(true))
        .await;
    assert!(logged(&server, "alice", "heal", SICK));

    // Live again, the poison events (still poison) are dead letters that
    // can each be replayed from the page, after a confirmation.
    let replay = r#"#detail-dead-letters button[data-action="replay"]"#;
    // The detail shows the letters parked anew by the heal (new indexes).
    page.wait_eval(
        &format!(
            "(ids => ids.length > 0 && !ids.some(i => {before_heal}.includes(i)))({shown_letters}) && document.querySelectorAll('{replay}').length > 0"
        ),
        json!(true),
    )
    .await;
    assert_eq!(page.eval(&click(replay)).await, json!(true));
    page.wait_eval(&visible(r#"button[data-confirm="replay"]"#), json!(true))
        .await;
    assert_eq!(page.eval(&click(r#"button[data-confirm="replay"]"#)).await, json!(true));
    let (status, said) = action_result(&mut page).await;
    assert_eq!(status, "ok", "{said}");
    assert!(said.contains("failed again"), "{said}");
    page.wait_eval(&activity_shown("alice", "replay", Some(SICK), "ok"), json!(true))
        .await;
    assert_eq!(page.eval(&text(&cell(SICK, "state"))).await, json!("live"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_uploaded_from_the_page_becomes_active_for_every_match() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    // Never hibernated: every match keeps a running instance to switch.
    let server = Server::start(&["--admin-token", TOKEN, "--hibernate-after-ms", "0"]);
    let ids = ["sr:match:1", "sr:match:2", "sr:match:3"];
    let mut feed = server.feed();
    for id in ids {
        feed.write_all(odds(id, 1, 2.0).as_bytes()).expect("feed");
    }
    server.wait_metric("touchline_events_applied_total", 3.0);
    let v1 = admin_json(&server, "/admin/guest")["active"]
        .as_str()
        .expect("active")
        .to_owned();
    let v2_path = Path::new(env!("TOUCHLINE_V2_GUEST"));
    let v2 = touchline::sandbox::content_hash(&std::fs::read(v2_path).expect("v2 guest"));
    assert_ne!(v1, v2);

    let (_browser, mut page) = open_ops(&chromium, &server).await;
    log_in_live(&mut page, "carol").await;
    page.wait_eval(&text("#guest-active"), json!(v1)).await;
    for id in ids {
        page.wait_eval(&text(&cell(id, "version")), json!(&v1[..12])).await;
    }

    // Choose the file, install: nothing is sent before the confirmation.
    page.set_file_input("#guest-file", v2_path).await;
    assert_eq!(page.eval(&click("#guest-install")).await, json!(true));
    page.wait_eval(&visible(r#"button[data-confirm="install"]"#), json!(true))
        .await;
    assert_eq!(
        page.eval(&text(r#"button[data-confirm="install"]"#)).await,
        json!("Confirm install")
    );
    assert_eq!(admin_json(&server, "/admin/guest")["active"], json!(v1));
    assert_eq!(
        page.eval(&click(r#"button[data-confirm="install"]"#)).await,
        json!(true)
    );
    let (status, said) = action_result(&mut page).await;
    assert_eq!(status, "ok", "{said}");
    assert_eq!(
        page.eval(r#"document.querySelector("button[data-confirm]")"#).await,
        Value::Null
    );

    // The server runs v2 for every match, and the page says so.
    assert_eq!(admin_json(&server, "/admin/guest")["active"], json!(v2));
    wait_for("every match's card to name v2", || {
        let listing = admin_json(&server, "/admin/ops/matches");
        let cards = listing["matches"].as_array()?.clone();
        (cards.len() == ids.len() && cards.iter().all(|c| c["version"] == json!(v2))).then_some(())
    });
    page.wait_eval(&text("#guest-active"), json!(v2)).await;
    for id in ids {
        let version = format!(r#"document.querySelector('{}').title"#, cell(id, "version"));
        page.wait_eval(&version, json!(v2)).await;
        page.wait_eval(&text(&cell(id, "version")), json!(&v2[..12])).await;
    }
    page.wait_eval(&activity_shown("carol", "install", None, "ok"), json!(true))
        .await;
    page.screenshot_if_asked("ops-guest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_match_is_quarantined_from_the_page_only_after_the_confirmation() {
    let Some(chromium) = find_chromium() else {
        return;
    };
    let server = Server::start(&["--admin-token", TOKEN, "--hibernate-after-ms", "0"]);
    let (target, other) = ("sr:match:41", "sr:match:42");
    let mut feed = server.feed();
    feed.write_all(odds(target, 1, 2.0).as_bytes()).expect("feed");
    feed.write_all(odds(other, 1, 3.0).as_bytes()).expect("feed");
    server.wait_metric("touchline_events_applied_total", 2.0);

    let (_browser, mut page) = open_ops(&chromium, &server).await;
    log_in_live(&mut page, "bob").await;
    page.wait_eval(&text(&cell(target, "state")), json!("live")).await;
    assert_eq!(
        page.eval(&click(&format!(
            r#"#matches tr[data-match="{target}"] [data-col="id"]"#
        )))
        .await,
        json!(true)
    );
    page.wait_eval(r#"document.getElementById("detail").dataset.match"#, json!(target))
        .await;
    page.eval(r#"document.getElementById("quarantine-reason").value = "odds look wrong"; true"#)
        .await;

    // The first click only asks; cancelling sends nothing.
    assert_eq!(
        page.eval(&click(r#"#detail button[data-action="quarantine"]"#)).await,
        json!(true)
    );
    page.wait_eval(&visible(r#"button[data-confirm="quarantine"]"#), json!(true))
        .await;
    assert_eq!(card(&server, target)["state"], "live");
    assert_eq!(page.eval(&click("#confirm-cancel")).await, json!(true));
    page.wait_eval(r#"document.querySelector("button[data-confirm]")"#, Value::Null)
        .await;
    assert_eq!(card(&server, target)["state"], "live");
    assert!(!logged(&server, "bob", "quarantine", target), "nothing was sent");

    // Asked again and confirmed: quarantined, the other match untouched.
    assert_eq!(
        page.eval(&click(r#"#detail button[data-action="quarantine"]"#)).await,
        json!(true)
    );
    page.wait_eval(&visible(r#"button[data-confirm="quarantine"]"#), json!(true))
        .await;
    assert_eq!(
        page.eval(&click(r#"button[data-confirm="quarantine"]"#)).await,
        json!(true)
    );
    let (status, said) = action_result(&mut page).await;
    assert_eq!(status, "ok", "{said}");
    page.wait_eval(&text(&cell(target, "state")), json!("quarantined"))
        .await;
    page.wait_eval(&text(r#"[data-count="quarantined"]"#), json!("1")).await;
    assert_eq!(page.eval(&text(&cell(other, "state"))).await, json!("live"));
    let c = card(&server, target);
    assert_eq!(c["state"], "quarantined", "{c}");
    assert!(
        c["quarantine_reason"]
            .as_str()
            .is_some_and(|r| r.contains("odds look wrong")),
        "{c}"
    );
    page.wait_eval(&activity_shown("bob", "quarantine", Some(target), "ok"), json!(true))
        .await;

    // Its next event is held, and shown so; heal applies it.
    let next = odds(target, 1, 2.2);
    feed.write_all(next.as_bytes()).expect("feed");
    let held_shown =
        r#"[...document.querySelectorAll('#detail-held [data-held] pre[data-role="xml"]')].map(p => p.textContent)"#;
    page.wait_eval(held_shown, json!([next])).await;
    assert_eq!(
        page.eval(&click(r#"#detail button[data-action="heal"]"#)).await,
        json!(true)
    );
    let (status, said) = action_result(&mut page).await;
    assert_eq!(status, "ok", "{said}");
    page.wait_eval(&text(&cell(target, "state")), json!("live")).await;
    page.wait_eval(&text(&cell(target, "seq")), json!("2")).await;
    page.wait_eval(&format!("{held_shown}.length"), json!(0)).await;
    page.screenshot_if_asked("ops-quarantine-by-hand").await;
}
