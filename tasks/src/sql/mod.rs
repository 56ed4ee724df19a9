//! Local SQL over the catalog, with Apache DataFusion: what Athena does in
//! production.
//!
//! [`QuerySession::open`] registers every table of every catalog database
//! (`STATE_ROOT/catalog/DATABASE/TABLE.json`) under the catalog name
//! `awsdatacatalog`, Athena's, so SQL may say `database.table`,
//! `awsdatacatalog.database.table` or, given a default database, `table`.
//! Identifiers are case-insensitive unless double-quoted, as in Athena.
//!
//! * The catalog's column types (Glue's) are the table's schema, as in
//!   Athena: [`glue_to_arrow`] maps them. A file column of another type is
//!   cast to the catalog's; a column missing from a file reads as NULL.
//! * Parquet tables read every `*.parquet` file under the table's folder;
//!   CSV tables every `*.csv` file, with a header line if the catalog says
//!   `csv_header`, columns by position, empty fields and `\N` as NULL, and
//!   a value that does not parse as its column's type as NULL too (as
//!   Athena reads text files).
//! * Partition keys are Hive partition columns (`rental_month=2024-01/`),
//!   typed as the catalog says, and a filter on them skips the other
//!   partitions' folders without opening their files. Partition folders
//!   not named `key=value` (Glue's `partition_0` keys) are not read: a
//!   query on such a table fails and says so.
//! * A table's `s3://` location is its folder under the local S3
//!   ([`LocalS3::path_of`]). A published prefix (a symlink to a version
//!   folder) is followed, and the version read is pinned with a
//!   [`Snapshot`] while the session lives, so a job republishing the table
//!   meanwhile does not pull files from under the query.
//! * Only queries run (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW
//!   TABLES`, `information_schema`): statements that would write (`COPY`,
//!   `CREATE`, `INSERT`) are refused, as the catalog is the crawler's.
//! * Athena runs Trino's SQL: the Trino functions listed in [`trino`] are
//!   rewritten to DataFusion's before planning.
//!
//! Errors name what is wrong: an unknown table names the table and lists
//! the tables of its database, an unknown database lists the databases,
//! and syntax or planning errors pass DataFusion's message through.

pub(crate) mod format;
pub mod trino;
pub(crate) mod types;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::Column;
use datafusion::common::TableReference;
use datafusion::datasource::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::view::ViewTable;
use datafusion::execution::context::SQLOptions;
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, lit, try_cast};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;
use thiserror::Error;

use crate::catalog::{Catalog, CatalogError, Format, Table};
use crate::s3::{LocalS3, S3Uri, Snapshot};

pub use format::{athena_csv, cells, headers, text_table};
pub use types::{athena_type_name, glue_to_arrow};

/// Athena's name for the Glue Data Catalog; SQL may qualify tables with it.
pub const CATALOG_NAME: &str = "awsdatacatalog";

/// The database bare table names resolve to when none is given (Athena's
/// default database is called `default` too).
const FALLBACK_DATABASE: &str = "default";

/// How Hive (and so Athena's CSV tables) writes NULL in text files.
const HIVE_NULL: &str = "\\N";

#[derive(Debug, Error)]
pub enum SqlError {
    #[error("no catalog in {}: run a DAG with a glue_crawler task first, so that there are tables to query", path.display())]
    NoCatalog { path: PathBuf },
    #[error(
        "database `{database}` is not in the catalog; its databases: {}",
        list(available)
    )]
    UnknownDatabase {
        database: String,
        available: Vec<String>,
    },
    #[error(
        "table `{database}.{table}` does not exist; tables in database `{database}`: {}",
        list(available)
    )]
    UnknownTable {
        database: String,
        table: String,
        available: Vec<String>,
    },
    #[error(
        "table `{table}` names no database and no default database is set: write `DATABASE.{table}` (databases: {}), or choose a default database (`--database DB` for `flux-engine query`, the task's `database` for an athena_query task)",
        list(databases)
    )]
    NoDatabase {
        table: String,
        databases: Vec<String>,
    },
    #[error("table `{database}.{table}` cannot be read: {reason}")]
    BadTable {
        database: String,
        table: String,
        reason: String,
    },
    #[error("{0}")]
    Catalog(#[from] CatalogError),
    /// The SQL is wrong: syntax, unknown columns or functions, types.
    #[error("{0}")]
    Sql(String),
    /// The SQL was fine but running it failed (unreadable files, ...).
    #[error("the query failed: {0}")]
    Execution(String),
}

