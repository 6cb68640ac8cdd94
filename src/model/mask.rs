//! Attention masks for left-padded batches with a KV cache and optional sliding windows.

use candle_core::{Device, Tensor};

/// The additive mask value for blocked keys: large and finite, so a query whose every key is
/// blocked (a padding position) gets a uniform distribution instead of NaN.
pub(crate) const BLOCKED: f32 = -1e30;

/// Additive mask `[batch, 1, new, past + new]` (f32): key `j` is visible to the query at
/// sequence index `i = past + q` iff it is a real token, `j ≤ i`, and (with a window `w`) `i − j < w`.
pub(crate) fn attention_mask(
    attention: &[Vec<u8>],
    new_tokens: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let b = attention.len();
    let total = attention.first().map_or(0, Vec::len);
    let past = total - new_tokens;
    let mut values = Vec::with_capacity(b * new_tokens * total);
    for row in attention {
        for q in 0..new_tokens {
            let i = past + q;
            for (j, &real) in row.iter().enumerate() {
                let visible = real != 0 && j <= i && window.is_none_or(|w| i - j < w);
                values.push(if visible { 0.0 } else { BLOCKED });
            }
        }
    }
    Tensor::from_vec(values, (b, 1, new_tokens, total), device)
}

/// Position ids of the last `new_tokens` entries: each real token's index among the real tokens
/// of its row (padding gets 0).
pub(crate) fn positions(attention: &[Vec<u8>], new_tokens: usize) -> Vec<Vec<u32>> {
    attention
        .iter()
        .map(|row| {
            let mut count = 0u32;
            let all: Vec<u32> = row
                .iter()
                .map(|&real| {
                    if real == 0 {
                        return 0;
                    }
                    count += 1;
                    count - 1
                })
                .collect();
            all[row.len() - new_tokens..].to_vec()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_real_tokens_only() {
        let mask = vec![vec![0, 0, 1, 1, 1], vec![1, 1, 1, 1, 1]];
        assert_eq!(positions(&mask, 5), vec![vec![0, 0, 0, 1, 2], vec![0, 1, 2, 3, 4]]);
        assert_eq!(positions(&mask, 1), vec![vec![2], vec![4]]);
    }

    #[test]
    fn mask_blocks_padding_future_and_outside_the_window() {
        let m = attention_mask(&[vec![0, 1, 1, 1]], 2, Some(2), &Device::Cpu).unwrap();
        let v: Vec<Vec<f32>> = m.squeeze(0).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        let allowed: Vec<Vec<bool>> = v.iter().map(|r| r.iter().map(|x| *x == 0.0).collect()).collect();
        // Query at index 2 sees 1, 2 (window 2); query at index 3 sees 2, 3.
        assert_eq!(allowed, vec![vec![false, true, true, false], vec![false, false, true, true]]);
    }
}
