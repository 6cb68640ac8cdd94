//! GGUF → Hugging Face folder: dequantize every tensor (any type candle reads: F32, F16, BF16,
//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants), rename it, undo llama.cpp's changes (q/k row
//! permutation for llama, `1 + w` Gemma norms), and write config.json, tokenizer.json,
//! tokenizer_config.json (chat template, special tokens), generation_config.json and
//! model.safetensors — streamed one tensor at a time, into a temporary folder renamed at the end.

mod header;
mod metadata;
pub(crate) mod names;
mod rope;
pub(crate) mod tokenizer;

pub use metadata::SUPPORTED;
pub use names::{permute_rows, unpermute_rows};

use crate::checkpoint::{encode_f32, EditableDtype, SafetensorsStream, StagedOutput, TensorEntry, SINGLE_FILE};
use crate::progress::Progress;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::Device;
use names::Fix;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Stored dtype of the output (dequantized values are f32; F32 keeps them exactly). None:
    /// [`default_dtype`] of the file.
    pub dtype: Option<EditableDtype>,
    /// Replace an existing output folder.
    pub force: bool,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The output folder.
    pub out: PathBuf,
    /// GGUF architecture.
    pub architecture: String,
    /// Tensors written.
    pub tensors: usize,
    /// GGUF tensors with no Hugging Face counterpart (not written).
    pub skipped: Vec<String>,
    /// Quantization types seen, with counts.
    pub source_types: BTreeMap<String, usize>,
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(value).expect("JSON");
    s.push('\n');
    s.into_bytes()
}

/// The stored dtype an import chooses when none is asked for: the file's own float type when
/// every tensor is F32, F16 or BF16 (the widest of them), else BF16 — a quantized model's
/// dequantized values do not need f32 (it would double the size), and BF16 is what the
/// upstream checkpoints of the supported families are published in, so runtimes that compute
/// in the stored dtype keep their range (see the README for the measured difference to F16).
pub fn default_dtype(content: &Content) -> EditableDtype {
    use candle_core::quantized::GgmlDType;
    let types: Vec<GgmlDType> = content.tensor_infos.values().map(|i| i.ggml_dtype).collect();
    if types.iter().any(|t| !matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)) {
        EditableDtype::BF16
    } else if types.contains(&GgmlDType::F32) {
        EditableDtype::F32
    } else if types.contains(&GgmlDType::F16) {
        EditableDtype::F16
    } else {
        EditableDtype::BF16
    }
}

