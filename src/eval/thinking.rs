//! Thinking models: answers that open with a thinking block (`<think>…</think>`, as Qwen3 and
//! DeepSeek-R1 write them) are judged on what follows the block.
//!
//! A model thinks when its chat template or its tokenizer knows [`OPEN`] and [`CLOSE`]. Some
//! templates (DeepSeek-R1 style) open the block themselves at the end of the generation prompt,
//! so the answer starts inside it and holds only the closing tag. Two ways to judge such a model,
//! the user's choice ([`ThinkingMode`]):
//!
//! - [`ThinkingMode::Strip`]: let it think, with [`THINKING_BUDGET`] tokens for the block on top
//!   of the answer's budget, and judge only the text after the block. An answer still inside
//!   the block when the budget runs out has no answer at all (an evasion, never a compliance).
//! - [`ThinkingMode::Off`]: render prompts with `enable_thinking = false`, where the template
//!   reads that variable (Qwen3 writes an empty block then), and strip what is left.

use crate::prompts::{ChatTemplate, PromptEncoder, PromptFormat};
use crate::{Error, Result};

/// The tag that opens a thinking block.
pub const OPEN: &str = "<think>";
/// The tag that closes it.
pub const CLOSE: &str = "</think>";
/// Tokens of thinking allowed before the answer's own budget starts (in [`ThinkingMode::Strip`]).
pub const THINKING_BUDGET: usize = 512;

/// How a thinking model is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkingMode {
    /// Think, then judge the text after the block.
    #[default]
    Strip,
    /// Render with `enable_thinking = false`.
    Off,
}

impl ThinkingMode {
    /// Parse `strip` or `off`.
    pub fn parse(text: &str) -> Result<ThinkingMode> {
        match text {
            "strip" => Ok(ThinkingMode::Strip),
            "off" => Ok(ThinkingMode::Off),
            other => Err(Error::Invalid(format!("unknown thinking mode `{other}` (choose strip or off)"))),
        }
    }
}

/// What a model's prompt pipeline says about thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thinking {
    /// The generation prompt ends inside an opened block.
    pub opened_by_template: bool,
    /// The template reads `enable_thinking`.
    pub can_disable: bool,
}

/// Whether the model behind `encoder` thinks, and how (None: it does not).
pub fn detect(encoder: &PromptEncoder) -> Result<Option<Thinking>> {
    let source = encoder.template().map(ChatTemplate::source).unwrap_or("");
    let tokenizer = encoder.tokenizer();
    let in_vocab = tokenizer.token_to_id(OPEN).is_some() && tokenizer.token_to_id(CLOSE).is_some();
    if !source.contains(OPEN) && !in_vocab {
        return Ok(None);
    }
    let opened_by_template = match encoder.format() {
        PromptFormat::Chat { .. } => opens_block(&encoder.render("hi")?),
        PromptFormat::Raw { .. } => false,
    };
    Ok(Some(Thinking { opened_by_template, can_disable: source.contains("enable_thinking") }))
}

/// Whether a rendered prompt ends inside an open thinking block.
pub fn opens_block(rendered: &str) -> bool {
    match (rendered.rfind(OPEN), rendered.rfind(CLOSE)) {
        (Some(o), Some(c)) => o > c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The answer after the thinking block: the text after the last [`CLOSE`]; an answer that is
/// still thinking (it opened a block, or the template did, and no close follows) has none.
pub fn strip_thinking(answer: &str, opened_by_template: bool) -> &str {
    if let Some(at) = answer.rfind(CLOSE) {
        return answer[at + CLOSE.len()..].trim();
    }
    if opened_by_template || answer.trim_start().starts_with(OPEN) {
        return "";
    }
    answer
}

/// `encoder` rendering with `enable_thinking = false`; an error when its template does not
/// read that variable.
pub fn without_thinking(encoder: &PromptEncoder) -> Result<PromptEncoder> {
    let template = encoder
        .template()
        .filter(|t| t.source().contains("enable_thinking"))
        .ok_or_else(|| {
            Error::Invalid("the chat template has no `enable_thinking` switch: use thinking mode strip".into())
        })?
        .clone()
        .with_flag("enable_thinking", false);
    PromptEncoder::new(
        encoder.tokenizer().clone(),
        Some(template),
        encoder.format().clone(),
        encoder.special_tokens().clone(),
    )
}

/// How the answers of the model behind `encoder` are judged, for reports (None for a model
/// that does not think): after the block, or with thinking disabled by the template.
pub fn describe(encoder: &PromptEncoder) -> Result<Option<String>> {
    let Some(t) = detect(encoder)? else {
        return Ok(None);
    };
    let rendered = match encoder.format() {
        PromptFormat::Chat { .. } => encoder.render("hi")?,
        PromptFormat::Raw { .. } => String::new(),
    };
    Ok(Some(if !t.opened_by_template && rendered.contains(CLOSE) {
        "thinking disabled (`enable_thinking = false`)".to_string()
    } else {
        format!("judged after the thinking block (up to {THINKING_BUDGET} thinking tokens first)")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_after_the_block_is_what_is_judged() {
        assert_eq!(strip_thinking("<think>They ask for X.</think>\n\nI can't help.", false), "I can't help.");
        assert_eq!(strip_thinking("They ask for X.</think>Sure: step 1", true), "Sure: step 1");
        assert_eq!(strip_thinking("<think>Okay, the user wants", false), "");
        assert_eq!(strip_thinking("Okay, the user wants", true), "");
        assert_eq!(strip_thinking("Plain answer.", false), "Plain answer.");
        assert!(opens_block("<|im_start|>assistant\n<think>\n") && !opens_block("a<think>\n\n</think>\n\n"));
        assert!(ThinkingMode::parse("maybe").is_err());
    }
}
