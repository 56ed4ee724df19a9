//! Parameters as execution input: `StartExecution` with
//! `{"params": {"bucket": "other-bucket"}}` runs the state machine with
//! that value, every other parameter keeping the default it had at export
//! (the DAG's default, or `--param`).
//!
//! # How
//!
//! The translation runs on a copy of the DAG in which each parameter
//! stands as a *marker*, a name between two private-use characters that
//! no TOML text holds ([`symbolic`]). The translators treat it as any
//! other text: it ends up inside bucket names, keys, SQL and arguments.
//! [`bind`] then turns every string that holds a marker into an intrinsic
//! function of the execution's parameters: `"Bucket": "<bucket>"` becomes
//! `"Bucket.$": "$.params.bucket"`, `"s3://<bucket>/raw/"` becomes
//! `States.Format('s3://{}/raw/', $.params.bucket)`, a list of arguments
//! `States.Array(...)`. The state machine begins with four `Pass`/`Choice`
//! states ([`entry_states`]) that merge the execution's `params` into the
//! defaults with `States.JsonMerge`, so that every later state reads
//! `$.params.NAME`. Every state keeps its input (results go to `ResultPath`
//! null or a key of their own), so `$.params` is there all along, in
//! `Parallel` branches too.
//!
//! # What stays fixed at export
//!
//! * `type = "path"` parameters: they name files on the exporting
//!   machine (the scripts, the SQL files, the sources `s3_ingest`
//!   checks), which the export reads; they are substituted as values.
//! * Whatever the export reads or derives from a value: the objects an
//!   `s3_ingest` checks, the SQL of a `sql_file` (not substituted, as on
//!   the engine), and the IAM policy and CloudFormation resources, which
//!   are computed from the values at export. An execution may override a
//!   parameter that names a bucket or a database, but the role only allows
//!   what it was exported for: export (and deploy) again with `--param`
//!   for a lasting change.
//! * Only parameters the state machine reads are inputs; an unknown key
//!   in the execution's `params` is carried along and read by nothing.

use std::collections::{BTreeMap, BTreeSet};

use engine::Dag;
use engine::template::{self, Vars};

use super::ExportError;
use super::json::{Json, Obj};
use super::states::format_literal;

/// Starts a parameter's marker: `fluxparam`, the parameter's index
/// (in the DAG's sorted parameters), `x`. A marker is made of lowercase
/// letters and digits so that it passes where the value could stand: in
/// a bucket name, a database name, a key. No DAG text may hold it.
const PREFIX: &str = "fluxparam";
/// Ends a marker.
const SUFFIX: char = 'x';

/// The first state of a state machine that takes parameters.
pub const ENTRY: &str = "Execution parameters";
const NONE_GIVEN: &str = "No parameters given";
const COLLECT: &str = "Collect parameters";
const MERGE: &str = "Merge parameters";

/// The parameters a symbolic DAG's markers stand for.
#[derive(Debug, Clone, Default)]
pub struct Markers {
    names: Vec<String>,
}

impl Markers {
    /// Markers for these parameter names.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Markers {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// The marker standing for parameter `name`.
    pub fn marker(&self, name: &str) -> String {
        match self.names.iter().position(|n| n == name) {
            Some(i) => format!("{PREFIX}{i}{SUFFIX}"),
            None => name.to_string(),
        }
    }

