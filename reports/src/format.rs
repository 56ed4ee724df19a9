//! Numbers as a reader expects them: thousands separators, money with two
//! decimals, hours with one, ratios as percentages.

/// How the numbers of a tile or a chart are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// `1,234` for whole numbers, `1,234.57` otherwise.
    #[default]
    Number,
    /// Always two decimals: `1,234.50`. No currency sign: the data does not
    /// say which currency it is in, the label does.
    Money,
    /// One decimal and the unit: `1,234.5 h`.
    Hours,
}

impl ValueFormat {
    /// One value on its own (a tile).
    pub fn format(self, value: f64) -> String {
        self.format_with(value, self.decimals_for(&[value]))
    }

    /// The decimals for a set of values shown together (the bars of one
    /// chart), so that `12` and `12.5` do not appear as `12` and `12.50`.
    pub fn decimals_for(self, values: &[f64]) -> usize {
        match self {
            ValueFormat::Money => 2,
            ValueFormat::Hours => 1,
            ValueFormat::Number => {
                if values
                    .iter()
                    .filter(|v| v.is_finite())
                    .all(|v| v.fract() == 0.0)
                {
                    0
                } else {
                    2
                }
            }
        }
    }

    /// `value` with `decimals` decimals, separators and the unit.
    pub fn format_with(self, value: f64, decimals: usize) -> String {
        let number = grouped(value, decimals);
        match self {
            ValueFormat::Hours if value.is_finite() => format!("{number} h"),
            _ => number,
        }
    }
}

/// `1,234` or `1,234.57`: see [`ValueFormat::Number`].
pub fn format_number(value: f64) -> String {
    ValueFormat::Number.format(value)
}

/// `1,234.50`.
pub fn format_money(value: f64) -> String {
    ValueFormat::Money.format(value)
}

/// `1,234.5 h`.
pub fn format_hours(value: f64) -> String {
    ValueFormat::Hours.format(value)
}

/// A count: `20,080`.
pub fn format_count(count: u64) -> String {
    group_digits(&count.to_string())
}

/// A ratio as a percentage with two decimals: `0.0512` is `5.12%`.
pub fn format_percent(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{}%", grouped(ratio * 100.0, 2))
    } else {
        NOT_A_NUMBER.to_string()
    }
}

/// What a value that is not a finite number (NaN, infinity) is shown as.
pub const NOT_A_NUMBER: &str = "n/a";

/// `value` rounded to `decimals` decimals with `,` between thousands.
pub fn grouped(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return NOT_A_NUMBER.to_string();
    }
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text.as_str(), None),
    };
    // `-0.001` rounds to zero: no minus sign in front of `0.00`.
    let is_zero = text.bytes().all(|b| b == b'0' || b == b'.');
    let sign = if value < 0.0 && !is_zero { "-" } else { "" };
    match fraction {
        Some(fraction) => format!("{sign}{}.{fraction}", group_digits(whole)),
        None => format!("{sign}{}", group_digits(whole)),
    }
}

/// Puts `,` between groups of three digits of an unsigned integer's text.
fn group_digits(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
