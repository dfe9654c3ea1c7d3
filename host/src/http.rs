//! The HTTP port: live odds page, health, metrics, the WebSocket upgrade and
//! the admin API (heal a match; install, list and roll back guest versions).
//!
//! One listener serves everything a browser or an operator needs. The
//! WebSocket handshake is answered here and the upgraded connection is handed
//! to `tokio-tungstenite` and [`crate::push::session`]. Sessions are capped
//! by a semaphore; past the cap a client gets 503 instead of a session.
//! Connections are taken in, limited and timed by [`crate::listen`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verdict;
use crate::deflate::{self, inflate::Inflating};
use crate::listen::conn::Conn;
use crate::metrics::{Kind, Metrics};
use crate::push;
use crate::router::Router;

const INDEX_HTML: &str = include_str!("web/index.html");

#[derive(Clone)]
pub struct AppState {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// Set once feed and HTTP listeners are bound and the guest is compiled.
    pub ready: Arc<AtomicBool>,
    /// One permit per WebSocket session.
    pub sessions: Arc<Semaphore>,
    /// What each session's client may make it hold or do.
    pub budget: push::Budget,
    /// Longest the upgrade may take once the 101 is answered.
    pub handshake_timeout: std::time::Duration,
    /// Accept `permessage-deflate` when offered (`crate::deflate`).
    pub ws_deflate: bool,
    pub session_tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// `/admin/*` bearer token (`None` disables the admin routes: 404) and
    /// the limit on wrong ones.
    pub auth: Arc<crate::auth::Guard>,
    pub desk: Arc<crate::bets::Desk>,
    pub guests: Arc<crate::guests::Guests>,
    pub producers: crate::producers::Producers,
    pub catalog: crate::reference::Catalog,
    /// Its health is part of readiness.
    pub store: crate::store::Store,
    /// A feed connection is part of readiness when one is configured.
    pub feed_expected: bool,
    /// The operator console's state (`crate::ops`).
    pub console: Arc<crate::ops::Console>,
    /// In a cluster: the cluster's guest version ([`crate::guests::cluster`]).
    pub guest_rollouts: Option<Arc<crate::guests::cluster::Rollouts>>,
    /// The cluster this node is in (`--cluster`); `None`: a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The last `/api/nodes` answer and when it was read.
    pub nodes_view: Arc<tokio::sync::Mutex<Option<(std::time::Instant, crate::cluster::view::ClusterView)>>>,
}

/// How long an `/api/nodes` answer is reused.
pub const NODES_VIEW_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Read buffer per WebSocket session, bytes.
pub const READ_BUFFER: usize = 4096;

/// Largest guest component accepted by `POST /admin/guest`.
pub const MAX_GUEST_BYTES: usize = 64 << 20;

pub fn routes(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/healthz", get(readyz))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .route("/ws", get(websocket))
        .route("/admin/guest", get(list_guests).post(install_guest))
        .route("/admin/guest/rollback", axum::routing::post(rollback_guest))
        .route("/api/bets/{id}", get(bet))
        .route("/api/producers", get(producers))
        .route("/api/nodes", get(nodes))
        .route("/api/reference", get(reference))
        .route("/admin/reference/refresh", axum::routing::post(refresh_reference))
        .merge(crate::ops::routes())
        .with_state(state)
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML)
}

/// Every selected producer: state, reason, since, last alive, the recovery
/// in flight and how long the last one took.
async fn producers(State(st): State<AppState>) -> impl IntoResponse {
    axum::Json(st.producers.views().to_vec())
}

