//! The local data catalog: what a Glue crawler writes and Athena reads.
//!
//! One JSON file per table, `STATE_ROOT/catalog/DATABASE/TABLE.json`.
//! Types are Glue's (Hive's) type names, so the same definitions describe
//! the production catalog.
//!
//! # Changes are all or nothing
//!
//! A writer changes a database in a transaction ([`Catalog::begin`]): the
//! table definitions it puts are kept in memory until
//! [`CatalogTx::commit`], which writes them all to a journal
//! (`DATABASE/.flux-journal.json`, fsynced, then renamed into place: the
//! commit point), then replaces each table's file (temp file, fsync,
//! rename), then removes the journal. A transaction dropped without a
//! commit (a failed or cancelled crawl) changes nothing.
//!
//! Writers hold an exclusive `flock` on `DATABASE/.flux-lock` for the
//! whole transaction, and readers a shared one while they read, so a
//! reader sees a database before a commit or after it, never in between.
//! A writer killed after its commit point leaves the journal behind:
//! readers read the journal's tables in place of the files, and the next
//! transaction (the next crawl, or the killed one run again on resume)
//! finishes the job before anything else. A writer killed earlier left
//! at most temp files (`.flux-part.*`), which the next transaction
//! removes; nobody else can be writing them while it holds the lock. The
//! kernel drops a dead writer's lock.
//!
//! This module only stores and reads definitions; inferring them is the
//! crawler's job and querying them the query engine's.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use engine::file_lock::FileLock;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::s3::fsutil;

/// Locked exclusively by a writer, shared by readers (see the module docs).
const LOCK_FILE: &str = ".flux-lock";

/// A committed transaction's tables, until they are all in place.
const JOURNAL_FILE: &str = ".flux-journal.json";

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog {path} is not a table definition: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "`{0}` is not a valid database or table name: use lowercase letters, digits and `_` (Glue and Athena's rule), at most 255 characters"
    )]
    InvalidName(String),
    #[error("catalog: table `{table}` belongs to database `{table_database}`, not `{database}`")]
    WrongDatabase {
        table: String,
        table_database: String,
        database: String,
    },
}

impl CatalogError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> CatalogError {
        let path = path.display().to_string();
        move |source| CatalogError::Io { path, source }
    }
}

/// What the journal holds: every table a transaction put.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    tables: Vec<Table>,
}

/// A column and its Glue type (`string`, `bigint`, `int`, `double`,
/// `boolean`, `date`, `timestamp`, `decimal(p,s)`, `array<...>`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
}

/// One Hive-style partition: `values` line up with the table's
/// `partition_keys`; `location` is the partition's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub values: Vec<String>,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub database: String,
    pub name: String,
    /// The table's `s3://` prefix.
    pub location: String,
    pub format: Format,
    /// Data columns, partition keys excluded.
    pub columns: Vec<Column>,
    pub partition_keys: Vec<Column>,
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// Starts at 1; the crawler adds 1 whenever the columns or the
    /// partition keys change (Glue's table version).
    pub schema_version: u32,
    /// CSV only: whether the first line is a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_header: Option<bool>,
    pub updated_at: String,
}

/// Glue's naming rule, also Athena's for unquoted identifiers.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A database name as a task field gives it: lowercase letters, digits
/// and `_`, Glue's and Athena's rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatabaseName(String);

impl DatabaseName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if valid_name(&name) {
            Ok(DatabaseName(name))
        } else {
            Err(engine::config::invalid(
                &format!("`database` `{name}` is not a valid database name"),
                Some("use lowercase letters, digits and `_` (Glue and Athena's rule)"),
            ))
        }
    }
}

/// The catalog under one state dir.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
}

impl Catalog {
    pub fn new(state_root: impl AsRef<Path>) -> Self {
        Catalog {
            root: state_root.as_ref().join("catalog"),
        }
    }

    fn table_path(&self, database: &str, table: &str) -> Result<PathBuf, CatalogError> {
        for name in [database, table] {
            if !valid_name(name) {
                return Err(CatalogError::InvalidName(name.to_string()));
            }
        }
        Ok(self.root.join(database).join(format!("{table}.json")))
    }

    fn database_dir(&self, database: &str) -> Result<PathBuf, CatalogError> {
        if !valid_name(database) {
            return Err(CatalogError::InvalidName(database.to_string()));
        }
        Ok(self.root.join(database))
    }

