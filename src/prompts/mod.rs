//! Prompts: prompt sets from files or the hub, chat-template rendering, tokenization and
//! left-padded batches with their attention masks.
//!
//! - [`sets`]: [`PromptSet`] from .txt / .jsonl / .json / .csv / .tsv / .parquet / `hf://owner/name[:split][#column]`;
//!   limits, seeded shuffles and splits, a hash for provenance;
//! - [`template`]: [`ChatTemplate`] (minijinja, rendered like `transformers`), [`PromptFormat`];
//! - [`batch`]: tokenizer loading, encoding, [`Batch`] (left padding, positions) and
//!   [`attention_bias`] (causal + padding + sliding window, with a KV-cache offset);
//! - [`encode`]: [`PromptEncoder`], all of the above for one model folder.

pub mod batch;
pub mod builtin;
pub mod encode;
pub mod hub;
mod parquet;
pub mod sets;
pub mod special_tokens;
pub mod strftime;
pub mod template;

pub use batch::{
    attention_bias, chunks, encode_batch, encode_texts, left_pad, load_tokenizer, position_ids, shared_prefix_len,
    Batch, MASK_BLOCKED,
};
pub use encode::PromptEncoder;
pub use hub::HubDatasetRef;
pub use sets::{load_prompt_set, PromptSet, DEFAULT_FIELDS};
pub use special_tokens::{SpecialTokens, TokenizerConfig};
pub use strftime::TemplateDate;
pub use template::{format_prompt, ChatTemplate, Message, PromptFormat, CHATML_TEMPLATE};
