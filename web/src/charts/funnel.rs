//! The funnel: distinct users per step, latest complete window against the last 15 minutes.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{clock, per_window, waiting, ChartError, FONT, NO_LINE, STEP_COLOURS};
use crate::views::FunnelWindow;

const STEPS: [&str; 3] = ["viewed", "added to cart", "purchased"];

/// Bars of distinct users per step for the latest complete window (solid) and the mean of the
/// last `windows` complete windows (light), with step-to-step conversion above the bars.
///
/// Why a mean and not the distinct users of the whole 15 minutes: `funnel_summary` is exact
/// per 1-minute window, and distinct counts do not add up across windows; the mean per window
/// is exact for what it says, and so are conversion rates computed from it.
pub fn funnel_chart(complete: &[FunnelWindow], windows: usize) -> Result<String, ChartError> {
    let mut svg = String::new();
    draw(&mut svg, complete, windows).map_err(ChartError::of("funnel"))?;
    Ok(svg)
}

fn steps(window: &FunnelWindow) -> [f64; 3] {
    [
        window.click as f64,
        window.add_to_cart as f64,
        window.purchase as f64,
    ]
}

fn draw(svg: &mut String, complete: &[FunnelWindow], windows: usize) -> Result<(), String> {
    let root = SVGBackend::with_string(svg, (620, 340)).into_drawing_area();
    let title = "Funnel: distinct users per step";
    let Some(latest) = complete.last() else {
        return waiting(
            &root,
            title,
            "waiting for the first complete 1-minute window",
        );
    };
    let recent = &complete[complete.len().saturating_sub(windows)..];
    let mut mean = [0.0; 3];
    for window in recent {
        mean.iter_mut()
            .zip(steps(window))
            .for_each(|(m, v)| *m += v / recent.len() as f64);
    }
    let latest_steps = steps(latest);
    // Head room above the bars for the legend.
    let top = latest_steps
        .iter()
        .chain(&mean)
        .fold(1.0f64, |a, b| a.max(*b))
        * 1.5;
    let length = latest.window_end - latest.window_start;

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
        .y_desc("distinct users")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;

    // The step names under their bars (plotters' own x labels fall on round numbers).
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
    let latest_label = format!(
        "latest complete window, {}–{} UTC",
        clock(latest.window_start, length < 60_000),
        clock(latest.window_end, length < 60_000)
    );
    let mean_label = match recent.len() {
        1 => format!(
            "mean per {} (one complete window so far)",
            per_window(length)
        ),
        n => format!("mean per {}, last {n} windows", per_window(length)),
    };
    for (series, (values, label, offset)) in
        [(latest_steps, latest_label, 0.12), (mean, mean_label, 0.5)]
            .into_iter()
            .enumerate()
    {
        let bars = values.iter().enumerate().map(|(step, value)| {
            let colour = STEP_COLOURS[step].mix(if series == 0 { 1.0 } else { 0.45 });
            let x = step as f64 + offset;
            Rectangle::new([(x, 0.0), (x + 0.38, *value)], colour.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x, y - 6), (x + 14, y + 6)],
                    STEP_COLOURS[0]
                        .mix(if series == 0 { 1.0 } else { 0.45 })
                        .filled(),
                )
            });
        let numbers = values.iter().enumerate().map(|(step, value)| {
            Text::new(
                format!("{value:.0}"),
                (step as f64 + offset + 0.19, *value),
                (FONT, 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        });
        chart.draw_series(numbers).map_err(|e| e.to_string())?;
    }
    // Conversion from one step to the next, latest window (mean in brackets), just above
    // the taller of the two steps it joins.
    let conversions = (1..3).map(|step| {
        let height = latest_steps[step - 1].max(mean[step - 1]);
        let rate = |v: &[f64; 3]| {
            if v[step - 1] > 0.0 {
                format!("{:.0}%", 100.0 * v[step] / v[step - 1])
            } else {
                "–".to_string()
            }
        };
        Text::new(
            format!("→ {} ({})", rate(&latest_steps), rate(&mean)),
            (step as f64, height + top * 0.06),
            (FONT, 13)
                .into_font()
                .style(FontStyle::Bold)
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        )
    });
    chart.draw_series(conversions).map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin(8)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
