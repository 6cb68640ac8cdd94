//! The instrumented decoder: an explicit per-layer loop with named hook points.

use super::hooks::{CaptureSpec, Captures, HookPoint};
use super::interventions::Interventions;
use super::layer::Layer;
use super::masks::{attention_bias, position_ids};
use super::ops::{add, rms_norm};
use super::per_layer::PerLayerMixer;
use super::rope::Rope;
use super::weights::{Linear, Loader, WeightLayout, WeightStorage};
use crate::arch::{Family, ModelSpec, RopeScaling};
use crate::checkpoint::ModelDir;
use crate::kernels::KernelConfig;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, D};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// How [`Decoder::load_with_options`] keeps the weights: their dtype in memory and the packed
/// kernels they may be prepared for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The dtype of the matrices ([`WeightStorage::Auto`] is resolved against the memory budget).
    pub storage: WeightStorage,
    /// The packed CPU kernels allowed (each where the CPU has it).
    pub kernels: KernelConfig,
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsMode {
    /// None: the final norm and head are skipped (capture only).
    None,
    /// The last position of each row: `[batch, vocab]`.
    Last,
    /// Every position: `[batch, tokens, vocab]`.
    All,
}

/// What one forward pass should do besides running the layers.
#[derive(Debug, Clone, Copy)]
pub struct ForwardRequest<'a> {
    /// Values to capture.
    pub capture: Option<&'a CaptureSpec>,
    /// Interventions at hook points.
    pub interventions: &'a Interventions,
    /// Which logits to return (f32).
    pub logits: LogitsMode,
}

/// The result of a forward pass.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits (f32), as requested.
    pub logits: Option<Tensor>,
    /// Captured values.
    pub captures: Captures,
}

/// Keys and values of every layer so far (for generation).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new(num_layers: usize) -> KvCache {
        KvCache { layers: (0..num_layers).map(|_| None).collect() }
    }

    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |l| l.len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make room for `more` tokens beyond those cached, so that appending them copies only the
    /// new keys and values (generation reserves its `max_tokens` once after the prefill).
    pub fn reserve(&mut self, more: usize) -> Result<()> {
        for slot in self.layers.iter_mut().flatten() {
            slot.grow_to(slot.len + more)?;
        }
        Ok(())
    }

    /// Keep only the batch rows `rows` (in that order), e.g. to drop finished generations.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        for slot in self.layers.iter_mut().flatten() {
            slot.keep_rows(rows)?;
        }
        Ok(())
    }
}

/// One layer's cached keys and values: buffers `[batch, kv_heads, capacity, head_dim]` whose
/// first `len` positions are filled. Appending writes the new positions in place (candle's
/// `slice_set`) instead of concatenating, which would copy the whole cache at every generated
/// token.
#[derive(Debug)]
pub(crate) struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl LayerCache {
    /// Append `k`, `v` (`[batch, kv_heads, new, head_dim]`) to the layer's cache in `slot` and
    /// return views of all its keys and values so far.
    pub(crate) fn append(slot: &mut Option<LayerCache>, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let cache = match slot {
            None => slot.insert(LayerCache { len: k.dim(2)?, k: k.contiguous()?, v: v.contiguous()? }),
            Some(cache) => {
                let new = k.dim(2)?;
                if cache.len + new > cache.k.dim(2)? {
                    // Doubling keeps the copies of a growing cache linear in its length.
                    cache.grow_to((cache.len + new).max(2 * cache.len))?;
                }
                cache.k.slice_set(&k.contiguous()?, 2, cache.len)?;
                cache.v.slice_set(&v.contiguous()?, 2, cache.len)?;
                cache.len += new;
                cache
            }
        };
        Ok((cache.k.narrow(2, 0, cache.len)?, cache.v.narrow(2, 0, cache.len)?))
    }

    /// Keep only the batch rows `rows` (in that order; a row may repeat).
    pub(crate) fn keep_rows(&mut self, rows: &[usize]) -> candle_core::Result<()> {
        let index = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect(), rows.len(), self.k.device())?;
        self.k = self.k.index_select(&index, 0)?;
        self.v = self.v.index_select(&index, 0)?;
        Ok(())
    }

    /// Reallocate the buffers to hold at least `capacity` positions (a no-op if they do).
    fn grow_to(&mut self, capacity: usize) -> candle_core::Result<()> {
        let (b, heads, cap, d) = self.k.dims4()?;
        if capacity <= cap {
            return Ok(());
        }
        let widen = |t: &Tensor| -> candle_core::Result<Tensor> {
            let buffer = Tensor::zeros((b, heads, capacity, d), t.dtype(), t.device())?;
            buffer.slice_set(&t.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            Ok(buffer)
        };
        self.k = widen(&self.k)?;
        self.v = widen(&self.v)?;
        Ok(())
    }
}

