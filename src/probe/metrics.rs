//! Per-layer metrics of the two prompt sets' activations (the research note's three, and more).

use super::stats::RunningStats;
use serde::{Deserialize, Serialize};

/// The geometry of one layer and stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMetrics {
    /// Layer index.
    pub layer: usize,
    /// Stream name (`resid_pre`, ...).
    pub stream: String,
    /// `cos(μ_harmful, μ_harmless)`.
    pub cos_means: f64,
    /// `mean_f σ²_f` of the harmful set.
    pub mean_var_harmful: f64,
    /// `mean_f σ²_f` of the harmless set.
    pub mean_var_harmless: f64,
    /// `max_f σ²_f` of the harmful set.
    pub max_var_harmful: f64,
    /// `max_f σ²_f` of the harmless set.
    pub max_var_harmless: f64,
    /// `‖μ_H − μ_B‖`.
    pub diff_norm: f64,
    /// `‖μ_H − μ_B‖ / max(‖μ_H‖, ‖μ_B‖)`.
    pub signal_to_noise: f64,
    /// Mean activation length, harmful set (residual norm growth across layers).
    pub mean_norm_harmful: f64,
    /// Mean activation length, harmless set.
    pub mean_norm_harmless: f64,
    /// Cosine between this layer's direction and the previous layer's (None at the first layer).
    pub cos_previous_direction: Option<f64>,
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

pub(crate) fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let d = norm(a) * norm(b);
    if d > 0.0 {
        dot(a, b) / d
    } else {
        0.0
    }
}

fn mean_max(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, v.iter().copied().fold(0.0, f64::max))
}

/// Metrics of every layer of one stream, from each set's statistics (indexed by layer).
pub fn layer_metrics(
    stream: &str,
    layers: &[usize],
    harmful: &[RunningStats],
    harmless: &[RunningStats],
) -> Vec<LayerMetrics> {
    let mut previous: Option<Vec<f64>> = None;
    layers
        .iter()
        .zip(harmful.iter().zip(harmless))
        .map(|(&layer, (h, b))| {
            let (mh, mb) = (h.mean(), b.mean());
            let diff: Vec<f64> = mh.iter().zip(mb).map(|(x, y)| x - y).collect();
            let diff_norm = norm(&diff);
            let (mean_var_harmful, max_var_harmful) = mean_max(&h.variance());
            let (mean_var_harmless, max_var_harmless) = mean_max(&b.variance());
            let scale = norm(mh).max(norm(mb));
            let cos_previous_direction = previous.as_ref().map(|p| cosine(p, &diff));
            previous = Some(diff);
            LayerMetrics {
                layer,
                stream: stream.to_string(),
                cos_means: cosine(mh, mb),
                mean_var_harmful,
                mean_var_harmless,
                max_var_harmful,
                max_var_harmless,
                diff_norm,
                signal_to_noise: if scale > 0.0 { diff_norm / scale } else { 0.0 },
                mean_norm_harmful: h.mean_norm(),
                mean_norm_harmless: b.mean_norm(),
                cos_previous_direction,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_their_definitions() {
        let mut h = RunningStats::new(2);
        let mut b = RunningStats::new(2);
        h.push_rows(&[2.0, 0.0, 4.0, 0.0]); // mean (3, 0), var (1, 0)
        b.push_rows(&[0.0, 1.0, 0.0, 3.0]); // mean (0, 2), var (0, 1)
        let m = &layer_metrics("resid_pre", &[5], &[h], &[b])[0];
        assert_eq!(m.layer, 5);
        assert!(m.cos_means.abs() < 1e-12, "orthogonal means");
        assert!((m.mean_var_harmful - 0.5).abs() < 1e-12 && (m.max_var_harmful - 1.0).abs() < 1e-12);
        assert!((m.diff_norm - 13f64.sqrt()).abs() < 1e-12);
        assert!((m.signal_to_noise - 13f64.sqrt() / 3.0).abs() < 1e-12);
        assert!((m.mean_norm_harmful - 3.0).abs() < 1e-12);
        assert!(m.cos_previous_direction.is_none());
    }
}