    /// `text` with each marker replaced by its parameter's value: for
    /// what the export reads on this machine.
    pub fn concrete(&self, text: &str, values: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(text.len());
        for piece in self.pieces(text) {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Param(name) => out.push_str(values.get(name).map_or(name, String::as_str)),
            }
        }
        out
    }

    /// `text` split into literal runs and markers.
    fn pieces<'t>(&'t self, text: &'t str) -> Vec<Piece<'t>> {
        let mut out = Vec::new();
        let mut rest = text;
        let mut literal_start = 0;
        let mut at = 0;
        while let Some(found) = rest[at..].find(PREFIX) {
            let start = at + found;
            match self.marker_at(&rest[start..]) {
                Some((name, len)) => {
                    if start > literal_start {
                        out.push(Piece::Text(&rest[literal_start..start]));
                    }
                    out.push(Piece::Param(name));
                    rest = &rest[start + len..];
                    literal_start = 0;
                    at = 0;
                }
                None => at = start + PREFIX.len(),
            }
        }
        if !rest[literal_start..].is_empty() {
            out.push(Piece::Text(&rest[literal_start..]));
        }
        out
    }

    /// The parameter whose marker `text` starts with, and the marker's
    /// length.
    fn marker_at(&self, text: &str) -> Option<(&str, usize)> {
        let digits = text.strip_prefix(PREFIX)?;
        let len = digits.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || !digits[len..].starts_with(SUFFIX) {
            return None;
        }
        let name = self.names.get(digits[..len].parse::<usize>().ok()?)?;
        Some((name, PREFIX.len() + len + SUFFIX.len_utf8()))
    }

    fn has_marker(&self, text: &str) -> bool {
        self.pieces(text)
            .iter()
            .any(|p| matches!(p, Piece::Param(_)))
    }
}

/// The DAG with each parameter that is not a path standing as its marker,
/// `[aws]` substituted again with them.
pub fn symbolic(dag: &Dag) -> Result<(Dag, Markers), ExportError> {
    let foreign = dag
        .tasks
        .iter()
        .find_map(|task| {
            task.fields
                .iter()
                .find(|(_, v)| engine::dag::mentions(v, PREFIX))
                .map(|(k, _)| format!("task `{}`, field `{k}`", task.id))
        })
        .or_else(|| {
            dag.aws_unsubstituted
                .iter()
                .find(|(_, v)| engine::dag::mentions(v, PREFIX))
                .map(|(k, _)| format!("[aws] {k}"))
        })
        .or_else(|| {
            dag.path_params
                .iter()
                .find(|name| dag.params.get(*name).is_some_and(|v| v.contains(PREFIX)))
                .map(|name| format!("the path parameter `{name}`"))
        });
    if let Some(place) = foreign {
        return Err(ExportError(vec![format!(
            "{place} holds the text `{PREFIX}`, which the export uses to mark parameters; remove it"
        )]));
    }
    let markers = Markers::new(dag.params.keys().cloned());
    let mut copy = dag.clone();
    for (name, value) in copy.params.iter_mut() {
        if !dag.path_params.contains(name) {
            *value = markers.marker(name);
        }
    }
    let vars = Vars {
        params: copy.params.clone(),
        // `[aws]` cannot use them: the engine reported that at load.
        run_id: String::new(),
        task_id: String::new(),
        dag_dir: dag.dir.display().to_string(),
    };
    copy.aws = template::substitute_table(&dag.aws_unsubstituted, &vars)
        .map_err(|e| ExportError(vec![format!("[aws]: {}; {}", e.message, e.help)]))?;
    Ok((copy, markers))
}

