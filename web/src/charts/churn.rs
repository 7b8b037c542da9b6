//! Churn risk: how the open sessions' churn probabilities spread.

use plotters::prelude::*;

use super::{waiting, ChartError, FONT, NO_LINE};
use crate::views::ChurnSummary;

/// A histogram of open sessions per churn-probability bin, green (likely to buy) to red
/// (likely to leave).
pub fn churn_chart(summary: &ChurnSummary) -> Result<String, ChartError> {
    let mut svg = String::new();
    draw(&mut svg, summary).map_err(ChartError::of("churn"))?;
    Ok(svg)
}

fn draw(svg: &mut String, summary: &ChurnSummary) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (620, 340)).into_drawing_area();
    let title = format!("Churn risk of {} open sessions", summary.scored);
    if summary.scored == 0 {
        let message = if summary.open_sessions == 0 {
            "waiting for open sessions"
        } else {
            "no scores: the pipeline runs without a churn model"
        };
        return waiting(&root, &title, message);
    }
    let bins = summary.bins.len().max(1);
    let width = 1.0 / bins as f64;
    let top = summary.bins.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.15;

    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(NO_LINE)
        .x_labels(11)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .x_desc("churn probability")
        .y_desc("open sessions")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    let bars = summary.bins.iter().enumerate().map(|(bin, count)| {
        let x = bin as f64 * width;
        let risk = x + width / 2.0;
        let colour = RGBColor(
            (60.0 + 180.0 * risk) as u8,
            (170.0 - 120.0 * risk) as u8,
            70,
        );
        Rectangle::new(
            [(x + width * 0.06, 0.0), (x + width * 0.94, *count as f64)],
            colour.filled(),
        )
    });
    chart.draw_series(bars).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
