//! A scalpel edit as a PEFT LoRA adapter, and a base model plus an adapter as a runnable folder.
//!
//! Without norm preservation an edit is low rank: a writer `W` (`[hidden, in]`) becomes
//! `W − λ QᵀQ W` for the orthonormal basis `Q` (`[k, hidden]`), which PEFT's LoRA holds exactly as
//! `lora_B = −λ Qᵀ` (`[hidden, k]`) and `lora_A = Q W` (`[k, in]`) with `lora_alpha = r`
//! (scaling 1). The embedding `E` (`[vocab, hidden]`) becomes `E − λ E QᵀQ`: PEFT's embedding
//! LoRA with `lora_embedding_A = Q Eᵀ` and `lora_embedding_B = −λ Qᵀ`. A tied head edited with
//! the embedding gets its own LoRA on `lm_head` (PEFT's embedding LoRA does not reach it).
//! Norm-preserving edits (a per-column rescale) and edited output biases are not low rank and
//! are refused. Factors are stored in f32.

use crate::arch::WriterKind;
use crate::checkpoint::{
    encode_f32, stage_checkpoint, unit_roundoff, AddedTensor, EditableDtype, ModelDir, TensorEdit, TensorRef,
    WriteOptions,
};
use crate::directions::DirectionsFile;
use crate::progress::Progress;
use crate::surgery::{plan, Layout, SurgeryPlan, SurgeryRecord};
use crate::{Error, Result};
use safetensors::tensor::TensorView;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// PEFT's adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What scalpel records beside the adapter (PEFT ignores it).
pub const ADAPTER_RECORD: &str = "scalpel_adapter.json";
const PREFIX: &str = "base_model.model.";

/// What an adapter export wrote.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    /// The adapter folder.
    pub out: PathBuf,
    /// LoRA modules written.
    pub modules: usize,
    /// Their rank (the edit's number of directions).
    pub rank: usize,
    /// Size of adapter_model.safetensors in bytes.
    pub bytes: u64,
    /// Largest `‖W + BA − W'‖_F / ‖W'‖_F` against the edited folder, when one was compared.
    pub max_relative_error: Option<f64>,
}

/// One LoRA module: name, and its factors `(B [out, r], A [r, in])` as `ΔW = B A`.
struct Factors {
    module: String,
    embedding: bool,
    b: (Vec<f32>, [usize; 2]),
    a: (Vec<f32>, [usize; 2]),
}

fn module_of(tensor: &str) -> &str {
    tensor.strip_suffix(".weight").unwrap_or(tensor)
}