enum Piece<'a> {
    Text(&'a str),
    Param(&'a str),
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// State machine structure: markers only in comments.
    Structure,
    /// A payload template (`Parameters`, `ItemSelector`): `.$` keys read
    /// the state's input.
    Payload,
}

impl Markers {
    /// Turns every marker of the state machine into a read of the execution's
    /// parameters (see the module doc) and returns the parameters read.
    /// A marker where Step Functions reads no paths (a `Choice` value, a
    /// `Fail` cause, a `ResultSelector`, which reads the result) is an error
    /// naming the state; in a `Comment` it is written `<params.NAME>`.
    pub fn bind(&self, machine: &mut Json) -> Result<BTreeSet<String>, String> {
        let mut used = BTreeSet::new();
        self.walk(machine, Mode::Structure, "", &mut used)?;
        Ok(used)
    }

    fn walk(
        &self,
        json: &mut Json,
        mode: Mode,
        at: &str,
        used: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        match json {
            Json::Object(obj) => {
                let mut rewritten = Vec::with_capacity(obj.0.len());
                for (key, mut value) in std::mem::take(&mut obj.0) {
                    let place = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    if key == "Comment"
                        && let Json::Str(text) = &mut value
                    {
                        *text = self.in_comment(text);
                        rewritten.push((key, value));
                        continue;
                    }
                    let inner = if matches!(key.as_str(), "Parameters" | "ItemSelector") {
                        Mode::Payload
                    } else {
                        mode
                    };
                    if inner == Mode::Payload {
                        if let Some((key, value)) = self.bind_field(&key, &value, &place, used)? {
                            rewritten.push((key, value));
                            continue;
                        }
                    } else if let Json::Str(text) = &value
                        && self.has_marker(text)
                    {
                        return Err(self.unbindable(&place, text));
                    }
                    self.walk(&mut value, inner, &place, used)?;
                    rewritten.push((key, value));
                }
                obj.0 = rewritten;
            }
            Json::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let place = format!("{at}[{i}]");
                    if let Json::Str(text) = item
                        && self.has_marker(text)
                    {
                        // Arrays of strings are bound whole by `bind_field`.
                        return Err(self.unbindable(&place, text));
                    }
                    self.walk(item, mode, &place, used)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn unbindable(&self, place: &str, text: &str) -> String {
        format!(
            "`{place}` = {:?} uses a parameter where Step Functions cannot read the execution input; give the parameter with --param at export instead",
            self.as_reference(text)
        )
    }

    /// The payload field `key: value` with its markers bound, or `None` when
    /// it holds none directly (its members are walked as usual).
    fn bind_field(
        &self,
        key: &str,
        value: &Json,
        place: &str,
        used: &mut BTreeSet<String>,
    ) -> Result<Option<(String, Json)>, String> {
        match value {
            Json::Str(text) if self.has_marker(text) => {
                let expression = if key.ends_with(".$") {
                    self.rebind_format(text, used)
                        .ok_or_else(|| self.unbindable(place, text))?
                } else {
                    self.expression(text, used)
                };
                let key = if key.ends_with(".$") {
                    key.to_string()
                } else {
                    format!("{key}.$")
                };
                Ok(Some((key, Json::Str(expression))))
            }
            Json::Array(items)
                if !key.ends_with(".$")
                    && items
                        .iter()
                        .any(|i| matches!(i, Json::Str(t) if self.has_marker(t))) =>
            {
                let mut args = Vec::with_capacity(items.len());
                for item in items {
                    args.push(match item {
                        Json::Str(text) if self.has_marker(text) => self.expression(text, used),
                        Json::Str(text) => format!("'{}'", format_literal(text)),
                        Json::Int(n) => n.to_string(),
                        Json::Float(f) => f.to_string(),
                        Json::Bool(b) => b.to_string(),
                        Json::Null => "null".into(),
                        _ => {
                            return Err(format!(
                                "`{place}` mixes parameters with objects or lists, which States.Array cannot build; give the parameter with --param at export instead"
                            ));
                        }
                    });
                }
                Ok(Some((
                    format!("{key}.$"),
                    Json::Str(format!("States.Array({})", args.join(", "))),
                )))
            }
            _ => Ok(None),
        }
    }

    /// A string holding markers as a path or intrinsic reading `$.params`.
    fn expression(&self, text: &str, used: &mut BTreeSet<String>) -> String {
        let parts = self.pieces(text);
        if let [Piece::Param(name)] = parts.as_slice() {
            used.insert(name.to_string());
            return param_path(name);
        }
        let mut literal = String::new();
        let mut args = Vec::new();
        for piece in parts {
            match piece {
                Piece::Text(t) => literal.push_str(&format_literal(t)),
                Piece::Param(name) => {
                    used.insert(name.to_string());
                    literal.push_str("{}");
                    args.push(param_path(name));
                }
            }
        }
        format!("States.Format('{literal}', {})", args.join(", "))
    }

    /// A `States.Format('...', args)` whose literal holds markers (as the
    /// per-execution prefixes do) with the markers made arguments in place.
    fn rebind_format(&self, intrinsic: &str, used: &mut BTreeSet<String>) -> Option<String> {
        let body = intrinsic.strip_prefix("States.Format('")?;
        // The literal ends at the first quote not escaped by a backslash.
        let mut literal_end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => {
                    literal_end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let literal_end = literal_end?;
        let literal = &body[..literal_end];
        let rest = body[literal_end + 1..].trim_start();
        let rest = rest.strip_suffix(')')?;
        let old_args = split_args(rest.strip_prefix(',').unwrap_or(rest));
        let mut old_args = old_args.into_iter();
        let mut new_literal = String::new();
        let mut args = Vec::new();
        let mut chars = literal.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    new_literal.push(c);
                    if let Some((_, next)) = chars.next() {
                        new_literal.push(next);
                    }
                }
                '{' if literal[i..].starts_with("{}") => {
                    chars.next();
                    new_literal.push_str("{}");
                    args.push(old_args.next()?);
                }
                _ if self.marker_at(&literal[i..]).is_some() => {
                    let (name, len) = self.marker_at(&literal[i..])?;
                    for _ in 1..len {
                        chars.next();
                    }
                    used.insert(name.to_string());
                    new_literal.push_str("{}");
                    args.push(param_path(name));
                }
                _ => new_literal.push(c),
            }
        }
        if old_args.next().is_some() {
            return None;
        }
        Some(format!(
            "States.Format('{new_literal}', {})",
            args.join(", ")
        ))
    }

    /// `text` with markers written back as `${params.NAME}`, as the DAG
    /// writes them: for error messages.
    pub fn as_reference(&self, text: &str) -> String {
        self.written(text, "${params.", "}")
    }

    /// `text` with markers written as `<params.NAME>`, for comments (a `${`
    /// would read as a CloudFormation `DefinitionSubstitutions` variable).
    fn in_comment(&self, text: &str) -> String {
        self.written(text, "<params.", ">")
    }

    fn written(&self, text: &str, open: &str, close: &str) -> String {
        self.pieces(text)
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => t.to_string(),
                Piece::Param(name) => format!("{open}{name}{close}"),
            })
            .collect()
    }
}

