//! Reports as one self-contained HTML file: inline CSS, inline SVG charts,
//! no script and nothing fetched from the network, so the file can be
//! mailed, archived next to the data, or opened from S3 years later and
//! look the same.
//!
//! A [`Report`] is plain data (title, KPI tiles, sections of charts and
//! tables); [`to_html`] renders it. Every piece of text is escaped, so
//! values from the data (a location named `<Smith & Sons>`) cannot break
//! the page.
//!
//! [`trace`] renders a run's stored spans the same way (a page, a terminal
//! waterfall, OTLP JSON).
//!
//! ```
//! use reports::{Bar, BarChart, Report, Section, SectionBody, Tile, ValueFormat};
//!
//! let report = Report {
//!     title: "Rentals".into(),
//!     subtitle: Some("generated 2024-06-01 12:00 UTC".into()),
//!     about: vec![("Amounts in".into(), "USD".into())],
//!     tiles: vec![Tile { label: "Revenue".into(), value: reports::format_money(1234.5) }],
//!     sections: vec![Section {
//!         title: "Revenue by city".into(),
//!         note: None,
//!         body: SectionBody::Bar(BarChart {
//!             bars: vec![Bar { label: "Fresno".into(), value: 1234.5 }],
//!             format: ValueFormat::Money,
//!         }),
//!     }],
//! };
//! let html = reports::to_html(&report);
//! assert!(html.contains("1,234.50"));
//! ```

mod chart;
mod format;
mod text;
pub mod trace;

#[cfg(test)]
mod tests;

use std::fmt::Write;

pub use format::{
    NOT_A_NUMBER, ValueFormat, format_count, format_hours, format_money, format_number,
    format_percent, grouped,
};
pub use text::escape;

/// A whole report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub title: String,
    /// One line under the title, such as when and from which run the
    /// report was generated.
    pub subtitle: Option<String>,
    /// What the report was made from, as label and value (the run's
    /// inputs and parameters, the currency): a small table under the
    /// subtitle.
    pub about: Vec<(String, String)>,
    /// Key figures, shown as tiles at the top.
    pub tiles: Vec<Tile>,
    pub sections: Vec<Section>,
}

/// One key figure: a label and its value, already formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub label: String,
    pub value: String,
}

/// A titled part of the report holding one chart or table.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    /// A line under the chart: where the data came from, rows left out.
    pub note: Option<String>,
    pub body: SectionBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SectionBody {
    Bar(BarChart),
    Line(LineChart),
    Table(Table),
    RowCounts(RowCounts),
}

/// Horizontal bars, one per label, in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    pub bars: Vec<Bar>,
    pub format: ValueFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
}

/// A line through points in the order given (dates, months, ...). A point
/// whose value is not a finite number breaks the line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    pub points: Vec<Point>,
    pub format: ValueFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: String,
    pub y: f64,
}

/// A table of text cells; numeric columns are right-aligned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<TableColumn>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub numeric: bool,
}

/// Data quality of a cleaning job: rows read, clean and quarantined per raw
/// file, and why rows were quarantined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowCounts {
    pub files: Vec<FileCounts>,
    /// Quarantine reasons over all files, with their row counts.
    pub reasons: Vec<(String, u64)>,
    /// A file whose quarantined / read ratio is above this is highlighted
    /// (the cleaning job's `--max-quarantine-ratio`, 0.05 by default).
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCounts {
    pub file: String,
    pub read: u64,
    pub clean: u64,
    pub quarantined: u64,
    pub reasons: Vec<(String, u64)>,
}

impl FileCounts {
    /// Quarantined rows per row read; 0 for an empty file.
    pub fn ratio(&self) -> f64 {
        if self.read == 0 {
            0.0
        } else {
            self.quarantined as f64 / self.read as f64
        }
    }
}