/// `Q X` for a row-major `x` `[hidden, cols]`: `[k, cols]`, accumulated in f64.
fn q_times(q: &[Vec<f64>], x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0f64; q.len() * cols];
    for (i, row) in x.chunks_exact(cols).enumerate() {
        for (qk, acc) in q.iter().zip(out.chunks_exact_mut(cols)) {
            let s = qk[i];
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += s * f64::from(v));
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// `E Qᵀ` for a row-major `e` `[n, hidden]`, transposed: `[k, n]`, in f64.
fn q_times_rows(q: &[Vec<f64>], e: &[f32], hidden: usize) -> Vec<f32> {
    let n = e.len() / hidden;
    let mut out = vec![0f32; q.len() * n];
    for (j, row) in e.chunks_exact(hidden).enumerate() {
        for (k, qk) in q.iter().enumerate() {
            out[k * n + j] = qk.iter().zip(row).map(|(a, &b)| a * f64::from(b)).sum::<f64>() as f32;
        }
    }
    out
}

/// `−λ Qᵀ`: `[hidden, k]`.
fn minus_lambda_qt(q: &[Vec<f64>], strength: f64) -> Vec<f32> {
    let (k, hidden) = (q.len(), q[0].len());
    let mut out = vec![0f32; hidden * k];
    for i in 0..hidden {
        for kk in 0..k {
            out[i * k + kk] = (-strength * q[kk][i]) as f32;
        }
    }
    out
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// The LoRA factors of `plan` against `base`.
fn factors(base: &ModelDir, plan: &SurgeryPlan) -> Result<Vec<Factors>> {
    if plan.options.norm_preserve {
        return Err(Error::Invalid(
            "a norm-preserving edit rescales every written vector, which is not a low-rank change: no exact \
             LoRA adapter exists. Export the edited model itself (GGUF or safetensors), or edit without \
             norm preservation"
                .into(),
        ));
    }
    if let Some(bias) = plan.edits.iter().find(|e| e.is_bias) {
        return Err(Error::Invalid(format!(
            "the edit changes the output bias `{}`; a LoRA adapter cannot carry a changed bias (PEFT's bias \
             option trains the base bias instead). Edit with --no-biases, or export the edited model itself",
            bias.tensor
        )));
    }
    if let Some(stacked) = plan.edits.iter().find(|e| e.slice.is_some()) {
        return Err(Error::Invalid(format!(
            "the edit changes slices of the stacked experts tensor `{}`, which is no linear module PEFT can \
             attach a LoRA to. Export the edited model itself",
            stacked.tensor
        )));
    }
    if plan.edits_tied_head && plan.options.untie {
        // The untied head keeps the original embedding, as PEFT's embedding LoRA leaves the head.
    }
    let mut out = Vec::new();
    for edit in &plan.edits {
        let q = edit.basis.rows();
        let k = q.len();
        let hidden = base.spec.hidden_size;
        let (w, shape) = base.checkpoint.read_f32(&edit.tensor)?;
        base.checkpoint.release(&edit.tensor);
        let module = module_of(&edit.tensor).to_string();
        match (edit.layout, edit.kind) {
            (Layout::Columns, _) => {
                let cols = shape[1];
                out.push(Factors {
                    module,
                    embedding: false,
                    b: (minus_lambda_qt(q, edit.strength), [hidden, k]),
                    a: (q_times(q, &w, cols), [k, cols]),
                });
            }
            (Layout::Rows, WriterKind::Embed) => {
                let vocab = shape[0];
                let eq = q_times_rows(q, &w, hidden); // [k, vocab] = (E Qᵀ)ᵀ
                if plan.edits_tied_head && !plan.options.untie {
                    let head = base.spec.lm_head_name();
                    let neg: Vec<f32> =
                        q.iter().flat_map(|row| row.iter().map(|x| (-edit.strength * x) as f32)).collect();
                    out.push(Factors {
                        module: module_of(&head).to_string(),
                        embedding: false,
                        b: (transpose(&eq, k, vocab), [vocab, k]),
                        a: (neg, [k, hidden]),
                    });
                }
                out.push(Factors {
                    module,
                    embedding: true,
                    b: (minus_lambda_qt(q, edit.strength), [hidden, k]),
                    a: (eq, [k, vocab]),
                });
            }
            (Layout::Rows, kind) => {
                return Err(Error::bad_tensor(&edit.tensor, format!("a {} writer edited by rows", kind.name())))
            }
        }
    }
    Ok(out)
}

/// `ΔW` of one module as a dense `[out, in]` matrix (for merging and checking; one tensor).
fn dense(f: &Factors, scaling: f64) -> (Vec<f32>, [usize; 2]) {
    // ΔW = B A for linears; for embeddings ΔE = Aᵀ Bᵀ ([vocab, hidden]).
    let (b, [bo, r]) = (&f.b.0, f.b.1);
    let (a, [_, ai]) = (&f.a.0, f.a.1);
    if f.embedding {
        let (vocab, hidden) = (ai, bo);
        let mut out = vec![0f32; vocab * hidden];
        for v in 0..vocab {
            for h in 0..hidden {
                let s: f64 = (0..r).map(|k| f64::from(a[k * vocab + v]) * f64::from(b[h * r + k])).sum();
                out[v * hidden + h] = (s * scaling) as f32;
            }
        }
        (out, [vocab, hidden])
    } else {
        let mut out = vec![0f32; bo * ai];
        for o in 0..bo {
            let row = &mut out[o * ai..(o + 1) * ai];
            let mut acc = vec![0f64; ai];
            for k in 0..r {
                let s = f64::from(b[o * r + k]);
                if s != 0.0 {
                    acc.iter_mut().zip(&a[k * ai..(k + 1) * ai]).for_each(|(x, &y)| *x += s * f64::from(y));
                }
            }
            row.iter_mut().zip(acc).for_each(|(x, v)| *x = (v * scaling) as f32);
        }
        (out, [bo, ai])
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write the adapter of `plan` against `base` into the new folder `out`. With `edited` (the
/// checkpoint the plan wrote), every module is checked: `W + BA` must equal the edited tensor
/// to its stored rounding, else nothing is written.
pub fn export_adapter(
    base: &ModelDir,
    plan: &SurgeryPlan,
    record: Option<&SurgeryRecord>,
    edited: Option<&ModelDir>,
    out: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<AdapterReport> {
    let factors = factors(base, plan)?;
    if factors.is_empty() {
        return Err(Error::Invalid("the edit changes no tensor: there is no adapter to write".into()));
    }
    progress.set_length(factors.len() as u64);
    let mut max_error: Option<f64> = None;
    if let Some(edited) = edited {
        for f in &factors {
            let tensor = format!("{}.weight", f.module);
            let target = if edited.checkpoint.contains(&tensor) { tensor.clone() } else { edited.spec.embed_name() };
            let source = if base.checkpoint.contains(&tensor) { tensor.clone() } else { base.spec.embed_name() };
            let (w, _) = base.checkpoint.read_f32(&source)?;
            let (e, _) = edited.checkpoint.read_f32(&target)?;
            let (d, _) = dense(f, 1.0);
            let (mut num, mut den) = (0f64, 0f64);
            for ((w, d), e) in w.iter().zip(&d).zip(&e) {
                num += (f64::from(*w) + f64::from(*d) - f64::from(*e)).powi(2);
                den += f64::from(*e).powi(2);
            }
            let rel = (num / den.max(f64::MIN_POSITIVE)).sqrt();
            let dtype = EditableDtype::of(edited.checkpoint.tensor(&target)?.dtype, &target)?;
            let limit = 4.0 * unit_roundoff(dtype) + 1e-6;
            if rel > limit {
                return Err(Error::bad_tensor(
                    &target,
                    format!(
                        "the edited folder differs from base + adapter by {rel:.2e} (relative, limit {limit:.1e}): \
                         it is not this low-rank edit of the base; nothing was written"
                    ),
                ));
            }
            max_error = Some(max_error.map_or(rel, |m: f64| m.max(rel)));
        }
    }
    let rank = factors.iter().map(|f| f.a.1[0]).max().unwrap_or(1);
    let staged = crate::checkpoint::StagedOutput::new(out, &[&base.root], force)?;
    let dir = staged.path();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut rank_pattern = serde_json::Map::new();
    for f in &factors {
        let (a_key, b_key) = if f.embedding {
            (format!("{PREFIX}{}.lora_embedding_A", f.module), format!("{PREFIX}{}.lora_embedding_B", f.module))
        } else {
            (format!("{PREFIX}{}.lora_A.weight", f.module), format!("{PREFIX}{}.lora_B.weight", f.module))
        };
        tensors.push((a_key, f32_bytes(&f.a.0), f.a.1.to_vec()));
        tensors.push((b_key, f32_bytes(&f.b.0), f.b.1.to_vec()));
        if f.a.1[0] != rank {
            rank_pattern.insert(f.module.clone(), json!(f.a.1[0]));
        }
        progress.inc(1);
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, bytes, shape)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::bad_tensor(name, e.to_string()))
        })
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = dir.join(ADAPTER_WEIGHTS);
    safetensors::serialize_to_file(views, Some(meta), &weights)
        .map_err(|e| Error::Other(format!("{}: {e}", weights.display())))?;
    let mut targets: Vec<String> = factors.iter().map(|f| f.module.clone()).collect();
    targets.sort();
    let alpha_pattern: serde_json::Map<String, Json> = rank_pattern.clone();
    // The base as the edit record names it: its path only where the edit recorded paths.
    let base_name = record
        .and_then(|r| r.source.as_ref())
        .map(|s| s.path.clone().unwrap_or_else(|| s.name.clone()))
        .unwrap_or_else(|| crate::checkpoint::display_name(&base.root));
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "revision": null,
    });
    let scalpel = json!({
        "scalpel_version": env!("CARGO_PKG_VERSION"),
        "base_model": base_name,
        "edit": record,
        "max_relative_error": max_error,
    });
    for (name, value) in [(ADAPTER_CONFIG, &config), (ADAPTER_RECORD, &scalpel)] {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(e.to_string()))? + "\n";
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    let bytes = std::fs::metadata(&weights).map_err(|e| Error::io(&weights, e))?.len();
    let out = staged.commit()?;
    Ok(AdapterReport { out, modules: factors.len(), rank, bytes, max_relative_error: max_error })
}

/// The adapter of an edited folder (its `scalpel_edit.json`) against its base: `base` or the
/// path the record holds (edits written with `--record-paths`, and older records), from the
/// directions file `directions` or the record's path of it. Each must be the one the record
/// names (size and content hash). The plan is rebuilt from the directions and the record's
/// options (and must name the same directions), and the result is checked against the edited
/// folder.
pub fn export_adapter_from_record(
    edited: &ModelDir,
    base: Option<&Path>,
    directions: Option<&Path>,
    out: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<AdapterReport> {
    let record = super::gguf::edit_record(edited)?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no {}: an adapter is made from a folder scalpel edited",
            edited.root.display(),
            crate::surgery::EDIT_RECORD_FILE
        ))
    })?;
    let base_path = base.map(Path::to_path_buf).or_else(|| record.source_path()).ok_or_else(|| {
        Error::Invalid(format!(
            "the edit record names its base model as {} but holds no path (the edit was written without --record-paths): pass it with --base",
            record.source_description()
        ))
    })?;
    let base = ModelDir::open(&base_path).map_err(|e| {
        Error::Invalid(format!("the base model {} does not open ({e}); pass it with --base", base_path.display()))
    })?;
    if let Some(source) = &record.source {
        source.check_model(&base.root, "base model")?;
    }
    let directions_path = directions.map(Path::to_path_buf).or_else(|| record.directions_path()).ok_or_else(|| {
        Error::Invalid(format!(
            "the edit record names its directions file `{}` but holds no path: pass it with --directions",
            record.directions.as_ref().map_or(record.directions_file.as_str(), |d| d.name.as_str())
        ))
    })?;
    let directions = DirectionsFile::load(&directions_path).map_err(|e| {
        Error::Invalid(format!("the edit's directions file {} does not load: {e}", directions_path.display()))
    })?;
    if let Some(recorded) = &record.directions {
        recorded.check_file(&directions_path, "directions file")?;
    }
    let rebuilt = plan(&base, &directions, &record.options)?;
    let same = rebuilt.edits.len() == record.edits.len()
        && rebuilt
            .edits
            .iter()
            .zip(&record.edits)
            .all(|(p, r)| p.tensor == r.tensor && p.direction_hash == r.direction_hash);
    if !same {
        return Err(Error::Invalid(format!(
            "the plan rebuilt from {} and {} does not match the edit record (changed directions file?)",
            base.root.display(),
            directions_path.display()
        )));
    }
    export_adapter(&base, &rebuilt, Some(&record), Some(edited), out, force, progress)
}

