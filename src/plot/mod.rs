//! Charts as PNG and SVG (plotters), with an embedded font so no system fonts are needed.

mod heatmap;
mod line;

pub use heatmap::{save_heatmap, Heatmap};
pub use line::{save_line_chart, LineChart, Series};

use crate::{Error, Result};
use std::sync::Once;

static FONT: Once = Once::new();

/// Register the embedded DejaVu Sans as plotters' `sans-serif` (once per process).
pub(crate) fn ensure_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        for style in [plotters::style::FontStyle::Normal, plotters::style::FontStyle::Bold] {
            // The font is compiled in and known to parse.
            let _ = plotters::style::register_font("sans-serif", style, bytes);
        }
    });
}

/// Turn a plotters error into ours, naming the file.
pub(crate) fn plot_error(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{}: drawing failed: {e}", path.display()))
}

/// The PNG and SVG paths of a chart saved at `stem`.
pub(crate) fn outputs(stem: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (stem.with_extension("png"), stem.with_extension("svg"))
}

/// The file names (without their folder) of the charts a `save_*` call wrote, for a report's
/// list of its files.
pub fn file_names(paths: Vec<std::path::PathBuf>) -> impl Iterator<Item = String> {
    paths.into_iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Result alias for drawing code.
pub(crate) type DrawResult = Result<()>;
