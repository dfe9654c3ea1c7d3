//! [`Provider`]: what the simulator's HTTP API and fault script share with
//! its feed connections. A registry of the open connections (each with a
//! bounded control queue and a drop token), the log of recovery requests,
//! the timed faults still running (a connection opened during one gets the
//! rest of it) and the recoveries asked for while no connection was open.
//! It never touches a socket: a connection drains its own queue between
//! two batches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fault::Fault;
use super::generator::Control;
use super::{Producer, wall_ms};

/// Controls queued per connection. A connection drains its queue every
/// pace tick (5 ms), so a full queue means it has been stuck in a write
/// for a while (its reader is not reading). When full the provider closes
/// that connection rather than let it miss a control: a dropped connection
/// is a fault the server already handles (it reconnects and recovers).
pub const CONTROL_QUEUE: usize = 64;
/// Recovery requests kept for `GET /control/requests`; past it the oldest
/// is forgotten.
pub const REQUEST_LOG: usize = 10_000;
/// Recoveries and snapshot_completes asked for while no feed connection
/// was open (a server that reconnects and asks at once can be ahead of
/// the accept loop), kept for the next connection; past it the oldest is
/// dropped.
pub const HELD_CONTROLS: usize = 16;

/// One recovery request, as `GET /control/requests` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryRequest {
    pub producer: &'static str,
    pub product: u32,
    /// `None`: a full recovery.
    pub after: Option<i64>,
    pub request_id: u64,
    /// Wall-clock ms when it arrived.
    pub at_ms: i64,
}

/// The shared handle (cheap to clone).
#[derive(Clone, Default)]
pub struct Provider {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Cancelled when the first feed connection opens: the fault script's
    /// clock starts there.
    first_connection: CancellationToken,
}

#[derive(Default)]
struct State {
    next_id: u64,
    links: Vec<Link>,
    requests: VecDeque<RecoveryRequest>,
    held: VecDeque<Control>,
    /// Timed faults not over yet (at most one per kind and producer).
    running: Vec<(Fault, Instant)>,
    /// How the fixture endpoint answers.
    fixtures: super::reference::FixtureMode,
}

/// The provider's end of one feed connection.
struct Link {
    id: u64,
    controls: mpsc::Sender<Control>,
    drop: CancellationToken,
}

/// A feed connection's end: its controls and its drop token. Dropping it
/// leaves the registry.
pub struct Connection {
    pub id: u64,
    controls: mpsc::Receiver<Control>,
    drop: CancellationToken,
    provider: Provider,
}

impl Connection {
    /// The next control, when one comes.
    pub async fn next(&mut self) -> Option<Control> {
        self.controls.recv().await
    }

    /// The next control waiting, if any.
    pub fn try_next(&mut self) -> Option<Control> {
        self.controls.try_recv().ok()
    }

    /// Cancelled when the provider closes this connection (`drop` fault,
    /// or a full control queue).
    pub fn dropped(&self) -> &CancellationToken {
        &self.drop
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.provider.lock().links.retain(|l| l.id != self.id);
    }
}

impl Provider {
    /// How the fixture endpoint answers from now on.
    pub fn set_fixture_mode(&self, mode: super::reference::FixtureMode) {
        self.lock().fixtures = mode;
    }

