//! Metrics: every counter the server keeps, rendered as Prometheus text.
//!
//! One [`Metrics`] per server, shared by `Arc`. Modules increment; only
//! `http` renders. Labels are closed sets (message kinds, error kinds,
//! failure causes), never ids from the feed, so cardinality stays bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Bounds of the latency histograms, in seconds: from 1 µs up by a
/// factor of 1.25 (80 bounds, to ~45 s: a quantile read from them is the
/// upper bound of its bucket, 25% resolution), with the round values of
/// [`ROUND_BOUNDS`] added (102 bounds in all), so that a quantile can be
/// held against a round target exactly: without them 1 ms fell inside the
/// bucket (808 µs, 1,010 µs], and a p99 of 850 µs read as 1,010 µs, over a
/// 1 ms target.
pub fn latency_buckets() -> Vec<f64> {
    let mut bounds: Vec<f64> = exponential_buckets(1e-6, 1.25, 80).collect();
    bounds.extend(ROUND_BOUNDS);
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    bounds
}

/// 1, 2 and 5 × 10ⁿ s, from 1 µs to 20 s (written as literals: the same
/// f64 a target written the same way is).
const ROUND_BOUNDS: [f64; 23] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0,
    5.0, 10.0, 20.0,
];

/// Free-form label pairs; values come from closed sets of `&'static str`.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

/// A feed message field dropped or read the safe way
/// (`feed::parse::Problem`): the message kind and the attribute's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedProblem {
    pub kind: &'static str,
    pub field: &'static str,
}

/// Why feed bytes were dropped: a framer reason (`feed::frame::FrameError::kind`)
/// or a parser one (`feed::parse::ParseError::kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

