//! Heatmaps of a matrix with row and column labels and a colour scale.

use super::{ensure_font, outputs, plot_error, DrawResult};
use crate::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use std::path::{Path, PathBuf};

/// A heatmap.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// Row-major values, `rows × cols`.
    pub values: Vec<Vec<f64>>,
    /// Axis label for rows (y).
    pub row_label: String,
    /// Axis label for columns (x).
    pub col_label: String,
    /// Colour scale range (low, high).
    pub range: (f64, f64),
}

/// Save `map` as `stem.png` and `stem.svg`.
pub fn save_heatmap(stem: &Path, map: &Heatmap) -> Result<Vec<PathBuf>> {
    ensure_font();
    let (png, svg) = outputs(stem);
    draw(BitMapBackend::new(&png, (760, 680)).into_drawing_area(), map, &png)?;
    draw(SVGBackend::new(&svg, (760, 680)).into_drawing_area(), map, &svg)?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, map: &Heatmap, path: &Path) -> DrawResult {
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (main, legend) = root.split_horizontally(640);
    let rows = map.values.len();
    let cols = map.values.first().map_or(0, Vec::len);
    let mut ctx = ChartBuilder::on(&main)
        .caption(&map.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0..cols.max(1), 0..rows.max(1))
        .map_err(|e| err(&e))?;
    ctx.configure_mesh()
        .disable_mesh()
        .x_desc(&map.col_label)
        .y_desc(&map.row_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    let (lo, hi) = map.range;
    ctx.draw_series(map.values.iter().enumerate().flat_map(|(r, row)| {
        row.iter().enumerate().map(move |(c, &v)| {
            let color = ViridisRGB.get_color_normalized(v.clamp(lo, hi) as f32, lo as f32, hi as f32);
            Rectangle::new([(c, r), (c + 1, r + 1)], color.filled())
        })
    }))
    .map_err(|e| err(&e))?;
    // Colour scale.
    let mut scale = ChartBuilder::on(&legend)
        .margin_top(40)
        .margin_bottom(52)
        .margin_right(40)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(|e| err(&e))?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| err(&e))?;
    let steps = 100;
    scale
        .draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                ViridisRGB.get_color_normalized(a as f32, lo as f32, hi as f32).filled(),
            )
        }))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg() {
        let tmp = tempfile::tempdir().unwrap();
        let map = Heatmap {
            title: "sharing".into(),
            values: (0..5).map(|r| (0..5).map(|c| if r == c { 1.0 } else { 0.1 }).collect()).collect(),
            row_label: "layer".into(),
            col_label: "layer".into(),
            range: (0.0, 1.0),
        };
        let files = save_heatmap(&tmp.path().join("h"), &map).unwrap();
        assert_eq!(&std::fs::read(&files[0]).unwrap()[..4], b"\x89PNG");
        assert!(std::fs::read_to_string(&files[1]).unwrap().contains("sharing"));
    }
}
