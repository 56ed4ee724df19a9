use super::*;

fn section(title: &str, body: SectionBody) -> Section {
    Section {
        title: title.into(),
        note: None,
        body,
    }
}

fn report_of(sections: Vec<Section>) -> Report {
    Report {
        title: "Rentals".into(),
        subtitle: None,
        about: Vec::new(),
        tiles: Vec::new(),
        sections,
    }
}

fn bars(values: &[(&str, f64)]) -> SectionBody {
    SectionBody::Bar(BarChart {
        bars: values
            .iter()
            .map(|(label, value)| Bar {
                label: label.to_string(),
                value: *value,
            })
            .collect(),
        format: ValueFormat::Number,
    })
}

fn line(values: &[(&str, f64)]) -> SectionBody {
    SectionBody::Line(LineChart {
        points: values
            .iter()
            .map(|(x, y)| Point {
                x: x.to_string(),
                y: *y,
            })
            .collect(),
        format: ValueFormat::Number,
    })
}

/// Every SVG of `html`, each from `<svg` to `</svg>`.
fn svgs(html: &str) -> Vec<&str> {
    html.match_indices("<svg")
        .map(|(start, _)| {
            let end = html[start..].find("</svg>").expect("an unclosed <svg>") + start;
            &html[start..end + "</svg>".len()]
        })
        .collect()
}

/// The charts drawn for wide screens (each has a narrow twin for phones).
fn wide_svgs(html: &str) -> Vec<&str> {
    svgs(html)
        .into_iter()
        .filter(|svg| svg.contains("class=\"wide\""))
        .collect()
}

/// The numbers of every geometry attribute in `svg`.
fn coordinates(svg: &str) -> Vec<f64> {
    let mut numbers = Vec::new();
    for attr in [
        " x=\"",
        " y=\"",
        " x1=\"",
        " y1=\"",
        " x2=\"",
        " y2=\"",
        " width=\"",
        " height=\"",
        " cx=\"",
        " cy=\"",
    ] {
        for (at, _) in svg.match_indices(attr) {
            let rest = &svg[at + attr.len()..];
            let text = &rest[..rest.find('"').unwrap()];
            numbers.push(
                text.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{attr}{text}\" is not a number")),
            );
        }
    }
    for (at, _) in svg.match_indices(" points=\"") {
        let rest = &svg[at + 9..];
        for pair in rest[..rest.find('"').unwrap()].split(' ') {
            for v in pair.split(',') {
                numbers.push(v.parse().unwrap());
            }
        }
    }
    numbers
}

/// Checks that every coordinate of every chart is a finite number inside
/// the chart's `viewBox`.
fn assert_inside_view_box(html: &str) {
    for svg in svgs(html) {
        let view = &svg[svg.find("viewBox=\"").unwrap() + 9..];
        let view: Vec<f64> = view[..view.find('"').unwrap()]
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect();
        for v in coordinates(svg) {
            assert!(v.is_finite(), "{v} in {svg}");
            assert!(
                (-0.5..=view[2].max(view[3]) + 0.5).contains(&v),
                "{v} outside {view:?} in {svg}"
            );
        }
    }
}

#[test]
fn thousands_separators_and_decimals() {
    assert_eq!(format_number(0.0), "0");
    assert_eq!(format_number(999.0), "999");
    assert_eq!(format_number(1000.0), "1,000");
    assert_eq!(format_number(16_200_620.0), "16,200,620");
    assert_eq!(format_number(1_234_567.891), "1,234,567.89");
    assert_eq!(format_number(-1234.5), "-1,234.50");
    assert_eq!(format_money(16_200_620.0), "16,200,620.00");
    assert_eq!(format_money(0.5), "0.50");
    assert_eq!(format_money(-0.001), "0.00", "no minus sign on a zero");
    assert_eq!(format_money(-999_999.996), "-1,000,000.00");
    assert_eq!(format_hours(12_345.67), "12,345.7 h");
    assert_eq!(format_count(20_080), "20,080");
    assert_eq!(format_count(100), "100");
    assert_eq!(format_count(u64::MAX), "18,446,744,073,709,551,615");
    assert_eq!(format_percent(0.0512), "5.12%");
    assert_eq!(format_number(f64::NAN), NOT_A_NUMBER);
    assert_eq!(format_hours(f64::INFINITY), NOT_A_NUMBER);
    assert_eq!(grouped(123_456.0, 0), "123,456");
    assert_eq!(grouped(1e21, 0), "1,000,000,000,000,000,000,000");
}

