//! Layer-major forward passes, for models larger than memory: every prompt is embedded first
//! (only the embedding rows of its tokens are read from the mapped checkpoint), then each layer
//! is loaded on its own, every batch runs through it, its hook points are handed to the caller,
//! and the layer is released before the next one is loaded. Memory: one layer's weights in the
//! compute dtype, the hidden states of every batch, and what the caller keeps.
//!
//! Each layer runs the decoder's own layer step ([`super::decoder::layer_step`]), and each batch
//! splits off its shared prompt prefix exactly as [`super::prefill`] does (the prefix runs as one
//! row per layer and its keys and values are copied to every row), so captures equal the
//! whole-model path's.

use super::decoder::{layer_step, scale_embedding, BatchContext, Ropes};
use super::hooks::{CaptureSpec, Captures, HookPoint};
use super::interventions::Interventions;
use super::layer::Layer;
use super::masks::{split_shared_prefix, PrefixBatch};
use super::per_layer::PerLayerMixer;
use super::weights::{Loader, WeightStorage};
use crate::arch::ModelSpec;
use crate::checkpoint::ModelDir;
use crate::kernels::KernelConfig;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::cell::Cell;

/// A model run one layer at a time from its memory-mapped checkpoint (see the module docs).
#[derive(Debug)]
pub struct LayerMajor<'m> {
    model: &'m ModelDir,
    device: Device,
    dtype: DType,
    kernels: KernelConfig,
    ropes: Ropes,
    bytes_read: Cell<u64>,
}

/// One batch between layers: its hidden states and what its layers read.
struct Pending {
    /// The shared prefix as a one-row batch: hidden states, context, rows to copy its keys to.
    prefix: Option<(Tensor, BatchContext)>,
    rows: usize,
    h: Tensor,
    ctx: BatchContext,
}

impl<'m> LayerMajor<'m> {
    /// Prepare to run `model` on `device` in `dtype`; nothing but the configuration is read yet.
    pub fn new(model: &'m ModelDir, device: &Device, dtype: DType) -> Result<LayerMajor<'m>> {
        let ropes = Ropes::new(model)?;
        let kernels = KernelConfig::default();
        Ok(LayerMajor { model, device: device.clone(), dtype, kernels, ropes, bytes_read: Cell::new(0) })
    }

    /// This runner with its layers' weights packed only for the kernels `kernels` allows.
    pub fn with_kernels(self, kernels: KernelConfig) -> LayerMajor<'m> {
        LayerMajor { kernels, ..self }
    }

    /// The model description.
    pub fn spec(&self) -> &ModelSpec {
        &self.model.spec
    }

