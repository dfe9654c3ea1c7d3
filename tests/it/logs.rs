//! What the binary tells its operator: log lines without colour codes in a
//! file, JSON log lines on request, and `demo` failing at once, naming the
//! port, when its HTTP port is taken.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Server, sample};

/// A server's log file (stderr is not a terminal) has no ANSI escapes; with
/// `--log-format json` every line is one JSON object with a level and the
/// event's fields.
#[test]
fn a_log_file_has_no_colour_codes_and_json_logs_are_one_object_per_line() {
    for json in [false, true] {
        let args: &[&str] = if json { &["--log-format", "json"] } else { &[] };
        let server = Server::start(args);
        let mut feed = server.feed();
        std::io::Write::write_all(&mut feed, &sample("uof/messages/odds_change.xml")).expect("feed");
        server.wait_metric("touchline_events_applied_total", 1.0);
        let data = server.terminate();
        let log = std::fs::read_to_string(data.path().join("server.log")).expect("the server's log");
        assert!(log.lines().count() >= 2, "the server logged its start and stop: {log}");
        assert!(!log.contains('\u{1b}'), "no escape codes in a log file: {log}");
        if json {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            }
        } else {
            assert!(log.contains(" INFO "), "text lines name their level: {log}");
        }
    }
}

/// `demo` binds its HTTP port before it starts the simulator: a port that is
/// taken ends it at once with an error naming the port, and no simulator
/// ever started.
#[test]
fn demo_on_a_taken_http_port_fails_at_once_and_names_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["demo", "--http", &addr, "--data"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run touchline demo");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo kept running on a taken port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("binding HTTP") && stderr.contains(&addr),
        "names the port: {stderr}"
    );
    assert!(!stdout.contains("SIMULATOR"), "no simulator was started: {stdout}");
    drop(taken);
}
