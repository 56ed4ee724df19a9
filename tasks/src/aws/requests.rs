//! A span per AWS request, under the span the request was made in (a
//! step's or the attempt's), named `Service.Operation` with the
//! service, the operation and the request id as attributes, as the
//! OpenTelemetry conventions for AWS SDK calls name them (`rpc.system`,
//! `rpc.service`, `rpc.method`, `aws.request_id`). Each try of the
//! request (the SDK retries throttling and 5xx answers) is an event on
//! it with the HTTP status it got, so retries show in the trace.

use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use tracing::{Span, field, info_span};

/// The SDK interceptor that makes the spans; one per client.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpans;

/// The span of the request under way, kept in the request's config bag.
#[derive(Debug, Clone)]
struct RequestSpan {
    span: Span,
    tries: u32,
}

impl Storable for RequestSpan {
    type Storer = StoreReplace<Self>;
}

fn request_id(context: &FinalizerInterceptorContextRef<'_>) -> Option<String> {
    let headers = context.response()?.headers();
    ["x-amzn-requestid", "x-amz-request-id", "x-amzn-request-id"]
        .iter()
        .find_map(|name| headers.get(*name))
        .map(str::to_string)
}

impl Intercept for RequestSpans {
    fn name(&self) -> &'static str {
        "flux-engine request spans"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The operation's metadata is not in the bag yet: it is named at
        // its first try.
        let span = info_span!(
            "aws",
            otel.name = "aws",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = field::Empty,
            rpc.method = field::Empty,
            aws.request_id = field::Empty,
            http.response.status_code = field::Empty,
            flux.aws.tries = field::Empty,
            otel.status_code = field::Empty,
            otel.status_description = field::Empty,
        );
        cfg.interceptor_state()
            .store_put(RequestSpan { span, tries: 0 });
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(mut request) = cfg.load::<RequestSpan>().cloned() {
            if request.tries == 0
                && let Some(metadata) = cfg.load::<Metadata>()
            {
                let span = &request.span;
                span.record(
                    "otel.name",
                    format!("{}.{}", metadata.service(), metadata.name()).as_str(),
                );
                span.record("rpc.service", metadata.service());
                span.record("rpc.method", metadata.name());
            }
            request.tries += 1;
            cfg.interceptor_state().store_put(request);
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(request) = cfg.load::<RequestSpan>() {
            let status = context.response().map(|r| r.status().as_u16()).unwrap_or(0);
            let failed = context.output_or_error().is_some_and(|o| o.is_err());
            tracing::info!(
                target: "flux_engine::trace",
                parent: &request.span,
                { flux.aws.try = i64::from(request.tries), http.response.status_code = i64::from(status), flux.aws.failed = failed },
                "aws.try"
            );
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(request) = cfg.load::<RequestSpan>() else {
            return Ok(());
        };
        let span = &request.span;
        if let Some(id) = request_id(context) {
            span.record("aws.request_id", id.as_str());
        }
        if let Some(response) = context.response() {
            span.record(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            );
        }
        span.record("flux.aws.tries", i64::from(request.tries));
        match context.output_or_error() {
            Some(Err(e)) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", e.to_string().as_str());
            }
            _ => {
                span.record("otel.status_code", "OK");
            }
        }
        Ok(())
    }
}
