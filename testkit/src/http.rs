//! A minimal blocking HTTP/1.1 client, enough for `/metrics`, the bets API
//! and the admin API. One request per connection (`Connection: close`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// `GET path`: (status, body).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    request(addr, "GET", path, &[], b"", timeout)
}

/// `method path` with extra headers and a body: (status, body). Reads by
/// Content-Length when given (some servers keep the connection open
/// regardless), else to EOF. `timeout` bounds each read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String)> {
    let s = TcpStream::connect(addr).map_err(Error::io(format!("connecting to {addr}")))?;
    s.set_read_timeout(Some(timeout))
        .map_err(Error::io("setting the read timeout"))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" || !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    (&s).write_all(req.as_bytes())
        .and_then(|()| (&s).write_all(body))
        .map_err(Error::io(format!("sending {method} {path}")))?;
    read_response(s, &format!("reading the answer to {method} {path}"))
}

fn read_response(s: TcpStream, what: &str) -> Result<(u16, String)> {
    let io = || Error::io(what);
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line).map_err(io())?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(Error::BadResponse("no status code"))?;
    let mut length = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(io())? == 0 {
            return Err(Error::BadResponse("headers end early"));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).map_err(io())?;
        }
        None => {
            r.read_to_end(&mut body).map_err(io())?;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
