//! The feed provider's HTTP API, client side: recoveries (`POST
//! {base}/v1/{producer}/recovery/initiate_request?after=..&request_id=..`,
//! in the Unified Odds Feed's shape) and reference data (`GET` market
//! descriptions, fixtures). Plain HTTP/1.1 over TCP (the simulator's API,
//! or a TLS-terminating proxy in front of the real one); the access token,
//! if any, goes in `x-access-token` as the real API expects. One request
//! per connection.

use std::time::Duration;

use http_body_util::BodyExt as _;

/// Why a request to the provider's API did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("provider API URL {0:?} is not http://host:port[/path]")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the provider answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The provider's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    authority: String,
    /// Path prefix without a trailing `/` (often empty).
    prefix: String,
    token: Option<String>,
}

impl Endpoint {
    /// `http://host:port[/prefix]`.
    pub fn parse(url: &str, token: Option<String>) -> Result<Endpoint, ApiError> {
        let bad = || ApiError::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            return Err(bad());
        }
        Ok(Endpoint {
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
            token,
        })
    }

    /// The request's path and query.
    pub fn path(&self, producer: &str, after: Option<i64>, request_id: u64) -> String {
        let after = after.map(|a| format!("after={a}&")).unwrap_or_default();
        format!(
            "{}/v1/{producer}/recovery/initiate_request?{after}request_id={request_id}",
            self.prefix
        )
    }

    /// Ask for a recovery; `Ok` once the provider accepted it (2xx).
    pub async fn initiate(
        &self,
        producer: &str,
        after: Option<i64>,
        request_id: u64,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        let path = self.path(producer, after, request_id);
        tokio::time::timeout(timeout, self.send(hyper::Method::POST, &path))
            .await
            .map_err(|_| ApiError::Timeout(timeout))?
            .map(drop)
    }

    /// `GET {base}{path}` (a path from the API root, `/v1/...`): the body
    /// of a 2xx answer.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<String, ApiError> {
        let path = format!("{}{path}", self.prefix);
        tokio::time::timeout(timeout, self.send(hyper::Method::GET, &path))
            .await
            .map_err(|_| ApiError::Timeout(timeout))?
    }

    async fn send(&self, method: hyper::Method, path: &str) -> Result<String, ApiError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| ApiError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header("x-access-token", token);
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|_| ApiError::Url(path.to_owned()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(String::from_utf8_lossy(&body).into_owned())
        } else {
            Err(ApiError::Refused {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        let e = Endpoint::parse("http://127.0.0.1:9001", None).expect("plain");
        assert_eq!(
            e.path("LO", Some(5), 7),
            "/v1/LO/recovery/initiate_request?after=5&request_id=7"
        );
        assert_eq!(
            e.path("Ctrl", None, 8),
            "/v1/Ctrl/recovery/initiate_request?request_id=8"
        );
        let p = Endpoint::parse("http://api.local:80/uof/", None).expect("prefix");
        assert_eq!(
            p.path("LO", None, 1),
            "/uof/v1/LO/recovery/initiate_request?request_id=1"
        );
        for bad in ["https://x:1", "http://", "127.0.0.1:9001", "http://nohost/"] {
            assert!(Endpoint::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_refusal_is_an_error_with_the_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.expect("read");
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = "<response response_code=\"FORBIDDEN\"/>";
            let reply = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(reply.as_bytes()).await.expect("write");
            head
        });
        let e = Endpoint::parse(&format!("http://{addr}"), Some("secret".into())).expect("url");
        let err = e
            .initiate("LO", Some(1), 2, Duration::from_secs(5))
            .await
            .expect_err("403");
        assert!(
            matches!(err, ApiError::Refused { status: 403, ref body } if body.contains("FORBIDDEN")),
            "{err}"
        );
        let head = server.await.expect("server");
        assert!(
            head.starts_with("POST /v1/LO/recovery/initiate_request?after=1&request_id=2 HTTP/1.1"),
            "{head}"
        );
        assert!(head.to_ascii_lowercase().contains("x-access-token: secret"), "{head}");
    }
}
