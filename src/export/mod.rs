//! Hand an edit back in the forms people run: a GGUF file (llama.cpp, Ollama, LM Studio) and a
//! PEFT LoRA adapter (PEFT, vLLM); and run a base model plus an adapter.

pub mod adapter;
pub mod gguf;

pub use adapter::{export_adapter, export_adapter_from_record, merge_adapter, AdapterReport, MergedModel};
pub use gguf::{export_gguf, gguf_architecture, GgufOptions, GgufReport, GgufType};