/// `$.params.NAME`, or the bracket form for a name that is not a plain
/// identifier.
fn param_path(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("$.params.{name}")
    } else {
        format!("$.params['{}']", name.replace('\'', "\\'"))
    }
}

/// Top-level arguments of an intrinsic call, trimmed.
fn split_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                args.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        args.push(current.trim().to_string());
    }
    args
}

/// The states that make `$.params` the defaults merged with the
/// execution's `params`, the first being [`ENTRY`] and the last going on
/// to `next`. `defaults` are the values at export of the parameters the
/// state machine reads.
pub fn entry_states(defaults: &BTreeMap<String, String>, next: &str) -> Vec<(String, Obj)> {
    let mut default_values = Obj::new();
    for (name, value) in defaults {
        default_values.set(name, value.as_str());
    }
    let names: Vec<&str> = defaults.keys().map(String::as_str).collect();
    vec![
        (
            ENTRY.to_string(),
            Obj::new()
                .with("Type", "Choice")
                .with(
                    "Comment",
                    format!(
                        "The execution input may hold `params` ({}); the DAG's defaults fill in the rest",
                        names.join(", ")
                    ),
                )
                .with(
                    "Choices",
                    vec![Json::from(
                        Obj::new()
                            .with("Variable", "$.params")
                            .with("IsPresent", true)
                            .with("Next", COLLECT),
                    )],
                )
                .with("Default", NONE_GIVEN),
        ),
        (
            NONE_GIVEN.to_string(),
            Obj::new()
                .with("Type", "Pass")
                .with("Comment", "No `params` in the input: the defaults apply")
                .with("Result", Obj::new())
                .with("ResultPath", "$.params")
                .with("Next", COLLECT),
        ),
        (
            COLLECT.to_string(),
            Obj::new()
                .with("Type", "Pass")
                .with(
                    "Comment",
                    "The defaults at export (the DAG's, or --param) beside the execution's values",
                )
                .with(
                    "Parameters",
                    Obj::new()
                        .with("defaults", default_values)
                        .with("given.$", "$.params"),
                )
                .with("ResultPath", "$.params")
                .with("Next", MERGE),
        ),
        (
            MERGE.to_string(),
            Obj::new()
                .with("Type", "Pass")
                .with(
                    "Comment",
                    "The execution's values win; every later state reads $.params",
                )
                .with(
                    "Parameters",
                    Obj::new().with(
                        "params.$",
                        "States.JsonMerge($.params.defaults, $.params.given, false)",
                    ),
                )
                .with("Next", next),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers() -> Markers {
        Markers::new(["a", "bucket", "day", "dir", "n", "p", "x"])
    }

    fn m(name: &str) -> String {
        markers().marker(name)
    }

    #[test]
    fn a_whole_marker_is_a_path_and_a_mixed_string_a_format() {
        let mut used = BTreeSet::new();
        assert_eq!(
            markers().expression(&m("bucket"), &mut used),
            "$.params.bucket"
        );
        assert_eq!(
            markers().expression(
                &format!("s3://{}/raw/{}.csv", m("bucket"), m("day")),
                &mut used
            ),
            "States.Format('s3://{}/raw/{}.csv', $.params.bucket, $.params.day)"
        );
        assert_eq!(
            markers().expression(&format!("it's {{x}} {}", m("a")), &mut used),
            r"States.Format('it\'s \{x\} {}', $.params.a)"
        );
        assert_eq!(used.into_iter().collect::<Vec<_>>(), ["a", "bucket", "day"]);
    }

    #[test]
    fn markers_inside_a_format_become_arguments_in_order() {
        let mut used = BTreeSet::new();
        let intrinsic = format!(
            "States.Format('s3://{}/{{}}/\\{{{}\\}}/', $$.Execution.Name)",
            m("bucket"),
            m("p")
        );
        assert_eq!(
            markers().rebind_format(&intrinsic, &mut used).unwrap(),
            r"States.Format('s3://{}/{}/\{{}\}/', $.params.bucket, $$.Execution.Name, $.params.p)"
        );
        assert!(markers().rebind_format("$.x", &mut used).is_none());
        // More arguments than placeholders is not a format the export wrote.
        assert!(
            markers()
                .rebind_format(&format!("States.Format('{}', a, b)", m("x")), &mut used)
                .is_none()
        );
    }

    #[test]
    fn payloads_bind_and_structure_refuses() {
        let mut machine = Json::from(
            Obj::new().with(
                "States",
                Obj::new().with(
                    "t",
                    Obj::new()
                        .with("Type", "Task")
                        .with("Comment", format!("reads {}", m("bucket")))
                        .with(
                            "Parameters",
                            Obj::new()
                                .with("Bucket", m("bucket"))
                                .with("Key", "fixed")
                                .with(
                                    "Args",
                                    vec![Json::from("run"), Json::from(m("day")), Json::Int(3)],
                                )
                                .with("Nested", Obj::new().with("Name", format!("x-{}", m("n")))),
                        ),
                ),
            ),
        );
        let used = markers().bind(&mut machine).unwrap();
        let text = serde_json::to_string(&machine).unwrap();
        assert_eq!(
            text,
            r#"{"States":{"t":{"Type":"Task","Comment":"reads <params.bucket>","Parameters":{"Bucket.$":"$.params.bucket","Key":"fixed","Args.$":"States.Array('run', $.params.day, 3)","Nested":{"Name.$":"States.Format('x-{}', $.params.n)"}}}}}"#
        );
        assert_eq!(used.into_iter().collect::<Vec<_>>(), ["bucket", "day", "n"]);

        let mut choice = Json::from(Obj::new().with(
            "Choices",
            vec![Json::from(Obj::new().with("StringEquals", m("x")))],
        ));
        let err = markers().bind(&mut choice).unwrap_err();
        assert!(
            err.contains("Choices[0].StringEquals") && err.contains("${params.x}"),
            "{err}"
        );
    }

    #[test]
    fn concrete_puts_the_values_back() {
        let values = BTreeMap::from([("dir".to_string(), "/data/in".to_string())]);
        assert_eq!(
            markers().concrete(&format!("{}/a.sql", m("dir")), &values),
            "/data/in/a.sql"
        );
        assert_eq!(markers().concrete("plain", &values), "plain");
    }
}