/// The cluster's live nodes and the partitions each holds; 404 on a
/// single node.
async fn nodes(State(st): State<AppState>) -> Response {
    let Some(cluster) = &st.cluster else {
        return (StatusCode::NOT_FOUND, "not in a cluster (start with --cluster)").into_response();
    };
    // Read from the buckets at most once a second, however often asked
    // (each read is a request per partition).
    // Public and read-only: a page served by another node of the cluster
    // reads it too (where to reconnect), so any origin may.
    let any_origin = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    let mut last = st.nodes_view.lock().await;
    if let Some((at, view)) = &*last
        && at.elapsed() < NODES_VIEW_FOR
    {
        return (any_origin, axum::Json(view.clone())).into_response();
    }
    match crate::cluster::view::view(cluster).await {
        Ok(view) => {
            *last = Some((std::time::Instant::now(), view.clone()));
            (any_origin, axum::Json(view)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("reading the cluster: {e}")).into_response(),
    }
}

/// What the market descriptions hold now.
async fn reference(State(st): State<AppState>) -> impl IntoResponse {
    let d = st.catalog.descriptions();
    axum::Json(serde_json::json!({"markets": d.len(), "variants": d.variant_count()}))
}

/// Admin: fetch the market descriptions again now.
async fn refresh_reference(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    match st.catalog.refresh().await {
        Ok(markets) => axum::Json(serde_json::json!({"markets": markets})).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, axum::Json(serde_json::json!({"error": e}))).into_response(),
    }
}

/// Liveness: the process serves HTTP (restart it only if this fails).
async fn livez() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Readiness (also `/healthz`): 200 only while the server can do its job:
/// started and not stopping, the store writing (`store`: `ok` or why not:
/// disk under the reserve, writes failing, a flush stuck) and, when a feed
/// is configured, at least one feed connection (`feed`). 503 otherwise;
/// the JSON body says which.
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let running = st.ready.load(Ordering::Acquire) && !st.shutdown.is_cancelled();
    let store = st.store.health().check();
    let feed = if !st.feed_expected || st.metrics.feed_connections.get() > 0 {
        Ok(())
    } else {
        Err("no feed connection".to_owned())
    };
    // In a cluster a node cut off from NATS applies nothing, relays
    // nothing and takes no bet: its clients are better served elsewhere.
    let cluster = match &st.cluster {
        Some(c) => match c.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("NATS connection {other}")),
        },
        None => Ok(()),
    };
    let ready = running && store.is_ok() && feed.is_ok() && cluster.is_ok();
    let say = |r: &Result<(), String>| r.as_ref().map_or_else(|e| e.clone(), |_| "ok".to_owned());
    let mut body = serde_json::json!({
        "ready": ready,
        "server": if running { "ok" } else { "starting or stopping" },
        "store": say(&store),
        "feed": say(&feed),
    });
    if st.cluster.is_some() {
        body["cluster"] = say(&cluster).into();
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        st.metrics.render(),
    )
}

async fn websocket(State(st): State<AppState>, mut req: Request) -> Response {
    let key = match handshake_key(req.headers()) {
        Ok(k) => k,
        Err(reason) => {
            st.metrics
                .ws_client_errors
                .get_or_create(&Kind { kind: "bad_handshake" })
                .inc();
            return (StatusCode::BAD_REQUEST, reason).into_response();
        }
    };
    let Ok(permit) = st.sessions.clone().try_acquire_owned() else {
        st.metrics
            .ws_client_errors
            .get_or_create(&Kind { kind: "session_limit" })
            .inc();
        return (StatusCode::SERVICE_UNAVAILABLE, "too many sessions").into_response();
    };
    let extensions = req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
    let taken = st
        .ws_deflate
        .then(|| deflate::answer(extensions.iter().filter_map(|v| v.to_str().ok())))
        .flatten();
    let deflate = taken.is_some();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let st2 = st.clone();
    st.session_tasks.spawn(async move {
        let _permit = permit;
        match tokio::time::timeout(st2.handshake_timeout, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                // tungstenite's write buffer keeps its unbounded default
                // (a cap would refuse any frame larger than it, and
                // snapshots have no size bound): the session bounds it by
                // flushing after every batch and every ping, under its
                // write timeout, reading nothing meanwhile.
                let max = st2.budget.max_message_bytes;
                // A 4 KiB read buffer, not tungstenite's 128 KiB: clients
                // send little, and the buffer is zero-filled on every read
                // poll and resident per session (issue 14's first profile
                // cost).
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .max_message_size(Some(max))
                    .max_frame_size(Some(max));
                let Some((conn, read)) = socket(upgraded) else {
                    tracing::error!("websocket upgrade over a connection not accepted by `listen`; closing");
                    return;
                };
                let wire = conn.wire();
                wire.set_deflate(deflate);
                // Compressed client messages are inflated below
                // tungstenite, within the same size budget.
                let (io, read) = Inflating::new(conn, read, deflate, max);
                // Read within the session's read budget, counted on what
                // was inflated.
                let mut io = push::throttle::Throttled::new(io, &st2.budget, st2.metrics.ws_read_throttled.clone());
                io.charge(read.len());
                let ws = WebSocketStream::from_partially_read(io, read, Role::Server, Some(config)).await;
                push::session::run(ws, wire, st2.router, st2.desk, st2.metrics, st2.budget, st2.shutdown).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "websocket upgrade failed"),
            Err(_) => tracing::debug!("websocket upgrade did not complete in time"),
        }
    });
    let mut resp = switching_protocols(&key);
    if let Some(answer) = taken {
        resp.headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(answer));
    }
    resp
}

