//! The operator console: `GET /ops` (the page) and the admin API behind it
//! (`docs/ops.md`): an overview, every match's card, one match's detail,
//! the activity log, a WebSocket that pushes all of it once a second, and
//! the actions (heal, quarantine, hibernate, wake, replay a dead letter;
//! guest installs and rollbacks are `http`'s routes and logged here too).
//!
//! Nothing here runs per event. The console reads what the server keeps
//! anyway (metrics, the store's parked events, the guest registry, the
//! producer board) and asks workers for their cards between their
//! commands, only while someone watches ([`cards`]).

mod activity;
mod cards;
mod overview;
mod scrape;
mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::http::{AppState, Peer, refusal};
use crate::worker::{Action, Catchup, Command, Refusal};
pub use activity::{Activity, Entry, Outcome};

const OPS_HTML: &str = include_str!("../web/ops.html");

/// The header naming who acts.
pub const OPERATOR_HEADER: &str = "x-touchline-operator";

/// Listings and overviews younger than this are shared: several watchers
/// cost one listing.
pub const SHARE_WITHIN: Duration = Duration::from_millis(500);

/// What the console keeps between requests.
#[derive(Debug)]
pub struct Console {
    pub activity: Activity,
    cards: cards::Cards,
    rates: overview::Rates,
    /// The last listing and overview, shared (see [`SHARE_WITHIN`]); the
    /// locks also make concurrent callers wait for the one in progress.
    last_listing: tokio::sync::Mutex<Option<(Instant, Arc<Vec<cards::Listed>>)>>,
    last_overview: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
    /// `--data`'s size and when it was measured.
    disk: overview::DiskUsage,
    /// Store read errors are logged once a minute.
    store_errors: std::sync::Mutex<crate::store::health::Throttle>,
    /// The feed intake's last rejected messages.
    pub rejects: Arc<crate::feed::Rejects>,
    /// When the server started (monotonic, Unix ms).
    started: (Instant, i64),
    /// `--data`, for its disk usage.
    data_dir: PathBuf,
}

impl Console {
    pub fn new(rejects: Arc<crate::feed::Rejects>, data_dir: PathBuf) -> Console {
        Console {
            activity: Activity::default(),
            cards: cards::Cards::default(),
            rates: overview::Rates::default(),
            last_listing: tokio::sync::Mutex::new(None),
            last_overview: tokio::sync::Mutex::new(None),
            disk: overview::DiskUsage::default(),
            store_errors: std::sync::Mutex::new(crate::store::health::Throttle::new(Duration::from_secs(60))),
            rejects,
            started: (Instant::now(), crate::producers::wall_ms()),
            data_dir,
        }
    }

    /// Record an action taken through the admin API.
    pub(crate) fn record(
        &self,
        peer: &Peer,
        headers: &HeaderMap,
        action: &'static str,
        target: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        let who = activity::who(headers.get(OPERATOR_HEADER).and_then(|v| v.to_str().ok()));
        self.activity.record(Entry {
            at: crate::producers::wall_ms(),
            who,
            from: peer.0.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            action,
            target: target.to_owned(),
            outcome,
            detail: detail.to_owned(),
        });
    }
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/ops", get(page))
        .route("/ops/status", get(status))
        .route("/admin/ops", get(overview_route))
        .route("/admin/ops/matches", get(matches_route))
        .route("/admin/ops/matches/{id}", get(detail_route))
        .route("/admin/ops/ws", get(socket::upgrade))
        .route("/admin/activity", get(activity_route))
        .route("/admin/matches/{id}/heal", post(heal))
        .route("/admin/matches/{id}/quarantine", post(quarantine))
        .route("/admin/matches/{id}/hibernate", post(hibernate))
        .route("/admin/matches/{id}/wake", post(wake))
        .route("/admin/matches/{id}/dead-letters/{n}/replay", post(replay))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Its own origin only, never framed (the token is typed here).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            ),
        ],
        OPS_HTML,
    )
}

/// Public: whether the admin API exists (the page says how to enable it
/// if not). The admin routes' 404 says as much to anyone; asking them
/// without a token would count as a wrong one.
async fn status(State(st): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({"admin_enabled": st.auth.enabled()}))
}

async fn overview_route(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    axum::Json(&*overview(&st, Fresh::Yes).await).into_response()
}

