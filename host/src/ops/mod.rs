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

/// What the console keeps between requests.
#[derive(Debug)]
pub struct Console {
    pub activity: Activity,
    cards: cards::Cards,
    rates: overview::Rates,
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
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], OPS_HTML)
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
    axum::Json(overview::overview(&st)).into_response()
}

/// Every match's card.
pub async fn listing(st: &AppState) -> Vec<cards::Listed> {
    let parked = st.store.parked_counts().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "reading parked events for the console");
        Default::default()
    });
    st.console.cards.list(&st.router, &parked).await
}

async fn matches_route(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let matches = listing(&st).await;
    axum::Json(json!({"at": crate::producers::wall_ms(), "matches": matches})).into_response()
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
    let text = |raw: Option<Vec<u8>>| raw.map(|r| String::from_utf8_lossy(&r).into_owned());
    let dead: Vec<Value> = st
        .store
        .dead_letters(&id)
        .unwrap_or_default()
        .into_iter()
        .map(|k| json!({"index": k.id, "reason": k.item.reason, "after_seq": k.item.after_seq, "xml": text(k.raw)}))
        .collect();
    let held: Vec<Value> = st
        .store
        .held(&id)
        .unwrap_or_default()
        .into_iter()
        .map(|k| json!({"index": k.id, "xml": text(k.raw)}))
        .collect();
    let mut card = serde_json::to_value(&detail.card).unwrap_or(Value::Null);
    if let Some(o) = card.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("mailbox".into(), json!(mailbox));
        o.insert("dead_letters".into(), json!(dead.len()));
        o.insert("held".into(), json!(held.len()));
    }
    let frames: Vec<Value> = detail.frames.iter().map(|f| parse(f.bytes.as_str())).collect();
    axum::Json(json!({
        "card": card,
        "snapshot": snapshot,
        "frames": frames,
        "dead_letters": dead,
        "held": held,
        "bets": detail.bets,
    }))
    .into_response()
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

async fn quarantine(
    State(st): State<AppState>,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: String,
) -> Response {
    let reason: String = body.chars().take(512).collect();
    act(st, id, peer, headers, "quarantine", Action::Quarantine(reason)).await
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

async fn act(st: AppState, id: String, peer: Peer, headers: HeaderMap, name: &'static str, action: Action) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let (outcome, code, text) = match st.router.operate(&id, action).await {
        Some(Ok(report)) => (Outcome::Ok, StatusCode::OK, report),
        Some(Err(r @ Refusal::NotFound(_))) => (Outcome::Refused, StatusCode::NOT_FOUND, r.to_string()),
        Some(Err(r @ Refusal::Conflict(_))) => (Outcome::Refused, StatusCode::CONFLICT, r.to_string()),
        Some(Err(r @ Refusal::Failed(_))) => (Outcome::Failed, StatusCode::INTERNAL_SERVER_ERROR, r.to_string()),
        None => (Outcome::Refused, StatusCode::NOT_FOUND, format!("no live match {id}")),
    };
    st.console.record(&peer, &headers, name, &id, outcome, &text);
    (code, text).into_response()
}