/// The upgraded connection as accepted by [`crate::listen`] (its socket a
/// `Wire` the session's matches write to directly), and the bytes hyper
/// read past the request head (a client's first frame), copied out: they
/// are a view of hyper's whole read buffer, which would otherwise stay
/// allocated for the session's life.
fn socket(upgraded: hyper::upgrade::Upgraded) -> Option<(Conn, Vec<u8>)> {
    let parts = upgraded.downcast::<TokioIo<Conn>>().ok()?;
    Some((parts.io.into_inner(), parts.read_buf.to_vec()))
}

/// The 101 answering a WebSocket upgrade whose `Sec-WebSocket-Accept` is
/// `key` ([`handshake_key`]).
pub(crate) fn switching_protocols(key: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(key).expect("base64 is a valid header value"),
    );
    resp
}

async fn bet(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    match st.desk.get(&id).await {
        Some(answer) => axum::Json(answer).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "no such bet", "id": id})),
        )
            .into_response(),
    }
}

/// Installed guest versions, which matches run which, the last rollout.
async fn list_guests(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let listing = st.guests.listing();
    let Some(rollouts) = &st.guest_rollouts else {
        return axum::Json(listing).into_response();
    };
    let mut body = serde_json::to_value(listing).unwrap_or_default();
    body["cluster"] = serde_json::to_value(rollouts.view().await).unwrap_or_default();
    axum::Json(body).into_response()
}

/// Install the posted component and roll it out to every match. The token
/// is checked before the body is read, so only an operator can make the
/// server buffer a component.
async fn install_guest(State(st): State<AppState>, req: Request) -> Response {
    let (peer, headers) = (peer_of(req.extensions()), req.headers().clone());
    if let Some(denied) = refusal(&st, &peer, &headers) {
        // Read (and drop) what the client is sending, up to a bound, so it
        // sees the 401 rather than a reset mid-upload.
        drain(req.into_body()).await;
        return denied;
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_GUEST_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            let body = serde_json::json!({
                "error": format!("reading the component (at most {MAX_GUEST_BYTES} bytes): {e}"),
                "kind": "too_large",
            });
            return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response();
        }
    };
    let component = body.to_vec();
    let kept = st.guest_rollouts.as_ref().map(|_| component.clone());
    let result = st.guests.install(&st.router, component).await;
    record_rollout(&st, &peer, &headers, "install_guest", &result);
    published(&st, result, kept).await
}

/// A refused upload is read and dropped up to this many bytes...
const DRAIN_BYTES: usize = 8 << 20;
/// ...for at most this long.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain(body: axum::body::Body) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// Roll every match back to the previous guest version.
async fn rollback_guest(State(st): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    if let Some(denied) = refusal(&st, &peer, &headers) {
        return denied;
    }
    let result = st.guests.rollback(&st.router).await;
    record_rollout(&st, &peer, &headers, "rollback_guest", &result);
    published(&st, result, None).await
}