    pub fn get(&self, database: &str, table: &str) -> Result<Option<Table>, CatalogError> {
        let path = self.table_path(database, table)?;
        let _shared = self.read_lock(database)?;
        if let Some(found) = self
            .journal(database)?
            .and_then(|j| j.tables.into_iter().find(|t| t.name == table))
        {
            return Ok(Some(found));
        }
        read_table(&path)
    }

    /// Creates or replaces one table definition, atomically: a transaction
    /// of one table.
    pub fn put(&self, table: &Table) -> Result<(), CatalogError> {
        let mut tx = self.begin(&table.database)?;
        tx.put(table.clone())?;
        tx.commit()
    }

    /// Starts a transaction on `database`: waits for the writer before it,
    /// finishes that writer's commit if it was killed after its commit
    /// point, and removes what a writer killed earlier left behind.
    pub fn begin(&self, database: &str) -> Result<CatalogTx<'_>, CatalogError> {
        let dir = self.database_dir(database)?;
        fs::create_dir_all(&dir).map_err(CatalogError::io(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = FileLock::create_exclusive(&lock_path).map_err(CatalogError::io(&lock_path))?;
        if let Some(journal) = self.journal(database)? {
            apply(&dir, &journal.tables)?;
            remove_journal(&dir)?;
        }
        remove_temp_files(&dir)?;
        Ok(CatalogTx {
            catalog: self,
            database: database.to_string(),
            dir,
            _lock: lock,
            staged: BTreeMap::new(),
        })
    }

    /// A shared lock on the database, if any writer ever made its lock
    /// file (a reader creates nothing: the state dir may be read-only).
    fn read_lock(&self, database: &str) -> Result<Option<FileLock>, CatalogError> {
        let path = self.database_dir(database)?.join(LOCK_FILE);
        match File::open(&path) {
            Ok(file) => FileLock::shared(file)
                .map(Some)
                .map_err(CatalogError::io(&path)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(CatalogError::io(&path)(e)),
        }
    }

    /// The journal of a commit whose writer was killed before it finished.
    fn journal(&self, database: &str) -> Result<Option<Journal>, CatalogError> {
        let path = self.database_dir(database)?.join(JOURNAL_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| CatalogError::Corrupt {
                        path: path.display().to_string(),
                        source,
                    })
            }
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(CatalogError::io(&path)(e)),
        }
    }

    /// The tables as stored, with a killed writer's journal read over
    /// them; the caller holds a lock.
    fn tables_locked(&self, database: &str) -> Result<Vec<Table>, CatalogError> {
        let dir = self.database_dir(database)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut tables = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| valid_name(n))
                .map(str::to_string)
            else {
                continue;
            };
            if let Some(table) = read_table(&entry.path())? {
                tables.insert(name, table);
            }
        }
        for table in self
            .journal(database)?
            .map(|j| j.tables)
            .unwrap_or_default()
        {
            tables.insert(table.name.clone(), table);
        }
        Ok(tables.into_values().collect())
    }

    /// Database names, sorted.
    pub fn databases(&self) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: self.root.display().to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().is_dir() && valid_name(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// A database's tables, sorted by name: one consistent state (no
    /// writer commits while they are read).
    pub fn tables(&self, database: &str) -> Result<Vec<Table>, CatalogError> {
        let _shared = self.read_lock(database)?;
        self.tables_locked(database)
    }
}

/// Changes to one database that become visible together, or not at all
/// (see the module docs). Holds the database's write lock until dropped.
pub struct CatalogTx<'a> {
    catalog: &'a Catalog,
    database: String,
    dir: PathBuf,
    _lock: FileLock,
    staged: BTreeMap<String, Table>,
}

