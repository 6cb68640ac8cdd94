//! KL divergence between next-token distributions given as logits.

/// `log Σ exp(x)` in f64, stable for large logits.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    max + sum.ln()
}

/// `log_softmax` in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let log_z = log_sum_exp(logits);
    logits.iter().map(|&x| f64::from(x) - log_z).collect()
}

/// `KL(P ‖ Q) = Σ p (log p − log q)` for distributions given by logits `p_logits`, `q_logits`.
/// A NaN or +∞ logit on either side gives NaN (never a perfect 0); −∞ marks an impossible token.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    assert_eq!(p_logits.len(), q_logits.len(), "vocabularies differ");
    if p_logits.iter().chain(q_logits).any(|x| x.is_nan() || *x == f32::INFINITY) {
        return f64::NAN;
    }
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| if a.is_finite() { a.exp() * (a - b) } else { 0.0 }).sum();
    // Rounding can leave a tiny negative for equal distributions; NaN stays NaN.
    if kl < 0.0 {
        0.0
    } else {
        kl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_for_different_distributions() {
        let p = [1.0f32, 2.0, 3.0, -1.0];
        assert!(kl_divergence(&p, &p).abs() < 1e-12);
        // Shifting every logit is the same distribution.
        let shifted: Vec<f32> = p.iter().map(|x| x + 5.0).collect();
        assert!(kl_divergence(&p, &shifted).abs() < 1e-9);
        let q = [3.0f32, 2.0, 1.0, -1.0];
        let kl = kl_divergence(&p, &q);
        // Reference by hand: p = softmax(p), KL = Σ p log(p/q).
        let sp: Vec<f64> = log_softmax(&p).iter().map(|x| x.exp()).collect();
        let sq: Vec<f64> = log_softmax(&q).iter().map(|x| x.exp()).collect();
        let reference: f64 = sp.iter().zip(&sq).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((kl - reference).abs() < 1e-12 && kl > 0.1);
    }

    #[test]
    fn non_finite_logits_are_nan_not_zero() {
        let p = [1.0f32, 2.0, 3.0];
        assert!(kl_divergence(&p, &[f32::NAN, 2.0, 3.0]).is_nan());
        assert!(kl_divergence(&[1.0, f32::NAN, 3.0], &p).is_nan());
        assert!(kl_divergence(&p, &[1.0, f32::INFINITY, 3.0]).is_nan());
        // −∞ is a token the model rules out: finite KL where P gives it no mass too.
        assert!(kl_divergence(&[1.0, f32::NEG_INFINITY, 3.0], &[1.0, f32::NEG_INFINITY, 3.0]).abs() < 1e-12);
    }
}