/// Import `gguf` into a new Hugging Face folder `out`.
pub fn import_gguf(gguf: &Path, out: &Path, options: &ImportOptions, progress: &dyn Progress) -> Result<ImportReport> {
    header::check(gguf)?;
    let mut file = std::fs::File::open(gguf).map_err(|e| Error::io(gguf, e))?;
    let content =
        Content::read(&mut file).map_err(|e| Error::bad_checkpoint(gguf, format!("not a readable GGUF file: {e}")))?;
    let meta = metadata::Meta::new(&content, gguf)?;
    meta.check_sizes()?;
    let tok = tokenizer::build(&meta)?;
    // The template is code that every later command runs: it must render within its limits.
    if let Some(source) = tok.config.get("chat_template").and_then(|t| t.as_str()) {
        let rendered = crate::prompts::ChatTemplate::from_source(source.to_string(), None, None)
            .and_then(|t| t.render(&[crate::prompts::Message::user("Hello")], true));
        match rendered {
            Err(e) if e.to_string().ends_with("refusing it") => {
                return Err(Error::bad_checkpoint(gguf, format!("tokenizer.chat_template: {e}")))
            }
            Err(e) => tracing::warn!("{}: tokenizer.chat_template: {e}", gguf.display()),
            Ok(_) => {}
        }
    }
    let tied = !content.tensor_infos.contains_key("output.weight");
    let dtype = options.dtype.unwrap_or_else(|| default_dtype(&content));
    let (st_dtype, torch) = match dtype {
        EditableDtype::F32 => (safetensors::Dtype::F32, "float32"),
        EditableDtype::F16 => (safetensors::Dtype::F16, "float16"),
        EditableDtype::BF16 => (safetensors::Dtype::BF16, "bfloat16"),
    };
    let mut config = metadata::config(&meta, tok.vocab_size, tied, torch)?;
    if meta.arch == "gemma4" {
        if let Some(fraction) = rotated_fraction(&content, &mut file, &config, gguf)? {
            config["rope_parameters"]["full_attention"]["partial_rotary_factor"] = fraction.into();
        }
    } else if names::permuted(&meta.arch) {
        if let Some(scaling) = rope_scaling_from_tensor(&content, &mut file, &config, gguf)? {
            config["rope_scaling"] = scaling;
        }
    }
    let heads = meta.usize("attention.head_count")?;
    let kv_heads = meta.opt_usize("attention.head_count_kv").unwrap_or(heads);
    let staged = StagedOutput::new(out, &[gguf], options.force)?;
    let dir = staged.path();
    for (name, value) in [
        ("config.json", &config),
        ("generation_config.json", &metadata::generation_config(&meta, &tok.eos_ids)),
        ("tokenizer.json", &tok.tokenizer),
        ("tokenizer_config.json", &tok.config),
        ("special_tokens_map.json", &tok.special_tokens_map),
    ] {
        std::fs::write(dir.join(name), json_bytes(value)).map_err(|e| Error::io(dir.join(name), e))?;
    }
    let mut skipped = Vec::new();
    // (Hugging Face name, GGUF name, the expert it is of a stacked `[experts, rows, cols]` tensor).
    let mut plan: Vec<(String, String, Option<usize>)> = Vec::new();
    for (name, info) in &content.tensor_infos {
        if let Some(hf) = names::hf_name(&meta.arch, name) {
            plan.push((hf, name.clone(), None));
        } else if let (Some(_), [experts, _, _]) = (names::hf_expert_name(&meta.arch, name, 0), info.shape.dims()) {
            for e in 0..*experts {
                let hf = names::hf_expert_name(&meta.arch, name, e).expect("an expert tensor");
                plan.push((hf, name.clone(), Some(e)));
            }
        } else {
            skipped.push(name.clone());
        }
    }
    // Grouped by GGUF tensor, so that each stacked one is dequantized once.
    plan.sort_by_key(|a| (natural_key(&a.1), a.2, natural_key(&a.0)));
    skipped.sort();
    let entries: Vec<TensorEntry> = plan
        .iter()
        .map(|(hf, gg, expert)| TensorEntry {
            name: hf.clone(),
            dtype: st_dtype,
            shape: match expert {
                Some(_) => content.tensor_infos[gg].shape.dims()[1..].to_vec(),
                None => content.tensor_infos[gg].shape.dims().to_vec(),
            },
        })
        .collect();
    let meta_map = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "source".to_string(),
            format!("imported from {} by scalpel", gguf.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()),
        ),
    ]);
    let mut stream = SafetensorsStream::create(&dir.join(SINGLE_FILE), &meta_map, entries)?;
    progress.set_length(plan.len() as u64);
    let mut source_types = BTreeMap::new();
    let mut stacked: Option<(String, Vec<f32>)> = None;
    for (_, gg, expert) in &plan {
        let info = &content.tensor_infos[gg];
        if let Some(e) = expert {
            if stacked.as_ref().is_none_or(|(name, _)| name != gg) {
                *source_types.entry(format!("{:?}", info.ggml_dtype)).or_insert(0) += 1;
                stacked = Some((gg.clone(), dequantize(&content, &mut file, gg, gguf)?));
            }
            let values = &stacked.as_ref().expect("just read").1;
            let per = values.len() / info.shape.dims()[0];
            stream.write_next(&encode_f32(dtype, &values[e * per..(e + 1) * per]))?;
            progress.inc(1);
            continue;
        }
        *source_types.entry(format!("{:?}", info.ggml_dtype)).or_insert(0) += 1;
        let dims = info.shape.dims().to_vec();
        let values = dequantize(&content, &mut file, gg, gguf)?;
        let values = match names::fix_for(&meta.arch, gg, heads, kv_heads) {
            Fix::None => values,
            Fix::MinusOne => values.iter().map(|v| v - 1.0).collect(),
            Fix::Unpermute(h) => {
                let (rows, cols) = (dims[0], dims.get(1).copied().unwrap_or(1));
                if h == 0 || rows % (2 * h) != 0 {
                    return Err(Error::bad_tensor(gg, format!("{rows} rows do not split into {h} heads")));
                }
                unpermute_rows(&values, rows, cols, h)
            }
        };
        stream.write_next(&encode_f32(dtype, &values))?;
        progress.inc(1);
    }
    stream.finish()?;
    // The folder must open as a model before it is moved into place.
    // Errors name the GGUF file, not the staging folder.
    let opened =
        crate::checkpoint::ModelDir::open(dir).and_then(|m| match crate::checkpoint::missing_tensors(&m).first() {
            Some(name) => Err(Error::MissingTensor { name: name.clone(), path: m.root.clone() }),
            None => Ok(()),
        });
    opened.map_err(|e| match e {
        Error::MissingTensor { name, .. } => {
            Error::bad_checkpoint(gguf, format!("the GGUF file lacks the tensor that becomes `{name}`"))
        }
        other => {
            Error::bad_checkpoint(gguf, other.to_string().replace(&dir.display().to_string(), "the imported model"))
        }
    })?;
    let out = staged.commit()?;
    Ok(ImportReport { out, architecture: meta.arch.clone(), tensors: plan.len(), skipped, source_types })
}

