//! flux-engine's task kinds, one folder each.
//!
//! A kind's folder holds its typed config (`config.rs`, the fields a DAG
//! file gives it, checked once), its local backend (what runs each
//! attempt here) and its tests. The
//! modules without a kind are what kinds share: [`s3`] (the local S3
//! store), [`catalog`] (the local data catalog), [`sql`] (DataFusion over
//! it), [`process`] (a kind's child processes).
//!
//! Adding a kind means a new folder and one line in [`registry`].

pub mod athena_query;
pub mod cancel;
pub mod catalog;
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

use std::sync::Arc;

use engine::Registry;

/// Every task kind this build of flux-engine knows.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(Arc::new(athena_query::AthenaQuery))
        .register(Arc::new(emr_spark::EmrSpark))
        .register(Arc::new(glue_crawler::GlueCrawler))
        .register(Arc::new(noop::Noop))
        .register(Arc::new(report::Report))
        .register(Arc::new(s3_ingest::S3Ingest))
        .register(Arc::new(shell::Shell));
    registry
}