#[test]
fn values_shown_together_share_their_decimals() {
    let format = ValueFormat::Number;
    assert_eq!(format.decimals_for(&[12.0, 7.0]), 0);
    assert_eq!(format.decimals_for(&[12.0, 7.5]), 2);
    let html = to_html(&report_of(vec![section(
        "x",
        bars(&[("a", 12.0), ("b", 7.5)]),
    )]));
    assert!(html.contains(">12.00</text>"), "{html}");
    assert!(html.contains(">7.50</text>"), "{html}");
}

#[test]
fn all_text_is_escaped_in_html_and_svg() {
    let nasty = "<b>\"Smith\" & 'Sons'</b>";
    let escaped = "&lt;b&gt;&quot;Smith&quot; &amp; &#39;Sons&#39;&lt;/b&gt;";
    assert_eq!(escape(nasty), escaped);
    let report = Report {
        title: nasty.into(),
        subtitle: Some(nasty.into()),
        about: vec![(nasty.into(), nasty.into())],
        tiles: vec![Tile {
            label: nasty.into(),
            value: nasty.into(),
        }],
        sections: vec![
            Section {
                title: nasty.into(),
                note: Some(nasty.into()),
                body: bars(&[(nasty, 3.0)]),
            },
            section(nasty, line(&[(nasty, 1.0), ("b", 2.0)])),
            section(
                nasty,
                SectionBody::Table(Table {
                    columns: vec![TableColumn {
                        name: nasty.into(),
                        numeric: false,
                    }],
                    rows: vec![vec![nasty.into()]],
                }),
            ),
            section(
                nasty,
                SectionBody::RowCounts(RowCounts {
                    files: vec![FileCounts {
                        file: nasty.into(),
                        read: 1,
                        clean: 0,
                        quarantined: 1,
                        reasons: vec![(nasty.into(), 1)],
                    }],
                    reasons: vec![(nasty.into(), 1)],
                    threshold: 0.05,
                }),
            ),
        ],
    };
    let html = to_html(&report);
    // The only tags are the renderer's own: no `<b>` and no raw quote
    // or apostrophe from the data anywhere.
    assert!(!html.contains("<b>"), "{html}");
    assert!(!html.contains("\"Smith"), "{html}");
    assert!(!html.contains("'Sons"), "{html}");
    assert!(html.matches(escaped).count() >= 12, "{html}");
    // Inside the SVG too (the bar's label and its tooltip).
    let svg = svgs(&html)[0];
    assert!(svg.contains(escaped), "{svg}");
    assert!(!svg.contains("<b>"), "{svg}");
}

#[test]
fn control_characters_cannot_break_the_svg() {
    let html = to_html(&report_of(vec![section(
        "t",
        bars(&[("a\u{0}b\u{1b}c\nd", 1.0)]),
    )]));
    assert!(!html.contains('\u{0}') && !html.contains('\u{1b}'));
    assert!(html.contains("a b c d"), "{html}");
}

#[test]
fn empty_data_says_no_rows() {
    let html = to_html(&report_of(vec![
        section("bars", bars(&[])),
        section("line", line(&[])),
        section("table", SectionBody::Table(Table::default())),
        section("counts", SectionBody::RowCounts(RowCounts::default())),
    ]));
    assert_eq!(html.matches("<svg").count(), 0, "{html}");
    assert_eq!(html.matches("no rows").count(), 4, "{html}");
}

#[test]
fn a_line_chart_with_one_point() {
    let html = to_html(&report_of(vec![section(
        "daily",
        line(&[("2024-01-01", 42.0)]),
    )]));
    let charts = wide_svgs(&html);
    assert_eq!(charts.len(), 1);
    let svg = charts[0];
    assert!(!svg.contains("<polyline"), "no line through one point");
    assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
    assert!(svg.contains(">2024-01-01</text>"), "{svg}");
    assert!(svg.contains(">42</text>"), "{svg}");
    assert!(html.contains("1 point · min 42 at 2024-01-01 · max 42 at 2024-01-01"));
    assert_inside_view_box(&html);
}

