//! Inline SVG charts with a fixed-width `viewBox`: the browser scales them
//! to the page, and every label is fitted (cut with `…`, the full text in a
//! `<title>` tooltip) so that nothing overflows the chart at any width.
//!
//! Each chart is drawn twice, for a wide and for a narrow frame, and the
//! page's style shows the one that suits the screen: a 720-unit chart
//! scaled down to a phone's 350 px would draw its 12-unit labels at 6 px,
//! the 330-unit one draws them at 10 px or more from 320 px up.

use std::fmt::Write;

use crate::format::{NOT_A_NUMBER, grouped};
use crate::text::{escape, fit, one_line, text_width};
use crate::{BarChart, LineChart};

/// The `viewBox` a chart is drawn for, and how much of it labels may take.
pub(crate) struct Frame {
    /// The `class` of the `<svg>`, which the page's style shows or hides.
    class: &'static str,
    width: f64,
    /// At most this much of a bar chart's width goes to the bar labels.
    max_label_width: f64,
    /// At most this much goes to the value written next to a bar.
    max_value_width: f64,
    /// Longer x labels are cut, so that long ones still leave room for a few.
    max_x_label_width: f64,
}

/// Screens 640 px wide and more (the page's style says where it switches).
pub(crate) const WIDE: Frame = Frame {
    class: "wide",
    width: 720.0,
    max_label_width: 220.0,
    max_value_width: 150.0,
    max_x_label_width: 160.0,
};

/// Phones.
pub(crate) const NARROW: Frame = Frame {
    class: "narrow",
    width: 330.0,
    max_label_width: 120.0,
    max_value_width: 100.0,
    max_x_label_width: 100.0,
};

/// Font size of chart labels, in `viewBox` units.
const FONT: f64 = 12.0;
/// What bold labels are estimated at: bold glyphs are about a tenth wider.
const BOLD_FONT: f64 = FONT * 1.1;
const PAD: f64 = 8.0;

const ROW_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 18.0;

const LINE_HEIGHT: f64 = 300.0;
/// Above this many points a line chart marks only its minimum and maximum.
const MAX_MARKED_POINTS: usize = 60;

/// What an empty chart shows instead.
pub(crate) const NO_ROWS: &str = "<p class=\"empty\">no rows</p>\n";

/// A coordinate, short: `12.5`, `300`.
fn n(x: f64) -> String {
    let text = format!("{x:.1}");
    match text.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => text,
    }
}

fn svg_open(out: &mut String, frame: &Frame, height: f64, title: &str) {
    let title = escape(title);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"{title}\">\n<title>{title}</title>\n",
        frame.class,
        n(frame.width),
        n(height)
    );
}

/// A `<text>` fitted into `max_px`; the full text goes into a `<title>`
/// when it had to be cut.
fn label(out: &mut String, x: f64, y: f64, anchor: &str, class: &str, text: &str, max_px: f64) {
    let text = one_line(text);
    let (shown, cut) = fit(&text, max_px, FONT);
    write_text(out, x, y, anchor, class, &text, &shown, cut);
}

/// A label fitted into `max_px` and centred on `x`, moved inwards as far as
/// needed to stay between `from` and `to`.
#[allow(clippy::too_many_arguments)]
fn centred_label(
    out: &mut String,
    x: f64,
    y: f64,
    class: &str,
    text: &str,
    max_px: f64,
    (from, to): (f64, f64),
    font_px: f64,
) {
    let text = one_line(text);
    let (shown, cut) = fit(&text, max_px, font_px);
    let half = text_width(&shown, font_px) / 2.0;
    let x = x.min(to - half).max(from + half);
    write_text(out, x, y, "middle", class, &text, &shown, cut);
}

#[allow(clippy::too_many_arguments)]
fn write_text(
    out: &mut String,
    x: f64,
    y: f64,
    anchor: &str,
    class: &str,
    full: &str,
    shown: &str,
    cut: bool,
) {
    let _ = write!(
        out,
        "<text class=\"{class}\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">",
        n(x),
        n(y)
    );
    if cut {
        let _ = write!(out, "<title>{}</title>", escape(full));
    }
    let _ = writeln!(out, "{}</text>", escape(shown));
}

/// Horizontal bars in the order given, with a zero line; negative values
/// extend left of it. Both frames.
pub(crate) fn bar_chart(chart: &BarChart, title: &str) -> String {
    if chart.bars.is_empty() {
        return NO_ROWS.to_string();
    }
    bar_chart_in(chart, title, &WIDE) + &bar_chart_in(chart, title, &NARROW)
}

