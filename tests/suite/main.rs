//! All integration tests, linked into one binary (one link instead of one per file).

mod bad_input;
mod cli;
#[allow(dead_code)]
mod common;
mod decoder_oracle;
mod equivalence;
mod eval;
mod experts;
mod export;
mod gemma4;
mod import_roundtrip;
mod judge;
mod layer_major;
mod layering;
mod moe;
mod pipeline;
mod probe;
mod prompts_batch;
mod prompts_sets;
mod prompts_template;
mod provenance;
mod reader_props;
mod real_model;
mod safety;
mod search;
mod speed;
mod surgery;
mod svd;
mod trust;
mod weight_storage;
