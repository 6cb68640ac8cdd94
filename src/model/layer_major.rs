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
use super::hooks::{CaptureSpec, Captures};
use super::interventions::Interventions;
use super::layer::Layer;
use super::masks::{split_shared_prefix, PrefixBatch};
use super::weights::{Loader, WeightStorage};
use crate::arch::{AttentionLayout, LayerNames, MlpLayout, ModelSpec};
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

    /// The embedding rows of `ids` (`[rows][tokens]`), gathered from the mapped checkpoint,
    /// converted to the compute dtype and scaled as the family does: `[rows, tokens, hidden]`.
    fn embed(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let spec = self.spec();
        let name = spec.embed_name();
        let view = self.model.checkpoint.tensor(&name)?;
        if view.shape != [spec.vocab_size, spec.hidden_size] {
            return Err(Error::bad_tensor(
                &name,
                format!("shape {:?}, expected {:?}", view.shape, [spec.vocab_size, spec.hidden_size]),
            ));
        }
        let dtype = runnable_dtype(&name, view.dtype)?;
        let row = spec.hidden_size * dtype.size_in_bytes();
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let mut bytes = Vec::with_capacity(b * t * row);
        for &id in ids.iter().flatten() {
            let i = id as usize;
            if i >= spec.vocab_size {
                return Err(Error::Invalid(format!("token id {id} is outside the vocabulary ({})", spec.vocab_size)));
            }
            bytes.extend_from_slice(&view.data[i * row..(i + 1) * row]);
        }
        self.bytes_read.set(self.bytes_read.get() + bytes.len() as u64);
        let h = Tensor::from_raw_buffer(&bytes, dtype, &[b * t, spec.hidden_size], &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)?
            .reshape((b, t, spec.hidden_size))?;
        scale_embedding(spec, h)
    }

    /// Embed one batch of prompts, splitting off their shared prefix as [`super::prefill`] does.
    fn start(&self, prompts: &[Vec<u32>], pad: u32, min_suffix: usize) -> Result<Pending> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Invalid("a layer-major batch needs non-empty prompts".into()));
        }
        let (spec, rows) = (self.spec(), prompts.len());
        let PrefixBatch { prefix, ids, mask } = split_shared_prefix(prompts, pad, min_suffix);
        let prefix = match prefix {
            None => None,
            Some(prefix) => {
                let n = prefix.len();
                let ctx = BatchContext::new(spec, &self.ropes, &[vec![1; n]], n, &self.device, self.dtype)?;
                Some((self.embed(&[prefix])?, ctx))
            }
        };
        let ctx = BatchContext::new(spec, &self.ropes, &mask, ids[0].len(), &self.device, self.dtype)?;
        Ok(Pending { prefix, rows, h: self.embed(&ids)?, ctx })
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
        let mut pending = batches.iter().map(|b| self.start(b, pad, min_suffix)).collect::<Result<Vec<_>>>()?;
        let layers = capture.last_layer().map_or(spec.num_layers, |l| (l + 1).min(spec.num_layers));
        // One layer serves every batch, so its matrices are widened once, at load.
        let storage = WeightStorage::Compute;
        let loader =
            Loader { model: self.model, device: &self.device, dtype: self.dtype, storage, kernels: self.kernels };
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
        for name in layer_tensors(&self.spec().layer_names(l)) {
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

/// Every tensor of one layer.
fn layer_tensors(n: &LayerNames) -> Vec<String> {
    let mut names = vec![n.attn_norm.clone(), n.o_proj.clone(), n.mlp_norm.clone()];
    names.extend(n.mlp_writers().into_iter().map(|w| w.weight));
    names.extend(n.input_side());
    match &n.attention {
        AttentionLayout::Separate { biases: Some(b), .. } => names.extend(b.iter().cloned()),
        AttentionLayout::KeysAsValues { biases: Some(b), .. } => names.extend(b.iter().cloned()),
        AttentionLayout::Fused { bias: Some(b), .. } => names.push(b.clone()),
        _ => {}
    }
    if let MlpLayout::Gated { biases: Some(b), .. } = &n.mlp {
        names.extend(b.iter().cloned());
    }
    let optional =
        [&n.q_norm, &n.k_norm, &n.o_proj_bias, &n.attn_post_norm, &n.down_proj_bias, &n.mlp_post_norm, &n.layer_scalar];
    names.extend(optional.into_iter().flatten().cloned());
    names
}