/// A model ready to run: weights on a device, in a compute dtype.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: ModelSpec,
    device: Device,
    dtype: DType,
    pub(super) embed: Embedding,
    pub(super) layers: Vec<Layer>,
    final_norm: Tensor,
    pub(super) lm_head: Linear,
    ropes: Ropes,
    /// The per-layer input token table `[per-layer vocab, layers · width]` and its mixer
    /// (Gemma 4's E models).
    per_layer: Option<(Tensor, PerLayerMixer)>,
}

/// Where the token embedding `[vocab, hidden]` lives.
#[derive(Debug, Clone)]
pub(super) enum Embedding {
    /// A matrix of its own.
    Own(Tensor),
    /// The matrix of the head tied to it: one copy serves the head's products and the lookup of
    /// its rows, whatever layout the head's kernel keeps it in.
    Head,
}

/// The rotary configurations of a model: one per distinct (theta, scaling); `of[layer]` indexes it.
#[derive(Debug, Clone)]
pub(super) struct Ropes {
    ropes: Vec<Rope>,
    of: Vec<usize>,
}

impl Ropes {
    /// The rotary configuration of every layer of `model`.
    pub(super) fn new(model: &ModelDir) -> Result<Ropes> {
        let spec = &model.spec;
        let rotary = ((spec.head_dim as f64 * spec.partial_rotary_factor) as usize) & !1;
        if rotary == 0 && spec.proportional_rope.is_none() {
            return Err(Error::BadConfig {
                path: model.root.join("config.json"),
                message: "rotary dimension is 0".into(),
            });
        }
        let mut ropes: Vec<Rope> = Vec::new();
        let mut of = Vec::new();
        for l in 0..spec.num_layers {
            // Gemma 3/4 scale only their global layers' rope.
            let local = matches!(spec.family, Family::Gemma3 | Family::Gemma4) && spec.sliding_layers[l];
            // A NoPE layer (SmolLM3) rotates by angle 0: every frequency divided by infinity is
            // 0, so cos = 1 and sin = 0 and the rotation is exactly the identity.
            let nope = RopeScaling::Linear { factor: f64::INFINITY };
            let scaling = if spec.nope_layers[l] {
                Some(&nope)
            } else if local {
                None
            } else {
                spec.rope_scaling.as_ref()
            };
            let rope = match spec.proportional_rope {
                Some(p) => {
                    let hd = spec.head_dim_for(l);
                    let fraction = if spec.sliding_layers[l] { p.local_fraction } else { p.global_fraction };
                    // Hugging Face: `int(fraction * head_dim // 2)`.
                    let angles = (fraction * hd as f64 / 2.0).floor() as usize;
                    Rope::proportional(hd, angles, spec.rope_theta_for(l), scaling)
                }
                None => Rope::new(rotary, spec.rope_theta_for(l), scaling),
            };
            let index = ropes.iter().position(|r| *r == rope).unwrap_or_else(|| {
                ropes.push(rope);
                ropes.len() - 1
            });
            of.push(index);
        }
        Ok(Ropes { ropes, of })
    }
}

/// The keys and values a storing layer leaves for the later layers that reuse them (Gemma 4's
/// E models): one pair per attention kind, all the batch's positions (the cached ones included).
#[derive(Debug, Default)]
pub(crate) struct SharedKv(Mutex<[Option<(Tensor, Tensor)>; 2]>);

impl SharedKv {
    /// Leave `k`, `v` for the layers of the kind `sliding` that reuse them.
    pub(crate) fn put(&self, sliding: bool, k: &Tensor, v: &Tensor) -> candle_core::Result<()> {
        let mut pairs = self.0.lock().map_err(|_| candle_core::Error::Msg("shared keys poisoned".into()))?;
        pairs[usize::from(sliding)] = Some((k.clone(), v.clone()));
        Ok(())
    }

    /// The keys and values the storing layer of the kind `sliding` left.
    pub(crate) fn get(&self, sliding: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let pairs = self.0.lock().map_err(|_| candle_core::Error::Msg("shared keys poisoned".into()))?;
        pairs[usize::from(sliding)].clone().ok_or_else(|| {
            candle_core::Error::Msg("a layer reuses keys and values that no earlier layer of its kind stored".into())
        })
    }
}

