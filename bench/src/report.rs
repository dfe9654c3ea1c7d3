//! What a run leaves behind: the table printed at the end, the machine and
//! revision it ran on, and the latency plot (issue 14's targets are in
//! [`crate::targets`]). Pure formatting of (and
//! arithmetic on) the report JSON and the clients' histograms; no measuring
//! here.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::peer::NAME;
use crate::targets::{met, targets_table};

/// The machine, and the version of the server binary measured.
pub fn machine(server: &Path) -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    let mem_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_bytes": mem_kib.map(|k| k * 1024),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "touchline_version": server_version(server),
    })
}

/// `touchline --version` is `touchline X.Y.Z`.
fn server_version(server: &Path) -> Value {
    std::process::Command::new(server)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().nth(1).map(|v| json!(v))
        })
        .unwrap_or(Value::Null)
}

pub fn git_revision() -> Value {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or(Value::Null, |o| json!(String::from_utf8_lossy(&o.stdout).trim()))
}

/// Seconds shown in µs (histogram bucket upper bounds, 25% resolution).
fn us(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |x| format!("{:.0} µs", x * 1e6))
}

pub fn table(r: &Value) -> String {
    let mut t = String::new();
    let f = fixed;
    let _ = writeln!(
        t,
        "\nTouchline bench ({} mode, seed {}, git {})",
        r["mode"].as_str().unwrap_or("?"),
        r["seed"],
        r["git_revision"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        t,
        "machine: {} cpus, {}",
        r["machine"]["cpus"],
        r["machine"]["cpu_model"].as_str().unwrap_or("?")
    );
    let p = &r["parse"];
    let _ = writeln!(
        t,
        "\n1. parse limit (framer + parser, in memory): {} msg/s, {} MB/s (mean message {} B)",
        f(&p["messages_per_s"]),
        f(&p["mb_per_s"]),
        f(&p["message_bytes"]["mean"])
    );
    let _ = writeln!(
        t,
        "\n2. pipeline (real server over TCP, no clients)\n{:>8} {:>20} {:>12} {:>10} {:>12} {:>14} {:>14}",
        "matches", "variant", "events/s", "MB/s", "cpu s", "store ops/s", "written B/ev"
    );
    for row in r["pipeline"].as_array().into_iter().flatten() {
        let x = &row["result"];
        let _ = writeln!(
            t,
            "{:>8} {:>20} {:>12} {:>10} {:>12} {:>14} {:>14}",
            row["matches"],
            row["variant"].as_str().unwrap_or(""),
            f(&x["events_per_s"]),
            f(&x["mb_per_s"]),
            f(&x["server_cpu_s"]),
            f(&x["store_ops_per_s"]),
            f(&x["written_bytes_per_event"])
        );
        if row["parse_around"].is_array() {
            let _ = writeln!(
                t,
                "{:>8} {:>20} parse limit right before / after: {} / {} msg/s",
                "",
                "",
                f(&row["parse_around"][0]),
                f(&row["parse_around"][1])
            );
        }
    }
    let _ = writeln!(
        t,
        "   (pipeline_over_parse_N: over the mean of the parse limits around the Wasm run)"
    );
    for (k, v) in r["pipeline_ratios"].as_object().into_iter().flatten() {
        let _ = writeln!(t, "   {k}: {}", f(v));
    }
    fanout_table(&mut t, r);
    let d = &r["density"];
    let _ = writeln!(
        t,
        "\n4. density: {} matches tracked, all hibernated: {} MB of RSS; with {} of them live and fed: {} MB; per hibernated match {} B (target {} B), per live match (on a server of their own) {} B (target {} B); wake p50/p99 {} / {} (target p99 <= {}, a histogram bound) over {} wakes; instantiate p50/p99 {} / {}",
        d["matches"],
        f(&(d["rss_hibernated_bytes"].as_f64().map(|b| b / 1e6).into())),
        d["live_matches"],
        f(&(d["rss_with_live_bytes"].as_f64().map(|b| b / 1e6).into())),
        f(&d["rss_per_hibernated_match_bytes"]),
        f(&d["rss_per_hibernated_match_target_bytes"]),
        f(&d["rss_per_live_match_bytes"]),
        f(&d["rss_per_live_match_target_bytes"]),
        us(&d["wake_s"]["p50"]),
        us(&d["wake_s"]["p99"]),
        us(&d["wake_p99_target_s"]),
        d["wake_s"]["count"],
        us(&d["instantiate_s"]["p50"]),
        us(&d["instantiate_s"]["p99"]),
    );
    let _ = writeln!(
        t,
        "   of the live ones, napping while their RSS was read: {}–{}; waking from a nap p50/p99 {} / {}",
        d["napping_while_measured"]["min"],
        d["napping_while_measured"]["max"],
        us(&d["nap_wake_s"]["p50"]),
        us(&d["nap_wake_s"]["p99"]),
    );
    let a = &d["live_alone"];
    let mb = |v: &Value| f(&(v.as_f64().map(|b| b / 1e6).into()));
    let _ = writeln!(
        t,
        "   live alone (store cache {} MiB): {} then {} matches live, RSS {} then {} MB (readings {}–{} and {}–{} MB) over {} MB idle: {} B per live match over idle; napping {}–{}; page tables (not in the RSS) {} then {} MB, {} B per live match; PSS (shared pages counted once) {} B per live match",
        a["store_cache_mib"],
        a["half"]["awake"],
        a["all"]["awake"],
        mb(&a["half"]["rss_bytes"]),
        mb(&a["all"]["rss_bytes"]),
        mb(&a["half"]["rss_range_bytes"][0]),
        mb(&a["half"]["rss_range_bytes"][1]),
        mb(&a["all"]["rss_range_bytes"][0]),
        mb(&a["all"]["rss_range_bytes"][1]),
        mb(&a["rss_idle_bytes"]),
        f(&a["rss_over_idle_per_live_match_bytes"]),
        a["all"]["napping_while_measured"]["min"],
        a["all"]["napping_while_measured"]["max"],
        mb(&a["half"]["page_table_bytes"]),
        mb(&a["all"]["page_table_bytes"]),
        f(&a["page_tables_per_live_match_bytes"]),
        f(&a["pss_per_live_match_bytes"]),
    );
    let x = &r["faults"];
    let _ = writeln!(
        t,
        "\n5. faults ({} of {} matches crashing every 500 ms, {} clients)",
        x["crashing_matches"], x["matches"], x["clients"]
    );
    faults_pair(&mut t, "ordinary scheduling", x);
    if let Some(refused) = x["realtime"]["refused"].as_str() {
        let _ = writeln!(t, "   --realtime-priority: not run: {refused}");
    } else if let Some(priority) = x["realtime"]["priority"].as_u64() {
        faults_pair(&mut t, &format!("--realtime-priority {priority}"), &x["realtime"]);
    }
    let _ = writeln!(
        t,
        "\n6. bets (50 clients, one bet in flight each, durable before confirmed)"
    );
    for b in r["bets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "   {:>4} match(es): {} bets/s; round trip p50/p99 {} / {} µs; decision p50/p99 {} / {}; durable answer p50/p99 {} / {}",
            b["matches"],
            f(&b["bets_per_s"]),
            b["round_trip_us"]["p50"],
            b["round_trip_us"]["p99"],
            us(&b["decision_s"]["p50"]),
            us(&b["decision_s"]["p99"]),
            us(&b["confirm_s"]["p50"]),
            us(&b["confirm_s"]["p99"])
        );
    }
    let p = &r["producers"];
    let (st, un) = (&p["startup"], &p["unsubscribed"]);
    let lo_startup = st["request_to_complete_s"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["producer"] == "LO"))
        .map_or(Value::Null, |x| x["s"].clone());
    let _ = writeln!(
        t,
        "\n7. producers ({} matches from the simulator, the provider)\n   \
         start-up: full recovery of LO request → snapshot_complete {} s; server start → every producer up {} s\n   \
         LO unsubscribed: trigger → every affected subscriber told p50/p99/max {} / {} / {} µs ({} of {} told); \
         recovery request → complete {} s; trigger → told it is back p50/p99 {} / {} µs ({} told)",
        p["matches"],
        f(&lo_startup),
        f(&st["server_start_to_all_up_s"]),
        un["trigger_to_told_down_us"]["p50"],
        un["trigger_to_told_down_us"]["p99"],
        un["trigger_to_told_down_us"]["max"],
        un["told_down"],
        un["subscribers_expected"],
        f(&un["recovery_request_to_complete_s"]),
        un["trigger_to_told_up_us"]["p50"],
        un["trigger_to_told_up_us"]["p99"],
        un["told_up"]
    );
    let n = &r["names"];
    if n.is_object() {
        let _ = writeln!(
            t,
            "\n7b. names (200 simulated matches at 200 msg/s; frame bytes mean; update latency feed stamp → client, ms)"
        );
        for v in ["names", "no_names", "fixtures_down", "fixtures_slow"] {
            let x = &n[v];
            let _ = writeln!(
                t,
                "   {v:<14} snapshot {} B ({} of {} with event names), update {} B ({} of {} with names), names frames {}, latency p50/p99/max {} / {} / {} ms",
                f(&x["snapshot_bytes_mean"]),
                x["snapshots_with_event_names"],
                x["snapshots"],
                f(&x["update_bytes_mean"]),
                x["updates_with_names"],
                x["updates"],
                x["names_frames"],
                x["update_latency_ms"]["p50"],
                x["update_latency_ms"]["p99"],
                x["update_latency_ms"]["max"],
            );
        }
    }
    crate::swap::table(&mut t, &r["swap"]);
    cluster_table(&mut t, r);
    targets_table(&mut t, r);
    let _ = writeln!(t, "\nelapsed: {} s", f(&r["elapsed_s"]));
    t
}

