//! flux-engine's task kinds, one folder each.
//!
//! A kind's folder is its whole story: its typed config (`config.rs`, the
//! fields a DAG file gives it, checked once), its local backend (what runs
//! each attempt here), its Step Functions translation (`sfn.rs`: its
//! states, the IAM grants they need, the `[aws]` settings it reads and
//! what it adds to the CloudFormation template) and its tests. The
//! modules without a kind are what kinds share: [`s3`] (the local S3
//! store), [`catalog`] (the local data catalog), [`sql`] (DataFusion over
//! it), [`process`] (a kind's child processes).
//!
//! Adding a kind means a new folder and one line in [`registry`]; see
//! [`register`].

pub mod athena_query;
pub mod aws;
pub mod cancel;
pub mod catalog;
pub mod dirty_rows;
pub mod emr_spark;
pub mod glue_crawler;
pub mod noop;
pub mod process;
pub mod report;
pub mod s3;
pub mod s3_ingest;
pub mod sample_data;
pub mod shell;
pub mod sql;
mod steps;

use engine::Registry;
use exporters::sfn::StepFunctions;

/// Every task kind this build of flux-engine knows.
///
/// The order is the order in which kinds contribute to an export's `[aws]`
/// settings (which ones a DAG may hold, and the errors about them) and to
/// the IAM policy's statements: the Spark jobs, the crawl, the queries,
/// the uploads, the report, then the kinds that need nothing.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    register(&mut registry, emr_spark::EmrSpark);
    register(&mut registry, glue_crawler::GlueCrawler);
    register(&mut registry, athena_query::AthenaQuery);
    register(&mut registry, s3_ingest::S3Ingest);
    register(&mut registry, report::Report);
    register(&mut registry, noop::Noop);
    register(&mut registry, shell::Shell);
    registry
}

/// Adds `kind` to `registry` with every face it has: the engine's (its
/// config and local backend, [`engine::Kind`]) and its Step Functions
/// translation ([`StepFunctions`]).
pub fn register<K: StepFunctions>(registry: &mut Registry, kind: K) -> &mut Registry {
    exporters::sfn::register(registry, kind)
}
