//! What the kinds' AWS backends share when a run does its work on AWS
//! (`flux-engine run DAG --target aws`): the SDK clients, built once per
//! run from the standard AWS configuration; the DAG's `[aws]` settings as
//! the export reads them; the check made before any task starts; a span
//! per AWS request; the poll loop.
//!
//! Each kind's AWS backend lives in its own folder (`aws.rs` beside
//! `config.rs` and `sfn.rs`) and implements [`OnAws`]; [`registry`] puts
//! those backends in the registry in place of the local ones. A kind
//! without one (`shell`, `noop`) runs locally in an AWS run too.
//!
//! This module must never start work in AWS itself: it only connects.

pub mod deploy;
pub mod executions;
pub mod history;
mod requests;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::BehaviorVersion;
use engine::{Dag, Kind, Registry, TaskAction, WorkJournal};
use exporters::sfn::StepFunctions;
use exporters::sfn::kind::AnySettings;
use exporters::sfn::settings::Common;

pub use requests::RequestSpans;

/// The target name recorded with a run.
pub const TARGET: &str = "aws";

/// How long the check for credentials may take (an SSO or instance-role
/// lookup that hangs is a configuration problem, not a slow start).
const CREDENTIALS_DEADLINE: Duration = Duration::from_secs(20);

/// One run's connection to AWS, shared by its tasks.
pub struct AwsRun {
    pub dag: String,
    pub region: String,
    pub s3: aws_sdk_s3::Client,
    pub emr: aws_sdk_emr::Client,
    pub emr_serverless: aws_sdk_emrserverless::Client,
    pub glue: aws_sdk_glue::Client,
    pub athena: aws_sdk_athena::Client,
    /// `deploy` and `start`: the stack, the state machine, its executions.
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub common: Common,
    /// Each kind's `[aws]` settings, by kind name.
    settings: Vec<(&'static str, Box<AnySettings>)>,
    /// The run's own records of work it started (run-wide), once the run
    /// id is known: what the end of the run cleans up.
    run_journal: OnceLock<WorkJournal>,
    /// Requests stopping work whose attempt was dropped (a step, a
    /// query): the end of the run waits for them.
    cleanups: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long the end of a run waits for the stop requests still under way.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(30);

impl AwsRun {
    /// Connects for `dag`: reads its `[aws]` settings (as the export does)
    /// and the standard AWS configuration, and checks that a region and
    /// credentials are there. Every error says what to set; nothing is
    /// started in AWS.
    pub async fn connect(dag: &Dag, registry: &Registry) -> Result<Arc<AwsRun>, String> {
        let (common, settings) = exporters::sfn::model::read_settings(dag, registry)
            .map_err(|e| format!("the DAG's [aws] section cannot drive a run on AWS:\n{e}"))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(crate::report::aws::https_client());
        // The DAG's region first: its buckets and roles are there. Else
        // the loader's own chain (AWS_REGION, the profile, the instance).
        if let Some(region) = &common.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let Some(region) = shared.region().map(|r| r.to_string()) else {
            return Err(
                "no AWS region: set `region` in the DAG's [aws] section, or AWS_REGION, or a region in your AWS profile"
                    .into(),
            );
        };
        check_credentials(&shared).await?;
        let custom_s3_endpoint = shared.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                // A local endpoint (http://127.0.0.1:PORT) has no
                // per-bucket host names.
                .force_path_style(custom_s3_endpoint)
                .interceptor(RequestSpans)
                .build(),
        );
        let emr = aws_sdk_emr::Client::from_conf(
            aws_sdk_emr::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        let emr_serverless = aws_sdk_emrserverless::Client::from_conf(
            aws_sdk_emrserverless::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        let glue = aws_sdk_glue::Client::from_conf(
            aws_sdk_glue::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        let athena = aws_sdk_athena::Client::from_conf(
            aws_sdk_athena::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        let cloudformation = aws_sdk_cloudformation::Client::from_conf(
            aws_sdk_cloudformation::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        let sfn = aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::config::Builder::from(&shared)
                .interceptor(RequestSpans)
                .build(),
        );
        Ok(Arc::new(AwsRun {
            dag: dag.name.clone(),
            region,
            s3,
            emr,
            emr_serverless,
            glue,
            athena,
            cloudformation,
            sfn,
            common,
            settings,
            run_journal: OnceLock::new(),
            cleanups: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Tells the backends which run they serve: the one whose work is
    /// recorded in the checkpoint at `checkpoint`. Set once, before the
    /// run starts.
    pub fn serve_run(&self, checkpoint: std::path::PathBuf, run_id: &str) {
        let _ = self
            .run_journal
            .set(WorkJournal::in_checkpoint(checkpoint, run_id, "", 0));
    }

    /// The run's journal, for the end of the run.
    pub fn run_journal(&self) -> Option<&WorkJournal> {
        self.run_journal.get()
    }

    /// Sends a request that stops work whose attempt was dropped; the end
    /// of the run waits for it ([`AwsRun::finish_cleanups`]).
    pub fn spawn_cleanup(&self, request: impl Future<Output = ()> + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let handle = runtime.spawn(request);
        self.cleanups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Waits (at most [`CLEANUP_DEADLINE`]) for the stop requests sent so
    /// far.
    pub async fn finish_cleanups(&self) {
        let pending: Vec<_> =
            std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
        let all = async {
            for request in pending {
                let _ = request.await;
            }
        };
        let _ = tokio::time::timeout(CLEANUP_DEADLINE, all).await;
    }

    /// The `[aws]` settings of the kind `K`.
    pub fn settings<K: StepFunctions>(&self) -> Option<&K::Settings> {
        self.settings
            .iter()
            .find(|(name, _)| *name == K::NAME)
            .and_then(|(_, s)| s.downcast_ref::<K::Settings>())
    }

    /// A link to the AWS console for a piece of work, for `show`.
    pub fn console_link(&self, path: &str) -> String {
        console_link(&self.region, path)
    }
}

/// Stops a piece of work in AWS (a step, a job run, a query, a crawl) if
/// the attempt waiting on it is dropped while it is `armed` (a timeout,
/// Ctrl-C): the request goes out through [`AwsRun::spawn_cleanup`], so
/// the end of the run waits for it. The request is built when the work
/// starts and sent only if needed.
pub struct StopOnDrop {
    aws: Arc<AwsRun>,
    stop: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Whether dropping the guard stops the work.
    pub armed: bool,
}

impl StopOnDrop {
    /// A guard, armed, that sends `request` (saying `what` was `done`, or
    /// why not) when dropped armed.
    pub fn new<O, E, R>(
        aws: &Arc<AwsRun>,
        what: String,
        done: &'static str,
        request: impl Future<Output = Result<O, aws_sdk_s3::error::SdkError<E, R>>> + Send + 'static,
    ) -> StopOnDrop
    where
        E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + Send + 'static,
        R: std::fmt::Debug + Send + 'static,
    {
        let stop = async move {
            match request.await {
                Ok(_) => say(&format!("{what} {done}")),
                Err(e) => say(&format!(
                    "warning: {what} was not {done}: {}",
                    error_text(&e)
                )),
            }
        };
        StopOnDrop {
            aws: aws.clone(),
            stop: Some(Box::pin(stop)),
            armed: true,
        }
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.armed
            && let Some(stop) = self.stop.take()
        {
            self.aws.spawn_cleanup(stop);
        }
    }
}

/// A line for the person at the terminal (`flux-engine: ...` on stderr);
/// a closed terminal is no reason to fail.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "flux-engine: {line}");
}

/// `https://REGION.console.aws.amazon.com/PATH`.
pub fn console_link(region: &str, path: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/{path}")
}

async fn check_credentials(shared: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials;
    const HOW: &str = "set AWS_PROFILE to a profile in ~/.aws/config (after `aws sso login` for an SSO profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a container or instance role is available";
    let Some(provider) = shared.credentials_provider() else {
        return Err(format!("no AWS credentials provider is configured: {HOW}"));
    };
    match tokio::time::timeout(CREDENTIALS_DEADLINE, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("no AWS credentials ({}); {HOW}", causes(&e))),
        Err(_) => Err(format!(
            "looking up AWS credentials took more than {} s; {HOW}",
            CREDENTIALS_DEADLINE.as_secs()
        )),
    }
}

/// An error and its sources, each said once, on one line.
fn causes(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(text.trim())) {
            parts.push(text.trim().to_string());
        }
        next = e.source();
    }
    parts.join(": ")
}

/// A kind's AWS backend: what runs each attempt of its tasks in a run
/// with `--target aws`, written in the kind's own folder.
pub trait OnAws: StepFunctions {
    /// The backend for a task with `config`.
    fn aws_action(&self, config: Self::Config, aws: &Arc<AwsRun>) -> Arc<dyn TaskAction>;

    /// Called once when the run ends, however it ends: gives back what
    /// the kind's tasks started for the run as a whole (a cluster).
    fn end_of_aws_run(&self, aws: &Arc<AwsRun>) -> impl Future<Output = ()> + Send {
        let _ = aws;
        async {}
    }
}

/// A kind with its AWS backend in place of its local one.
struct OnAwsKind<K> {
    kind: Arc<K>,
    aws: Arc<AwsRun>,
}

impl<K: OnAws> Kind for OnAwsKind<K> {
    const NAME: &'static str = K::NAME;
    const SUMMARY: &'static str = K::SUMMARY;
    type Config = K::Config;

    fn action(&self, config: K::Config) -> Arc<dyn TaskAction> {
        self.kind.aws_action(config, &self.aws)
    }

    fn end_of_run(&self) -> impl Future<Output = ()> + Send {
        self.kind.end_of_aws_run(&self.aws)
    }
}

/// Puts `kind`'s AWS backend in `registry` in place of its local one (its
/// other faces stay).
pub fn use_on_aws<K: OnAws>(registry: &mut Registry, kind: K, aws: &Arc<AwsRun>) {
    registry.register(Arc::new(OnAwsKind {
        kind: Arc::new(kind),
        aws: aws.clone(),
    }));
}

/// How often a kind asks a service how its work is going: every
/// `interval` at first, backing off to `max` while the service throttles.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub interval: Duration,
    pub max: Duration,
}

impl Poll {
    /// The interval, from `FLUX_AWS_POLL_SECONDS` (fractions allowed, for
    /// tests against a local endpoint) or `default_seconds`.
    pub fn from_env(default_seconds: f64) -> Poll {
        let seconds = std::env::var("FLUX_AWS_POLL_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(default_seconds);
        let interval = Duration::from_secs_f64(seconds);
        Poll {
            interval,
            max: (interval * 8).max(Duration::from_secs(1)),
        }
    }

    /// The wait after a poll: the interval, doubled per throttled poll in
    /// a row up to `max`.
    pub fn delay(&self, throttled_in_a_row: u32) -> Duration {
        let factor = 2u32.saturating_pow(throttled_in_a_row.min(10));
        (self.interval * factor).min(self.max.max(self.interval))
    }
}

/// The text of an SDK error a user can act on: the service's error code,
/// message and request id, or what went wrong on the way (a connection,
/// a timeout), with its causes.
pub fn error_text<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => {
            let code = service.code().unwrap_or("an error without a code");
            let message = service
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            let request = service
                .meta()
                .extra("aws_request_id")
                .or_else(|| service.meta().extra("s3_extended_request_id"))
                .map(|id| format!(" (request id {id})"))
                .unwrap_or_default();
            format!("{code}{message}{request}")
        }
        None => causes(e),
    }
}

/// Whether an SDK error is the service asking the caller to slow down.
pub fn throttled<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|code| {
            matches!(
                code,
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
                    | "SlowDown"
                    | "ProvisionedThroughputExceededException"
            )
        })
}

/// The grants of `run --target aws` on the objects at `uri` (a prefix or
/// one object): `actions` on them in the statement `sid`, and
/// `s3:ListBucket` for their keys (without it S3 answers a `HeadObject`
/// of a missing object 403 instead of 404).
pub fn object_grants(
    sid: &str,
    arns: &exporters::sfn::iam::Arns,
    uri: &crate::s3::S3Uri,
    actions: &[&str],
) -> Vec<exporters::sfn::iam::Grant> {
    use exporters::sfn::iam::{Grant, s3_places};
    let (objects, prefixes) = s3_places(uri.bucket(), uri.key());
    vec![
        Grant::statement(sid, actions, objects.iter().map(|o| arns.s3(o))),
        Grant::list("RunListBucket", uri.bucket(), prefixes),
    ]
}

/// The registry for a run on AWS: `registry` with each kind's AWS backend
/// in place of its local one.
pub fn registry(mut registry: Registry, aws: &Arc<AwsRun>) -> Registry {
    use_on_aws(&mut registry, crate::s3_ingest::S3Ingest, aws);
    use_on_aws(&mut registry, crate::emr_spark::EmrSpark, aws);
    use_on_aws(&mut registry, crate::glue_crawler::GlueCrawler, aws);
    use_on_aws(&mut registry, crate::athena_query::AthenaQuery, aws);
    use_on_aws(&mut registry, crate::report::Report, aws);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_while_throttled_and_stop_at_the_maximum() {
        let poll = Poll {
            interval: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        let delays: Vec<u128> = (0..6).map(|n| poll.delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
    }
}
