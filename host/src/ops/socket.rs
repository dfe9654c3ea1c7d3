//! The console's live view: `GET /admin/ops/ws`, a WebSocket that pushes
//! the overview, every card and the activity once a second.
//!
//! A browser cannot set headers on a WebSocket, so the client's first
//! message carries the token (`{"token": "...", "operator": "..."}`,
//! within [`AUTH_WITHIN`]); a wrong one is answered `denied`, closed with
//! 1008 and counted against the address like a wrong header. Each tick is
//! written before the next is built, under [`WRITE_WITHIN`]: a client that
//! does not read is cut off, nothing queues for it. The socket holds a
//! session permit like any other.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::auth::Verdict;
use crate::http::{AppState, Peer, handshake_key, switching_protocols};

/// The first message must arrive within this long.
pub const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// One tick's write must complete within this long.
pub const WRITE_WITHIN: Duration = Duration::from_secs(10);
/// How often a tick goes out.
pub const TICK: Duration = Duration::from_secs(1);
/// Largest client message read (the login).
const MAX_CLIENT_MESSAGE: usize = 4096;

pub(super) async fn upgrade(State(st): State<AppState>, peer: Peer, mut req: Request) -> Response {
    if !st.auth.enabled() {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let key = match handshake_key(req.headers()) {
        Ok(k) => k,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let Ok(permit) = st.sessions.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many sessions").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let st2 = st.clone();
    st.session_tasks.spawn(async move {
        let _permit = permit;
        if let Ok(Ok(upgraded)) = tokio::time::timeout(st2.handshake_timeout, on_upgrade).await {
            let config = WebSocketConfig::default()
                .read_buffer_size(crate::http::READ_BUFFER)
                .max_message_size(Some(MAX_CLIENT_MESSAGE))
                .max_frame_size(Some(MAX_CLIENT_MESSAGE));
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
            serve(ws, st2, peer).await;
        }
    });
    switching_protocols(&key)
}

/// Cards one tick carries at most (the page shows fewer).
pub const TICK_CARDS: usize = 1000;

/// What the client wants listed: `{"filter": "id substring", "state":
/// "quarantined"}` (either may be empty), sent any time after the login.
#[derive(Debug, Default, serde::Deserialize)]
struct View {
    #[serde(default)]
    filter: String,
    #[serde(default)]
    state: String,
}

impl View {
    /// The cards matching, troubled ones first (quarantined, restarting,
    /// healing, probation), then live, then hibernated, by id within each;
    /// at most [`TICK_CARDS`]. Also how many matched.
    fn select<'a>(&self, all: &'a [super::cards::Listed]) -> (Vec<&'a super::cards::Listed>, usize) {
        let rank = |s: &str| match s {
            "quarantined" => 0,
            "restarting" | "healing" | "probation" => 1,
            "live" => 2,
            _ => 3,
        };
        let filter = self.filter.to_lowercase();
        let mut chosen: Vec<&super::cards::Listed> = all
            .iter()
            .filter(|c| filter.is_empty() || c.id.to_lowercase().contains(&filter))
            .filter(|c| self.state.is_empty() || c.card.state == self.state)
            .collect();
        let matched = chosen.len();
        chosen.sort_by(|a, b| {
            rank(a.card.state)
                .cmp(&rank(b.card.state))
                .then_with(|| a.id.cmp(&b.id))
        });
        chosen.truncate(TICK_CARDS);
        (chosen, matched)
    }
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
    #[serde(default)]
    operator: Option<String>,
}

async fn serve<S>(mut ws: WebSocketStream<S>, st: AppState, peer: Peer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let login = match tokio::time::timeout(AUTH_WITHIN, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Login>(&t).ok(),
        _ => None,
    };
    let verdict = st.auth.check(
        peer.0,
        login.as_ref().map(|l| format!("Bearer {}", l.token)).as_deref(),
        Instant::now(),
    );
    if verdict != Verdict::Allowed {
        st.metrics.admin_denied.inc();
        let reason = match verdict {
            Verdict::Limited(_) => "too many wrong tokens from this address",
            _ => "bad or missing token",
        };
        let denied = json!({"type": "denied", "reason": reason}).to_string();
        let _ = tokio::time::timeout(WRITE_WITHIN, ws.send(Message::text(denied))).await;
        let close = CloseFrame {
            code: CloseCode::Policy,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(WRITE_WITHIN, ws.close(Some(close))).await;
        return;
    }
    let who = super::activity::who(login.as_ref().and_then(|l| l.operator.as_deref()));
    tracing::info!(target: "touchline::ops", who, from = ?peer.0, "console attached");
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut view = View::default();
    loop {
        tokio::select! {
            _ = st.shutdown.cancelled() => break,
            _ = ticks.tick() => {
                let all = super::listing(&st, super::Fresh::Shared).await;
                let (matches, shown) = view.select(&all);
                let tick = json!({
                    "type": "tick",
                    "at": crate::producers::wall_ms(),
                    "overview": &*super::overview(&st, super::Fresh::Shared).await,
                    "matches": matches,
                    "matches_total": all.len(),
                    "matches_shown": shown,
                    "activity": st.console.activity.recent(),
                });
                match tokio::time::timeout(WRITE_WITHIN, ws.send(Message::text(tick.to_string()))).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<View>(&t) {
                        view = v;
                        // Answer the new filter at once.
                        ticks.reset_immediately();
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(WRITE_WITHIN, ws.close(None)).await;
}
