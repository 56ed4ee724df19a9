//! Runs Amazon States Language state machines in `aws-local-stepfunctions`
//! (npm, a third-party interpreter) with every Task state overridden by
//! exporters/tests/sfn_local/run.cjs, which records each task state's
//! start, end or failure and returns a plausible service response.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// The npm package that interprets the state machines.
pub const PACKAGE: &str = "aws-local-stepfunctions";

/// exporters/tests/sfn_local: run.cjs, polyfill.cjs, package.json.
pub fn harness_dir() -> PathBuf {
    // Found from this crate's folder upwards, so that the helper works
    // from the workspace root's tests and from a member crate's.
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|dir| dir.join("exporters/tests/sfn_local"))
        .find(|dir| dir.join("run.cjs").is_file())
        .unwrap_or_else(|| {
            panic!(
                "exporters/tests/sfn_local/run.cjs not found above {}",
                start.display()
            )
        })
}

/// The version that exporters/tests/sfn_local/package.json pins.
pub fn pinned_version() -> String {
    let file = harness_dir().join("package.json");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    json["dependencies"][PACKAGE]
        .as_str()
        .unwrap_or_else(|| panic!("{} does not pin {PACKAGE}", file.display()))
        .to_string()
}

/// Where the npm packages are installed: `$FLUX_NPM_PREFIX`, default
/// `$HOME/.cache/flux-engine/npm` (the exporter's ASL checkers' too).
pub fn npm_prefix() -> PathBuf {
    match std::env::var_os("FLUX_NPM_PREFIX") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/flux-engine/npm"),
    }
}

/// `$FLUX_NODE`, default `node` on the PATH.
pub fn node() -> PathBuf {
    std::env::var_os("FLUX_NODE")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

/// The command that installs the pinned package.
pub fn install_command() -> String {
    format!(
        "npm install --save-exact --prefix {} {PACKAGE}@{}",
        npm_prefix().display(),
        pinned_version()
    )
}

/// Why the harness cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let node = node();
    match Command::new(&node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Some(format!(
                "`{} --version` failed: {}",
                node.display(),
                out.status
            ));
        }
        Err(e) => return Some(format!("`{}` cannot be started: {e}", node.display())),
    }
    let manifest = npm_prefix()
        .join("node_modules")
        .join(PACKAGE)
        .join("package.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        return Some(format!(
            "{PACKAGE} is not installed ({} is missing)",
            manifest.display()
        ));
    };
    let installed = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_string))
        .unwrap_or_default();
    let pinned = pinned_version();
    if installed != pinned {
        return Some(format!(
            "{PACKAGE} {installed} is installed in {}, the tests pin {pinned}",
            npm_prefix().display()
        ));
    }
    None
}

/// Whether the harness can run. If not, says SKIPPED loudly and
/// returns false, or panics when `FLUX_REQUIRE_CHECKERS=1` (CI).
pub fn available(test: &str) -> bool {
    let Some(why) = missing() else {
        return true;
    };
    let message = format!(
        "SKIPPED: {test}: {why}; install with: {}",
        install_command()
    );
    if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
        panic!("{message} (FLUX_REQUIRE_CHECKERS=1: the harness must run)");
    }
    // Straight to stderr, not eprintln!: the test harness would
    // swallow that for a passing test.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {message}\n");
    false
}

/// What a run may change: the execution input and the handlers'
/// behaviour. Each method adds the matching run.cjs option.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub input: Option<Value>,
    /// Extra run.cjs arguments, in order.
    pub args: Vec<String>,
}

impl RunOptions {
    pub fn new() -> Self {
        Self::default()
    }

