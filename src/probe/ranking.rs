//! Ranking layers for direction extraction.

use super::metrics::{cosine, LayerMetrics};
use crate::names::Named;
use serde::{Deserialize, Serialize};

/// How layers are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RankRule {
    /// Low mean variance, then low max variance, then low cosine between the means — combined
    /// as a weighted sum of ranks (weights 3, 2, 1), variances taken relative to the squared
    /// activation length so layers of different scale compare. Spelled `research-note` before
    /// (still accepted).
    #[serde(alias = "research-note")]
    LowVariance,
    /// Largest `‖μ_H − μ_B‖` relative to activation length (signal-to-noise).
    MaxNorm,
    /// The direction most similar on average to every other layer's (as Angular Steering picks).
    MeanSimilarity,
}

impl Named for RankRule {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("low-variance", RankRule::LowVariance),
        ("max-norm", RankRule::MaxNorm),
        ("mean-similarity", RankRule::MeanSimilarity),
        ("research-note", RankRule::LowVariance),
    ];
}

impl std::str::FromStr for RankRule {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        RankRule::from_name(s)
    }
}

/// The rule's name as the command line and recipes spell it (`low-variance`, ...).
pub fn rule_name(rule: RankRule) -> String {
    rule.name().to_string()
}

/// Layers in order of preference with their scores (lower is better for the research note's
/// rank sum; higher for the others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// The rule.
    pub rule: RankRule,
    /// `(layer, score)`, best first.
    pub order: Vec<(usize, f64)>,
}

impl Ranking {
    /// The best layer, if any candidate exists.
    pub fn best(&self) -> Option<usize> {
        self.order.first().map(|(l, _)| *l)
    }
}

fn ranks(values: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut r = vec![0.0; values.len()];
    for (rank, i) in idx.into_iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}

/// Rank the candidate layers of one stream. `directions[i]` is the (unnormalized) difference of
/// means of `metrics[i]`, used by [`RankRule::MeanSimilarity`].
pub fn rank(metrics: &[LayerMetrics], directions: &[Vec<f64>], candidates: &[usize], rule: RankRule) -> Ranking {
    let chosen: Vec<usize> = (0..metrics.len()).filter(|&i| candidates.contains(&metrics[i].layer)).collect();
    let mut order: Vec<(usize, f64)> = match rule {
        RankRule::LowVariance => {
            let rel = |i: usize, v: f64| {
                let m = &metrics[i];
                let n = 0.5 * (m.mean_norm_harmful + m.mean_norm_harmless);
                if n > 0.0 {
                    v / (n * n)
                } else {
                    v
                }
            };
            let mean_var: Vec<f64> = chosen
                .iter()
                .map(|&i| rel(i, 0.5 * (metrics[i].mean_var_harmful + metrics[i].mean_var_harmless)))
                .collect();
            let max_var: Vec<f64> =
                chosen.iter().map(|&i| rel(i, metrics[i].max_var_harmful.max(metrics[i].max_var_harmless))).collect();
            let cos: Vec<f64> = chosen.iter().map(|&i| metrics[i].cos_means).collect();
            let (a, b, c) = (ranks(&mean_var), ranks(&max_var), ranks(&cos));
            let mut order: Vec<(usize, f64)> =
                chosen.iter().enumerate().map(|(k, &i)| (metrics[i].layer, 3.0 * a[k] + 2.0 * b[k] + c[k])).collect();
            order.sort_by(|x, y| x.1.total_cmp(&y.1));
            return Ranking { rule, order };
        }
        RankRule::MaxNorm => chosen.iter().map(|&i| (metrics[i].layer, metrics[i].signal_to_noise)).collect(),
        RankRule::MeanSimilarity => chosen
            .iter()
            .map(|&i| {
                let others: Vec<f64> =
                    (0..directions.len()).filter(|&j| j != i).map(|j| cosine(&directions[i], &directions[j])).collect();
                (metrics[i].layer, others.iter().sum::<f64>() / others.len().max(1) as f64)
            })
            .collect(),
    };
    order.sort_by(|x, y| y.1.total_cmp(&x.1));
    Ranking { rule, order }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(layer: usize, mean_var: f64, max_var: f64, cos: f64, snr: f64) -> LayerMetrics {
        LayerMetrics {
            layer,
            stream: "resid_pre".into(),
            cos_means: cos,
            mean_var_harmful: mean_var,
            mean_var_harmless: mean_var,
            max_var_harmful: max_var,
            max_var_harmless: max_var,
            diff_norm: snr,
            signal_to_noise: snr,
            mean_norm_harmful: 1.0,
            mean_norm_harmless: 1.0,
            cos_previous_direction: None,
        }
    }

    #[test]
    fn the_old_name_of_the_low_variance_rule_still_parses() {
        assert_eq!(RankRule::from_name("research-note").unwrap(), RankRule::LowVariance);
        assert_eq!(RankRule::LowVariance.name(), "low-variance");
        assert_eq!(serde_json::from_str::<RankRule>("\"research-note\"").unwrap(), RankRule::LowVariance);
        assert_eq!(serde_json::to_string(&RankRule::LowVariance).unwrap(), "\"low-variance\"");
    }

    #[test]
    fn low_variance_rule_weighs_mean_variance_first() {
        let metrics = vec![m(0, 0.1, 9.0, 0.9, 0.1), m(1, 0.2, 1.0, 0.1, 0.5), m(2, 0.3, 2.0, 0.2, 0.9)];
        let r = rank(&metrics, &[vec![1.0], vec![1.0], vec![1.0]], &[0, 1, 2], RankRule::LowVariance);
        // Layer 0: ranks (0, 2, 2) → 4; layer 1: (1, 0, 0) → 3; layer 2: (2, 1, 1) → 9.
        assert_eq!(r.order.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 0, 2]);
        let r = rank(&metrics, &[], &[0, 2], RankRule::MaxNorm);
        assert_eq!(r.best(), Some(2));
    }

    #[test]
    fn mean_similarity_prefers_the_consensus_direction() {
        let metrics = vec![m(0, 1.0, 1.0, 0.0, 0.0), m(1, 1.0, 1.0, 0.0, 0.0), m(2, 1.0, 1.0, 0.0, 0.0)];
        let dirs = vec![vec![1.0, 0.0], vec![1.0, 1.0], vec![0.0, 1.0]];
        assert_eq!(rank(&metrics, &dirs, &[0, 1, 2], RankRule::MeanSimilarity).best(), Some(1));
    }
}