/// A GGUF tensor's values as f32.
fn dequantize(content: &Content, file: &mut std::fs::File, name: &str, gguf: &Path) -> Result<Vec<f32>> {
    content
        .tensor(file, name, &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1())
        .map_err(|e| Error::bad_checkpoint(gguf, format!("tensor `{name}`: {e}")))
}

/// Gemma 4's full layers rotate the pairs whose `rope_freqs` divisor is 1 and leave those
/// divided by 1e30 still: the rotated fraction of the head.
fn rotated_fraction(
    content: &Content,
    file: &mut std::fs::File,
    config: &serde_json::Value,
    gguf: &Path,
) -> Result<Option<f64>> {
    const NAME: &str = "rope_freqs.weight";
    if !content.tensor_infos.contains_key(NAME) {
        return Ok(None);
    }
    let divisors = dequantize(content, file, NAME, gguf)?;
    let head_dim = config["global_head_dim"].as_u64().unwrap_or(0) as usize;
    let turning = divisors.iter().take_while(|d| **d == 1.0).count();
    if divisors.len() * 2 != head_dim || divisors[turning..].iter().any(|d| *d < 1e20) {
        return Err(Error::bad_checkpoint(
            gguf,
            format!(
                "tensor `{NAME}`: {} divisors for heads of {head_dim}, and not 1 for the rotated pairs then 1e30",
                divisors.len()
            ),
        ));
    }
    Ok(Some(2.0 * turning as f64 / head_dim as f64))
}

/// Llama 3.1+ GGUF files carry their rope scaling as the tensor `rope_freqs.weight`; recover the
/// config's `rope_scaling` from it.
fn rope_scaling_from_tensor(
    content: &Content,
    file: &mut std::fs::File,
    config: &serde_json::Value,
    gguf: &Path,
) -> Result<Option<serde_json::Value>> {
    const NAME: &str = "rope_freqs.weight";
    if !content.tensor_infos.contains_key(NAME) {
        return Ok(None);
    }
    let divisors: Vec<f32> = content
        .tensor(file, NAME, &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1())
        .map_err(|e| Error::bad_checkpoint(gguf, format!("tensor `{NAME}`: {e}")))?;
    let theta = config["rope_theta"].as_f64().unwrap_or(10_000.0);
    rope::llama3_scaling(&divisors, theta, NAME)
}

/// Sort key that orders `layers.10` after `layers.9`.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    name.split('.').map(|p| p.parse::<u64>().map_or((p.to_string(), 0), |n| (String::new(), n))).collect()
}
