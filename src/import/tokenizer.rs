//! GGUF vocabulary → Hugging Face tokenizer.json (byte-level BPE for `gpt2`, SentencePiece-style
//! BPE with byte fallback for `llama`), plus tokenizer_config.json.

use super::metadata::Meta;
use crate::{Error, Result};
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// The imported tokenizer's files and special ids.
pub(super) struct ImportedTokenizer {
    pub tokenizer: Json,
    pub config: Json,
    pub special_tokens_map: Json,
    pub vocab_size: usize,
    pub eos_ids: Vec<u32>,
}

fn strings(meta: &Meta<'_>, key: &str) -> Result<Vec<String>> {
    let list = meta
        .get(key)
        .ok_or_else(|| Error::bad_checkpoint(meta.path, format!("GGUF metadata lacks `{key}`")))?
        .to_vec()
        .map_err(|e| Error::bad_checkpoint(meta.path, format!("`{key}`: {e}")))?;
    list.iter()
        .map(|v| v.to_string().cloned().map_err(|e| Error::bad_checkpoint(meta.path, format!("`{key}`: {e}"))))
        .collect()
}

fn numbers<T>(
    meta: &Meta<'_>,
    key: &str,
    f: impl Fn(&candle_core::quantized::gguf_file::Value) -> Option<T>,
) -> Vec<T> {
    meta.get(key).and_then(|v| v.to_vec().ok()).map(|l| l.iter().filter_map(&f).collect()).unwrap_or_default()
}

/// Pre-tokenizer for a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Json {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]})
    };
    match pre {
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level
        ]}),
        "llama-bpe" | "llama3" => split(
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ),
        "qwen2" => split(
            "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        ),
        _ => byte_level,
    }
}

/// Merges of a SentencePiece vocabulary, derived as Hugging Face's converter does: every split
/// of a piece into two pieces, ranked by the merged piece's score.
fn spm_merges(tokens: &[String], scores: &[f32], normal: &[bool]) -> Vec<Json> {
    let index: HashMap<&str, usize> =
        tokens.iter().enumerate().filter(|(i, _)| normal[*i]).map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate().filter(|(i, _)| normal[*i]) {
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), id, li, ri));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges.into_iter().map(|(_, _, l, r)| json!([tokens[l], tokens[r]])).collect()
}

/// The control tokens chat templates end a turn with, which generation stops on as on EOS.
pub(crate) const TURN_ENDS: [&str; 5] = ["<|im_end|>", "<end_of_turn>", "<turn|>", "<|eot_id|>", "<|end|>"];

/// Build the tokenizer files from GGUF metadata.
pub(super) fn build(meta: &Meta<'_>) -> Result<ImportedTokenizer> {
    let model = meta.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let types: Vec<i32> = numbers(meta, "tokenizer.ggml.token_type", |v| v.to_i32().ok());
    let kind = |i: usize| types.get(i).copied().unwrap_or(1);
    // Unused tokens (type 5) only pad the token list to the embedding's rows: no text maps to
    // them, and leaving them out lets an export mark them unused again.
    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate().filter(|(i, _)| kind(*i) != 5) {
        vocab.entry(t.clone()).or_insert(json!(i));
    }
    let added: Vec<Json> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(kind(*i), 3 | 4))
        .map(|(i, t)| {
            let special = kind(i) == 3;
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": !special, "special": special})
        })
        .collect();
    let bos = meta.token_id("bos_token_id").and_then(|i| tokens.get(i as usize)).cloned();
    let eos_id = meta.token_id("eos_token_id");
    let eos = eos_id.and_then(|i| tokens.get(i as usize)).cloned();
    let pad = meta.token_id("padding_token_id").and_then(|i| tokens.get(i as usize)).cloned().or_else(|| eos.clone());
    let add_bos = meta.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(false);
    let post_processor = match (&bos, add_bos) {
        (Some(b), true) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b: {"id": b, "ids": [meta.token_id("bos_token_id")], "tokens": [b]}}}),
        _ if model == "gpt2" => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
        _ => Json::Null,
    };
    let tokenizer = match model.as_str() {
        "gpt2" => {
            let merges = strings(meta, "tokenizer.ggml.merges")?;
            let pre = meta.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
                "pre_tokenizer": pre_tokenizer(&pre), "post_processor": post_processor,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                          "vocab": vocab, "merges": merges}
            })
        }
        // SentencePiece pieces as byte-fallback BPE: llama.cpp's `llama` ranks them by score,
        // its `gemma4` keeps the merges.
        "llama" | "gemma4" => {
            let merges = if model == "gemma4" {
                strings(meta, "tokenizer.ggml.merges")?.into_iter().map(Json::String).collect()
            } else {
                let scores: Vec<f32> = numbers(meta, "tokenizer.ggml.scores", |v| v.to_f32().ok());
                let normal: Vec<bool> = (0..tokens.len()).map(|i| kind(i) == 1).collect();
                spm_merges(&tokens, &scores, &normal)
            };
            let prefix = meta
                .get("tokenizer.ggml.add_space_prefix")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(!meta.arch.starts_with("gemma"));
            let mut normalizers = Vec::new();
            if prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
            }
            normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if prefix {
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            let unk = types.iter().position(|t| *t == 2).map(|i| tokens[i].clone());
            json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null, "post_processor": post_processor,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                          "vocab": vocab, "merges": merges}
            })
        }
        other => {
            return Err(Error::bad_checkpoint(
                meta.path,
                format!("tokenizer model `{other}` is not supported (gpt2, llama and gemma4 are)"),
            ))
        }
    };
    let template = meta.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
    let config = json!({
        "add_bos_token": add_bos, "add_eos_token": false, "bos_token": bos, "eos_token": eos, "pad_token": pad,
        "clean_up_tokenization_spaces": false, "model_max_length": meta.opt_usize("context_length").unwrap_or(4096),
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
    });
    let special_tokens_map = json!({"bos_token": bos, "eos_token": eos, "pad_token": pad});
    let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
    // Chat models end turns with a control token that the template writes (e.g. <|im_end|>,
    // <end_of_turn>); stop on it too.
    for marker in TURN_ENDS {
        if let Some(i) = tokens.iter().position(|t| t == marker) {
            eos_ids.push(i as u32);
        }
    }
    eos_ids.sort_unstable();
    eos_ids.dedup();
    Ok(ImportedTokenizer { tokenizer, config, special_tokens_map, vocab_size: tokens.len(), eos_ids })
}