/// A PEFT LoRA adapter read into memory.
struct Adapter {
    /// Module → (factors, scaling).
    modules: BTreeMap<String, (Factors, f64)>,
}

fn read_adapter(dir: &Path) -> Result<Adapter> {
    let config_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: Json =
        serde_json::from_str(&text).map_err(|source| Error::Json { path: config_path.clone(), source })?;
    let bad = |m: String| Error::bad_checkpoint(&config_path, m);
    if config["peft_type"].as_str().is_some_and(|t| t != "LORA") {
        return Err(bad(format!("peft_type {} is not LORA", config["peft_type"])));
    }
    if config["use_dora"].as_bool() == Some(true) || config["fan_in_fan_out"].as_bool() == Some(true) {
        return Err(bad("DoRA and fan_in_fan_out adapters are not supported".into()));
    }
    let r = config["r"].as_f64().ok_or_else(|| bad("no `r`".into()))?;
    let alpha = config["lora_alpha"].as_f64().unwrap_or(r);
    let rslora = config["use_rslora"].as_bool() == Some(true);
    let pattern = |key: &str, module: &str| -> Option<f64> {
        config[key]
            .as_object()?
            .iter()
            .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .and_then(|(_, v)| v.as_f64())
    };
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::bad_checkpoint(&weights_path, format!("not a safetensors file: {e}")))?;
    let read = |name: &str| -> Result<(Vec<f32>, [usize; 2])> {
        let view = st.tensor(name).map_err(|e| Error::bad_checkpoint(&weights_path, format!("`{name}`: {e}")))?;
        let shape: [usize; 2] = view
            .shape()
            .try_into()
            .map_err(|_| Error::bad_tensor(name, format!("shape {:?} is not a matrix", view.shape())))?;
        Ok((crate::checkpoint::decode_f32(view.dtype(), view.data(), name)?, shape))
    };
    let mut modules = BTreeMap::new();
    for name in st.names() {
        let (module, embedding, b_name) = if let Some(m) = name.strip_suffix(".lora_A.weight") {
            (m, false, format!("{m}.lora_B.weight"))
        } else if let Some(m) = name.strip_suffix(".lora_embedding_A") {
            (m, true, format!("{m}.lora_embedding_B"))
        } else {
            if !name.contains(".lora_B") && !name.contains(".lora_embedding_B") {
                return Err(Error::bad_checkpoint(
                    &weights_path,
                    format!("tensor `{name}` is no LoRA factor scalpel applies"),
                ));
            }
            continue;
        };
        let module = module.strip_prefix(PREFIX).unwrap_or(module).to_string();
        let a = read(name)?;
        let b = read(&b_name)?;
        if a.1[0] != b.1[1] {
            return Err(Error::bad_tensor(name, format!("rank {} does not match {b_name}'s {}", a.1[0], b.1[1])));
        }
        let rank = pattern("rank_pattern", &module).unwrap_or(r);
        let alpha = pattern("alpha_pattern", &module).unwrap_or(alpha);
        let scaling = if rslora { alpha / rank.sqrt() } else { alpha / rank };
        modules.insert(module.clone(), (Factors { module, embedding, b, a }, scaling));
    }
    Ok(Adapter { modules })
}