/// The page's style: system fonts, no web fonts, nothing to download.
const STYLE: &str = "\
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--panel:#f5f7fa;--accent:#2f6fab;--neg:#c2413b;--bad:#b42318;--bad-bg:#fdecea}
*{box-sizing:border-box}
body{margin:0 auto;max-width:980px;padding:28px 20px 48px;color:var(--fg);background:#fff;font:14px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif}
h1{font-size:26px;line-height:1.25;margin:0 0 4px;overflow-wrap:anywhere}
h2{font-size:17px;margin:0 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
h3{font-size:14px;margin:16px 0 6px}
.subtitle{color:var(--muted);margin:0 0 12px}
table.about{width:auto;margin:0 0 24px;font-size:13px}
table.about th,table.about td{padding:1px 12px 1px 0;border:0;background:none;overflow-wrap:anywhere}
table.about th{color:var(--muted);font-weight:400;white-space:nowrap}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px;margin:0 0 32px}
.tile{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.tile .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em;overflow-wrap:anywhere}
.tile .value{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
section{margin:0 0 36px;break-inside:avoid}
.note{color:var(--muted);font-size:12px;margin:6px 0 0}
.empty{color:var(--muted);font-style:italic}
svg.narrow{display:none;max-width:480px}
@media (max-width:639px){svg.wide{display:none}svg.narrow{display:block}}
svg{display:block;width:100%;height:auto;font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,Arial,sans-serif;font-size:12px}
svg .bar{fill:var(--accent)}
svg .bar.neg{fill:var(--neg)}
svg .axis{stroke:#9aa5b1;stroke-width:1}
svg .grid{stroke:var(--line);stroke-width:1}
svg .lbl,svg .tick{fill:var(--fg)}
svg .tick{fill:var(--muted)}
svg .val{fill:var(--fg);font-variant-numeric:tabular-nums}
svg .line{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round}
svg .dot{fill:#fff;stroke:var(--accent);stroke-width:1.5}
svg .dot.extreme{fill:var(--accent)}
svg .extreme{fill:var(--fg);font-weight:600}
.table-wrap{overflow-x:auto}
.table-wrap td:first-child{white-space:nowrap}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:var(--panel);font-weight:600}
.num{text-align:right;white-space:nowrap}
tfoot td{font-weight:600;border-top:2px solid var(--line)}
tr.over td{background:var(--bad-bg)}
.flag{color:var(--bad);font-weight:600;white-space:nowrap}
.reasons{color:var(--muted);font-size:12px}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:8px}
@media print{body{max-width:none;padding:0}.tile{break-inside:avoid}}
";

/// Renders `report` as one HTML document.
pub fn to_html(report: &Report) -> String {
    let mut out = String::new();
    let title = escape(&report.title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{title}</h1>\n"
    );
    if let Some(subtitle) = &report.subtitle {
        let _ = writeln!(out, "<p class=\"subtitle\">{}</p>", escape(subtitle));
    }
    if !report.about.is_empty() {
        out.push_str("<table class=\"about\">\n");
        for (label, value) in &report.about {
            let _ = writeln!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                escape(label),
                escape(value)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</header>\n");
    if !report.tiles.is_empty() {
        out.push_str("<div class=\"tiles\">\n");
        for tile in &report.tiles {
            let _ = writeln!(
                out,
                "<div class=\"tile\"><div class=\"label\">{}</div><div class=\"value\">{}</div></div>",
                escape(&tile.label),
                escape(&tile.value)
            );
        }
        out.push_str("</div>\n");
    }
    for section in &report.sections {
        let _ = writeln!(out, "<section>\n<h2>{}</h2>", escape(&section.title));
        match &section.body {
            SectionBody::Bar(chart) => out.push_str(&chart::bar_chart(chart, &section.title)),
            SectionBody::Line(chart) => {
                out.push_str(&chart::line_chart(chart, &section.title));
                line_caption(&mut out, chart);
            }
            SectionBody::Table(table) => table_html(&mut out, table),
            SectionBody::RowCounts(counts) => row_counts_html(&mut out, counts),
        }
        if let Some(note) = &section.note {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
        }
        out.push_str("</section>\n");
    }
    out.push_str("<footer>Rendered by flux-engine. This file is self-contained: no scripts, nothing loaded from the network.</footer>\n</body>\n</html>\n");
    out
}

/// The line chart's minimum and maximum in words, under the chart: exact
/// and selectable, where the chart's labels may be cut.
fn line_caption(out: &mut String, chart: &LineChart) {
    let finite: Vec<&Point> = chart.points.iter().filter(|p| p.y.is_finite()).collect();
    let (Some(first), Some(_)) = (finite.first(), finite.last()) else {
        return;
    };
    let decimals = chart
        .format
        .decimals_for(&finite.iter().map(|p| p.y).collect::<Vec<_>>());
    let min = finite
        .iter()
        .fold(*first, |a, b| if b.y < a.y { b } else { a });
    let max = finite
        .iter()
        .fold(*first, |a, b| if b.y > a.y { b } else { a });
    let _ = writeln!(
        out,
        "<p class=\"note\">{} · min {} at {} · max {} at {}</p>",
        match chart.points.len() {
            1 => "1 point".to_string(),
            n => format!("{} points", format_count(n as u64)),
        },
        escape(&chart.format.format_with(min.y, decimals)),
        escape(&min.x),
        escape(&chart.format.format_with(max.y, decimals)),
        escape(&max.x)
    );
}

fn cell(out: &mut String, tag: &str, numeric: bool, text: &str) {
    let class = if numeric { " class=\"num\"" } else { "" };
    let _ = write!(out, "<{tag}{class}>{}</{tag}>", escape(text));
}

fn table_html(out: &mut String, table: &Table) {
    out.push_str("<div class=\"table-wrap\"><table>\n<thead><tr>");
    for column in &table.columns {
        cell(out, "th", column.numeric, &column.name);
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (i, value) in row.iter().enumerate() {
            let numeric = table.columns.get(i).is_some_and(|c| c.numeric);
            cell(out, "td", numeric, value);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    if table.rows.is_empty() {
        out.push_str(chart::NO_ROWS);
    }
}

/// `bad_amount 3, missing_field 2`, largest first.
fn reasons_text(reasons: &[(String, u64)]) -> String {
    sorted_reasons(reasons)
        .iter()
        .map(|(reason, count)| format!("{reason} {}", format_count(*count)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sorted_reasons(reasons: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut sorted = reasons.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted
}

fn row_counts_html(out: &mut String, counts: &RowCounts) {
    if counts.files.is_empty() {
        out.push_str(chart::NO_ROWS);
        return;
    }
    // The reasons column only when some row has something to say: with
    // nothing quarantined it would be a blank column.
    let adds_up = |f: &FileCounts| f.clean.checked_add(f.quarantined) == Some(f.read);
    let with_reasons = counts
        .files
        .iter()
        .any(|f| !f.reasons.is_empty() || !adds_up(f));
    out.push_str(
        "<div class=\"table-wrap\"><table>\n<thead><tr><th>file</th><th class=\"num\">read</th>\
         <th class=\"num\">clean</th><th class=\"num\">quarantined</th>\
         <th class=\"num\">quarantine ratio</th>",
    );
    if with_reasons {
        out.push_str("<th>quarantine reasons</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let mut over = 0;
    let (mut read, mut clean, mut quarantined) = (0u64, 0u64, 0u64);
    for file in &counts.files {
        let ratio = file.ratio();
        let is_over = ratio > counts.threshold;
        over += usize::from(is_over);
        read = read.saturating_add(file.read);
        clean = clean.saturating_add(file.clean);
        quarantined = quarantined.saturating_add(file.quarantined);
        out.push_str(if is_over {
            "<tr class=\"over\">"
        } else {
            "<tr>"
        });
        cell(out, "td", false, &file.file);
        cell(out, "td", true, &format_count(file.read));
        cell(out, "td", true, &format_count(file.clean));
        cell(out, "td", true, &format_count(file.quarantined));
        let _ = write!(out, "<td class=\"num\">{}", escape(&format_percent(ratio)));
        if is_over {
            out.push_str(" <span class=\"flag\">over threshold</span>");
        }
        out.push_str("</td>");
        if !with_reasons {
            out.push_str("</tr>\n");
            continue;
        }
        let mut reasons = reasons_text(&file.reasons);
        // Every line read must end up clean or quarantined; say so when the
        // counts disagree rather than show numbers that do not add up.
        if !adds_up(file) {
            if !reasons.is_empty() {
                reasons.push_str("; ");
            }
            reasons.push_str("read ≠ clean + quarantined");
        }
        if reasons.is_empty() {
            reasons.push_str("none");
        }
        let _ = writeln!(out, "<td class=\"reasons\">{}</td></tr>", escape(&reasons));
    }
    out.push_str("</tbody>\n<tfoot><tr>");
    cell(out, "td", false, "all files");
    cell(out, "td", true, &format_count(read));
    cell(out, "td", true, &format_count(clean));
    cell(out, "td", true, &format_count(quarantined));
    let total_ratio = if read == 0 {
        0.0
    } else {
        quarantined as f64 / read as f64
    };
    cell(out, "td", true, &format_percent(total_ratio));
    out.push_str(if with_reasons {
        "<td></td></tr></tfoot>\n</table></div>\n"
    } else {
        "</tr></tfoot>\n</table></div>\n"
    });
    let _ = writeln!(
        out,
        "<p class=\"note\">Threshold: {} of rows read quarantined. {}</p>",
        escape(&format_percent(counts.threshold)),
        match over {
            0 => "No file is over it.".to_string(),
            1 => "1 file is over it (highlighted).".to_string(),
            n => format!("{n} files are over it (highlighted)."),
        }
    );
    if !counts.reasons.is_empty() {
        out.push_str(
            "<h3>Quarantine reasons</h3>\n<div class=\"table-wrap\"><table>\n\
             <thead><tr><th>reason</th><th class=\"num\">rows</th></tr></thead>\n<tbody>\n",
        );
        for (reason, count) in sorted_reasons(&counts.reasons) {
            out.push_str("<tr>");
            cell(out, "td", false, &reason);
            cell(out, "td", true, &format_count(count));
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table></div>\n");
    }
}