/// A figure as the table shows it: whole from 100 up, else to three
/// places; `-` when it is not a number.
pub(crate) fn fixed(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |x| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.3}")
        }
    })
}

/// Section 9: the cluster's throughput against a single node, its scaling
/// over pinned cores, and failover times.
fn cluster_table(t: &mut String, r: &Value) {
    let c = &r["cluster"];
    if !c.is_object() {
        return;
    }
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    let k = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{:.0}", x));
    let _ = writeln!(
        t,
        "\n9. cluster ({} matches, {} events blasted into node a; one nats-server unless said; CPU s: nodes / nats-servers)",
        c["matches"], c["events"]
    );
    let single = &c["single_node"];
    let _ = writeln!(
        t,
        "   single node (serve, durability on)   {} ev/s, CPU {} s",
        k(&single["events_per_s"]),
        f(&single["server_cpu_s"])
    );
    for (name, key) in [
        ("3 nodes", "three_nodes"),
        ("3 nodes, 3 nats-servers, replicas 3", "three_nodes_replicated"),
        ("1 node on core 0", "one_node_on_one_core"),
        ("2 nodes on cores 0, 1", "two_nodes_on_one_core_each"),
    ] {
        let x = &c[key];
        let nodes_cpu: f64 = x["nodes_cpu_s"]
            .as_array()
            .map_or(0.0, |a| a.iter().filter_map(Value::as_f64).sum());
        let _ = writeln!(
            t,
            "   {name:<37}{} ev/s, CPU {nodes_cpu:.2} / {} s, route errors {}",
            k(&x["events_per_s"]),
            f(&x["nats_cpu_s"]),
            x["route_errors"]
        );
    }
    let _ = writeln!(
        t,
        "   ratios: 3 nodes / single {}, replicated / single {}, 2 pinned / 1 pinned {}",
        f(&c["three_nodes_over_single"]),
        f(&c["replicated_over_single"]),
        f(&c["two_pinned_over_one_pinned"])
    );
    let o = &c["failover"];
    let s = &o["first_frame_after_stop_s"];
    let _ = writeln!(
        t,
        "   failover ({} kills -9 of an owner, lease TTL {} ms, {} matches at {} msg/s): stop → first frame of its matches p50/p99/min/max {} / {} / {} / {} s; client seq gaps {}",
        o["kills"],
        o["lease_ttl_ms"],
        o["matches"],
        o["feed_rate"],
        f(&s["p50"]),
        f(&s["p99"]),
        f(&s["min"]),
        f(&s["max"]),
        o["client"]["seq_gaps"]
    );
}

