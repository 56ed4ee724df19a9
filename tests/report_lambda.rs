//! The report Lambda function end to end: `flux-engine report-payload`
//! against a local S3 endpoint (moto's server, from PyPI, started here on
//! 127.0.0.1 and stopped at the end), and `flux-engine lambda report`
//! against a fake Lambda Runtime API written here.
//!
//! The test uploads Athena-format CSV results and a counts JSON it works
//! out itself, runs the binary with `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_S3`) pointing at the server, and reads the HTML
//! object back. The S3 requests of the test itself are plain HTTP
//! (moto's server checks no signature).
//!
//! Without moto (`python3 -m pip install "moto[server]==5.2.1"`) the tests
//! that need it say SKIPPED and pass, unless `FLUX_REQUIRE_CHECKERS=1`
//! (CI).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

// ------------------------------------------------------------ plain HTTP

/// An HTTP answer: status, headers (names lowercased), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 exchange.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // moto reads the access key from the Authorization header (it checks
    // no signature): the test's requests act as the same account as the
    // binary's, which may then read what the binary wrote.
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let status: u16 = status
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    match header(&headers, "content-length").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok((status, headers, body))
}

/// The first line and the headers of an HTTP message.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ------------------------------------------------------------ moto

/// moto's S3 server on 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    addr: String,
}

impl Moto {
    /// Starts it, or `None` (after saying SKIPPED, or failing under
    /// `FLUX_REQUIRE_CHECKERS=1`) when moto's server is not installed.
    fn start(s: &Scratch) -> Option<Moto> {
        let available = Command::new("python3")
            .args(["-c", "import moto.server, flask, flask_cors"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            checker_missing(
                "SKIPPED: moto's server is not installed; install with: python3 -m pip install \"moto[server]==5.2.1\"",
            );
            return None;
        }
        let port = free_port();
        let log = std::fs::File::create(s.path("moto.log")).unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moto's server");
        let moto = Moto {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let up = wait_until(Duration::from_secs(60), || {
            http(&moto.addr, "GET", "/", &[], b"").is_ok_and(|(status, _, _)| status == 200)
        });
        assert!(
            up,
            "moto's server did not answer on {} within 60 s:\n{}",
            moto.addr,
            std::fs::read_to_string(s.path("moto.log")).unwrap_or_default()
        );
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, _, body) = http(&self.addr, "PUT", &format!("/{bucket}"), &[], b"").unwrap();
        assert_eq!(status, 200, "create bucket {bucket}: {}", text(&body));
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, _, answer) =
            http(&self.addr, "PUT", &format!("/{bucket}/{key}"), &[], body).unwrap();
        assert_eq!(status, 200, "put {bucket}/{key}: {}", text(&answer));
    }

