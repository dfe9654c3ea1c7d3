//! The feed provider's recovery API, played for tests and the benchmark
//! that drive a server from their own feed connection: a real HTTP server
//! on 127.0.0.1:0 that records every `POST /v1/{producer}/recovery/
//! initiate_request` and answers it as the provider does (202,
//! `response_code="ACCEPTED"`). The caller then completes a recovery by
//! writing [`completion`] on its feed connection; [`bring_up`] does both
//! and waits until the server says every producer is up.
//! (`touchline simulate` has the full provider, which also re-sends odds.)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// One recovery request as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// The producer's API name (`LO`, `Ctrl`).
    pub producer: String,
    pub after: Option<i64>,
    pub request_id: u64,
}

/// The recording provider; stops when dropped (its thread ends with the
/// process, blocked in accept).
#[derive(Debug)]
pub struct Provider {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecoveryRequest>>>,
}

impl Provider {
    pub fn start() -> Result<Provider> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding the provider"))?;
        let addr = listener.local_addr().map_err(Error::io("provider address"))?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(r) = answer(stream)
                    && let Ok(mut log) = log.lock()
                {
                    log.push(r);
                }
            }
        });
        Ok(Provider { addr, requests })
    }

    /// What to give the server as `--recovery-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecoveryRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The latest request for `producer`, waiting up to `timeout` for one
    /// with an id above `above`.
    pub fn wait_request(&self, producer: &str, above: u64, timeout: Duration) -> Result<RecoveryRequest> {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .requests()
                .into_iter()
                .rev()
                .find(|r| r.producer == producer && r.request_id > above)
            {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout(format!("a recovery request for {producer}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Read one request, answer 202; what was asked, if it was a recovery.
fn answer(stream: TcpStream) -> Option<RecoveryRequest> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    // Drain the headers (the request has no body).
    let mut header = String::new();
    while reader.read_line(&mut header).ok()? > 2 {
        header.clear();
    }
    let request = parse_request_line(&line);
    let (status, body) = match request {
        Some(_) => (
            "202 Accepted",
            r#"<response response_code="ACCEPTED"><action>Request for recovery accepted</action></response>"#,
        ),
        None => ("404 Not Found", r#"<response response_code="NOT_FOUND"/>"#),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(reply.as_bytes());
    request
}

/// `POST /v1/{producer}/recovery/initiate_request?after=..&request_id=.. HTTP/1.1`.
fn parse_request_line(line: &str) -> Option<RecoveryRequest> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "POST" {
        return None;
    }
    let target = parts.next()?;
    let (path, query) = target.split_once('?')?;
    let producer = path.strip_prefix("/v1/")?.strip_suffix("/recovery/initiate_request")?;
    let mut after = None;
    let mut request_id = None;
    for kv in query.split('&') {
        match kv.split_once('=')? {
            ("after", v) => after = Some(v.parse().ok()?),
            ("request_id", v) => request_id = Some(v.parse().ok()?),
            _ => {}
        }
    }
    Some(RecoveryRequest {
        producer: producer.to_owned(),
        after,
        request_id: request_id?,
    })
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The feed messages that complete recovery `request_id` of `product`: an
/// `alive` and the `snapshot_complete`, stamped now.
pub fn completion(product: u32, request_id: u64) -> String {
    let now = now_ms();
    format!(
        r#"<alive product="{product}" timestamp="{now}" subscribed="1"/><snapshot_complete request_id="{request_id}" product="{product}" timestamp="{now}"/>"#
    )
}

/// The producers the tests and the bench use, as the server names them
/// (BetPal: the uof odds_change samples are its).
pub const PRODUCERS: [(u32, &str); 3] = [(1, "LO"), (3, "Ctrl"), (4, "BetPal")];

/// Bring the server's producers up: complete its latest
/// recovery request of each on `feed` (it asks once `feed` is connected;
/// a request that replaces one already answered is answered too) until
/// `GET /api/producers` at `http` says every producer is up.
pub fn bring_up(provider: &Provider, feed: &mut TcpStream, http: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut answered: Vec<u64> = Vec::new();
    loop {
        for (product, name) in PRODUCERS {
            if let Some(r) = provider.requests().into_iter().rev().find(|r| r.producer == name)
                && !answered.contains(&r.request_id)
            {
                feed.write_all(completion(product, r.request_id).as_bytes())
                    .map_err(Error::io("writing snapshot_complete"))?;
                answered.push(r.request_id);
            }
        }
        if all_up(http, timeout)? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout(format!(
                "every producer up (requests: {:?})",
                provider.requests()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether every producer the server tracks is up.
pub fn all_up(http: SocketAddr, timeout: Duration) -> Result<bool> {
    let (status, body) = crate::http::get(http, "/api/producers", timeout)?;
    let states = body.matches("\"state\":").count();
    Ok(status == 200 && states > 0 && body.matches("\"state\":\"up\"").count() == states)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line("POST /v1/LO/recovery/initiate_request?after=5&request_id=9 HTTP/1.1\r\n"),
            Some(RecoveryRequest {
                producer: "LO".into(),
                after: Some(5),
                request_id: 9
            })
        );
        assert_eq!(
            parse_request_line("POST /v1/Ctrl/recovery/initiate_request?request_id=3 HTTP/1.1"),
            Some(RecoveryRequest {
                producer: "Ctrl".into(),
                after: None,
                request_id: 3
            })
        );
        assert_eq!(
            parse_request_line("GET /v1/LO/recovery/initiate_request?request_id=3 HTTP/1.1"),
            None
        );
        assert_eq!(
            parse_request_line("POST /v1/LO/recovery/initiate_request?after=5 HTTP/1.1"),
            None
        );
    }
}
