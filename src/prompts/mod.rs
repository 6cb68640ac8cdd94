//! Prompts: prompt sets from files or the hub, chat-template rendering, tokenization and
//! left-padded batches.

pub mod builtin;
mod encode;
mod sets;
mod template;

pub use encode::{left_pad, Batch, PromptEncoder};
pub use sets::{PromptSet, DEFAULT_FIELDS};
pub use template::{format_prompt, ChatTemplate, Message, PromptFormat};
