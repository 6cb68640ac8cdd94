//! Streaming statistics of activations: Welford's mean and variance per feature, in f64.

use serde::{Deserialize, Serialize};

/// Running mean and per-feature variance of a stream of `[hidden]` vectors, plus the mean
/// vector length. Never holds the vectors themselves. A vector with a NaN or infinite value is
/// counted but not folded in: [`RunningStats::first_non_finite`] names it, so a caller reports
/// the broken prompt instead of statistics that silently turned NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    norm_sum: f64,
    #[serde(default)]
    seen: u64,
    #[serde(default)]
    first_non_finite: Option<u64>,
}

impl RunningStats {
    /// Empty statistics for vectors of length `hidden`.
    pub fn new(hidden: usize) -> RunningStats {
        RunningStats {
            count: 0,
            mean: vec![0.0; hidden],
            m2: vec![0.0; hidden],
            norm_sum: 0.0,
            seen: 0,
            first_non_finite: None,
        }
    }

    /// Add one vector (Welford's update); a non-finite vector is only recorded (see
    /// [`RunningStats::first_non_finite`]).
    pub fn push(&mut self, x: &[f32]) {
        assert_eq!(x.len(), self.mean.len(), "vector length does not match the statistics");
        self.seen += 1;
        if !x.iter().all(|v| v.is_finite()) {
            self.first_non_finite.get_or_insert(self.seen - 1);
            return;
        }
        self.count += 1;
        let n = self.count as f64;
        let mut sq = 0.0;
        for ((m, m2), &v) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(x) {
            let v = f64::from(v);
            sq += v * v;
            let delta = v - *m;
            *m += delta / n;
            *m2 += delta * (v - *m);
        }
        self.norm_sum += sq.sqrt();
    }

    /// Add every row of a row-major `[rows, hidden]` buffer.
    pub fn push_rows(&mut self, rows: &[f32]) {
        let hidden = self.mean.len();
        for row in rows.chunks_exact(hidden) {
            self.push(row);
        }
    }

    /// Merge another set of statistics (Chan et al.'s parallel update).
    pub fn merge(&mut self, other: &RunningStats) {
        if self.first_non_finite.is_none() {
            self.first_non_finite = other.first_non_finite.map(|i| i + self.seen);
        }
        self.seen += other.seen;
        if other.count == 0 {
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        for i in 0..self.mean.len() {
            let delta = other.mean[i] - self.mean[i];
            self.mean[i] += delta * nb / n;
            self.m2[i] += other.m2[i] + delta * delta * na * nb / n;
        }
        self.count += other.count;
        self.norm_sum += other.norm_sum;
    }

    /// The index (0-based, in push order) of the first vector that held a NaN or infinity.
    pub fn first_non_finite(&self) -> Option<u64> {
        self.first_non_finite
    }

    /// Number of vectors seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean vector.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Per-feature population variance (0 before two samples).
    pub fn variance(&self) -> Vec<f64> {
        if self.count < 2 {
            return vec![0.0; self.mean.len()];
        }
        self.m2.iter().map(|m2| m2 / self.count as f64).collect()
    }

    /// Mean Euclidean length of the vectors seen.
    pub fn mean_norm(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.norm_sum / self.count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn two_pass(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() as f64;
        let h = rows[0].len();
        let mean: Vec<f64> = (0..h).map(|i| rows.iter().map(|r| f64::from(r[i])).sum::<f64>() / n).collect();
        let var = (0..h).map(|i| rows.iter().map(|r| (f64::from(r[i]) - mean[i]).powi(2)).sum::<f64>() / n).collect();
        (mean, var)
    }

    proptest! {
        #[test]
        fn welford_matches_two_pass(rows in proptest::collection::vec(proptest::collection::vec(-1e3f32..1e3, 4), 2..40), split in 0usize..40) {
            let mut stats = RunningStats::new(4);
            rows.iter().for_each(|r| stats.push(r));
            let (mean, var) = two_pass(&rows);
            for i in 0..4 {
                prop_assert!((stats.mean()[i] - mean[i]).abs() < 1e-9 * (1.0 + mean[i].abs()));
                prop_assert!((stats.variance()[i] - var[i]).abs() < 1e-7 * (1.0 + var[i]));
            }
            // Merging two halves gives the same result.
            let split = split % rows.len();
            let (mut a, mut b) = (RunningStats::new(4), RunningStats::new(4));
            rows[..split].iter().for_each(|r| a.push(r));
            rows[split..].iter().for_each(|r| b.push(r));
            a.merge(&b);
            prop_assert_eq!(a.count(), stats.count());
            for i in 0..4 {
                prop_assert!((a.mean()[i] - mean[i]).abs() < 1e-9 * (1.0 + mean[i].abs()));
                prop_assert!((a.variance()[i] - var[i]).abs() < 1e-7 * (1.0 + var[i]));
            }
        }
    }

    #[test]
    fn non_finite_vectors_are_named_not_folded_in() {
        let mut stats = RunningStats::new(2);
        stats.push(&[1.0, 2.0]);
        stats.push(&[f32::NAN, 0.0]);
        stats.push(&[3.0, f32::INFINITY]);
        assert_eq!(stats.first_non_finite(), Some(1));
        assert_eq!(stats.count(), 1);
        assert!(stats.mean().iter().all(|m| m.is_finite()));
        let mut merged = RunningStats::new(2);
        merged.push(&[0.0, 0.0]);
        merged.merge(&stats);
        assert_eq!(merged.first_non_finite(), Some(2), "index counted across the merge");
    }

    #[test]
    fn mean_norm_is_the_average_length() {
        let mut stats = RunningStats::new(2);
        stats.push_rows(&[3.0, 4.0, 0.0, 1.0]);
        assert!((stats.mean_norm() - 3.0).abs() < 1e-12);
        assert_eq!(stats.count(), 2);
    }
}
