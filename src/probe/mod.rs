//! Probe: capture two contrasting prompt sets at every layer, keep streaming statistics only,
//! compute the layer metrics, rank layers and extract directions.

pub mod analysis;
pub mod capture;
pub mod experts;
pub mod extract;
pub mod filter;
pub mod metrics;
pub mod ranking;
pub mod report;
pub mod routing;
pub mod run;
pub mod stats;

pub use analysis::{
    default_candidates, degenerate, parse_positions, parse_stream, ProbeAnalysis, SkippedLayer, NOISE_FLOOR,
};
pub use capture::{capture_set, capture_sets_layer_major, CaptureModel, CaptureSettings, SetStats};
pub use filter::{confirmed_prompts, filter_by_answers, BehaviourFilter, FilteredSets};
pub use metrics::{layer_metrics, LayerMetrics};
pub use ranking::{rank, rule_name, RankRule, Ranking};
pub use report::{write_probe_outputs, ProbeProvenance};
pub use routing::{compare_routing, RoutingCounts, RoutingLayer};
pub use run::{probe_to_folder, run_probe, DirectionKind, ExtraDirections, ProbeFolder, ProbeOutcome, ProbeSettings};
pub use stats::RunningStats;
