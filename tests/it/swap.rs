//! Hot-swapping the match logic of the real binary: v1 → v2 → v1 under a
//! continuous feed with WebSocket clients on every match; refusals of what
//! is not a match worker; the CLI; the active version surviving a
//! restart, and a kill -9 mid-rollout; pruning; pacing. Guests that trap
//! during migration or on their first event, and healing: `swap_failures`.
//! Sleeping matches a rollout passes by: `swap_asleep`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Server, Tracker, Ws, http_request, odds_of, wait_for};

pub(crate) const TOKEN: &str = "swap-admin-token-0123456789";

pub(crate) fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn guest_file(var: &str) -> Vec<u8> {
    std::fs::read(var).unwrap_or_else(|e| panic!("reading {var}: {e}"))
}

pub(crate) fn v2_guest() -> Vec<u8> {
    guest_file(env!("TOUCHLINE_V2_GUEST"))
}

pub(crate) fn faulty_guest() -> Vec<u8> {
    guest_file(env!("TOUCHLINE_FAULTY_GUEST"))
}

fn foreign(name: &str) -> Vec<u8> {
    guest_file(&format!("{}/{name}.wasm", env!("TOUCHLINE_FOREIGN_GUESTS")))
}

/// An admin call with the right token: (status, JSON body).
pub(crate) fn admin(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let auth = bearer();
    let (code, text) = http_request(server.http, method, path, &[("Authorization", &auth)], body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {code} {text:?}: {e}"));
    (code, v)
}

pub(crate) fn install(server: &Server, bytes: &[u8]) -> (u16, Value) {
    admin(server, "POST", "/admin/guest", bytes)
}

pub(crate) fn listing(server: &Server) -> Value {
    let (code, v) = admin(server, "GET", "/admin/guest", b"");
    assert_eq!(code, 200, "{v}");
    v
}

/// Version hash → matches running it.
pub(crate) fn placement(server: &Server) -> BTreeMap<String, Vec<String>> {
    listing(server)["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            let ids = v["match_ids"].as_array().expect("match_ids");
            (
                v["hash"].as_str().expect("hash").to_owned(),
                ids.iter().map(|m| m.as_str().expect("id").to_owned()).collect(),
            )
        })
        .collect()
}

pub(crate) fn active(server: &Server) -> String {
    listing(server)["active"].as_str().expect("active").to_owned()
}

pub(crate) fn odds(event_id: &str, market: u32, odds: f64) -> Vec<u8> {
    format!(
        r#"<odds_change product="1" event_id="{event_id}" timestamp="1"><odds><market id="{market}" status="1"><outcome id="1" odds="{odds:.2}" active="1"/></market></odds></odds_change>"#
    )
    .into_bytes()
}

pub(crate) fn match_id(i: usize) -> String {
    format!("sr:match:{}", 4000 + i)
}

/// What one client saw.
struct Client {
    tracker: Tracker,
    /// Whether the server closed the session.
    closed: bool,
    /// Per match, runs of updates by guest version: (version, updates,
    /// `events_seen` values in order).
    runs: BTreeMap<String, Vec<(String, u64, Vec<u64>)>>,
}

