//! Bar charts of bytes per day (pure): the coordinates and labels an SVG template draws.

use serde::Serialize;

use super::model::human_bytes;

/// The drawing's own units (the SVG scales to the page's width through its viewBox).
// Narrow on purpose: on a 390 px phone the drawing shrinks to ~0.75, its 13-unit text stays legible.
pub const WIDTH: f64 = 480.0;
pub const HEIGHT: f64 = 220.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 46.0;

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub width: String,
    pub height: String,
    /// The plot area's corners.
    pub x0: String,
    pub x1: String,
    pub y0: String,
    pub y1: String,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub x_label: String,
    pub y_label: String,
    /// Where the rotated y-axis label sits.
    pub y_label_x: String,
    pub y_label_y: String,
    pub x_label_x: String,
    pub x_label_y: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    /// Shown on hover: `2026-12-07: 1.50 GiB`.
    pub tip: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// The tick's position along its axis.
    pub at: String,
    pub label: String,
    /// SVG `text-anchor`: the end dates align with the plot's edges so they are never cut off.
    pub anchor: &'static str,
}

fn n(v: f64) -> String {
    format!("{v:.1}")
}

/// The top of the y axis and its step: a round number of a binary unit (1, 2 or 5 times a
/// power of ten of B, KiB, MiB...), at most four steps up to the top, the top at or above `max`.
pub fn y_scale(max: u64) -> (u64, u64) {
    let max = max.max(1);
    let mut unit: u64 = 1;
    while max / unit >= 1024 && unit < (1 << 50) {
        unit <<= 10;
    }
    for mult in [1u64, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000] {
        let step = unit.saturating_mul(mult);
        if max.div_ceil(step) <= 4 {
            return (step * max.div_ceil(step), step);
        }
    }
    let step = unit << 10;
    (step * max.div_ceil(step), step)
}

/// A chart of one value per day (`(date, bytes)`, oldest first, every day of the window).
pub fn bytes_per_day(title: &str, days: &[(String, u64)]) -> Chart {
    let max = days.iter().map(|(_, b)| *b).max().unwrap_or(0);
    let (top, step) = y_scale(max);
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
    let plot_h = y0 - y1;
    let slot = (x1 - x0) / days.len().max(1) as f64;
    let gap = if slot > 4.0 { slot * 0.15 } else { 0.0 };
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, (date, b))| {
            let h = *b as f64 / top as f64 * plot_h;
            Bar {
                x: n(x0 + i as f64 * slot + gap / 2.0),
                y: n(y0 - h),
                w: n(slot - gap),
                h: n(h),
                tip: format!("{date}: {}", human_bytes(*b)),
            }
        })
        .collect();
    let y_ticks = (0..=top / step)
        .map(|k| Tick { at: n(y0 - (k * step) as f64 / top as f64 * plot_h), label: human_bytes(k * step), anchor: "end" })
        .collect();
    // First, middle and last day: enough to read dates without crowding a phone's width.
    let mut picks = vec![0, days.len().saturating_sub(1) / 2, days.len().saturating_sub(1)];
    picks.dedup();
    let x_ticks = if days.is_empty() {
        Vec::new()
    } else {
        let last = days.len() - 1;
        picks
            .into_iter()
            .map(|i| {
                let (at, anchor) = match i {
                    0 if last > 0 => (x0, "start"),
                    i if i == last && last > 0 => (x1, "end"),
                    _ => (x0 + (i as f64 + 0.5) * slot, "middle"),
                };
                Tick { at: n(at), label: days[i].0.clone(), anchor }
            })
            .collect()
    };
    Chart {
        title: title.to_string(),
        width: n(WIDTH),
        height: n(HEIGHT),
        x0: n(x0),
        x1: n(x1),
        y0: n(y0),
        y1: n(y1),
        bars,
        y_ticks,
        x_ticks,
        x_label: "day (UTC)".into(),
        y_label: "bytes served per day".into(),
        y_label_x: n(13.0),
        y_label_y: n((y0 + y1) / 2.0),
        x_label_x: n((x0 + x1) / 2.0),
        x_label_y: n(HEIGHT - 4.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn y_axis_tops_at_a_round_binary_figure_above_the_maximum() {
        assert_eq!(y_scale(0), (1, 1));
        assert_eq!(y_scale(3), (3, 1));
        assert_eq!(y_scale(900), (1000, 500));
        assert_eq!(y_scale(3 << 30), (3 << 30, 1 << 30), "3 GiB: steps of 1 GiB");
        assert_eq!(y_scale((3 << 30) + 1), (4 << 30, 1 << 30));
        assert_eq!(y_scale(7 << 30), (8 << 30, 2 << 30));
        assert_eq!(y_scale(1500 << 20), (2 << 30, 1 << 30), "1500 MiB reads in GiB");
        for max in [1u64, 17, 1023, 1024, 99_999, 5 << 40, u64::MAX / 4] {
            let (top, step) = y_scale(max);
            assert!(top >= max && top / step <= 4 && top.is_multiple_of(step), "{max}: {top} {step}");
        }
    }

    #[test]
    fn bars_scale_to_the_top_and_ticks_are_labelled_in_units() {
        let days: Vec<(String, u64)> = vec![("2026-12-05".into(), 0), ("2026-12-06".into(), 1 << 30), ("2026-12-07".into(), 2 << 30)];
        let c = bytes_per_day("arch", &days);
        let h: Vec<f64> = c.bars.iter().map(|b| b.h.parse().unwrap()).collect();
        let plot = HEIGHT - BOTTOM - TOP;
        assert_eq!(h, [0.0, (plot / 2.0 * 10.0).round() / 10.0, plot]);
        // The tallest bar starts at the plot's top.
        assert_eq!(c.bars[2].y, c.y1);
        assert_eq!(c.y_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["0 B", "1.00 GiB", "2.00 GiB"]);
        assert_eq!(c.x_ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(), ["2026-12-05", "2026-12-06", "2026-12-07"]);
        assert_eq!(c.bars[1].tip, "2026-12-06: 1.00 GiB");
        assert!(!c.x_label.is_empty() && !c.y_label.is_empty());
        let one = bytes_per_day("x", &days[..1]);
        assert_eq!(one.x_ticks.len(), 1, "one day: one date");
    }
}