fn bar_chart_in(chart: &BarChart, title: &str, frame: &Frame) -> String {
    let finite: Vec<f64> = chart
        .bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .collect();
    let decimals = chart.format.decimals_for(&finite);
    let values: Vec<String> = chart
        .bars
        .iter()
        .map(|b| chart.format.format_with(b.value, decimals))
        .collect();
    // The scale always includes zero, so a bar's length is its value.
    let lo = finite.iter().copied().fold(0.0, f64::min);
    let hi = finite.iter().copied().fold(0.0, f64::max);

    let widest = |texts: &mut dyn Iterator<Item = &str>| {
        texts
            .map(|t| text_width(&one_line(t), FONT))
            .fold(0.0, f64::max)
    };
    let label_width = widest(&mut chart.bars.iter().map(|b| b.label.as_str()))
        .clamp(40.0, frame.max_label_width)
        + 2.0 * PAD;
    let value_width = widest(&mut values.iter().map(String::as_str))
        .clamp(24.0, frame.max_value_width)
        + 2.0 * PAD;
    // Values are written past the tip of each bar: room for them on the
    // right, and on the left too when some bars point left.
    let plot_left = label_width + if lo < 0.0 { value_width } else { 0.0 };
    let plot_right = frame.width - value_width;
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x_of = |v: f64| plot_left + (v - lo) / span * (plot_right - plot_left);
    let zero = x_of(0.0);

    let top = PAD;
    let height = top + chart.bars.len() as f64 * ROW_HEIGHT + PAD;
    let mut out = String::new();
    svg_open(&mut out, frame, height, title);
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>",
        n(zero),
        n(top - 2.0),
        n(height - PAD + 2.0)
    );
    for (i, (bar, value)) in chart.bars.iter().zip(&values).enumerate() {
        let row = top + i as f64 * ROW_HEIGHT;
        let baseline = row + ROW_HEIGHT / 2.0 + FONT * 0.35;
        label(
            &mut out,
            label_width - PAD,
            baseline,
            "end",
            "lbl",
            &bar.label,
            label_width - 2.0 * PAD,
        );
        if !bar.value.is_finite() {
            label(
                &mut out,
                zero + PAD / 2.0,
                baseline,
                "start",
                "val",
                NOT_A_NUMBER,
                value_width,
            );
            continue;
        }
        let tip = x_of(bar.value);
        let negative = bar.value < 0.0;
        let _ = writeln!(
            out,
            "<rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}: {}</title></rect>",
            if negative { "bar neg" } else { "bar" },
            n(tip.min(zero)),
            n(row + (ROW_HEIGHT - BAR_HEIGHT) / 2.0),
            n((tip - zero).abs()),
            n(BAR_HEIGHT),
            escape(&one_line(&bar.label)),
            escape(value)
        );
        let (x, anchor) = if negative {
            (tip - PAD / 2.0, "end")
        } else {
            (tip + PAD / 2.0, "start")
        };
        label(
            &mut out,
            x,
            baseline,
            anchor,
            "val",
            value,
            value_width - PAD,
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Round tick values covering `lo..=hi`: steps of 1, 2 or 5 times a power
/// of ten, about five of them.
fn ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let rough = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let count = ((last - first) / step).round();
    // Ranges at the edge of f64's precision (subnormal spans, values near
    // 1e300) give no usable step: fall back to the range's two ends.
    if !(step.is_finite() && step > 0.0 && count.is_finite() && (1.0..=20.0).contains(&count)) {
        return (vec![lo, hi], hi - lo);
    }
    let count = count as usize;
    ((0..=count).map(|i| first + i as f64 * step).collect(), step)
}

/// The value range a line chart's axis covers: the data's, widened when it
/// is a single value so that the line sits in the middle.
fn value_range(min: f64, max: f64) -> (f64, f64) {
    if max > min {
        (min, max)
    } else if min == 0.0 {
        (-1.0, 1.0)
    } else {
        let half = min.abs() * 0.1;
        (min - half, max + half)
    }
}

/// A line through the points in the order given, with y ticks, the x
/// labels that fit, and the minimum and maximum marked. Both frames.
pub(crate) fn line_chart(chart: &LineChart, title: &str) -> String {
    if !chart.points.iter().any(|p| p.y.is_finite()) {
        return NO_ROWS.to_string();
    }
    line_chart_in(chart, title, &WIDE) + &line_chart_in(chart, title, &NARROW)
}

fn line_chart_in(chart: &LineChart, title: &str, frame: &Frame) -> String {
    let width = frame.width;
    let finite: Vec<(usize, f64)> = chart
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.y))
        .filter(|(_, y)| y.is_finite())
        .collect();
    if finite.is_empty() {
        return NO_ROWS.to_string();
    }
    let decimals = chart
        .format
        .decimals_for(&finite.iter().map(|(_, y)| *y).collect::<Vec<_>>());
    let (min_at, min) = finite
        .iter()
        .copied()
        .fold(finite[0], |a, b| if b.1 < a.1 { b } else { a });
    let (max_at, max) = finite
        .iter()
        .copied()
        .fold(finite[0], |a, b| if b.1 > a.1 { b } else { a });
    let (lo, hi) = value_range(min, max);
    let (ticks, step) = ticks(lo, hi);
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    // Enough decimals to tell neighbouring ticks apart.
    let tick_decimals = (-step.log10().floor()).clamp(0.0, 10.0) as usize;
    let tick_texts: Vec<String> = ticks.iter().map(|t| grouped(*t, tick_decimals)).collect();

    let left = tick_texts
        .iter()
        .map(|t| text_width(t, FONT))
        .fold(0.0, f64::max)
        + 2.0 * PAD;
    let right = width - 3.0 * PAD;
    let top = 3.0 * PAD;
    let bottom = LINE_HEIGHT - 4.0 * PAD;
    let count = chart.points.len();
    let x_of = |i: usize| {
        if count == 1 {
            (left + right) / 2.0
        } else {
            left + i as f64 / (count - 1) as f64 * (right - left)
        }
    };
    let y_of = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);

    let mut out = String::new();
    svg_open(&mut out, frame, LINE_HEIGHT, title);
    for (tick, text) in ticks.iter().zip(&tick_texts) {
        let y = y_of(*tick);
        let class = if *tick == 0.0 { "axis" } else { "grid" };
        let _ = writeln!(
            out,
            "<line class=\"{class}\" x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\"/>",
            n(left),
            n(y),
            n(right)
        );
        label(
            &mut out,
            left - PAD,
            y + FONT * 0.35,
            "end",
            "tick",
            text,
            left,
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\"/>",
        n(left),
        n(bottom),
        n(right)
    );

    // X labels: as many as fit side by side, evenly spread, always the
    // first and the last. Each is centred on its point; the first and last
    // may have to move inwards to stay inside the chart, so the spacing
    // leaves room for that move.
    let widest = chart
        .points
        .iter()
        .map(|p| text_width(&one_line(&p.x), FONT))
        .fold(0.0, f64::max)
        .clamp(FONT, frame.max_x_label_width);
    let edge_move = (widest / 2.0 + PAD / 2.0 - left.min(width - right)).max(0.0);
    let spacing = widest + 2.0 * PAD + edge_move;
    let fits = ((right - left) / spacing).floor() as usize + 1;
    let shown = count.min(fits.max(2));
    let mut labelled: Vec<usize> = if shown == 1 {
        vec![0]
    } else {
        (0..shown)
            .map(|j| ((j * (count - 1)) as f64 / (shown - 1) as f64).round() as usize)
            .collect()
    };
    labelled.dedup();
    let room = if count == 1 {
        width - 2.0 * PAD
    } else {
        widest
    };
    for &i in &labelled {
        let x = x_of(i);
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>",
            n(x),
            n(bottom),
            n(bottom + 4.0)
        );
        centred_label(
            &mut out,
            x,
            bottom + 4.0 + FONT + 2.0,
            "tick",
            &chart.points[i].x,
            room,
            (PAD, width - PAD),
            FONT,
        );
    }

    // The line, broken where a value is missing (not a finite number).
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, out: &mut String| {
        if run.len() > 1 {
            let _ = writeln!(
                out,
                "<polyline class=\"line\" points=\"{}\"/>",
                run.join(" ")
            );
        }
        run.clear();
    };
    for (i, point) in chart.points.iter().enumerate() {
        if point.y.is_finite() {
            run.push(format!("{},{}", n(x_of(i)), n(y_of(point.y))));
        } else {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);

    let value_text = |y: f64| chart.format.format_with(y, decimals);
    for &(i, y) in &finite {
        let extreme = i == min_at || i == max_at;
        if !extreme && finite.len() > MAX_MARKED_POINTS {
            continue;
        }
        let _ = writeln!(
            out,
            "<circle class=\"{}\" cx=\"{}\" cy=\"{}\" r=\"{}\"><title>{}: {}</title></circle>",
            if extreme { "dot extreme" } else { "dot" },
            n(x_of(i)),
            n(y_of(y)),
            if extreme { 4 } else { 3 },
            escape(&one_line(&chart.points[i].x)),
            escape(&value_text(y))
        );
    }
    // Min and max labels next to their points, kept inside the plot.
    let extremes = if min_at == max_at {
        vec![(max_at, max, "")]
    } else {
        vec![(max_at, max, "max "), (min_at, min, "min ")]
    };
    for (i, y, name) in extremes {
        let text = format!("{name}{}", value_text(y));
        let py = y_of(y);
        // Max above its point; min below, unless that runs into the axis.
        let ty = if name == "min " && py + 6.0 + FONT < bottom {
            py + 6.0 + FONT
        } else {
            py - 8.0
        };
        // Inside the plot, clear of the y tick labels; bold is wider.
        centred_label(
            &mut out,
            x_of(i),
            ty,
            "extreme",
            &text,
            right - left,
            (left, width - PAD),
            BOLD_FONT,
        );
    }
    out.push_str("</svg>\n");
    out
}