/// Section 3: each client count, Touchline and the Node peer on one row
/// each, then the ratios and each target with its measured value.
fn fanout_table(t: &mut String, r: &Value) {
    let f1 = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"));
    let f2 = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    let n0 = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
    let mb = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{:.0}", x / 1e6));
    let mb1 = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{:.1}", x / 1e6));
    let kb = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{:.1}", x / 1024.0));
    let _ = writeln!(
        t,
        "\n3. fan-out (feed {} msg/s over {} matches; Touchline beside the Node `ws` peer, same feed and clients)\n{:>7} {:>10} {:>12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>5} {:>7} {:>9} {:>11} {:>6} {:>6} {:>7} {:>8}",
        r["fanout"][0]["feed_rate"],
        r["fanout"][0]["matches"],
        "clients",
        "server",
        "deliveries/s",
        "B/deliv",
        "MB/s out",
        "p50 µs",
        "p99 µs",
        "max µs",
        "gaps",
        "resnap",
        "cpu %",
        "cpu s/100k",
        "rss MB",
        "peak",
        "KB/cli",
        "gen cpu%"
    );
    for row in r["fanout"].as_array().into_iter().flatten() {
        for (name, x) in [("touchline", &row["result"]), (NAME, &row[NAME])] {
            if x.is_null() {
                continue;
            }
            let l = &x["latency_us"];
            // Value's Display ignores widths: pad its text.
            let v = |v: &Value| v.to_string();
            let _ = writeln!(
                t,
                "{:>7} {:>10} {:>12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>5} {:>7} {:>9} {:>11} {:>6} {:>6} {:>7} {:>8}",
                v(&row["clients"]),
                name,
                n0(&x["deliveries_per_s"]),
                n0(&x["bytes_per_delivery"]),
                mb1(&x["delivered_bytes_per_s"]),
                v(&l["p50"]),
                v(&l["p99"]),
                v(&l["max"]),
                v(&x["seq_gaps"]),
                v(&x["resnapshots"]),
                f1(&x["server_cpu_percent"]),
                f2(&x["server_cpu_s_per_100k_deliveries"]),
                mb(&x["server_rss_bytes"]),
                mb(&x["server_rss_peak_bytes"]),
                kb(&x["rss_per_client_bytes"]),
                f1(&x["generator_cpu_percent"])
            );
        }
        let v = &row["versus"];
        if v.is_null() {
            continue;
        }
        let (d, m, idle, b) = (
            &v["deliveries_per_server_cpu_s"],
            &v["rss_per_connected_client_bytes"],
            &v["rss_per_client_bytes"],
            &v["bytes_per_delivery"],
        );
        let _ = writeln!(
            t,
            "{:>7}   bytes per delivery: Touchline {} / {NAME} {} = {}x\n{:>7}   deliveries per server CPU-s: Touchline {} / {NAME} {} = {}x (target {}: {})\n{:>7}   RSS per connected client: Touchline {} KB (target <= 16 KB: {}; {} KB under load), {NAME} {} KB ({} KB under load)",
            "",
            f1(&b["touchline"]),
            f1(&b[NAME]),
            f2(&b["touchline_over_peer"]),
            "",
            n0(&d["touchline"]),
            n0(&d[NAME]),
            f2(&d["touchline_over_peer"]),
            d["target"].as_str().unwrap_or("?"),
            met(&d["met"]),
            "",
            kb(&m["touchline"]),
            met(&m["met"]),
            kb(&idle["touchline"]),
            kb(&m[NAME]),
            kb(&idle[NAME])
        );
        let (u, sys) = (&v["server_user_us_per_delivery"], &v["server_system_us_per_delivery"]);
        let _ = writeln!(
            t,
            "{:>7}   CPU per delivery, user + system µs: Touchline {} + {}, {NAME} {} + {}; with no user time at all Touchline's ratio would be at most {}x",
            "",
            f2(&u["touchline"]),
            f2(&sys["touchline"]),
            f2(&u[NAME]),
            f2(&sys[NAME]),
            f2(&d["ceiling_with_no_user_time"])
        );
    }
    let z = &r["fanout_deflate"];
    if !z.is_null() {
        let (p, d) = (&z["plain"], &z["deflate"]);
        let _ = writeln!(
            t,
            "{:>7}   permessage-deflate (clients offering it), Touchline: wire bytes per delivery {} -> {} ({}x); server CPU s per 100k deliveries {} -> {} ({}x); p99 {} -> {} µs; gen cpu {}% -> {}%",
            z["clients"].to_string(),
            n0(&p["wire_bytes_per_delivery"]),
            n0(&d["wire_bytes_per_delivery"]),
            f2(&z["wire_bytes_deflate_over_plain"]),
            f2(&p["server_cpu_s_per_100k_deliveries"]),
            f2(&d["server_cpu_s_per_100k_deliveries"]),
            f2(&z["cpu_per_delivery_deflate_over_plain"]),
            p["latency_p99_us"],
            d["latency_p99_us"],
            f1(&p["generator_cpu_percent"]),
            f1(&d["generator_cpu_percent"])
        );
        let n = &z[NAME];
        let _ = writeln!(
            t,
            "{:>7}   permessage-deflate, {NAME} (compressing per client): wire bytes per delivery {} ({}x); server CPU s per 100k deliveries {} ({}x); p99 {} µs; gen cpu {}%; deliveries per server CPU-s Touchline / {NAME}, both compressing: {}x",
            "",
            n0(&n["wire_bytes_per_delivery"]),
            f2(&z["peer_wire_bytes_deflate_over_plain"]),
            f2(&n["server_cpu_s_per_100k_deliveries"]),
            f2(&z["peer_cpu_per_delivery_deflate_over_plain"]),
            n["latency_p99_us"],
            f1(&n["generator_cpu_percent"]),
            f2(&z["deliveries_per_server_cpu_s_over_peer"])
        );
    }
}