/// Subscribe to `ids` and track every frame until the tracker holds the
/// final seqs (sent on `done` once the feed stopped) or the session closes.
async fn run_client(
    http: std::net::SocketAddr,
    ids: Vec<String>,
    mut done: tokio::sync::watch::Receiver<Option<BTreeMap<String, u64>>>,
) -> Client {
    let mut ws = Ws::connect(http).await;
    ws.send(json!({"op": "subscribe", "matches": ids})).await;
    let mut c = Client {
        tracker: Tracker::default(),
        closed: false,
        runs: BTreeMap::new(),
    };
    let deadline = tokio::time::Instant::now() + 3 * crate::support::DEADLINE;
    loop {
        if let Some(expected) = &*done.borrow()
            && expected
                .iter()
                .all(|(id, n)| c.tracker.matches.get(id).is_some_and(|v| v.seq >= *n))
        {
            return c;
        }
        let msg = tokio::select! {
            m = ws.ws.next() => m,
            _ = done.changed() => continue,
            _ = tokio::time::sleep_until(deadline) => panic!("client timed out"),
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            _ => {
                c.closed = true;
                return c;
            }
        };
        match msg {
            Message::Text(t) => {
                let f: Value = serde_json::from_str(&t).expect("JSON frame");
                if f["type"] == "update" {
                    let version = f["guest_version"].as_str().expect("guest_version").to_owned();
                    let runs = c
                        .runs
                        .entry(f["match"].as_str().expect("match").to_owned())
                        .or_default();
                    if runs.last().is_none_or(|r| r.0 != version) {
                        runs.push((version, 0, Vec::new()));
                    }
                    let run = runs.last_mut().expect("a run");
                    run.1 += 1;
                    run.2.extend(f["delta"]["events_seen"].as_u64());
                }
                c.tracker.apply(&f);
            }
            Message::Close(_) => {
                c.closed = true;
                return c;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_v1_to_v2_and_back_under_load_loses_nothing() {
    const MATCHES: usize = 16;
    const CLIENTS: usize = 3;
    let server = Server::start(&["--admin-token", TOKEN]);
    let ids: Vec<String> = (0..MATCHES).map(match_id).collect();
    let mut feed = server.feed();
    for id in &ids {
        feed.write_all(&odds(id, 1, 1.5)).expect("feed");
    }
    server.wait_metric("touchline_events_applied_total", MATCHES as f64);
    let v1 = active(&server);

    // Clients subscribe to every match, then the feed runs continuously.
    let (done_tx, done_rx) = tokio::sync::watch::channel(None);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(run_client(server.http, ids.clone(), done_rx.clone())))
        .collect();
    wait_for("every client subscribed", || {
        (server.metric("touchline_ws_sessions") >= CLIENTS as f64).then_some(())
    });
    let stop_feed = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop_feed.clone();
        let ids = ids.clone();
        std::thread::spawn(move || {
            let mut sent: BTreeMap<String, u64> = ids.iter().map(|id| (id.clone(), 1)).collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let id = &ids[(n as usize) % ids.len()];
                feed.write_all(&odds(id, 1, 1.5 + (n % 200) as f64 / 100.0))
                    .expect("feed");
                *sent.get_mut(id).expect("known match") += 1;
                n += 1;
                // Pacing, not synchronisation: about 1,000 events/s.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            sent
        })
    };
    let more = |n: usize| {
        let applied = server.metric("touchline_events_applied_total");
        server.wait_metric("touchline_events_applied_total", applied + n as f64);
    };
    more(8 * MATCHES);

    // v1 → v2 while events flow.
    let (code, report) = install(&server, &v2_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    assert_eq!(report["switched"], MATCHES, "{report}");
    assert!(report["canary"]["matches"].as_u64() >= Some(1), "{report}");
    let v2 = report["to"].as_str().expect("to").to_owned();
    assert_ne!(v1, v2);
    assert_eq!(placement(&server).get(&v2).map(Vec::len), Some(MATCHES));
    assert_eq!(active(&server), v2);
    more(8 * MATCHES); // round robin: every match gets events under v2

    // v2 → v1.
    let (code, report) = admin(&server, "POST", "/admin/guest/rollback", b"");
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some(&*v2), Some(&*v1))
    );
    assert_eq!(placement(&server).get(&v1).map(Vec::len), Some(MATCHES));
    assert_eq!(active(&server), v1);
    more(8 * MATCHES);

    // Stop the feed; every client must end with every event, in order.
    stop_feed.store(true, Ordering::Release);
    let sent = feeder.join().expect("feeder");
    done_tx.send(Some(sent.clone())).expect("clients listening");
    for (i, c) in clients.into_iter().enumerate() {
        let c = c.await.expect("client task");
        assert!(!c.closed, "client {i}: the server closed a session during the swaps");
        assert_eq!(c.tracker.gaps, 0, "client {i}: seq gaps");
        for (id, n) in &sent {
            assert_eq!(
                c.tracker.matches[id].seq, *n,
                "client {i}, {id}: every event applied and delivered"
            );
            // Updates came from v1, then v2 (showing its extra state field,
            // counting from the switch), then v1 again (without it).
            let runs = &c.runs[id];
            let versions: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(versions, [&*v1, &*v2, &*v1], "client {i}, {id}");
            let (_, v2_updates, seen) = &runs[1];
            assert_eq!(
                seen.len() as u64,
                *v2_updates,
                "client {i}, {id}: every v2 update has events_seen"
            );
            assert!(
                seen.windows(2).all(|w| w[1] == w[0] + 1) && seen.first() == Some(&1),
                "client {i}, {id}: events_seen counts v2's events: {seen:?}"
            );
            assert!(runs[0].2.is_empty() && runs[2].2.is_empty(), "v1 has no events_seen");
            let upgrades = c
                .tracker
                .statuses
                .iter()
                .filter(|s| s["match"] == *id && s["status"] == "upgraded")
                .count();
            assert_eq!(upgrades, 2, "client {i}, {id}: both switches announced");
        }
    }
    // A fresh subscriber gets the same state the clients built.
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [match_id(0)]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["guest_version"], v1);
    assert_eq!(snap["seq"].as_u64(), Some(sent[&match_id(0)]));
    assert!(snap["state"].get("events_seen").is_none(), "{snap}");
}