/// What became of a fixture ask (`reference::fixtures`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub feed_connections: Gauge,
    pub feed_bytes: Counter,
    pub feed_messages: Family<Kind, Counter>,
    pub feed_errors: Family<Kind, Counter>,
    pub feed_problems: Family<FeedProblem, Counter>,
    pub feed_dropped_messages: Family<Reason, Counter>,
    pub feed_dropped_bytes: Family<Reason, Counter>,
    pub route_errors: Family<Kind, Counter>,
    pub cluster_published: Family<Kind, Counter>,
    pub cluster_consumed: Family<Kind, Counter>,
    pub cluster_frames_dropped: Family<Reason, Counter>,
    pub cluster_partitions_owned: Gauge,
    pub cluster_relays: Gauge,
    pub cluster_relay_resumed: Counter,
    pub cluster_snapshots: Family<Kind, Counter>,
    pub cluster_partition_changes: Family<Kind, Counter>,
    pub feed_alive: Counter,
    pub live_matches: Gauge,
    pub events_applied: Counter,
    pub events_rejected: Counter,
    pub events_held: Counter,
    pub worker_failures: Family<Labels, Counter>,
    pub dead_letters: Counter,
    pub checkpoints: Counter,
    pub feed_behind: Gauge,
    pub quarantined_matches: Gauge,
    pub unclean_matches: Gauge,
    pub instantiate_seconds: Histogram,
    pub event_to_fanout_seconds: Histogram,
    pub recovery_seconds: Histogram,
    pub recovery_cpu_seconds: Histogram,
    pub recovery_runqueue_seconds: Histogram,
    pub recovery_replayed_events: Histogram,
    pub restore_seconds: Histogram,
    pub dirty_barrier_seconds: Histogram,
    pub snapshots_skipped: Counter,
    pub store_queue_depth: Gauge,
    pub store_ops: Counter,
    pub store_errors: Counter,
    pub bet_replays: Counter,
    pub store_held_ops: Gauge,
    pub store_value_bytes: Gauge,
    pub store_value_live_bytes: Gauge,
    pub store_compactions: Counter,
    pub store_commit_seconds: Histogram,
    pub ws_sessions: Gauge,
    pub ws_frames_sent: Counter,
    pub ws_frames_direct: Counter,
    pub ws_client_errors: Family<Kind, Counter>,
    pub ws_resyncs: Counter,
    pub ws_slow_disconnects: Counter,
    pub ws_read_throttled: Counter,
    pub http_connections: Gauge,
    pub http_refused: Family<Kind, Counter>,
    pub http_evicted: Counter,
    pub http_header_timeouts: Counter,
    pub http_accept_errors: Family<Kind, Counter>,
    pub admin_denied: Counter,
    pub hibernated_matches: Gauge,
    pub napping_matches: Gauge,
    pub nap_wake_seconds: Histogram,
    pub bets: Family<Labels, Counter>,
    pub bet_settlements: Family<Labels, Counter>,
    pub bet_decision_seconds: Histogram,
    pub bet_confirm_seconds: Histogram,
    pub wake_seconds: Histogram,
    pub guest_installs: Family<Kind, Counter>,
    pub guest_compile_seconds: Histogram,
    pub guest_canary_seconds: Histogram,
    pub rollouts: Family<Kind, Counter>,
    pub match_switches: Family<Kind, Counter>,
    pub match_switch_seconds: Histogram,
    pub guest_versions_installed: Gauge,
    pub guest_memory_reservation_bytes: Gauge,
    pub producer_up: Family<Labels, Gauge>,
    pub producer_down: Family<Labels, Counter>,
    pub recovery_requests: Family<Labels, Counter>,
    pub producer_recovery_seconds: Histogram,
    pub feed_ignored: Family<Labels, Counter>,
    pub snapshot_complete_ignored: Family<Labels, Counter>,
    pub fixtures: Family<Outcome, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("touchline");
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                r.register($name, $help, m.clone());
                m
            }};
        }
        let m = Metrics {
            feed_connections: reg!("feed_connections", "Open feed connections", Gauge::default()),
            feed_bytes: reg!("feed_bytes", "Bytes read from feed connections", Counter::default()),
            feed_messages: reg!("feed_messages", "Feed messages parsed, by type", Family::default()),
            feed_errors: reg!(
                "feed_errors",
                "Feed bytes or messages rejected, by reason",
                Family::default()
            ),
            feed_problems: reg!(
                "feed_problems",
                "Unreadable optional attributes of feed messages that still applied, by message kind and attribute",
                Family::default()
            ),
            feed_dropped_messages: reg!(
                "feed_dropped_messages",
                "Feed messages dropped (framing or parsing), by reason; for garbage, runs of bytes between messages",
                Family::default()
            ),
            feed_dropped_bytes: reg!(
                "feed_dropped_bytes",
                "Feed bytes dropped (framing or parsing), by reason",
                Family::default()
            ),
            route_errors: reg!(
                "route_errors",
                "Parsed events that could not reach a worker",
                Family::default()
            ),
            cluster_published: reg!(
                "cluster_published",
                "Match events this node published to TL_EVENTS, by kind (new, duplicate: another copy came first)",
                Family::default()
            ),
            cluster_frames_dropped: reg!(
                "cluster_frames_dropped",
                "Frames not published for the other nodes, by reason: queue_full (the publishing queue), no_barrier (before the tenure's barrier), fenced (refused by a later tenure's barrier), tenure_over or gave_up (not stored while the tenure lasted or in 20 s); their relays resynchronise",
                Family::default()
            ),
            cluster_snapshots: reg!(
                "cluster_snapshots",
                "Match snapshots this node kept in JetStream, by kind: stored, fenced (refused by a later tenure's barrier), failed, dropped (queue full; the next covers it)",
                Family::default()
            ),
            cluster_relay_resumed: reg!(
                "cluster_relay_resumed",
                "Sessions a relay resumed at their `since` from the updates it forwarded (the others are sent a snapshot)",
                Counter::default()
            ),
            cluster_relays: reg!(
                "cluster_relays",
                "Relays on this node: stand-ins for matches other nodes run, fed from their frames, while a session of this node wants them",
                Gauge::default()
            ),
            cluster_partitions_owned: reg!(
                "cluster_partitions_owned",
                "Partitions this node holds the lease of now",
                Gauge::default()
            ),
            cluster_partition_changes: reg!(
                "cluster_partition_changes",
                "Partitions this node took (kind=taken) or stopped holding (kind=left: handed over, lost, expired); a partition retaken under a new token counts both",
                Family::default()
            ),
            cluster_consumed: reg!(
                "cluster_consumed",
                "Messages this node read from its partitions in TL_EVENTS, by kind (event: routed to its worker; foreign, undecodable: skipped)",
                Family::default()
            ),
            feed_alive: reg!("feed_alive", "alive heartbeats received", Counter::default()),
            live_matches: reg!("live_matches", "Matches with a running worker", Gauge::default()),
            events_applied: reg!("events_applied", "Events applied by match workers", Counter::default()),
            events_rejected: reg!(
                "events_rejected",
                "Events a guest rejected without trapping",
                Counter::default()
            ),
            events_held: reg!(
                "events_held",
                "Events journaled but not applied (quarantined match)",
                Counter::default()
            ),
            worker_failures: reg!(
                "worker_failures",
                "Guest failures (each one a worker restart), by cause",
                Family::default()
            ),
            dead_letters: reg!("dead_letters", "Poison events kept as dead letters", Counter::default()),
            checkpoints: reg!(
                "checkpoints",
                "States saved in memory along a recovery tail, so that a restart replays only what came after (worker::checkpoint)",
                Counter::default()
            ),
            feed_behind: reg!(
                "feed_behind",
                "1 while the feed connection's last read filled its whole buffer (more was waiting: the server is behind its feed, and workers take no checkpoints)",
                Gauge::default()
            ),
            quarantined_matches: reg!(
                "quarantined_matches",
                "Matches quarantined past the restart intensity",
                Gauge::default()
            ),
            unclean_matches: reg!(
                "unclean_matches",
                "Matches that pushed updates not yet marked durable-and-clean",
                Gauge::default()
            ),
            event_to_fanout_seconds: reg!(
                "event_to_fanout_seconds",
                "From a feed event routed to its match until its update is queued for every subscriber (mailbox wait, guest, serialisation, fan-out); held, rejected or dead-lettered events are not counted",
                Histogram::new(latency_buckets())
            ),
            instantiate_seconds: reg!(
                "instantiate_seconds",
                "Time to create a match worker's store and instance",
                Histogram::new(latency_buckets())
            ),
            recovery_seconds: reg!(
                "recovery_seconds",
                "From a guest failure to the worker serving again (restore + replay)",
                Histogram::new(latency_buckets())
            ),
            recovery_cpu_seconds: reg!(
                "recovery_cpu_seconds",
                "The worker thread's CPU time in recovery_seconds: the restart's own work, without the time the thread waited for a core",
                Histogram::new(latency_buckets())
            ),
            recovery_runqueue_seconds: reg!(
                "recovery_runqueue_seconds",
                "The time in recovery_seconds the worker thread was ready to run but waited for a core (preempted; Linux schedstat, not observed where it cannot be read)",
                Histogram::new(latency_buckets())
            ),
            recovery_replayed_events: reg!(
                "recovery_replayed_events",
                "Events replayed to rebuild a match's state (after its in-memory checkpoint, or its base)",
                Histogram::new(exponential_buckets(1.0, 2.0, 12))
            ),
            restore_seconds: reg!(
                "restore_seconds",
                "Restoring one match from the store at start-up",
                Histogram::new(latency_buckets())
            ),
            dirty_barrier_seconds: reg!(
                "dirty_barrier_seconds",
                "Wait for a durable dirty mark before the first push after a quiet period",
                Histogram::new(latency_buckets())
            ),
            snapshots_skipped: reg!(
                "snapshots_skipped",
                "Snapshots skipped because the store queue was full",
                Counter::default()
            ),
            bet_replays: reg!(
                "bet_replays",
                "Bet requests answered with an earlier request's decision (same id, same bet)",
                Counter::default()
            ),
            store_held_ops: reg!(
                "store_held_ops",
                "Writes the store writer holds while the disk is under its reserve",
                Gauge::default()
            ),
            store_value_bytes: reg!(
                "store_value_bytes",
                "Bytes in the value log's segment files (journal entries and snapshots)",
                Gauge::default()
            ),
            store_value_live_bytes: reg!(
                "store_value_live_bytes",
                "Bytes of the value log the store still points at",
                Gauge::default()
            ),
            store_compactions: reg!(
                "store_compactions",
                "Sparse segments of the value log copied forward",
                Counter::default()
            ),
            store_queue_depth: reg!(
                "store_queue_depth",
                "Ops waiting for the store writer",
                Gauge::default()
            ),
            store_ops: reg!("store_ops", "Ops written to the store", Counter::default()),
            store_errors: reg!(
                "store_errors",
                "Store writes or flushes that failed",
                Counter::default()
            ),
            store_commit_seconds: reg!(
                "store_commit_seconds",
                "Group commit latency: apply a batch and fsync",
                Histogram::new(latency_buckets())
            ),
            ws_sessions: reg!("ws_sessions", "Open WebSocket sessions", Gauge::default()),
            ws_frames_sent: reg!("ws_frames_sent", "Frames sent to WebSocket clients", Counter::default()),
            ws_frames_direct: reg!(
                "ws_frames_direct",
                "Frames a match wrote to a client's socket itself, without waking the session (counted in ws_frames_sent too)",
                Counter::default()
            ),
            ws_client_errors: reg!(
                "ws_client_errors",
                "Bad client frames and requests over a session budget, by reason",
                Family::default()
            ),
            ws_resyncs: reg!(
                "ws_resyncs",
                "Subscriptions resent a snapshot after the client lagged",
                Counter::default()
            ),
            ws_slow_disconnects: reg!(
                "ws_slow_disconnects",
                "Sessions closed for not reading",
                Counter::default()
            ),
            ws_read_throttled: reg!(
                "ws_read_throttled",
                "Reads of a session that overdrew its read budget (--ws-read-bytes-per-sec): each makes the next read wait until the debt is repaid",
                Counter::default()
            ),
            http_connections: reg!(
                "http_connections",
                "Open HTTP connections, WebSocket sessions included",
                Gauge::default()
            ),
            http_refused: reg!(
                "http_refused",
                "HTTP connections closed as they were accepted, by reason (per_ip, full)",
                Family::default()
            ),
            http_evicted: reg!(
                "http_evicted",
                "HTTP connections waiting for a request closed to make room for a new one",
                Counter::default()
            ),
            http_header_timeouts: reg!(
                "http_header_timeouts",
                "HTTP connections closed for not sending a whole request head in time",
                Counter::default()
            ),
            http_accept_errors: reg!(
                "http_accept_errors",
                "Failed accepts on the HTTP port, by kind (descriptors, other)",
                Family::default()
            ),
            admin_denied: reg!(
                "admin_denied",
                "Admin requests refused for a bad token",
                Counter::default()
            ),
            bets: reg!("bets", "Bets by decision and reason", Family::default()),
            bet_settlements: reg!(
                "bet_settlements",
                "Accepted bets settled, voided or reopened, by new status",
                Family::default()
            ),
            bet_decision_seconds: reg!(
                "bet_decision_seconds",
                "Time for a worker to decide a bet (guest call)",
                Histogram::new(latency_buckets())
            ),
            bet_confirm_seconds: reg!(
                "bet_confirm_seconds",
                "From a bet request to its durable answer",
                Histogram::new(latency_buckets())
            ),
            hibernated_matches: reg!(
                "hibernated_matches",
                "Idle matches holding no instance",
                Gauge::default()
            ),
            napping_matches: reg!(
                "napping_matches",
                "Live matches idle long enough to have given their instance back (counted live)",
                Gauge::default()
            ),
            nap_wake_seconds: reg!(
                "nap_wake_seconds",
                "Restoring a napping match from its in-memory checkpoint (instantiate + restore)",
                Histogram::new(latency_buckets())
            ),
            wake_seconds: reg!(
                "wake_seconds",
                "Restoring a hibernated match (instantiate + restore + replay)",
                Histogram::new(latency_buckets())
            ),
            guest_installs: reg!(
                "guest_installs",
                "Guest versions offered for installation, by outcome or refusal reason",
                Family::default()
            ),
            guest_compile_seconds: reg!(
                "guest_compile_seconds",
                "Compiling and checking a new guest component",
                Histogram::new(exponential_buckets(1e-3, 1.25, 50))
            ),
            guest_canary_seconds: reg!(
                "guest_canary_seconds",
                "Replaying recent journal entries through a new guest in scratch stores",
                Histogram::new(exponential_buckets(1e-4, 1.25, 60))
            ),
            rollouts: reg!(
                "rollouts",
                "Guest rollouts and rollbacks, by outcome",
                Family::default()
            ),
            match_switches: reg!(
                "match_switches",
                "Per-match guest switches, by outcome",
                Family::default()
            ),
            match_switch_seconds: reg!(
                "match_switch_seconds",
                "One match's switch: save state, instantiate the new version, migrate, snapshot",
                Histogram::new(latency_buckets())
            ),
            guest_versions_installed: reg!(
                "guest_versions_installed",
                "Guest versions installed (kept in the store)",
                Gauge::default()
            ),
            guest_memory_reservation_bytes: reg!(
                "guest_memory_reservation_bytes",
                "Address space each guest memory reserves: 4 GiB when the guests run without bounds checks, else the memory cap",
                Gauge::default()
            ),
            producer_up: reg!(
                "producer_up",
                "1 while a producer is up (its odds may be bet on), by product",
                Family::default()
            ),
            producer_down: reg!(
                "producer_down",
                "Times a producer went down, by product and reason",
                Family::default()
            ),
            recovery_requests: reg!(
                "recovery_requests",
                "Recovery requests sent to the provider, by product",
                Family::default()
            ),
            producer_recovery_seconds: reg!(
                "producer_recovery_seconds",
                "From a producer's recovery request to its snapshot_complete",
                Histogram::new(exponential_buckets(1e-3, 1.5, 40))
            ),
            feed_ignored: reg!(
                "feed_ignored",
                "Feed messages of producers this deployment does not use, by product",
                Family::default()
            ),
            fixtures: reg!(
                "fixtures",
                "Fixture asks by outcome: fetched, stored (read from the store), failed (a fetch, retried), refused (queue or waiting set full)",
                Family::default()
            ),
            snapshot_complete_ignored: reg!(
                "snapshot_complete_ignored",
                "snapshot_complete messages that changed nothing (another request, no recovery in flight), by product",
                Family::default()
            ),
            registry: r,
        };
        m.zero_known_labels();
        m
    }

    /// Families whose labels are known in advance start at 0, so they are
    /// exported before their first event and a `rate()` over them (the
    /// alert rules, the dashboard) has a series from the start.
    fn zero_known_labels(&self) {
        for cause in ["trap", "deadline", "memory"] {
            let _ = self
                .worker_failures
                .get_or_create(&vec![("cause".to_owned(), cause.to_owned())]);
        }
        let _ = self.bets.get_or_create(&vec![
            ("decision".to_owned(), "accepted".to_owned()),
            ("reason".to_owned(), "none".to_owned()),
        ]);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_rise_by_at_most_a_quarter_and_hold_the_round_targets() {
        let b = latency_buckets();
        assert_eq!(b.len(), 102);
        assert!(b.windows(2).all(|w| w[0] < w[1] && w[1] <= w[0] * 1.25 * (1.0 + 1e-9)));
        for target in [200e-6, 1e-3, 50e-3, 500e-3] {
            assert!(b.contains(&target), "{target} s is a bound");
        }
        // A p99 of 850 µs reads as 1 ms, not as the 1,010 µs bound above it.
        let m = Metrics::new();
        for _ in 0..100 {
            m.wake_seconds.observe(850e-6);
        }
        let text = m.render();
        assert_eq!(
            touchline_testkit::metrics::quantile(&text, "touchline_wake_seconds", 0.99),
            Some(1e-3)
        );
    }
}
