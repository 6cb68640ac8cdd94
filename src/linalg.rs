//! Small dense linear algebra: orthonormal bases of directions ([`Basis`]), and on top of faer a
//! thin SVD and a randomized truncated SVD for tall/wide matrices when only the top k singular
//! vectors are needed.

use crate::{Error, Result};
use faer::Mat;
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// An orthonormal set of directions in the residual stream (f64).
#[derive(Debug, Clone, PartialEq)]
pub struct Basis {
    pub(crate) rows: Vec<Vec<f64>>,
}

/// Relative length below which a vector counts as dependent on the ones before it.
const RANK_TOLERANCE: f64 = 1e-6;

impl Basis {
    /// Orthonormalize `vectors` (Gram–Schmidt, twice for stability). Errors on empty, non-finite,
    /// zero or linearly dependent input.
    pub fn orthonormal<T: Copy + Into<f64>>(vectors: &[Vec<T>]) -> Result<Basis> {
        let hidden = vectors.first().map(Vec::len).unwrap_or(0);
        if hidden == 0 {
            return Err(Error::Invalid("no direction given (empty basis)".into()));
        }
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(vectors.len());
        for (i, v) in vectors.iter().enumerate() {
            if v.len() != hidden {
                return Err(Error::Invalid(format!("direction {i} has length {}, expected {hidden}", v.len())));
            }
            let mut x: Vec<f64> = v.iter().map(|&a| a.into()).collect();
            if x.iter().any(|a| !a.is_finite()) {
                return Err(Error::Invalid(format!("direction {i} contains NaN or infinite values")));
            }
            let original = norm(&x);
            if original == 0.0 {
                return Err(Error::Invalid(format!("direction {i} is zero")));
            }
            for _ in 0..2 {
                for q in &rows {
                    let c = dot(q, &x);
                    x.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
                }
            }
            let remaining = norm(&x);
            if remaining < RANK_TOLERANCE * original {
                return Err(Error::Invalid(format!("direction {i} is linearly dependent on the ones before it")));
            }
            x.iter_mut().for_each(|a| *a /= remaining);
            rows.push(x);
        }
        Ok(Basis { rows })
    }

    /// The basis vectors.
    pub fn rows(&self) -> &[Vec<f64>] {
        &self.rows
    }

    /// Vector length.
    pub fn hidden(&self) -> usize {
        self.rows[0].len()
    }

    /// Number of directions.
    pub fn k(&self) -> usize {
        self.rows.len()
    }

    /// The basis a writer behind a post-norm with scale `γ` must be edited against: the norm's
    /// output `γ ⊙ x / rms(x)` is orthogonal to `q` iff `x` is orthogonal to `γ ⊙ q`.
    pub fn through_norm(&self, gamma: &[f32]) -> Result<Basis> {
        if gamma.len() != self.hidden() {
            return Err(Error::Invalid(format!("norm weight has length {}, expected {}", gamma.len(), self.hidden())));
        }
        let scaled: Vec<Vec<f64>> =
            self.rows.iter().map(|q| q.iter().zip(gamma).map(|(a, &g)| a * f64::from(g)).collect()).collect();
        Basis::orthonormal(&scaled)
    }

    /// Coefficients `Q v` of one vector.
    pub fn coefficients(&self, v: &[f32]) -> Vec<f64> {
        self.rows.iter().map(|q| q.iter().zip(v).map(|(a, &b)| a * f64::from(b)).sum()).collect()
    }
}

/// `a · b`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `‖a‖`.
pub(crate) fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// A thin SVD `A = U diag(s) Vᵀ` with singular values descending.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors as columns, `[rows, k]` row-major.
    pub u: Vec<Vec<f64>>,
    /// Singular values, descending.
    pub s: Vec<f64>,
    /// Right singular vectors as rows (`vᵢ`), each of length `cols`.
    pub v: Vec<Vec<f64>>,
}

impl Svd {
    /// The i-th left singular vector.
    pub fn u_col(&self, i: usize) -> Vec<f64> {
        self.u.iter().map(|row| row[i]).collect()
    }

    /// Keep the top `k` triplets.
    pub fn truncate(mut self, k: usize) -> Svd {
        for row in &mut self.u {
            row.truncate(k);
        }
        self.s.truncate(k);
        self.v.truncate(k);
        self
    }
}

/// Exact thin SVD of a row-major `rows × cols` matrix.
pub fn thin_svd(rows: usize, cols: usize, data: &[f64]) -> Result<Svd> {
    assert_eq!(data.len(), rows * cols, "matrix buffer does not match its shape");
    let a = Mat::<f64>::from_fn(rows, cols, |i, j| data[i * cols + j]);
    let svd = a.thin_svd().map_err(|e| Error::Other(format!("SVD did not converge: {e:?}")))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let k = s.nrows();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    Ok(Svd {
        u: (0..rows).map(|i| order.iter().map(|&c| u[(i, c)]).collect()).collect(),
        s: order.iter().map(|&c| s[c]).collect(),
        v: order.iter().map(|&c| (0..cols).map(|j| v[(j, c)]).collect()).collect(),
    })
}

