//! The scheduler's promises, checked in-process with task kinds made for the
//! test: retry delays (on tokio's paused clock), the parallelism bound,
//! failure propagation, timeouts and outputs flowing downstream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::scheduler::Silent;
use engine::state_dir::StateDir;
use engine::{
    Attempt, Engine, Kind, Registry, RunOptions, RunStatus, TaskAction, TaskConfig, TaskFailure,
    TaskStatus,
};
use tokio::time::Instant;

/// What the test kinds saw, shared with the test body.
#[derive(Default)]
struct Journal {
    /// (task id, attempt number, when it started on tokio's clock)
    starts: Mutex<Vec<(String, u32, Instant)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    inputs: Mutex<BTreeMap<String, BTreeMap<String, serde_json::Value>>>,
}

/// `type = "probe"`: sleeps `sleep_ms`, fails its first `fail_times`
/// attempts, and returns `{"task": ID, "attempt": N}`.
struct Probe(Arc<Journal>);

struct ProbeAction {
    journal: Arc<Journal>,
    fail_times: u32,
    sleep: Duration,
}

#[derive(serde::Deserialize)]
struct ProbeConfig {
    #[serde(default)]
    fail_times: u32,
    #[serde(default)]
    sleep_ms: u64,
}

impl TaskConfig for ProbeConfig {}

impl Kind for Probe {
    const NAME: &'static str = "probe";
    const SUMMARY: &'static str = "test probe";
    type Config = ProbeConfig;

    fn action(&self, config: ProbeConfig) -> Arc<dyn TaskAction> {
        Arc::new(ProbeAction {
            journal: self.0.clone(),
            fail_times: config.fail_times,
            sleep: Duration::from_millis(config.sleep_ms),
        })
    }
}

#[async_trait]
impl TaskAction for ProbeAction {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let j = &self.journal;
        j.starts
            .lock()
            .unwrap()
            .push((attempt.task_id.clone(), attempt.number, Instant::now()));
        j.inputs
            .lock()
            .unwrap()
            .insert(attempt.task_id.clone(), attempt.inputs.clone());
        let now = j.running.fetch_add(1, Ordering::SeqCst) + 1;
        j.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        j.running.fetch_sub(1, Ordering::SeqCst);
        if attempt.number <= self.fail_times {
            return Err(TaskFailure::new(format!(
                "planned failure {}",
                attempt.number
            )));
        }
        Ok(Some(
            serde_json::json!({"task": attempt.task_id, "attempt": attempt.number}),
        ))
    }
}

struct Fixture {
    engine: Engine,
    journal: Arc<Journal>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let journal = Arc::new(Journal::default());
    let mut registry = Registry::new();
    registry.register(Arc::new(Probe(journal.clone())));
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        engine: Engine::new(registry, StateDir::new(dir.path().join("state"))),
        journal,
        _dir: dir,
    }
}

fn options(max_parallel: usize) -> RunOptions {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    RunOptions {
        max_parallel,
        observer: Arc::new(Silent),
        cancel: rx,
    }
}