/// A base model with an adapter merged in, in a temporary folder removed on drop.
#[derive(Debug)]
pub struct MergedModel {
    /// The merged model (base + adapter).
    pub model: ModelDir,
    _dir: tempfile::TempDir,
}

/// Merge the PEFT LoRA adapter in `adapter` into `base` (PEFT's semantics: a tied head is not
/// changed by an embedding LoRA, only by a LoRA of its own) and open the result. The untouched
/// tensors are byte-copied into a temporary folder (under `$TMPDIR`) that lives as long as the
/// returned value; the merged ones are computed in f32 and rounded once to their stored dtype.
pub fn merge_adapter(base: &ModelDir, adapter: &Path, progress: &dyn Progress) -> Result<MergedModel> {
    let adapter_data = read_adapter(adapter)?;
    let spec = &base.spec;
    let embed = spec.embed_name();
    let head = spec.lm_head_name();
    let tied = base.head_is_tied();
    let mut by_tensor: HashMap<String, &(Factors, f64)> = HashMap::new();
    for (module, entry) in &adapter_data.modules {
        let tensor = format!("{module}.weight");
        if !(base.checkpoint.contains(&tensor) || (tied && tensor == head)) {
            return Err(Error::bad_checkpoint(
                adapter,
                format!("adapts `{module}`, which {} does not have", base.root.display()),
            ));
        }
        by_tensor.insert(tensor, entry);
    }
    let mut options = WriteOptions { force: true, ..WriteOptions::default() };
    let head_entry = if tied { by_tensor.remove(&head) } else { None };
    if tied && (head_entry.is_some() || by_tensor.contains_key(&embed)) {
        match (head_entry, by_tensor.get(&embed)) {
            // The head follows the edited embedding exactly when both carry the same change.
            (Some(h), Some(e)) if same_change(h, e) => {}
            (None, Some(_)) => {
                options.added.push(AddedTensor { name: head.clone(), copy_of: embed.clone() });
                let mut config = base.config.clone();
                config["tie_word_embeddings"] = Json::Bool(false);
                if let Some(text) = config.get_mut("text_config").and_then(|t| t.as_object_mut()) {
                    text.insert("tie_word_embeddings".into(), Json::Bool(false));
                }
                options.config = Some(config);
            }
            _ => {
                return Err(Error::bad_checkpoint(
                    adapter,
                    "changes the tied output head differently from the embedding, which scalpel cannot merge",
                ))
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("scalpel-adapter-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let out = dir.path().join("merged");
    let edit = |view: TensorRef<'_>| -> Result<TensorEdit> {
        let Some((factors, scaling)) = by_tensor.get(view.name) else { return Ok(TensorEdit::Keep) };
        let (delta, shape) = dense(factors, *scaling);
        if shape.as_slice() != view.shape {
            return Err(Error::bad_tensor(
                view.name,
                format!("adapter change has shape {shape:?}, the tensor {:?}", view.shape),
            ));
        }
        let dtype = EditableDtype::of(view.dtype, view.name)?;
        let mut values = view.to_f32()?;
        values.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
        Ok(TensorEdit::Replace(encode_f32(dtype, &values)))
    };
    let (staged, _) = stage_checkpoint(base, &out, &options, progress, &edit)?;
    let out = staged.commit()?;
    Ok(MergedModel { model: ModelDir::open(&out)?, _dir: dir })
}

/// Whether a head LoRA `(B [vocab, r], A [r, hidden])` and an embedding LoRA make the same
/// `[vocab, hidden]` change, checked on a few fixed probe vectors.
fn same_change(head: &(Factors, f64), embed: &(Factors, f64)) -> bool {
    let (h, hs) = (&head.0, head.1);
    let (e, es) = (&embed.0, embed.1);
    let hidden = h.a.1[1];
    if !e.embedding || e.b.1[0] != hidden || h.b.1[0] != e.a.1[1] {
        return false;
    }
    let vocab = h.b.1[0];
    for probe in 0..3u64 {
        let v: Vec<f64> = (0..hidden).map(|i| (((i as u64 + 1) * (probe * 7919 + 13)) % 17) as f64 - 8.0).collect();
        // head: B (A v) ; embedding: Aᵀ (Bᵀ v)
        let av: Vec<f64> =
            h.a.0.chunks_exact(hidden).map(|row| row.iter().zip(&v).map(|(a, b)| f64::from(*a) * b).sum()).collect();
        let hr = h.b.1[1];
        let head_v: Vec<f64> =
            (0..vocab).map(|o| (0..hr).map(|k| f64::from(h.b.0[o * hr + k]) * av[k]).sum::<f64>() * hs).collect();
        let er = e.b.1[1];
        let btv: Vec<f64> = (0..er).map(|k| (0..hidden).map(|i| f64::from(e.b.0[i * er + k]) * v[i]).sum()).collect();
        let embed_v: Vec<f64> =
            (0..vocab).map(|o| (0..er).map(|k| f64::from(e.a.0[k * vocab + o]) * btv[k]).sum::<f64>() * es).collect();
        let scale = head_v.iter().chain(&embed_v).fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
        if head_v.iter().zip(&embed_v).any(|(a, b)| (a - b).abs() > 1e-4 * scale) {
            return false;
        }
    }
    true
}
