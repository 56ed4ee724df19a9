//! Athena runs Trino's SQL; DataFusion speaks a close cousin. A few Trino
//! functions that queries of this kind use all the time are rewritten into
//! their DataFusion equivalents before planning, so the same SQL runs here
//! and in production:
//!
//! | Trino | DataFusion |
//! |---|---|
//! | `year(x)`, `quarter`, `month`, `week`, `day`, `day_of_month`, `day_of_week`/`dow` (Monday = 1), `day_of_year`/`doy`, `hour`, `minute`, `second` | `date_part('year', x)`, ... |
//! | `date_add('day', n, x)` (units `millisecond` to `year`) | `x + CAST(CAST(n AS VARCHAR) \|\| ' day' AS INTERVAL)` |
//! | `date_diff('day', a, b)` (units `millisecond` to `week`) | whole units between `a` and `b`, from their epochs |
//! | `date_format(x, '%Y-%m-%d %H:%i:%s')` (MySQL specifiers, literal format) | `to_char(x, '%Y-%m-%d %H:%M:%S')` |
//! | `from_iso8601_timestamp(s)`, `from_iso8601_date(s)` | `to_timestamp(s)`, `to_date(s)` |
//! | `arbitrary(x)` | `any_value(x)` |
//! | `count_if(c)` | `count(CASE WHEN c THEN 1 END)` |
//!
//! A rewritten expression in the `SELECT` list keeps the name it was
//! written with (`year(rental_date)`), so result columns do not turn into
//! `date_part(...)`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectNamePart, Select,
    SelectItem, Value, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rewrites the Trino functions of the table above, anywhere in `node`.
