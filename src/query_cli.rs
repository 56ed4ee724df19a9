//! `flux-engine query` and `flux-engine catalog`: SQL on the local catalog
//! and what the catalog holds, from the command line.

use std::path::Path;

use clap::ValueEnum;
use engine::state_dir::StateDir;
use serde_json::{Value, json};
use tasks::catalog::{Catalog, Format as TableFormat, Table};
use tasks::sql::SqlError;

use crate::exit::Exit;

#[derive(Clone, Copy, ValueEnum)]
pub enum QueryFormat {
    /// An aligned text table
    Table,
    /// Athena's result file: every value quoted, NULL empty
    Csv,
    /// A list of objects, one per row
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CatalogFormat {
    Table,
    Json,
}

/// `flux-engine query SQL`: runs the query and prints the whole result.
pub fn query(
    state_dir: &StateDir,
    sql: &str,
    database: Option<&str>,
    format: QueryFormat,
) -> Result<u8, Exit> {
    // With one database in the catalog, bare table names are its.
    let only = match database {
        Some(_) => None,
        None => Catalog::new(state_dir.root())
            .databases()
            .ok()
            .filter(|d| d.len() == 1)
            .and_then(|mut d| d.pop()),
    };
    let database = database.or(only.as_deref());
    let result =
        crate::async_runtime()?.block_on(tasks::sql::query(state_dir.root(), database, sql))?;
    let text = match format {
        QueryFormat::Table => {
            let mut text = result.text_table(None)?;
            let n = result.num_rows();
            text.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
            text
        }
        QueryFormat::Csv => String::from_utf8_lossy(&result.to_athena_csv()?).into_owned(),
        QueryFormat::Json => result.to_json_text()?,
    };
    print!("{text}");
    Ok(0)
}

/// `flux-engine catalog`: the tables, their columns, partitions and
/// locations.
pub fn catalog(
    state_dir: &StateDir,
    database: Option<&str>,
    format: CatalogFormat,
) -> Result<u8, Exit> {
    let tables = catalog_tables(state_dir.root(), database)?;
    match format {
        CatalogFormat::Json => {
            let items: Vec<Value> = tables.iter().map(table_json).collect();
            let text = serde_json::to_string_pretty(&items).map_err(Exit::failure)?;
            println!("{text}");
        }
        CatalogFormat::Table => {
            if tables.is_empty() {
                println!("no tables");
            }
            let blocks: Vec<String> = tables.iter().map(table_text).collect();
            print!("{}", blocks.join("\n"));
        }
    }
    Ok(0)
}

/// The tables of one database, or of all, sorted by database and name.
fn catalog_tables(state_root: &Path, database: Option<&str>) -> Result<Vec<Table>, SqlError> {
    let catalog = Catalog::new(state_root);
    let databases = catalog.databases()?;
    if databases.is_empty() {
        return Err(SqlError::NoCatalog {
            path: state_root.join("catalog"),
        });
    }
    let chosen: Vec<String> = match database {
        Some(d) if databases.iter().any(|x| x == d) => vec![d.to_string()],
        Some(d) => {
            return Err(SqlError::UnknownDatabase {
                database: d.to_string(),
                available: databases,
            });
        }
        None => databases,
    };
    let mut tables = Vec::new();
    for database in chosen {
        tables.extend(catalog.tables(&database)?);
    }
    Ok(tables)
}

fn format_name(table: &Table) -> &'static str {
    match table.format {
        TableFormat::Parquet => "parquet",
        TableFormat::Csv => "csv",
    }
}

fn table_json(table: &Table) -> Value {
    let columns = |cols: &[tasks::catalog::Column]| -> Vec<Value> {
        cols.iter()
            .map(|c| json!({"name": c.name, "type": c.data_type}))
            .collect()
    };
    let mut value = json!({
        "database": table.database,
        "name": table.name,
        "location": table.location,
        "format": format_name(table),
        "columns": columns(&table.columns),
        "partition_keys": columns(&table.partition_keys),
        "partition_count": table.partitions.len(),
        "schema_version": table.schema_version,
        "updated_at": table.updated_at,
    });
    if let Some(header) = table.csv_header {
        value["csv_header"] = json!(header);
    }
    value
}

/// One table as an indented block:
///
/// ```text
/// rental.rentals
///   format          csv (header line)
///   location        s3://lake/raw/rentals/
///   schema version  1 (updated 2026-01-01T00:00:00Z)
///   partitions      2
///   columns         rental_id     string
///                   amount        double
///   partition keys  rental_month  string
/// ```
fn table_text(table: &Table) -> String {
    let label = |name: &str| format!("  {name:<16}");
    let width = table
        .columns
        .iter()
        .chain(&table.partition_keys)
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{}.{}\n", table.database, table.name);
    let header = match table.csv_header {
        Some(true) => " (header line)",
        Some(false) => " (no header line)",
        None => "",
    };
    out.push_str(&format!(
        "{}{}{header}\n",
        label("format"),
        format_name(table)
    ));
    out.push_str(&format!("{}{}\n", label("location"), table.location));
    out.push_str(&format!(
        "{}{} (updated {})\n",
        label("schema version"),
        table.schema_version,
        table.updated_at
    ));
    out.push_str(&format!(
        "{}{}\n",
        label("partitions"),
        table.partitions.len()
    ));
    for (title, columns) in [
        ("columns", &table.columns),
        ("partition keys", &table.partition_keys),
    ] {
        if columns.is_empty() {
            out.push_str(&format!("{}none\n", label(title)));
        }
        for (i, column) in columns.iter().enumerate() {
            let lead = if i == 0 { label(title) } else { label("") };
            out.push_str(&format!(
                "{lead}{:<width$}  {}\n",
                column.name, column.data_type
            ));
        }
    }
    out
}