#[test]
fn a_line_chart_has_ticks_and_marks_its_minimum_and_maximum() {
    let days: Vec<(String, f64)> = (1..=30)
        .map(|d| (format!("2024-01-{d:02}"), (d as f64 * 37.0) % 101.0 - 20.0))
        .collect();
    let points: Vec<(&str, f64)> = days.iter().map(|(x, y)| (x.as_str(), *y)).collect();
    let (min, max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (_, y)| {
            (lo.min(*y), hi.max(*y))
        });
    let html = to_html(&report_of(vec![section("daily", line(&points))]));
    let svg = svgs(&html)[0];
    assert!(
        svg.contains(&format!(">max {}</text>", format_number(max))),
        "{svg}"
    );
    assert!(
        svg.contains(&format!(">min {}</text>", format_number(min))),
        "{svg}"
    );
    assert!(
        svg.contains("class=\"axis\""),
        "a zero line: values cross 0"
    );
    assert!(svg.matches("class=\"tick\"").count() >= 4, "{svg}");
    // First and last dates are labelled; 30 labels would not fit.
    assert!(svg.contains(">2024-01-01</text>") && svg.contains(">2024-01-30</text>"));
    let x_labels = svg.matches("\">2024-01-").count();
    assert!((2..30).contains(&x_labels), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 1);
    assert_inside_view_box(&html);
}

#[test]
fn a_flat_zero_line_chart_and_missing_values() {
    let html = to_html(&report_of(vec![
        section("flat", line(&[("a", 0.0), ("b", 0.0), ("c", 0.0)])),
        section("gap", line(&[("a", 1.0), ("b", f64::NAN), ("c", 2.0)])),
    ]));
    // Each chart twice: for a wide screen and for a phone.
    assert_eq!(svgs(&html).len(), 4);
    assert!(svgs(&html)[0].contains("class=\"wide\" viewBox=\"0 0 720 "));
    assert!(svgs(&html)[1].contains("class=\"narrow\" viewBox=\"0 0 330 "));
    assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
    // The gap breaks the line: two one-point runs draw no polyline.
    assert_eq!(svgs(&html)[2].matches("<polyline").count(), 0);
    assert_eq!(svgs(&html)[3].matches("<polyline").count(), 0);
    assert_inside_view_box(&html);
}

#[test]
fn long_labels_are_cut_with_the_full_text_in_a_title() {
    let long =
        "Rodriguez, Martinez and Hoover Vehicle Rentals of Moreno Valley, California, Suite 107";
    let html = to_html(&report_of(vec![
        section("bars", bars(&[(long, 5.0), ("short", 3.0)])),
        section("line", line(&[(long, 1.0), ("x", 2.0)])),
    ]));
    for svg in svgs(&html) {
        assert!(svg.contains(&format!("<title>{long}</title>")), "{svg}");
        assert!(svg.contains("…</text>"), "{svg}");
    }
    assert!(html.contains(">short</text>"));
    assert_inside_view_box(&html);
}

/// Every chart comes twice, for a wide screen (720 units) and for a phone
/// (330 units, so that its 12-unit labels are drawn at 10 px or more from
/// a 320 px screen up), with the same bars, values and labels.
#[test]
fn each_chart_has_a_wide_and_a_narrow_frame_with_the_same_content() {
    let html = to_html(&report_of(vec![
        section("bars", bars(&[("Fresno", 10.0), ("Irvine", 4.0)])),
        section("line", line(&[("2024-01-01", 1.0), ("2024-01-02", 3.0)])),
    ]));
    let all = svgs(&html);
    assert_eq!(all.len(), 4);
    for pair in all.chunks(2) {
        assert!(
            pair[0].contains("class=\"wide\" viewBox=\"0 0 720 "),
            "{}",
            pair[0]
        );
        assert!(
            pair[1].contains("class=\"narrow\" viewBox=\"0 0 330 "),
            "{}",
            pair[1]
        );
        let texts = |svg: &str| -> Vec<String> {
            svg.split("</text>")
                .filter_map(|t| t.rsplit('>').next().map(str::to_string))
                .filter(|t| !t.trim().is_empty())
                .collect()
        };
        assert_eq!(texts(pair[0]), texts(pair[1]));
        assert_eq!(
            pair[0].matches("<rect").count() + pair[0].matches("<circle").count(),
            pair[1].matches("<rect").count() + pair[1].matches("<circle").count()
        );
    }
    // The page shows one of the two, by the screen's width.
    assert!(
        html.contains("@media (max-width:639px){svg.wide{display:none}svg.narrow{display:block}}")
    );
    assert_inside_view_box(&html);
}