impl CatalogTx<'_> {
    /// The table as this transaction sees it: put in it, or stored.
    pub fn get(&self, table: &str) -> Result<Option<Table>, CatalogError> {
        if let Some(staged) = self.staged.get(table) {
            return Ok(Some(staged.clone()));
        }
        read_table(&self.catalog.table_path(&self.database, table)?)
    }

    /// The database's tables as this transaction sees them, sorted by name.
    pub fn tables(&self) -> Result<Vec<Table>, CatalogError> {
        let mut tables: BTreeMap<String, Table> = self
            .catalog
            .tables_locked(&self.database)?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        for table in self.staged.values() {
            tables.insert(table.name.clone(), table.clone());
        }
        Ok(tables.into_values().collect())
    }

    /// Creates or replaces a table definition when the transaction commits.
    pub fn put(&mut self, table: Table) -> Result<(), CatalogError> {
        if table.database != self.database {
            return Err(CatalogError::WrongDatabase {
                table: table.name,
                table_database: table.database,
                database: self.database.clone(),
            });
        }
        self.catalog.table_path(&table.database, &table.name)?;
        self.staged.insert(table.name.clone(), table);
        Ok(())
    }

    /// Makes every put visible at once: the journal first (the commit
    /// point), then the tables' files, then the journal goes.
    pub fn commit(self) -> Result<(), CatalogError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let tables: Vec<Table> = self.staged.into_values().collect();
        let journal = Journal { tables };
        let bytes = serde_json::to_vec(&journal).map_err(|source| CatalogError::Corrupt {
            path: self.dir.join(JOURNAL_FILE).display().to_string(),
            source,
        })?;
        write_durably(&self.dir, JOURNAL_FILE, &bytes)?;
        sync_dir(&self.dir)?;
        apply(&self.dir, &journal.tables)?;
        remove_journal(&self.dir)
    }

    /// Test hook: commit as a writer killed right after its commit point
    /// would have, leaving the journal and none of the tables' files.
    #[cfg(test)]
    pub(crate) fn commit_and_die(self) {
        let journal = Journal {
            tables: self.staged.into_values().collect(),
        };
        let bytes = serde_json::to_vec(&journal).unwrap();
        write_durably(&self.dir, JOURNAL_FILE, &bytes).unwrap();
    }
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn read_table(path: &Path) -> Result<Option<Table>, CatalogError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CatalogError::Corrupt {
                    path: path.display().to_string(),
                    source,
                })
        }
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(CatalogError::io(path)(e)),
    }
}

/// Puts every table of a committed journal in place (again, after a
/// crash: each write replaces the whole file, so repeating one is
/// harmless), durably.
fn apply(dir: &Path, tables: &[Table]) -> Result<(), CatalogError> {
    for table in tables {
        let bytes = serde_json::to_vec_pretty(table).map_err(|source| CatalogError::Corrupt {
            path: dir.join(&table.name).display().to_string(),
            source,
        })?;
        write_durably(dir, &format!("{}.json", table.name), &bytes)?;
    }
    sync_dir(dir)
}

/// Replaces `dir/name` with `bytes`: a temp file, fsynced, renamed over it.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CatalogError> {
    let temp = dir.join(fsutil::unique_name(fsutil::PART, &fsutil::tag(name)));
    let path = dir.join(name);
    let mut file = File::create(&temp).map_err(CatalogError::io(&temp))?;
    file.write_all(bytes).map_err(CatalogError::io(&temp))?;
    file.sync_all().map_err(CatalogError::io(&temp))?;
    fs::rename(&temp, &path).map_err(CatalogError::io(&path))
}

