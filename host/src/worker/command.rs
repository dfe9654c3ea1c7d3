//! What a worker is asked ([`Command`], through its mailbox) and what it
//! answers: a switch's [`SwitchOutcome`], a subscriber's [`Catchup`] from
//! its [`Position`].

use std::sync::Arc;

use tokio::sync::oneshot;
use touchline_guest::bet::BetRequest;
use touchline_guest::event::MatchEvent;

use super::{Action, Detail, Frame, Outbox, Refusal};
use crate::journal::{BetRecord, JournalError};
use crate::sandbox::GuestVersion;

/// A client's position in a match stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

/// What a worker is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Apply a feed event, routed at `routed` (for
    /// `event_to_fanout_seconds`); `raw` is its feed message as it arrived,
    /// kept only if the event is dead-lettered or held (a shared buffer,
    /// not a copy).
    Event {
        event: MatchEvent,
        routed: std::time::Instant,
        raw: Option<bytes::Bytes>,
        /// In a cluster: the event's `TL_EVENTS` sequence (what a snapshot
        /// taken after it covers).
        position: Option<u64>,
    },
    /// A session subscribes as `generation` of its `outbox`: what it needs
    /// to be current goes into the outbox, then every later frame
    /// ([`super::Fanout::attach`]).
    Attach {
        since: Option<Position>,
        outbox: Arc<Outbox>,
        generation: u64,
    },
    /// Reply with what a subscriber would need to be current (tests and
    /// tools; sessions [`Command::Attach`]).
    Subscribe {
        since: Option<Position>,
        reply: oneshot::Sender<Catchup>,
    },
    /// Operator: lift quarantine and replay dead letters and held events.
    Heal { reply: oneshot::Sender<String> },
    /// Decide a bet against the current state; the reply comes once the
    /// decision is durable (`Err`: it could not be made durable, so it
    /// does not stand).
    Bet {
        request: BetRequest,
        reply: oneshot::Sender<Result<BetRecord, JournalError>>,
    },
    /// Run another guest version from now on (see [`super::switch`]).
    Switch {
        version: GuestVersion,
        /// Go back to the current version if the new one fails on the
        /// first event (rollouts); `false` for rollbacks.
        probation: bool,
        reply: oneshot::Sender<SwitchOutcome>,
    },
    /// A bet's record could not be made durable: forget it (it was
    /// answered as not accepted).
    ForgetBet { id: String },
    /// In a cluster: accepted bets recorded by an earlier owner (or by a
    /// decision that lost to one), to settle from now on; bets already
    /// known are skipped. Their standing is brought up to date at once.
    RestoreBets { records: Vec<BetRecord> },
    /// The operator console asks for the match's card (and, with
    /// `detail`, its recent frames and bets); a sleeping match answers
    /// without waking.
    Inspect {
        detail: bool,
        reply: oneshot::Sender<Detail>,
    },
    /// An operator acts on the match ([`super::operate`]).
    Operate {
        action: Action,
        reply: oneshot::Sender<Result<String, Refusal>>,
    },
}

/// What a [`Command::Switch`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SwitchOutcome {
    /// Running the new version; the switch took this long.
    Switched { seconds: f64 },
    /// Already running it.
    Unchanged,
    /// Was quarantined: switched and replayed what was kept; `healthy`
    /// unless the replay quarantined it again.
    Healed { report: String, healthy: bool },
    /// Still on the old version: the new one failed to take the state.
    Failed(String),
    /// Still on the old version, which could not hand its state over (its
    /// own failure, not the new version's).
    Skipped(String),
}

/// How a subscriber catches up.
#[derive(Debug)]
pub enum Catchup {
    /// The whole state.
    Snapshot(Frame),
    /// The updates it missed (possibly none) after a `resumed` frame: its
    /// epoch is current.
    Missed(Vec<Frame>),
}
