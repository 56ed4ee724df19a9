//! The loader: a DAG file becomes a validated [`Dag`] or a list of
//! [`Diagnostic`]s that say what to fix, each with its place in the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::{Dag, MAX_TASK_ID_LEN, TASK_COMMON_FIELDS, TaskDef, mentions, valid_task_id};
use crate::diagnostic::{Diagnostic, Diagnostics, LineIndex, nearest};
use crate::kind::{FieldError, Registry, unknown_fields};
use crate::read_limit::{ReadLimitError, read_limited};
use crate::retry::{Jitter, RetryPolicy, STEP_FUNCTIONS_LIMIT};
use crate::template::{self, Vars};

/// DAG files larger than this are refused before parsing: no real DAG comes
/// near it, and a runaway generator should get an error, not an OOM.
pub const MAX_DAG_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Validation reports at most this many errors. Past it, errors are still
/// counted but no longer located (each lookup walks the file's tables), so
/// a huge generated file full of mistakes fails fast instead of hanging.
pub const MAX_DIAGNOSTICS: usize = 100;

const TOP_LEVEL: &[&str] = &["dag", "params", "defaults", "tasks", "aws"];
const DAG_FIELDS: &[&str] = &["name", "description"];
const DEFAULTS_FIELDS: &[&str] = &["retry", "timeout_seconds"];
const RETRY_FIELDS: &[&str] = &[
    "max_attempts",
    "interval_seconds",
    "backoff_rate",
    "max_delay_seconds",
    "jitter",
];

/// Loads and validates a DAG file. `overrides` are `--param` values.
pub fn load(
    path: &Path,
    overrides: &[(String, String)],
    registry: &Registry,
) -> Result<Dag, Diagnostics> {
    let one = |d: Diagnostic| Diagnostics(vec![d]);
    // Bounded by what is read, not by the size the file system reports:
    // a pipe, a device or a /proc file reports 0 and may never end.
    let bytes = match read_limited(path, MAX_DAG_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(ReadLimitError::TooLarge { size, limit, kind }) => {
            let what = match size {
                Some(size) => format!("the DAG file is {size} bytes"),
                None => format!("the DAG file ({kind}) gave more than {limit} bytes"),
            };
            return Err(one(Diagnostic::new(
                path,
                format!("{what}; flux-engine reads DAG files of at most {limit} bytes"),
            )
            .help("split the pipeline, or check that this is the file you meant")));
        }
        Err(ReadLimitError::Io(e)) => {
            return Err(one(Diagnostic::new(
                path,
                format!("cannot read the DAG file: {e}"),
            )
            .help("check the path; DAG files usually live in dags/")));
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let position = LineIndex::new(valid).position(valid.len());
            return Err(one(Diagnostic::new(
                path,
                "the DAG file is not valid UTF-8 text",
            )
            .at(Some(position))
            .help(
                "DAG files are TOML, which must be UTF-8; re-save the file as UTF-8",
            )));
        }
    };
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    Loader::new(&absolute, text, registry).load(overrides)
}

/// Validates DAG text that did not come from a file (tests, generators).
fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

/// `path` made absolute against `base` and with `.` and `..` segments
/// folded, without touching the filesystem (the path need not exist yet).
fn absolute(path: &Path, base: &Path) -> String {
    use std::path::Component;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.display().to_string()
}

pub fn load_str(
    path: &Path,
    text: &str,
    overrides: &[(String, String)],
    registry: &Registry,
) -> Result<Dag, Diagnostics> {
    Loader::new(path, text, registry).load(overrides)
}

/// A section that is not a table, already reported.
struct NotATable;

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Loader<'a> {
    path: &'a Path,
    text: &'a str,
    registry: &'a Registry,
    spans: std::cell::OnceCell<Option<toml::Spanned<toml::de::DeTable<'a>>>>,
    lines: std::cell::OnceCell<LineIndex<'a>>,
    errors: Vec<Diagnostic>,
    /// The data locations each task's fields name, by task id, for the
    /// check that readers and writers of one place are ordered.
    locations: Vec<(String, Vec<crate::config::Location>)>,
}

impl<'a> Loader<'a> {
    fn new(path: &'a Path, text: &'a str, registry: &'a Registry) -> Self {
        Loader {
            path,
            text,
            registry,
            spans: Default::default(),
            lines: Default::default(),
            errors: Vec::new(),
            locations: Vec::new(),
        }
    }

    fn position(&self, span: Range<usize>) -> (usize, usize) {
        self.lines
            .get_or_init(|| LineIndex::new(self.text))
            .span_position(&span)
    }