/// Whether a caller takes an overview or listing made up to
/// [`SHARE_WITHIN`] ago (the socket's ticks) or wants one made now (an API
/// call, e.g. right after an action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    Yes,
    Shared,
}

/// The overview.
pub async fn overview(st: &AppState, fresh: Fresh) -> Arc<Value> {
    let mut last = st.console.last_overview.lock().await;
    if let Some((at, v)) = &*last
        && fresh == Fresh::Shared
        && at.elapsed() < SHARE_WITHIN
    {
        return v.clone();
    }
    let disk = st.console.disk.get(&st.console.data_dir).await;
    let v = Arc::new(overview::overview(st, disk));
    *last = Some((Instant::now(), v.clone()));
    v
}

/// Every match's card, sorted by id.
pub async fn listing(st: &AppState, fresh: Fresh) -> Arc<Vec<cards::Listed>> {
    let mut last = st.console.last_listing.lock().await;
    if let Some((at, l)) = &*last
        && fresh == Fresh::Shared
        && at.elapsed() < SHARE_WITHIN
    {
        return l.clone();
    }
    let store = st.store.clone();
    let parked = match tokio::task::spawn_blocking(move || store.parked_counts()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let allowed = st
                .console
                .store_errors
                .lock()
                .map(|mut t| t.allow(std::time::Instant::now()));
            if let Ok(Some(held_back)) = allowed {
                tracing::warn!(error = %e, held_back, "reading parked events for the console");
            }
            Default::default()
        }
        Err(_) => Default::default(),
    };
    let l = Arc::new(st.console.cards.list(&st.router, &parked).await);
    *last = Some((Instant::now(), l.clone()));
    l
}

async fn matches_route(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let matches = listing(&st, Fresh::Yes).await;
    axum::Json(json!({"at": crate::producers::wall_ms(), "matches": &*matches})).into_response()
}

async fn activity_route(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    axum::Json(json!({"entries": st.console.activity.recent()})).into_response()
}

/// Longest a detail waits for its worker.
const DETAIL_WITHIN: Duration = Duration::from_secs(5);

async fn detail_route(State(st): State<AppState>, Path(id): Path<String>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let Some(handle) = st.router.get(&id) else {
        return (StatusCode::NOT_FOUND, format!("no match {id}")).into_response();
    };
    let mailbox = handle.mailbox.len();
    let Some(detail) = crate::router::Router::ask_inspect(handle.clone(), true, DETAIL_WITHIN).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{id} did not answer in time")).into_response();
    };
    // The snapshot a new subscriber would get (wakes a sleeping match).
    let (reply, rx) = tokio::sync::oneshot::channel();
    let snapshot = match handle.mailbox.send(Command::Subscribe { since: None, reply }).await {
        Ok(()) => match tokio::time::timeout(DETAIL_WITHIN, rx).await {
            Ok(Ok(Catchup::Snapshot(frame))) => parse(frame.bytes.as_str()),
            _ => Value::Null,
        },
        Err(_) => Value::Null,
    };
    let store = st.store.clone();
    let key = id.clone();
    let parked = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::store::StoreError>((store.dead_letters(&key)?, store.held(&key)?))
    })
    .await;
    let (dead, held) = match parked {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the store: {e}")).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the store: {e}")).into_response(),
    };
    let (n_dead, n_held) = (dead.len(), held.len());
    let newest = |n: usize| n.saturating_sub(DETAIL_ITEMS);
    let dead: Vec<Value> = dead
        .into_iter()
        .skip(newest(n_dead))
        .map(|k| {
            let (xml, cut) = excerpt(k.raw);
            json!({"index": k.id, "reason": k.item.reason, "after_seq": k.item.after_seq, "xml": xml, "xml_truncated": cut})
        })
        .collect();
    let held: Vec<Value> = held
        .into_iter()
        .skip(newest(n_held))
        .map(|k| {
            let (xml, cut) = excerpt(k.raw);
            json!({"index": k.id, "xml": xml, "xml_truncated": cut})
        })
        .collect();
    let mut card = serde_json::to_value(&detail.card).unwrap_or(Value::Null);
    if let Some(o) = card.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("mailbox".into(), json!(mailbox));
        o.insert("dead_letters".into(), json!(n_dead));
        o.insert("held".into(), json!(n_held));
    }
    let frames: Vec<Value> = detail.frames.iter().map(|f| parse(f.bytes.as_str())).collect();
    let n_bets = detail.bets.len();
    let bets = &detail.bets[newest(n_bets)..];
    axum::Json(json!({
        "card": card,
        "snapshot": snapshot,
        "frames": frames,
        "dead_letters": dead,
        "held": held,
        "bets": bets,
        "totals": {"dead_letters": n_dead, "held": n_held, "bets": n_bets},
    }))
    .into_response()
}

