//! What the server reads from the provider's side, each a service of its
//! own: the producers (liveness and recoveries), the market descriptions
//! (the catalog) and the fixtures. Started by [`super::Server::start_on`].

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{ServeConfig, journal, metrics, producers, reference, store};

/// The producer service: the selected producers of the table (built in or
/// `--producers-file`), with what earlier runs kept; every one starts down.
pub(super) fn start_producers(
    config: &ServeConfig,
    store: &store::Store,
    journal: Option<Arc<dyn journal::Journal>>,
    metrics: &Arc<metrics::Metrics>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<(producers::Producers, Option<Announcements>)> {
    let table = match &config.producers_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading producers file {}", path.display()))?;
            producers::Table::parse(&text).with_context(|| format!("producers file {}", path.display()))?
        }
        None => producers::Table::default(),
    };
    let selected = table.select(&config.producers).context("--producers")?;
    let recovery = config
        .recovery_url
        .as_deref()
        .map(|url| crate::provider_api::Endpoint::parse(url, config.recovery_token.clone()))
        .transpose()
        .context("--recovery-url")?;
    let saved = if config.durability {
        store.producers()?
    } else {
        Vec::new()
    };
    tracing::info!(producers = ?config.producers, kept = saved.len(), recovery = config.recovery_url.as_deref(), "producers: every one down until recovered");
    let (announce, announcements) = match config.cluster {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(ANNOUNCE_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let producers = producers::start(
        producers::Config {
            producers: selected,
            timing: config.producer_timing,
            recovery,
            request_timeout: RECOVERY_REQUEST_TIMEOUT,
            defer: defer(config),
            announce,
        },
        &saved,
        journal,
        metrics.clone(),
        stop.clone(),
        tasks,
    );
    Ok((producers, announcements))
}

/// The recovery requests this node's producer service announces, for the
/// cluster to carry to every node (`feed::cluster::announce`).
pub(super) type Announcements = tokio::sync::mpsc::Receiver<producers::Input>;

/// Recovery requests waiting to be announced (a handful per outage).
const ANNOUNCE_QUEUE: usize = 64;

/// How long a cluster node with no feed connection of its own waits, after
/// a producer goes down, for the feed node's recovery request before asking
/// itself: the feed node asks at once and its announcement arrives within
/// milliseconds, so only a lost announcement or a node that saw an outage
/// the feed node did not costs this much.
pub(super) const DEFER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn defer(config: &ServeConfig) -> Option<std::time::Duration> {
    config.cluster.is_some().then_some(DEFER_GRACE)
}

/// Market descriptions: from `--descriptions-file`, else the store's copy
/// and `--api-url`.
pub(super) fn start_catalog(
    config: &ServeConfig,
    store: &store::Store,
    journal: Option<Arc<dyn journal::Journal>>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<reference::Catalog> {
    let source = if !config.descriptions_files.is_empty() {
        let texts = config
            .descriptions_files
            .iter()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading descriptions {}", p.display())))
            .collect::<anyhow::Result<Vec<String>>>()?;
        reference::Source::Files(texts)
    } else if let Some(url) = &config.api_url {
        reference::Source::Api {
            endpoint: crate::provider_api::Endpoint::parse(url, config.recovery_token.clone()).context("--api-url")?,
            timeout: RECOVERY_REQUEST_TIMEOUT,
        }
    } else {
        reference::Source::None
    };
    let cached = if config.durability {
        store.reference()?
    } else {
        Vec::new()
    };
    reference::start(source, &cached, journal, stop.clone(), tasks).context("market descriptions")
}

/// Fixtures from `--api-url`'s `sport_events/{id}/fixture.xml`, else none.
pub(super) fn start_fixtures(
    config: &ServeConfig,
    journal: Option<Arc<dyn journal::Journal>>,
    metrics: &Arc<metrics::Metrics>,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> reference::Fixtures {
    let endpoint = config
        .api_url
        .as_deref()
        .and_then(|url| crate::provider_api::Endpoint::parse(url, config.recovery_token.clone()).ok());
    match endpoint {
        Some(endpoint) => reference::fixtures::start(
            endpoint,
            FIXTURE_REQUEST_TIMEOUT,
            journal,
            metrics.clone(),
            stop.clone(),
            tasks,
        ),
        None => reference::Fixtures::none(metrics.clone()),
    }
}

/// Longest wait for one fixture (a slow API is retried with backoff).
const FIXTURE_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest wait for the provider to accept a recovery request.
const RECOVERY_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
