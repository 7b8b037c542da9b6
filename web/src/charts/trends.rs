//! Event trends: events per minute per type, and revenue, over the last windows.

use plotters::prelude::*;

use super::{clock, per_window, waiting, ChartError, FONT, NO_LINE, REVENUE_COLOUR, STEP_COLOURS};
use crate::views::TrendWindow;

/// Lines of events per window for each type (left axis) and revenue per window (dashed,
/// right axis), oldest window on the left; a red marker at the start of every alert in
/// `alerts_opened` (window starts, Unix ms) that falls inside the chart.
pub fn trends_chart(windows: &[TrendWindow], alerts_opened: &[i64]) -> Result<String, ChartError> {
    let mut svg = String::new();
    draw(&mut svg, windows, alerts_opened).map_err(ChartError::of("trends"))?;
    Ok(svg)
}

/// Reads one event type's count off a window.
type Count = fn(&TrendWindow) -> i64;

fn draw(svg: &mut String, windows: &[TrendWindow], alerts_opened: &[i64]) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (820, 340)).into_drawing_area();
    let title = "Event trends: events and revenue per window";
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return waiting(&root, title, "waiting for events");
    };
    let length = first.window_end - first.window_start;
    let x_range = first.window_start..last.window_start.max(first.window_start + length);
    // Head room above the lines for the legend.
    let counts_top = windows
        .iter()
        .map(|w| w.click.max(w.add_to_cart).max(w.purchase))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.6;
    let revenue_top = windows.iter().map(|w| w.revenue).fold(1.0f64, f64::max) * 1.6;
    let per = per_window(length);

    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 18).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), 0.0..counts_top)
        .map_err(|e| e.to_string())?
        .set_secondary_coord(x_range, 0.0..revenue_top);
    chart
        .configure_mesh()
        // One label per window while there are few, so that labels never repeat.
        .x_labels(windows.len().clamp(2, 8))
        .x_label_formatter(&|ms| clock(*ms, length < 60_000))
        .x_desc("window start (UTC); the newest window is still filling")
        .y_desc(format!("events per {per}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .light_line_style(NO_LINE)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .configure_secondary_axes()
        .y_desc(format!("revenue per {per}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;

    let series: [(&str, Count); 3] = [
        ("click", |w| w.click),
        ("add_to_cart", |w| w.add_to_cart),
        ("purchase", |w| w.purchase),
    ];
    for (index, (name, value)) in series.into_iter().enumerate() {
        let colour = STEP_COLOURS[index];
        chart
            .draw_series(LineSeries::new(
                windows.iter().map(|w| (w.window_start, value(w) as f64)),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    chart
        .draw_secondary_series(DashedLineSeries::new(
            windows.iter().map(|w| (w.window_start, w.revenue)),
            6,
            4,
            REVENUE_COLOUR.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label("revenue (right axis)")
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], REVENUE_COLOUR.stroke_width(2))
        });
    let markers: Vec<i64> = alerts_opened
        .iter()
        .copied()
        .filter(|at| (first.window_start..=last.window_start).contains(at))
        .collect();
    if !markers.is_empty() {
        let alert_colour = RGBColor(200, 30, 30);
        chart
            .draw_series(markers.iter().map(|&at| {
                PathElement::new(
                    vec![(at, 0.0), (at, counts_top / 1.6)],
                    alert_colour.stroke_width(2),
                )
            }))
            .map_err(|e| e.to_string())?
            .label("alert opened")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], alert_colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
