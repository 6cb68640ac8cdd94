//! Running a prompt set through the model and folding the captured activations into
//! streaming statistics (nothing else is kept unless asked).

use super::routing::RoutingCounts;
use super::stats::RunningStats;
use crate::arch::ModelSpec;
use crate::model::{
    prefill, CaptureSpec, Captures, Decoder, ForwardRequest, HookPoint, Interventions, LayerMajor, LogitsMode,
};
use crate::progress::Progress;
use crate::prompts::batch::length_buckets;
use crate::prompts::PromptEncoder;
use crate::{Error, Result};
use candle_core::Device;
use std::collections::BTreeMap;

/// Statistics of one prompt set: for each stream, one [`RunningStats`] per captured layer.
#[derive(Debug, Clone)]
pub struct SetStats {
    /// Stream → layer → statistics.
    pub streams: BTreeMap<HookPoint, BTreeMap<usize, RunningStats>>,
    /// Per-prompt vectors, when asked for (stream, layer) → rows.
    pub kept: BTreeMap<(HookPoint, usize), Vec<Vec<f32>>>,
    /// How often each sparse layer's router chose each expert at the captured positions.
    pub routing: RoutingCounts,
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

/// Statistics to fill for `settings` on a model of `spec`, empty.
fn empty_stats(settings: &CaptureSettings, spec: &ModelSpec) -> SetStats {
    let (hidden, experts) = (spec.hidden_size, spec.moe.as_ref().map_or(0, |m| m.num_experts));
    let mut stats = SetStats { streams: BTreeMap::new(), kept: BTreeMap::new(), routing: RoutingCounts::new(experts) };
    for &s in &settings.streams {
        stats.streams.insert(s, settings.layers.iter().map(|&l| (l, RunningStats::new(hidden))).collect());
    }
    stats
}

/// Batches as lists of prompt indices.
type Batches = Vec<Vec<usize>>;

/// Encode `prompts` and group them into batches of similar length (little padding): the
/// encoded prompts and each batch's prompt indices. Statistics do not depend on the order;
/// kept vectors are put back in prompt order.
fn encode_batches(encoder: &PromptEncoder, prompts: &[String], batch: usize) -> Result<(Vec<Vec<u32>>, Batches)> {
    let encoded = prompts.iter().map(|p| encoder.encode(p)).collect::<Result<Vec<_>>>()?;
    if let Some(i) = encoded.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!("prompt {i} encodes to no tokens")));
    }
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let groups = length_buckets(&lengths, batch.max(1))?;
    Ok((encoded, groups))
}

/// Fold one batch's captures (prompts `group` of a set of `count`) into `stats`.
fn fold(stats: &mut SetStats, captures: Captures, group: &[usize], count: usize, keep: bool) -> Result<()> {
    for (layer, routes) in &captures.routes {
        stats.routing.add(*layer, routes);
    }
    for ((point, layer), value) in captures.values {
        // [B, P, H] → mean over the positions → [B, H]
        let rows: Vec<Vec<f32>> = value.mean(1)?.to_vec2()?;
        let target = stats.streams.get_mut(&point).and_then(|m| m.get_mut(&layer)).expect("captured what was asked");
        for row in &rows {
            target.push(row);
        }
        if keep {
            let slots = stats.kept.entry((point, layer)).or_insert_with(|| vec![Vec::new(); count]);
            for (&i, row) in group.iter().zip(rows) {
                slots[i] = row;
            }
        }
    }
    Ok(())
}

/// Run `prompts` and accumulate statistics of the captured activations.
pub fn capture_set(
    decoder: &Decoder,
    encoder: &PromptEncoder,
    prompts: &[String],
    settings: &CaptureSettings,
    interventions: &Interventions,
    progress: &dyn Progress,
) -> Result<SetStats> {
    let spec = capture_spec(settings);
    let mut stats = empty_stats(settings, decoder.spec());
    let request = ForwardRequest { capture: Some(&spec), interventions, logits: LogitsMode::None };
    let from_end_max = settings.from_end.iter().copied().max().unwrap_or(1);
    let (encoded, groups) = encode_batches(encoder, prompts, settings.batch)?;
    for group in groups {
        let rows: Vec<Vec<u32>> = group.iter().map(|&i| encoded[i].clone()).collect();
        let out = prefill(decoder, &rows, encoder.pad_id(), &request, from_end_max)?.output;
        fold(&mut stats, out.captures, &group, prompts.len(), settings.keep)?;
        progress.inc(group.len() as u64);
    }
    Ok(stats)
}

