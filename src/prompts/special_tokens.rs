//! A model folder's tokenizer_config.json (special tokens, chat template) and the special token
//! ids scalpel needs: padding and end of sequence.

use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The fields of `tokenizer_config.json` that prompt formatting uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerConfig {
    /// The file these fields were read from.
    pub path: PathBuf,
    /// `bos_token` (a string, or the `content` of an added-token object).
    pub bos_token: Option<String>,
    /// `eos_token`.
    pub eos_token: Option<String>,
    /// `pad_token`.
    pub pad_token: Option<String>,
    /// `unk_token`.
    pub unk_token: Option<String>,
    /// `chat_template`: the raw JSON value (a string, or a list of `{name, template}`).
    pub chat_template: Option<Value>,
}

/// The text of a special-token field: either a plain string or an added-token object
/// `{"content": "...", ...}`. Anything else (null, numbers) gives `None`.
pub fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// Read a JSON file, or `None` when it does not exist. Invalid JSON is an error naming the file.
pub(crate) fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| Error::Json { path: path.to_path_buf(), source })
}

impl TokenizerConfig {
    /// Read `dir/tokenizer_config.json`; `Ok(None)` when the file is absent, an error naming the
    /// file when it is not a JSON object.
    pub fn from_model_dir(dir: &Path) -> Result<Option<TokenizerConfig>> {
        let path = dir.join("tokenizer_config.json");
        let Some(value) = read_json_if_present(&path)? else { return Ok(None) };
        if !value.is_object() {
            return Err(Error::Invalid(format!("{}: expected a JSON object", path.display())));
        }
        Ok(Some(TokenizerConfig {
            bos_token: token_text(value.get("bos_token")),
            eos_token: token_text(value.get("eos_token")),
            pad_token: token_text(value.get("pad_token")),
            unk_token: token_text(value.get("unk_token")),
            chat_template: value.get("chat_template").filter(|v| !v.is_null()).cloned(),
            path,
        }))
    }
}

/// Token ids from a config field that may be one number or a list of numbers.
fn ids_of(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().and_then(|v| u32::try_from(v).ok()).into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).filter_map(|v| u32::try_from(v).ok()).collect(),
        _ => Vec::new(),
    }
}

/// The special token ids of a model: what ends an answer and what pads a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning-of-sequence id, when the tokenizer config names one the tokenizer knows.
    pub bos_id: Option<u32>,
    /// Ids that end a generated answer (generation_config.json, config.json and
    /// tokenizer_config.json together; sorted, no duplicates).
    pub eos_ids: Vec<u32>,
    /// The padding id: tokenizer_config `pad_token`, else generation_config `pad_token_id`, else
    /// the tokenizer config's `eos_token`, else the first end id, else 0. Padding is always
    /// masked, so its value never changes a result; it only has to be a valid id.
    pub pad_id: u32,
}

impl SpecialTokens {
    /// Collect the special ids of the model folder `dir` for `tokenizer`.
    pub fn from_model_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<SpecialTokens> {
        let config = TokenizerConfig::from_model_dir(dir)?.unwrap_or_default();
        let generation = read_json_if_present(&dir.join("generation_config.json"))?.unwrap_or_default();
        let model_config = read_json_if_present(&dir.join("config.json"))?.unwrap_or_default();
        let id = |name: &Option<String>| name.as_deref().and_then(|n| tokenizer.token_to_id(n));
        let eos_from_config = id(&config.eos_token);
        let mut eos_ids = ids_of(generation.get("eos_token_id"));
        eos_ids.extend(ids_of(model_config.get("eos_token_id")));
        eos_ids.extend(eos_from_config);
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = id(&config.pad_token)
            .or_else(|| ids_of(generation.get("pad_token_id")).first().copied())
            .or(eos_from_config)
            .or_else(|| eos_ids.first().copied())
            .unwrap_or(0);
        Ok(SpecialTokens { bos_id: id(&config.bos_token), eos_ids, pad_id })
    }
}
