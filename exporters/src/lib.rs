//! A validated DAG rendered for other tools: Graphviz DOT and Mermaid for
//! `flux-engine graph`, and Amazon States Language for `flux-engine export
//! --sfn`.
//!
//! Exporters read a [`engine::Dag`]; they never run anything.

pub mod graph;
pub mod sfn;