/// Latency percentile curves as a small SVG (x: percentile on a log scale
/// of 1/(1-q), y: latency on a log scale). Hand-drawn: a plotting crate
/// would need a font backend for forty lines of markup.
pub fn latency_svg(curves: &[(String, Histogram<u64>)]) -> String {
    let (w, h, left, bottom) = (760.0, 420.0, 70.0, 40.0);
    let qs: Vec<f64> = (0..=40).map(|i| 1.0 - 10f64.powf(-(i as f64) / 10.0)).collect(); // 0 .. 99.99%
    let xmax = 4.0;
    let (ymin, ymax) = (1.0f64.log10(), 1e7f64.log10());
    let x = |q: f64| left + (-(1.0 - q).max(1e-4).log10()) / xmax * (w - left - 20.0);
    let y = |us: f64| h - bottom - (us.max(1.0).log10() - ymin) / (ymax - ymin) * (h - bottom - 20.0);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    for (label, q) in [
        ("50%", 0.5),
        ("90%", 0.9),
        ("99%", 0.99),
        ("99.9%", 0.999),
        ("99.99%", 0.9999),
    ] {
        let _ = write!(
            s,
            r#"<line x1="{0}" x2="{0}" y1="20" y2="{1}" stroke="lightgray"/><text x="{0}" y="{2}" text-anchor="middle">{label}</text>"#,
            x(q),
            h - bottom,
            h - bottom + 16.0
        );
    }
    for (label, us) in [
        ("1µs", 1.0),
        ("10µs", 10.0),
        ("100µs", 100.0),
        ("1ms", 1e3),
        ("10ms", 1e4),
        ("100ms", 1e5),
        ("1s", 1e6),
        ("10s", 1e7),
    ] {
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{}" y1="{1}" y2="{1}" stroke="lightgray"/><text x="{2}" y="{3}" text-anchor="end">{label}</text>"#,
            w - 20.0,
            y(us),
            left - 6.0,
            y(us) + 4.0
        );
    }
    for (i, (label, hist)) in curves.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = qs
            .iter()
            .map(|&q| format!("{:.1},{:.1}", x(q), y(hist.value_at_quantile(q) as f64)))
            .collect();
        // The Node peer's curves dashed, beside Touchline's.
        let dash = if label.contains(NAME) {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            pts.join(" ")
        );
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{c}"/><text x="{}" y="{}">{label}</text>"#,
            left + 10.0,
            30.0 + 16.0 * i as f64,
            left + 28.0,
            34.0 + 16.0 * i as f64
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile of updates (feed message sent → WebSocket client received)</text></svg>"#,
        (w + left) / 2.0,
        h - 4.0
    );
    s
}

