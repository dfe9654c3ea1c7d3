//! The sizes of a run: quick or full, and the overrides
//! (`--fanout-clients`, `--fanout-seconds`, `--pipeline-matches`) for
//! one-size A/B runs.

use crate::scenarios::Plan;

/// How big each scenario runs.
pub(crate) struct Sizes {
    pub(crate) pipeline_matches: Vec<u32>,
    pub(crate) pipeline_messages: usize,
    pub(crate) fanout_clients: Vec<usize>,
    pub(crate) fanout_seconds: f64,
    pub(crate) fanout_rate: f64,
    pub(crate) fanout_matches: u32,
    pub(crate) per_client: usize,
    /// The fan-out clients offer `permessage-deflate` (Touchline takes it).
    pub(crate) deflate: bool,
    /// Density: matches tracked (hibernated), and of them live and fed.
    pub(crate) density_matches: u32,
    pub(crate) density_live: u32,
    pub(crate) fault_clients: usize,
    /// Hot swap: matches live (the fan-out ones fed, the rest idle)...
    pub(crate) swap_matches: u32,
    /// ...clients on the fed ones, and seconds measured before the swap
    /// (half as long after each install and each rollback)...
    pub(crate) swap_clients: usize,
    pub(crate) swap_window: f64,
    /// ...and install-and-rollback cycles, their latency pooled.
    pub(crate) swap_cycles: usize,
    pub(crate) cluster: crate::cluster::ClusterSizes,
}

impl Plan {
    pub(crate) fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    pub(crate) fn sizes(&self) -> Sizes {
        let mut sizes = self.default_sizes();
        if !self.fanout_clients.is_empty() {
            sizes.fanout_clients = self.fanout_clients.clone();
        }
        if let Some(s) = self.fanout_seconds {
            sizes.fanout_seconds = s;
        }
        if !self.pipeline_matches.is_empty() {
            sizes.pipeline_matches = self.pipeline_matches.clone();
        }
        sizes
    }

    fn default_sizes(&self) -> Sizes {
        if self.quick {
            Sizes {
                pipeline_matches: vec![100, 1000],
                pipeline_messages: 8_000,
                fanout_clients: vec![1000],
                fanout_seconds: 4.0,
                fanout_rate: 200.0,
                fanout_matches: 100,
                per_client: 5,
                deflate: false,
                density_matches: 20_000,
                density_live: 200,
                fault_clients: 500,
                swap_matches: 1000,
                swap_clients: 500,
                swap_window: 3.0,
                swap_cycles: 1,
                cluster: crate::cluster::ClusterSizes {
                    matches: 100,
                    messages: 3000,
                    kills: 3,
                },
            }
        } else {
            Sizes {
                pipeline_matches: vec![100, 1000, 10_000],
                pipeline_messages: 60_000,
                fanout_clients: vec![1000, 5000, 10_000],
                fanout_seconds: 20.0,
                fanout_rate: 200.0,
                fanout_matches: 100,
                per_client: 5,
                deflate: false,
                density_matches: 100_000,
                density_live: 1000,
                fault_clients: 1000,
                swap_matches: 10_000,
                swap_clients: 1000,
                swap_window: 8.0,
                swap_cycles: 8,
                cluster: crate::cluster::ClusterSizes {
                    matches: 100,
                    messages: 15_000,
                    kills: 10,
                },
            }
        }
    }
}
