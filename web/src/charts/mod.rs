//! The dashboard's charts, rendered by plotters into SVG strings.
//!
//! Each chart reads a snapshot of the live views (taken under the views' lock, rendered after
//! it is released). An empty view renders a chart frame that says what it is waiting for, so
//! the page never shows a broken image.

mod churn;
mod conversion;
mod funnel;
mod trends;

pub use churn::churn_chart;
pub use conversion::conversion_chart;
pub use funnel::funnel_chart;
pub use trends::trends_chart;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Why a chart could not be drawn (plotters' drawing error, as text).
#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} chart: {message}")]
pub struct ChartError {
    /// Which chart.
    pub chart: &'static str,
    /// plotters' message.
    pub message: String,
}

impl ChartError {
    fn of(chart: &'static str) -> impl Fn(String) -> ChartError {
        move |message| ChartError { chart, message }
    }
}

/// The colour of each funnel step and event type, the same on every chart.
pub(crate) const STEP_COLOURS: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
];

/// Revenue's colour.
pub(crate) const REVENUE_COLOUR: RGBColor = RGBColor(0x94, 0x67, 0xbd);

/// The font every chart uses: the browser's sans-serif.
pub(crate) const FONT: &str = "sans-serif";

/// Draws `message` in the middle of an empty chart.
fn waiting(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    message: &str,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (width, height) = root.dim_in_pixel();
    root.draw(&Text::new(
        title.to_string(),
        (width as i32 / 2, 16),
        (FONT, 18)
            .into_font()
            .style(FontStyle::Bold)
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|e| e.to_string())?;
    root.draw(&Text::new(
        message.to_string(),
        (width as i32 / 2, height as i32 / 2),
        (FONT, 15)
            .into_font()
            .color(&RGBColor(0x66, 0x66, 0x66))
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// `HH:MM` (UTC) of a Unix-ms time, `HH:MM:SS` when `with_seconds` (windows shorter than a
/// minute).
pub(crate) fn clock(ms: i64, with_seconds: bool) -> String {
    let seconds = ms.div_euclid(1000);
    let (h, m, s) = (
        seconds.div_euclid(3600).rem_euclid(24),
        seconds.div_euclid(60).rem_euclid(60),
        seconds.rem_euclid(60),
    );
    if with_seconds {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}")
    }
}

/// How a window's length reads in a label: "minute", or "10 s window".
pub(crate) fn per_window(length_ms: i64) -> String {
    if length_ms == 60_000 {
        "minute".to_string()
    } else if length_ms % 60_000 == 0 {
        format!("{} min window", length_ms / 60_000)
    } else {
        format!("{} s window", length_ms as f64 / 1000.0)
    }
}

/// No light mesh lines: the bold ones are enough to read values off.
pub(crate) const NO_LINE: RGBAColor = RGBAColor(255, 255, 255, 0.0);