    fn pair(mut self, flag: &str, value: String) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value);
        self
    }

    /// The execution input (default `{}`).
    pub fn input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }

    /// `state`'s handler fails with `States.TaskFailed` on its first call.
    pub fn fail_once(self, state: &str) -> Self {
        self.pair("--fail-once", state.to_string())
    }

    /// `state`'s handler fails with `error` on its first call.
    pub fn fail_once_with(self, state: &str, error: &str) -> Self {
        self.pair("--fail-once", format!("{state}={error}"))
    }

    /// `state`'s handler fails with `States.TaskFailed` on every call.
    pub fn fail_always(self, state: &str) -> Self {
        self.pair("--fail-always", state.to_string())
    }

    /// `state`'s handler fails with `error` on every call.
    pub fn fail_always_with(self, state: &str, error: &str) -> Self {
        self.pair("--fail-always", format!("{state}={error}"))
    }

    /// An athena getQueryResults `state` returns a header row and `rows`
    /// data rows (default 1).
    pub fn query_rows(self, state: &str, rows: usize) -> Self {
        self.pair("--query-rows", format!("{state}={rows}"))
    }

    /// ... of `columns` columns (default 16).
    pub fn query_columns(self, state: &str, columns: usize) -> Self {
        self.pair("--query-columns", format!("{state}={columns}"))
    }

    /// ... every data cell being `value` (default `"0"`).
    pub fn query_value(self, state: &str, value: &str) -> Self {
        self.pair("--query-value", format!("{state}={value}"))
    }

    /// A glue getCrawler `state` reports RUNNING on its first `polls`
    /// calls, READY after.
    pub fn running_polls(self, state: &str, polls: usize) -> Self {
        self.pair("--running-polls", format!("{state}={polls}"))
    }

    /// ... with `LastCrawl.Status` = `status` (default SUCCEEDED).
    pub fn last_crawl(self, state: &str, status: &str) -> Self {
        self.pair("--last-crawl", format!("{state}={status}"))
    }

    /// Each handler's input (after `Parameters`) is kept in its
    /// [`Phase::Start`] event.
    pub fn record_input(mut self) -> Self {
        self.args.push("--record-input".to_string());
        self
    }

    /// The context object's `$$.Execution.Name` (default
    /// `local-execution`; `$$.Execution.Id` follows).
    pub fn execution_name(self, name: &str) -> Self {
        self.pair("--execution-name", name.to_string())
    }

    /// `state`'s handler returns exactly `response`.
    pub fn respond(self, state: &str, response: &Value) -> Self {
        self.pair("--respond", format!("{state}={response}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Start,
    End,
    Fail,
}

/// One Task handler event.
#[derive(Clone, Debug)]
pub struct Event {
    pub state: String,
    /// One counter over all handlers: orders events across branches.
    pub seq: u64,
    pub phase: Phase,
    /// The handler's call number for this state (1 = first call).
    pub call: u64,
    /// The error thrown, for [`Phase::Fail`].
    pub error: Option<String>,
    /// The handler's input, for [`Phase::Start`] with
    /// [`RunOptions::record_input`].
    pub input: Option<Value>,
}

/// What an execution did.
#[derive(Clone, Debug)]
pub struct Execution {
    /// SUCCEEDED, FAILED, TIMED_OUT, ABORTED or HARNESS_TIMEOUT.
    pub status: String,
    pub error: Option<String>,
    pub cause: Option<String>,
    /// The execution's output (null unless it succeeded).
    pub output: Value,
    /// The Task handlers' events, in order.
    pub events: Vec<Event>,
    /// How many times each Task state's handler was called.
    pub calls: BTreeMap<String, u64>,
    /// Every state entered (Choice, Wait, Fail... too), in the
    /// interpreter's event-log order (approximate across branches).
    pub entered: Vec<String>,
    /// run.cjs's whole report.
    pub raw: Value,
}

impl Execution {
    /// How many times `state`'s handler was called.
    pub fn calls(&self, state: &str) -> u64 {
        self.calls.get(state).copied().unwrap_or(0)
    }

    /// The seq of `state`'s first event in `phase`.
    pub fn first(&self, state: &str, phase: Phase) -> Option<u64> {
        self.events
            .iter()
            .find(|e| e.state == state && e.phase == phase)
            .map(|e| e.seq)
    }

    /// The seq of `state`'s last event in `phase`.
    pub fn last(&self, state: &str, phase: Phase) -> Option<u64> {
        self.events
            .iter()
            .rev()
            .find(|e| e.state == state && e.phase == phase)
            .map(|e| e.seq)
    }

    /// `(state, phase)` of every handler event, in order.
    pub fn trace(&self) -> Vec<(&str, Phase)> {
        self.events
            .iter()
            .map(|e| (e.state.as_str(), e.phase))
            .collect()
    }

    /// The Task states in the order their handlers started (a state
    /// called twice appears twice).
    pub fn started(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.phase == Phase::Start)
            .map(|e| e.state.as_str())
            .collect()
    }

    /// The input of `state`'s `call`-th call (1 = first), if recorded.
    pub fn input(&self, state: &str, call: u64) -> Option<&Value> {
        self.events
            .iter()
            .find(|e| e.state == state && e.phase == Phase::Start && e.call == call)
            .and_then(|e| e.input.as_ref())
    }

    /// How many times `state` (of any type) was entered.
    pub fn times_entered(&self, state: &str) -> usize {
        self.entered.iter().filter(|s| *s == state).count()
    }

    /// Panics unless every event of `before` (any phase, any call)
    /// comes before every event of `after`: `after` starts only once
    /// `before` has finished for good.
    pub fn assert_all_before(&self, before: &str, after: &str) {
        let last = self.events.iter().rev().find(|e| e.state == before);
        let first = self.events.iter().find(|e| e.state == after);
        match (last, first) {
            (Some(b), Some(a)) if b.seq < a.seq => {}
            _ => panic!(
                "expected every event of {before} before every event of {after}:\n{}",
                self.describe()
            ),
        }
    }

    /// A readable summary, for failure messages.
    pub fn describe(&self) -> String {
        let events: Vec<String> = self
            .events
            .iter()
            .map(|e| {
                format!(
                    "  {:>3} {:<24} {:?}{}{}",
                    e.seq,
                    e.state,
                    e.phase,
                    if e.call > 1 {
                        format!(" (call {})", e.call)
                    } else {
                        String::new()
                    },
                    e.error
                        .as_ref()
                        .map_or(String::new(), |er| format!(" {er}"))
                )
            })
            .collect();
        format!(
            "status {} error {:?} cause {:?}\ncalls {:?}\nentered {:?}\nevents:\n{}",
            self.status,
            self.error,
            self.cause,
            self.calls,
            self.entered,
            events.join("\n")
        )
    }
}

/// Runs `definition` in the harness. Panics, with what the harness
/// said, if the harness itself could not run (invalid definition,
/// unknown state in an option, package missing).
pub fn run_state_machine(definition: &Value, opts: &RunOptions) -> Execution {
    try_run_state_machine(definition, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`run_state_machine`], with the harness's failure as an `Err`.
pub fn try_run_state_machine(definition: &Value, opts: &RunOptions) -> Result<Execution, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file = std::env::temp_dir().join(format!(
        "flux-sfn-local-{}-{}.json",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(definition).unwrap())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let dir = harness_dir();
    let input = opts
        .input
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let output = Command::new(node())
        .arg("--require")
        .arg(dir.join("polyfill.cjs"))
        .arg(dir.join("run.cjs"))
        .arg("--definition")
        .arg(&file)
        .arg("--npm-prefix")
        .arg(npm_prefix())
        .arg("--input")
        .arg(input.to_string())
        .args(&opts.args)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_file(&file);
    let output = output.map_err(|e| format!("cannot start {}: {e}", node().display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "the sfn_local harness failed ({}):\n{stderr}{stdout}",
            output.status
        ));
    }
    let raw: Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("the sfn_local harness printed no JSON ({e}):\n{stdout}\n{stderr}"))?;
    parse(raw)
}

