//! The streaming writer: a new checkpoint with the same shards, dtypes and files, one tensor at a time.

use super::model_dir::ModelDir;
use super::reader::INDEX_FILE;
use super::shard::{Shard, TensorRef};
use super::staging::StagedOutput;
use super::stream::{SafetensorsStream, TensorEntry};
use crate::progress::Progress;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to do with one tensor.
#[derive(Debug)]
pub enum TensorEdit {
    /// Copy the stored bytes unchanged.
    Keep,
    /// Replace the bytes (same dtype and shape, so the same length).
    Replace(Vec<u8>),
}

/// A tensor to add to the output as a byte copy of an input tensor (used to untie the head).
#[derive(Debug, Clone)]
pub struct AddedTensor {
    /// Name of the new tensor.
    pub name: String,
    /// Input tensor whose original bytes it gets.
    pub copy_of: String,
}

/// Everything the writer adds to or changes in the copy besides tensor edits.
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// Entries added to every shard's `__metadata__` (existing entries are kept).
    pub metadata: BTreeMap<String, String>,
    /// Tensors to add.
    pub added: Vec<AddedTensor>,
    /// A replacement for config.json (otherwise it is copied).
    pub config: Option<serde_json::Value>,
    /// Extra files written into the output folder (name, contents).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Replace an existing output folder.
    pub force: bool,
}