    /// The object's body and content type; `None` if it does not exist.
    fn get(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let (status, headers, body) =
            http(&self.addr, "GET", &format!("/{bucket}/{key}"), &[], b"").unwrap();
        match status {
            200 => Some((
                body,
                header(&headers, "content-type").unwrap_or("").to_string(),
            )),
            404 => None,
            other => panic!("get {bucket}/{key}: HTTP {other}: {}", text(&body)),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with credentials for the local endpoint only, and no AWS
/// configuration of the machine (profiles, instance metadata) in the way.
fn aws_command(s: &Scratch, endpoint_var: &str, endpoint: &str) -> Command {
    let mut cmd = command(&s.path("state"));
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ] {
        cmd.env_remove(var);
    }
    cmd.env(endpoint_var, endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", s.path("no-aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", s.path("no-aws-credentials"));
    cmd
}

// ------------------------------------------------------------ the data

const BUCKET: &str = "flux-report-test";
const EXECUTION: &str = "exec-42";

/// Rentals the results are worked out from: city, amount in cents.
const RENTALS: &[(&str, u64)] = &[
    ("Fresno", 123_456_789),
    ("Fresno", 98_765_432),
    ("Moreno Valley", 250_075),
    ("<Smith & Sons>", 5_000_050),
    ("Moreno Valley", 10_000_000),
];

/// `1234567` as `1,234,567`.
fn commas(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let mut groups: Vec<String> = digits
        .rchunks(3)
        .map(|chunk| chunk.iter().collect())
        .collect();
    groups.reverse();
    groups.join(",")
}

/// Cents as Athena writes a double (`1234.5`-like, here two decimals)
/// and as the report shows money (`1,234.50`).
fn athena_money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn shown_money(cents: u64) -> String {
    format!("{}.{:02}", commas(cents / 100), cents % 100)
}

/// Athena's CSV: a header, every value double-quoted.
fn athena_csv(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut out = header
        .iter()
        .map(|h| quote(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&row.iter().map(|v| quote(v)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out.into_bytes()
}

/// Revenue per city, largest first.
fn by_city() -> Vec<(String, u64)> {
    let mut cities: Vec<(String, u64)> = Vec::new();
    for (city, cents) in RENTALS {
        match cities.iter_mut().find(|(c, _)| c == city) {
            Some((_, total)) => *total += cents,
            None => cities.push((city.to_string(), *cents)),
        }
    }
    cities.sort_by_key(|(_, cents)| std::cmp::Reverse(*cents));
    cities
}

const READ: u64 = 20_080;
const QUARANTINED: u64 = 2_008;

fn payload() -> Value {
    json!({
        "dag": "rental",
        "task": "report",
        "execution": EXECUTION,
        "fields": {
            "title": "Rentals on Lambda",
            "output": format!("s3://{BUCKET}/analytics/report/rental_report.html"),
            "quarantine_threshold": "0.05",
            "tiles": [
                {"label": "Revenue", "from": "summary", "column": "total_revenue", "format": "money"},
                {"label": "Rentals", "from": "summary", "column": "total_rentals", "format": "number"},
            ],
            "sections": [
                {"title": "Revenue by city", "from": "by_city", "chart": "bar",
                 "label": "city", "value": "total_revenue", "format": "money"},
                {"title": "Rows read, clean and quarantined", "from": "clean", "chart": "row_counts"},
            ],
        },
        "inputs": {
            "clean": {"kind": "emr_spark", "output_json": format!("s3://{BUCKET}/processed/job_counts/clean.json")},
            "summary": {"kind": "athena_query",
                        "results_prefix": format!("s3://{BUCKET}/analytics/queries/summary/{EXECUTION}/")},
            "by_city": {"kind": "athena_query",
                        "results_prefix": format!("s3://{BUCKET}/analytics/queries/by_city/{EXECUTION}/")},
        },
    })
}

/// Uploads what the upstream tasks of one execution would have written.
/// The summary prefix also holds a stale result of an earlier attempt, a
/// `.csv.metadata` and, written last, a CSV one folder deeper: the report
/// must read the newest `.csv` directly under the prefix.
fn upload_inputs(moto: &Moto) {
    moto.create_bucket(BUCKET);
    let total: u64 = RENTALS.iter().map(|(_, c)| c).sum();
    let summary = format!("analytics/queries/summary/{EXECUTION}");
    // A first attempt's result, wrong figures, under a key that sorts last.
    moto.put(
        BUCKET,
        &format!("{summary}/zz-first-attempt.csv"),
        &athena_csv(
            &["total_revenue", "total_rentals"],
            &[vec!["1.00".into(), "999999".into()]],
        ),
    );
    // S3's LastModified has one-second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    moto.put(
        BUCKET,
        &format!("{summary}/aa-retry.csv"),
        &athena_csv(
            &["total_revenue", "total_rentals"],
            &[vec![athena_money(total), RENTALS.len().to_string()]],
        ),
    );
    moto.put(
        BUCKET,
        &format!("{summary}/aa-retry.csv.metadata"),
        b"\x00\x01 not a csv",
    );
    std::thread::sleep(Duration::from_millis(1100));
    moto.put(
        BUCKET,
        &format!("{summary}/deeper/newest.csv"),
        &athena_csv(
            &["total_revenue", "total_rentals"],
            &[vec!["2.00".into(), "888888".into()]],
        ),
    );
    let rows: Vec<Vec<String>> = by_city()
        .into_iter()
        .map(|(city, cents)| vec![city, athena_money(cents)])
        .collect();
    moto.put(
        BUCKET,
        &format!("analytics/queries/by_city/{EXECUTION}/q1.csv"),
        &athena_csv(&["city", "total_revenue"], &rows),
    );
    let counts = json!({
        "files": {
            "rental_transactions.csv": {"read": READ, "clean": READ - QUARANTINED, "quarantined": QUARANTINED},
            "users.csv": {"read": 100, "clean": 100, "quarantined": 0},
        },
        "quarantine_reasons": {"bad_amount": QUARANTINED},
        "quarantine_reasons_by_file": {"rental_transactions.csv": {"bad_amount": QUARANTINED}},
    });
    moto.put(
        BUCKET,
        "processed/job_counts/clean.json",
        counts.to_string().as_bytes(),
    );
}

/// The report in S3 holds the figures worked out above.
fn check_report(moto: &Moto, result: &Value) {
    let key = "analytics/report/rental_report.html";
    assert_eq!(result["report"], format!("s3://{BUCKET}/{key}"), "{result}");
    let (body, content_type) = moto.get(BUCKET, key).expect("the report object exists");
    assert_eq!(result["bytes"], body.len(), "{result}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = text(&body);
    let tile = |label: &str, value: &str| {
        format!("<div class=\"label\">{label}</div><div class=\"value\">{value}</div>")
    };
    let total: u64 = RENTALS.iter().map(|(_, c)| c).sum();
    assert!(
        html.contains(&tile("Revenue", &shown_money(total))),
        "revenue {} missing:\n{html}",
        shown_money(total)
    );
    assert!(html.contains(&tile("Rentals", &RENTALS.len().to_string())));
    assert!(!html.contains("999,999") && !html.contains("888,888"));
    for (city, cents) in by_city() {
        let escaped = city
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(html.contains(&format!(">{escaped}</text>")), "{city}");
        assert!(
            html.contains(&format!(">{}</text>", shown_money(cents))),
            "{city}: {}",
            shown_money(cents)
        );
    }
    assert!(!html.contains("<Smith"));
    assert!(html.contains("<tr class=\"over\"><td>rental_transactions.csv</td>"));
    assert!(html.contains(&commas(READ - QUARANTINED)));
    assert!(html.contains(&format!("by run {EXECUTION}, task report")));
}

#[test]
fn report_payload_renders_from_s3_to_s3() {
    let s = Scratch::new();
    let Some(moto) = Moto::start(&s) else { return };
    upload_inputs(&moto);
    let file = s.write("payload.json", &payload().to_string());

    // Both ways of naming the endpoint.
    for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"] {
        let out = aws_command(&s, var, &moto.endpoint())
            .args(["report-payload", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{var}: report-payload failed:\n{}",
            text(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).expect("the result is JSON");
        check_report(&moto, &result);
    }

    // A query that wrote nothing in this execution: the error names the
    // task, the field and the prefix, and nothing is written.
    let mut missing = payload();
    missing["inputs"]["by_city"]["results_prefix"] = json!(format!(
        "s3://{BUCKET}/analytics/queries/by_city/other-exec/"
    ));
    missing["fields"]["output"] = json!(format!("s3://{BUCKET}/analytics/report/other.html"));
    let file = s.write("missing.json", &missing.to_string());
    let out = aws_command(&s, "AWS_ENDPOINT_URL", &moto.endpoint())
        .args(["report-payload", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("report task `report` of DAG `rental`"),
        "{err}"
    );
    assert!(err.contains("`sections[0].from` = \"by_city\""), "{err}");
    assert!(
        err.contains(&format!(
            "s3://{BUCKET}/analytics/queries/by_city/other-exec/"
        )),
        "{err}"
    );
    assert!(moto.get(BUCKET, "analytics/report/other.html").is_none());
}

#[test]
fn report_payload_refuses_a_file_that_is_not_a_payload() {
    let s = Scratch::new();
    let out = flux(
        &s.path("state"),
        &["report-payload", s.path("none.json").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("none.json"));
    let file = s.write("junk.json", "{not json");
    let out = flux(
        &s.path("state"),
        &["report-payload", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not JSON"),
        "{}",
        text(&out.stderr)
    );
    // A device reports no size and never ends: the read stops at the
    // payload limit (6 MiB) instead of filling memory.
    let out = run_capped(
        &s.path("state"),
        &["report-payload", "/dev/zero"],
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("/dev/zero (a character device) gave more than 6291456 bytes"),
        "{}",
        out.stderr
    );
    assert!(out.peak_rss_mib < 200, "peaked at {} MiB", out.peak_rss_mib);
}

// ------------------------------------------------------------ Runtime API

/// What the function posted back for one invocation.
#[derive(Debug)]
struct Posted {
    path: String,
    body: Value,
}

/// A fake Lambda Runtime API: hands out `events` in turn on
/// `GET /2018-06-01/runtime/invocation/next` (each with a request id,
/// a deadline and the function's ARN), then holds the next poll open;
/// every POST is sent to the returned channel.
fn fake_runtime_api(events: Vec<(String, Value)>) -> (String, mpsc::Receiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    let events = std::sync::Arc::new(std::sync::Mutex::new(events.into_iter()));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            let events = events.clone();
            std::thread::spawn(move || serve(stream, &events, &tx));
        }
    });
    (addr, rx)
}

type Events = std::sync::Mutex<std::vec::IntoIter<(String, Value)>>;

/// One keep-alive connection of the fake Runtime API.
fn serve(stream: TcpStream, events: &Events, tx: &mpsc::Sender<Posted>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Ok((first, headers)) = read_head(&mut reader) else {
            return;
        };
        let length = header(&headers, "content-length")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = first.split(' ').nth(1).unwrap_or("").to_string();
        if first.starts_with("GET ") && path == "/2018-06-01/runtime/invocation/next" {
            let next = events.lock().unwrap().next();
            let Some((id, payload)) = next else {
                // No more events: hold the poll, as Lambda does while idle.
                std::thread::sleep(Duration::from_secs(600));
                return;
            };
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 120_000;
            let body = payload.to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:flux-engine-report\r\nLambda-Runtime-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        } else {
            let _ = tx.send(Posted {
                path,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let answer = "{\"status\":\"OK\"}";
            let response = format!(
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if writer.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// `flux-engine lambda report` as Lambda starts it, against `api`.
fn spawn_function(s: &Scratch, api: &str, endpoint: Option<&str>) -> Child {
    let mut cmd = match endpoint {
        Some(e) => aws_command(s, "AWS_ENDPOINT_URL", e),
        // No endpoint is reached in this case: the payload fails first.
        None => aws_command(s, "AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    };
    cmd.args(["lambda", "report"])
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "flux-engine-report")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/flux-engine-report",
        )
        .stdout(std::fs::File::create(s.path("function.stdout")).unwrap())
        .stderr(std::fs::File::create(s.path("function.stderr")).unwrap())
        .spawn()
        .expect("start flux-engine lambda report")
}

/// The next post, or a failure with the function's logs.
fn next_post(s: &Scratch, rx: &mpsc::Receiver<Posted>, child: &mut Child) -> Posted {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(posted) = rx.recv_timeout(Duration::from_millis(200)) {
            return posted;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > until {
            let _ = child.kill();
            panic!(
                "no post from the function ({exited:?}):\n{}\n{}",
                std::fs::read_to_string(s.path("function.stdout")).unwrap_or_default(),
                std::fs::read_to_string(s.path("function.stderr")).unwrap_or_default()
            );
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_runtime_api_loop_reports_a_bad_payload_as_the_invocations_error() {
    let s = Scratch::new();
    let mut bad = payload();
    bad["fields"]["output"] = json!("s3://bucket/report.txt");
    let (api, rx) = fake_runtime_api(vec![("req-bad-1".into(), bad)]);
    let mut child = spawn_function(&s, &api, None);
    let posted = next_post(&s, &rx, &mut child);
    stop(child);
    assert_eq!(
        posted.path, "/2018-06-01/runtime/invocation/req-bad-1/error",
        "{posted:?}"
    );
    let message = posted.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("report task `report` of DAG `rental`")
            && message.contains("field `output`")
            && message.contains("report.txt"),
        "{posted:?}"
    );
    assert_eq!(posted.body["errorType"], "ReportFailed");
}

#[test]
fn the_runtime_api_loop_renders_each_invocation_and_posts_the_result() {
    let s = Scratch::new();
    let Some(moto) = Moto::start(&s) else { return };
    upload_inputs(&moto);
    let mut bad = payload();
    bad["inputs"].as_object_mut().unwrap().remove("summary");
    let (api, rx) = fake_runtime_api(vec![("req-1".into(), payload()), ("req-2".into(), bad)]);
    let mut child = spawn_function(&s, &api, Some(&moto.endpoint()));
    let first = next_post(&s, &rx, &mut child);
    let second = next_post(&s, &rx, &mut child);
    stop(child);
    assert_eq!(
        first.path, "/2018-06-01/runtime/invocation/req-1/response",
        "{first:?}"
    );
    check_report(&moto, &first.body);
    // The same sandbox goes on after a failed invocation's predecessor,
    // and a failure is that invocation's error.
    assert_eq!(
        second.path, "/2018-06-01/runtime/invocation/req-2/error",
        "{second:?}"
    );
    assert!(
        second.body["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("has no input from `summary`"),
        "{second:?}"
    );
}

#[test]
fn lambda_report_outside_lambda_says_what_is_missing() {
    let s = Scratch::new();
    let out = command(&s.path("state"))
        .args(["lambda", "report"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env_remove("AWS_LAMBDA_FUNCTION_NAME")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("AWS_LAMBDA_RUNTIME_API"), "{err}");
    assert!(err.contains("report-payload"), "{err}");
}
