//! A `glue_crawler` task's fields (see the kind's module doc).

use engine::config::{Location, Problem, StringOrList};
use engine::{FieldError, TaskConfig};
use serde::Deserialize;

use super::scan::Pattern;
use crate::catalog::DatabaseName;
use crate::s3::{S3Prefix, S3Uri};

#[derive(Debug, Clone, Deserialize)]
pub struct GlueCrawlerConfig {
    /// The catalog database the tables go to.
    pub database: DatabaseName,
    /// The prefixes to crawl (Glue's S3 targets).
    pub targets: StringOrList<S3Prefix>,
    /// Prepended to every table name (Glue's `TablePrefix`).
    #[serde(default)]
    pub table_prefix: String,
    /// Keys relative to a target that the crawl leaves out.
    #[serde(default)]
    pub exclusions: StringOrList<Pattern>,
}

impl TaskConfig for GlueCrawlerConfig {
    const NAMES_LOCATIONS: bool = true;

    /// A crawl reads its targets (a list, or one prefix written alone).
    fn locations(&self) -> Vec<Location> {
        self.targets
            .0
            .iter()
            .enumerate()
            .map(|(i, t)| Location::reads(t, "targets", Some(i)))
            .collect()
    }

    fn check(&self) -> Result<(), FieldError> {
        if self.targets.0.is_empty() {
            return Err(FieldError::field("targets", "`targets` is an empty list")
                .help("name at least one s3:// prefix to crawl"));
        }
        let targets: Vec<S3Uri> = self.targets.0.iter().map(|t| t.uri().clone()).collect();
        if let Some((a, b)) = S3Uri::first_overlap(&targets) {
            return Err(
                FieldError::field("targets", format!("`targets` {a} and {b} overlap"))
                    .help("list each prefix once; a target covers everything under it"),
            );
        }
        if !self
            .table_prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(FieldError::field(
                "table_prefix",
                format!(
                    "`table_prefix` `{}` may only hold lowercase letters, digits and `_`",
                    self.table_prefix
                ),
            )
            .help(
                "table names follow Glue and Athena's rule, for example `table_prefix = \"raw_\"`",
            ));
        }
        Ok(())
    }

    fn help(field: &str, problem: Problem) -> Option<String> {
        match (field, problem) {
            ("targets", Problem::Missing) => {
                Some("add `targets = [\"s3://bucket/prefix/\"]` to the task".into())
            }
            ("targets", Problem::Invalid) => {
                Some("write each target as s3://bucket/prefix/".into())
            }
            ("exclusions", Problem::Invalid) => Some(
                "patterns are keys relative to the target, as in \"**/_tmp/**\" or \"**.json\""
                    .into(),
            ),
            _ => None,
        }
    }
}
