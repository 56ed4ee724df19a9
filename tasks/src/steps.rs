//! Spans for the notable steps inside a task kind (an object uploaded, a
//! Spark job submitted, a crawl, a query), children of the attempt's span:
//! a trace shows where an attempt's time went.

use tracing::{Span, field, info_span};

use engine::TaskFailure;

/// A step's span, under the current span (the attempt's, in async code;
/// blocking code passes the attempt's span as `parent`). `target` is what
/// the step works on: an `s3://` URI, a script, a crawler, the SQL.
pub(crate) fn step(parent: &Span, name: &'static str, target: &str) -> Span {
    info_span!(
        parent: parent,
        "step",
        otel.name = name,
        flux.step.target = target,
        otel.status_code = field::Empty,
        otel.status_description = field::Empty,
    )
}

/// Records how the step ended; a failure also becomes an `exception`
/// event, as for attempts.
pub(crate) fn finish<T>(span: &Span, result: &Result<T, TaskFailure>) {
    match result {
        Ok(_) => {
            span.record("otel.status_code", "OK");
        }
        Err(failure) => {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", failure.message.as_str());
            tracing::info!(
                target: "flux_engine::trace",
                parent: span,
                { exception.message = failure.message.as_str() },
                "exception"
            );
        }
    }
}
