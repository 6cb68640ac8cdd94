//! A model's prompt pipeline in one value: chat template (or raw), tokenizer, special ids,
//! left-padded batches.

use super::batch::{encode_texts, load_tokenizer, Batch};
use super::special_tokens::SpecialTokens;
use super::template::{format_prompt, ChatTemplate, Message, PromptFormat};
use crate::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// A model's tokenizer with its chat template and prompt format.
pub struct PromptEncoder {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    format: PromptFormat,
    special: SpecialTokens,
}

impl std::fmt::Debug for PromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptEncoder")
            .field("format", &self.format)
            .field("template", &self.template.as_ref().map(ChatTemplate::origin))
            .field("special", &self.special)
            .finish()
    }
}

impl PromptEncoder {
    /// Load `tokenizer.json`, the chat template (unless raw) and the special token ids of a model folder.
    pub fn from_model_dir(dir: &Path, format: PromptFormat) -> Result<PromptEncoder> {
        let tokenizer = load_tokenizer(dir)?;
        let template = match format {
            PromptFormat::Chat { .. } => Some(ChatTemplate::from_model_dir(dir)?),
            PromptFormat::Raw { .. } => None,
        };
        let special = SpecialTokens::from_model_dir(dir, &tokenizer)?;
        Ok(PromptEncoder { tokenizer, template, format, special })
    }

    /// An encoder from parts already loaded (a chat format needs a template).
    pub fn new(
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        format: PromptFormat,
        special: SpecialTokens,
    ) -> Result<PromptEncoder> {
        if format.uses_template() && template.is_none() {
            return Err(Error::Invalid(
                "chat format asked for, but no chat template was given; use raw prompts".into(),
            ));
        }
        Ok(PromptEncoder { tokenizer, template, format, special })
    }

    /// The prompt format in use.
    pub fn format(&self) -> &PromptFormat {
        &self.format
    }

    /// The chat template, in chat format.
    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The special token ids.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Token ids that end a generated answer.
    pub fn eos_ids(&self) -> &[u32] {
        &self.special.eos_ids
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.special.pad_id
    }

    /// The text the model sees for one instruction.
    pub fn render(&self, user: &str) -> Result<String> {
        format_prompt(self.template.as_ref(), &self.format, user)
    }

    /// Render a whole conversation (chat mode), ending with the assistant's turn header; in raw
    /// mode the contents joined by newlines.
    pub fn render_conversation(&self, messages: &[Message]) -> Result<String> {
        match (&self.template, &self.format) {
            (Some(t), PromptFormat::Chat { system }) => {
                let mut all = Vec::new();
                if let Some(s) = system {
                    all.push(Message::system(s));
                }
                all.extend_from_slice(messages);
                t.render(&all, true)
            }
            _ => Ok(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// Tokenize rendered text. Templates write their own special tokens, so chat text is encoded
    /// without adding any; raw text gets the tokenizer's usual ones (e.g. BOS).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = encode_texts(&self.tokenizer, &[text.to_string()], self.format.add_special_tokens())?;
        Ok(ids.pop().unwrap_or_default())
    }

    /// Render and tokenize one instruction.
    pub fn encode(&self, user: &str) -> Result<Vec<u32>> {
        self.tokenize(&self.render(user)?)
    }

    /// Encode instructions into a left-padded batch.
    pub fn batch(&self, users: &[String]) -> Result<Batch> {
        let encoded = users.iter().map(|u| self.encode(u)).collect::<Result<Vec<_>>>()?;
        Batch::from_sequences(&encoded, self.special.pad_id)
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
