//! Direction extraction from the two sets' statistics.

use super::metrics::{dot, norm};
use super::stats::RunningStats;

/// `μ_harmful − μ_harmless`.
pub fn mean_difference(harmful: &RunningStats, harmless: &RunningStats) -> Vec<f64> {
    harmful.mean().iter().zip(harmless.mean()).map(|(a, b)| a - b).collect()
}

/// `v / ‖v‖` in f32, or None for a zero vector.
pub fn unit(v: &[f64]) -> Option<Vec<f32>> {
    let n = norm(v);
    (n > 0.0 && n.is_finite()).then(|| v.iter().map(|x| (x / n) as f32).collect())
}

/// The "projected" direction: `r` with its component along the harmless mean removed, so
/// ablating it does not shrink the activations' typical component.
pub fn projected(direction: &[f64], harmless_mean: &[f64]) -> Option<Vec<f32>> {
    let n = norm(harmless_mean);
    if n == 0.0 {
        return unit(direction);
    }
    let m: Vec<f64> = harmless_mean.iter().map(|x| x / n).collect();
    let c = dot(direction, &m);
    let v: Vec<f64> = direction.iter().zip(&m).map(|(d, mm)| d - c * mm).collect();
    unit(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_unit_and_projection() {
        let mut h = RunningStats::new(2);
        let mut b = RunningStats::new(2);
        h.push(&[3.0, 1.0]);
        b.push(&[0.0, 1.0]);
        let d = mean_difference(&h, &b);
        assert_eq!(d, vec![3.0, 0.0]);
        assert_eq!(unit(&d).unwrap(), vec![1.0, 0.0]);
        assert!(unit(&[0.0, 0.0]).is_none());
        let p = projected(&[1.0, 1.0], &[0.0, 5.0]).unwrap();
        assert!((p[0] - 1.0).abs() < 1e-6 && p[1].abs() < 1e-6);
    }
}