impl SqlError {
    /// Whether the query text (or the names in it) is at fault, rather than
    /// the data or the machine: the command line exits with 2 for these.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            SqlError::Execution(_) | SqlError::Catalog(_) | SqlError::BadTable { .. }
        )
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// A result column: its name and Athena's name for its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A query's whole result, in memory.
#[derive(Debug, Clone)]
pub struct QueryResult {
    batch: RecordBatch,
}

impl QueryResult {
    /// All rows as one Arrow batch.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Names and Athena types of the columns, in order.
    pub fn columns(&self) -> Vec<ResultColumn> {
        self.batch
            .schema()
            .fields()
            .iter()
            .map(|f| ResultColumn {
                name: f.name().clone(),
                data_type: athena_type_name(f.data_type()),
            })
            .collect()
    }

    /// The values of the first `limit` rows (all without a limit) as text,
    /// formatted as Athena prints them; `None` is NULL.
    pub fn rows(&self, limit: Option<usize>) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        let n = limit.map_or(self.num_rows(), |l| l.min(self.num_rows()));
        cells(&self.batch, 0..n).map_err(|e| SqlError::Execution(e.to_string()))
    }

    /// The rows as JSON objects by column name: numbers and booleans
    /// typed, NULL as null, everything else as the text [`Self::rows`]
    /// gives. (The objects' keys come out sorted; [`Self::to_json_text`]
    /// keeps the columns' order.)
    pub fn json_rows(&self) -> Result<Vec<serde_json::Value>, SqlError> {
        Ok(self
            .typed_rows()?
            .into_iter()
            .map(|row| serde_json::Value::Object(row.into_iter().collect()))
            .collect())
    }

    /// The rows as a JSON list of objects, one line each, keys in the
    /// columns' order; values as in [`Self::json_rows`].
    pub fn to_json_text(&self) -> Result<String, SqlError> {
        let rows: Vec<String> = self
            .typed_rows()?
            .into_iter()
            .map(|row| {
                let fields: Vec<String> = row
                    .into_iter()
                    .map(|(name, value)| format!("{}: {value}", serde_json::Value::String(name)))
                    .collect();
                format!("  {{{}}}", fields.join(", "))
            })
            .collect();
        Ok(if rows.is_empty() {
            "[]\n".to_string()
        } else {
            format!("[\n{}\n]\n", rows.join(",\n"))
        })
    }

    fn typed_rows(&self) -> Result<Vec<Vec<(String, serde_json::Value)>>, SqlError> {
        use serde_json::Value;
        let schema = self.batch.schema();
        let typed = |data_type: &DataType, text: Option<String>| {
            let Some(text) = text else {
                return Value::Null;
            };
            if data_type.is_numeric()
                && let Ok(number) = serde_json::from_str::<serde_json::Number>(&text)
            {
                return Value::Number(number);
            }
            if matches!(data_type, DataType::Boolean)
                && let Ok(b) = text.parse::<bool>()
            {
                return Value::Bool(b);
            }
            Value::String(text)
        };
        Ok(self
            .rows(None)?
            .into_iter()
            .map(|row| {
                schema
                    .fields()
                    .iter()
                    .zip(row)
                    .map(|(field, text)| (field.name().clone(), typed(field.data_type(), text)))
                    .collect()
            })
            .collect())
    }

    /// The result file Athena would write (see [`athena_csv`]).
    pub fn to_athena_csv(&self) -> Result<Vec<u8>, SqlError> {
        athena_csv(&self.batch).map_err(|e| SqlError::Execution(e.to_string()))
    }

    /// The first `limit` rows as an aligned text table.
    pub fn text_table(&self, limit: Option<usize>) -> Result<String, SqlError> {
        Ok(text_table(&headers(&self.batch), &self.rows(limit)?))
    }
}

