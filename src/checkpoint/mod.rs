//! Model folders: config.json, tokenizer files, single or sharded safetensors, read through
//! memory maps one tensor at a time; the streaming writer; model resolution (local or hub).

mod dtype;
mod identity;
mod model_dir;
mod reader;
mod resolve;
mod shard;
mod staging;
mod stream;
mod summary;
mod validate;
mod writer;

pub use crate::files::{read_capped, JSON_CAP};
pub use dtype::{decode_f32, encode_f32, unit_roundoff, EditableDtype};
pub use identity::{display_name, file_hash, model_hash, InputRecord};
pub use model_dir::ModelDir;
pub use reader::{Checkpoint, INDEX_FILE, SINGLE_FILE};
pub use resolve::{resolve_model, Hub};
pub use safetensors::Dtype;
pub use shard::{Shard, TensorRef};
pub use staging::{
    check_overlap, remove_live_staging, remove_stale_staging, replaceable, write_marker, written_by_scalpel,
    StagedOutput, MARKER_FILE,
};
pub use stream::{SafetensorsStream, TensorEntry};
pub use summary::{ModelSummary, WriterSummary};
pub use validate::{check_shapes, missing_tensors, unused_tensors};
pub use writer::{stage_checkpoint, write_checkpoint, AddedTensor, TensorEdit, WriteOptions, WriteReport};
