//! Finding tables under a target: which folders are tables, which files
//! belong to them, and their partitions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::catalog::{self, Column, Format, Partition, Table};
use crate::s3::{LocalS3, S3Error, S3Uri};

use super::infer;

/// A table as the crawl found it.
#[derive(Debug, Clone)]
pub(crate) struct FoundTable {
    pub name: String,
    /// The table's prefix (ends with `/`).
    pub location: S3Uri,
    pub format: Format,
    pub columns: Vec<Column>,
    pub partition_keys: Vec<Column>,
    pub partitions: Vec<Partition>,
    /// How many data files the definition was read from.
    pub files: usize,
}

impl FoundTable {
    /// The catalog definition, as a new table (`schema_version` 1).
    pub fn to_table(&self, database: &str, now: &str) -> Table {
        Table {
            database: database.to_string(),
            name: self.name.clone(),
            location: self.location.to_string(),
            format: self.format,
            columns: self.columns.clone(),
            partition_keys: self.partition_keys.clone(),
            partitions: self.partitions.clone(),
            schema_version: 1,
            csv_header: (self.format == Format::Csv).then_some(true),
            updated_at: now.to_string(),
        }
    }
}

/// One data file: its URI, its key segments below the table's root and
/// its file (inside the pinned version of its prefix).
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    pub uri: S3Uri,
    pub segments: Vec<String>,
    pub path: PathBuf,
}

/// Finds the tables under `target` and reads their definitions, all from
/// one snapshot of the prefix.
pub(crate) fn scan_target(
    s3: &LocalS3,
    target: &S3Uri,
    table_prefix: &str,
    exclusions: &[Pattern],
    warnings: &mut Vec<String>,
) -> Result<Vec<FoundTable>, S3Error> {
    // Held until every file has been read: the versions stay on disk.
    let snapshot = s3.snapshot(target)?;
    let mut direct = Vec::new();
    let mut folders: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for object in snapshot.objects() {
        let Some(rel) = object.uri.relative_to(target) else {
            continue;
        };
        let segments: Vec<String> = rel.split('/').map(str::to_string).collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s.starts_with('.') || s.starts_with('_'))
            || exclusions.iter().any(|p| p.excludes(rel))
            || object.size == 0
        {
            continue;
        }
        let file = DataFile {
            uri: object.uri.clone(),
            segments,
            path: object.path.clone(),
        };
        if file.segments.len() == 1 {
            direct.push(file);
        } else {
            let folder = file.segments[0].clone();
            folders.entry(folder).or_default().push(file);
        }
    }
    if direct.is_empty() && folders.is_empty() {
        warnings.push(format!(
            "target {target} holds no data files (or does not exist); nothing was crawled there"
        ));
        return Ok(Vec::new());
    }

    // (raw name, root, files with segments relative to the root)
    let mut candidates: Vec<(String, S3Uri, Vec<DataFile>)> = Vec::new();
    if folders.keys().all(|f| partition_pair(f).is_some()) {
        let raw = target
            .key()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(target.bucket())
            .to_string();
        let mut files = direct;
        files.extend(folders.into_values().flatten());
        candidates.push((raw, target.clone(), files));
    } else {
        if !direct.is_empty() {
            warnings.push(format!(
                "target {target}: ignoring {} file(s) directly under it (e.g. {}), since it holds table folders",
                direct.len(),
                direct[0].uri
            ));
        }
        for (folder, files) in folders {
            let root = match target.join(&format!("{folder}/")) {
                Ok(root) => root,
                Err(e) => {
                    warnings.push(format!("target {target}: skipping folder `{folder}`: {e}"));
                    continue;
                }
            };
            let files = files
                .into_iter()
                .map(|mut f| {
                    f.segments.remove(0);
                    f
                })
                .collect();
            candidates.push((folder, root, files));
        }
    }

    let mut tables = Vec::new();
    for (raw, root, files) in candidates {
        let name = format!("{table_prefix}{}", table_name(&raw));
        if !catalog::valid_name(&name) {
            warnings.push(format!(
                "{root}: `{name}` is not a valid table name (at most 255 characters); skipped"
            ));
            continue;
        }
        if let Some(table) = build_table(name, root, files, warnings) {
            tables.push(table);
        }
    }
    drop(snapshot);
    Ok(tables)
}

/// A folder name as a table name: lowercased, every character other than
/// `a-z`, `0-9` and `_` replaced by `_`.
pub(crate) fn table_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `key=value` (a Hive partition folder) as its key and raw value.
fn partition_pair(segment: &str) -> Option<(&str, &str)> {
    segment.split_once('=').filter(|(k, _)| !k.is_empty())
}

/// Hive escapes characters in partition values as `%XX`; anything that
/// does not decode to UTF-8 is kept as written.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| value.to_string())
}

fn format_of(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".parquet") {
        Some(Format::Parquet)
    } else if lower.ends_with(".csv") {
        Some(Format::Csv)
    } else {
        None
    }
}

/// The partition keys and values a file's folders stand for.
fn layout_of(file: &DataFile) -> (Vec<String>, Vec<String>) {
    let folders = &file.segments[..file.segments.len().saturating_sub(1)];
    folders
        .iter()
        .enumerate()
        .map(|(i, segment)| match partition_pair(segment) {
            Some((key, value)) => (key.to_lowercase(), unescape(value)),
            None => (format!("partition_{i}"), segment.clone()),
        })
        .unzip()
}

