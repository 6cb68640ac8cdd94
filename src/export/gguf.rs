//! Hugging Face folder → one GGUF file that llama.cpp, Ollama and LM Studio run.
//!
//! Tensor names come from the table `import` reads ([`crate::import`]'s `names`), the value
//! changes are the inverse of the importer's (llama's q/k row permutation, Gemma's `1 + w`
//! norms), and the metadata holds what llama.cpp reads for each architecture, the tokenizer
//! (`tokenizer.ggml.*`, padded to the embedding's rows) and the chat template, plus the edit
//! record as `scalpel.*`. The file is streamed one tensor at a time into a temporary file beside
//! the output, synced and renamed.

use crate::arch::{Family, KvSharing, ModelSpec, RopeScaling};
use crate::checkpoint::{encode_f32, EditableDtype, ModelDir};
use crate::import::names::{fix_for, gguf_expert_name, gguf_name, gguf_stacked_names, permute_rows, permuted, Fix};
use crate::import::tokenizer::TURN_ENDS;
use crate::progress::Progress;
use crate::surgery::{SurgeryRecord, EDIT_RECORD_FILE};
use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const ALIGNMENT: u64 = 32;

/// The tensor types an export can write (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    /// Each tensor keeps its type: the source GGUF's (with [`GgufOptions::source_gguf`]; an
    /// edited tensor of a type under 8 bits becomes Q8_0), else the stored safetensors dtype.
    Same,
    /// 32-bit floats.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 8-bit blocks of 32.
    Q8_0,
    /// 6-bit K-quant.
    Q6K,
    /// llama.cpp's Q5_K_M mix.
    Q5KM,
    /// llama.cpp's Q4_K_M mix.
    Q4KM,
}

impl GgufType {
    /// Every type with its command-line name.
    pub const NAMES: [(&'static str, GgufType); 8] = [
        ("same", GgufType::Same),
        ("f32", GgufType::F32),
        ("f16", GgufType::F16),
        ("bf16", GgufType::BF16),
        ("q8_0", GgufType::Q8_0),
        ("q6_k", GgufType::Q6K),
        ("q5_k_m", GgufType::Q5KM),
        ("q4_k_m", GgufType::Q4KM),
    ];

    /// Parse a command-line name (case-insensitive).
    pub fn parse(text: &str) -> Result<GgufType> {
        let t = text.trim().to_ascii_lowercase();
        Self::NAMES.iter().find(|(n, _)| *n == t).map(|(_, ty)| *ty).ok_or_else(|| {
            let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            Error::Invalid(format!("unknown GGUF type `{text}`; choose one of: {}", names.join(", ")))
        })
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE) for a file of this type.
    fn file_type(self, source: EditableDtype) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
            GgufType::Q4KM => 15,
            GgufType::Q5KM => 17,
            GgufType::Q6K => 18,
            GgufType::BF16 => 32,
            GgufType::Same => match source {
                EditableDtype::F32 => 0,
                EditableDtype::F16 => 1,
                EditableDtype::BF16 => 32,
            },
        }
    }
}

/// Options of a GGUF export.
#[derive(Debug, Clone)]
pub struct GgufOptions {
    /// Tensor type.
    pub ty: GgufType,
    /// With [`GgufType::Same`]: the GGUF the folder was imported from. Tensors the edit record
    /// does not list are byte-copied from it; edited ones are requantized to their type there,
    /// or to Q8_0 where that has fewer bits.
    pub source_gguf: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
    /// Also write an Ollama Modelfile beside the GGUF (`NAME.Modelfile`).
    pub modelfile: bool,
}