/// What every layer reads about one batch besides the hidden states: the rotary tables of its
/// positions, its attention masks (full, and one per sliding-window size), and in Gemma 4's E
/// models every layer's per-layer input and the keys and values layers share.
#[derive(Debug)]
pub(super) struct BatchContext {
    tables: Vec<(Tensor, Tensor)>,
    rope_of: Vec<usize>,
    full_mask: Tensor,
    window_masks: Vec<(usize, Tensor)>,
    /// `[B, T, layers, width]`.
    per_layer_inputs: Option<Tensor>,
    shared_kv: SharedKv,
}

impl BatchContext {
    /// The context of `t` new tokens whose mask over the whole sequence (past + new) is `attention`.
    pub(super) fn new(
        spec: &ModelSpec,
        ropes: &Ropes,
        attention: &[Vec<u8>],
        t: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<BatchContext> {
        let pos = position_ids(attention, t)?;
        let tables =
            ropes.ropes.iter().map(|r| r.tables(&pos, device, dtype)).collect::<candle_core::Result<Vec<_>>>()?;
        let full_mask = attention_bias(attention, t, None, device)?;
        let mut window_masks: Vec<(usize, Tensor)> = Vec::new();
        for l in 0..spec.num_layers {
            if let Some(w) = spec.window_for(l) {
                if !window_masks.iter().any(|(ww, _)| *ww == w) {
                    window_masks.push((w, attention_bias(attention, t, Some(w), device)?));
                }
            }
        }
        Ok(BatchContext {
            tables,
            rope_of: ropes.of.clone(),
            full_mask,
            window_masks,
            per_layer_inputs: None,
            shared_kv: SharedKv::default(),
        })
    }

    /// This context with every layer's per-layer input (`[B, T, layers, width]`).
    pub(super) fn with_per_layer_inputs(self, inputs: Option<Tensor>) -> BatchContext {
        BatchContext { per_layer_inputs: inputs, ..self }
    }

    fn mask(&self, spec: &ModelSpec, layer: usize) -> &Tensor {
        match spec.window_for(layer) {
            None => &self.full_mask,
            Some(w) => &self.window_masks.iter().find(|(ww, _)| *ww == w).expect("every window was built").1,
        }
    }
}

/// Multiply embedded tokens by the family's embedding scale, if it has one.
pub(super) fn scale_embedding(spec: &ModelSpec, h: Tensor) -> Result<Tensor> {
    Ok(match spec.embedding_scale {
        // Hugging Face multiplies by the normalizer cast to the model dtype.
        Some(scale) => {
            let scale = Tensor::new(scale as f32, h.device())?.to_dtype(h.dtype())?;
            h.broadcast_mul(&scale)?
        }
        None => h,
    })
}

/// Store `x` at `point`/`layer` in `captures` if `spec` asks for it.
fn record(
    spec: Option<&CaptureSpec>,
    captures: &mut Captures,
    point: HookPoint,
    layer: usize,
    x: &Tensor,
) -> Result<()> {
    if let Some(c) = spec {
        if c.points.contains(&point) && c.wants_layer(layer) {
            captures.values.insert((point, layer), select_positions(x, &c.from_end)?);
        }
    }
    Ok(())
}

/// One decoder layer `l` on the stream `h` — the one definition of a layer's step, which the
/// whole-model [`Decoder::forward`] and the layer-major path both run: hook points with their
/// interventions and captures, post-norms (Gemma 2/3/4), the layer's mask (sliding windows),
/// rope table and output scalar (Gemma 4). `cache` holds this layer's keys and values so far and is extended.
#[allow(clippy::too_many_arguments)]
pub(super) fn layer_step(
    spec: &ModelSpec,
    layer: &Layer,
    l: usize,
    mut h: Tensor,
    ctx: &BatchContext,
    cache: Option<&mut Option<LayerCache>>,
    iv: &Interventions,
    capture: Option<&CaptureSpec>,
    captures: &mut Captures,
) -> Result<Tensor> {
    let mask = ctx.mask(spec, l);
    let (cos, sin) = &ctx.tables[ctx.rope_of[l]];
    h = iv.apply(HookPoint::ResidPre, l, h)?;
    record(capture, captures, HookPoint::ResidPre, l, &h)?;
    let x = pre_norm(spec, &h, layer.attn_norm.as_ref())?;
    let raw = iv.apply(HookPoint::AttnRaw, l, layer.attention(spec, &x, cos, sin, mask, cache, &ctx.shared_kv)?)?;
    record(capture, captures, HookPoint::AttnRaw, l, &raw)?;
    let out = block_output(spec, raw, layer.attn_post_norm.as_ref())?;
    let out = iv.apply(HookPoint::AttnOut, l, out)?;
    record(capture, captures, HookPoint::AttnOut, l, &out)?;
    h = iv.apply(HookPoint::ResidMid, l, add(&h, &out)?)?;
    record(capture, captures, HookPoint::ResidMid, l, &h)?;
    let x = pre_norm(spec, &h, layer.mlp_norm.as_ref())?;
    let wants_routes = capture.is_some_and(|c| c.routing && c.wants_layer(l)) && layer.is_sparse();
    let mut chosen = Vec::new();
    let raw = layer.mlp(&x, wants_routes.then_some(&mut chosen))?;
    if let (true, Some(c)) = (wants_routes, capture) {
        captures.routes.insert(l, routes_at(&chosen, x.dim(0)?, x.dim(1)?, &c.from_end)?);
    }
    let raw = iv.apply(HookPoint::MlpRaw, l, raw)?;
    record(capture, captures, HookPoint::MlpRaw, l, &raw)?;
    let out = block_output(spec, raw, layer.mlp_post_norm.as_ref())?;
    let out = iv.apply(HookPoint::MlpOut, l, out)?;
    record(capture, captures, HookPoint::MlpOut, l, &out)?;
    h = add(&h, &out)?;
    if let Some(block) = &layer.per_layer {
        let inputs = ctx.per_layer_inputs.as_ref().ok_or_else(|| {
            Error::Invalid(format!("layer {l} has a per-layer block but the batch has no per-layer inputs"))
        })?;
        let raw = block.forward(&h, &inputs.narrow(2, l, 1)?.squeeze(2)?)?;
        let raw = iv.apply(HookPoint::PerLayerRaw, l, raw)?;
        record(capture, captures, HookPoint::PerLayerRaw, l, &raw)?;
        let out = iv.apply(HookPoint::PerLayerOut, l, block_output(spec, raw, Some(&block.post_norm))?)?;
        record(capture, captures, HookPoint::PerLayerOut, l, &out)?;
        h = add(&h, &out)?;
    }
    if let Some(scalar) = &layer.layer_scalar {
        // Gemma 4: the whole stream, scaled after the layer's last add.
        h = h.broadcast_mul(scalar)?;
    }
    h = iv.apply(HookPoint::ResidPost, l, h)?;
    record(capture, captures, HookPoint::ResidPost, l, &h)?;
    Ok(h)
}

/// A block's input: the stream through its pre-norm, or the stream itself (OLMo 2).
fn pre_norm(spec: &ModelSpec, h: &Tensor, gamma: Option<&Tensor>) -> Result<Tensor> {
    Ok(match gamma {
        Some(g) => rms_norm(h, g, spec.norm_eps)?,
        None => h.clone(),
    })
}

/// What a block adds to the stream: its raw output through its post-norm (Gemma 2/3, OLMo 2,
/// GLM-4), times the residual multiplier (Granite).
fn block_output(spec: &ModelSpec, raw: Tensor, post_norm: Option<&Tensor>) -> Result<Tensor> {
    let out = match post_norm {
        Some(g) => rms_norm(&raw, g, spec.norm_eps)?,
        None => raw,
    };
    Ok(match spec.residual_multiplier {
        Some(m) => (out * m)?,
        None => out,
    })
}

/// Check that `ids` / `attention` form a rectangular batch of in-vocabulary tokens over `past`
/// cached tokens; returns `(batch, new tokens)`.
pub(super) fn check_batch(
    spec: &ModelSpec,
    ids: &[Vec<u32>],
    attention: &[Vec<u8>],
    past: usize,
) -> Result<(usize, usize)> {
    let b = ids.len();
    let t = ids.first().map_or(0, Vec::len);
    if b == 0 || t == 0 || ids.iter().any(|r| r.len() != t) || attention.len() != b {
        return Err(Error::Invalid("forward needs a non-empty rectangular batch".into()));
    }
    if attention.iter().any(|r| r.len() != past + t) {
        return Err(Error::Invalid(format!("attention mask must cover past ({past}) + new ({t}) tokens")));
    }
    if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= spec.vocab_size) {
        return Err(Error::Invalid(format!("token id {bad} is outside the vocabulary ({})", spec.vocab_size)));
    }
    if let Some(inputs) = &spec.per_layer_inputs {
        if let Some(&bad) = ids.iter().flatten().find(|&&id| id as usize >= inputs.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the per-layer input table ({} rows)",
                inputs.vocab_size
            )));
        }
    }
    Ok((b, t))
}

