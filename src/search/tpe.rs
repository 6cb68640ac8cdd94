//! A tree-structured Parzen estimator (TPE) sampler, univariate, for mixed real and choice
//! dimensions (Bergstra et al. 2011).
//!
//! Given the trials so far split into a *good* group (the trials closest to the search's goal,
//! see `run.rs`) and the rest, it fits per dimension a density `l(x)` to the good points
//! and `g(x)` to the others, draws candidates from `l`, and returns the one with the largest
//! `Σ_d log l_d(x_d) − log g_d(x_d)`. Real dimensions use a mixture of Gaussians truncated to
//! the range, one per point (bandwidth: the larger gap to its neighbours, bounded below by
//! range / min(100, n + 1)) plus a wide prior component; choices use counts plus one.

use super::space::Dim;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// A uniformly random point of `dims`.
pub fn random_point(dims: &[Dim], rng: &mut impl Rng) -> Vec<f64> {
    dims.iter()
        .map(|d| match *d {
            Dim::Float { lo, hi } => {
                if hi > lo {
                    rng.random_range(lo..=hi)
                } else {
                    lo
                }
            }
            Dim::Choice { n } => rng.random_range(0..n.max(1)) as f64,
        })
        .collect()
}

/// The next point: `candidates` draws from the good points' density, scored by `l/g`.
pub fn suggest(dims: &[Dim], good: &[Vec<f64>], bad: &[Vec<f64>], candidates: usize, rng: &mut impl Rng) -> Vec<f64> {
    let column = |points: &[Vec<f64>], d: usize| points.iter().map(|p| p[d]).collect::<Vec<f64>>();
    let estimators: Vec<(Parzen, Parzen)> = dims
        .iter()
        .enumerate()
        .map(|(d, dim)| (Parzen::fit(*dim, &column(good, d)), Parzen::fit(*dim, &column(bad, d))))
        .collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for _ in 0..candidates.max(1) {
        let x: Vec<f64> = estimators.iter().map(|(l, _)| l.sample(rng)).collect();
        let score: f64 = estimators.iter().zip(&x).map(|((l, g), &v)| l.log_density(v) - g.log_density(v)).sum();
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, x));
        }
    }
    best.expect("at least one candidate").1
}

/// One dimension's density estimate.
#[derive(Debug, Clone)]
enum Parzen {
    /// Truncated Gaussian mixture on `[lo, hi]`: (mean, sigma) per component, equal weights.
    Float { lo: f64, hi: f64, components: Vec<(f64, f64)> },
    /// Probabilities of each choice.
    Choice { p: Vec<f64> },
}

impl Parzen {
    fn fit(dim: Dim, points: &[f64]) -> Parzen {
        match dim {
            Dim::Choice { n } => {
                let n = n.max(1);
                let mut counts = vec![1.0; n];
                for &v in points {
                    counts[(v.round().max(0.0) as usize).min(n - 1)] += 1.0;
                }
                let total: f64 = counts.iter().sum();
                Parzen::Choice { p: counts.into_iter().map(|c| c / total).collect() }
            }
            Dim::Float { lo, hi } => {
                let range = (hi - lo).max(1e-12);
                let mut sorted: Vec<f64> = points.iter().map(|v| v.clamp(lo, hi)).collect();
                sorted.sort_by(f64::total_cmp);
                let floor = range / (sorted.len() as f64 + 1.0).min(100.0);
                let mut components: Vec<(f64, f64)> = sorted
                    .iter()
                    .enumerate()
                    .map(|(i, &m)| {
                        let left = if i == 0 { m - lo } else { m - sorted[i - 1] };
                        let right = if i + 1 == sorted.len() { hi - m } else { sorted[i + 1] - m };
                        (m, left.max(right).clamp(floor, range))
                    })
                    .collect();
                components.push(((lo + hi) / 2.0, range));
                Parzen::Float { lo, hi, components }
            }
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Parzen::Choice { p } => {
                let mut u: f64 = rng.random();
                for (i, &pi) in p.iter().enumerate() {
                    if u < pi {
                        return i as f64;
                    }
                    u -= pi;
                }
                (p.len() - 1) as f64
            }
            Parzen::Float { lo, hi, components } => {
                let (mean, sigma) = components[rng.random_range(0..components.len())];
                let normal = Normal::new(mean, sigma).expect("positive sigma");
                for _ in 0..64 {
                    let v = normal.sample(rng);
                    if (*lo..=*hi).contains(&v) {
                        return v;
                    }
                }
                mean.clamp(*lo, *hi)
            }
        }
    }

    fn log_density(&self, x: f64) -> f64 {
        match self {
            Parzen::Choice { p } => p[(x.round().max(0.0) as usize).min(p.len() - 1)].ln(),
            Parzen::Float { lo, hi, components } => {
                let density: f64 = components
                    .iter()
                    .map(|&(m, s)| {
                        let mass = phi((hi - m) / s) - phi((lo - m) / s);
                        let z = (x - m) / s;
                        (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt()) / mass.max(1e-300)
                    })
                    .sum::<f64>()
                    / components.len() as f64;
                density.max(1e-300).ln()
            }
        }
    }
}

/// The standard normal distribution function.
fn phi(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn densities_integrate_to_one_over_the_range() {
        let p = Parzen::fit(Dim::Float { lo: -1.0, hi: 3.0 }, &[0.0, 0.2, 2.9]);
        let steps = 20_000;
        let h = 4.0 / steps as f64;
        let integral: f64 = (0..steps).map(|i| p.log_density(-1.0 + (i as f64 + 0.5) * h).exp() * h).sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        let c = Parzen::fit(Dim::Choice { n: 3 }, &[0.0, 0.0, 2.0]);
        let total: f64 = (0..3).map(|i| c.log_density(i as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(c.log_density(0.0) > c.log_density(1.0));
    }

    #[test]
    fn suggestions_move_toward_the_good_region() {
        // Good points near 0.8, bad ones over the rest of the range: the suggestion should be
        // near 0.8 (where l/g is largest), and take the good points' choice.
        let dims = [Dim::Float { lo: 0.0, hi: 1.0 }, Dim::Choice { n: 2 }];
        let good = vec![vec![0.78, 1.0], vec![0.82, 1.0], vec![0.8, 1.0]];
        let bad: Vec<Vec<f64>> =
            (0..=20).map(|i| f64::from(i) / 20.0).filter(|x| (x - 0.8).abs() > 0.12).map(|x| vec![x, 0.0]).collect();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..10 {
            let x = suggest(&dims, &good, &bad, 24, &mut rng);
            assert!((x[0] - 0.8).abs() < 0.15, "{x:?}");
            assert_eq!(x[1], 1.0);
        }
    }

    #[test]
    fn a_seeded_sampler_repeats_itself_and_stays_in_range() {
        let dims = [Dim::Float { lo: 2.0, hi: 5.0 }, Dim::Choice { n: 4 }];
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let good = vec![random_point(&dims, &mut rng)];
            let bad = vec![random_point(&dims, &mut rng), random_point(&dims, &mut rng)];
            suggest(&dims, &good, &bad, 16, &mut rng)
        };
        assert_eq!(draw(3), draw(3));
        for seed in 0..50 {
            let x = draw(seed);
            assert!((2.0..=5.0).contains(&x[0]) && (0.0..4.0).contains(&x[1]));
        }
    }
}
