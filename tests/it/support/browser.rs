//! A real headless Chromium for the page tests, driven over the DevTools
//! protocol (CDP) with the same WebSocket client the other tests use.
//!
//! The browser is `TOUCHLINE_CHROMIUM` if set, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH`. Without one a test
//! fails, saying how to install it (`make browser`), unless
//! `TOUCHLINE_SKIP_BROWSER=1` says to skip it on purpose. Waiting is on
//! conditions evaluated in the page, with the [`DEADLINE`]; nothing here
//! sleeps to synchronise.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{DEADLINE, http_get};

/// Browser names looked up on `PATH` when `TOUCHLINE_CHROMIUM` is not set.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The Chromium to drive; `None` only when `TOUCHLINE_SKIP_BROWSER=1`.
/// Panics when there is none, so a page is never left untested by accident.
pub(crate) fn find_chromium() -> Option<String> {
    if let Ok(path) = std::env::var("TOUCHLINE_CHROMIUM") {
        return Some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| BROWSERS.iter().map(move |b| dir.join(b)))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return Some(p.to_string_lossy().into_owned());
    }
    if std::env::var("TOUCHLINE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("page test skipped: TOUCHLINE_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "the page test needs Chromium and found none (TOUCHLINE_CHROMIUM is unset; no {} on PATH).\n\
         Install it with `make browser` (or `apt-get install chromium`), or point TOUCHLINE_CHROMIUM at one.\n\
         To skip this test on purpose, set TOUCHLINE_SKIP_BROWSER=1.",
        BROWSERS.join(", ")
    );
}

/// A running headless Chromium with its own profile, killed on drop.
pub(crate) struct Browser {
    child: Child,
    /// Removed with the browser: no state leaks between tests.
    _profile: tempfile::TempDir,
    /// Where its DevTools HTTP endpoint listens (`/json/list`).
    pub(crate) devtools: std::net::SocketAddr,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start Chromium on `url` and wait for its DevTools endpoint.
pub(crate) fn launch(chromium: &str, url: &str) -> Browser {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let devtools = loop {
        let line = lines
            .next()
            .expect("chromium exited before DevTools came up")
            .expect("stderr");
        if let Some(rest) = line.strip_prefix("DevTools listening on ws://") {
            let addr = rest.split('/').next().expect("host:port");
            break addr.parse().expect("DevTools address");
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Browser {
        child,
        _profile: profile,
        devtools,
    }
}

/// The DevTools session of the browser's page.
pub(crate) struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Id of the last command sent (replies are matched by it).
    next_id: u64,
}

impl Page {
    /// The DevTools session of the browser's page.
    pub(crate) async fn open(browser: &Browser) -> Page {
        let (_, list) = http_get(browser.devtools, "/json/list");
        let targets: Value = serde_json::from_str(&list).expect("target list");
        let url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("cdp connect");
        Page { ws, next_id: 0 }
    }

    /// Send one CDP command; its whole reply (`result` or `error`).
    async fn reply(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("cdp send");
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("cdp reply")
                .expect("open")
                .expect("ok");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("cdp json");
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    /// Send one CDP command; its `result` (null if the command failed).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.reply(method, params).await["result"].clone()
    }

    /// [`Page::call`], panicking with the browser's error if it failed.
    pub(crate) async fn call_ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.reply(method, params).await;
        assert!(v.get("error").is_none(), "cdp {method}: {}", v["error"]);
        v["result"].clone()
    }

    pub(crate) async fn eval(&mut self, expr: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}))
            .await["result"]["value"]
            .clone()
    }

    /// Evaluate `expr` until it returns something other than null, within
    /// the deadline, and return that.
    pub(crate) async fn wait_some(&mut self, expr: &str) -> Value {
        let start = std::time::Instant::now();
        loop {
            let got = self.eval(expr).await;
            if !got.is_null() {
                return got;
            }
            assert!(start.elapsed() < DEADLINE, "page: `{expr}` stays null");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Evaluate `expr` until it returns `want`, within the deadline.
    pub(crate) async fn wait_eval(&mut self, expr: &str, want: Value) {
        let start = std::time::Instant::now();
        loop {
            let got = self.eval(expr).await;
            if got == want {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "page: `{expr}` is {got}, want {want}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Load `url` in the page. Callers then wait for something only the
    /// new document shows.
    pub(crate) async fn navigate(&mut self, url: &str) {
        self.call_ok("Page.navigate", json!({"url": url})).await;
    }

    /// Choose `file` in the `<input type="file">` that `selector` finds, as
    /// a person picking it would (the page sees it in `input.files`).
    pub(crate) async fn set_file_input(&mut self, selector: &str, file: &Path) {
        let doc = self.call_ok("DOM.getDocument", json!({"depth": 0})).await;
        let root = doc["root"]["nodeId"].as_i64().expect("document node");
        let found = self
            .call_ok("DOM.querySelector", json!({"nodeId": root, "selector": selector}))
            .await;
        let node = found["nodeId"].as_i64().filter(|&n| n != 0);
        let node = node.unwrap_or_else(|| panic!("page: no element matches {selector}"));
        let path = file.to_str().expect("a UTF-8 path");
        self.call_ok("DOM.setFileInputFiles", json!({"nodeId": node, "files": [path]}))
            .await;
    }

    /// A PNG of the page as `<TOUCHLINE_SCREENSHOT_DIR>/<name>.png`, only
    /// when that variable is set.
    pub(crate) async fn screenshot_if_asked(&mut self, name: &str) {
        let Ok(dir) = std::env::var("TOUCHLINE_SCREENSHOT_DIR") else {
            return;
        };
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = shot["data"].as_str().expect("png data");
        let bytes = base64::engine::general_purpose::STANDARD.decode(png).expect("base64");
        std::fs::File::create(Path::new(&dir).join(format!("{name}.png")))
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write png");
    }
}