async fn run(
    f: &Fixture,
    toml: &str,
    max_parallel: usize,
) -> (RunStatus, BTreeMap<String, TaskStatus>) {
    let dag = engine::dag::load_str(
        &f._dir.path().join("dag.toml"),
        toml,
        &[],
        &f.engine.registry,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let outcome = f.engine.run(&dag, options(max_parallel)).await.unwrap();
    let checkpoint = f.engine.state_dir.open_checkpoint().unwrap();
    let statuses = checkpoint
        .tasks(&outcome.run_id)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    (outcome.status, statuses)
}

#[tokio::test(start_paused = true)]
async fn retry_delays_follow_the_step_functions_formula() {
    let f = fixture();
    // interval 2, rate 3, cap 10: delays 2, 6, 10 (18 capped), 10.
    let toml = r#"
        [dag]
        name = "retry"
        [tasks.flaky]
        type = "probe"
        fail_times = 4
        retry = { max_attempts = 5, interval_seconds = 2, backoff_rate = 3.0, max_delay_seconds = 10 }
    "#;
    let (status, tasks) = run(&f, toml, 2).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(tasks["flaky"], TaskStatus::Succeeded);
    let starts = f.journal.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 5);
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1].2 - w[0].2).as_millis() as u64)
        .collect();
    let expected: Vec<u64> = [2u64, 6, 10, 10].iter().map(|s| s * 1000).collect();
    for (gap, want) in gaps.iter().zip(&expected) {
        // The paused clock advances exactly; allow for the scheduler's own
        // bookkeeping, which takes no virtual time but rounds to a millisecond.
        assert!(
            gap.abs_diff(*want) <= 5,
            "gaps {gaps:?}, expected {expected:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn full_jitter_never_waits_longer_than_the_delay() {
    let f = fixture();
    let toml = r#"
        [dag]
        name = "jitter"
        [tasks.flaky]
        type = "probe"
        fail_times = 3
        retry = { max_attempts = 4, interval_seconds = 8, backoff_rate = 2.0, jitter = "full" }
    "#;
    let (status, _) = run(&f, toml, 2).await;
    assert_eq!(status, RunStatus::Succeeded);
    let starts = f.journal.starts.lock().unwrap().clone();
    let bounds = [8_000u64, 16_000, 32_000];
    for (w, bound) in starts.windows(2).zip(bounds) {
        let gap = (w[1].2 - w[0].2).as_millis() as u64;
        assert!(gap <= bound + 5, "gap {gap} ms over the {bound} ms delay");
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_that_keeps_failing_fails_after_max_attempts() {
    let f = fixture();
    let toml = r#"
        [dag]
        name = "fails"
        [defaults]
        retry = { max_attempts = 3, interval_seconds = 1 }
        [tasks.broken]
        type = "probe"
        fail_times = 100
    "#;
    let (status, tasks) = run(&f, toml, 2).await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(tasks["broken"], TaskStatus::Failed);
    assert_eq!(f.journal.starts.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn parallelism_never_exceeds_the_limit_and_reaches_it() {
    for limit in [1usize, 3, 8] {
        let f = fixture();
        let mut toml = String::from("[dag]\nname = \"wide\"\n");
        for i in 0..40 {
            toml.push_str(&format!(
                "[tasks.t{i}]\ntype = \"probe\"\nsleep_ms = {}\n",
                100 + (i * 37) % 200
            ));
        }
        let (status, _) = run(&f, &toml, limit).await;
        assert_eq!(status, RunStatus::Succeeded);
        assert_eq!(
            f.journal.max_running.load(Ordering::SeqCst),
            limit,
            "limit {limit}"
        );
        assert_eq!(f.journal.starts.lock().unwrap().len(), 40);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_ends_its_descendants_but_not_independent_branches() {
    let f = fixture();
    // a -> b -> c, b -> d, a -> e -> f, x (alone); b fails.
    let toml = r#"
        [dag]
        name = "propagation"
        [tasks.a]
        type = "probe"
        [tasks.b]
        type = "probe"
        depends_on = ["a"]
        fail_times = 9
        [tasks.c]
        type = "probe"
        depends_on = ["b"]
        [tasks.d]
        type = "probe"
        depends_on = ["b", "e"]
        [tasks.e]
        type = "probe"
        depends_on = ["a"]
        sleep_ms = 500
        [tasks.f]
        type = "probe"
        depends_on = ["e"]
        [tasks.x]
        type = "probe"
        sleep_ms = 1000
    "#;
    let (status, tasks) = run(&f, toml, 4).await;
    assert_eq!(status, RunStatus::Failed);
    let expect = [
        ("a", TaskStatus::Succeeded),
        ("b", TaskStatus::Failed),
        ("c", TaskStatus::UpstreamFailed),
        ("d", TaskStatus::UpstreamFailed),
        ("e", TaskStatus::Succeeded),
        ("f", TaskStatus::Succeeded),
        ("x", TaskStatus::Succeeded),
    ];
    for (id, want) in expect {
        assert_eq!(tasks[id], want, "task {id}");
    }
    let started: Vec<String> = f
        .journal
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.0.clone())
        .collect();
    assert!(!started.contains(&"c".to_string()) && !started.contains(&"d".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_task_never_starts_before_its_dependencies_succeed() {
    let f = fixture();
    let toml = r#"
        [dag]
        name = "order"
        [tasks.slow]
        type = "probe"
        sleep_ms = 3000
        [tasks.fast]
        type = "probe"
        sleep_ms = 10
        [tasks.join]
        type = "probe"
        depends_on = ["slow", "fast"]
    "#;
    run(&f, toml, 4).await;
    let starts = f.journal.starts.lock().unwrap().clone();
    let at = |id: &str| starts.iter().find(|s| s.0 == id).unwrap().2;
    assert!(at("join") - at("slow") >= Duration::from_millis(3000));
    let inputs = f.journal.inputs.lock().unwrap();
    let join_inputs = &inputs["join"];
    assert_eq!(join_inputs["slow"]["task"], "slow");
    assert_eq!(join_inputs["fast"]["task"], "fast");
}

#[tokio::test(start_paused = true)]
async fn an_attempt_over_its_timeout_fails_and_is_retried() {
    let f = fixture();
    let toml = r#"
        [dag]
        name = "timeout"
        [tasks.sleepy]
        type = "probe"
        sleep_ms = 60000
        timeout_seconds = 2
        retry = { max_attempts = 2, interval_seconds = 1 }
    "#;
    let (status, tasks) = run(&f, toml, 1).await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(tasks["sleepy"], TaskStatus::Failed);
    let starts = f.journal.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2);
    // Attempt 2 starts after attempt 1's 2 s timeout plus the 1 s delay.
    let gap = starts[1].2 - starts[0].2;
    assert!(
        gap >= Duration::from_secs(3) && gap < Duration::from_secs(4),
        "{gap:?}"
    );
    let checkpoint = f.engine.state_dir.open_checkpoint().unwrap();
    let run_id = checkpoint.latest_run().unwrap().unwrap().run_id;
    let task = &checkpoint.tasks(&run_id).unwrap()[0];
    assert!(
        task.error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 2 s"),
        "{task:?}"
    );
}

/// `type = "checked"`: a probe whose kind has a preflight, answering
/// what the test set and counting its calls.
struct Checked {
    journal: Arc<Journal>,
    answer: Result<engine::Preflight, String>,
    calls: Arc<AtomicUsize>,
}

impl Kind for Checked {
    const NAME: &'static str = "checked";
    const SUMMARY: &'static str = "test probe with a preflight";
    type Config = ProbeConfig;

    fn action(&self, config: ProbeConfig) -> Arc<dyn TaskAction> {
        Probe(self.journal.clone()).action(config)
    }

    async fn preflight(&self) -> Result<engine::Preflight, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer.clone()
    }
}

fn checked_fixture(answer: Result<engine::Preflight, String>) -> (Fixture, Arc<AtomicUsize>) {
    let mut f = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    f.engine.registry.register(Arc::new(Checked {
        journal: f.journal.clone(),
        answer,
        calls: calls.clone(),
    }));
    (f, calls)
}

#[tokio::test(start_paused = true)]
async fn a_kinds_preflight_runs_once_and_only_for_a_dag_that_uses_the_kind() {
    let (f, calls) = checked_fixture(Err("never asked".into()));
    let toml = r#"
        [dag]
        name = "unchecked"
        [tasks.a]
        type = "probe"
    "#;
    let (status, _) = run(&f, toml, 1).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no `checked` task, no check"
    );

    let found = engine::Preflight {
        attributes: vec![("flux.test.env".into(), "here".into())],
        notes: vec!["chose the working one".into()],
    };
    let (f, calls) = checked_fixture(Ok(found));
    let dag = engine::dag::load_str(
        &f._dir.path().join("dag.toml"),
        r#"
        [dag]
        name = "checked"
        [tasks.a]
        type = "checked"
        [tasks.b]
        type = "checked"
        depends_on = ["a"]
    "#,
        &[],
        &f.engine.registry,
    )
    .unwrap();
    let outcome = f.engine.run(&dag, options(1)).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "once per run, not per task"
    );
    assert_eq!(outcome.notes, ["chose the working one"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_stops_the_run_before_any_task_or_record() {
    let (f, calls) = checked_fixture(Err("no Spark here; install it".into()));
    let dag = engine::dag::load_str(
        &f._dir.path().join("dag.toml"),
        r#"
        [dag]
        name = "checked"
        [tasks.first]
        type = "probe"
        [tasks.spark]
        type = "checked"
        retry = { max_attempts = 3, interval_seconds = 1 }
    "#,
        &[],
        &f.engine.registry,
    )
    .unwrap();
    let err = f.engine.run(&dag, options(2)).await.unwrap_err();
    assert!(
        matches!(&err, engine::EngineError::Preflight { kind, message }
            if kind == "checked" && message == "no Spark here; install it"),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        f.journal.starts.lock().unwrap().is_empty(),
        "no task starts, not even one of another kind"
    );
    let checkpoint = f.engine.state_dir.open_checkpoint().unwrap();
    assert!(
        checkpoint.latest_run().unwrap().is_none(),
        "no run recorded"
    );
}
