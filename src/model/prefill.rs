//! Running a batch of prompts up to their last token, computing their shared prefix once.
//!
//! Chat prompts rendered by one template begin with the same tokens (the system prompt, the
//! user turn's header, often the first words): 20–30 of Qwen2.5's ~40 tokens per prompt. The
//! prefix runs once as a one-row batch, its keys and values are copied to every row of the KV
//! cache, and only the left-padded suffixes run as the batch: each row's key mask is then
//! `[1; prefix] ++ [0; padding] ++ [1; suffix]`, positions count real tokens, so every real
//! token sees the same keys at the same positions as in a plain left-padded batch. Every
//! intervention acts token by token, so applying it to the prefix once is the same as applying
//! it to each row's copy.

use super::decoder::{Decoder, ForwardOutput, ForwardRequest, KvCache, LogitsMode};
use super::hooks::CaptureSpec;
pub use super::masks::MIN_SHARED_PREFIX;
use super::masks::{split_shared_prefix, PrefixBatch};
use crate::Result;
use candle_core::DType;

/// The result of [`prefill`].
#[derive(Debug)]
pub struct Prefilled {
    /// The batch's forward output: captures and logits at the prompts' last positions.
    pub output: ForwardOutput,
    /// Keys and values of every prompt token (prefix copies included), for generation.
    pub cache: KvCache,
    /// Each row's key mask over the cached tokens (`[batch][cache.len()]`).
    pub mask: Vec<Vec<u8>>,
}

/// Whether a batch on `decoder` is worth splitting at its shared prefix. On the CPU and in f32
/// the arithmetic saved pays for the extra one-row pass. A GPU in 16 bits is bound by kernel
/// launches, not arithmetic, and the extra pass's ~700 launches and the per-layer copies of the
/// prefix's keys cost more than the shorter batch saves (docs/benchmarks.md, *On a GPU*), so
/// there the batch runs whole.
pub fn shares_prefix(decoder: &Decoder) -> bool {
    decoder.device().is_cpu() || decoder.dtype() == DType::F32
}

/// Run `prompts` (non-empty token lists) with `request`. Captures may ask for up to
/// `min_suffix` positions from the end (they are taken from the suffix pass); logits may be
/// [`LogitsMode::None`] or [`LogitsMode::Last`] (a shared prefix has no per-row logits).
pub fn prefill(
    decoder: &Decoder,
    prompts: &[Vec<u32>],
    pad: u32,
    request: &ForwardRequest<'_>,
    min_suffix: usize,
) -> Result<Prefilled> {
    if request.logits == LogitsMode::All {
        return Err(crate::Error::Invalid("prefill returns the last position's logits only".into()));
    }
    super::generate::check_context(decoder, prompts)?;
    let mut cache = KvCache::new(decoder.spec().num_layers);
    // A suffix as long as every prompt leaves no prefix to share.
    let min_suffix = if shares_prefix(decoder) { min_suffix } else { usize::MAX };
    let PrefixBatch { prefix, ids, mask } = split_shared_prefix(prompts, pad, min_suffix);
    if let Some(prefix) = prefix {
        // The prefix needs no logits and no captures. With capture only, it stops where the
        // batch will stop (a spec of the same layers with no points); with logits, every
        // layer's keys are needed.
        let stop = request.capture.filter(|_| request.logits == LogitsMode::None).map(|c| CaptureSpec {
            points: Vec::new(),
            layers: c.layers.clone(),
            from_end: c.from_end.clone(),
            routing: false,
        });
        let prefix_request =
            ForwardRequest { capture: stop.as_ref(), interventions: request.interventions, logits: LogitsMode::None };
        let n = prefix.len();
        decoder.forward(&[prefix], &[vec![1; n]], Some(&mut cache), &prefix_request)?;
        cache.keep_rows(&vec![0; prompts.len()])?;
    }
    let output = decoder.forward(&ids, &mask, Some(&mut cache), request)?;
    Ok(Prefilled { output, cache, mask })
}
