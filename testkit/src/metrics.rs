//! The one reader of the server's Prometheus text (`GET /metrics`) for the
//! tests and the bench. Pure: it reads text it is given and does no IO.

/// A `/metrics` scrape.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// See [`value`].
    pub fn value(&self, name: &str) -> f64 {
        value(&self.0, name)
    }

    /// See [`quantile`].
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        quantile(&self.0, name, q)
    }
}

/// Sum of a metric over its label sets, 0 if absent. `name` may end inside
/// the label set (`touchline_bets_total{decision="accepted"`) to sum only
/// the samples whose labels start that way.
pub fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // Not `sum()`: an empty f64 sum is -0.0, which prints as "-0".
        .fold(0.0, |a, b| a + b)
}

/// Quantile `q` of an unlabelled histogram from its cumulative buckets: the
/// upper bound of the bucket holding it, so the resolution is the bucket
/// factor (1.25 for Touchline's histograms, whose bounds include the round
/// values 1, 2 and 5 × 10ⁿ s: `touchline::metrics::latency_buckets`).
/// `None` if it has no samples.
pub fn quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|r| {
            let (le, rest) = r.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    const TEXT: &str = r#"# HELP touchline_events_applied_total Events applied.
# TYPE touchline_events_applied_total counter
touchline_events_applied_total 42
touchline_events_applied_total_extra 1000
touchline_bets_total{decision="accepted",reason="ok"} 5
touchline_bets_total{decision="rejected",reason="odds_changed"} 2
touchline_bets_total{decision="rejected",reason="stake"} 1
touchline_quarantined_matches{version="a"} 3
touchline_live_matches 7.5
touchline_commit_seconds_sum 0.5
touchline_commit_seconds_count 10
touchline_commit_seconds_bucket{le="0.001"} 2
touchline_commit_seconds_bucket{le="0.01"} 9
touchline_commit_seconds_bucket{le="0.1"} 10
touchline_commit_seconds_bucket{le="+Inf"} 10
touchline_empty_seconds_bucket{le="1.0"} 0
touchline_empty_seconds_bucket{le="+Inf"} 0
"#;

    fn check(name: &str, expected: f64) {
        assert_eq!(super::value(TEXT, name), expected, "{name}");
    }

    #[test]
    fn values_by_name_and_labels() {
        check("touchline_events_applied_total", 42.0);
        check("touchline_live_matches", 7.5);
        check("touchline_bets_total", 8.0);
        check(r#"touchline_bets_total{decision="rejected""#, 3.0);
        check(r#"touchline_bets_total{decision="rejected",reason="stake""#, 1.0);
        check(r#"touchline_quarantined_matches{version="a""#, 3.0);
        check("touchline_absent", 0.0);
        check("touchline_events", 0.0);
        check("touchline_commit_seconds_count", 10.0);
    }

    #[test]
    fn histogram_quantiles_are_bucket_upper_bounds() {
        let q = |name: &str, q: f64| super::quantile(TEXT, name, q);
        assert_eq!(q("touchline_commit_seconds", 0.2), Some(0.001));
        assert_eq!(q("touchline_commit_seconds", 0.5), Some(0.01));
        assert_eq!(q("touchline_commit_seconds", 0.99), Some(0.1));
        assert_eq!(q("touchline_empty_seconds", 0.5), None);
        assert_eq!(q("touchline_absent_seconds", 0.5), None);
    }
}