    /// The device the layers run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of stored tensor data read so far (layers and embedding rows).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    /// The rows `ids` (`[rows][tokens]`) of the stored table `name` (`[table_rows, width]`),
    /// gathered from the mapped checkpoint and converted to the compute dtype:
    /// `[rows, tokens, width]`.
    fn gather(&self, name: &str, table_rows: usize, width: usize, ids: &[Vec<u32>]) -> Result<Tensor> {
        let view = self.model.checkpoint.tensor(name)?;
        if view.shape != [table_rows, width] {
            return Err(Error::bad_tensor(name, format!("shape {:?}, expected {:?}", view.shape, [table_rows, width])));
        }
        let dtype = runnable_dtype(name, view.dtype)?;
        let row = width * dtype.size_in_bytes();
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let mut bytes = Vec::with_capacity(b * t * row);
        for &id in ids.iter().flatten() {
            let i = id as usize;
            if i >= table_rows {
                return Err(Error::Invalid(format!("token id {id} is outside `{name}` ({table_rows} rows)")));
            }
            bytes.extend_from_slice(&view.data[i * row..(i + 1) * row]);
        }
        self.bytes_read.set(self.bytes_read.get() + bytes.len() as u64);
        Ok(Tensor::from_raw_buffer(&bytes, dtype, &[b * t, width], &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?
            .reshape((b, t, width))?)
    }

    /// The embedded stream of `ids` (scaled as the family does) and the context of a batch of
    /// them whose mask is `mask`, with the per-layer inputs where the model has them (read, as
    /// the whole-model path does, from the stream after layer 0's resid_pre interventions).
    fn embed(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        mixer: Option<&PerLayerMixer>,
        interventions: &Interventions,
    ) -> Result<(Tensor, BatchContext)> {
        let spec = self.spec();
        let h = self.gather(&spec.embed_name(), spec.vocab_size, spec.hidden_size, ids)?;
        let h = scale_embedding(spec, h)?;
        let per_layer_inputs = match (mixer, &spec.per_layer_inputs) {
            (Some(mixer), Some(inputs)) => {
                let width = spec.num_layers * inputs.width;
                let rows = self.gather(&spec.per_layer_embed_name(), inputs.vocab_size, width, ids)?;
                Some(mixer.inputs(spec, &rows, &interventions.apply(HookPoint::ResidPre, 0, h.clone())?)?)
            }
            _ => None,
        };
        let t = ids.first().map_or(0, Vec::len);
        let ctx = BatchContext::new(spec, &self.ropes, mask, t, &self.device, self.dtype)?
            .with_per_layer_inputs(per_layer_inputs);
        Ok((h, ctx))
    }

    /// Embed one batch of prompts, splitting off their shared prefix as [`super::prefill`] does.
    fn start(
        &self,
        prompts: &[Vec<u32>],
        pad: u32,
        min_suffix: usize,
        mixer: Option<&PerLayerMixer>,
        interventions: &Interventions,
    ) -> Result<Pending> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Invalid("a layer-major batch needs non-empty prompts".into()));
        }
        let rows = prompts.len();
        let PrefixBatch { prefix, ids, mask } = split_shared_prefix(prompts, pad, min_suffix);
        let prefix = match prefix {
            None => None,
            Some(prefix) => {
                let n = prefix.len();
                Some(self.embed(&[prefix], &[vec![1; n]], mixer, interventions)?)
            }
        };
        let (h, ctx) = self.embed(&ids, &mask, mixer, interventions)?;
        Ok(Pending { prefix, rows, h, ctx })
    }

    /// Run `batches` (each a list of non-empty token lists, left-padded together like
    /// [`super::prefill`]'s prompts) through the layers `capture` needs, one layer at a time,
    /// with `interventions`. After each layer, `sink(batch, layer, captures)` receives that
    /// batch's captures at that layer (positions up to `min_suffix` from the end).
    pub fn capture(
        &self,
        batches: &[Vec<Vec<u32>>],
        pad: u32,
        capture: &CaptureSpec,
        interventions: &Interventions,
        min_suffix: usize,
        mut sink: impl FnMut(usize, usize, Captures) -> Result<()>,
    ) -> Result<()> {
        let spec = self.spec();
        // One layer serves every batch, so its matrices are widened once, at load.
        let storage = WeightStorage::Compute;
        let loader =
            Loader { model: self.model, device: &self.device, dtype: self.dtype, storage, kernels: self.kernels };
        let mixer = PerLayerMixer::load(&loader, spec)?;
        let mut pending = batches
            .iter()
            .map(|b| self.start(b, pad, min_suffix, mixer.as_ref(), interventions))
            .collect::<Result<Vec<_>>>()?;
        drop(mixer);
        let layers = capture.last_layer().map_or(spec.num_layers, |l| (l + 1).min(spec.num_layers));
        for l in 0..layers {
            let layer = Layer::load(&loader, spec, l)?;
            for (i, p) in pending.iter_mut().enumerate() {
                // On a worker of the pool, as `Decoder::forward` runs ([`super::ops::on_worker`]).
                let (dtype, device) = (self.dtype, &self.device);
                let captures = super::ops::on_worker(|| -> Result<Captures> {
                    let mut slot = None;
                    if let Some((hp, ctx)) = p.prefix.take() {
                        let hp = layer_step(
                            spec,
                            &layer,
                            l,
                            hp,
                            &ctx,
                            Some(&mut slot),
                            interventions,
                            None,
                            &mut Captures::default(),
                        )?;
                        p.prefix = Some((hp, ctx));
                        // The prefix's keys and values, copied to every row.
                        if let Some(cache) = slot.as_mut() {
                            cache.keep_rows(&vec![0; p.rows])?;
                        }
                    }
                    let mut captures = Captures::default();
                    let h = std::mem::replace(&mut p.h, Tensor::zeros(1, dtype, device)?);
                    let cache = if p.prefix.is_some() { Some(&mut slot) } else { None };
                    p.h = layer_step(spec, &layer, l, h, &p.ctx, cache, interventions, Some(capture), &mut captures)?;
                    Ok(captures)
                })?;
                sink(i, l, captures)?;
            }
            drop(layer);
            self.release_layer(l);
        }
        Ok(())
    }

    /// Count layer `l`'s bytes as read and drop its pages from this process's mapping (they stay
    /// in the page cache, reclaimable, until the kernel needs the memory).
    fn release_layer(&self, l: usize) {
        let checkpoint = &self.model.checkpoint;
        for name in self.spec().layer_names(l).tensors() {
            if let Ok(view) = checkpoint.tensor(&name) {
                self.bytes_read.set(self.bytes_read.get() + view.data.len() as u64);
                checkpoint.release(&name);
            }
        }
    }
}

/// The candle dtype of a stored tensor that can be run.
fn runnable_dtype(name: &str, dtype: safetensors::Dtype) -> Result<DType> {
    match dtype {
        safetensors::Dtype::F32 => Ok(DType::F32),
        safetensors::Dtype::F16 => Ok(DType::F16),
        safetensors::Dtype::BF16 => Ok(DType::BF16),
        other => Err(Error::bad_tensor(name, format!("dtype {other:?} cannot be run (F32, F16, BF16 only)"))),
    }
}
