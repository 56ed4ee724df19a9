//! `flux-engine trace RUN_ID [--html FILE] [--otlp-json FILE] [--send]`: a
//! run's spans as the checkpoint keeps them, viewed without a collector,
//! or sent to one.

use std::path::Path;

use engine::state_dir::StateDir;
use reports::trace::{RunInfo, WIDTH, html, otlp_json, waterfall};

use crate::exit::Exit;

pub fn trace(
    state_dir: &StateDir,
    run_id: &str,
    html_file: Option<&Path>,
    otlp_file: Option<&Path>,
    send: bool,
) -> Result<u8, Exit> {
    let checkpoint = crate::checkpoint_with_runs(state_dir)?;
    // As `show` does: an unknown run is invalid input (2), a checkpoint
    // that cannot be read is a failure (1).
    let run = checkpoint.run(run_id)?;
    let spans = checkpoint.spans(run_id)?;
    let info = RunInfo {
        run_id: &run.run_id,
        dag: &run.dag,
    };
    if spans.is_empty() {
        println!(
            "run {run_id} has no spans stored: it ran with --no-traces or OTEL_SDK_DISABLED=true, or before traces were recorded, or its spans were not delivered"
        );
    }
    if let Some(path) = html_file {
        write(path, &html(info, &spans))?;
    }
    if let Some(path) = otlp_file {
        let request = otlp_json(&spans);
        let text = serde_json::to_string_pretty(&request)
            .map_err(|e| Exit::failure(format_args!("OTLP JSON: {e}")))?;
        write(path, &format!("{text}\n"))?;
    }
    if send && !spans.is_empty() {
        let (endpoint, n) = engine::telemetry::send_records(&spans)
            .map_err(|e| Exit::failure(format_args!("cannot send the spans: {e}")))?;
        println!("sent {n} span(s) to {endpoint}");
    }
    if html_file.is_none() && otlp_file.is_none() && !send && !spans.is_empty() {
        print!("{}", waterfall(info, &spans, WIDTH));
    }
    Ok(0)
}

fn write(path: &Path, text: &str) -> Result<(), Exit> {
    std::fs::write(path, text)
        .map_err(|e| Exit::failure(format_args!("cannot write {}: {e}", path.display())))?;
    println!("{}", path.display());
    Ok(())
}
