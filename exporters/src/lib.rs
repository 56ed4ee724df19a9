//! A validated DAG rendered for other tools. Now: Graphviz DOT and Mermaid
//! for `flux-engine graph`. The Step Functions exporter joins them here.
//!
//! Exporters read a [`engine::Dag`]; they never run anything.

pub mod graph;
