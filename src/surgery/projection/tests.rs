use super::*;
use proptest::prelude::*;

fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    // Small deterministic generator, independent of the code under test.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..rows * cols)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

/// Dense reference: W' = W − λ Qᵀ Q W, column by column, in f64.
fn reference_columns(w: &[f32], hidden: usize, cols: usize, q: &[Vec<f64>], strength: f64) -> Vec<f64> {
    let mut out: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    for j in 0..cols {
        for qk in q {
            let c: f64 = (0..hidden).map(|i| qk[i] * f64::from(w[i * cols + j])).sum();
            for i in 0..hidden {
                out[i * cols + j] -= strength * qk[i] * c;
            }
        }
    }
    out
}

fn dirs(hidden: usize, k: usize, seed: u64) -> Vec<Vec<f32>> {
    matrix(k, hidden, seed).chunks(hidden).map(<[f32]>::to_vec).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn basis_is_orthonormal(hidden in 2usize..40, k in 1usize..4, seed in any::<u64>()) {
        prop_assume!(k <= hidden);
        let basis = Basis::orthonormal(&dirs(hidden, k, seed)).unwrap();
        for (a, qa) in basis.rows().iter().enumerate() {
            for (b, qb) in basis.rows().iter().enumerate() {
                let expected = if a == b { 1.0 } else { 0.0 };
                let d = dot(qa, qb);
                prop_assert!((d - expected).abs() < 1e-10, "q{}·q{} = {}", a, b, d);
            }
        }
    }

    #[test]
    fn column_edit_matches_the_dense_formula_and_removes_the_subspace(
        hidden in 2usize..24, cols in 1usize..24, k in 1usize..3, strength in 0.0f64..2.0, seed in any::<u64>()
    ) {
        prop_assume!(k <= hidden);
        let basis = Basis::orthonormal(&dirs(hidden, k, seed ^ 1)).unwrap();
        let w = matrix(hidden, cols, seed);
        let mut edited = w.clone();
        edit_columns(&mut edited, cols, &basis, strength, false);
        let reference = reference_columns(&w, hidden, cols, basis.rows(), strength);
        for (a, b) in edited.iter().zip(&reference) {
            prop_assert!((f64::from(*a) - b).abs() < 1e-5);
        }
        let (before, _) = column_residual(&w, cols, &basis);
        let (after, _) = column_residual(&edited, cols, &basis);
        prop_assert!((after - (1.0 - strength).abs() * before).abs() < 1e-4 * (1.0 + before));
    }

    #[test]
    fn norm_preservation_keeps_column_norms_and_orthogonality(
        hidden in 3usize..24, cols in 1usize..24, seed in any::<u64>()
    ) {
        let basis = Basis::orthonormal(&dirs(hidden, 1, seed ^ 7)).unwrap();
        let w = matrix(hidden, cols, seed);
        let mut edited = w.clone();
        edit_columns(&mut edited, cols, &basis, 1.0, true);
        for (a, b) in column_norms(&w, cols).iter().zip(column_norms(&edited, cols)) {
            prop_assert!((a - b).abs() < 1e-5 * (1.0 + a));
        }
        let (after, total) = column_residual(&edited, cols, &basis);
        prop_assert!(after <= 1e-6 * total.max(1e-3));
    }

    #[test]
    fn row_edit_is_the_column_edit_of_the_transpose(
        n in 1usize..20, hidden in 2usize..20, strength in 0.0f64..2.0, preserve in any::<bool>(), seed in any::<u64>()
    ) {
        let basis = Basis::orthonormal(&dirs(hidden, 1, seed ^ 3)).unwrap();
        let e = matrix(n, hidden, seed);
        let mut rows = e.clone();
        edit_rows(&mut rows, &basis, strength, preserve);
        let mut t: Vec<f32> = (0..hidden * n).map(|x| e[(x % n) * hidden + x / n]).collect();
        edit_columns(&mut t, n, &basis, strength, preserve);
        for r in 0..n {
            for i in 0..hidden {
                prop_assert!((rows[r * hidden + i] - t[i * n + r]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn edit_through_a_post_norm_makes_the_norm_output_orthogonal(
        hidden in 3usize..24, cols in 1usize..12, seed in any::<u64>()
    ) {
        let r = Basis::orthonormal(&dirs(hidden, 1, seed ^ 5)).unwrap();
        let gamma: Vec<f32> = matrix(1, hidden, seed ^ 9).iter().map(|g| 1.0 + 3.0 * g).collect();
        let u = r.through_norm(&gamma).unwrap();
        let mut w = matrix(hidden, cols, seed);
        edit_columns(&mut w, cols, &u, 1.0, false);
        // Any input x: the writer's output y = W' x, then the norm n = γ ⊙ y / rms(y).
        let x = matrix(1, cols, seed ^ 11);
        let y: Vec<f64> = (0..hidden).map(|i| (0..cols).map(|j| f64::from(w[i * cols + j]) * f64::from(x[j])).sum()).collect();
        let rms = (y.iter().map(|v| v * v).sum::<f64>() / hidden as f64 + 1e-6).sqrt();
        let n: Vec<f64> = y.iter().zip(&gamma).map(|(v, g)| v * f64::from(*g) / rms).collect();
        let along = dot(&r.rows()[0], &n).abs();
        prop_assert!(along < 1e-4 * (1.0 + norm(&n)), "r·n = {along}");
    }
}

#[test]
fn without_the_gamma_correction_the_norm_output_is_not_orthogonal() {
    // Shows the γ-aware edit is needed: editing against r itself leaves r·n ≠ 0.
    let hidden = 16;
    let cols = 8;
    let r = Basis::orthonormal(&dirs(hidden, 1, 42)).unwrap();
    let gamma: Vec<f32> = matrix(1, hidden, 43).iter().map(|g| 1.0 + 3.0 * g).collect();
    let mut w = matrix(hidden, cols, 44);
    edit_columns(&mut w, cols, &r, 1.0, false);
    let y: Vec<f64> = (0..hidden).map(|i| (0..cols).map(|j| f64::from(w[i * cols + j])).sum()).collect();
    let n: Vec<f64> = y.iter().zip(&gamma).map(|(v, g)| v * f64::from(*g)).collect();
    assert!(dot(&r.rows()[0], &n).abs() > 1e-3 * norm(&n));
}

#[test]
fn dependent_zero_and_nan_directions_are_refused() {
    let err = |v: Vec<Vec<f32>>| Basis::orthonormal(&v).unwrap_err().to_string();
    assert!(err(vec![vec![1.0, 2.0], vec![2.0, 4.0]]).contains("dependent"));
    assert!(err(vec![vec![0.0, 0.0]]).contains("zero"));
    assert!(err(vec![vec![f32::NAN, 1.0]]).contains("NaN"));
    assert!(err(vec![vec![1.0, 0.0], vec![1.0]]).contains("length"));
}
