//! All integration tests, linked into one binary (one link instead of one per file).

#[allow(dead_code)]
mod common;
mod bad_input;
mod cli;
mod decoder_oracle;
mod equivalence;
mod eval;
mod import_roundtrip;
mod pipeline;
mod probe;
mod prompts_batch;
mod prompts_sets;
mod prompts_template;
mod reader_props;
mod speed;
mod surgery;
mod svd;