    pub fn fixture_mode(&self) -> super::reference::FixtureMode {
        self.lock().fixtures
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something did, the state is
        // still consistent (every change is a single push or remove).
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a new feed connection. Its queue starts with the rest of
    /// every running timed fault and the controls held for it.
    pub fn connect(&self) -> Connection {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let drop = CancellationToken::new();
        let mut st = self.lock();
        let now = Instant::now();
        st.running.retain(|(_, until)| *until > now);
        let st = &mut *st;
        let running = st
            .running
            .iter()
            .filter_map(|(fault, until)| fault.control(until.duration_since(now)));
        for control in running.chain(st.held.drain(..)) {
            // A fresh queue holds them all: at most two timed kinds per
            // producer plus HELD_CONTROLS, well under CONTROL_QUEUE.
            let _ = tx.try_send(control);
        }
        let id = st.next_id;
        st.next_id += 1;
        st.links.push(Link {
            id,
            controls: tx,
            drop: drop.clone(),
        });
        self.shared.first_connection.cancel();
        Connection {
            id,
            controls: rx,
            drop,
            provider: self.clone(),
        }
    }

    /// Cancelled once the first feed connection has opened.
    pub fn first_connection(&self) -> CancellationToken {
        self.shared.first_connection.clone()
    }

    /// Open feed connections.
    pub fn connections(&self) -> usize {
        self.lock().links.len()
    }

    /// A recovery request: logged, and sent to every connection (or held
    /// for the next). Returns how many connections it reached.
    pub fn recover(&self, producer: Producer, after: Option<i64>, request_id: u64) -> usize {
        let mut st = self.lock();
        if st.requests.len() == REQUEST_LOG {
            st.requests.pop_front();
        }
        st.requests.push_back(RecoveryRequest {
            producer: producer.name,
            product: producer.id,
            after,
            request_id,
            at_ms: wall_ms(),
        });
        let control = Control::Recover {
            product: producer.id,
            request_id,
        };
        send_all(&mut st, &control, true)
    }

    /// A bare snapshot_complete on every connection (or the next).
    pub fn snapshot_complete(&self, product: u32, request_id: u64) -> usize {
        send_all(
            &mut self.lock(),
            &Control::SnapshotComplete { product, request_id },
            true,
        )
    }

    /// Inject a fault; returns how many connections it reached. A timed
    /// fault also reaches connections opened before it ends; a new one of
    /// the same kind and producer replaces it.
    pub fn fault(&self, fault: Fault) -> usize {
        let mut st = self.lock();
        if fault == Fault::Drop {
            for link in &st.links {
                link.drop.cancel();
            }
            return st.links.len();
        }
        if let Some(d) = fault.duration() {
            st.running.retain(|(f, _)| !f.same_window(&fault));
            st.running.push((fault, Instant::now() + d));
        }
        match fault.control(fault.duration().unwrap_or_default()) {
            Some(control) => send_all(&mut st, &control, false),
            None => 0,
        }
    }

    /// Every recovery request still in the log, oldest first.
    pub fn requests(&self) -> Vec<RecoveryRequest> {
        self.lock().requests.iter().cloned().collect()
    }
}

/// Queue `control` on every connection; a connection whose queue is full
/// is closed (see [`CONTROL_QUEUE`]). With no connection reached and
/// `hold`, keep it for the next one.
fn send_all(st: &mut State, control: &Control, hold: bool) -> usize {
    let mut reached = 0;
    st.links.retain(|link| match link.controls.try_send(control.clone()) {
        Ok(()) => {
            reached += 1;
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(
                connection = link.id,
                ?control,
                "simulator: control queue full, closing the feed connection"
            );
            link.drop.cancel();
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
    if reached == 0 && hold {
        if st.held.len() == HELD_CONTROLS {
            st.held.pop_front();
        }
        st.held.push_back(control.clone());
    }
    reached
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sim::{CTRL, LO};

    fn lo() -> Producer {
        Producer::by_id(LO).expect("LO")
    }

    #[tokio::test]
    async fn a_recovery_asked_with_no_connection_waits_for_the_next() {
        let p = Provider::default();
        assert_eq!(p.recover(lo(), Some(5), 7), 0);
        let mut c = p.connect();
        assert_eq!(
            c.try_next(),
            Some(Control::Recover {
                product: LO,
                request_id: 7
            })
        );
        assert_eq!(c.try_next(), None);
        assert_eq!(p.requests()[0].after, Some(5));
        drop(c);
        assert_eq!(p.connections(), 0, "a closed connection leaves the registry");
        let mut d = p.connect();
        assert_eq!(d.try_next(), None, "held once, delivered once");
    }

    #[tokio::test]
    async fn a_connection_that_does_not_drain_its_queue_is_closed() {
        let p = Provider::default();
        let c = p.connect();
        for i in 0..CONTROL_QUEUE as u64 {
            assert_eq!(p.snapshot_complete(LO, i), 1);
        }
        assert!(!c.dropped().is_cancelled());
        p.snapshot_complete(LO, 999);
        assert!(c.dropped().is_cancelled(), "closed rather than miss a control");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_opened_during_a_timed_fault_gets_the_rest_of_it() {
        let p = Provider::default();
        p.fault(Fault::StopAlive {
            product: CTRL,
            seconds: 30,
        });
        p.fault(Fault::Delay {
            product: LO,
            seconds: 20,
        });
        p.fault(Fault::Unsubscribed { product: LO });
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut c = p.connect();
        assert_eq!(
            c.try_next(),
            Some(Control::StopAlive {
                product: CTRL,
                ms: 20_000
            })
        );
        assert_eq!(
            c.try_next(),
            Some(Control::Delay {
                product: LO,
                lag_ms: 20_000,
                ms: 10_000
            }),
            "the whole lag, for the rest of the window"
        );
        assert_eq!(c.try_next(), None, "an instant fault is not replayed");
        tokio::time::sleep(Duration::from_secs(25)).await;
        let mut late = p.connect();
        assert_eq!(late.try_next(), None, "over");
        assert_eq!(p.fault(Fault::Drop), 2);
        assert!(c.dropped().is_cancelled() && late.dropped().is_cancelled());
    }
}