/// What the writer did.
#[derive(Debug, Clone)]
pub struct WriteReport {
    /// The output folder.
    pub out: PathBuf,
    /// Tensors whose bytes were replaced.
    pub edited: Vec<String>,
    /// Tensors copied byte for byte.
    pub copied: usize,
    /// Other files copied (config, tokenizer, ...).
    pub files_copied: Vec<String>,
    /// Files in the input that were deliberately not copied (other weight formats).
    pub files_skipped: Vec<String>,
    /// Bytes of tensor data written.
    pub bytes_written: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Write a copy of `model` into `out`, passing every tensor through `edit`.
///
/// The output has the same shard files, tensor order, dtypes and shapes; untouched tensors are
/// byte-identical. Everything is written into a temporary folder beside `out` and renamed at the
/// end, so a failure leaves no partial output. Only one edited tensor is held in memory at a time.
pub fn write_checkpoint(
    model: &ModelDir,
    out: &Path,
    options: &WriteOptions,
    progress: &dyn Progress,
    edit: &(dyn Fn(TensorRef<'_>) -> Result<TensorEdit> + Sync),
) -> Result<WriteReport> {
    let (staged, mut report) = stage_checkpoint(model, out, options, progress, edit)?;
    report.out = staged.commit()?;
    Ok(report)
}

/// Like [`write_checkpoint`], but leaves the finished copy in its temporary folder so the
/// caller can check it (and add files) before [`StagedOutput::commit`] moves it into place.
pub fn stage_checkpoint(
    model: &ModelDir,
    out: &Path,
    options: &WriteOptions,
    progress: &dyn Progress,
    edit: &(dyn Fn(TensorRef<'_>) -> Result<TensorEdit> + Sync),
) -> Result<(StagedOutput, WriteReport)> {
    let started = Instant::now();
    let staged = StagedOutput::new(out, &[&model.root], options.force)?;
    let checkpoint = &model.checkpoint;
    for added in &options.added {
        if checkpoint.contains(&added.name) {
            return Err(Error::Invalid(format!("cannot add tensor `{}`: the checkpoint already has it", added.name)));
        }
        checkpoint.tensor(&added.copy_of)?;
    }
    let (files_copied, files_skipped) = copy_side_files(model, staged.path(), options)?;
    progress.set_length(checkpoint.total_bytes());
    let mut report = WriteReport {
        out: staged.target().to_path_buf(),
        edited: Vec::new(),
        copied: 0,
        files_copied,
        files_skipped,
        bytes_written: 0,
        seconds: 0.0,
    };
    let mut added_sizes = BTreeMap::new();
    for (i, shard) in checkpoint.shards().iter().enumerate() {
        let added: Vec<&AddedTensor> =
            options.added.iter().filter(|a| checkpoint.shard_of(&a.copy_of) == Some(i)).collect();
        for a in &added {
            added_sizes.insert(a.name.clone(), shard.file_name());
        }
        write_shard(
            shard,
            checkpoint,
            &staged.path().join(shard.file_name()),
            options,
            &added,
            progress,
            edit,
            &mut report,
        )?;
    }
    if let Some(index) = checkpoint.index() {
        write_index(index, checkpoint, &staged.path().join(INDEX_FILE), &added_sizes, &options.added)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((staged, report))
}

#[allow(clippy::too_many_arguments)]
fn write_shard(
    shard: &Shard,
    checkpoint: &super::Checkpoint,
    path: &Path,
    options: &WriteOptions,
    added: &[&AddedTensor],
    progress: &dyn Progress,
    edit: &(dyn Fn(TensorRef<'_>) -> Result<TensorEdit> + Sync),
    report: &mut WriteReport,
) -> Result<()> {
    shard.advise_sequential();
    let names = shard.names_in_order();
    let mut metadata: BTreeMap<String, String> =
        shard.user_metadata().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    metadata.extend(options.metadata.clone());
    let mut entries = Vec::new();
    for name in names.iter().chain(added.iter().map(|a| &a.copy_of)) {
        let view = checkpoint.tensor(name)?;
        entries.push(TensorEntry { name: name.clone(), dtype: view.dtype, shape: view.shape.to_vec() });
    }
    for (entry, a) in entries[names.len()..].iter_mut().zip(added) {
        entry.name = a.name.clone();
    }
    let w = SafetensorsStream::create(path, &metadata, entries)?;
    // The writing runs on its own thread, so the next edit is computed while the last one (and
    // the kept tensors before it) go to disk; the channel holds one finished edit at most.
    let (send, receive) = std::sync::mpsc::sync_channel::<Chunk>(1);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_chunks(w, shard, receive, progress));
        let computed = compute_chunks(shard, &names, added, edit, &send, report);
        drop(send);
        let written =
            writer.join().map_err(|_| Error::Other(format!("{}: the writer thread panicked", path.display())))?;
        // A failed write closes the channel, which stops the computing side: report the write
        // error then; otherwise the computing side's.
        written.and(computed)
    })
}

/// Work for the writer thread, in file order.
enum Chunk {
    /// Copy consecutive kept tensors from the shard.
    Kept(KeptRun),
    /// Write an edited tensor's bytes.
    Edited(Vec<u8>),
    /// Everything was sent: finish the file.
    Done,
}

/// Consecutive kept tensors: where the first starts in the shard file, how many, how many bytes.
struct KeptRun {
    start: u64,
    tensors: usize,
    bytes: u64,
}

/// Kept tensors are copied in runs of at most this many bytes (so the progress bar moves).
const KEPT_RUN_LIMIT: u64 = 256 << 20;

/// Decide every tensor of `shard` (plus the added copies) and send the chunks to write.
fn compute_chunks(
    shard: &Shard,
    names: &[String],
    added: &[&AddedTensor],
    edit: &(dyn Fn(TensorRef<'_>) -> Result<TensorEdit> + Sync),
    send: &std::sync::mpsc::SyncSender<Chunk>,
    report: &mut WriteReport,
) -> Result<()> {
    let closed = || Error::Other(format!("{}: writing stopped", shard.path().display()));
    // Kept tensors are stored back to back, so each run of them between edits is one kernel copy.
    let mut run: Option<KeptRun> = None;
    let flush = |run: &mut Option<KeptRun>| match run.take() {
        Some(kept) => send.send(Chunk::Kept(kept)).map_err(|_| closed()),
        None => Ok(()),
    };
    for name in names {
        let view = shard.tensor(name).expect("name from this shard");
        let len = view.data.len() as u64;
        match edit(view)? {
            TensorEdit::Keep => {
                let offset = shard.file_offset(name).expect("name from this shard");
                let kept = run.get_or_insert(KeptRun { start: offset, tensors: 0, bytes: 0 });
                kept.tensors += 1;
                kept.bytes += len;
                if kept.bytes >= KEPT_RUN_LIMIT {
                    flush(&mut run)?;
                }
                report.copied += 1;
            }
            TensorEdit::Replace(bytes) => {
                if bytes.len() as u64 != len {
                    return Err(Error::bad_tensor(
                        name,
                        format!("edit produced {} bytes, expected {len}", bytes.len()),
                    ));
                }
                flush(&mut run)?;
                send.send(Chunk::Edited(bytes)).map_err(|_| closed())?;
                report.edited.push(name.clone());
            }
        }
        report.bytes_written += len;
    }
    flush(&mut run)?;
    for a in added {
        let view = shard.tensor(&a.copy_of).expect("added tensors copy from this shard");
        let start = shard.file_offset(&a.copy_of).expect("added tensors copy from this shard");
        let bytes = view.data.len() as u64;
        send.send(Chunk::Kept(KeptRun { start, tensors: 1, bytes })).map_err(|_| closed())?;
        report.bytes_written += bytes;
    }
    send.send(Chunk::Done).map_err(|_| closed())
}

/// The writer thread: write the chunks in order and finish the file. When the computing side
/// stops early (its error is the one reported) the unfinished file is left for the staging
/// folder's cleanup.
fn write_chunks(
    mut w: SafetensorsStream,
    shard: &Shard,
    receive: std::sync::mpsc::Receiver<Chunk>,
    progress: &dyn Progress,
) -> Result<()> {
    for chunk in receive {
        match chunk {
            Chunk::Kept(kept) => {
                w.copy_next(shard.file(), shard.path(), kept.start, kept.tensors)?;
                progress.inc(kept.bytes);
            }
            Chunk::Edited(bytes) => {
                w.write_next(&bytes)?;
                progress.inc(bytes.len() as u64);
            }
            Chunk::Done => return w.finish(),
        }
    }
    Ok(())
}

fn write_index(
    index: &serde_json::Value,
    checkpoint: &super::Checkpoint,
    path: &Path,
    added_files: &BTreeMap<String, String>,
    added: &[AddedTensor],
) -> Result<()> {
    let mut index = index.clone();
    let mut total = checkpoint.total_bytes();
    for a in added {
        total += checkpoint.tensor(&a.copy_of)?.data.len() as u64;
    }
    if let Some(map) = index.get_mut("weight_map").and_then(|m| m.as_object_mut()) {
        for (name, file) in added_files {
            map.insert(name.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let meta =
        index.as_object_mut().expect("index is an object").entry("metadata").or_insert_with(|| serde_json::json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("total_size".into(), total.into());
    }
    write_json(path, &index)
}

/// Write pretty JSON with a trailing newline.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Other(e.to_string()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Weight files in other formats are not copied: a runtime could load them instead of the edit.
fn is_other_weight_file(name: &str) -> bool {
    [".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack", ".onnx"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn copy_side_files(model: &ModelDir, out: &Path, options: &WriteOptions) -> Result<(Vec<String>, Vec<String>)> {
    let shard_names: Vec<String> = model.checkpoint.shards().iter().map(|s| s.file_name()).collect();
    let mut copied = Vec::new();
    let mut skipped = Vec::new();
    let entries = std::fs::read_dir(&model.root).map_err(|e| Error::io(&model.root, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&model.root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if shard_names.contains(&name) || name == INDEX_FILE || name.starts_with(".scalpel-tmp-") {
            continue;
        }
        if !path.is_file() || is_other_weight_file(&name) || name.ends_with(".index.json") {
            skipped.push(name);
            continue;
        }
        if name == "config.json" && options.config.is_some() {
            continue;
        }
        if options.extra_files.iter().any(|(n, _)| n == &name) {
            continue;
        }
        std::fs::copy(&path, out.join(&name)).map_err(|e| Error::io(&path, e))?;
        copied.push(name);
    }
    if let Some(config) = &options.config {
        write_json(&out.join("config.json"), config)?;
        copied.push("config.json".into());
    }
    for (name, contents) in &options.extra_files {
        std::fs::write(out.join(name), contents).map_err(|e| Error::io(out.join(name), e))?;
    }
    copied.sort();
    skipped.sort();
    Ok((copied, skipped))
}