impl Decoder {
    /// Load every weight of `model` onto `device` in `dtype`, the matrices kept as
    /// [`WeightStorage::from_env`] says.
    pub fn load(model: &ModelDir, device: &Device, dtype: DType) -> Result<Decoder> {
        Decoder::load_with(model, device, dtype, WeightStorage::from_env()?)
    }

    /// Load every weight of `model` onto `device` in `dtype`, the matrices kept as `storage`
    /// says ([`WeightStorage::Auto`] resolved against the memory budget).
    pub fn load_with(model: &ModelDir, device: &Device, dtype: DType, storage: WeightStorage) -> Result<Decoder> {
        Decoder::load_with_options(model, device, dtype, LoadOptions { storage, ..LoadOptions::default() })
    }

    /// Load every weight of `model` onto `device` in `dtype`, kept as `options` says.
    pub fn load_with_options(model: &ModelDir, device: &Device, dtype: DType, options: LoadOptions) -> Result<Decoder> {
        let storage = super::memory::resolve_storage(options.storage, model, dtype, device)?;
        let spec = model.spec.clone();
        let loader = Loader { model, device, dtype, storage, kernels: options.kernels };
        let embed_shape = [spec.vocab_size, spec.hidden_size];
        let head = |name: &str| -> Result<Linear> {
            loader.finish(loader.linear(name, None, spec.vocab_size, spec.hidden_size)?)
        };
        let (embed, lm_head) = if model.head_is_tied() {
            (Embedding::Head, head(&spec.embed_name())?)
        } else {
            (Embedding::Own(loader.embedding(&spec.embed_name(), &embed_shape)?), head(&spec.lm_head_name())?)
        };
        let layers = (0..spec.num_layers).map(|l| Layer::load(&loader, &spec, l)).collect::<Result<Vec<_>>>()?;
        let final_norm = loader.norm(&spec.final_norm_name(), spec.hidden_size)?;
        let ropes = Ropes::new(model)?;
        let per_layer = match (&spec.per_layer_inputs, PerLayerMixer::load(&loader, &spec)?) {
            (Some(inputs), Some(mixer)) => {
                let shape = [inputs.vocab_size, spec.num_layers * inputs.width];
                Some((loader.embedding(&spec.per_layer_embed_name(), &shape)?, mixer))
            }
            _ => None,
        };
        Ok(Decoder { spec, device: device.clone(), dtype, embed, layers, final_norm, lm_head, ropes, per_layer })
    }

