//! llama.cpp stores Llama 3.1+'s rope scaling as per-frequency divisors (the `rope_freqs.weight`
//! tensor); a Hugging Face config describes the same scaling with four parameters
//! (`rope_scaling: {rope_type: llama3, ...}`). This finds parameters that reproduce the divisors.

use crate::arch::RopeScaling;
use crate::model::rope::Rope;
use crate::{Error, Result};
use serde_json::json;

/// Candidate parameters, the ones every released Llama 3.x model uses first.
const ORIGINAL_CONTEXTS: [f64; 6] = [8192.0, 4096.0, 2048.0, 16384.0, 32768.0, 131072.0];
const LOW_FREQ_FACTORS: [f64; 3] = [1.0, 2.0, 0.5];
const HIGH_FREQ_FACTORS: [f64; 3] = [4.0, 8.0, 2.0];

/// The `rope_scaling` entry for `divisors` (one per rotated pair: the unscaled frequency over the
/// scaled one) with base `theta`; `None` when they are all 1. An error names `tensor` when no
/// llama3 parameters reproduce them (to 1e-3), rather than importing a model that runs wrong.
pub(super) fn llama3_scaling(divisors: &[f32], theta: f64, tensor: &str) -> Result<Option<serde_json::Value>> {
    if divisors.iter().all(|d| (d - 1.0).abs() < 1e-6) {
        return Ok(None);
    }
    if divisors.iter().any(|d| !d.is_finite() || *d <= 0.0) {
        return Err(Error::bad_tensor(tensor, "rope frequency divisors must be positive and finite"));
    }
    let rotary_dim = 2 * divisors.len();
    let factor = f64::from(divisors.iter().copied().fold(0.0, f32::max));
    let unscaled = Rope::new(rotary_dim, theta, None);
    for original in ORIGINAL_CONTEXTS {
        for low in LOW_FREQ_FACTORS {
            for high in HIGH_FREQ_FACTORS.into_iter().filter(|h| *h > low) {
                let scaling = RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: original,
                };
                let scaled = Rope::new(rotary_dim, theta, Some(&scaling));
                let reproduced = unscaled
                    .inverse_frequencies()
                    .iter()
                    .zip(scaled.inverse_frequencies())
                    .zip(divisors)
                    .all(|((u, s), &d)| (u / s - f64::from(d)).abs() <= 1e-3 * f64::from(d));
                if reproduced {
                    return Ok(Some(json!({
                        "rope_type": "llama3",
                        "factor": factor,
                        "low_freq_factor": low,
                        "high_freq_factor": high,
                        "original_max_position_embeddings": original as u64,
                    })));
                }
            }
        }
    }
    Err(Error::bad_tensor(
        tensor,
        "per-frequency rope divisors that no llama3 rope_scaling reproduces; the model cannot be described in \
         config.json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn divisors(scaling: &RopeScaling, dim: usize, theta: f64) -> Vec<f32> {
        let (u, s) = (Rope::new(dim, theta, None), Rope::new(dim, theta, Some(scaling)));
        u.inverse_frequencies().iter().zip(s.inverse_frequencies()).map(|(a, b)| (a / b) as f32).collect()
    }

    #[test]
    fn recovers_llama_3_parameters_and_refuses_what_it_cannot_describe() {
        // Llama 3.2's parameters, head_dim 64, theta 500000.
        let llama32 = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let found =
            llama3_scaling(&divisors(&llama32, 64, 500_000.0), 500_000.0, "rope_freqs.weight").unwrap().unwrap();
        assert_eq!(found["factor"], 32.0);
        assert_eq!(found["low_freq_factor"], 1.0);
        assert_eq!(found["high_freq_factor"], 4.0);
        assert_eq!(found["original_max_position_embeddings"], 8192);
        // All ones: no scaling.
        assert_eq!(llama3_scaling(&[1.0; 32], 500_000.0, "t").unwrap(), None);
        // Divisors that grow linearly are no llama3 scaling.
        let odd: Vec<f32> = (0..32).map(|i| 1.0 + i as f32).collect();
        let err = llama3_scaling(&odd, 500_000.0, "rope_freqs.weight").unwrap_err().to_string();
        assert!(err.contains("rope_freqs.weight") && err.contains("llama3"), "{err}");
    }
}
