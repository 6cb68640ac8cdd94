//! Model folders: config.json, tokenizer files, single or sharded safetensors, read through
//! memory maps one tensor at a time; the streaming writer; model resolution (local or hub).

mod dtype;
mod model_dir;
mod reader;
mod resolve;
mod shard;
mod staging;
mod stream;
mod summary;
mod writer;

pub use dtype::{decode_f32, encode_f32, unit_roundoff, EditableDtype};
pub use model_dir::ModelDir;
pub use reader::{Checkpoint, INDEX_FILE, SINGLE_FILE};
pub use resolve::resolve_model;
pub use safetensors::Dtype;
pub use shard::{Shard, TensorRef};
pub use staging::StagedOutput;
pub use stream::{SafetensorsStream, TensorEntry};
pub use summary::{ModelSummary, WriterSummary};
pub use writer::{stage_checkpoint, write_checkpoint, AddedTensor, TensorEdit, WriteOptions, WriteReport};