    /// The embedding matrix `[vocab, hidden]` (unpacked from the tied head's panels where the
    /// embedding lives there).
    pub(super) fn embedding(&self) -> candle_core::Result<Tensor> {
        match &self.embed {
            Embedding::Own(e) => Ok(e.clone()),
            Embedding::Head => self.lm_head.weight(),
        }
    }

    /// The layouts the linears' matrices (the head's included) are kept in, which name the
    /// kernels their products take.
    pub fn weight_layouts(&self) -> BTreeSet<WeightLayout> {
        let layers = self.layers.iter().flat_map(|l| [&l.qkv, &l.o_proj].into_iter().chain(l.ffn.linears()));
        layers.chain([&self.lm_head]).map(|linear| linear.w.layout()).collect()
    }

    /// The model description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The bytes the weights take in memory (a tied head counted once).
    pub fn weight_bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let embed = match &self.embed {
            Embedding::Own(e) => size(e),
            Embedding::Head => 0,
        };
        let layers: usize = self.layers.iter().map(super::layer::Layer::bytes).sum();
        let per_layer = self.per_layer.as_ref().map_or(0, |(table, mixer)| size(table) + mixer.bytes());
        embed + self.lm_head.bytes() + size(&self.final_norm) + layers + per_layer
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run `ids` (`[batch][new]`, left-padded) whose attention mask over the whole sequence so
    /// far is `attention` (`[batch][past + new]`, 1 = real token). With a cache, `past` tokens
    /// are already in it and it is extended.
    /// The pass runs on a worker of rayon's pool.
    pub fn forward(
        &self,
        ids: &[Vec<u32>],
        attention: &[Vec<u8>],
        cache: Option<&mut KvCache>,
        request: &ForwardRequest<'_>,
    ) -> Result<ForwardOutput> {
        super::ops::on_worker(|| self.forward_here(ids, attention, cache, request))
    }

