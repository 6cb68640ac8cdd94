//! Turning instructions into token ids: chat template (or raw), tokenizer, left-padded batches.

use super::template::{format_prompt, ChatTemplate, Message, PromptFormat};
use crate::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// A left-padded batch: `ids[b]` and `mask[b]` (1 = real token) all of one length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids.
    pub ids: Vec<Vec<u32>>,
    /// Attention mask.
    pub mask: Vec<Vec<u8>>,
}

/// Left-pad `sequences` with `pad` to a common length.
pub fn left_pad(sequences: &[Vec<u32>], pad: u32) -> Batch {
    let len = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let ids = sequences.iter().map(|s| [vec![pad; len - s.len()], s.clone()].concat()).collect();
    let mask = sequences.iter().map(|s| [vec![0u8; len - s.len()], vec![1u8; s.len()]].concat()).collect();
    Batch { ids, mask }
}

/// A model's tokenizer with its chat template and prompt format.
pub struct PromptEncoder {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    format: PromptFormat,
    pad_id: u32,
    eos_ids: Vec<u32>,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEncoder").field("format", &self.format).field("pad_id", &self.pad_id).finish()
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn token_name(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

fn ids_of(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
        _ => Vec::new(),
    }
}

impl PromptEncoder {
    /// Load `tokenizer.json`, the chat template (unless raw) and the special token ids of a model folder.
    pub fn from_model_dir(dir: &Path, format: PromptFormat) -> Result<PromptEncoder> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{} has no tokenizer.json (scalpel needs the Hugging Face fast-tokenizer file)",
                dir.display()
            )));
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let template = match format {
            PromptFormat::Chat { .. } => Some(ChatTemplate::from_model_dir(dir)?),
            PromptFormat::Raw { .. } => None,
        };
        let tok_config = read_json(&dir.join("tokenizer_config.json")).unwrap_or_default();
        let generation = read_json(&dir.join("generation_config.json")).unwrap_or_default();
        let config = read_json(&dir.join("config.json")).unwrap_or_default();
        let id = |name: Option<String>| name.and_then(|n| tokenizer.token_to_id(&n));
        let mut eos_ids = ids_of(generation.get("eos_token_id"));
        eos_ids.extend(ids_of(config.get("eos_token_id")));
        eos_ids.extend(id(token_name(tok_config.get("eos_token"))));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let pad_id = id(token_name(tok_config.get("pad_token")))
            .or_else(|| ids_of(generation.get("pad_token_id")).first().copied())
            .or_else(|| eos_ids.first().copied())
            .unwrap_or(0);
        Ok(PromptEncoder { tokenizer, template, format, pad_id, eos_ids })
    }

    /// The prompt format in use.
    pub fn format(&self) -> &PromptFormat {
        &self.format
    }

    /// Token ids that end a generated answer.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The text the model sees for one instruction.
    pub fn render(&self, user: &str) -> Result<String> {
        format_prompt(self.template.as_ref(), &self.format, user)
    }

    /// Render a whole conversation (chat mode), ending with the assistant's turn header.
    pub fn render_conversation(&self, messages: &[Message]) -> Result<String> {
        match (&self.template, &self.format) {
            (Some(t), PromptFormat::Chat { system }) => {
                let mut all = Vec::new();
                if let Some(s) = system {
                    all.push(Message::new("system", s));
                }
                all.extend_from_slice(messages);
                t.render(&all, true)
            }
            _ => Ok(messages.iter().map(|m| m.content.clone()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// Tokenize rendered text. Templates write their own special tokens; raw text gets the
    /// tokenizer's usual ones.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let add_special = matches!(self.format, PromptFormat::Raw { .. });
        let encoding = self.tokenizer.encode(text, add_special).map_err(|e| Error::Other(format!("tokenizer: {e}")))?;
        let ids = encoding.get_ids().to_vec();
        if ids.is_empty() {
            return Err(Error::Invalid(format!("prompt {text:?} encodes to no tokens")));
        }
        Ok(ids)
    }

    /// Render and tokenize one instruction.
    pub fn encode(&self, user: &str) -> Result<Vec<u32>> {
        self.tokenize(&self.render(user)?)
    }

    /// Encode instructions into a left-padded batch.
    pub fn batch(&self, users: &[String]) -> Result<Batch> {
        let encoded = users.iter().map(|u| self.encode(u)).collect::<Result<Vec<_>>>()?;
        Ok(left_pad(&encoded, self.pad_id))
    }

    /// Decode ids to text, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::Other(format!("tokenizer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_aligns_the_ends() {
        let b = left_pad(&[vec![5, 6], vec![1, 2, 3, 4]], 0);
        assert_eq!(b.ids, vec![vec![0, 0, 5, 6], vec![1, 2, 3, 4]]);
        assert_eq!(b.mask, vec![vec![0, 0, 1, 1], vec![1, 1, 1, 1]]);
    }

    #[test]
    fn encodes_fixture_prompts_through_the_template() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        crate::fixture::write_fixture("qwen2", &dir, &crate::fixture::FixtureOptions::default()).unwrap();
        let enc = PromptEncoder::from_model_dir(&dir, PromptFormat::Chat { system: None }).unwrap();
        let text = enc.render("Hello there").unwrap();
        assert!(
            text.starts_with("<|im_start|>user\nHello there<|im_end|>") && text.ends_with("<|im_start|>assistant\n")
        );
        let ids = enc.encode("Hello there").unwrap();
        assert_eq!(enc.tokenizer.decode(&ids, false).unwrap(), text);
        let im_end = enc.tokenizer.token_to_id("<|im_end|>").unwrap();
        assert!(enc.eos_ids().contains(&im_end));
        let batch = enc.batch(&["a".into(), "a longer prompt".into()]).unwrap();
        assert_eq!(batch.ids[0].len(), batch.ids[1].len());
        assert!(batch.ids[0][0] == enc.pad_id() && batch.mask[0][0] == 0);
        let raw = PromptEncoder::from_model_dir(&dir, PromptFormat::Raw { trailing_newline: false }).unwrap();
        assert_eq!(raw.render("x").unwrap(), "x");
    }
}
