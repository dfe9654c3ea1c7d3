//! `--realtime-priority`: which of the server's threads run under
//! `SCHED_FIFO` (read from `/proc`), and a server without the permission
//! refusing to start (run under `prlimit` and `setpriv` without
//! CAP_SYS_NICE). That the threads a raised thread starts are ordinary is
//! `realtime`'s unit test.

use std::io::Write as _;

use std::process::Command;

use touchline_testkit::Launch;

use crate::support::{Server, sample, wait_for};

/// `SCHED_FIFO` in `/proc/*/stat`'s policy field.
const FIFO: u32 = 1;

/// Each thread of `pid`: its name, policy and real-time priority, and its
/// id.
fn threads(pid: u32) -> Vec<(String, u32, u32, String)> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the server's threads") {
        let path = entry.expect("a thread").path();
        let tid = path.file_name().expect("a tid").to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // it ended meanwhile
        };
        // "tid (name) state ...": a name may hold spaces ("log flusher").
        let (open, close) = (stat.find('(').expect("("), stat.rfind(')').expect(")"));
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields 40 and 41 (rt_priority, policy); `fields[0]` is field 3.
        let field = |n: usize| fields[n - 3].parse::<u32>().expect("a number");
        out.push((name, field(41), field(40), tid));
    }
    out
}

#[test]
fn with_a_realtime_priority_the_serving_threads_run_under_sched_fifo_and_the_rest_do_not() {
    let server = Server::start(&["--realtime-priority", "3"]);
    // A match's task ran on a worker after the priority was configured.
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let all = wait_for("a worker under SCHED_FIFO", || {
        let all = threads(server.pid());
        all.iter()
            .any(|(name, policy, ..)| name == "tokio-rt-worker" && *policy == FIFO)
            .then_some(all)
    });
    let of = |wanted: &str| -> Vec<(u32, u32)> {
        all.iter()
            .filter(|(name, ..)| name == wanted)
            .map(|&(_, policy, priority, _)| (policy, priority))
            .collect()
    };
    assert_eq!(of("store-writer"), [(FIFO, 3)], "{all:?}");
    assert_eq!(
        of("epoch-ticker"),
        [(FIFO, 4)],
        "one above: it interrupts a looping guest"
    );
    let raised = of("tokio-rt-worker")
        .into_iter()
        .filter(|&(p, _)| p == FIFO)
        .collect::<Vec<_>>();
    assert!(raised.iter().all(|&(_, priority)| priority == 3), "{all:?}");
    // The blocking pool's threads bear the same name and stay ordinary:
    // no more are raised than the runtime has workers.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        raised.len() <= cores,
        "{} raised with {cores} workers: {all:?}",
        raised.len()
    );
    for ordinary in ["heap-purger", "touchline"] {
        assert_eq!(of(ordinary), [(0, 0)], "{ordinary}: {all:?}");
    }
    assert!(
        all.iter()
            .filter(|(n, ..)| n.starts_with("sled-io"))
            .all(|&(_, p, ..)| p == 0),
        "sled's threads are its own: {all:?}"
    );
    // Each raised thread starts its own threads ordinary (`/proc` does not
    // show the flag; `chrt -p` does): a compile or an I/O thread of sled's
    // started from one does not hold a core at its priority.
    for (name, _, _, tid) in all.iter().filter(|(_, policy, ..)| *policy == FIFO) {
        let out = Command::new("chrt")
            .args(["-p", tid])
            .output()
            .expect("chrt (util-linux)");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("SCHED_FIFO|SCHED_RESET_ON_FORK"), "{name} {tid}: {said}");
    }
}

#[test]
fn without_the_permission_a_server_asked_for_a_realtime_priority_refuses_to_start() {
    let data = tempfile::tempdir().expect("temp dir");
    // No CAP_SYS_NICE (bounding and inheritable sets) and an RLIMIT_RTPRIO
    // of 0: nothing lets the server raise a thread. A server that starts
    // after all is killed when dropped.
    let started = Launch::new(env!("CARGO_BIN_EXE_touchline"), data.path().join("data"))
        .wrapper(["prlimit", "--rtprio=0", "setpriv"])
        .wrapper(["--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"])
        .args(["--realtime-priority", "5"])
        .start();
    let log = data.path().join("data/server.log");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        matches!(started, Err(touchline_testkit::Error::NotReady { .. })),
        "{started:?}: {said}"
    );
    assert!(
        said.contains("--realtime-priority 5: SCHED_FIFO at 6 was refused") && said.contains("CAP_SYS_NICE"),
        "{said}"
    );
}