    fn forward_here(
        &self,
        ids: &[Vec<u32>],
        attention: &[Vec<u8>],
        mut cache: Option<&mut KvCache>,
        request: &ForwardRequest<'_>,
    ) -> Result<ForwardOutput> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (b, t) = check_batch(&self.spec, ids, attention, past)?;
        let spec = &self.spec;
        let iv = request.interventions;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        // Gather the rows, then widen them (a 16-bit embedding stays 16-bit).
        let h = match &self.embed {
            Embedding::Own(embed) => embed.index_select(&Tensor::new(flat.as_slice(), &self.device)?, 0)?,
            Embedding::Head => self.lm_head.gather_rows(&flat)?,
        };
        let h = h.to_dtype(self.dtype)?.reshape((b, t, spec.hidden_size))?;
        let mut h = scale_embedding(spec, h)?;
        // The per-layer inputs read the embedded stream as layer 0 reads it (after its
        // resid_pre interventions), so an ablation there reaches them as an edit of the
        // embedding does.
        let per_layer_inputs = match &self.per_layer {
            Some((table, mixer)) => {
                let rows = table.index_select(&Tensor::new(flat.as_slice(), &self.device)?, 0)?;
                let rows = rows.reshape((b, t, ()))?;
                Some(mixer.inputs(spec, &rows, &iv.apply(HookPoint::ResidPre, 0, h.clone())?)?)
            }
            None => None,
        };
        let ctx = BatchContext::new(spec, &self.ropes, attention, t, &self.device, self.dtype)?
            .with_per_layer_inputs(per_layer_inputs);
        let mut captures = Captures::default();
        let last_needed = match request.logits {
            LogitsMode::None => request.capture.and_then(CaptureSpec::last_layer).map_or(spec.num_layers, |l| l + 1),
            _ => spec.num_layers,
        };
        for (l, layer) in self.layers.iter().enumerate().take(last_needed) {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            h = layer_step(spec, layer, l, h, &ctx, slot, iv, request.capture, &mut captures)?;
        }
        let logits = match request.logits {
            LogitsMode::None => None,
            mode => {
                let h = if mode == LogitsMode::Last { h.narrow(1, t - 1, 1)? } else { h };
                let n = rms_norm(&h, &self.final_norm, spec.norm_eps)?;
                let n = iv.apply(HookPoint::FinalNorm, spec.num_layers, n)?;
                record(request.capture, &mut captures, HookPoint::FinalNorm, spec.num_layers, &n)?;
                let (bb, tt, hh) = n.dims3()?;
                let mut logits = self.lm_head.forward(&n.reshape((bb * tt, hh))?)?.to_dtype(DType::F32)?.reshape((
                    bb,
                    tt,
                    spec.vocab_size,
                ))?;
                if let Some(scale) = spec.logits_scaling {
                    logits = (logits / scale)?;
                }
                if let Some(cap) = spec.final_logit_softcapping {
                    logits = ((logits / cap)?.tanh()? * cap)?;
                }
                Some(if mode == LogitsMode::Last { logits.squeeze(1)? } else { logits })
            }
        };
        Ok(ForwardOutput { logits, captures })
    }
}

/// The experts of each row's tokens `T - e` for `e` in `from_end`, from every token's choice
/// (`chosen`, row-major over `[B, T]`).
fn routes_at(chosen: &[Vec<usize>], b: usize, t: usize, from_end: &[usize]) -> Result<super::hooks::Routes> {
    if let Some(&e) = from_end.iter().find(|&&e| e == 0 || e > t) {
        return Err(Error::Invalid(format!("position -{e} is outside a {t}-token prompt")));
    }
    Ok((0..b).map(|row| from_end.iter().map(|&e| chosen[row * t + t - e].clone()).collect()).collect())
}

/// `x[:, T - e, :]` for each `e` in `from_end`, as `[B, P, H]` f32.
fn select_positions(x: &Tensor, from_end: &[usize]) -> Result<Tensor> {
    let t = x.dim(1)?;
    let parts = from_end
        .iter()
        .map(|&e| {
            if e == 0 || e > t {
                return Err(Error::Invalid(format!("position -{e} is outside a {t}-token prompt")));
            }
            Ok(x.narrow(1, t - e, 1)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?.to_dtype(DType::F32)?.contiguous()?)
}

/// Softmax of one row of logits, in f32 (for samplers and evaluation).
pub fn log_probs(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)
}
