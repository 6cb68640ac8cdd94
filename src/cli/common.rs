//! Small helpers shared by the subcommands.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use scalpel::arch::WriterKind;
use scalpel::checkpoint::{resolve_model, ModelDir};
use std::path::PathBuf;

/// Resolve (local folder, cache or hub) and open a model.
pub fn open_model(model: &str) -> anyhow::Result<ModelDir> {
    let dir: PathBuf = resolve_model(model)?;
    ModelDir::open(&dir).with_context(|| format!("opening model {model}"))
}

/// A byte-count progress bar on stderr (hidden when stderr is not a terminal).
pub fn bytes_progress(message: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// Parse `embed,attn,mlp`.
pub fn parse_targets(text: &str) -> anyhow::Result<Vec<WriterKind>> {
    let mut kinds = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let kind = WriterKind::parse(part)
            .with_context(|| format!("--targets: unknown target `{part}` (choose from embed, attn, mlp)"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    anyhow::ensure!(!kinds.is_empty(), "--targets is empty (choose from embed, attn, mlp)");
    kinds.sort();
    Ok(kinds)
}

/// Human-readable byte count.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// A token callback for `generate` that prints the decoded text as it grows (decoding the whole
/// answer each time, so multi-byte characters split across tokens print correctly); it collects
/// the answer's ids in `ids`.
pub fn print_as_generated<'a>(
    encoder: &'a scalpel::prompts::PromptEncoder,
    ids: &'a mut Vec<u32>,
) -> impl FnMut(usize, u32) -> bool + 'a {
    use std::io::Write;
    let mut printed = 0usize;
    move |_, token| {
        ids.push(token);
        if let Ok(text) = encoder.decode(ids) {
            if text.len() > printed && text.is_char_boundary(printed) {
                let mut out = std::io::stdout();
                let _ = write!(out, "{}", &text[printed..]);
                let _ = out.flush();
                printed = text.len();
            }
        }
        false
    }
}
