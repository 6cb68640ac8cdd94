//! Choosing the next token: greedy, or sampling with temperature, top-k, top-p and a repeat
//! penalty, from a seeded generator.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// Sampling settings. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (0: greedy).
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches this (1: all).
    pub top_p: f64,
    /// Keep this many most likely tokens (0: all).
    pub top_k: usize,
    /// Penalty for tokens already in the sequence (1: none), as in Hugging Face's
    /// `RepetitionPenaltyLogitsProcessor`: once per distinct token, however often it occurred.
    pub repeat_penalty: f32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, top_k: 0, repeat_penalty: 1.0, seed: 0 }
    }
}

/// A sampler with its own random state.
#[derive(Debug)]
pub struct Sampler {
    settings: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler for `settings`.
    pub fn new(settings: Sampling) -> Sampler {
        let rng = StdRng::seed_from_u64(settings.seed);
        Sampler { settings, rng }
    }

    /// The next token given `logits` and the tokens so far (`history`, for the repeat penalty).
    pub fn next(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        apply_repeat_penalty(&mut logits, history, self.settings.repeat_penalty);
        if self.settings.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.settings.top_k > 0 {
            order.truncate(self.settings.top_k);
        }
        let max = f64::from(logits[order[0]]);
        let mut probs: Vec<f64> =
            order.iter().map(|&i| ((f64::from(logits[i]) - max) / self.settings.temperature).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                cumulative += p;
                cumulative >= self.settings.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        let mass: f64 = probs[..keep].iter().sum();
        let mut draw = self.rng.random::<f64>() * mass;
        for (i, p) in probs[..keep].iter().enumerate() {
            draw -= p;
            if draw <= 0.0 {
                return order[i] as u32;
            }
        }
        order[keep - 1] as u32
    }
}

/// Hugging Face's repetition penalty: every distinct token of `history` has its logit divided
/// by `penalty` if positive, multiplied by it otherwise — once, however often it occurred.
pub fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for &t in history.iter().filter(|&&t| seen.insert(t)) {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_max_and_penalty_can_change_it() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(Sampler::new(Sampling::default()).next(&logits, &[]), 1);
        let mut s = Sampler::new(Sampling { repeat_penalty: 1.5, ..Default::default() });
        assert_eq!(s.next(&logits, &[1]), 2);
    }

    #[test]
    fn repeat_penalty_applies_once_per_distinct_token_as_in_transformers() {
        // transformers: score = gather(logits, ids); where(score < 0, score * p, score / p);
        // scatter back — a token repeated in `ids` is written with the same value, so once.
        let mut logits = [2.0f32, -1.0, 0.5, 3.0];
        apply_repeat_penalty(&mut logits, &[0, 0, 1, 0, 1], 2.0);
        assert_eq!(logits, [1.0, -2.0, 0.5, 3.0]);
        // Token 0 said twice: 2.0 / 1.5 = 1.33 still beats 1.2 (applied twice it would be 0.89).
        let mut s = Sampler::new(Sampling { repeat_penalty: 1.5, ..Default::default() });
        assert_eq!(s.next(&[2.0, 1.2, 0.0], &[0, 0]), 0);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Sampling { temperature: 1.0, top_k: 3, seed, ..Default::default() });
            (0..20).map(|_| s.next(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let allowed: Vec<u32> = {
            let mut idx: Vec<usize> = (0..50).collect();
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            idx[..3].iter().map(|&i| i as u32).collect()
        };
        assert!(draw(4).iter().all(|t| allowed.contains(t)));
        let mut low = Sampler::new(Sampling { temperature: 1.0, top_p: 1e-9, seed: 1, ..Default::default() });
        assert_eq!(low.next(&logits, &[]), argmax(&logits), "tiny top-p is greedy");
    }
}
