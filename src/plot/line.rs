//! Line charts: several named series over a shared x axis.

use super::{ensure_font, outputs, plot_error, DrawResult};
use crate::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// One named curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points `(x, y)`; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw the points only (a scatter), not the line through them.
    pub points_only: bool,
}

/// A line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Plot log10(y) (for quantities spanning decades, like variances).
    pub log_y: bool,
    /// The curves.
    pub series: Vec<Series>,
    /// Optional vertical marker (e.g. the chosen layer) with its label.
    pub marker: Option<(f64, String)>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Save `chart` as `stem.png` and `stem.svg`; returns both paths.
pub fn save_line_chart(stem: &Path, chart: &LineChart) -> Result<Vec<PathBuf>> {
    ensure_font();
    let (png, svg) = outputs(stem);
    draw(BitMapBackend::new(&png, (900, 560)).into_drawing_area(), chart, &png)?;
    draw(SVGBackend::new(&svg, (900, 560)).into_drawing_area(), chart, &svg)?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &LineChart, path: &Path) -> DrawResult {
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let transform = |y: f64| {
        if chart.log_y {
            if y > 0.0 {
                y.log10()
            } else {
                f64::NAN
            }
        } else {
            y
        }
    };
    let series: Vec<Series> = chart
        .series
        .iter()
        .map(|s| {
            let pts = s.points.iter().map(|&(x, y)| (x, transform(y))).filter(|(x, y)| x.is_finite() && y.is_finite());
            Series { name: s.name.clone(), points: pts.collect(), points_only: s.points_only }
        })
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0).abs() * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let y_label = if chart.log_y { format!("log10 {}", chart.y_label) } else { chart.y_label.clone() };
    let mut ctx = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    if let Some((x, label)) = &chart.marker {
        let red = RGBColor(200, 30, 30);
        ctx.draw_series(std::iter::once(PathElement::new(vec![(*x, y0), (*x, y1)], red.stroke_width(2))))
            .map_err(|e| err(&e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], red.stroke_width(2)));
    }
    for (i, Series { name, points_only, points }) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if *points_only {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
        } else {
            ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled()))).map_err(|e| err(&e))?;
        }
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
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
        let chart = LineChart {
            title: "cosine of means".into(),
            x_label: "layer".into(),
            y_label: "cos".into(),
            log_y: true,
            series: vec![
                Series {
                    name: "resid_pre".into(),
                    points: (0..10).map(|i| (i as f64, 1.0 + i as f64)).collect(),
                    points_only: false,
                },
                Series { name: "empty".into(), points: vec![(1.0, f64::NAN)], points_only: false },
                Series { name: "scatter".into(), points: vec![(2.0, 3.0), (5.0, 1.5)], points_only: true },
            ],
            marker: Some((4.0, "chosen".into())),
        };
        let files = save_line_chart(&tmp.path().join("c"), &chart).unwrap();
        let png = std::fs::read(&files[0]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 5000);
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains("cosine of means") && svg.contains("resid_pre"));
    }
}