/// Removes the journal of a commit whose tables are all in place (they
/// were synced first), durably: the commit is then over.
fn remove_journal(dir: &Path) -> Result<(), CatalogError> {
    let path = dir.join(JOURNAL_FILE);
    fs::remove_file(&path).map_err(CatalogError::io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CatalogError> {
    fsutil::sync_dir(dir).map_err(CatalogError::io(dir))
}

/// Removes the temp files writers left behind: `.flux-part.*`, and
/// `.TABLE.PID.tmp` from releases before transactions. Called under the
/// write lock, so no writer is using any of them.
fn remove_temp_files(dir: &Path) -> Result<(), CatalogError> {
    let part = format!("{}{}.", crate::s3::RESERVED_PREFIX, fsutil::PART);
    for entry in fs::read_dir(dir).map_err(CatalogError::io(dir))? {
        let entry = entry.map_err(CatalogError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let legacy = name.starts_with('.') && name.ends_with(".tmp");
        if name.starts_with(&part) || legacy {
            let path = entry.path();
            match fs::remove_file(&path) {
                Err(e) if !is_missing(&e) => return Err(CatalogError::io(&path)(e)),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            database: "rental".into(),
            name: name.into(),
            location: format!("s3://b/processed/{name}/"),
            format: Format::Parquet,
            columns: vec![Column {
                name: "id".into(),
                data_type: "string".into(),
            }],
            partition_keys: vec![],
            partitions: vec![],
            schema_version: 1,
            csv_header: None,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn tables_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        assert!(catalog.get("rental", "users").unwrap().is_none());
        catalog.put(&table("users")).unwrap();
        catalog.put(&table("locations")).unwrap();
        assert_eq!(
            catalog.get("rental", "users").unwrap(),
            Some(table("users"))
        );
        let names: Vec<String> = catalog
            .tables("rental")
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["locations", "users"]);
        assert_eq!(catalog.databases().unwrap(), vec!["rental"]);
    }

    /// The names of the files in the database's folder, sorted.
    fn files(catalog: &Catalog, database: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(catalog.root.join(database))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_transaction_dropped_without_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        catalog.put(&table("users")).unwrap();
        let mut tx = catalog.begin("rental").unwrap();
        let mut changed = table("users");
        changed.schema_version = 2;
        tx.put(changed.clone()).unwrap();
        tx.put(table("cars")).unwrap();
        // The transaction sees its own puts ...
        assert_eq!(tx.get("users").unwrap(), Some(changed));
        let names: Vec<String> = tx.tables().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["cars", "users"]);
        drop(tx);
        // ... and nobody else ever does.
        assert_eq!(
            catalog.get("rental", "users").unwrap(),
            Some(table("users"))
        );
        assert_eq!(catalog.get("rental", "cars").unwrap(), None);
        assert_eq!(files(&catalog, "rental"), vec![".flux-lock", "users.json"]);
    }

    #[test]
    fn a_commit_cut_short_after_its_journal_is_read_whole_and_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        catalog.put(&table("users")).unwrap();
        let mut tx = catalog.begin("rental").unwrap();
        let mut changed = table("users");
        changed.schema_version = 2;
        tx.put(changed.clone()).unwrap();
        tx.put(table("cars")).unwrap();
        tx.commit_and_die();
        // Killed after the commit point: the files are the old ones, but
        // readers see the whole commit.
        assert_eq!(
            files(&catalog, "rental"),
            vec![".flux-journal.json", ".flux-lock", "users.json"]
        );
        assert_eq!(
            catalog.get("rental", "users").unwrap(),
            Some(changed.clone())
        );
        assert_eq!(catalog.get("rental", "cars").unwrap(), Some(table("cars")));
        assert_eq!(
            catalog.tables("rental").unwrap(),
            vec![table("cars"), changed.clone()]
        );
        // The next writer finishes it first, and leaves no journal.
        drop(catalog.begin("rental").unwrap());
        assert_eq!(
            files(&catalog, "rental"),
            vec![".flux-lock", "cars.json", "users.json"]
        );
        assert_eq!(
            catalog.tables("rental").unwrap(),
            vec![table("cars"), changed]
        );
    }

    #[test]
    fn temp_files_of_killed_writers_are_removed_by_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        catalog.put(&table("users")).unwrap();
        let db = dir.path().join("catalog/rental");
        // What a writer killed mid-write leaves: this release's temp
        // files, and the `.TABLE.PID.tmp` of releases before it.
        fs::write(db.join(".flux-part.0123abcd.99-1-0"), "{\"partial").unwrap();
        fs::write(db.join(".users.4242.tmp"), "{\"partial").unwrap();
        assert_eq!(catalog.tables("rental").unwrap(), vec![table("users")]);
        catalog.put(&table("cars")).unwrap();
        assert_eq!(
            files(&catalog, "rental"),
            vec![".flux-lock", "cars.json", "users.json"]
        );
    }

    /// A reader never sees part of a commit: every commit rewrites all
    /// tables with one new version, and every listing must show a single
    /// version across all of them.
    #[test]
    fn readers_see_a_commit_whole_or_not_at_all() {
        const TABLES: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            let catalog = Catalog::new(&root);
            for version in 1..=40 {
                let mut tx = catalog.begin("rental").unwrap();
                for i in 0..TABLES {
                    let mut t = table(&format!("t{i}"));
                    t.schema_version = version;
                    tx.put(t).unwrap();
                }
                tx.commit().unwrap();
            }
        });
        let catalog = Catalog::new(dir.path());
        let check = || {
            let tables = catalog.tables("rental").unwrap();
            let versions: std::collections::BTreeSet<u32> =
                tables.iter().map(|t| t.schema_version).collect();
            assert!(
                tables.is_empty() || (tables.len() == TABLES && versions.len() == 1),
                "a partial commit: {} tables, versions {versions:?}",
                tables.len()
            );
            versions.into_iter().next()
        };
        let mut listings = 0;
        while !writer.is_finished() {
            check();
            listings += 1;
        }
        writer.join().unwrap();
        assert_eq!(check(), Some(40));
        assert!(listings > 0);
    }

    #[test]
    fn names_that_escape_or_break_sql_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        assert!(matches!(
            catalog.get("../x", "t"),
            Err(CatalogError::InvalidName(_))
        ));
        assert!(matches!(
            catalog.get("rental", "Users"),
            Err(CatalogError::InvalidName(_))
        ));
        let mut bad = table("ok");
        bad.name = "a-b".into();
        assert!(catalog.put(&bad).is_err());
    }
}
