//! `ablate`: stream the checkpoint through the plan into a new folder, verify it, add the card.

use super::plan::{Layout, PlannedEdit, SurgeryPlan, SurgeryRecord};
use super::projection::{edit_columns, edit_rows};
use super::verify::{verify_with_original, VerifyReport};
use crate::checkpoint::{
    encode_f32, stage_checkpoint, AddedTensor, EditableDtype, ModelDir, TensorEdit, TensorRef, WriteOptions,
    WriteReport,
};
use crate::progress::Progress;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The file in an edited model folder that records what scalpel did.
pub const EDIT_RECORD_FILE: &str = "scalpel_edit.json";

/// What `ablate` did.
#[derive(Debug, Clone)]
pub struct AblateReport {
    /// The writer's report.
    pub write: WriteReport,
    /// Whether `lm_head.weight` was written as the original embedding.
    pub untied: bool,
    /// The read-back verification (None when skipped).
    pub verification: Option<VerifyReport>,
}

/// Apply `plan` to `model` and write the edited checkpoint to `out`.
///
/// Untouched tensors are copied byte for byte; edited ones are computed in f32 (f64
/// accumulation) and rounded once to their stored dtype. With `untie` and a tied head, the
/// original embedding is written as `lm_head.weight` and config.json gets
/// `tie_word_embeddings: false`. The provenance record goes into `scalpel_edit.json` and into
/// every shard's metadata (`scalpel_edit`). With `check`, the written files are read back and
/// verified *before* the output folder appears: a failed verification leaves nothing behind.
/// A model card (`README.md`) is written last, embedding the original card.
pub fn ablate(
    model: &ModelDir,
    plan: &SurgeryPlan,
    record: &SurgeryRecord,
    out: &Path,
    force: bool,
    check: bool,
    progress: &dyn Progress,
) -> Result<AblateReport> {
    // A stacked experts tensor has one edit per slice; every other tensor one edit.
    let mut by_name: HashMap<&str, Vec<&PlannedEdit>> = HashMap::new();
    for e in &plan.edits {
        by_name.entry(e.tensor.as_str()).or_default().push(e);
    }
    let untie = plan.options.untie && plan.edits_tied_head;
    let mut options = WriteOptions { force, ..WriteOptions::default() };
    let record_json = serde_json::to_string(record).map_err(|e| Error::Other(e.to_string()))?;
    options.metadata = BTreeMap::from([("scalpel_edit".to_string(), record_json)]);
    let pretty = serde_json::to_vec_pretty(record).map_err(|e| Error::Other(e.to_string()))?;
    options.extra_files.push((EDIT_RECORD_FILE.to_string(), pretty));
    // The model card replaces README.md; it is written after verification, below.
    options.extra_files.push(("README.md".to_string(), Vec::new()));
    if untie {
        let head = model.spec.lm_head_name();
        if !model.checkpoint.contains(&head) {
            options.added.push(AddedTensor { name: head, copy_of: model.spec.embed_name() });
        }
        let mut config = model.config.clone();
        config["tie_word_embeddings"] = serde_json::Value::Bool(false);
        if let Some(text) = config.get_mut("text_config").and_then(|t| t.as_object_mut()) {
            text.insert("tie_word_embeddings".into(), serde_json::Value::Bool(false));
        }
        options.config = Some(config);
    }
    let edit = |view: TensorRef<'_>| -> Result<TensorEdit> {
        match by_name.get(view.name) {
            Some(planned) => Ok(TensorEdit::Replace(apply_edits(view, planned, plan.options.norm_preserve)?)),
            None => Ok(TensorEdit::Keep),
        }
    };
    let (staged, mut write) = stage_checkpoint(model, out, &options, progress, &edit)?;
    let missing: Vec<&str> =
        plan.edits.iter().map(|e| e.tensor.as_str()).filter(|t| !write.edited.iter().any(|w| w == t)).collect();
    if !missing.is_empty() {
        return Err(Error::Other(format!("planned edits were not applied to: {}", missing.join(", "))));
    }
    let verification = if check {
        let written = ModelDir::open(staged.path())?;
        let report = verify_with_original(&written, plan, Some(model))?;
        if !report.all_pass() {
            let bad: Vec<String> = report
                .rows
                .iter()
                .filter(|r| !r.pass)
                .map(|r| {
                    let slice = r.slice.map(|e| format!("[{e}]")).unwrap_or_default();
                    format!("{}{slice} ({:.2e} > {:.1e})", r.tensor, r.ratio, r.threshold)
                })
                .collect();
            return Err(Error::Other(format!(
                "verification of the written files failed, nothing was written: {}",
                bad.join(", ")
            )));
        }
        Some(report)
    } else {
        None
    };
    let original_card = std::fs::read_to_string(model.root.join("README.md")).ok();
    let card = super::card::model_card(record, verification.as_ref(), &[], original_card.as_deref());
    let card_path = staged.path().join("README.md");
    std::fs::write(&card_path, card).map_err(|e| Error::io(&card_path, e))?;
    write.out = staged.commit()?;
    Ok(AblateReport { write, untied: untie, verification })
}

/// Edit one tensor's bytes: decode to f32, apply every edit planned for it (one per slice of a
/// stacked experts tensor, else one), round once to the stored dtype.
pub(crate) fn apply_edits(view: TensorRef<'_>, edits: &[&PlannedEdit], norm_preserve: bool) -> Result<Vec<u8>> {
    let dtype = EditableDtype::of(view.dtype, view.name)?;
    let mut values = view.to_f32()?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::bad_tensor(
            view.name,
            format!("holds {bad} non-finite values (NaN or infinity); the source model is broken, nothing was written"),
        ));
    }
    for edit in edits {
        let (part, cols) = edited_part(&mut values, view.shape, edit)?;
        edit_values(part, cols, edit, norm_preserve);
    }
    Ok(encode_f32(dtype, &values))
}

/// The values an edit changes (slice `e` of a stacked `[experts, hidden, in]` tensor, else all
/// of them) and their column count (0 for a row edit).
pub(crate) fn edited_part<'a>(
    values: &'a mut [f32],
    shape: &[usize],
    edit: &PlannedEdit,
) -> Result<(&'a mut [f32], usize)> {
    let bad = |message: String| Error::bad_tensor(&edit.tensor, message);
    match (edit.slice, edit.layout, shape) {
        (None, Layout::Rows, _) => Ok((values, 0)),
        (None, Layout::Columns, [_, cols]) => Ok((values, *cols)),
        (Some(e), Layout::Columns, [experts, rows, cols]) if e < *experts => {
            let size = rows * cols;
            Ok((&mut values[e * size..(e + 1) * size], *cols))
        }
        (Some(e), _, shape) => {
            Err(bad(format!("slice {e} of a tensor of shape {shape:?}: expected [experts, hidden, in]")))
        }
        (None, _, shape) => Err(bad(format!("shape {shape:?}: expected a matrix"))),
    }
}

/// Apply one planned edit to a tensor's values in f32 (`cols`: the width of a column-layout
/// writer `[hidden, cols]`; ignored for rows). The one place where a plan meets the numbers,
/// shared by the written checkpoint and the in-memory edit of a running model.
pub fn edit_values(values: &mut [f32], cols: usize, edit: &PlannedEdit, norm_preserve: bool) {
    match edit.layout {
        Layout::Columns => edit_columns(values, cols, &edit.basis, edit.strength, norm_preserve),
        Layout::Rows => edit_rows(values, &edit.basis, edit.strength, norm_preserve),
    }
}