/// In a cluster, a rollout that did not abort becomes the cluster's version
/// (every node follows); not published, it is answered 502 with the report.
async fn published(
    st: &AppState,
    result: Result<crate::guests::RolloutReport, crate::guests::InstallError>,
    component: Option<Vec<u8>>,
) -> Response {
    let Some(rollouts) = &st.guest_rollouts else {
        return rollout_response(result);
    };
    match rollouts.published(&result, component).await {
        Ok(()) => rollout_response(result),
        Err(e) => {
            tracing::error!(error = %e, "guest installed on this node but not published to the cluster");
            let body = serde_json::json!({
                "error": format!("installed on this node only: not published to the cluster: {e}"),
                "kind": "cluster_unavailable",
                "report": result.ok(),
            });
            (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
        }
    }
}

/// Log a guest install or rollback in the console's activity.
fn record_rollout(
    st: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    action: &'static str,
    result: &Result<crate::guests::RolloutReport, crate::guests::InstallError>,
) {
    use crate::ops::Outcome;
    let (outcome, target, detail) = match result {
        Ok(r) if r.outcome == crate::guests::RolloutOutcome::Aborted => {
            (Outcome::Failed, r.to.clone(), format!("{:?}", r.outcome))
        }
        Ok(r) => (
            Outcome::Ok,
            r.to.clone(),
            format!("{:?}: {} switched", r.outcome, r.switched),
        ),
        Err(e) => (Outcome::Refused, String::new(), e.to_string()),
    };
    st.console.record(peer, headers, action, &target, outcome, &detail);
}

/// 200 with the report when the rollout ran (even partly); 409 when it was
/// aborted (nothing changed) or another one is running; 422 when the
/// component or the canary was refused.
fn rollout_response(result: Result<crate::guests::RolloutReport, crate::guests::InstallError>) -> Response {
    use crate::guests::InstallError;
    match result {
        Ok(report) => {
            let status = if report.outcome == crate::guests::RolloutOutcome::Aborted {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            (status, axum::Json(report)).into_response()
        }
        Err(e) => {
            let status = match &e {
                InstallError::Load(_) | InstallError::Canary(_) => StatusCode::UNPROCESSABLE_ENTITY,
                InstallError::Busy | InstallError::NoPrevious => StatusCode::CONFLICT,
                InstallError::Store(_) | InstallError::Journal(_) | InstallError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            let body = serde_json::json!({"error": e.to_string(), "kind": e.kind()});
            (status, axum::Json(body)).into_response()
        }
    }
}

/// 404 without a configured token (the routes do not exist), 401 with a
/// wrong or missing one, 429 once an address sent too many wrong ones
/// (`auth`).
/// `None`: allowed.
pub(crate) fn refusal(st: &AppState, peer: &Peer, headers: &HeaderMap) -> Option<Response> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match st.auth.check(peer.0, given, std::time::Instant::now()) {
        Verdict::Allowed => None,
        Verdict::NotFound => Some((StatusCode::NOT_FOUND, "not found").into_response()),
        Verdict::Denied => {
            st.metrics.admin_denied.inc();
            Some((StatusCode::UNAUTHORIZED, "bad or missing bearer token").into_response())
        }
        Verdict::Limited(retry) => {
            st.metrics.admin_denied.inc();
            let secs = retry.as_secs().max(1).to_string();
            Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs)],
                    "too many wrong tokens from this address",
                )
                    .into_response(),
            )
        }
    }
}

/// The client's address, as the accept loop saw it (`None` if the request
/// did not come through it).
pub(crate) struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(peer_of(&parts.extensions))
    }
}

fn peer_of(extensions: &axum::http::Extensions) -> Peer {
    Peer(
        extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

/// Check an RFC 6455 upgrade request; returns the Sec-WebSocket-Accept value.
pub(crate) fn handshake_key(h: &HeaderMap) -> Result<String, &'static str> {
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err("expected a WebSocket upgrade request");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err("unsupported Sec-WebSocket-Version (need 13)");
    }
    let key = h.get(header::SEC_WEBSOCKET_KEY).ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// The admin API's client side (`touchline swap`, the benchmark): one
/// request over HTTP/1.1 with the bearer token; the status and the body.
pub async fn admin_request(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/wasm")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("sending {path}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the response")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
