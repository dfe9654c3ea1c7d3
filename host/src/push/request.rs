//! What a WebSocket client may ask, as JSON text frames (`docs/protocol.md`).
//! Parsing only: [`super::session`] decides what each request does.

use std::collections::HashMap;

use serde::Deserialize;

use crate::worker::Position;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum Request {
    Subscribe {
        matches: Vec<String>,
        /// Where the client left off, per match, to resume without a snapshot.
        #[serde(default)]
        since: HashMap<String, Position>,
    },
    Unsubscribe {
        matches: Vec<String>,
    },
    Bet {
        id: Id,
        #[serde(rename = "match")]
        match_id: String,
        market: Id,
        #[serde(default)]
        specifiers: String,
        outcome: Id,
        odds: f64,
        stake: f64,
    },
}

/// Feed ids come as JSON strings or numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Id {
    Text(String),
    Number(serde_json::Number),
}

impl Id {
    pub(super) fn into_string(self) -> String {
        match self {
            Id::Text(s) => s,
            Id::Number(n) => n.to_string(),
        }
    }
}
