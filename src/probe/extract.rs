//! Direction extraction from the two sets' statistics.

use super::metrics::{dot, norm};
use super::stats::RunningStats;
use crate::linalg::thin_svd;
use crate::{Error, Result};

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

/// The top `k` principal directions of the differences between every harmful and every
/// harmless activation: the eigenvectors of
/// `E_{i,j}[(h_i − b_j)(h_i − b_j)ᵀ] = d dᵀ + Σ_H + Σ_B` (with `d = μ_H − μ_B` and `Σ` each
/// set's covariance), as the right singular vectors of the stacked rows `(h_i − μ_H)/√n`,
/// `(b_j − μ_B)/√m` and `d`. Unlike pairing prompt i of one set with prompt i of the other, it
/// does not depend on the order of either set. Each direction is signed to point along `mean`
/// (the difference of means); rows are unit length, not yet orthonormalized against each other.
pub fn pair_pca(harmful: &[Vec<f32>], harmless: &[Vec<f32>], k: usize, mean: &[f64]) -> Result<Vec<Vec<f64>>> {
    let hidden = mean.len();
    let (n, m) = (harmful.len(), harmless.len());
    let rows = n + m + 1;
    if n == 0 || m == 0 || k == 0 || k > rows.min(hidden) {
        return Err(Error::Invalid(format!(
            "--pca {k} needs 1 ≤ K ≤ min(prompts + 1, hidden) = {} (have {n} harmful and {m} harmless prompts)",
            rows.min(hidden)
        )));
    }
    let centre = |set: &[Vec<f32>]| -> Vec<f64> {
        let mut c = vec![0.0; hidden];
        set.iter().for_each(|v| c.iter_mut().zip(v).for_each(|(a, &x)| *a += f64::from(x)));
        c.iter_mut().for_each(|a| *a /= set.len() as f64);
        c
    };
    let (mh, mb) = (centre(harmful), centre(harmless));
    let mut data = Vec::with_capacity(rows * hidden);
    for (set, mu) in [(harmful, &mh), (harmless, &mb)] {
        let w = (set.len() as f64).sqrt().recip();
        for v in set {
            data.extend(v.iter().zip(mu.iter()).map(|(&x, c)| (f64::from(x) - c) * w));
        }
    }
    data.extend(mh.iter().zip(&mb).map(|(a, b)| a - b));
    let svd = thin_svd(rows, hidden, &data)?;
    Ok(svd
        .v
        .iter()
        .take(k)
        .map(|v| {
            let sign = if dot(v, mean) < 0.0 { -1.0 } else { 1.0 };
            v.iter().map(|x| x * sign).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_pca_does_not_depend_on_prompt_order_and_leads_with_the_mean_difference() {
        // Harmful activations spread along e1 around (4, 0, 0); harmless along e2 around 0.
        let harmful: Vec<Vec<f32>> = (0..6).map(|i| vec![4.0, 0.0, 0.3 * i as f32 - 0.75]).collect();
        let harmless: Vec<Vec<f32>> = (0..6).map(|i| vec![0.0, 0.5 * (i as f32 - 2.5), 0.1 * (i % 2) as f32]).collect();
        let mean = vec![4.0, 0.0, 0.0];
        let a = pair_pca(&harmful, &harmless, 2, &mean).unwrap();
        let mut shuffled = harmless.clone();
        shuffled.reverse();
        shuffled.swap(0, 3);
        let b = pair_pca(&harmful, &shuffled, 2, &mean).unwrap();
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() < 1e-9, "{a:?} vs {b:?}");
            }
        }
        assert!(a[0][0] > 0.999, "first component is the mean difference: {a:?}");
        assert!(a[1][1].abs() > 0.99, "second is the largest spread (harmless, along e2): {a:?}");
        assert!(pair_pca(&harmful, &harmless, 4, &mean).is_err());
    }

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