    /// The span of the key (`key = true`) or of the value (`key = false`)
    /// at `path`. Spans are only needed for errors, so the spanned parse
    /// happens lazily, the first time an error needs a place.
    fn locate(&self, path: &[Seg], key: bool) -> Option<(usize, usize)> {
        if self.errors.len() >= MAX_DIAGNOSTICS {
            return None;
        }
        let root = self
            .spans
            .get_or_init(|| toml::de::DeTable::parse(self.text).ok())
            .as_ref()?;
        let mut table: &toml::de::DeTable = root.get_ref();
        let mut value: Option<&toml::Spanned<toml::de::DeValue>> = None;
        let mut found: Option<Range<usize>> = None;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            match seg {
                Seg::Key(name) => {
                    if let Some(v) = value {
                        table = v.get_ref().as_table()?;
                    }
                    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
                    found = Some(if key && last { k.span() } else { v.span() });
                    value = Some(v);
                }
                Seg::Index(n) => {
                    let array = value?.get_ref().as_array()?;
                    let item = array.get(*n)?;
                    found = Some(item.span());
                    value = Some(item);
                }
            }
        }
        found.map(|span| self.position(span))
    }

    /// The place of the value at the keys `path`, then `field`.
    fn value_at(&self, path: &[&str], field: &str) -> Option<(usize, usize)> {
        let segs: Vec<Seg> = path.iter().chain([&field]).map(|s| Seg::Key(s)).collect();
        self.locate(&segs, false)
    }

    fn error(
        &mut self,
        position: Option<(usize, usize)>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.errors
            .push(Diagnostic::new(self.path, message).at(position).help(help));
    }

    fn unknown_keys(&mut self, table: &toml::Table, allowed: &[&str], path: &[&str], what: &str) {
        for key in table.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let mut segs: Vec<Seg> = path.iter().map(|s| Seg::Key(s)).collect();
            segs.push(Seg::Key(key));
            let position = self.locate(&segs, true);
            let help = match nearest(key, allowed.iter().copied()) {
                Some(near) => format!(
                    "did you mean `{near}`? {what} accepts: {}",
                    allowed.join(", ")
                ),
                None => format!("remove it; {what} accepts: {}", allowed.join(", ")),
            };
            self.error(position, format!("unknown field `{key}` in {what}"), help);
        }
    }

    fn load(mut self, overrides: &[(String, String)]) -> Result<Dag, Diagnostics> {
        let doc: toml::Table = match toml::from_str(self.text) {
            Ok(doc) => doc,
            Err(e) => {
                let position = e.span().map(|s| self.position(s));
                let (message, help) = match e.span() {
                    Some(span) if e.message().trim_end() == "duplicate key" => {
                        self.duplicate_key(span)
                    }
                    _ => (
                        format!("invalid TOML: {}", e.message().trim_end()),
                        "fix the TOML syntax at this place (https://toml.io describes the format)"
                            .to_string(),
                    ),
                };
                self.error(position, message, help);
                return Err(Diagnostics(self.errors));
            }
        };
        self.unknown_keys(&doc, TOP_LEVEL, &[], "a DAG file");

        let (name, description) = self.dag_section(&doc);
        let (params, path_params) = self.params(&doc, overrides);
        let (default_retry, default_timeout) = self.defaults(&doc);
        let aws = self.aws_section(&doc, &params);
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut dag = Dag {
            name,
            description,
            path: self.path.to_path_buf(),
            dir,
            params,
            path_params,
            tasks: Vec::new(),
            graph: DiGraph::new(),
            aws,
            aws_unsubstituted: doc
                .get("aws")
                .and_then(toml::Value::as_table)
                .cloned()
                .unwrap_or_default(),
        };
        self.tasks(&doc, &mut dag, default_retry, default_timeout);
        self.graph(&mut dag);
        self.ordered_data(&dag);
        if self.errors.is_empty() {
            Ok(dag)
        } else {
            let more = self.errors.len().saturating_sub(MAX_DIAGNOSTICS);
            self.errors.truncate(MAX_DIAGNOSTICS);
            // In file order, as an editor lists them; errors with no place first.
            self.errors.sort_by_key(|d| d.position);
            if more > 0 {
                self.errors.push(
                    Diagnostic::new(self.path, format!("{more} more error(s) not shown"))
                        .help("fix the errors above and validate again"),
                );
            }
            Err(Diagnostics(self.errors))
        }
    }

    /// A task that reads a location another task writes must be ordered
    /// with it: neither waiting for the other, the reader may read before
    /// the writer has written, or while it publishes. A location no task
    /// writes is the DAG's input (raw files arriving from elsewhere) and
    /// is not checked.
    fn ordered_data(&mut self, dag: &Dag) {
        let index: HashMap<&str, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let locations = std::mem::take(&mut self.locations);
        // Each task that names a location, and the tasks downstream of it:
        // two such tasks are ordered when one is downstream of the other.
        let downstream: HashMap<usize, Vec<usize>> = locations
            .iter()
            .filter_map(|(id, _)| index.get(id.as_str()))
            .map(|&i| (i, dag.descendants(i)))
            .collect();
        let ordered = |a: usize, b: usize| {
            downstream[&a].binary_search(&b).is_ok() || downstream[&b].binary_search(&a).is_ok()
        };
        for (reader, read) in &locations {
            let Some(&r) = index.get(reader.as_str()) else {
                continue;
            };
            for place in read.iter().filter(|l| !l.writes) {
                for (writer, written) in &locations {
                    if writer == reader {
                        continue;
                    }
                    let Some(&w) = index.get(writer.as_str()) else {
                        continue;
                    };
                    let Some(overlap) = written.iter().find(|l| l.writes && l.overlaps(place))
                    else {
                        continue;
                    };
                    if ordered(r, w) {
                        continue;
                    }
                    let mut at_path =
                        vec![Seg::Key("tasks"), Seg::Key(reader), Seg::Key(place.field)];
                    if let Some(i) = place.index {
                        at_path.push(Seg::Index(i));
                    }
                    // The entry, else the field (one prefix written
                    // without a list), else the task's header.
                    let at = self
                        .locate(&at_path, false)
                        .or_else(|| self.locate(&at_path[..3], false))
                        .or_else(|| self.locate(&[Seg::Key("tasks"), Seg::Key(reader)], true));
                    let named = match overlap.index {
                        Some(i) => format!("{}[{i}]", overlap.field),
                        None => overlap.field.to_string(),
                    };
                    self.error(
                        at,
                        format!(
                            "task `{reader}` reads {}, where task `{writer}` writes ({} in its `{named}`), but neither waits for the other: `{reader}` could read before `{writer}` has written, or while it publishes",
                            place.uri, overlap.uri
                        ),
                        format!(
                            "add \"{writer}\" to the `depends_on` of `{reader}` (or, if `{writer}` should run after it, \"{reader}\" to the `depends_on` of `{writer}`)"
                        ),
                    );
                }
            }
        }
        self.locations = locations;
    }

    /// The message and help for TOML's "duplicate key" at `span`: a task
    /// defined twice is named as such, with the line of the first one.
    fn duplicate_key(&self, span: Range<usize>) -> (String, String) {
        let key = self
            .text
            .get(span.clone())
            .unwrap_or_default()
            .trim_matches(['"', '\'']);
        let line_start = self
            .text
            .get(..span.start)
            .and_then(|t| t.rfind('\n'))
            .map_or(0, |i| i + 1);
        let before: String = self
            .text
            .get(line_start..span.start)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if before != "[tasks." {
            return (
                format!("invalid TOML: duplicate key `{key}`"),
                "a key may appear only once in a table: remove or rename one of them".into(),
            );
        }
        let header = format!("[tasks.{key}]");
        let first = self.text[..line_start]
            .lines()
            .position(|l| l.split('#').next().unwrap_or_default().trim() == header)
            .map(|n| format!(" (first defined on line {})", n + 1))
            .unwrap_or_default();
        (
            format!("duplicate task id `{key}`: {header} is defined twice{first}"),
            "task ids must be unique: rename one of the tasks, or merge the two sections".into(),
        )
    }

    /// The top-level section `name` as a table, `None` when the file has
    /// none; anything else is reported (with `help`) as [`NotATable`].
    fn section<'t>(
        &mut self,
        doc: &'t toml::Table,
        name: &str,
        help: &str,
    ) -> Result<Option<&'t toml::Table>, NotATable> {
        match doc.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(table)) => Ok(Some(table)),
            Some(_) => {
                let at = self.locate(&[Seg::Key(name)], false);
                self.error(at, format!("`{name}` must be a table"), help);
                Err(NotATable)
            }
        }
    }

    fn dag_section(&mut self, doc: &toml::Table) -> (String, Option<String>) {
        let section = match self.section(doc, "dag", "write it as a [dag] section with a `name`") {
            Ok(Some(section)) => section,
            Ok(None) => {
                self.error(
                    Some((1, 1)),
                    "missing [dag] section",
                    "start the file with:\n    [dag]\n    name = \"my_pipeline\"",
                );
                return (String::new(), None);
            }
            Err(NotATable) => return (String::new(), None),
        };
        self.unknown_keys(section, DAG_FIELDS, &["dag"], "[dag]");
        let name = match section.get("name") {
            Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                let at = self.locate(&[Seg::Key("dag"), Seg::Key("name")], false);
                self.error(
                    at,
                    "`dag.name` must be a non-empty string",
                    "write for example `name = \"rental\"`",
                );
                String::new()
            }
            None => {
                let at = self.locate(&[Seg::Key("dag")], true);
                self.error(
                    at,
                    "missing `name` in [dag]",
                    "add `name = \"my_pipeline\"` under [dag]",
                );
                String::new()
            }
        };
        let description = match section.get("description") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                let at = self.locate(&[Seg::Key("dag"), Seg::Key("description")], false);
                self.error(at, "`dag.description` must be a string", "quote it");
                None
            }
        };
        (name, description)
    }

    fn params(
        &mut self,
        doc: &toml::Table,
        overrides: &[(String, String)],
    ) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let mut params = BTreeMap::new();
        let mut paths: BTreeSet<String> = BTreeSet::new();
        let section = self.section(
            doc,
            "params",
            "write it as a [params] section of `name = value` lines",
        );
        if let Ok(Some(table)) = section {
            for (key, value) in table {
                let text = match value {
                    toml::Value::Table(declared) => {
                        match self.typed_param(key, declared, overrides) {
                            Some((text, is_path)) => {
                                if is_path {
                                    paths.insert(key.clone());
                                }
                                text
                            }
                            None => continue,
                        }
                    }
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        let at = self.locate(&[Seg::Key("params"), Seg::Key(key)], false);
                        self.error(
                            at,
                            format!("parameter `{key}` is a {}; parameters are strings, numbers or booleans", other.type_str()),
                            "give it a single value; a run can override it with --param KEY=VALUE",
                        );
                        continue;
                    }
                };
                params.insert(key.clone(), text);
            }
        }
        for (key, value) in overrides {
            if params.contains_key(key) {
                let value = if paths.contains(key) {
                    absolute(Path::new(value), &cwd())
                } else {
                    value.clone()
                };
                params.insert(key.clone(), value);
            } else {
                let declared: Vec<&str> = params.keys().map(String::as_str).collect();
                let hint = nearest(key, declared.iter().copied())
                    .map(|n| format!("did you mean `{n}`? "))
                    .unwrap_or_default();
                let help = format!(
                    "{hint}declare it under [params] with a default (declared: {})",
                    if declared.is_empty() {
                        "none".into()
                    } else {
                        declared.join(", ")
                    }
                );
                self.error(
                    None,
                    format!("--param {key}: the DAG declares no parameter `{key}`"),
                    help,
                );
            }
        }
        (params, paths)
    }

    /// A parameter declared as a table: `{ default = "...", type = "path" }`.
    /// A path parameter's default is relative to the DAG file's folder and a
    /// `--param` value relative to the working directory, as a user typing
    /// either expects; both are recorded absolute so `resume` finds the
    /// same files from any directory. Returns the default and whether the
    /// parameter is a path; `None` after reporting an error.
    fn typed_param(
        &mut self,
        key: &str,
        declared: &toml::Table,
        overrides: &[(String, String)],
    ) -> Option<(String, bool)> {
        let at = |this: &mut Self, field: Option<&str>| match field {
            Some(field) => {
                this.locate(&[Seg::Key("params"), Seg::Key(key), Seg::Key(field)], false)
            }
            None => this.locate(&[Seg::Key("params"), Seg::Key(key)], false),
        };
        for field in declared.keys() {
            if !["default", "type", "description"].contains(&field.as_str()) {
                let place =
                    self.locate(&[Seg::Key("params"), Seg::Key(key), Seg::Key(field)], true);
                self.error(
                    place,
                    format!("parameter `{key}` has an unknown field `{field}`"),
                    "a parameter table takes `default`, `type` (\"string\" or \"path\") and `description`",
                );
                return None;
            }
        }
        let is_path = match declared.get("type") {
            None => false,
            Some(toml::Value::String(t)) if t == "string" => false,
            Some(toml::Value::String(t)) if t == "path" => true,
            Some(other) => {
                let place = at(self, Some("type"));
                self.error(
                    place,
                    format!("parameter `{key}` has type {other}; the types are \"string\" and \"path\""),
                    "write `type = \"path\"` for a file or folder (relative to the DAG file, or to the working directory when given with --param), or `type = \"string\"`",
                );
                return None;
            }
        };
        let default = match declared.get("default") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) if !is_path => i.to_string(),
            Some(toml::Value::Float(f)) if !is_path => f.to_string(),
            Some(toml::Value::Boolean(b)) if !is_path => b.to_string(),
            _ => {
                let place = at(self, None);
                self.error(
                    place,
                    format!("parameter `{key}` needs a `default`: a string{}", if is_path { " (a path)" } else { ", number or boolean" }),
                    "write for example `input_dir = { default = \"data/sample\", type = \"path\" }`",
                );
                return None;
            }
        };
        if !is_path || overrides.iter().any(|(k, _)| k == key) {
            return Some((default, is_path));
        }
        let dag_dir = self.path.parent().unwrap_or(Path::new(""));
        Some((absolute(&dag_dir.join(default), &cwd()), true))
    }

    /// The `[aws]` section with its strings substituted. Only
    /// `${params.NAME}` and `${dag.dir}` mean something there: a production
    /// setting has no run or task, so `${run.id}` and `${task.id}` are errors.
    fn aws_section(&mut self, doc: &toml::Table, params: &BTreeMap<String, String>) -> toml::Table {
        let Ok(Some(section)) = self.section(
            doc,
            "aws",
            "write it as an [aws] section of `setting = value` lines",
        ) else {
            return toml::Table::new();
        };
        // A NUL cannot occur in TOML text, so it marks a value that came
        // from a run-time reference without clashing with real content.
        const NO_VALUE: &str = "\u{0}";
        let vars = Vars {
            params: params.clone(),
            run_id: NO_VALUE.into(),
            task_id: NO_VALUE.into(),
            dag_dir: self
                .path
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        };
        let mut out = toml::Table::new();
        for (key, value) in section {
            let at = |s: &Self| s.locate(&[Seg::Key("aws"), Seg::Key(key)], false);
            match template::substitute_value(value, &vars) {
                Ok(v) if mentions(&v, NO_VALUE) => {
                    let position = at(self);
                    self.error(
                        position,
                        format!("[aws] {key}: `${{run.id}}` and `${{task.id}}` have no value in [aws]"),
                        "production settings belong to the whole state machine: use ${params.NAME} or a fixed value",
                    );
                }
                Ok(v) => {
                    out.insert(key.clone(), v);
                }
                Err(e) => {
                    let position = at(self);
                    self.error(position, format!("[aws] {key}: {}", e.message), e.help);
                }
            }
        }
        out
    }

    fn defaults(&mut self, doc: &toml::Table) -> (RetryPolicy, Option<Duration>) {
        let Ok(Some(section)) = self.section(doc, "defaults", "write it as a [defaults] section")
        else {
            return (RetryPolicy::default(), None);
        };
        self.unknown_keys(section, DEFAULTS_FIELDS, &["defaults"], "[defaults]");
        let retry = section
            .get("retry")
            .map(|v| self.retry(v, &["defaults"]))
            .unwrap_or_default();
        let timeout = section
            .get("timeout_seconds")
            .and_then(|v| self.timeout(v, &["defaults"]));
        (retry, timeout)
    }

    fn positive_int(
        &mut self,
        value: &toml::Value,
        path: &[&str],
        field: &str,
        min: i64,
    ) -> Option<u64> {
        match value.as_integer() {
            Some(n) if n >= min && n as u64 <= STEP_FUNCTIONS_LIMIT => Some(n as u64),
            _ => {
                let at = self.value_at(path, field);
                self.error(
                    at,
                    format!("`{field}` must be a whole number from {min} to {STEP_FUNCTIONS_LIMIT}, found {value}"),
                    format!("write for example `{field} = {}` (Step Functions accepts the same range)", min.max(3)),
                );
                None
            }
        }
    }

    fn timeout(&mut self, value: &toml::Value, path: &[&str]) -> Option<Duration> {
        self.positive_int(value, path, "timeout_seconds", 1)
            .map(Duration::from_secs)
    }

    fn retry(&mut self, value: &toml::Value, path: &[&str]) -> RetryPolicy {
        let mut retry_path: Vec<&str> = path.to_vec();
        retry_path.push("retry");
        let Some(table) = value.as_table() else {
            let segs: Vec<Seg> = retry_path.iter().map(|s| Seg::Key(s)).collect();
            let at = self.locate(&segs, false);
            self.error(
                at,
                "`retry` must be a table",
                "write for example `retry = { max_attempts = 3, interval_seconds = 2, backoff_rate = 2.0 }`",
            );
            return RetryPolicy::default();
        };
        self.unknown_keys(table, RETRY_FIELDS, &retry_path, "`retry`");
        // A retry table with fields left out takes Step Functions' defaults
        // for them: three attempts, one second, doubling.
        let mut policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        if let Some(v) = table.get("max_attempts")
            && let Some(n) = self.positive_int(v, &retry_path, "max_attempts", 1)
        {
            policy.max_attempts = n.min(u32::MAX as u64) as u32;
        }
        if let Some(v) = table.get("interval_seconds")
            && let Some(n) = self.positive_int(v, &retry_path, "interval_seconds", 1)
        {
            policy.interval_seconds = n;
        }
        if let Some(v) = table.get("max_delay_seconds") {
            policy.max_delay_seconds = self.positive_int(v, &retry_path, "max_delay_seconds", 1);
        }
        if let Some(v) = table.get("backoff_rate") {
            let rate = match v {
                toml::Value::Float(f) => Some(*f),
                toml::Value::Integer(i) => Some(*i as f64),
                _ => None,
            };
            match rate {
                Some(rate) if rate >= 1.0 && rate.is_finite() => policy.backoff_rate = rate,
                _ => {
                    let at = self.value_at(&retry_path, "backoff_rate");
                    self.error(
                        at,
                        format!("`backoff_rate` must be a number of at least 1.0, found {v}"),
                        "use 1.0 for a constant delay, 2.0 to double it on each retry",
                    );
                }
            }
        }
        if let Some(v) = table.get("jitter") {
            match v.as_str() {
                Some("full") => policy.jitter = Jitter::Full,
                Some("none") => policy.jitter = Jitter::None,
                _ => {
                    let at = self.value_at(&retry_path, "jitter");
                    self.error(
                        at,
                        format!("`jitter` must be \"full\" or \"none\", found {v}"),
                        "write `jitter = \"full\"` or leave it out",
                    );
                }
            }
        }
        policy
    }

    fn tasks(
        &mut self,
        doc: &toml::Table,
        dag: &mut Dag,
        default_retry: RetryPolicy,
        default_timeout: Option<Duration>,
    ) {
        let tasks = match doc.get("tasks") {
            Some(toml::Value::Table(tasks)) if !tasks.is_empty() => tasks,
            Some(toml::Value::Table(_)) | None => {
                // At the empty [tasks] section, else at the end of the file,
                // where tasks would be added.
                let at = self
                    .locate(&[Seg::Key("tasks")], true)
                    .or_else(|| Some(self.position(self.text.len()..self.text.len())));
                self.error(
                    at,
                    "the DAG has no tasks",
                    "add at least one task:\n    [tasks.hello]\n    type = \"shell\"\n    command = \"echo hello\"",
                );
                return;
            }
            Some(_) => {
                let at = self.locate(&[Seg::Key("tasks")], false);
                self.error(
                    at,
                    "`tasks` must be a table of tasks",
                    "write each task as a [tasks.ID] section",
                );
                return;
            }
        };
        let mut validation_vars = Vars {
            params: dag.params.clone(),
            run_id: "validation-run".into(),
            task_id: String::new(),
            dag_dir: dag.dir.display().to_string(),
        };
        for (id, value) in tasks {
            // Located only when an error needs it: a scan of the spanned
            // document per task would make loading quadratic.
            let header = |s: &Self| s.locate(&[Seg::Key("tasks"), Seg::Key(id)], true);
            if !valid_task_id(id) {
                self.error(
                    header(self),
                    format!("task id `{id}` is not allowed"),
                    format!(
                        "use 1 to {MAX_TASK_ID_LEN} letters, digits, `_` or `-`, starting with a letter or digit (ids become file and Step Functions state names)"
                    ),
                );
                continue;
            }
            let Some(table) = value.as_table() else {
                self.error(
                    header(self),
                    format!("task `{id}` must be a table"),
                    format!("write it as a [tasks.{id}] section"),
                );
                continue;
            };
            // A task with a bad type still joins the graph, so that its
            // dependency problems are reported in the same pass.
            let kind = match table.get("type") {
                Some(toml::Value::String(kind)) => kind.clone(),
                Some(_) => {
                    let at =
                        self.locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key("type")], false);
                    self.error(
                        at,
                        format!("`type` of task `{id}` must be a string"),
                        self.known_types_help(""),
                    );
                    String::new()
                }
                None => {
                    self.error(
                        header(self),
                        format!("task `{id}` has no `type`"),
                        self.known_types_help("add `type = \"shell\"`; "),
                    );
                    String::new()
                }
            };
            let depends_on = self.depends_on(id, table);
            let path = ["tasks", id.as_str()];
            let retry = match table.get("retry") {
                Some(v) => self.retry(v, &path),
                None => default_retry.clone(),
            };
            let timeout = match table.get("timeout_seconds") {
                Some(v) => self.timeout(v, &path),
                None => default_timeout,
            };
            let description = table
                .get("description")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let fields: toml::Table = table
                .iter()
                .filter(|(k, _)| !TASK_COMMON_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !kind.is_empty() {
                validation_vars.task_id = id.clone();
                self.kind_fields(id, &kind, &fields, &validation_vars, &depends_on);
            }
            dag.tasks.push(TaskDef {
                id: id.clone(),
                kind,
                description,
                depends_on,
                retry,
                timeout,
                fields,
            });
        }
    }

    /// Checks a task's own fields: substitution, the kind's parse, and
    /// fields the kind does not know.
    fn kind_fields(
        &mut self,
        id: &str,
        kind: &str,
        fields: &toml::Table,
        vars: &Vars,
        depends_on: &[String],
    ) {
        let Some(task_kind) = self.registry.get(kind).cloned() else {
            let at = self.locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key("type")], false);
            let near = nearest(kind, self.registry.names())
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            self.error(
                at,
                format!("unknown task type `{kind}` in task `{id}`"),
                format!("{near}{}", self.known_types_help("")),
            );
            return;
        };
        let mut substituted = toml::Table::new();
        for (key, value) in fields {
            match template::substitute_value(value, vars) {
                Ok(v) => {
                    substituted.insert(key.clone(), v);
                }
                Err(e) => {
                    let at = self.locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key(key)], false);
                    self.error(
                        at,
                        format!("task `{id}`, field `{key}`: {}", e.message),
                        e.help,
                    );
                    // Keep the raw value, so that the kind still checks the
                    // task's other fields and unknown ones are reported too.
                    substituted.insert(key.clone(), value.clone());
                }
            }
        }
        if let Err(FieldError {
            field,
            message,
            help,
        }) = task_kind.parse(&substituted)
        {
            let header = || self.locate(&[Seg::Key("tasks"), Seg::Key(id)], true);
            let at = match &field {
                Some(f) => self
                    .locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key(f)], false)
                    .or_else(header),
                None => header(),
            };
            self.error(
                at,
                format!("task `{id}` (type `{kind}`): {message}"),
                help.unwrap_or_else(|| format!("see the `{kind}` fields in the README")),
            );
        }
        // Inputs named by the fields must be dependencies: a report section
        // reading a query the report does not wait for can never work, and
        // would fail only after everything before it ran.
        for (field, dep) in task_kind.references(&substituted) {
            if depends_on.iter().any(|d| d == &dep) {
                continue;
            }
            let top = field.split(['[', '.']).next().unwrap_or(&field).to_string();
            let at = self
                .locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key(&top)], false)
                .or_else(|| self.locate(&[Seg::Key("tasks"), Seg::Key(id)], true));
            let mut wanted = depends_on.to_vec();
            wanted.push(dep.clone());
            self.error(
                at,
                format!(
                    "task `{id}` (type `{kind}`): `{field}` reads task `{dep}`, which is not in its `depends_on`, so it would run before `{dep}` has a result"
                ),
                format!(
                    "add it: depends_on = [{}]",
                    wanted
                        .iter()
                        .map(|d| format!("\"{d}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        // Files the fields name must exist: a query file with a typo in its
        // name would otherwise fail only when its task's turn comes.
        let dag_dir = self.path.parent().unwrap_or(Path::new(""));
        for (field, file) in task_kind.files(&substituted) {
            let path = dag_dir.join(&file);
            if path.is_file() {
                continue;
            }
            let at = self
                .locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key(&field)], false)
                .or_else(|| self.locate(&[Seg::Key("tasks"), Seg::Key(id)], true));
            self.error(
                at,
                format!(
                    "task `{id}` (type `{kind}`): `{field}` names {}, which {}",
                    path.display(),
                    if path.exists() {
                        "is not a file"
                    } else {
                        "does not exist"
                    }
                ),
                format!(
                    "create it, or correct `{field}` (a path relative to the DAG file's folder, {})",
                    if dag_dir.as_os_str().is_empty() { "." .to_string() } else { dag_dir.display().to_string() }
                ),
            );
        }
        let locations = task_kind.locations(&substituted);
        if !locations.is_empty() {
            self.locations.push((id.to_string(), locations));
        }
        // Reported also when the parse failed: a misspelt field is the usual
        // reason a required one is missing.
        let mut known: Vec<&str> = task_kind.fields().to_vec();
        known.extend_from_slice(TASK_COMMON_FIELDS);
        for unknown in unknown_fields(task_kind.as_ref(), fields) {
            let at = self.locate(&[Seg::Key("tasks"), Seg::Key(id), Seg::Key(unknown)], true);
            let help = match nearest(unknown, known.iter().copied()) {
                Some(near) => format!(
                    "did you mean `{near}`? a `{kind}` task accepts: {}",
                    known.join(", ")
                ),
                None => format!("remove it; a `{kind}` task accepts: {}", known.join(", ")),
            };
            self.error(
                at,
                format!("unknown field `{unknown}` in task `{id}`"),
                help,
            );
        }
    }

    fn known_types_help(&self, prefix: &str) -> String {
        let names: Vec<&str> = self.registry.names().collect();
        format!("{prefix}known types: {}", names.join(", "))
    }

    fn depends_on(&mut self, id: &str, table: &toml::Table) -> Vec<String> {
        let Some(value) = table.get("depends_on") else {
            return Vec::new();
        };
        let at = |s: &Self| {
            s.locate(
                &[Seg::Key("tasks"), Seg::Key(id), Seg::Key("depends_on")],
                false,
            )
        };
        let Some(items) = value.as_array() else {
            let position = at(self);
            self.error(
                position,
                format!("`depends_on` of task `{id}` must be a list of task ids"),
                "write for example `depends_on = [\"extract\"]`",
            );
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(dep) if !seen.insert(dep) => {
                    let position = self.locate(
                        &[
                            Seg::Key("tasks"),
                            Seg::Key(id),
                            Seg::Key("depends_on"),
                            Seg::Index(i),
                        ],
                        false,
                    );
                    self.error(
                        position,
                        format!("task `{id}` lists `{dep}` twice in `depends_on`"),
                        "remove the second one",
                    );
                }
                Some(dep) => out.push(dep.to_string()),
                None => {
                    let position = self.locate(
                        &[
                            Seg::Key("tasks"),
                            Seg::Key(id),
                            Seg::Key("depends_on"),
                            Seg::Index(i),
                        ],
                        false,
                    );
                    self.error(position, format!("`depends_on` of task `{id}` must hold task ids as strings, found {item}"), "quote the id");
                }
            }
        }
        out
    }

    fn graph(&mut self, dag: &mut Dag) {
        let ids: HashMap<&str, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut graph = DiGraph::with_capacity(dag.tasks.len(), dag.tasks.len());
        for i in 0..dag.tasks.len() {
            graph.add_node(i);
        }
        for (i, task) in dag.tasks.iter().enumerate() {
            for (n, dep) in task.depends_on.iter().enumerate() {
                match ids.get(dep.as_str()) {
                    Some(&d) => {
                        graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
                    }
                    None => {
                        let position = self.locate(
                            &[
                                Seg::Key("tasks"),
                                Seg::Key(&task.id),
                                Seg::Key("depends_on"),
                                Seg::Index(n),
                            ],
                            false,
                        );
                        // Past the report limit the error only counts: skip
                        // the search for a suggestion, linear in the task count.
                        let near = if self.errors.len() < MAX_DIAGNOSTICS {
                            nearest(dep, ids.keys().copied())
                        } else {
                            None
                        };
                        let help = match near {
                            Some(near) => format!("did you mean `{near}`?"),
                            None => format!(
                                "define a [tasks.{dep}] section, or remove `{dep}` from `depends_on`"
                            ),
                        };
                        self.errors.push(
                            Diagnostic::new(
                                self.path,
                                format!(
                                    "task `{}` depends on `{dep}`, which is not a task in this DAG",
                                    task.id
                                ),
                            )
                            .at(position)
                            .help(help),
                        );
                    }
                }
            }
        }
        // Kosaraju's algorithm here is iterative; petgraph's Tarjan recurses
        // once per node of a chain and overflows the stack on long chains.
        for component in kosaraju_scc(&graph) {
            let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
            if component.len() < 2 && !self_loop {
                continue;
            }
            let cycle = cycle_path(&graph, &component);
            let names: Vec<&str> = cycle
                .iter()
                .map(|n| dag.tasks[n.index()].id.as_str())
                .collect();
            let first = names[0];
            let position = self.locate(
                &[Seg::Key("tasks"), Seg::Key(first), Seg::Key("depends_on")],
                false,
            );
            self.errors.push(
                Diagnostic::new(
                    self.path,
                    format!("dependency cycle: {} -> {first}", names.join(" -> ")),
                )
                .at(position)
                .help("a DAG cannot have cycles: remove one of these dependencies"),
            );
        }
        dag.graph = graph;
    }
}

/// A cycle through the nodes of one strongly connected component, starting
/// at its lowest-numbered node (the first declared, so the message is stable).
fn cycle_path(graph: &DiGraph<usize, ()>, component: &[NodeIndex]) -> Vec<NodeIndex> {
    let start = *component.iter().min().expect("a component has a node");
    let members: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
    let inside = |n: &NodeIndex| members.contains(n);
    // Breadth-first search for the shortest way back to `start`.
    let mut previous: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(node).filter(inside).collect();
        next.sort();
        for n in next {
            if n == start {
                let mut path = vec![node];
                let mut at = node;
                while at != start {
                    at = previous[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = previous.entry(n) {
                e.insert(node);
                queue.push_back(n);
            }
        }
    }
    vec![start]
}
