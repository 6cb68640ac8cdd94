//! scalpel: weight-editing surgery on chat language models.
//!
//! The library is organised by concern (see `docs/DESIGN.md`):
//! - [`checkpoint`]: model directories, memory-mapped safetensors, the streaming writer;
//! - [`arch`]: per-family knowledge (config.json → [`arch::ModelSpec`], tensor names);
//! - [`surgery`]: projection math, surgery plans, verification of edited weights;
//! - [`directions`]: the directions file format shared by `probe` and `ablate`;
//! - [`fixture`]: tiny random models of every supported family, built in code;
//! - [`model`]: the instrumented decoder (candle) with hook points and interventions;
//! - [`kernels`]: the hand-written CPU kernels below it (products, fused ops, attention);
//! - [`prompts`]: prompt sets, chat templates, batching;
//! - [`import`]: GGUF → Hugging Face folder;
//! - [`export`]: Hugging Face folder → GGUF, and edits as PEFT LoRA adapters;
//! - [`analysis`]: SVD of the residual-stream writers;
//! - [`probe`], [`eval`]: activation statistics and evaluation;
//! - [`plot`]: PNG and SVG charts (plotters, with an embedded font);
//! - [`recipe`]: TOML recipes for `scalpel run`;
//! - [`pipeline`]: the step functions the subcommands and `scalpel run` share;
//! - [`names`]: the names of enum values as the command line and recipes spell them.

pub mod analysis;
pub mod arch;
pub mod checkpoint;
pub mod directions;
pub mod error;
pub mod eval;
pub mod export;
pub mod files;
pub mod fixture;
pub mod import;
pub mod kernels;
pub mod layers;
pub mod linalg;
pub mod model;
pub mod names;
pub mod pipeline;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod prompts;
pub mod recipe;
pub mod search;
pub mod surgery;

pub use error::{Error, Result};
