//! The projection math of the edit, on f32 buffers with f64 accumulation.
//!
//! Conventions (DESIGN.md): a writer `W` is stored `[hidden, in]` (row-major, `y = W x`), and
//! what it writes into the residual stream are its columns; the embedding `E` is `[vocab, hidden]`
//! and writes its rows; a bias is one written vector. Every edit removes (λ = 1) or reflects
//! (λ = 2) the written vectors' components in the span of an orthonormal basis `Q`:
//! `v' = v − λ Qᵀ(Q v)`. Norm preservation rescales each written vector back to its original
//! length, which keeps `Q v' = 0` exactly (rescaling rows of `W` would not).

use rayon::prelude::*;

pub use crate::linalg::Basis;
#[cfg(test)]
use crate::linalg::{dot, norm};

/// The factor that brings a vector of squared length `after_sq` back to `before_sq`.
fn rescale(before_sq: f64, after_sq: f64) -> f64 {
    if after_sq > 0.0 {
        (before_sq / after_sq).sqrt()
    } else {
        1.0
    }
}

/// Squared length after `v − λQᵀc` for orthonormal `Q`: `‖v‖² − (2λ − λ²)‖c‖²`.
fn length_after(before_sq: f64, coeff_sq: f64, strength: f64) -> f64 {
    (before_sq - (2.0 * strength - strength * strength) * coeff_sq).max(0.0)
}

/// Edit each written **column** of `w` (`[hidden, cols]`, row-major) in place.
pub fn edit_columns(w: &mut [f32], cols: usize, basis: &Basis, strength: f64, norm_preserve: bool) {
    let hidden = basis.hidden();
    assert_eq!(w.len(), hidden * cols, "writer buffer does not match [hidden, cols]");
    let k = basis.k();
    // Pass 1 (parallel over row blocks): C = Q W (k × cols) and column norms, in f64.
    let block = hidden.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
    let (coeffs, norms_sq) = w
        .par_chunks(block * cols)
        .enumerate()
        .map(|(b, rows)| {
            let mut c = vec![0f64; k * cols];
            let mut n = vec![0f64; if norm_preserve { cols } else { 0 }];
            for (r, row) in rows.chunks_exact(cols).enumerate() {
                let i = b * block + r;
                for (q, ck) in basis.rows.iter().zip(c.chunks_exact_mut(cols)) {
                    let qi = q[i];
                    ck.iter_mut().zip(row).for_each(|(acc, &x)| *acc += qi * f64::from(x));
                }
                if norm_preserve {
                    n.iter_mut().zip(row).for_each(|(acc, &x)| *acc += f64::from(x) * f64::from(x));
                }
            }
            (c, n)
        })
        .reduce(
            || (vec![0f64; k * cols], vec![0f64; if norm_preserve { cols } else { 0 }]),
            |(mut c1, mut n1), (c2, n2)| {
                c1.iter_mut().zip(c2).for_each(|(a, b)| *a += b);
                n1.iter_mut().zip(n2).for_each(|(a, b)| *a += b);
                (c1, n1)
            },
        );
    let scale: Vec<f64> = if norm_preserve {
        (0..cols)
            .map(|j| {
                let coeff_sq: f64 = (0..k).map(|kk| coeffs[kk * cols + j].powi(2)).sum();
                rescale(norms_sq[j], length_after(norms_sq[j], coeff_sq, strength))
            })
            .collect()
    } else {
        Vec::new()
    };
    // Pass 2 (parallel over rows): w_ij ← s_j (w_ij − λ Σ_k q_ki c_kj) in f64, rounded once to
    // f32; loops run along the row so they vectorize.
    w.par_chunks_mut(cols).enumerate().for_each_init(
        || vec![0f64; cols],
        |acc, (i, row)| {
            acc.iter_mut().zip(row.iter()).for_each(|(a, &x)| *a = f64::from(x));
            for (q, ck) in basis.rows.iter().zip(coeffs.chunks_exact(cols)) {
                let qi = strength * q[i];
                acc.iter_mut().zip(ck).for_each(|(a, &c)| *a -= qi * c);
            }
            if norm_preserve {
                acc.iter_mut().zip(&scale).for_each(|(a, &s)| *a *= s);
            }
            row.iter_mut().zip(acc.iter()).for_each(|(x, &a)| *x = a as f32);
        },
    );
}

/// Edit each written **row** of `e` (`[n, hidden]`: the embedding, or a bias as one row) in place.
pub fn edit_rows(e: &mut [f32], basis: &Basis, strength: f64, norm_preserve: bool) {
    let hidden = basis.hidden();
    assert_eq!(e.len() % hidden, 0, "row buffer is not a whole number of [hidden] rows");
    e.par_chunks_mut(hidden).for_each(|row| {
        let c = basis.coefficients(row);
        let before_sq: f64 = row.iter().map(|&x| f64::from(x).powi(2)).sum();
        let scale = if norm_preserve {
            rescale(before_sq, length_after(before_sq, c.iter().map(|x| x * x).sum(), strength))
        } else {
            1.0
        };
        for (i, x) in row.iter_mut().enumerate() {
            let update: f64 = basis.rows.iter().zip(&c).map(|(q, ck)| q[i] * ck).sum();
            *x = ((f64::from(*x) - strength * update) * scale) as f32;
        }
    });
}

/// `(‖Q W‖_F, ‖W‖_F)` for a writer `[hidden, cols]`: what is left along the basis, and the whole.
pub fn column_residual(w: &[f32], cols: usize, basis: &Basis) -> (f64, f64) {
    let hidden = basis.hidden();
    assert_eq!(w.len(), hidden * cols);
    // Fixed blocks of rows, summed in order: the result does not depend on how the threads
    // split the work.
    const ROWS_PER_BLOCK: usize = 64;
    let partials: Vec<(Vec<f64>, f64)> = w
        .par_chunks(cols * ROWS_PER_BLOCK)
        .enumerate()
        .map(|(block, rows)| {
            let mut c = vec![0f64; basis.k() * cols];
            let mut total = 0f64;
            for (j, row) in rows.chunks_exact(cols).enumerate() {
                let i = block * ROWS_PER_BLOCK + j;
                for (q, ck) in basis.rows.iter().zip(c.chunks_exact_mut(cols)) {
                    ck.iter_mut().zip(row).for_each(|(acc, &x)| *acc += q[i] * f64::from(x));
                }
                total += row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
            }
            (c, total)
        })
        .collect();
    let mut c = vec![0f64; basis.k() * cols];
    let mut total = 0f64;
    for (part, t) in partials {
        c.iter_mut().zip(part).for_each(|(x, y)| *x += y);
        total += t;
    }
    (c.iter().map(|x| x * x).sum::<f64>().sqrt(), total.sqrt())
}

/// `(‖E Qᵀ‖_F, ‖E‖_F)` for rows `[n, hidden]`.
pub fn row_residual(e: &[f32], basis: &Basis) -> (f64, f64) {
    let (along, total) = e
        .par_chunks(basis.hidden())
        .map(|row| {
            let c = basis.coefficients(row);
            (c.iter().map(|x| x * x).sum::<f64>(), row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>())
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    (along.sqrt(), total.sqrt())
}

/// Euclidean length of each column of `[hidden, cols]`.
pub fn column_norms(w: &[f32], cols: usize) -> Vec<f64> {
    let mut sums = vec![0f64; cols];
    for row in w.chunks_exact(cols) {
        sums.iter_mut().zip(row).for_each(|(s, &x)| *s += f64::from(x).powi(2));
    }
    sums.into_iter().map(f64::sqrt).collect()
}

#[cfg(test)]
mod tests;