/// One pair of the faults scenario's runs (without and with crashes).
fn faults_pair(t: &mut String, scheduling: &str, x: &Value) {
    let f = fixed;
    let trap = &x["with_crashes"]["trap_to_serving_s"];
    let _ = writeln!(
        t,
        "   {scheduling}: trap to serving again p50/p99: {} / {} ({} restarts); the restart's own CPU time p50/p99: {} / {}; preempted, waiting for a core, p90/p99: {} / {}; events replayed, mean: {}",
        us(&trap["p50"]),
        us(&trap["p99"]),
        trap["count"],
        us(&trap["cpu"]["p50"]),
        us(&trap["cpu"]["p99"]),
        us(&trap["runqueue"]["p90"]),
        us(&trap["runqueue"]["p99"]),
        trap["replayed_events"]["mean"]
    );
    let _ = writeln!(
        t,
        "   {scheduling}: healthy-match latency p50/p99 µs: without crashes {} / {}, with crashes {} / {} (p99 ratio {}); gaps {} / {}",
        x["without_crashes"]["latency_us"]["p50"],
        x["without_crashes"]["latency_us"]["p99"],
        x["with_crashes"]["latency_us"]["p50"],
        x["with_crashes"]["latency_us"]["p99"],
        f(&x["healthy_p99_ratio_crash_over_calm"]),
        x["without_crashes"]["seq_gaps"],
        x["with_crashes"]["seq_gaps"]
    );
}
