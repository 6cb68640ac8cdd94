//! Running a prompt set through the model and folding the captured activations into
//! streaming statistics (nothing else is kept unless asked).

use super::stats::RunningStats;
use crate::model::{prefill, CaptureSpec, Decoder, ForwardRequest, HookPoint, Interventions, LogitsMode};
use crate::prompts::batch::length_buckets;
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use indicatif::ProgressBar;
use std::collections::BTreeMap;

/// Statistics of one prompt set: for each stream, one [`RunningStats`] per captured layer.
#[derive(Debug, Clone)]
pub struct SetStats {
    /// Stream → layer → statistics.
    pub streams: BTreeMap<HookPoint, BTreeMap<usize, RunningStats>>,
    /// Per-prompt vectors, when asked for (stream, layer) → rows.
    pub kept: BTreeMap<(HookPoint, usize), Vec<Vec<f32>>>,
}

impl SetStats {
    /// The statistics of `stream` at `layer`.
    pub fn get(&self, stream: HookPoint, layer: usize) -> &RunningStats {
        &self.streams[&stream][&layer]
    }
}

/// What to capture and how.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Streams.
    pub streams: Vec<HookPoint>,
    /// Layers.
    pub layers: Vec<usize>,
    /// Positions from the end of each prompt (1 = last); the vectors at these positions are
    /// averaged into one vector per prompt.
    pub from_end: Vec<usize>,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Keep each prompt's vector (for `--save-activations` and PCA).
    pub keep: bool,
}

/// Run `prompts` and accumulate statistics of the captured activations.
pub fn capture_set(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    prompts: &[String],
    settings: &CaptureSettings,
    interventions: &Interventions,
    progress: &ProgressBar,
) -> Result<SetStats> {
    let hidden = decoder.spec().hidden_size;
    let spec = CaptureSpec {
        points: settings.streams.clone(),
        layers: settings.layers.clone(),
        from_end: settings.from_end.clone(),
    };
    let mut stats = SetStats { streams: BTreeMap::new(), kept: BTreeMap::new() };
    for &s in &settings.streams {
        stats.streams.insert(s, settings.layers.iter().map(|&l| (l, RunningStats::new(hidden))).collect());
    }
    let request = ForwardRequest { capture: Some(&spec), interventions, logits: LogitsMode::None };
    let from_end_max = settings.from_end.iter().copied().max().unwrap_or(1);
    // Batches of similar length (little padding); statistics do not depend on the order, kept
    // vectors are put back in prompt order.
    let encoded = prompts.iter().map(|p| encoder.encode(p)).collect::<Result<Vec<_>>>()?;
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let mut kept: BTreeMap<(HookPoint, usize), Vec<Vec<f32>>> = BTreeMap::new();
    for group in length_buckets(&lengths, settings.batch.max(1))? {
        let rows: Vec<Vec<u32>> = group.iter().map(|&i| encoded[i].clone()).collect();
        if let Some(i) = group.iter().find(|&&i| encoded[i].is_empty()) {
            return Err(Error::Invalid(format!("prompt {i} encodes to no tokens")));
        }
        let out = prefill(decoder, &rows, encoder.pad_id(), &request, from_end_max)?.output;
        for ((point, layer), value) in out.captures.values {
            // [B, P, H] → mean over the positions → [B, H]
            let rows: Vec<Vec<f32>> = value.mean(1)?.to_vec2()?;
            let target =
                stats.streams.get_mut(&point).and_then(|m| m.get_mut(&layer)).expect("captured what was asked");
            for row in &rows {
                target.push(row);
            }
            if settings.keep {
                let slots = kept.entry((point, layer)).or_insert_with(|| vec![Vec::new(); prompts.len()]);
                for (&i, row) in group.iter().zip(rows) {
                    slots[i] = row;
                }
            }
        }
        progress.inc(group.len() as u64);
    }
    stats.kept = kept;
    Ok(stats)
}