/// A DataFusion session holding the catalog's tables.
pub struct QuerySession {
    ctx: SessionContext,
    default_database: Option<String>,
    /// Table names by database, as registered.
    tables: BTreeMap<String, Vec<String>>,
    /// Tables that could not be registered, and why; reported when a query
    /// names them, so that one broken table does not stop the others.
    broken: BTreeMap<(String, String), String>,
    /// Keeps the versions of published prefixes being read on disk.
    _pins: Vec<Snapshot>,
}

impl QuerySession {
    /// Registers every table of the catalog under `state_root`;
    /// `default_database` is where bare table names resolve.
    ///
    /// Blocking file I/O (the catalog, the S3 folders): call it from
    /// `spawn_blocking` in async code.
    pub fn open(state_root: &Path, default_database: Option<&str>) -> Result<Self, SqlError> {
        let catalog = Catalog::new(state_root);
        let databases = catalog.databases()?;
        if databases.is_empty() {
            return Err(SqlError::NoCatalog {
                path: state_root.join("catalog"),
            });
        }
        if let Some(database) = default_database
            && !databases.iter().any(|d| d == database)
        {
            return Err(SqlError::UnknownDatabase {
                database: database.to_string(),
                available: databases,
            });
        }
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(
                CATALOG_NAME,
                default_database.unwrap_or(FALLBACK_DATABASE),
            )
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let data_catalog = Arc::new(MemoryCatalogProvider::new());
        let s3 = LocalS3::new(state_root);
        let mut session = QuerySession {
            ctx,
            default_database: default_database.map(str::to_string),
            tables: BTreeMap::new(),
            broken: BTreeMap::new(),
            _pins: Vec::new(),
        };
        for database in &databases {
            let schema = Arc::new(MemorySchemaProvider::new());
            let mut names = Vec::new();
            for table in catalog.tables(database)? {
                let provider = match session.provider(&s3, &table) {
                    Ok(provider) => provider,
                    Err(reason) => {
                        session
                            .broken
                            .insert((database.clone(), table.name.clone()), reason);
                        // Registered empty, so that the name resolves and
                        // the failure is reported with its reason.
                        Arc::new(EmptyTable::new(Arc::new(Schema::empty())))
                    }
                };
                datafusion::catalog::SchemaProvider::register_table(
                    schema.as_ref(),
                    table.name.clone(),
                    provider,
                )
                .map_err(|e| SqlError::BadTable {
                    database: database.clone(),
                    table: table.name.clone(),
                    reason: e.to_string(),
                })?;
                names.push(table.name);
            }
            data_catalog
                .register_schema(database, schema)
                .map_err(|e| SqlError::Execution(e.to_string()))?;
            session.tables.insert(database.clone(), names);
        }
        session.ctx.register_catalog(CATALOG_NAME, data_catalog);
        Ok(session)
    }