fn parse(raw: Value) -> Result<Execution, String> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let bad = |what: &str| format!("the harness's report has no valid {what}: {raw}");
    let status = text(&raw["status"]).ok_or_else(|| bad("status"))?;
    let mut events = Vec::new();
    for e in raw["events"].as_array().ok_or_else(|| bad("events"))? {
        let phase = match e["phase"].as_str() {
            Some("start") => Phase::Start,
            Some("end") => Phase::End,
            Some("fail") => Phase::Fail,
            _ => return Err(bad("event phase")),
        };
        events.push(Event {
            state: text(&e["state"]).ok_or_else(|| bad("event state"))?,
            seq: e["seq"].as_u64().ok_or_else(|| bad("event seq"))?,
            phase,
            call: e["call"].as_u64().ok_or_else(|| bad("event call"))?,
            error: text(&e["error"]),
            input: e.get("input").cloned(),
        });
    }
    let calls = raw["calls"]
        .as_object()
        .ok_or_else(|| bad("calls"))?
        .iter()
        .map(|(k, v)| {
            v.as_u64()
                .map(|n| (k.clone(), n))
                .ok_or_else(|| bad("calls"))
        })
        .collect::<Result<_, _>>()?;
    let entered = raw["log"]
        .as_array()
        .ok_or_else(|| bad("log"))?
        .iter()
        .filter(|e| e["type"] == "StateEntered")
        .filter_map(|e| text(&e["state"]))
        .collect();
    Ok(Execution {
        status,
        error: text(&raw["error"]),
        cause: text(&raw["cause"]),
        output: raw["output"].clone(),
        events,
        calls,
        entered,
        raw,
    })
}