/// Serving three matches with one event each, admin token set.
pub(crate) fn serving(extra: &[&str], poison_state_of: Option<&str>) -> (Server, std::net::TcpStream, Vec<String>) {
    let mut args = vec!["--admin-token", TOKEN];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let ids: Vec<String> = (0..3).map(match_id).collect();
    let mut feed = server.feed();
    for id in &ids {
        feed.write_all(&odds(id, 1, 2.0)).expect("feed");
    }
    let mut events = ids.len();
    if let Some(id) = poison_state_of {
        // Market 999004 is harmless to apply, but the fault-injection guest
        // panics when it finds it in a state handed to `migrate`.
        feed.write_all(&odds(id, 999_004, 5.0)).expect("feed");
        events += 1;
    }
    server.wait_metric("touchline_events_applied_total", events as f64);
    (server, feed, ids)
}

/// An event reaches a subscriber as the next seq, produced by `version`.
/// Returns the odds it fed.
pub(crate) async fn still_serving(server: &Server, feed: &mut std::net::TcpStream, id: &str, version: &str) -> f64 {
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [id]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot");
    // Odds that differ from the current ones, so the update carries them.
    let new = odds_of(&snap["state"]["markets"], 1, "", "1").map_or(4.25, |o| o + 0.5);
    feed.write_all(&odds(id, 1, new)).expect("feed");
    let u = ws.next_matching(|f| f["type"] == "update").await;
    assert_eq!(u["seq"].as_u64(), snap["seq"].as_u64().map(|s| s + 1), "{u}");
    assert_eq!(u["guest_version"], version, "{u}");
    assert_eq!(odds_of(&u["delta"]["markets"], 1, "", "1"), Some(new));
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_what_is_not_a_match_worker_and_keeps_serving() {
    let (server, mut feed, ids) = serving(&[], None);
    let v1 = active(&server);
    let cases: [(&str, Vec<u8>, &str, &str); 6] = [
        ("garbage", b"hello, world".to_vec(), "not_wasm", "\\0asm header"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core_module",
            "not a component",
        ),
        (
            "other world",
            foreign("other-world"),
            "missing_export",
            "does not export `touchline:worker/match@0.3.0` (it exports: forecast)",
        ),
        (
            "no migrate",
            foreign("no-migrate"),
            "missing_function",
            "lacks function `migrate`",
        ),
        (
            "extra import",
            foreign("extra-import"),
            "unknown_import",
            "imports `acme:spy/net`, which the host does not provide",
        ),
        (
            "truncated",
            v2_guest()[..4096].to_vec(),
            "invalid",
            "not a valid component",
        ),
    ];
    for (what, bytes, kind, message) in cases {
        let (code, body) = install(&server, &bytes);
        assert_eq!(code, 422, "{what}: {body}");
        assert_eq!(body["kind"], kind, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(message)),
            "{what}: {body}"
        );
    }
    // No effect: one version, still active, every match on it, serving.
    let l = listing(&server);
    assert_eq!(l["versions"].as_array().map(Vec::len), Some(1), "{l}");
    assert_eq!(l["active"], v1);
    assert_eq!(placement(&server)[&v1].len(), ids.len());
    still_serving(&server, &mut feed, &ids[0], &v1).await;
    let (code, body) = admin(&server, "POST", "/admin/guest/rollback", b"");
    assert_eq!((code, body["kind"].as_str()), (409, Some("no_previous")), "{body}");
    let metrics = crate::support::http_get(server.http, "/metrics").1;
    assert!(
        metrics.contains("touchline_guest_installs_total{kind=\"missing_export\"} 1"),
        "{metrics}"
    );

    // The token: missing or wrong is 401 on every admin route, and nothing runs.
    for (method, path) in [
        ("GET", "/admin/guest"),
        ("POST", "/admin/guest"),
        ("POST", "/admin/guest/rollback"),
    ] {
        // A small body: the server answers 401 without reading it.
        let body = if method == "POST" {
            b"\0asm".to_vec()
        } else {
            Vec::new()
        };
        assert_eq!(http_request(server.http, method, path, &[], &body).0, 401, "{path}");
        let wrong = [("Authorization", "Bearer swap-admin-token-0123456780")];
        assert_eq!(http_request(server.http, method, path, &wrong, &body).0, 401, "{path}");
    }
    // A 2 MB upload with a wrong token: the client sees the 401, not a
    // reset (the server reads what it is sent, up to a bound, first).
    let big = vec![0u8; 2 << 20];
    let wrong = [("Authorization", "Bearer swap-admin-token-0123456780")];
    assert_eq!(http_request(server.http, "POST", "/admin/guest", &wrong, &big).0, 401);
    assert_eq!(active(&server), v1);
    assert_eq!(server.metric("touchline_admin_denied_total"), 7.0);
    // The scheme is case-insensitive (RFC 7235).
    let lower = format!("bearer {TOKEN}");
    assert_eq!(
        http_request(server.http, "GET", "/admin/guest", &[("Authorization", &lower)], b"").0,
        200
    );

    // Without a configured token the routes do not exist.
    let bare = Server::start(&[]);
    for (method, path) in [
        ("GET", "/admin/guest"),
        ("POST", "/admin/guest"),
        ("POST", "/admin/guest/rollback"),
    ] {
        assert_eq!(http_request(bare.http, method, path, &[], b"").0, 404, "{path}");
    }
}