fn capture_spec(settings: &CaptureSettings) -> CaptureSpec {
    CaptureSpec {
        points: settings.streams.clone(),
        layers: settings.layers.clone(),
        from_end: settings.from_end.clone(),
        // A few integers per prompt and sparse layer; dense layers record nothing.
        routing: true,
    }
}

/// Run several prompt sets one layer at a time (see [`LayerMajor`]): every batch of every set
/// goes through a layer before the next layer is loaded. Each set's statistics receive their
/// vectors in the same order as [`capture_set`] gives them, so the two paths agree.
pub fn capture_sets_layer_major(
    model: &LayerMajor<'_>,
    encoder: &PromptEncoder,
    sets: &[&[String]],
    settings: &CaptureSettings,
    interventions: &Interventions,
    progress: &dyn Progress,
) -> Result<Vec<SetStats>> {
    let spec = capture_spec(settings);
    let from_end_max = settings.from_end.iter().copied().max().unwrap_or(1);
    let mut stats: Vec<SetStats> = sets.iter().map(|_| empty_stats(settings, model.spec())).collect();
    // Every batch of every set, with the set and prompt indices it came from.
    let mut batches: Vec<Vec<Vec<u32>>> = Vec::new();
    let mut origin: Vec<(usize, Vec<usize>)> = Vec::new();
    for (s, prompts) in sets.iter().enumerate() {
        let (encoded, groups) = encode_batches(encoder, prompts, settings.batch)?;
        for group in groups {
            batches.push(group.iter().map(|&i| encoded[i].clone()).collect());
            origin.push((s, group));
        }
    }
    let total: u64 = sets.iter().map(|s| s.len() as u64).sum();
    let layers = spec.last_layer().map_or(model.spec().num_layers, |l| l + 1) as u64;
    let mut shown = 0u64;
    let last_batch = batches.len().saturating_sub(1);
    model.capture(&batches, encoder.pad_id(), &spec, interventions, from_end_max, |b, layer, captures| {
        let (s, group) = &origin[b];
        fold(&mut stats[*s], captures, group, sets[*s].len(), settings.keep)?;
        if b == last_batch {
            // Progress in prompts: the share of the layers done.
            let done = total * (layer as u64 + 1) / layers.max(1);
            progress.inc(done.saturating_sub(shown));
            shown = done;
        }
        Ok(())
    })?;
    progress.inc(total.saturating_sub(shown));
    Ok(stats)
}

/// What a probe runs its prompt sets through: the whole model in memory ([`Decoder`]) or one
/// layer at a time from the mapped checkpoint ([`LayerMajor`]). Both give the same statistics.
pub trait CaptureModel {
    /// The model description.
    fn spec(&self) -> &ModelSpec;
    /// The device the model runs on.
    fn device(&self) -> &Device;
    /// The statistics of each of `sets`, in order.
    fn capture_sets(
        &self,
        encoder: &PromptEncoder,
        sets: &[&[String]],
        settings: &CaptureSettings,
        interventions: &Interventions,
        progress: &dyn Progress,
    ) -> Result<Vec<SetStats>>;
}

impl CaptureModel for Decoder {
    fn spec(&self) -> &ModelSpec {
        Decoder::spec(self)
    }

    fn device(&self) -> &Device {
        Decoder::device(self)
    }

    fn capture_sets(
        &self,
        encoder: &PromptEncoder,
        sets: &[&[String]],
        settings: &CaptureSettings,
        interventions: &Interventions,
        progress: &dyn Progress,
    ) -> Result<Vec<SetStats>> {
        sets.iter().map(|prompts| capture_set(self, encoder, prompts, settings, interventions, progress)).collect()
    }
}

impl CaptureModel for LayerMajor<'_> {
    fn spec(&self) -> &ModelSpec {
        LayerMajor::spec(self)
    }

    fn device(&self) -> &Device {
        LayerMajor::device(self)
    }

    fn capture_sets(
        &self,
        encoder: &PromptEncoder,
        sets: &[&[String]],
        settings: &CaptureSettings,
        interventions: &Interventions,
        progress: &dyn Progress,
    ) -> Result<Vec<SetStats>> {
        capture_sets_layer_major(self, encoder, sets, settings, interventions, progress)
    }
}
