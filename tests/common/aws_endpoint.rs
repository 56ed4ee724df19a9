//! A local AWS endpoint for the `--target aws` tests: moto's server behind
//! the fault-injecting proxy of `tests/aws_endpoint/harness.py`, started
//! per test and stopped when the [`AwsEndpoint`] is dropped (its stdin
//! closes; moto dies with the harness whatever kills it). Commands and
//! answers are JSON lines, described in `tests/aws_endpoint/README.md`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The region the tests' DAGs name.
pub const REGION: &str = "eu-west-1";

pub struct AwsEndpoint {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The proxy: what the engine talks to.
    pub url: String,
}

impl AwsEndpoint {
    /// Starts moto and the proxy; panics (failing the test) if they
    /// cannot start, since CI installs moto.
    pub fn start() -> AwsEndpoint {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws_endpoint/harness.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts the AWS endpoint harness");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("the harness's stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the harness says it is ready");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the harness's first line is not JSON ({e}): {line}"));
        let url = ready["endpoint"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("the AWS endpoint did not start (is moto[server] installed?): {line}")
            })
            .to_string();
        AwsEndpoint {
            child,
            stdin,
            stdout,
            url,
        }
    }

    /// Sends one command and returns its answer; a refused command fails
    /// the test.
    pub fn call(&mut self, command: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("the harness is running");
        writeln!(stdin, "{command}").expect("the harness reads commands");
        stdin.flush().expect("the harness reads commands");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the harness answers");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the harness's answer is not JSON ({e}): {line}"));
        assert_eq!(answer["ok"], true, "{command} was refused: {answer}");
        answer
    }

    /// Calls moto's own API (not through the proxy).
    pub fn moto(&mut self, method: &str, path: &str, body: Value) -> Value {
        let mut command = json!({"op": "moto", "method": method, "path": path});
        if !body.is_null() {
            command["body"] = body;
        }
        self.call(command)
    }

    pub fn create_bucket(&mut self, bucket: &str) {
        let answer = self.moto("PUT", &format!("/{bucket}"), Value::Null);
        assert_eq!(answer["status"], 200, "creating bucket {bucket}: {answer}");
    }

    /// Every request the proxy saw, in order.
    pub fn requests(&mut self) -> Vec<Value> {
        self.call(json!({"op": "requests"}))["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The requests of one operation (`PutObject`, `AddJobFlowSteps`).
    pub fn requests_of(&mut self, operation: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["operation"] == operation)
            .collect()
    }

    /// An object's bytes, read from moto directly (signed as the tests'
    /// credentials: moto refuses anonymous reads of objects).
    pub fn object(&mut self, bucket: &str, key: &str) -> Option<String> {
        let answer = self.call(json!({
            "op": "moto", "method": "GET", "path": format!("/{bucket}/{key}"),
            "headers": {"Authorization": format!(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/s3/aws4_request, SignedHeaders=host, Signature=0"
            )},
        }));
        (answer["status"] == 200).then(|| match &answer["body"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
    }

    /// Points `command` (the engine) at this endpoint with test
    /// credentials, fast polls and nothing from the user's AWS setup.
    pub fn configure(&self, command: &mut Command) {
        command
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("FLUX_AWS_POLL_SECONDS", "0.2");
        for (name, _) in std::env::vars() {
            if name.starts_with("AWS_ENDPOINT_URL_") {
                command.env_remove(name);
            }
        }
    }
}

impl Drop for AwsEndpoint {
    fn drop(&mut self) {
        // EOF on its stdin stops the harness, which kills moto.
        drop(self.stdin.take());
        if super::wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
