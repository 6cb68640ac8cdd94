//! How often the router of each sparse layer chooses each expert for a prompt set, counted at
//! the probe's captured positions (the last token by default): the tokens the direction is
//! measured at. The template's shared tokens before them route alike for both sets, so
//! counting them would only dilute the difference (and a shared prefix runs once per batch,
//! not once per prompt).

use crate::model::Routes;
use serde::Serialize;
use std::collections::BTreeMap;

/// One prompt set's expert choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutingCounts {
    /// Experts per sparse layer.
    pub experts: usize,
    /// Sparse layer → how many counted tokens had each expert among their top k.
    pub chosen: BTreeMap<usize, Vec<u64>>,
    /// Sparse layer → tokens counted (prompts × positions); each gives top-k choices.
    pub tokens: BTreeMap<usize, u64>,
}

impl RoutingCounts {
    /// Counts for a model with `experts` experts per sparse layer (0: a dense model).
    pub fn new(experts: usize) -> RoutingCounts {
        RoutingCounts { experts, ..RoutingCounts::default() }
    }

    /// Add one batch's choices at `layer`.
    pub fn add(&mut self, layer: usize, routes: &Routes) {
        let chosen = self.chosen.entry(layer).or_insert_with(|| vec![0; self.experts]);
        let tokens = self.tokens.entry(layer).or_default();
        for token in routes.iter().flatten() {
            *tokens += 1;
            for &e in token {
                if e >= chosen.len() {
                    chosen.resize(e + 1, 0);
                }
                chosen[e] += 1;
            }
        }
    }

    /// At `layer`, the share of counted tokens that chose each expert (sums to top k).
    pub fn frequency(&self, layer: usize) -> Vec<f64> {
        let tokens = self.tokens.get(&layer).copied().unwrap_or(0).max(1) as f64;
        self.chosen.get(&layer).map_or_else(Vec::new, |c| c.iter().map(|&n| n as f64 / tokens).collect())
    }
}

/// The two sets' routing side by side, per sparse layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingLayer {
    /// The layer.
    pub layer: usize,
    /// Share of harmful tokens that chose each expert.
    pub harmful: Vec<f64>,
    /// Share of harmless tokens that chose each expert.
    pub harmless: Vec<f64>,
    /// `harmful − harmless` per expert.
    pub difference: Vec<f64>,
    /// Total variation distance between the two routing distributions (each frequency over
    /// top k): 0 when both sets route alike, 1 when they never share an expert.
    pub distance: f64,
}

/// Compare the two sets' counts layer by layer (empty for a dense model).
pub fn compare_routing(harmful: &RoutingCounts, harmless: &RoutingCounts) -> Vec<RoutingLayer> {
    harmful
        .chosen
        .keys()
        .filter(|l| harmless.chosen.contains_key(l))
        .map(|&layer| {
            let (h, b) = (harmful.frequency(layer), harmless.frequency(layer));
            let n = h.len().max(b.len());
            let at = |v: &[f64], e: usize| v.get(e).copied().unwrap_or(0.0);
            let difference: Vec<f64> = (0..n).map(|e| at(&h, e) - at(&b, e)).collect();
            let top_k = h.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            let distance = 0.5 * difference.iter().map(|d| d.abs()).sum::<f64>() / top_k;
            RoutingLayer { layer, harmful: h, harmless: b, difference, distance }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_to_tokens_times_top_k_and_the_distance_spans_zero_to_one() {
        let mut a = RoutingCounts::new(4);
        a.add(1, &vec![vec![vec![0, 1]], vec![vec![0, 2]]]);
        assert_eq!(a.chosen[&1], [2, 1, 1, 0]);
        assert_eq!(a.tokens[&1], 2);
        assert_eq!(a.frequency(1), [1.0, 0.5, 0.5, 0.0]);
        let same = compare_routing(&a, &a);
        assert_eq!(same[0].distance, 0.0);
        let mut b = RoutingCounts::new(4);
        b.add(1, &vec![vec![vec![3, 3]]]);
        let apart = compare_routing(&a, &b);
        assert!((apart[0].distance - 1.0).abs() < 1e-12, "{apart:?}");
    }
}
