//! The console's overview: counts by state, the feed, the store, the
//! sessions and the guest versions, from what the server already keeps
//! (its metrics, the store's health, the producer board, the guest
//! registry). Rates are the counters' growth since the previous overview.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

use super::scrape::Scrape;
use crate::http::AppState;
use crate::worker::State;

/// The counters rates are measured against: two baselines, the newer
/// replaced once it is [`RATE_WINDOW`](super::cards::RATE_WINDOW) old, so
/// a rate always spans at least that long however often it is asked.
#[derive(Debug, Default)]
pub struct Rates(Mutex<(Option<Baseline>, Option<Baseline>)>);

/// Counters and when they were read.
type Baseline = (Instant, Scrape);

impl Rates {
    /// The baseline to measure `scrape` against, and the seconds since it.
    fn advance(&self, now: Instant, scrape: &Scrape) -> Option<(f64, Scrape)> {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (older, newer) = &mut *b;
        match newer {
            None => *newer = Some((now, scrape.clone())),
            Some((t, _)) if now.duration_since(*t) >= super::cards::RATE_WINDOW => {
                *older = newer.replace((now, scrape.clone()));
            }
            Some(_) => {}
        }
        older
            .as_ref()
            .map(|(t, s)| (now.duration_since(*t).as_secs_f64(), s.clone()))
    }
}

/// A counter or gauge as the integer it is.
fn count(v: f64) -> Value {
    json!(v.max(0.0).round() as u64)
}

/// `--data`'s size, measured at most every [`DISK_EVERY`] on a blocking
/// thread.
#[derive(Debug, Default)]
pub struct DiskUsage(tokio::sync::Mutex<Option<(Instant, u64)>>);

/// How often `--data` is measured again.
pub const DISK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl DiskUsage {
    pub async fn get(&self, dir: &Path) -> u64 {
        let mut last = self.0.lock().await;
        if let Some((at, bytes)) = *last
            && at.elapsed() < DISK_EVERY
        {
            return bytes;
        }
        let dir = dir.to_owned();
        let bytes = tokio::task::spawn_blocking(move || disk_usage(&dir)).await.unwrap_or(0);
        *last = Some((Instant::now(), bytes));
        bytes
    }
}

pub fn overview(st: &AppState, disk_bytes: u64) -> Value {
    let console = &st.console;
    let now = Instant::now();
    let m = Scrape::parse(&st.metrics.render());
    let before = console.rates.advance(now, &m);
    let rate = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let Some((dt, old)) = &before else { return 0.0 };
        if *dt <= 0.0 {
            return 0.0;
        }
        let (new, old) = match label {
            None => (m.get(name), old.get(name)),
            Some((l, v)) => (
                m.by_label(name, l).get(v).copied().unwrap_or(0.0),
                old.by_label(name, l).get(v).copied().unwrap_or(0.0),
            ),
        };
        ((new - old) / dt).max(0.0)
    };

    let mut counts = serde_json::Map::new();
    let handles = st.router.handles();
    for s in State::ALL.iter().filter(|s| **s != State::Stopped) {
        counts.insert(s.as_str().to_owned(), json!(0));
    }
    for (_, h) in &handles {
        let s = h.state.get().as_str();
        let n = counts.get(s).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(s.to_owned(), json!(n + 1));
    }
    counts.insert("total".to_owned(), json!(handles.len()));

    let kinds = m.by_label("touchline_feed_messages_total", "kind");
    let by_kind: serde_json::Map<String, Value> = kinds
        .iter()
        .map(|(k, v)| {
            let per_s = rate("touchline_feed_messages_total", Some(("kind", k)));
            (k.clone(), json!({"total": count(*v), "per_s": per_s}))
        })
        .collect();
    let dropped_bytes = m.by_label("touchline_feed_dropped_bytes_total", "reason");
    let dropped: serde_json::Map<String, Value> = m
        .by_label("touchline_feed_dropped_messages_total", "reason")
        .into_iter()
        .map(|(r, n)| {
            let bytes = dropped_bytes.get(&r).copied().unwrap_or(0.0);
            (r, json!({"messages": count(n), "bytes": count(bytes)}))
        })
        .collect();
    let messages_total: f64 = kinds.values().sum();
    let messages_per_s: f64 = kinds
        .keys()
        .map(|k| rate("touchline_feed_messages_total", Some(("kind", k))))
        .sum();

    let commits = m.get("touchline_store_commit_seconds_count");
    // Over the time since the previous overview, like the rates (0 when
    // nothing was committed meanwhile).
    let commit_mean_ms = match &before {
        Some((_, old)) => {
            let n = commits - old.get("touchline_store_commit_seconds_count");
            let s = m.get("touchline_store_commit_seconds_sum") - old.get("touchline_store_commit_seconds_sum");
            if n > 0.0 { s / n * 1000.0 } else { 0.0 }
        }
        None => 0.0,
    };
    let mut guests = serde_json::to_value(st.guests.listing()).unwrap_or(Value::Null);
    // Which match runs which version is on every card; the overview
    // keeps the counts only (it goes out every second).
    if let Some(versions) = guests.get_mut("versions").and_then(Value::as_array_mut) {
        for v in versions {
            if let Some(o) = v.as_object_mut() {
                o.remove("match_ids");
            }
        }
    }
    let started = console.started;
    json!({
        "node": {
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": started.1,
            "uptime_s": now.duration_since(started.0).as_secs_f64(),
        },
        "counts": counts,
        "feed": {
            "expected": st.feed_expected,
            "connections": count(m.get("touchline_feed_connections")),
            "bytes_total": count(m.get("touchline_feed_bytes_total")),
            "bytes_per_s": rate("touchline_feed_bytes_total", None),
            "messages_total": count(messages_total),
            "messages_per_s": messages_per_s,
            "by_kind": by_kind,
            "dropped": dropped,
            "rejected": console.rejects.recent(),
            "producers": st.producers.views().to_vec(),
        },
        "store": {
            "status": st.store.health().check().err().unwrap_or_else(|| "ok".to_owned()),
            "queue_depth": count(m.get("touchline_store_queue_depth")),
            "held_ops": count(m.get("touchline_store_held_ops")),
            "commits": count(commits),
            "commit_mean_ms": commit_mean_ms,
            "errors": count(m.get("touchline_store_errors_total")),
            "data_dir": console.data_dir.display().to_string(),
            "disk_bytes": disk_bytes,
        },
        "sessions": {
            "open": count(m.get("touchline_ws_sessions")),
            "slow_cutoffs": count(m.get("touchline_ws_slow_disconnects_total")),
            "resyncs": count(m.get("touchline_ws_resyncs_total")),
            "frames_sent": count(m.get("touchline_ws_frames_sent_total")),
        },
        "guests": guests,
    })
}

/// Bytes of the files under `dir` (0 where unreadable).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
