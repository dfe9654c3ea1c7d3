//! The operator's pieces in `deploy/`: `promtool` accepts the Prometheus
//! alerting rules; they and the Grafana dashboard parse, are well formed,
//! and name only metrics a real server exports on `GET /metrics`.

use std::collections::BTreeSet;
use std::io::Write as _;

use serde_json::Value;

use crate::support::{Server, http_get, sample};

fn deploy_file(rel: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/").to_owned() + rel;
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `touchline_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("touchline_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Parentheses, brackets and braces balance (a PromQL typo's usual shape).
fn balanced(expr: &str) -> bool {
    let mut open = Vec::new();
    for c in expr.chars() {
        match c {
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(want) {
                    return false;
                }
            }
            _ => {}
        }
    }
    open.is_empty()
}

/// The sample names a server exports: each family of `# TYPE` with the
/// suffixes its type gives it.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(family), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(family.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        }
    }
    names
}

/// `promtool check rules` (Debian's prometheus package; `make promtool`
/// installs it) accepts the alerting rules: YAML, PromQL and templates.
#[test]
fn promtool_accepts_the_alert_rules() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e} (install it with `make promtool`)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool refused the rules: {text}");
    assert!(text.contains("SUCCESS: 8 rules found"), "{text}");
}

#[test]
fn alert_rules_and_dashboard_are_well_formed_and_name_exported_metrics() {
    // A server that has read the feed: a match event and a message it
    // refused (families with labels appear with their first value).
    let server = Server::start(&[]);
    let mut feed = server.feed();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    feed.write_all(b"<no_such_message/>").expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    server.wait_metric("touchline_feed_errors_total", 1.0);
    // The fan-out latency the alert watches is observed per applied event.
    server.wait_metric("touchline_event_to_fanout_seconds_count", 1.0);
    let (code, metrics) = http_get(server.http, "/metrics");
    assert_eq!(code, 200);
    let exported = exported(&metrics);
    assert!(exported.contains("touchline_quarantined_matches"), "{metrics}");

    let mut exprs = Vec::new();
    let rules: Value = serde_yaml_ng::from_str(&deploy_file("prometheus/alerts.yml")).expect("alerts.yml is YAML");
    let groups = rules["groups"].as_array().expect("groups");
    let mut alerts = BTreeSet::new();
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().expect("rules")) {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(alerts.insert(name.to_owned()), "{name} twice");
        assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
        assert!(rule["annotations"]["summary"].is_string(), "{name}: summary");
        exprs.push((name.to_owned(), rule["expr"].as_str().expect("expr").to_owned()));
    }
    // What issue 16 asks the rules to watch.
    for watched in [
        "touchline_quarantined_matches",
        "touchline_store_errors_total",
        "touchline_feed_connections",
        "touchline_producer_up",
        "touchline_ws_resyncs_total",
        "touchline_event_to_fanout_seconds_bucket",
    ] {
        assert!(exprs.iter().any(|(_, e)| e.contains(watched)), "no alert on {watched}");
    }

    let dashboard: Value = serde_json::from_str(&deploy_file("grafana/touchline.json")).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "touchline");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut charts = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        charts += 1;
        let title = panel["title"].as_str().expect("a title");
        assert!(
            panel["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24),
            "{title}: gridPos"
        );
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push((title.to_owned(), target["expr"].as_str().expect("expr").to_owned()));
        }
    }
    assert!(charts >= 10, "{charts} panels");

    for (what, expr) in &exprs {
        assert!(balanced(expr), "{what}: unbalanced: {expr}");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: names no metric: {expr}");
        for name in names {
            assert!(exported.contains(&name), "{what}: {name} is not exported by /metrics");
        }
    }
}