#[test]
fn negative_and_zero_bars() {
    let html = to_html(&report_of(vec![
        section(
            "mixed",
            bars(&[("up", 10.0), ("zero", 0.0), ("down", -5.0)]),
        ),
        section("zeros", bars(&[("a", 0.0), ("b", 0.0)])),
    ]));
    let charts = wide_svgs(&html);
    assert_eq!(charts.len(), 2);
    assert_eq!(charts[0].matches("class=\"bar neg\"").count(), 1);
    assert!(charts[0].contains(">-5</text>"), "{}", charts[0]);
    assert!(charts[1].contains(" width=\"0\""), "{}", charts[1]);
    assert!(!html.contains("NaN"));
    assert_inside_view_box(&html);
    // Bars keep the order given, not sorted by value.
    let up = charts[0].find(">up</text>").unwrap();
    let down = charts[0].find(">down</text>").unwrap();
    assert!(up < down);
}

#[test]
fn row_counts_highlight_files_over_the_threshold() {
    let counts = RowCounts {
        files: vec![
            FileCounts {
                file: "locations.csv".into(),
                read: 100,
                clean: 95,
                quarantined: 5,
                reasons: vec![("bad_key".into(), 5)],
            },
            FileCounts {
                file: "rental_transactions.csv".into(),
                read: 1000,
                clean: 900,
                quarantined: 100,
                reasons: vec![("bad_amount".into(), 40), ("missing_field".into(), 60)],
            },
        ],
        reasons: vec![
            ("bad_amount".into(), 40),
            ("bad_key".into(), 5),
            ("missing_field".into(), 60),
        ],
        threshold: 0.05,
    };
    let html = to_html(&report_of(vec![section(
        "quality",
        SectionBody::RowCounts(counts),
    )]));
    // 5 / 100 is exactly at the threshold, not over it; 100 / 1000 is.
    assert_eq!(html.matches("<tr class=\"over\">").count(), 1, "{html}");
    let over = &html[html.find("<tr class=\"over\">").unwrap()..];
    assert!(over.starts_with("<tr class=\"over\"><td>rental_transactions.csv</td>"));
    assert!(over.contains("10.00% <span class=\"flag\">"));
    assert!(
        over.contains("missing_field 60, bad_amount 40"),
        "largest first"
    );
    assert!(
        html.contains("<td class=\"num\">1,100</td>"),
        "the total read"
    );
    assert!(html.contains("1 file is over it"));
}

#[test]
fn the_page_loads_nothing_from_the_network() {
    let html = to_html(&report_of(vec![
        section("b", bars(&[("a", 1.0)])),
        section("l", line(&[("a", 1.0), ("b", 3.0)])),
    ]));
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_namespace.contains("http://"));
    assert!(!without_namespace.contains("https://"));
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
    assert!(!html.contains("url("));
}

/// Nothing quarantined: no blank reasons column. Some files with reasons
/// and one without: the column is there and the clean file says "none".
#[test]
fn the_reasons_column_appears_only_when_there_are_reasons() {
    let clean_file = |name: &str| FileCounts {
        file: name.into(),
        read: 10,
        clean: 10,
        quarantined: 0,
        reasons: vec![],
    };
    let html = to_html(&report_of(vec![section(
        "quality",
        SectionBody::RowCounts(RowCounts {
            files: vec![clean_file("users.csv"), clean_file("vehicles.csv")],
            reasons: vec![],
            threshold: 0.05,
        }),
    )]));
    assert!(!html.contains("quarantine reasons"), "{html}");
    assert!(!html.contains("class=\"reasons\""), "{html}");
    assert!(
        html.contains("<th class=\"num\">quarantine ratio</th></tr></thead>"),
        "the ratio is the last column: {html}"
    );

    let mut dirty = clean_file("rental_transactions.csv");
    dirty.clean = 8;
    dirty.quarantined = 2;
    dirty.reasons = vec![("bad_amount".into(), 2)];
    let html = to_html(&report_of(vec![section(
        "quality",
        SectionBody::RowCounts(RowCounts {
            files: vec![clean_file("users.csv"), dirty],
            reasons: vec![("bad_amount".into(), 2)],
            threshold: 0.05,
        }),
    )]));
    assert!(html.contains("<th>quarantine reasons</th>"), "{html}");
    assert!(html.contains("<td class=\"reasons\">none</td>"), "{html}");
    assert!(
        html.contains("<td class=\"reasons\">bad_amount 2</td>"),
        "{html}"
    );
}