/// Reads one table's format, partitions and columns from its files.
fn build_table(
    name: String,
    root: S3Uri,
    files: Vec<DataFile>,
    warnings: &mut Vec<String>,
) -> Option<FoundTable> {
    let (mut parquet, mut csv, mut other) = (Vec::new(), Vec::new(), Vec::new());
    for file in files {
        match file.segments.last().and_then(|n| format_of(n)) {
            Some(Format::Parquet) => parquet.push(file),
            Some(Format::Csv) => csv.push(file),
            None => other.push(file),
        }
    }
    if let Some(first) = other.first() {
        warnings.push(format!(
            "table `{name}`: ignoring {} file(s) that are neither Parquet nor CSV (e.g. {})",
            other.len(),
            first.uri
        ));
    }
    let (format, files, ignored) = if !parquet.is_empty() && parquet.len() >= csv.len() {
        (Format::Parquet, parquet, csv)
    } else if !csv.is_empty() {
        (Format::Csv, csv, parquet)
    } else {
        warnings.push(format!(
            "{root} holds no Parquet or CSV files; table `{name}` was not catalogued"
        ));
        return None;
    };
    if let Some(first) = ignored.first() {
        warnings.push(format!(
            "table `{name}` mixes Parquet and CSV files; catalogued as {format:?}, ignoring {} other file(s) (e.g. {})",
            ignored.len(),
            first.uri
        ));
    }

    // The partition layout most files share.
    let mut layouts: BTreeMap<Vec<String>, Vec<(Vec<String>, DataFile)>> = BTreeMap::new();
    for file in files {
        let (keys, values) = layout_of(&file);
        layouts.entry(keys).or_default().push((values, file));
    }
    let mut best: Option<Vec<String>> = None;
    for (keys, members) in &layouts {
        if best
            .as_ref()
            .and_then(|b| layouts.get(b))
            .is_none_or(|b| members.len() > b.len())
        {
            best = Some(keys.clone());
        }
    }
    let keys = best?;
    let members = layouts.remove(&keys)?;
    let outside: usize = layouts.values().map(Vec::len).sum();
    if let Some((_, example)) = layouts.values().flatten().next() {
        warnings.push(format!(
            "table `{name}`: ignoring {outside} file(s) outside its partition layout [{}] (e.g. {})",
            keys.join(", "),
            example.uri
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = keys.iter().find(|k| !seen.insert(k.as_str())) {
        warnings.push(format!(
            "table `{name}`: the partition key `{dup}` appears twice in its folders; not catalogued"
        ));
        return None;
    }

    let mut partitions: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for (values, file) in &members {
        if keys.is_empty() {
            break;
        }
        let folders = &file.segments[..file.segments.len().saturating_sub(1)];
        partitions
            .entry(values.clone())
            .or_insert_with(|| format!("{root}{}/", folders.join("/")));
    }
    let partition_keys: Vec<Column> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let integers = partitions
                .keys()
                .all(|values| values.get(i).is_some_and(|v| v.parse::<i64>().is_ok()));
            Column {
                name: key.clone(),
                data_type: if integers { "bigint" } else { "string" }.to_string(),
            }
        })
        .collect();

    let data: Vec<&DataFile> = members.iter().map(|(_, f)| f).collect();
    let mut columns = infer::columns(format, &name, &data, warnings);
    columns.retain(|c| !keys.contains(&c.name));
    if columns.is_empty() {
        warnings.push(format!(
            "table `{name}` at {root}: no readable columns in its files; not catalogued"
        ));
        return None;
    }
    Some(FoundTable {
        name,
        location: root,
        format,
        columns,
        partition_keys,
        partitions: partitions
            .into_iter()
            .map(|(values, location)| Partition { values, location })
            .collect(),
        files: data.len(),
    })
}

/// An exclusion pattern: `*` matches within a path segment, `**` across
/// segments, `?` one character other than `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Deep,
    Star,
    One,
    Char(char),
}

impl std::str::FromStr for Pattern {
    type Err = String;

    /// A pattern, or what is wrong with it ("pattern `x` is empty").
    fn from_str(text: &str) -> Result<Pattern, String> {
        Pattern::parse(text).map_err(|why| format!("pattern `{text}` {why}"))
    }
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Pattern, String> {
        if text.starts_with("s3://") {
            return Err("is a URI: write it relative to the target".to_string());
        }
        if text.starts_with('/') {
            return Err("starts with `/`: write it relative to the target".to_string());
        }
        let text = text.trim_end_matches('/');
        if text.is_empty() {
            return Err("is empty".to_string());
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if chars.peek() == Some(&'*') => {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    Token::Deep
                }
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(c),
            });
        }
        Ok(Pattern { tokens })
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let n = t.len();
        // `next[j]`: whether the tokens after the current one match t[j..].
        let mut next = vec![false; n + 1];
        next[n] = true;
        for token in self.tokens.iter().rev() {
            let mut row = vec![false; n + 1];
            for j in (0..=n).rev() {
                let here = t.get(j).copied();
                row[j] = match token {
                    Token::Char(c) => here == Some(*c) && next[j + 1],
                    Token::One => here.is_some_and(|h| h != '/') && next[j + 1],
                    Token::Star => next[j] || (here.is_some_and(|h| h != '/') && row[j + 1]),
                    Token::Deep => next[j] || (here.is_some() && row[j + 1]),
                };
            }
            next = row;
        }
        next[0]
    }

    /// Whether an object with this key (relative to the target) is
    /// excluded: the pattern matches the key or one of its folders.
    pub(crate) fn excludes(&self, rel: &str) -> bool {
        self.matches(rel) || rel.match_indices('/').any(|(i, _)| self.matches(&rel[..i]))
    }
}