pub fn rewrite<N: VisitMut>(node: &mut N) -> Result<(), String> {
    match node.visit(&mut Rewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(message) => Err(message),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = String;

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<String> {
        // Name rewritten projections after the text the user wrote; the
        // expression walk that follows finds them already rewritten.
        for item in &mut select.projection {
            if let SelectItem::UnnamedExpr(expr) = item {
                let original = expr.to_string();
                let mut rewritten = expr.clone();
                visit_expressions_mut(&mut rewritten, translate_in_place)?;
                if rewritten != *expr {
                    *item = SelectItem::ExprWithAlias {
                        expr: rewritten,
                        alias: Ident::with_quote('"', original),
                    };
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        translate_in_place(expr)
    }
}

fn translate_in_place(expr: &mut Expr) -> ControlFlow<String> {
    match translate(expr) {
        Ok(Some(new)) => {
            *expr = new;
            ControlFlow::Continue(())
        }
        Ok(None) => ControlFlow::Continue(()),
        Err(message) => ControlFlow::Break(message),
    }
}

/// The plain arguments of a call to an unqualified function, lowercased
/// name first; `None` for anything else (qualified names, `DISTINCT`,
/// `FILTER`, `OVER`, named arguments, ...), which is left alone.
fn plain_call(function: &Function) -> Option<(String, Vec<&Expr>)> {
    let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
        return None;
    };
    if function.filter.is_some()
        || function.over.is_some()
        || function.null_treatment.is_some()
        || !function.within_group.is_empty()
        || !matches!(function.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let args = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((name.value.to_ascii_lowercase(), args))
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn parse(text: &str) -> Result<Expr, String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("internal error rewriting `{text}`: {e}"))
}

/// The DataFusion expression for a Trino-only call, if `expr` is one.
fn translate(expr: &Expr) -> Result<Option<Expr>, String> {
    let Expr::Function(function) = expr else {
        return Ok(None);
    };
    let Some((name, args)) = plain_call(function) else {
        return Ok(None);
    };
    let text = match (name.as_str(), args.as_slice()) {
        (part, [x]) if date_part_of(part).is_some() => {
            format!("date_part('{}', {x})", date_part_of(part).unwrap_or(part))
        }
        ("date_add", [unit, n, x]) => {
            // DataFusion multiplies no interval by a number, but casts text
            // such as '3 day' to an interval.
            let (n, unit) = match unit_of(&name, unit, ADD_UNITS)? {
                "quarter" => (format!("({n}) * 3"), "month"),
                unit => (n.to_string(), unit),
            };
            format!("({x}) + CAST(CAST({n} AS VARCHAR) || ' {unit}' AS INTERVAL)")
        }
        ("date_diff", [unit, a, b]) => {
            let unit = unit_of(&name, unit, DIFF_UNITS)?;
            let seconds = match unit {
                "millisecond" => "0.001",
                "second" => "1",
                "minute" => "60",
                "hour" => "3600",
                "day" => "86400",
                _ => "604800",
            };
            // Whole units, truncated toward zero as Trino counts them.
            format!(
                "CAST((date_part('epoch', {b}) - date_part('epoch', {a})) / {seconds} AS BIGINT)"
            )
        }
        ("date_format", [x, format]) => {
            let Some(format) = string_literal(format) else {
                return Err(
                    "date_format: write the format as a string literal, as in date_format(x, '%Y-%m-%d')"
                        .to_string(),
                );
            };
            let format = chrono_format(format)?;
            format!("to_char({x}, '{}')", format.replace('\'', "''"))
        }
        ("from_iso8601_timestamp", [s]) => format!("to_timestamp({s})"),
        ("from_iso8601_date", [s]) => format!("to_date({s})"),
        ("arbitrary", [x]) => format!("any_value({x})"),
        ("count_if", [c]) => format!("count(CASE WHEN {c} THEN 1 END)"),
        _ => return Ok(None),
    };
    parse(&text).map(Some)
}

/// Trino's one-argument date functions and the `date_part` field each is.
fn date_part_of(function: &str) -> Option<&'static str> {
    Some(match function {
        "year" => "year",
        "quarter" => "quarter",
        "month" => "month",
        "week" | "week_of_year" => "week",
        "day" | "day_of_month" => "day",
        "day_of_week" | "dow" => "isodow",
        "day_of_year" | "doy" => "doy",
        "hour" => "hour",
        "minute" => "minute",
        "second" => "second",
        "year_of_week" | "yow" => "isoyear",
        _ => return None,
    })
}

const ADD_UNITS: &[&str] = &[
    "millisecond",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "quarter",
    "year",
];

const DIFF_UNITS: &[&str] = &["millisecond", "second", "minute", "hour", "day", "week"];

fn unit_of(function: &str, unit: &Expr, allowed: &[&'static str]) -> Result<&'static str, String> {
    let text = string_literal(unit).map(str::to_ascii_lowercase);
    match text
        .as_deref()
        .and_then(|t| allowed.iter().find(|a| **a == t))
    {
        Some(unit) => Ok(unit),
        None => Err(format!(
            "{function}: the unit must be one of {} as a string literal, found {unit}",
            allowed
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A MySQL-style `date_format` pattern (Trino's) as a chrono pattern
/// (`to_char`'s).
fn chrono_format(mysql: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = mysql.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(spec) = chars.next() else {
            return Err(format!("date_format: `{mysql}` ends with a lone `%`"));
        };
        out.push_str(match spec {
            'Y' => "%Y",
            'y' => "%y",
            'm' => "%m",
            'c' => "%-m",
            'd' => "%d",
            'e' => "%-d",
            'H' => "%H",
            'k' => "%-H",
            'h' | 'I' => "%I",
            'l' => "%-I",
            'i' => "%M",
            's' | 'S' => "%S",
            'f' => "%6f",
            'p' => "%p",
            'T' => "%H:%M:%S",
            'r' => "%I:%M:%S %p",
            'j' => "%j",
            'M' => "%B",
            'b' => "%b",
            'W' => "%A",
            'a' => "%a",
            '%' => "%%",
            other => {
                return Err(format!(
                    "date_format: the specifier `%{other}` in `{mysql}` is not supported locally"
                ));
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        rewrite(&mut statements[0]).unwrap();
        statements[0].to_string()
    }

    #[test]
    fn date_functions_become_date_part_and_keep_their_names() {
        assert_eq!(
            rewritten("SELECT year(d), month(d) AS m FROM t WHERE day(d) = 1"),
            "SELECT date_part('year', d) AS \"year(d)\", date_part('month', d) AS m FROM t WHERE date_part('day', d) = 1"
        );
    }

    #[test]
    fn date_arithmetic_and_formats_are_translated() {
        assert_eq!(
            rewritten("SELECT date_add('day', 2, d) AS x FROM t"),
            "SELECT (d) + CAST(CAST(2 AS VARCHAR) || ' day' AS INTERVAL) AS x FROM t"
        );
        assert_eq!(
            rewritten("SELECT date_diff('hour', a, b) AS h FROM t"),
            "SELECT CAST((date_part('epoch', b) - date_part('epoch', a)) / 3600 AS BIGINT) AS h FROM t"
        );
        assert_eq!(
            rewritten("SELECT date_format(d, '%Y-%m-%d %H:%i:%s') AS f FROM t"),
            "SELECT to_char(d, '%Y-%m-%d %H:%M:%S') AS f FROM t"
        );
    }

    #[test]
    fn aggregates_are_renamed() {
        assert_eq!(
            rewritten("SELECT count_if(x > 1) AS n, arbitrary(y) AS a FROM t"),
            "SELECT count(CASE WHEN x > 1 THEN 1 END) AS n, any_value(y) AS a FROM t"
        );
    }

    #[test]
    fn other_calls_are_left_alone() {
        let sql = "SELECT date_trunc('month', d), count(DISTINCT x), s.year(d) FROM t";
        assert_eq!(rewritten(sql), sql);
    }

    #[test]
    fn bad_units_are_reported() {
        let mut statements =
            Parser::parse_sql(&GenericDialect {}, "SELECT date_diff('month', a, b) FROM t")
                .unwrap();
        let err = rewrite(&mut statements[0]).unwrap_err();
        assert!(err.contains("date_diff") && err.contains("'day'"), "{err}");
    }
}
