//! Probe: streaming statistics of two prompt sets' activations, layer metrics and ranking,
//! and direction extraction.

pub mod extract;
pub mod metrics;
pub mod ranking;
pub mod stats;

pub use metrics::{layer_metrics, LayerMetrics};
pub use ranking::{rank, RankRule, Ranking};
pub use stats::RunningStats;