/// `touchline swap`, the CLI front of the admin API.
fn cli(server: &Server, token: &str, args: &[&str]) -> (bool, Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchline"))
        .arg("swap")
        .arg("--http")
        .arg(server.http.to_string())
        .args(args)
        .env("TOUCHLINE_ADMIN_TOKEN", token)
        .output()
        .expect("running touchline swap");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
    (out.status.success(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_cli_installs_lists_and_rolls_back() {
    let (server, mut feed, ids) = serving(&[], None);
    let v1 = active(&server);
    let v2_path = env!("TOUCHLINE_V2_GUEST");
    let (ok, report) = cli(&server, TOKEN, &[v2_path]);
    assert!(ok, "{report}");
    assert_eq!(report["outcome"], "complete");
    let v2 = report["to"].as_str().expect("to").to_owned();
    let (ok, l) = cli(&server, TOKEN, &["--list"]);
    assert!(ok && l["active"] == *v2, "{l}");
    still_serving(&server, &mut feed, &ids[0], &v2).await;
    let (ok, report) = cli(&server, TOKEN, &["--rollback"]);
    assert!(ok && report["to"] == *v1, "{report}");
    // Refusals exit non-zero with the server's reason on stdout.
    let (ok, body) = cli(&server, TOKEN, &["/etc/hostname"]);
    assert!(!ok);
    assert_eq!(body["kind"], "not_wasm", "{body}");
    let (ok, _) = cli(&server, "wrong-token-0123456789", &["--list"]);
    assert!(!ok, "a wrong token fails");
    assert_eq!(active(&server), v1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_a_rollout_the_host_loses_nothing() {
    const MATCHES: usize = 40;
    // A long probation window holds the rollout open after the switches:
    // the kill lands before the new version is recorded as active.
    let flags = [
        "--admin-token",
        TOKEN,
        "--rollout-probation-ms",
        "60000",
        "--canary-matches",
        "0",
    ];
    let server = Server::start(&flags);
    let ids: Vec<String> = (0..MATCHES).map(match_id).collect();
    let mut feed = server.feed();
    for (i, id) in ids.iter().enumerate() {
        feed.write_all(&odds(id, 1, 1.5)).expect("feed");
        feed.write_all(&odds(id, 2, 2.0 + i as f64 / 100.0)).expect("feed");
    }
    server.wait_metric("touchline_events_applied_total", 2.0 * MATCHES as f64);
    wait_for("clean marks", || {
        Some(()).filter(|_| server.metric("touchline_unclean_matches") == 0.0)
    });
    let v1 = active(&server);
    // The CLI installs; it fails once the server is killed under it.
    let mut installing = std::process::Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["swap", "--http", &server.http.to_string(), env!("TOUCHLINE_V2_GUEST")])
        .env("TOUCHLINE_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("touchline swap");
    wait_for("every match switched", || {
        let text = crate::support::http_get(server.http, "/metrics").1;
        text.contains(&format!(
            "touchline_match_switches_total{{kind=\"switched\"}} {MATCHES}"
        ))
        .then_some(())
    });
    let data = server.kill9();
    let status = installing.wait().expect("touchline swap exits");
    assert!(!status.success(), "the install never completed");

    // Restarted with a short probation window: re-installing below waits
    // for first events that never come.
    let server = Server::start_in(data, &["--admin-token", TOKEN, "--rollout-probation-ms", "100"]);
    let l = listing(&server);
    assert_eq!(l["active"], *v1, "the rollout never finished: {l}");
    let placed = placement(&server);
    let v2 = placed.keys().find(|v| **v != v1).cloned();
    let on = |v: &Option<String>| v.as_ref().and_then(|v| placed.get(v)).map_or(0, Vec::len);
    assert_eq!(placed.get(&v1).map_or(0, Vec::len) + on(&v2), MATCHES, "{placed:?}");
    // Every match has both its events, whichever version it came back on.
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ids})).await;
    for _ in 0..MATCHES {
        let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
        let i: usize = snap["match"]
            .as_str()
            .and_then(|m| m.strip_prefix("sr:match:"))
            .and_then(|n| n.parse::<usize>().ok())
            .expect("id")
            - 4000;
        assert_eq!(snap["seq"].as_u64(), Some(2), "{snap}");
        assert_eq!(
            odds_of(&snap["state"]["markets"], 2, "", "1"),
            format!("{:.2}", 2.0 + i as f64 / 100.0).parse().ok(),
            "{snap}"
        );
    }
    // Installing v2 again completes the rollout.
    let (code, report) = install(&server, &v2_guest());
    assert_eq!(code, 200, "{report}");
    let v2 = report["to"].as_str().expect("to").to_owned();
    assert_eq!(placement(&server)[&v2].len(), MATCHES);
    assert_eq!(active(&server), v2);
    let mut feed = server.feed();
    still_serving(&server, &mut feed, &ids[7], &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_nothing_runs_are_pruned() {
    let (server, mut feed, ids) = serving(&["--keep-guest-versions", "2"], None);
    let v1 = active(&server);
    let (code, report) = install(&server, &v2_guest());
    assert_eq!(code, 200, "{report}");
    let v2 = report["to"].as_str().expect("to").to_owned();
    let (code, report) = install(&server, &faulty_guest());
    assert_eq!(code, 200, "{report}");
    let faulty = report["to"].as_str().expect("to").to_owned();
    let l = listing(&server);
    let kept: Vec<&str> = l["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["hash"].as_str())
        .collect();
    let mut want = vec![v2.as_str(), faulty.as_str()];
    want.sort();
    assert_eq!(kept, want, "v1 (not active, not previous, unused) is gone: {l}");
    assert!(!kept.contains(&v1.as_str()));
    assert_eq!(server.metric("touchline_guest_versions_installed"), 2.0);
    // The previous version is still there to roll back to.
    let (code, report) = admin(&server, "POST", "/admin/guest/rollback", b"");
    assert_eq!(code, 200, "{report}");
    still_serving(&server, &mut feed, &ids[0], &v2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_pauses_after_every_slice_of_switching_and_still_completes() {
    // A slice of 1 µs: every switch takes longer.
    let (server, mut feed, ids) = serving(&["--rollout-slice-us", "1"], None);
    let (code, report) = install(&server, &v2_guest());
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["outcome"], "complete", "{report}");
    assert_eq!(report["switched"], ids.len(), "{report}");
    // A pause between each two of the 3 switches (none after the last),
    // at least 1 ms each, within the switching time.
    assert_eq!(report["pauses"], ids.len() - 1, "{report}");
    let floor = (ids.len() - 1) as f64 * touchline::guests::ROLLOUT_PAUSE.as_secs_f64() * 1e3;
    let (switch_ms, paused_ms) = (report["switch_ms"].as_f64(), report["paused_ms"].as_f64());
    let (switch_ms, paused_ms) = (switch_ms.expect("switch_ms"), paused_ms.expect("paused_ms"));
    assert!(paused_ms >= floor && switch_ms >= paused_ms, "{report}");
    let v2 = report["to"].as_str().expect("to").to_owned();
    still_serving(&server, &mut feed, &ids[0], &v2).await;
}
