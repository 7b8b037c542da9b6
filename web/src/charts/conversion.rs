//! The ordered funnel: sessions that went click → add_to_cart → purchase in that order.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{clock, waiting, ChartError, FONT, NO_LINE, STEP_COLOURS};
use crate::views::ConversionWindow;

const STEPS: [&str; 3] = ["viewed", "then carted", "then bought"];

/// Bars of sessions per ordered step, summed over the last `windows` complete windows of
/// session start (each session belongs to one window, so sessions add up), with the
/// step-to-step conversion and the median time from the previous step above them.
pub fn conversion_chart(
    complete: &[ConversionWindow],
    windows: usize,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    draw(&mut svg, complete, windows).map_err(ChartError::of("conversion"))?;
    Ok(svg)
}

/// `(sessions, median seconds from the previous step)` per step over `recent`; the median
/// is the sessions-weighted mean of the windows' medians (a label, not a statistic).
fn totals(recent: &[ConversionWindow]) -> [(f64, Option<f64>); 3] {
    let mut totals = [(0.0, None); 3];
    for (step, total) in totals.iter_mut().enumerate() {
        let mut weighted = (0.0, 0.0);
        for window in recent {
            if let Some(s) = window.steps.get(step) {
                total.0 += s.sessions as f64;
                if let Some(median) = s.median_time_from_previous_s {
                    weighted.0 += median * s.sessions as f64;
                    weighted.1 += s.sessions as f64;
                }
            }
        }
        total.1 = (weighted.1 > 0.0).then(|| weighted.0 / weighted.1);
    }
    totals
}

fn draw(svg: &mut String, complete: &[ConversionWindow], windows: usize) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (620, 340)).into_drawing_area();
    let title = "Ordered funnel: sessions per step, in order";
    let (Some(first), Some(latest)) = (
        complete.get(complete.len().saturating_sub(windows)),
        complete.last(),
    ) else {
        return waiting(
            &root,
            title,
            "waiting for the first window whose sessions' conversion window has passed",
        );
    };
    let recent = &complete[complete.len().saturating_sub(windows)..];
    let totals = totals(recent);
    let top = totals[0].0.max(1.0) * 1.3;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..3.0, 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(NO_LINE)
        .x_labels(0)
        .y_desc(format!(
            "sessions started {}–{} UTC",
            clock(first.window_start, false),
            clock(latest.window_start + 60_000, false)
        ))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    for (step, name) in STEPS.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(step as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.to_string(),
            (x, y + 8),
            (FONT, 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(|e| e.to_string())?;
    }
    let bars = totals.iter().enumerate().map(|(step, (sessions, _))| {
        let x = step as f64 + 0.2;
        Rectangle::new(
            [(x, 0.0), (x + 0.6, *sessions)],
            STEP_COLOURS[step].filled(),
        )
    });
    chart.draw_series(bars).map_err(|e| e.to_string())?;
    let labels = totals.iter().enumerate().map(|(step, (sessions, median))| {
        let rate = match step {
            0 => String::new(),
            _ if totals[step - 1].0 > 0.0 => {
                format!(
                    "{:.1}% of previous, ",
                    100.0 * sessions / totals[step - 1].0
                )
            }
            _ => String::new(),
        };
        let took = median.map_or(String::new(), |s| format!("median {s:.0} s"));
        Text::new(
            format!("{sessions:.0} ({rate}{took})"),
            (step as f64 + 0.5, *sessions),
            (FONT, 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    });
    chart.draw_series(labels).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