/// Dead letters, held events and bets a detail shows: the newest this many
/// of each (`totals` has the counts).
pub const DETAIL_ITEMS: usize = 50;
/// Bytes of a kept message's XML a detail shows.
pub const XML_BYTES: usize = 16 * 1024;

/// A kept message's XML, cut at [`XML_BYTES`] (lossy UTF-8), and whether
/// it was cut.
fn excerpt(raw: Option<Vec<u8>>) -> (Option<String>, bool) {
    match raw {
        None => (None, false),
        Some(r) => {
            let cut = r.len() > XML_BYTES;
            (
                Some(String::from_utf8_lossy(&r[..r.len().min(XML_BYTES)]).into_owned()),
                cut,
            )
        }
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

async fn heal(State(st): State<AppState>, Path(id): Path<String>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let (outcome, code, text) = match st.router.heal(&id).await {
        Some(report) if report.starts_with("heal failed") => {
            (Outcome::Failed, StatusCode::INTERNAL_SERVER_ERROR, report)
        }
        Some(report) => (Outcome::Ok, StatusCode::OK, report),
        None => (Outcome::Refused, StatusCode::NOT_FOUND, format!("no live match {id}")),
    };
    st.console.record(&peer, &headers, "heal", &id, outcome, &text);
    (code, text).into_response()
}

/// Longest quarantine reason read, bytes.
pub const MAX_REASON_BYTES: usize = 2048;

async fn quarantine(
    State(st): State<AppState>,
    Path(id): Path<String>,
    peer: Peer,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    // The token first: nobody else makes the server read a body.
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let reason = match axum::body::to_bytes(req.into_body(), MAX_REASON_BYTES).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a reason is at most {MAX_REASON_BYTES} bytes"),
            )
                .into_response();
        }
    };
    carry_out(st, id, peer, headers, "quarantine", Action::Quarantine(reason)).await
}

async fn hibernate(State(st): State<AppState>, Path(id): Path<String>, peer: Peer, headers: HeaderMap) -> Response {
    act(st, id, peer, headers, "hibernate", Action::Hibernate).await
}

async fn wake(State(st): State<AppState>, Path(id): Path<String>, peer: Peer, headers: HeaderMap) -> Response {
    act(st, id, peer, headers, "wake", Action::Wake).await
}

async fn replay(
    State(st): State<AppState>,
    Path((id, n)): Path<(String, u64)>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    act(st, id, peer, headers, "replay", Action::Replay(n)).await
}

/// Longest an action waits for its worker (behind its queued events).
pub const ACT_WITHIN: Duration = Duration::from_secs(30);

async fn act(st: AppState, id: String, peer: Peer, headers: HeaderMap, name: &'static str, action: Action) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    carry_out(st, id, peer, headers, name, action).await
}

/// An authorised action: ask the worker, log it in the activity.
async fn carry_out(
    st: AppState,
    id: String,
    peer: Peer,
    headers: HeaderMap,
    name: &'static str,
    action: Action,
) -> Response {
    let answer = tokio::time::timeout(ACT_WITHIN, st.router.operate(&id, action)).await;
    let (outcome, code, text) = match answer {
        Err(_) => (
            Outcome::Failed,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{id} did not answer within {} s (a long mailbox)", ACT_WITHIN.as_secs()),
        ),
        Ok(answer) => match answer {
            Some(Ok(report)) => (Outcome::Ok, StatusCode::OK, report),
            Some(Err(r @ Refusal::NotFound(_))) => (Outcome::Refused, StatusCode::NOT_FOUND, r.to_string()),
            Some(Err(r @ Refusal::Conflict(_))) => (Outcome::Refused, StatusCode::CONFLICT, r.to_string()),
            Some(Err(r @ Refusal::Failed(_))) => (Outcome::Failed, StatusCode::INTERNAL_SERVER_ERROR, r.to_string()),
            None => (Outcome::Refused, StatusCode::NOT_FOUND, format!("no live match {id}")),
        },
    };
    st.console.record(&peer, &headers, name, &id, outcome, &text);
    (code, text).into_response()
}
