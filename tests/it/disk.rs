//! A full disk, for real: the data dir on a small tmpfs that the test fills
//! (root only: CI runs as root; anywhere else the test fails saying so).
//! The server turns not ready, refuses bets `storage_unavailable`, keeps
//! applying and sending events (held for the store), logs a few lines, and
//! recovers by itself when space is back, with nothing confirmed lost and
//! no hole in the journal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::bets::{MATCH, bet};
use crate::support::{Server, Ws, http_get, sample, wait_for};

const MIB: u64 = 1 << 20;

/// A tmpfs of `mib` MiB mounted on a fresh temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn available(&self) -> u64 {
        touchline::store::health::available(self.path()).expect("statvfs")
    }

    /// Fill it until at most `leave` bytes are free.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5a_u8; MIB as usize];
        while self.available() > leave {
            let n = (self.available() - leave).min(MIB) as usize;
            if f.write_all(&chunk[..n.max(4096)]).is_err() {
                break;
            }
            f.flush().expect("filler flush");
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// An odds_change for MATCH moving market 68's odds to `odds`.
fn odds(odds: f64) -> Vec<u8> {
    format!(
        r#"<odds_change product="3" event_id="{MATCH}" timestamp="5"><odds><market id="68" specifiers="total=2.5" status="1"><outcome id="12" odds="{odds}" active="1"/><outcome id="13" odds="1.5" active="1"/></market></odds></odds_change>"#
    )
    .into_bytes()
}

fn readyz(server: &Server) -> (u16, Value) {
    let (code, body) = http_get(server.http, "/readyz");
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}")),
    )
}

/// Seq of the next update frame of MATCH.
async fn next_update(ws: &mut Ws) -> u64 {
    let f = ws.next_matching(|f| f["type"] == "update" && f["match"] == MATCH).await;
    f["seq"].as_u64().expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_writes_refuses_bets_and_recovers_by_itself() {
    let disk = Tmpfs::mount(96);
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("server.log");
    let data = tempfile::tempdir_in(disk.path()).expect("data dir on the tmpfs");
    let server = Server::start_logging(data, Some(&log), &["--store-reserve-mib", "24"]);
    let mut feed = server.feed_up();
    feed.write_all(&sample("uof/messages/odds_change.xml")).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
    let epoch = snap["epoch"].as_u64().expect("epoch");
    let before = bet(&mut ws, "before", json!({})).await;
    assert_eq!(before["status"], "accepted", "{before}");
    assert_eq!(readyz(&server).0, 200);

    // Fill the disk to under the reserve; the next writes find it full.
    let errors_before = std::fs::read_to_string(&log).expect("log").matches(" ERROR ").count();
    let filler = disk.fill(16 * MIB);
    feed.write_all(&odds(2.0)).expect("feed");
    let first_held = next_update(&mut ws).await;
    let (code, body) = wait_for("not ready while the disk is full", || {
        Some(readyz(&server)).filter(|(code, _)| *code == 503)
    });
    assert_eq!(code, 503);
    let reason = body["store"].as_str().expect("store reason");
    assert!(reason.starts_with("disk full"), "{body}");
    assert_eq!(body["feed"], "ok", "{body}");
    // Bets are refused; events are still applied and sent (held for the store).
    let during = bet(&mut ws, "during", json!({})).await;
    assert_eq!(during["status"], "rejected", "{during}");
    assert!(
        during["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("storage_unavailable")),
        "{during}"
    );
    let mut last = first_held;
    for i in 0..50 {
        feed.write_all(&odds(2.0 + f64::from(i) / 100.0)).expect("feed");
        let seq = next_update(&mut ws).await;
        assert_eq!(seq, last + 1, "no gap while the disk is full");
        last = seq;
    }
    assert!(server.metric("touchline_store_held_ops") > 0.0, "writes are held");
    let (code, _) = readyz(&server);
    assert_eq!(code, 503, "still full");

    // Room again: the writer finds it by itself, writes what it held.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_for("ready again", || Some(readyz(&server)).filter(|(code, _)| *code == 200));
    assert_eq!(server.metric("touchline_store_held_ops"), 0.0);
    let after = bet(&mut ws, "after", json!({})).await;
    assert_eq!(after["status"], "accepted", "{after}");
    let log_text = std::fs::read_to_string(&log).expect("log");
    let errors = log_text.matches(" ERROR ").count() - errors_before;
    assert!(errors <= 3, "{errors} ERROR lines while the disk was full:\n{log_text}");

    // Restart: the accepted bets and every event (held ones too) are there,
    // in the same epoch: a client resuming from before the fill misses nothing.
    let data = server.terminate();
    let server = Server::start_in(data, &["--store-reserve-mib", "24"]);
    for (id, status) in [("before", 200), ("after", 200), ("during", 404)] {
        assert_eq!(http_get(server.http, &format!("/api/bets/{id}")).0, status, "bet {id}");
    }
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": [MATCH], "since": {MATCH: {"epoch": epoch, "seq": first_held - 1}}}))
        .await;
    let head = ws.next_matching(|f| f["match"] == MATCH).await;
    assert_eq!(head["type"], "resumed", "{head}");
    for want in first_held..=last {
        let f = ws.next_matching(|f| f["type"] == "update").await;
        assert_eq!(f["seq"].as_u64(), Some(want), "{f}");
    }
}