impl Default for GgufOptions {
    fn default() -> Self {
        GgufOptions { ty: GgufType::F16, source_gguf: None, force: false, modelfile: true }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct GgufReport {
    /// The GGUF file.
    pub out: PathBuf,
    /// llama.cpp architecture.
    pub architecture: String,
    /// Tensors written.
    pub tensors: usize,
    /// Tensor types written, with counts.
    pub types: BTreeMap<String, usize>,
    /// Tensors byte-copied from the source GGUF.
    pub copied: usize,
    /// Tokens added to reach the embedding's rows.
    pub padded_tokens: usize,
    /// Folder tensors with no GGUF name (not written).
    pub skipped: Vec<String>,
    /// File size in bytes.
    pub bytes: u64,
    /// The Modelfile, when one was written.
    pub modelfile: Option<PathBuf>,
}

/// The llama.cpp architecture of a family (None: not exported).
pub fn gguf_architecture(family: Family) -> Option<&'static str> {
    Some(match family {
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
        Family::Gemma => "gemma",
        Family::Gemma2 => "gemma2",
        Family::Gemma3 => "gemma3",
        Family::Olmo2 => "olmo2",
        Family::Granite => "granite",
        Family::Glm4 => "glm4",
        Family::Smollm3 => "smollm3",
        Family::Gemma4 => "gemma4",
        Family::Phi3 => "phi3",
        // llama.cpp's Mixtral is `llama` with `expert_count` and stacked experts.
        Family::Mixtral => "llama",
        Family::Qwen2Moe => "qwen2moe",
        Family::Qwen3Moe => "qwen3moe",
        // Qwen-1's llama.cpp layout (`qwen`) is not written.
        Family::Qwen => return None,
    })
}

/// The families [`gguf_architecture`] writes, as the error message lists them.
const EXPORTED: &str =
    "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gemma4, phi3, olmo2, granite, glm4, smollm3, mixtral, qwen2_moe, qwen3_moe";

/// The architectures whose llama.cpp graph reads `output.weight` even when the head is tied.
const OUTPUT_REQUIRED: &[&str] = &["qwen2moe", "olmo2"];

/// What llama.cpp's graph of the family fixes and the spec must match, so that the file runs
/// as the folder does instead of silently dropping a tensor or a setting.
fn check_layout(spec: &ModelSpec) -> Result<()> {
    let family = spec.family;
    let refuse = |why: String| Err(Error::Invalid(format!("GGUF export of {family}: {why}")));
    match family {
        // Both graphs pass no bias to the attention output (nor OLMo 2's to the MLP).
        Family::Olmo2 | Family::Smollm3 if spec.o_proj_bias || spec.mlp_bias => {
            return refuse("llama.cpp's graph of this family has no output biases, and this model has them".into())
        }
        // llama.cpp skips the rotary embedding on every fourth layer of SmolLM3, whatever the
        // config says.
        Family::Smollm3 => {
            if let Some(l) =
                (0..spec.num_layers).find(|&l| spec.nope_layers.get(l).copied().unwrap_or(false) != ((l + 1) % 4 == 0))
            {
                return refuse(format!(
                    "layer {l} {} the rotary embedding, and llama.cpp skips it on every fourth layer (3, 7, …) and only there",
                    if spec.nope_layers.get(l).copied().unwrap_or(false) { "skips" } else { "uses" }
                ));
            }
        }
        // llama.cpp rotates Gemma 4's sliding layers whole and scales no rope.
        Family::Gemma4 => {
            if spec.proportional_rope.is_some_and(|p| p.local_fraction != 1.0) {
                return refuse("its sliding layers rotate part of each head, and llama.cpp rotates them whole".into());
            }
            if spec.rope_scaling.is_some() {
                return refuse(
                    "llama.cpp's graph of this family applies no rope scaling, and this model has one".into(),
                );
            }
            if spec.per_layer_inputs.is_some() || spec.kv_sharing.iter().any(|k| *k != KvSharing::Own) {
                return refuse(
                    "the per-layer inputs and shared keys of Gemma 4's E models are not written to GGUF yet \
                     (export the edited folder as safetensors or an adapter)"
                        .into(),
                );
            }
        }
        _ => {}
    }
    let Some(moe) = &spec.moe else { return Ok(()) };
    if let Some(dense) = (0..spec.num_layers).find(|&l| !spec.is_sparse(l)) {
        return refuse(format!(
            "layer {dense} is dense, and llama.cpp runs every layer of this family as a mixture of experts"
        ));
    }
    // Top-k routing weights are renormalised for Mixtral and Qwen3-MoE, not for Qwen2-MoE.
    let renormalised = family != Family::Qwen2Moe;
    if moe.norm_topk_prob != renormalised {
        return refuse(format!(
            "norm_topk_prob is {}, and llama.cpp runs this family with {renormalised}",
            moe.norm_topk_prob
        ));
    }
    if (family == Family::Qwen2Moe) != moe.shared_expert_intermediate_size.is_some() {
        return refuse(format!(
            "llama.cpp's layout of this family {} a shared expert",
            if family == Family::Qwen2Moe { "has" } else { "has no" }
        ));
    }
    Ok(())
}

/// Where a tensor's bytes come from.
enum Source {
    /// The folder's tensor (Hugging Face name), converted.
    Folder(String),
    /// Folder tensors (one per expert, in expert order) stacked over the experts.
    Experts(Vec<String>),
    /// Part `.1` of `.2` equal parts of every expert's rows of a folder tensor stacked over the
    /// experts (`[E, parts·rows, cols]`).
    Part(String, usize, usize),
    /// Bytes of the source GGUF at this absolute offset.
    Copy(u64),
    /// Llama 3 rope frequency divisors.
    RopeFreqs(Vec<f32>),
}

/// A GGUF tensor before its type is chosen: name, dims, source, the folder tensors it is made of
/// (Hugging Face names, for the edit record), and their stored dtype.
type Target = (String, Vec<usize>, Source, Vec<String>, EditableDtype);

struct Planned {
    name: String,
    dims: Vec<usize>,
    ty: GgmlDType,
    source: Source,
}

impl Planned {
    fn bytes(&self) -> u64 {
        let elems: usize = self.dims.iter().product();
        (elems / self.ty.block_size() * self.ty.type_size()) as u64
    }
}

fn type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

/// `want` where a row of `cols` values splits into its blocks, else llama.cpp's fallback for
/// narrow rows: a K-quant falls to the 32-value type of about its bits (Q4_K → Q5_0,
/// Q5_K → Q5_1, Q6_K → Q8_0), and F16 where even that does not split the row.
fn fitting(want: GgmlDType, cols: usize) -> GgmlDType {
    if cols.is_multiple_of(want.block_size()) {
        return want;
    }
    let narrow = match want {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        _ => GgmlDType::Q8_0,
    };
    if cols.is_multiple_of(narrow.block_size()) {
        narrow
    } else {
        GgmlDType::F16
    }
}

/// The type an edited tensor of a `same` export is written in: its source type, or Q8_0 where
/// that has fewer bits. An edited matrix is off its source's quantization grid, so a 4–6-bit
/// type adds a second full rounding error on exactly the tensors the edit changed. Measured on
/// the demo model (first-token KL against the bf16 edit, 20 held-out prompts): edited tensors
/// back in Q5_0 / Q4_K / Q6_K 9.6e-3; in Q8_0 1.1e-3, for 20 % more bytes.
fn edited_type(source: GgmlDType) -> GgmlDType {
    match source {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::Q8_0 | GgmlDType::Q8_1 | GgmlDType::Q8K => {
            source
        }
        _ => GgmlDType::Q8_0,
    }
}

/// llama.cpp's choice of layers that get more bits in the `_M` mixes.
fn more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

fn layer_of(gguf: &str) -> Option<usize> {
    gguf.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type of one matrix under `ty` (vectors are always F32, as llama.cpp keeps them).
fn matrix_type(
    ty: GgufType,
    gguf: &str,
    dims: &[usize],
    stored: EditableDtype,
    spec: &ModelSpec,
    tied: bool,
) -> GgmlDType {
    // Vectors, and the routers llama.cpp keeps in F32 (`ffn_gate_inp`, and the shared expert's
    // `[1, hidden]` gate, a vector to llama.cpp).
    if dims.len() < 2 || gguf.contains("ffn_gate_inp") {
        return GgmlDType::F32;
    }
    let cols = *dims.last().unwrap_or(&1);
    let float = |d: EditableDtype| match d {
        EditableDtype::F32 => GgmlDType::F32,
        EditableDtype::F16 => GgmlDType::F16,
        EditableDtype::BF16 => GgmlDType::BF16,
    };
    let head = gguf == "output.weight" || (tied && gguf == "token_embd.weight");
    // llama.cpp gives 8-expert models' attn_k and attn_v Q8_0 and, in Q4_K_M, attn_output Q5_K.
    let eight_experts = spec.moe.as_ref().is_some_and(|m| m.num_experts == 8);
    let mix = |base: GgmlDType| {
        let more = layer_of(gguf).is_some_and(|l| more_bits(l, spec.num_layers));
        // `ffn_down` also matches the experts' `ffn_down_exps` and `ffn_down_shexp`.
        if head {
            GgmlDType::Q6K
        } else if eight_experts && (gguf.contains("attn_v.") || gguf.contains("attn_k.")) {
            GgmlDType::Q8_0
        } else if eight_experts && base == GgmlDType::Q4K && gguf.contains("attn_output.") {
            GgmlDType::Q5K
        } else if (gguf.contains("attn_v.") || gguf.contains("ffn_down")) && more {
            GgmlDType::Q6K
        } else {
            base
        }
    };
    let eight = |want: GgmlDType| {
        if eight_experts && (gguf.contains("attn_v.") || gguf.contains("attn_k.")) {
            GgmlDType::Q8_0
        } else {
            want
        }
    };
    match ty {
        GgufType::Same => float(stored),
        GgufType::F32 => GgmlDType::F32,
        GgufType::F16 => GgmlDType::F16,
        GgufType::BF16 => GgmlDType::BF16,
        GgufType::Q8_0 => fitting(GgmlDType::Q8_0, cols),
        GgufType::Q6K => fitting(eight(GgmlDType::Q6K), cols),
        GgufType::Q5KM => fitting(mix(GgmlDType::Q5K), cols),
        GgufType::Q4KM => fitting(mix(GgmlDType::Q4K), cols),
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

/// The folder's edit record, when it is an edited model.
pub fn edit_record(model: &ModelDir) -> Result<Option<SurgeryRecord>> {
    let path = model.root.join(EDIT_RECORD_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let value = read_json(&path)?;
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| Error::bad_checkpoint(&path, format!("not a scalpel edit record: {e}")))
}

/// The Hugging Face name scalpel's table uses for a folder tensor (`model.`-prefixed).
fn canonical(spec: &ModelSpec, name: &str) -> String {
    if name == spec.lm_head_name() {
        return "lm_head.weight".into();
    }
    match name.strip_prefix(spec.tensor_prefix.as_str()) {
        Some(rest) => format!("model.{rest}"),
        None => name.to_string(),
    }
}

/// Export `model` to the GGUF file `out`.
pub fn export_gguf(model: &ModelDir, out: &Path, options: &GgufOptions, progress: &dyn Progress) -> Result<GgufReport> {
    let spec = &model.spec;
    let arch = gguf_architecture(spec.family).ok_or_else(|| {
        Error::Invalid(format!("GGUF export of the {} family is not supported ({EXPORTED} are)", spec.family))
    })?;
    check_layout(spec)?;
    if out.exists() && !options.force {
        return Err(Error::Invalid(format!("{} exists; pass --force to replace it", out.display())));
    }
    if out.is_dir() {
        return Err(Error::Invalid(format!("{} is a folder; give a file name ending in .gguf", out.display())));
    }
    if options.source_gguf.is_some() && options.ty != GgufType::Same {
        return Err(Error::Invalid("a source GGUF is only used with --type same".into()));
    }
    let record = edit_record(model)?;
    let tied = model.head_is_tied();
    let checkpoint = &model.checkpoint;
    let embed_rows = checkpoint.tensor(&spec.embed_name())?.shape[0];

    // The source GGUF of `--type same`.
    let mut source = match &options.source_gguf {
        Some(path) => {
            let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let content = Content::read(&mut file)
                .map_err(|e| Error::bad_checkpoint(path, format!("not a readable GGUF file: {e}")))?;
            Some((path.clone(), file, content))
        }
        None => None,
    };
    let edited: HashSet<String> =
        record.as_ref().map(|r| r.edits.iter().map(|e| canonical(spec, &e.tensor)).collect()).unwrap_or_default();
    let head_edited = record.as_ref().is_some_and(|r| r.edits_tied_head && !r.options.untie);

    let mut names: Vec<&str> = checkpoint.names();
    names.sort_by_key(|n| natural_key(n));
    let mut plan: Vec<Planned> = Vec::new();
    let mut skipped = Vec::new();
    let mut stored_dtype = EditableDtype::F32;
    // Each folder tensor's GGUF tensors: (name, dims, source, the folder tensors it is made of).
    let mut targets: Vec<Target> = Vec::new();
    // Per-expert matrices gather into their stacked tensor: its index in `targets`, and the
    // experts seen.
    let mut stacks: HashMap<String, (usize, BTreeMap<usize, String>)> = HashMap::new();
    for name in names {
        let hf = canonical(spec, name);
        let view = checkpoint.tensor(name)?;
        let stored = EditableDtype::of(view.dtype, name)?;
        let dims = view.shape.to_vec();
        if let Some(gg) = gguf_name(arch, &hf) {
            targets.push((gg, dims, Source::Folder(name.to_string()), vec![hf], stored));
        } else if let Some((gg, e)) = gguf_expert_name(arch, &hf) {
            let (at, experts) = stacks.entry(gg.clone()).or_insert_with(|| {
                targets.push((gg, dims, Source::Experts(Vec::new()), Vec::new(), stored));
                (targets.len() - 1, BTreeMap::new())
            });
            if targets[*at].1 != view.shape {
                return Err(Error::bad_tensor(name, format!("shape {:?} differs from its other experts'", view.shape)));
            }
            experts.insert(e, name.to_string());
            targets[*at].3.push(hf);
        } else if let Some(parts) = gguf_stacked_names(arch, &hf).filter(|_| dims.len() == 3) {
            for (gg, part, count) in parts {
                if dims[1] % count != 0 {
                    return Err(Error::bad_tensor(name, format!("{} rows do not split in {count}", dims[1])));
                }
                let part_dims = vec![dims[0], dims[1] / count, dims[2]];
                targets.push((gg, part_dims, Source::Part(name.to_string(), part, count), vec![hf.clone()], stored));
            }
        } else {
            skipped.push(name.to_string());
            continue;
        }
        if view.shape.len() >= 2 {
            stored_dtype = stored;
        }
    }
    for (gg, (at, experts)) in stacks {
        let count = experts.len();
        if experts.keys().copied().ne(0..count) {
            return Err(Error::Invalid(format!("`{gg}`: the folder's experts are not numbered 0..{count}")));
        }
        let target = &mut targets[at];
        target.1.insert(0, count);
        target.2 = Source::Experts(experts.into_values().collect());
    }
    let head_written = tied && OUTPUT_REQUIRED.contains(&arch);
    if head_written {
        let embed = spec.embed_name();
        let dims = checkpoint.tensor(&embed)?.shape.to_vec();
        let stored = EditableDtype::of(checkpoint.tensor(&embed)?.dtype, &embed)?;
        targets.push(("output.weight".into(), dims, Source::Folder(embed), vec!["lm_head.weight".into()], stored));
    }
    for (gg, dims, from, members, stored) in targets {
        let mut from = from;
        let mut ty = matrix_type(options.ty, &gg, &dims, stored, spec, tied && !head_written);
        let name = match &from {
            Source::Folder(n) | Source::Part(n, _, _) => n.clone(),
            Source::Experts(list) => list.first().cloned().unwrap_or_default(),
            _ => gg.clone(),
        };
        let name = name.as_str();
        if let Some((path, _, content)) = &source {
            let is_edited = members.iter().any(|hf| {
                edited.contains(hf) || (head_edited && (hf == "model.embed_tokens.weight" || hf == "lm_head.weight"))
            });
            match content.tensor_infos.get(&gg) {
                Some(info) if info.shape.dims() == dims.as_slice() => {
                    if is_edited {
                        ty = if dims.len() < 2 {
                            GgmlDType::F32
                        } else {
                            fitting(edited_type(info.ggml_dtype), *dims.last().unwrap_or(&1))
                        };
                    } else {
                        ty = info.ggml_dtype;
                        from = Source::Copy(content.tensor_data_offset + info.offset);
                    }
                }
                Some(info) => {
                    return Err(Error::bad_tensor(
                        name,
                        format!(
                            "shape {dims:?}, but `{gg}` in {} has shape {:?}: the folder is not that GGUF's import",
                            path.display(),
                            info.shape.dims()
                        ),
                    ))
                }
                None => {}
            }
        }
        plan.push(Planned { name: gg, dims, ty, source: from });
    }
    if let Some(RopeScaling::Llama3 { .. }) = &spec.rope_scaling {
        if permuted(arch) {
            let rotary = (spec.head_dim as f64 * spec.partial_rotary_factor) as usize;
            let unscaled = crate::model::rope::Rope::new(rotary, spec.rope_theta, None);
            let scaled = crate::model::rope::Rope::new(rotary, spec.rope_theta, spec.rope_scaling.as_ref());
            let divisors: Vec<f32> = unscaled
                .inverse_frequencies()
                .iter()
                .zip(scaled.inverse_frequencies())
                .map(|(u, s)| (u / s) as f32)
                .collect();
            let dims = vec![divisors.len()];
            plan.push(Planned {
                name: "rope_freqs.weight".into(),
                dims,
                ty: GgmlDType::F32,
                source: Source::RopeFreqs(divisors),
            });
        }
    }
    // Gemma 4's full layers rotate a fraction of each head, at the frequencies of the whole
    // head (`ProportionalRope`); llama.cpp rotates the whole head and divides the frequencies of
    // the pairs left still by 1e30, as its converter writes.
    if let (Some(p), Some(global)) = (spec.proportional_rope, &spec.global_attention) {
        let pairs = global.head_dim / 2;
        let turning = (p.global_fraction * global.head_dim as f64 / 2.0).floor() as usize;
        let divisors: Vec<f32> = (0..pairs).map(|i| if i < turning { 1.0 } else { 1e30 }).collect();
        plan.push(Planned {
            name: "rope_freqs.weight".into(),
            dims: vec![pairs],
            ty: GgmlDType::F32,
            source: Source::RopeFreqs(divisors),
        });
    }
    if let Some((path, file, content)) = source.as_mut() {
        check_source_matches(model, path, file, content, arch)?;
    }

    let Header { mut metadata, padded_tokens, stops } = metadata(model, arch, embed_rows, record.as_ref())?;
    let source_file_type = source.as_ref().and_then(|(_, _, c)| c.metadata.get("general.file_type")?.to_u32().ok());
    let file_type = source_file_type.unwrap_or_else(|| options.ty.file_type(stored_dtype));
    metadata.push(("general.file_type".into(), Value::U32(file_type)));

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".scalpel-export-")
        .suffix(".gguf.partial")
        .tempfile_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let mut w =
        std::io::BufWriter::with_capacity(1 << 22, tmp.as_file().try_clone().map_err(|e| Error::io(tmp.path(), e))?);
    let io = |e: std::io::Error| Error::io(out, e);
    write_header(&mut w, &metadata, &plan).map_err(io)?;
    progress.set_length(plan.len() as u64);
    let mut types = BTreeMap::new();
    let mut copied = 0;
    let heads = spec.num_heads;
    let kv_heads = spec.num_kv_heads;
    for p in &plan {
        let bytes: Vec<u8> = match &p.source {
            Source::Copy(offset) => {
                let (path, file, _) = source.as_mut().expect("a copy has a source");
                let mut buf = vec![0u8; p.bytes() as usize];
                file.seek(SeekFrom::Start(*offset))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|e| Error::io(path.as_path(), e))?;
                copied += 1;
                buf
            }
            Source::RopeFreqs(values) => encode_f32(EditableDtype::F32, values),
            // Stacked row-major `[experts, rows, cols]`: every row of `cols` values is quantized
            // on its own, as llama.cpp quantizes each expert's rows.
            Source::Experts(list) => {
                let mut values = Vec::with_capacity(p.dims.iter().product());
                for name in list {
                    values.extend(checkpoint.read_f32(name)?.0);
                    checkpoint.release(name);
                }
                encode(&values, &p.dims, p.ty).map_err(|e| Error::bad_tensor(&p.name, format!("as {:?}: {e}", p.ty)))?
            }
            Source::Part(name, part, count) => {
                let (values, _) = checkpoint.read_f32(name)?;
                let block = p.dims[1] * p.dims[2];
                let values: Vec<f32> = (0..p.dims[0])
                    .flat_map(|e| {
                        let start = (e * count + part) * block;
                        values[start..start + block].iter().copied()
                    })
                    .collect();
                encode(&values, &p.dims, p.ty).map_err(|e| Error::bad_tensor(name, format!("as {:?}: {e}", p.ty)))?
            }
            Source::Folder(name) => {
                let (mut values, _) = checkpoint.read_f32(name)?;
                checkpoint.release(name);
                let rows = p.dims[0];
                let cols = p.dims.get(1).copied().unwrap_or(1);
                match fix_for(arch, &p.name, heads, kv_heads) {
                    Fix::None => {}
                    Fix::MinusOne => values.iter_mut().for_each(|v| *v += 1.0),
                    Fix::Unpermute(h) => {
                        if h == 0 || rows % (2 * h) != 0 {
                            return Err(Error::bad_tensor(name, format!("{rows} rows do not split into {h} heads")));
                        }
                        values = permute_rows(&values, rows, cols, h);
                    }
                }
                encode(&values, &p.dims, p.ty).map_err(|e| Error::bad_tensor(name, format!("as {:?}: {e}", p.ty)))?
            }
        };
        if bytes.len() as u64 != p.bytes() {
            return Err(Error::bad_tensor(&p.name, format!("{} bytes, expected {}", bytes.len(), p.bytes())));
        }
        w.write_all(&bytes).map_err(io)?;
        w.write_all(&vec![0u8; pad(p.bytes()) as usize]).map_err(io)?;
        *types.entry(format!("{:?}", p.ty)).or_insert(0) += 1;
        progress.inc(1);
    }
    w.flush().map_err(io)?;
    drop(w);
    tmp.as_file().sync_all().map_err(io)?;
    let bytes = tmp.as_file().metadata().map_err(io)?.len();
    if options.force {
        tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    } else {
        tmp.persist_noclobber(out).map_err(|e| Error::io(out, e.error))?;
    }
    let modelfile = if options.modelfile { write_modelfile(out, &stops, options.force)? } else { None };
    Ok(GgufReport {
        out: out.to_path_buf(),
        architecture: arch.to_string(),
        tensors: plan.len(),
        types,
        copied,
        padded_tokens,
        skipped,
        bytes,
        modelfile,
    })
}

/// The source GGUF of `--type same` must be the one the folder was imported from: its final
/// norm (never edited) must dequantize to the folder's values.
fn check_source_matches(
    model: &ModelDir,
    path: &Path,
    file: &mut std::fs::File,
    content: &Content,
    arch: &str,
) -> Result<()> {
    let name = model.spec.final_norm_name();
    let (ours, _) = model.checkpoint.read_f32(&name)?;
    let theirs: Vec<f32> = content
        .tensor(file, "output_norm.weight", &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1())
        .map_err(|e| Error::bad_checkpoint(path, format!("tensor `output_norm.weight`: {e}")))?;
    let offset = if arch.starts_with("gemma") { 1.0 } else { 0.0 };
    let same = ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(a, b)| (a + offset - b).abs() <= 1e-2 * b.abs().max(1e-3));
    if !same {
        return Err(Error::bad_checkpoint(
            path,
            format!(
                "its output_norm.weight differs from the folder's {name}: the folder was not imported from this GGUF"
            ),
        ));
    }
    Ok(())
}

/// Bytes of `values` (shape `dims`) as `ty`.
fn encode(values: &[f32], dims: &[usize], ty: GgmlDType) -> candle_core::Result<Vec<u8>> {
    Ok(match ty {
        GgmlDType::F32 => encode_f32(EditableDtype::F32, values),
        GgmlDType::F16 => encode_f32(EditableDtype::F16, values),
        GgmlDType::BF16 => encode_f32(EditableDtype::BF16, values),
        _ => {
            let t = Tensor::from_slice(values, dims, &Device::Cpu)?;
            QTensor::quantize(&t, ty)?.data()?.into_owned()
        }
    })
}

fn pad(n: u64) -> u64 {
    (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT
}

fn write_string<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write_value<W: Write>(w: &mut W, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_string(w, s),
        Value::Array(items) => {
            let ty = items.first().map_or(4, value_type);
            w.write_all(&ty.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(w, item))
        }
    }
}

/// GGUF v3 header, metadata, tensor infos and the padding up to the data.
fn write_header<W: Write>(w: &mut W, metadata: &[(String, Value)], plan: &[Planned]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&0x4655_4747u32.to_le_bytes());
    buf.extend_from_slice(&3u32.to_le_bytes());
    buf.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut buf, key)?;
        buf.extend_from_slice(&value_type(value).to_le_bytes());
        write_value(&mut buf, value)?;
    }
    let mut offset = 0u64;
    for p in plan {
        write_string(&mut buf, &p.name)?;
        buf.extend_from_slice(&(p.dims.len() as u32).to_le_bytes());
        for d in p.dims.iter().rev() {
            buf.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        buf.extend_from_slice(&type_id(p.ty).to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        offset += p.bytes() + pad(p.bytes());
    }
    let padding = vec![0u8; pad(buf.len() as u64) as usize];
    w.write_all(&buf)?;
    w.write_all(&padding)
}

fn natural_key(name: &str) -> Vec<(String, u64)> {
    name.split('.').map(|p| p.parse::<u64>().map_or((p.to_string(), 0), |n| (String::new(), n))).collect()
}

fn token_of(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

/// What [`metadata`] makes of a folder.
struct Header {
    /// The file's metadata, without `general.file_type`.
    metadata: Vec<(String, Value)>,
    /// How many `[PAD{i}]` tokens were added.
    padded_tokens: usize,
    /// The texts of the tokens that end an answer.
    stops: Vec<String>,
}

/// The file's metadata from the folder's config and tokenizer.
fn metadata(model: &ModelDir, arch: &str, embed_rows: usize, record: Option<&SurgeryRecord>) -> Result<Header> {
    let spec = &model.spec;
    let mut m: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| m.push((k.to_string(), v));
    let u32v = |x: usize| Value::U32(x as u32);
    let name = model.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    put("general.architecture", Value::String(arch.into()));
    put("general.name", Value::String(name));
    put("general.quantization_version", Value::U32(2));
    put("general.alignment", Value::U32(ALIGNMENT as u32));
    let a = |k: &str| format!("{arch}.{k}");
    put(&a("context_length"), u32v(spec.max_position_embeddings));
    put(&a("embedding_length"), u32v(spec.hidden_size));
    put(&a("block_count"), u32v(spec.num_layers));
    put(&a("feed_forward_length"), u32v(spec.intermediate_size));
    put(&a("attention.head_count"), u32v(spec.num_heads));
    put(&a("attention.layer_norm_rms_epsilon"), Value::F32(spec.norm_eps as f32));
    put(&a("rope.freq_base"), Value::F32(spec.rope_theta as f32));
    match &spec.global_attention {
        // Gemma 4: the full layers' head width and key/value heads are the file's, the sliding
        // layers' are `_swa`; the full layers rotate their whole head (see `rope_freqs`).
        Some(global) => {
            let kv: Vec<Value> = (0..spec.num_layers)
                .map(|l| u32v(if spec.sliding_layers[l] { spec.num_kv_heads } else { global.num_kv_heads }))
                .collect();
            put(&a("attention.head_count_kv"), Value::Array(kv));
            put(&a("attention.key_length"), u32v(global.head_dim));
            put(&a("attention.value_length"), u32v(global.head_dim));
            put(&a("attention.key_length_swa"), u32v(spec.head_dim));
            put(&a("attention.value_length_swa"), u32v(spec.head_dim));
            put(&a("rope.dimension_count"), u32v(global.head_dim));
            put(&a("rope.dimension_count_swa"), u32v(spec.head_dim));
            put(&a("rope.freq_base_swa"), Value::F32(spec.rope_local_theta.unwrap_or(spec.rope_theta) as f32));
            // Neither per-layer input embeddings nor layers that share keys and values.
            put(&a("embedding_length_per_layer_input"), u32v(0));
            put(&a("attention.shared_kv_layers"), u32v(0));
        }
        None => {
            put(&a("attention.head_count_kv"), u32v(spec.num_kv_heads));
            put(&a("attention.key_length"), u32v(spec.head_dim));
            put(&a("attention.value_length"), u32v(spec.head_dim));
            put(&a("rope.dimension_count"), u32v((spec.head_dim as f64 * spec.partial_rotary_factor) as usize));
        }
    }
    put(&a("vocab_size"), u32v(embed_rows));
    if let Some(RopeScaling::Linear { factor }) = &spec.rope_scaling {
        put(&a("rope.scaling.type"), Value::String("linear".into()));
        put(&a("rope.scaling.factor"), Value::F32(*factor as f32));
    }
    // llama.cpp reads Phi-3's window and, for now, runs it with full attention.
    if arch == "phi3" {
        if let Some(window) = spec.sliding_window {
            put(&a("attention.sliding_window"), u32v(window));
        }
    }
    if matches!(arch, "gemma2" | "gemma3" | "gemma4") {
        if let Some(window) = spec.sliding_window {
            put(&a("attention.sliding_window"), u32v(window));
        }
        // Which layers slide: llama.cpp reads one flag per layer (without it, Gemma 3's every
        // sixth layer is global), candle the period of the pattern.
        if !spec.sliding_layers.is_empty() {
            let flags = spec.sliding_layers.iter().map(|&s| Value::Bool(s)).collect();
            put(&a("attention.sliding_window_pattern"), Value::Array(flags));
        }
        if let Some(global) = spec.sliding_layers.iter().position(|s| !s) {
            put(&a("attention.sliding_window_type"), u32v(global + 1));
        }
        if let Some(local) = spec.rope_local_theta {
            put(&a("rope.local_freq_base"), Value::F32(local as f32));
        }
    }
    if let Some(moe) = &spec.moe {
        put(&a("expert_count"), u32v(moe.num_experts));
        put(&a("expert_used_count"), u32v(moe.top_k));
        if arch != "llama" {
            put(&a("expert_feed_forward_length"), u32v(moe.expert_intermediate_size));
        }
        if let Some(shared) = moe.shared_expert_intermediate_size {
            put(&a("expert_shared_feed_forward_length"), u32v(shared));
        }
    }
    // Granite's four multipliers (llama.cpp reads the attention one in place of
    // `head_dim^-0.5`, and divides the logits by `logit_scale`).
    if arch == "granite" {
        for (key, value) in [
            ("attention.scale", spec.query_scale),
            ("embedding_scale", spec.embedding_scale),
            ("residual_scale", spec.residual_multiplier),
            ("logit_scale", spec.logits_scaling),
        ] {
            put(&a(key), Value::F32(value.unwrap_or(1.0) as f32));
        }
    }
    if let Some(cap) = spec.attn_logit_softcapping {
        put(&a("attn_logit_softcapping"), Value::F32(cap as f32));
    }
    if let Some(cap) = spec.final_logit_softcapping {
        put(&a("final_logit_softcapping"), Value::F32(cap as f32));
    }
    let (padded, stops) = tokenizer(model, arch, embed_rows, &mut put)?;
    put("scalpel.version", Value::String(env!("CARGO_PKG_VERSION").into()));
    if let Some(record) = record {
        let json = serde_json::to_string(record).map_err(|e| Error::Other(e.to_string()))?;
        put("scalpel.edit", Value::String(json));
        put("scalpel.source_model", Value::String(record.source_model.clone()));
        put("scalpel.directions_file", Value::String(record.directions_file.clone()));
        put("scalpel.strength", Value::F32(record.options.strength as f32));
        put("scalpel.norm_preserve", Value::Bool(record.options.norm_preserve));
        put("scalpel.edited_tensors", Value::U32(record.edits.len() as u32));
    }
    Ok(Header { metadata: m, padded_tokens: padded, stops })
}

/// `tokenizer.ggml.*` and the chat template from tokenizer.json and tokenizer_config.json.
/// Byte-level BPE vocabularies are written as llama.cpp's `gpt2` model; byte-fallback ones
/// (SentencePiece converted to BPE, e.g. Gemma's) as its `llama` model, scored by id (the order
/// SentencePiece ranks pieces in). Returns how many `[PAD{i}]` tokens were added, and the texts
/// of the tokens that end an answer (for the Modelfile's stops).
fn tokenizer(
    model: &ModelDir,
    arch: &str,
    embed_rows: usize,
    put: &mut dyn FnMut(&str, Value),
) -> Result<(usize, Vec<String>)> {
    let path = model
        .tokenizer_path()
        .ok_or_else(|| Error::bad_checkpoint(&model.root, "has no tokenizer.json, which a GGUF needs"))?;
    let tok = read_json(&path)?;
    let bad = |what: &str| Error::bad_checkpoint(&path, what.to_string());
    let tmodel = &tok["model"];
    if tmodel["type"].as_str() != Some("BPE") {
        return Err(bad("only BPE tokenizers can be written to GGUF"));
    }
    let vocab = tmodel["vocab"].as_object().ok_or_else(|| bad("tokenizer model has no vocab"))?;
    let mut by_id: HashMap<usize, String> = HashMap::new();
    for (t, id) in vocab {
        if let Some(id) = id.as_u64() {
            by_id.insert(id as usize, t.clone());
        }
    }
    let mut kinds: HashMap<usize, i32> = HashMap::new();
    for added in tok["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else { continue };
        by_id.insert(id as usize, content.to_string());
        kinds.insert(id as usize, if added["special"].as_bool().unwrap_or(false) { 3 } else { 4 });
    }
    let n = by_id.keys().max().map_or(0, |m| m + 1);
    if n > embed_rows {
        return Err(bad(&format!("has {n} tokens but the embedding has only {embed_rows} rows")));
    }
    let byte_fallback = tmodel["byte_fallback"].as_bool().unwrap_or(false);
    let byte_level = tok.to_string().contains("\"ByteLevel\"");
    // Gemma 4's SentencePiece-style BPE is llama.cpp's own `gemma4` model, read with its merges.
    let ggml_model = if byte_level {
        "gpt2"
    } else if byte_fallback && model.spec.family == Family::Gemma4 {
        "gemma4"
    } else if byte_fallback {
        "llama"
    } else {
        return Err(bad("a BPE tokenizer that is neither byte-level nor byte-fallback"));
    };
    let unk = tmodel["unk_token"].as_str();
    let mut tokens = Vec::with_capacity(embed_rows);
    let mut types = Vec::with_capacity(embed_rows);
    let mut padded = 0;
    for i in 0..embed_rows {
        match by_id.get(&i) {
            Some(t) => {
                let kind = kinds.get(&i).copied().unwrap_or_else(|| {
                    if Some(t.as_str()) == unk {
                        2
                    } else if byte_fallback && t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                        6
                    } else {
                        1
                    }
                });
                tokens.push(t.clone());
                types.push(kind);
            }
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(5);
                padded += 1;
            }
        }
    }
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    put("tokenizer.ggml.model", Value::String(ggml_model.into()));
    // llama.cpp names the pre-tokenizer's split rule; the Llama 3 rule (digits in threes) is
    // also OLMo 2's and SmolLM3's.
    let split = tok["pre_tokenizer"].to_string();
    let pre = match model.spec.family {
        Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe | Family::Qwen3Moe => "qwen2",
        Family::Glm4 => "glm4",
        _ if index.contains_key("<|begin_of_text|>") || split.contains(r"\\p{N}{1,3}") => "llama-bpe",
        _ if tok["pre_tokenizer"].to_string().contains("\"Digits\"") => "smollm",
        _ => "default",
    };
    put("tokenizer.ggml.pre", Value::String(pre.into()));
    if ggml_model != "llama" {
        let merges: Vec<Value> = tmodel["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                Json::String(s) => Some(s.clone()),
                Json::Array(pair) => Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?)),
                _ => None,
            })
            .map(Value::String)
            .collect();
        put("tokenizer.ggml.merges", Value::Array(merges));
    }
    if ggml_model != "gpt2" {
        put("tokenizer.ggml.scores", Value::Array((0..embed_rows).map(|i| Value::F32(-(i as f32))).collect()));
    }
    put("tokenizer.ggml.tokens", Value::Array(tokens.iter().cloned().map(Value::String).collect()));
    put("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect()));
    let config = model.root.join("tokenizer_config.json");
    let config = if config.is_file() { read_json(&config)? } else { Json::Null };
    let id_of = |key: &str| -> Option<u32> {
        token_of(&config[key]).and_then(|t| index.get(t.as_str()).map(|&i| i as u32)).or_else(|| {
            let c = &model.config[format!("{key}_id")];
            c.as_u64().or_else(|| c.as_array().and_then(|a| a.first()?.as_u64())).map(|v| v as u32)
        })
    };
    let bos = id_of("bos_token");
    let eos = id_of("eos_token");
    if let Some(b) = bos {
        put("tokenizer.ggml.bos_token_id", Value::U32(b));
    }
    if let Some(e) = eos {
        put("tokenizer.ggml.eos_token_id", Value::U32(e));
    }
    if let Some(p) = id_of("pad_token").or(eos) {
        put("tokenizer.ggml.padding_token_id", Value::U32(p));
    }
    if let Some(u) = unk.and_then(|u| index.get(u)) {
        put("tokenizer.ggml.unknown_token_id", Value::U32(*u as u32));
    }
    // The folder's end-of-answer ids (generation_config.json, config.json, tokenizer_config.json):
    // llama.cpp stops on EOS, on EOT and on tokens it knows by name, so a turn end it does not
    // know by name (GLM-4's `<|user|>`) must be the EOT.
    let ends =
        crate::prompts::SpecialTokens::from_model_dir(&model.root, &crate::prompts::load_tokenizer(&model.root)?)?
            .eos_ids;
    let eot = TURN_ENDS
        .iter()
        .find_map(|marker| index.get(marker).map(|&i| i as u32))
        .or_else(|| ends.iter().copied().find(|&i| Some(i) != eos && (i as usize) < tokens.len()));
    if let Some(i) = eot {
        put("tokenizer.ggml.eot_token_id", Value::U32(i));
    }
    let stops: Vec<String> = ends
        .iter()
        .chain(&eot)
        .filter_map(|&i| tokens.get(i as usize).cloned())
        .chain(TURN_ENDS.iter().filter(|m| index.contains_key(*m)).map(|m| m.to_string()))
        .fold(Vec::new(), |mut all, t| {
            if !all.contains(&t) {
                all.push(t);
            }
            all
        });
    let add_bos = config["add_bos_token"].as_bool().unwrap_or(arch.starts_with("gemma"));
    put("tokenizer.ggml.add_bos_token", Value::Bool(add_bos));
    put("tokenizer.ggml.add_eos_token", Value::Bool(config["add_eos_token"].as_bool().unwrap_or(false)));
    if ggml_model == "gemma4" {
        put("tokenizer.ggml.add_space_prefix", Value::Bool(false));
    } else if ggml_model == "llama" {
        let prefix = tok["normalizer"].to_string().contains("\"Prepend\"");
        put("tokenizer.ggml.add_space_prefix", Value::Bool(prefix));
    }
    let template = match &config["chat_template"] {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or(list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    };
    if let Some(t) = template {
        put("tokenizer.chat_template", Value::String(t));
    }
    Ok((padded, stops))
}

/// An Ollama Modelfile beside the GGUF: the file, greedy decoding, and the tokens that end an
/// answer as stops (Ollama takes the chat template from the GGUF's `tokenizer.chat_template`).
/// An existing Modelfile is left alone unless `force`.
fn write_modelfile(gguf: &Path, stops: &[String], force: bool) -> Result<Option<PathBuf>> {
    let path = gguf.with_extension("Modelfile");
    if path.exists() && !force {
        return Ok(None);
    }
    let file = gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut text = format!(
        "# Ollama: ollama create NAME -f {}\nFROM ./{file}\nPARAMETER temperature 0\n",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    for stop in stops {
        text.push_str(&format!("PARAMETER stop {}\n", serde_json::Value::String(stop.clone())));
    }
    let tmp = path.with_extension("Modelfile.partial");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_tensors_keep_wide_source_types_and_narrow_ones_become_q8_0() {
        for wide in [GgmlDType::F32, GgmlDType::F16, GgmlDType::BF16, GgmlDType::Q8_0] {
            assert_eq!(edited_type(wide), wide);
        }
        for narrow in [GgmlDType::Q4_0, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q5K, GgmlDType::Q6K] {
            assert_eq!(edited_type(narrow), GgmlDType::Q8_0);
        }
    }

    #[test]
    fn narrow_rows_fall_back_as_llama_cpp_does() {
        // 896 columns (Qwen2.5-0.5B's width) split into 32-value blocks, not 256-value ones.
        assert_eq!(fitting(GgmlDType::Q4K, 1024), GgmlDType::Q4K);
        assert_eq!(fitting(GgmlDType::Q4K, 896), GgmlDType::Q5_0);
        assert_eq!(fitting(GgmlDType::Q5K, 896), GgmlDType::Q5_1);
        assert_eq!(fitting(GgmlDType::Q6K, 896), GgmlDType::Q8_0);
        assert_eq!(fitting(GgmlDType::Q8_0, 896), GgmlDType::Q8_0);
        assert_eq!(fitting(GgmlDType::Q4K, 100), GgmlDType::F16);
        assert_eq!(fitting(GgmlDType::Q8_0, 100), GgmlDType::F16);
    }
}
