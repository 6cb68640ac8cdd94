//! Probe: capture two contrasting prompt sets at every layer, keep streaming statistics only,
//! compute the layer metrics, rank layers and extract directions.

pub mod analysis;
pub mod capture;
pub mod extract;
pub mod metrics;
pub mod ranking;
pub mod report;
pub mod run;
pub mod stats;

pub use analysis::{default_candidates, parse_positions, parse_stream, ProbeAnalysis};
pub use capture::{capture_set, CaptureSettings, SetStats};
pub use metrics::{layer_metrics, LayerMetrics};
pub use ranking::{rank, RankRule, Ranking};
pub use report::{write_probe_outputs, ProbeProvenance};
pub use run::{run_probe, ExtraDirections, ProbeOutcome, ProbeSettings};
pub use stats::RunningStats;
