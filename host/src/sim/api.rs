//! The simulated provider's HTTP API (axum): the Unified Odds Feed's
//! recovery endpoint, its market descriptions and fixtures
//! ([`super::reference`]), and the control routes that tests and demos use
//! to inject faults. Handlers only translate HTTP into [`Provider`] calls;
//! the routes are listed in the module header of `sim`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Fault, Producer, Provider};

pub fn routes(provider: Provider) -> axum::Router {
    axum::Router::new()
        .route("/v1/{producer}/recovery/initiate_request", post(initiate_request))
        .route("/control/requests", get(requests))
        .route("/control/fault", post(fault))
        .route("/control/snapshot_complete", post(snapshot_complete))
        .route("/v1/descriptions/en/markets.xml", get(markets))
        .route("/v1/descriptions/en/variants.xml", get(variants))
        .route("/v1/sports/en/sport_events/{id}/fixture.xml", get(fixture))
        .route("/control/fixtures", post(fixture_mode))
        .with_state(provider)
}

/// Serve [`routes`] on `listener` until `shutdown`.
pub async fn serve_api(listener: TcpListener, provider: Provider, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, routes(provider))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[derive(Deserialize)]
struct RecoveryQuery {
    after: Option<i64>,
    request_id: u64,
}

async fn initiate_request(
    State(provider): State<Provider>,
    Path(name): Path<String>,
    query: Result<Query<RecoveryQuery>, QueryRejection>,
) -> Response {
    let Some(producer) = Producer::by_name(&name) else {
        return xml(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("Unknown producer {name}"));
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return xml(StatusCode::BAD_REQUEST, "BAD_REQUEST", &e.body_text()),
    };
    let connections = provider.recover(producer, q.after, q.request_id);
    tracing::info!(
        producer = producer.name,
        after = q.after,
        request_id = q.request_id,
        connections,
        "simulator: recovery requested"
    );
    xml(StatusCode::ACCEPTED, "ACCEPTED", "Request for recovery accepted")
}

/// The provider's answer: `<response response_code="CODE"><action>..`.
fn xml(status: StatusCode, code: &str, action: &str) -> Response {
    let action = action.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><response response_code="{code}"><action>{action}</action></response>"#
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

async fn requests(State(provider): State<Provider>) -> Response {
    Json(provider.requests()).into_response()
}

#[derive(Deserialize)]
struct FaultQuery {
    kind: String,
    product: Option<u32>,
    seconds: Option<u64>,
}

async fn fault(State(provider): State<Provider>, query: Result<Query<FaultQuery>, QueryRejection>) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return refused(&e.body_text()),
    };
    let fault = match Fault::new(&q.kind, q.product, q.seconds) {
        Ok(f) => f,
        Err(e) => return refused(&e.to_string()),
    };
    let connections = provider.fault(fault);
    tracing::info!(?fault, connections, "simulator: fault injected");
    let mut echo = serde_json::to_value(fault).unwrap_or_default();
    echo["connections"] = connections.into();
    Json(echo).into_response()
}

#[derive(Deserialize)]
struct SnapshotQuery {
    product: u32,
    request_id: u64,
}

async fn snapshot_complete(
    State(provider): State<Provider>,
    query: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return refused(&e.body_text()),
    };
    let connections = provider.snapshot_complete(q.product, q.request_id);
    tracing::info!(
        product = q.product,
        request_id = q.request_id,
        connections,
        "simulator: snapshot_complete sent"
    );
    Json(serde_json::json!({"product": q.product, "request_id": q.request_id, "connections": connections}))
        .into_response()
}

async fn markets() -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml")],
        super::reference::markets_xml(),
    )
        .into_response()
}

async fn variants() -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml")],
        super::reference::variants_xml(),
    )
        .into_response()
}

async fn fixture(State(provider): State<Provider>, Path(id): Path<String>) -> Response {
    use super::reference::FixtureMode;
    match provider.fixture_mode() {
        FixtureMode::Up => {}
        FixtureMode::Down => {
            return xml(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "fixtures are down",
            );
        }
        FixtureMode::Slow(d) => tokio::time::sleep(d).await,
    }
    match super::reference::fixture_xml(&id) {
        Some(body) => ([(header::CONTENT_TYPE, "application/xml")], body).into_response(),
        None => xml(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("No fixture for {id}")),
    }
}

#[derive(Deserialize)]
struct FixtureModeQuery {
    /// `up`, `down` or `slow`.
    mode: String,
    /// For `slow`: the delay, ms.
    ms: Option<u64>,
}

/// `POST /control/fixtures?mode=up|down|slow&ms=N`.
async fn fixture_mode(
    State(provider): State<Provider>,
    query: Result<Query<FixtureModeQuery>, QueryRejection>,
) -> Response {
    use super::reference::FixtureMode;
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return refused(&e.body_text()),
    };
    let mode = match (q.mode.as_str(), q.ms) {
        ("up", None) => FixtureMode::Up,
        ("down", None) => FixtureMode::Down,
        ("slow", Some(ms)) if ms <= 600_000 => FixtureMode::Slow(std::time::Duration::from_millis(ms)),
        _ => return refused("mode is up, down, or slow with ms (at most 600000)"),
    };
    provider.set_fixture_mode(mode);
    tracing::info!(?mode, "simulator: fixture endpoint");
    Json(mode).into_response()
}

fn refused(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": reason}))).into_response()
}