/// Top-`k` SVD by the randomized range finder (Halko et al.): sketch `Y = (A Aᵀ)^q A Ω` with
/// `k + oversample` Gaussian columns, orthonormalize, and take the exact SVD of the small `Qᵀ A`.
pub fn randomized_svd(
    rows: usize,
    cols: usize,
    data: &[f64],
    k: usize,
    power_iterations: usize,
    seed: u64,
) -> Result<Svd> {
    let sketch = (k + 10).min(rows.min(cols));
    if sketch >= rows.min(cols) {
        return Ok(thin_svd(rows, cols, data)?.truncate(k));
    }
    let a = Mat::<f64>::from_fn(rows, cols, |i, j| data[i * cols + j]);
    let mut rng = StdRng::seed_from_u64(seed);
    let omega = Mat::<f64>::from_fn(cols, sketch, |_, _| StandardNormal.sample(&mut rng));
    let mut y = &a * &omega;
    for _ in 0..power_iterations {
        let q = orthonormal_columns(&y);
        let z = a.transpose() * &q;
        let qz = orthonormal_columns(&z);
        y = &a * &qz;
    }
    let q = orthonormal_columns(&y);
    let b = q.transpose() * &a; // sketch × cols
    let small = thin_svd(
        sketch,
        cols,
        &(0..sketch).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| b[(i, j)]).collect::<Vec<_>>(),
    )?;
    let u_small = &small.u;
    let u: Vec<Vec<f64>> =
        (0..rows).map(|i| (0..k).map(|c| (0..sketch).map(|t| q[(i, t)] * u_small[t][c]).sum()).collect()).collect();
    Ok(Svd { u, s: small.s[..k].to_vec(), v: small.v[..k].to_vec() })
}

fn orthonormal_columns(m: &Mat<f64>) -> Mat<f64> {
    m.qr().compute_thin_Q()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, decay: f64, seed: u64) -> Vec<f64> {
        // A = Σ σᵢ xᵢ yᵢᵀ with σᵢ = decayⁱ and random (not orthogonal) x, y.
        let mut rng = StdRng::seed_from_u64(seed);
        let mut a = vec![0.0; rows * cols];
        for i in 0..rows.min(cols) {
            let x: Vec<f64> = (0..rows).map(|_| StandardNormal.sample(&mut rng)).collect();
            let y: Vec<f64> = (0..cols).map(|_| StandardNormal.sample(&mut rng)).collect();
            let s = decay.powi(i as i32);
            for r in 0..rows {
                for c in 0..cols {
                    a[r * cols + c] += s * x[r] * y[c];
                }
            }
        }
        a
    }

    fn check_exact(rows: usize, cols: usize) {
        let a = matrix(rows, cols, 0.7, 1);
        let svd = thin_svd(rows, cols, &a).unwrap();
        let k = rows.min(cols);
        assert_eq!(svd.s.len(), k);
        assert!(svd.s.windows(2).all(|w| w[0] >= w[1]), "descending");
        // Reconstruction.
        let mut err: f64 = 0.0;
        for r in 0..rows {
            for c in 0..cols {
                let v: f64 = (0..k).map(|i| svd.u[r][i] * svd.s[i] * svd.v[i][c]).sum();
                err = err.max((v - a[r * cols + c]).abs());
            }
        }
        assert!(err < 1e-9, "{rows}x{cols}: reconstruction error {err}");
        // Orthonormal U columns and V rows.
        for i in 0..k {
            for j in 0..k {
                let uu: f64 = (0..rows).map(|r| svd.u[r][i] * svd.u[r][j]).sum();
                let vv: f64 = (0..cols).map(|c| svd.v[i][c] * svd.v[j][c]).sum();
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((uu - e).abs() < 1e-9 && (vv - e).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn exact_svd_reconstructs_square_tall_and_wide() {
        check_exact(12, 12);
        check_exact(30, 8);
        check_exact(8, 30);
    }

    #[test]
    fn randomized_svd_finds_the_top_singular_values() {
        for (rows, cols) in [(120, 120), (200, 60), (60, 200)] {
            let a = matrix(rows, cols, 0.6, 2);
            let exact = thin_svd(rows, cols, &a).unwrap();
            let fast = randomized_svd(rows, cols, &a, 5, 2, 3).unwrap();
            for i in 0..5 {
                let rel = (fast.s[i] - exact.s[i]).abs() / exact.s[i];
                assert!(rel < 1e-6, "{rows}x{cols}: σ{i} {} vs {}", fast.s[i], exact.s[i]);
                let dot: f64 = (0..rows).map(|r| fast.u[r][i] * exact.u[r][i]).sum();
                assert!(dot.abs() > 1.0 - 1e-6, "{rows}x{cols}: u{i} alignment {dot}");
            }
        }
    }
}
