//! Reference data from the provider's API: the market descriptions (name
//! templates, specifiers, the `groups` a `bet_stop` names), kept current
//! by one task and published on a watch channel ([`Catalog`]).
//!
//! Where they come from, in order: `--descriptions-file` (read and parsed
//! at start; a broken file stops the start), else the copy the store kept
//! from the last successful fetch, replaced as soon as `--api-url`
//! (`GET /v1/descriptions/en/markets.xml` and `variants.xml`) answers.
//! A failed fetch is retried with backoff (1 s doubling to 60 s); a fetch
//! can be asked for at any time ([`Catalog::refresh`], `POST
//! /admin/reference/refresh`). Until any arrives the table is empty and
//! names fall back to ids.
//!
//! Fixtures, one per match, are [`fixtures`]'s: asked for by each match's
//! worker, fetched by their own task, kept in the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, Op};
use crate::names::Descriptions;
use crate::provider_api::Endpoint;

pub mod fixtures;
pub use fixtures::Fixtures;

/// The provider's answers the catalog keeps, by the name the store uses.
const FILES: [(&str, &str); 2] = [
    ("markets.xml", "/v1/descriptions/en/markets.xml"),
    ("variants.xml", "/v1/descriptions/en/variants.xml"),
];
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Refresh requests waiting; more are refused (the caller is told).
const REFRESH_QUEUE: usize = 8;

/// Where descriptions come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Texts of `--descriptions-file`s, read at start.
    Files(Vec<String>),
    /// The provider's API, with the store's last copy meanwhile.
    Api { endpoint: Endpoint, timeout: Duration },
    /// Neither: no descriptions (names are ids).
    None,
}

/// Why descriptions could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("descriptions: {0}")]
    Parse(#[from] crate::names::DataError),
    #[error("provider API: {0}")]
    Api(#[from] crate::provider_api::ApiError),
    #[error("descriptions come from files; nothing to fetch")]
    NotFetched,
    #[error("too many refreshes asked for at once")]
    Busy,
    #[error("the catalog has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<usize, String>>;

/// The handle: the current descriptions, and a way to ask for new ones.
#[derive(Debug, Clone)]
pub struct Catalog {
    descriptions: watch::Receiver<Arc<Descriptions>>,
    refresh: mpsc::Sender<Reply>,
}

impl Catalog {
    pub fn descriptions(&self) -> Arc<Descriptions> {
        self.descriptions.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Arc<Descriptions>> {
        self.descriptions.clone()
    }

    /// Fetch now; the number of markets described once it is in, or why
    /// not.
    pub async fn refresh(&self) -> Result<usize, String> {
        let (tx, rx) = oneshot::channel();
        self.refresh.try_send(tx).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CatalogError::Busy.to_string(),
            mpsc::error::TrySendError::Closed(_) => CatalogError::Stopped.to_string(),
        })?;
        rx.await.unwrap_or_else(|_| Err(CatalogError::Stopped.to_string()))
    }
}

/// Load what is there now (files, or the store's `cached` copy) and, for
/// the API, start the task that fetches and refreshes.
pub fn start(
    source: Source,
    cached: &[(String, String)],
    journal: Option<Arc<dyn Journal>>,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Catalog, CatalogError> {
    let initial = match &source {
        Source::Files(texts) => Descriptions::parse_all(texts.iter().map(String::as_str))?,
        _ => {
            let texts: Vec<&str> = FILES
                .iter()
                .filter_map(|(name, _)| cached.iter().find(|(k, _)| k == name).map(|(_, t)| t.as_str()))
                .collect();
            match Descriptions::parse_all(texts.iter().copied()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "the stored descriptions do not parse; waiting for the API");
                    Descriptions::default()
                }
            }
        }
    };
    tracing::info!(markets = initial.len(), "market descriptions loaded");
    let (tx, rx) = watch::channel(Arc::new(initial));
    let (refresh, requests) = mpsc::channel(REFRESH_QUEUE);
    tasks.spawn(run(source, tx, requests, journal, shutdown));
    Ok(Catalog {
        descriptions: rx,
        refresh,
    })
}

async fn run(
    source: Source,
    tx: watch::Sender<Arc<Descriptions>>,
    mut requests: mpsc::Receiver<Reply>,
    journal: Option<Arc<dyn Journal>>,
    shutdown: CancellationToken,
) {
    let Source::Api { endpoint, timeout } = source else {
        // Nothing to fetch: answer refreshes until shutdown.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = requests.recv() => match r {
                    Some(reply) => { let _ = reply.send(Err(CatalogError::NotFetched.to_string())); }
                    None => return,
                },
            }
        }
    };
    let mut backoff = BACKOFF_MIN;
    // Fetch at once; then again when asked, or after a failure's backoff.
    let mut due: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    let mut waiting: Vec<Reply> = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r {
                Some(reply) => {
                    waiting.push(reply);
                    due = Some(tokio::time::Instant::now());
                }
                None => return,
            },
            _ = sleep_until(due) => {
                let outcome = fetch(&endpoint, timeout, journal.as_deref()).await;
                let answer = match outcome {
                    Ok(d) => {
                        let n = d.len();
                        tracing::info!(markets = n, variants = d.variant_count(), "market descriptions fetched");
                        tx.send_replace(Arc::new(d));
                        backoff = BACKOFF_MIN;
                        due = None;
                        Ok(n)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "fetching market descriptions failed");
                        due = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        Err(e.to_string())
                    }
                };
                for reply in waiting.drain(..) {
                    let _ = reply.send(answer.clone());
                }
            }
        }
    }
}

/// Both answers, parsed together, kept in the store once they parse.
async fn fetch(
    endpoint: &Endpoint,
    timeout: Duration,
    journal: Option<&dyn Journal>,
) -> Result<Descriptions, CatalogError> {
    let mut texts = Vec::with_capacity(FILES.len());
    for (name, path) in FILES {
        texts.push((name, endpoint.get(path, timeout).await?));
    }
    let d = Descriptions::parse_all(texts.iter().map(|(_, t)| t.as_str()))?;
    if let Some(j) = journal {
        for (name, text) in texts {
            if let Err(e) = j.try_write(Op::Reference {
                key: name.to_owned(),
                text,
            }) {
                tracing::debug!(name, error = %e, "descriptions not kept this time");
            }
        }
    }
    Ok(d)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