    /// The DataFusion session, for callers that want DataFrames.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Database names, sorted.
    pub fn databases(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// A database's table names, sorted; `None` for an unknown database.
    pub fn tables(&self, database: &str) -> Option<&[String]> {
        self.tables.get(database).map(Vec::as_slice)
    }

    /// Runs one query and collects its result.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let mut statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|e| SqlError::Sql(e.to_string()))?;
        if let datafusion::sql::parser::Statement::Statement(inner) = &mut statement {
            trino::rewrite(inner.as_mut()).map_err(SqlError::Sql)?;
        }
        let references = state
            .resolve_table_references(&statement)
            .map_err(|e| SqlError::Sql(e.to_string()))?;
        for reference in references {
            self.check_table(reference)?;
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| SqlError::Sql(e.to_string()))?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                SqlError::Sql(format!(
                    "{e} (only queries run here: the catalog and the data belong to the crawler and the jobs)"
                ))
            })?;
        let frame = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| SqlError::Sql(e.to_string()))?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame
            .collect()
            .await
            .map_err(|e| SqlError::Execution(e.to_string()))?;
        // The collected batches carry the physical plan's schema, which may
        // differ from the logical one in nullability only.
        let schema = batches.first().map_or(schema, |b| b.schema());
        let batch =
            concat_batches(&schema, &batches).map_err(|e| SqlError::Execution(e.to_string()))?;
        Ok(QueryResult { batch })
    }

    /// An error naming the table if `reference` is no table of the catalog.
    fn check_table(&self, reference: TableReference) -> Result<(), SqlError> {
        let default_schema = self
            .default_database
            .as_deref()
            .unwrap_or(FALLBACK_DATABASE);
        let resolved = reference.clone().resolve(CATALOG_NAME, default_schema);
        if resolved.schema.as_ref() == "information_schema" {
            return Ok(());
        }
        if resolved.catalog.as_ref() != CATALOG_NAME {
            return Err(SqlError::Sql(format!(
                "table `{reference}`: the only catalog is `{CATALOG_NAME}` (Athena's name for the Glue Data Catalog)"
            )));
        }
        let (database, table) = (resolved.schema.to_string(), resolved.table.to_string());
        let Some(tables) = self.tables.get(&database) else {
            if reference.schema().is_none() && self.default_database.is_none() {
                return Err(SqlError::NoDatabase {
                    table,
                    databases: self.databases(),
                });
            }
            return Err(SqlError::UnknownDatabase {
                database,
                available: self.databases(),
            });
        };
        if !tables.contains(&table) {
            return Err(SqlError::UnknownTable {
                database,
                table,
                available: tables.clone(),
            });
        }
        if let Some(reason) = self.broken.get(&(database.clone(), table.clone())) {
            return Err(SqlError::BadTable {
                database,
                table,
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// The DataFusion table for a catalog table; on failure, why.
    fn provider(&mut self, s3: &LocalS3, table: &Table) -> Result<Arc<dyn TableProvider>, String> {
        let to_field = |name: &str, glue: &str| {
            glue_to_arrow(glue)
                .map(|t| Field::new(name, t, true))
                .map_err(|e| format!("column `{name}`: {e}"))
        };
        let mut columns = table
            .columns
            .iter()
            .map(|c| to_field(&c.name, &c.data_type))
            .collect::<Result<Vec<_>, _>>()?;
        if table.format == Format::Csv {
            // Text has no nested values: such columns read as their text.
            for field in &mut columns {
                if field.data_type().is_nested() {
                    *field = Field::new(field.name(), DataType::Utf8, true);
                }
            }
        }
        let partition_cols = table
            .partition_keys
            .iter()
            .map(|c| {
                to_field(&c.name, &c.data_type).map(|f| (c.name.clone(), f.data_type().clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let location = S3Uri::parse(&table.location)
            .map_err(|e| format!("location: {e}"))?
            .as_prefix();
        // Partition values come from `key=value` folder names; folders
        // named otherwise (Glue's `partition_0`) would silently read as no
        // rows, so say so instead.
        let unnamed = table.partitions.iter().find(|p| {
            let relative = S3Uri::parse(&p.location)
                .ok()
                .and_then(|uri| uri.relative_to(&location).map(str::to_string));
            relative.is_none_or(|r| r.split('/').any(|s| !s.is_empty() && !s.contains('=')))
        });
        if let Some(partition) = unnamed {
            return Err(format!(
                "its partition folder {} is not named `key=value`; the local engine reads Hive-style partitions only",
                partition.location
            ));
        }
        let Some(folder) = self.pinned_folder(s3, &location)? else {
            // No data yet: Athena returns no rows for an empty location.
            let mut fields = columns;
            fields.extend(
                partition_cols
                    .iter()
                    .map(|(n, t)| Field::new(n, t.clone(), true)),
            );
            return Ok(Arc::new(EmptyTable::new(Arc::new(Schema::new(fields)))));
        };
        let mut path = folder.to_string_lossy().to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        let url = ListingTableUrl::parse(&path).map_err(|e| format!("folder {path}: {e}"))?;
        let listing = |format: Arc<dyn FileFormat>, extension: &str, file_schema: Schema| {
            let options = ListingOptions::new(format)
                .with_file_extension(extension)
                .with_table_partition_cols(partition_cols.clone());
            let config = ListingTableConfig::new(url.clone())
                .with_listing_options(options)
                .with_schema(Arc::new(file_schema));
            ListingTable::try_new(config).map_err(|e| e.to_string())
        };
        match table.format {
            Format::Parquet => Ok(Arc::new(listing(
                Arc::new(ParquetFormat::default()),
                ".parquet",
                Schema::new(columns),
            )?)),
            Format::Csv => {
                // Read as text, then typed by a view, because DataFusion's
                // CSV reader knows no NULL marker but the empty field while
                // Hive writes `\N`, and because Athena reads a value that
                // does not parse as its column's type as NULL, not as an
                // error.
                let format = CsvFormat::default()
                    .with_has_header(table.csv_header.unwrap_or(false))
                    .with_delimiter(b',')
                    .with_quote(b'"')
                    // Quoted values may hold line breaks.
                    .with_newlines_in_values(true)
                    // Rows with fewer fields than columns end in NULLs,
                    // as Athena reads them.
                    .with_truncated_rows(true);
                let text_schema = Schema::new(
                    columns
                        .iter()
                        .map(|f| Field::new(f.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                );
                let text = listing(Arc::new(format), ".csv", text_schema)?;
                let raw = |name: &str| Expr::Column(Column::new_unqualified(name));
                let mut exprs: Vec<Expr> = columns
                    .iter()
                    .map(|f| {
                        let value = nullif(raw(f.name()), lit(HIVE_NULL));
                        let typed = match f.data_type() {
                            DataType::Utf8 => value,
                            other => try_cast(value, other.clone()),
                        };
                        typed.alias(f.name())
                    })
                    .collect();
                exprs.extend(partition_cols.iter().map(|(name, _)| raw(name)));
                let plan = LogicalPlanBuilder::scan(
                    TableReference::bare(table.name.clone()),
                    provider_as_source(Arc::new(text)),
                    None,
                )
                .and_then(|scan| scan.project(exprs))
                .and_then(|scan| scan.build())
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(ViewTable::new(plan, None)))
            }
        }
    }

    /// The real folder of a table's location, with its published version
    /// pinned; `None` if the location holds nothing yet.
    fn pinned_folder(&mut self, s3: &LocalS3, location: &S3Uri) -> Result<Option<PathBuf>, String> {
        let path = s3.path_of(location);
        // Pin first, then resolve: if a publish slipped in between, the
        // pinned version is not the one resolved, so try again.
        for _ in 0..5 {
            let snapshot = s3.snapshot(location).map_err(|e| e.to_string())?;
            let folder = match std::fs::canonicalize(&path) {
                Ok(folder) => folder,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("cannot resolve {}: {e}", path.display())),
            };
            if !folder.is_dir() {
                return Err(format!("{} is not a folder", path.display()));
            }
            let consistent = snapshot.objects().first().is_none_or(|object| {
                std::fs::canonicalize(&object.path).is_ok_and(|p| p.starts_with(&folder))
            });
            if consistent {
                self._pins.push(snapshot);
                return Ok(Some(folder));
            }
        }
        Err(format!(
            "{location} was republished over and over while being opened; try again"
        ))
    }
}

/// Opens a session and runs one query.
pub async fn query(
    state_root: &Path,
    default_database: Option<&str>,
    sql: &str,
) -> Result<QueryResult, SqlError> {
    let root = state_root.to_path_buf();
    let database = default_database.map(str::to_string);
    let session =
        tokio::task::spawn_blocking(move || QuerySession::open(&root, database.as_deref()))
            .await
            .map_err(|e| SqlError::Execution(format!("opening the catalog stopped: {e}")))??;
    session.query(sql).await
}
