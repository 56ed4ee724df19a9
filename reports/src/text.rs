//! Text going into HTML and SVG: escaping, and fitting labels into a
//! chart's fixed geometry.

/// Escapes `text` for HTML text and for quoted attribute values, in HTML
/// and in inline SVG alike. Control characters other than tab and newline
/// become U+FFFD: they are not allowed in XML (SVG) and HTML shows nothing
/// useful for them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The width of `c` in ems. Charts have a fixed geometry and no script to
/// measure text, so label widths are estimated, from DejaVu Sans (the
/// widest common sans-serif, Linux's default): a label that fits with it
/// fits with the narrower fonts of other systems too.
fn char_em(c: char) -> f64 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '|' | '!' | '\'' | ' ' | 'I' => 0.32,
        'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' | '/' => 0.42,
        'm' | 'w' | 'M' | 'W' | '@' | '%' | '…' => 1.0,
        '<' | '>' | '=' | '+' | '~' | '&' | '#' => 0.84,
        'A'..='Z' => 0.78,
        c if c.is_ascii() => 0.64,
        // CJK, Hangul, full-width forms and emoji take a whole em.
        '\u{1100}'..='\u{115F}'
        | '\u{2E80}'..='\u{A4CF}'
        | '\u{AC00}'..='\u{D7A3}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{FE30}'..='\u{FE4F}'
        | '\u{FF00}'..='\u{FF60}'
        | '\u{FFE0}'..='\u{FFE6}'
        | '\u{1F000}'.. => 1.0,
        _ => 0.7,
    }
}

/// Estimated width of `text` in pixels at `font_px`.
pub(crate) fn text_width(text: &str, font_px: f64) -> f64 {
    text.chars().map(char_em).sum::<f64>() * font_px
}

/// One line of text for a chart: control characters and line breaks
/// become spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` cut to fit `max_px` at `font_px`, ending with `…` when cut; the
/// second value says whether it was cut.
pub(crate) fn fit(text: &str, max_px: f64, font_px: f64) -> (String, bool) {
    if text_width(text, font_px) <= max_px {
        return (text.to_string(), false);
    }
    let budget = max_px - char_em('…') * font_px;
    let mut used = 0.0;
    let mut out = String::new();
    for c in text.chars() {
        used += char_em(c) * font_px;
        if used > budget {
            break;
        }
        out.push(c);
    }
    // A cut right after a space reads as a lost word; drop the space.
    let mut out = out.trim_end().to_string();
    out.push('…');
    (out, true)
}
