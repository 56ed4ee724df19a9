"""A fault-injecting HTTP proxy in front of moto's server.

Every request is forwarded to moto unchanged (method, path and query,
headers, body; a `Transfer-Encoding: chunked` body is decoded and sent
with a Content-Length) and moto's answer is returned, except when:
- a fault rule matches it (`add_fault`): the proxy answers with the
  service's own throttling, internal-error or access-denied answer;
- an `allow_only` policy does not grant its IAM action: 403 access denied;
- it is an EMR `CancelSteps` (moto answers it with a 500): the proxy
  answers it itself, and the steps then read CANCELLED;
- it is an EMR `DescribeStep` or `ListSteps` whose steps have an outcome
  set (`set_step_outcome`): moto's answer is rewritten with that state;
- it is a Step Functions call about a fake execution (`fake_execution`,
  see fake_sfn.py): the proxy answers it itself.

Every request is logged (`requests()`). `FaultProxy.command` carries out
the commands of the harness's protocol that concern the proxy.
"""

import http.client
import itertools
import json
import re
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

from aws_requests import LOGGED_BODY_SERVICES, identify, json_body, logged_body
from fake_sfn import FakeExecutions, FakeSfnCommandError, SfnError
from iam_policy import Policy, PolicyError

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}

FAULT_KINDS = ("throttle", "5xx", "denied")
STEP_STATES = (
    "PENDING",
    "CANCEL_PENDING",
    "RUNNING",
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "INTERRUPTED",
)
TERMINAL_STEP_STATES = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
ACCOUNT_ID = "123456789012"  # moto's default account

# The query-protocol services: their XML namespace (errors are
# <ErrorResponse xmlns=..><Error><Type/><Code/><Message/></Error><RequestId/>).
QUERY_NAMESPACES = {
    "cloudformation": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
}


class CommandError(ValueError):
    pass


# ---------------------------------------------------------------- error answers


def denied_message(service, action, resource, akid):
    who = f"arn:aws:iam::{ACCOUNT_ID}:user/{akid or 'testing'}"
    action = action or f"{service}:*"
    return (
        f"User: {who} is not authorized to perform: {action} on resource: {resource or '*'}"
        f" because no identity-based policy allows the {action} action"
    )


def error_answer(service, kind, method, action=None, resource=None, akid=None, code=None):
    """(status, headers, body, error code) of an injected error, shaped as the
    service's protocol has it so that an SDK parses and classifies it as it
    would the real one (S3: REST-XML; EMR, Glue, Athena: awsJson1.1; Step
    Functions: awsJson1.0; EMR Serverless, Lambda: REST-JSON; CloudFormation,
    IAM: the query protocol's XML)."""
    request_id = str(uuid.uuid4())
    if service in QUERY_NAMESPACES:
        status, default_code, error_type, message = {
            "throttle": (400, "Throttling", "Sender", "Rate exceeded"),
            "5xx": (500, "InternalFailure", "Receiver", "Internal failure."),
            "denied": (403, "AccessDenied", "Sender", None),
        }[kind]
        code = code or default_code
        message = message or denied_message(service, action, resource, akid)
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
        body = (
            f'<ErrorResponse xmlns="{QUERY_NAMESPACES[service]}">'
            f"<Error><Type>{error_type}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return status, headers, body, code
    if service == "s3":
        status, default_code, message = {
            "throttle": (503, "SlowDown", "Please reduce your request rate."),
            "5xx": (500, "InternalError", "We encountered an internal error. Please try again."),
            "denied": (403, "AccessDenied", "Access Denied"),
        }[kind]
        code = code or default_code
        host_id = uuid.uuid4().hex
        headers = [
            ("Content-Type", "application/xml"),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", host_id),
        ]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
        ).encode()
        if method == "HEAD":
            body = b""  # a HEAD answer has no body: S3 says it by the status alone
        return status, headers, body, code

    rest_json = service in ("emr-serverless", "lambda")
    if kind == "throttle":
        # awsJson services throttle with a 400; REST-JSON ones with a 429
        # (Lambda's code is TooManyRequestsException).
        status = 429 if rest_json else 400
        default_code = "TooManyRequestsException" if service == "lambda" else "ThrottlingException"
        message = "Rate exceeded"
    elif kind == "5xx":
        status = 500
        default_code = "ServiceException" if service == "lambda" else "InternalFailure"
        message = (
            "The request processing has failed because of an unknown error, exception or failure."
        )
    else:
        status, default_code = 403, "AccessDeniedException"
        message = denied_message(service, action, resource, akid)
    code = code or default_code
    if rest_json:
        content_type = "application/json"
    elif service == "states":
        content_type = "application/x-amz-json-1.0"
    else:
        content_type = "application/x-amz-json-1.1"
    headers = [
        ("Content-Type", content_type),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-ErrorType", code),
    ]
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, headers, body, code


def error_code_of(status, header, body):
    """The error code of an error answer (from its x-amzn-ErrorType header
    or its body), or None."""
    if status < 400:
        return None
    if header:
        return header.split(":", 1)[0]
    doc = json_body(body)
    if isinstance(doc, dict):
        code = doc.get("__type") or doc.get("code") or doc.get("Code")
        if isinstance(code, str):
            return code.rsplit("#", 1)[-1]
    match = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    if match:
        return match.group(1).decode(errors="replace")
    return None


# ------------------------------------------------------------------ fault rules


class FaultRule:
    _ids = itertools.count(1)

    def __init__(self, cmd):
        self.service = cmd.get("service", "*")
        self.operation = cmd.get("operation", "*")
        self.kind = cmd.get("kind")
        if self.kind not in FAULT_KINDS:
            raise CommandError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        self.count = cmd.get("count", 1)
        if not isinstance(self.count, int) or self.count < -1 or self.count == 0:
            raise CommandError("count must be a positive integer, or -1 for every request")
        self.code = cmd.get("code")
        if self.code is not None and not isinstance(self.code, str):
            raise CommandError("code must be a string")
        self.id = next(self._ids)
        self.fired = 0

    def active(self):
        return self.count == -1 or self.fired < self.count

    def matches(self, service, operation):
        return (
            self.active() and self.service in ("*", service) and self.operation in ("*", operation)
        )

    def describe(self):
        return {
            "rule": self.id,
            "service": self.service,
            "operation": self.operation,
            "kind": self.kind,
            "count": self.count,
            "fired": self.fired,
            "code": self.code,
        }


# ------------------------------------------------------------------- EMR steps


class StepOutcome:
    _generations = itertools.count(1)

    def __init__(self, cmd):
        self.step_id = cmd.get("step_id")
        if not isinstance(self.step_id, str) or not self.step_id:
            raise CommandError('step_id must be a step id or "*"')
        self.state = cmd.get("state")
        if self.state not in STEP_STATES:
            raise CommandError(f"state must be one of {', '.join(STEP_STATES)}")
        self.failure = cmd.get("failure")
        if self.failure is not None and not isinstance(self.failure, dict):
            raise CommandError("failure must be an object (Reason, Message, LogFile)")
        self.after_polls = cmd.get("after_polls", 0)
        if not isinstance(self.after_polls, int) or self.after_polls < 0:
            raise CommandError("after_polls must be a non-negative integer")
        self.generation = next(self._generations)


class Steps:
    """The step outcomes the tests decide, and the steps cancelled."""

    def __init__(self):
        self.outcomes = {}  # step id or "*" -> StepOutcome
        self.polls = {}  # (generation, step id) -> DescribeStep calls answered RUNNING
        self.cancelled = {}  # step id -> time of the CancelSteps
        self.ended = {}  # (generation or "cancel", step id) -> time first seen terminal

    def outcome_for(self, step_id):
        return self.outcomes.get(step_id) or self.outcomes.get("*")

    def state_of(self, step_id, count_poll):
        """The state the proxy decides for a step (None: moto's), counting a
        DescribeStep poll against after_polls when count_poll."""
        if step_id in self.cancelled:
            return "CANCELLED", None, ("cancel", step_id)
        outcome = self.outcome_for(step_id)
        if outcome is None:
            return None, None, None
        key = (outcome.generation, step_id)
        done = self.polls.get(key, 0)
        if done < outcome.after_polls:
            if count_poll:
                self.polls[key] = done + 1
            return "RUNNING", None, key
        return outcome.state, outcome, key

    def rewrite(self, step, count_poll):
        """Rewrite one step of a DescribeStep/ListSteps answer in place."""
        step_id = step.get("Id")
        state, outcome, key = self.state_of(step_id, count_poll)
        if state is None:
            return
        status = step.setdefault("Status", {})
        status["State"] = state
        timeline = status.setdefault("Timeline", {})
        now = time.time()
        if state != "PENDING":
            timeline.setdefault("StartDateTime", timeline.get("CreationDateTime", now))
        if state in TERMINAL_STEP_STATES:
            timeline["EndDateTime"] = self.ended.setdefault(key, now)
        else:
            timeline.pop("EndDateTime", None)
        if state == "FAILED":
            failure = dict(outcome.failure) if outcome and outcome.failure else {}
            failure.setdefault("Reason", "Unknown Error.")
            status["FailureDetails"] = failure
        else:
            status.pop("FailureDetails", None)
        if state == "CANCELLED":
            status["StateChangeReason"] = {"Message": "Cancelled by user"}

    def cancel(self, step_ids):
        infos = []
        for step_id in step_ids:
            state, _, _ = self.state_of(step_id, False)
            if state in TERMINAL_STEP_STATES and state != "CANCELLED":
                infos.append(
                    {
                        "StepId": step_id,
                        "Status": "FAILED",
                        "Reason": f"Step {step_id} is in {state} state and cannot be cancelled.",
                    }
                )
                continue
            self.cancelled.setdefault(step_id, time.time())
            infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
        return infos


# ------------------------------------------------------------------------ proxy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The SDKs open several connections at once (parallel parts, retries):
    # the default backlog of 5 could refuse some.
    request_queue_size = 128


class FaultProxy:
    def __init__(self, moto_host, moto_port, verbose=False):
        self.moto_host = moto_host
        self.moto_port = moto_port
        self.verbose = verbose
        self.lock = threading.Lock()
        self.seq = itertools.count(1)
        self.log = []
        self.faults = []
        self.policy = None
        self.steps = Steps()
        self.fake_sfn = FakeExecutions()
        self.server = None
        self.thread = None

    # -- lifecycle

    def start(self, host="127.0.0.1", port=0):
        proxy = self

        class Handler(_Handler):
            pass

        Handler.proxy = proxy
        self.server = _Server((host, port), Handler)
        # A short poll interval: stop() (shutdown) waits for the loop to see it.
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self.thread.start()
        return self.server.server_address[1]

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- commands

    def command(self, cmd):
        """Carry out one command of the protocol (a dict with "op"); return
        the answer's fields besides "ok". Raises CommandError."""
        op = cmd.get("op")
        with self.lock:
            if op == "fault":
                rule = FaultRule(cmd)
                self.faults.append(rule)
                return {"rule": rule.id}
            if op == "faults":
                return {"faults": [r.describe() for r in self.faults]}
            if op == "clear_faults":
                n = len(self.faults)
                self.faults = []
                return {"cleared": n}
            if op == "allow_only":
                try:
                    self.policy = Policy(cmd.get("policy"))
                except PolicyError as e:
                    raise CommandError(f"policy: {e}") from None
                return {
                    "statements": len(self.policy.statements),
                    "conditions_ignored": self.policy.with_conditions(),
                }
            if op == "allow_all":
                self.policy = None
                return {}
            if op == "step_outcome":
                outcome = StepOutcome(cmd)
                self.steps.outcomes[outcome.step_id] = outcome
                if outcome.step_id == "*":
                    # "every step, current and future": specific outcomes set
                    # before give way to this one.
                    self.steps.outcomes = {"*": outcome}
                return {}
            if op == "clear_step_outcomes":
                self.steps = Steps()
                return {}
            if op == "requests":
                return {"requests": sorted(self.log, key=lambda r: r["seq"])}
            if op == "clear_requests":
                n = len(self.log)
                self.log = []
                return {"cleared": n}
            if op == "fake_execution":
                try:
                    self.fake_sfn.add(cmd)
                except FakeSfnCommandError as e:
                    raise CommandError(str(e)) from None
                return {}
            if op == "clear_fake_executions":
                return {"cleared": self.fake_sfn.clear()}
            if op == "reset":
                self.faults, self.policy, self.steps, self.log = [], None, Steps(), []
                self.fake_sfn.clear()
                return {}
        raise CommandError(f"unknown op {op!r}")

    # -- request decisions (under the lock)

    def decide(self, info):
        """(kind, code, refusal) for a request: an injected fault, an IAM
        refusal, or (None, None, None) to go on."""
        with self.lock:
            for rule in self.faults:
                if info["service"] != "moto-api" and rule.matches(
                    info["service"], info["operation"]
                ):
                    rule.fired += 1
                    return rule.kind, rule.code, None
            if self.policy is not None and info["service"] != "moto-api":
                if not info["requirements"]:
                    return (
                        "denied",
                        None,
                        {
                            "allowed": False,
                            "action": None,
                            "resource": None,
                            "reason": "unidentified request",
                            "conditions_ignored": [],
                        },
                    )
                decision = self.policy.decide(info["requirements"])
                if not decision["allowed"]:
                    return "denied", None, decision
                info["conditions_ignored"] = decision["conditions_ignored"]
        return None, None, None

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def moto_connection(self):
        return http.client.HTTPConnection(self.moto_host, self.moto_port, timeout=300)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy = None  # set on the subclass made by FaultProxy.start

    def log_message(self, format, *args):
        if self.proxy.verbose:
            sys.stderr.write("fault_proxy: " + (format % args) + "\n")

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("the client closed the connection mid-body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    break
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise ConnectionError("the client closed the connection mid-body")
                chunks.append(chunk)
                self.rfile.readline()  # the CRLF after the chunk
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # HTTP trailers: dropped
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise ConnectionError("the client closed the connection mid-body")
        return body

    def _handle(self):
        proxy = self.proxy
        seq = next(proxy.seq)
        started = time.time()
        raw_path = self.path
        if raw_path.startswith(("http://", "https://")):  # absolute form
            parsed = urllib.parse.urlsplit(raw_path)
            raw_path = parsed.path + ("?" + parsed.query if parsed.query else "")
        body = self._read_body()
        method = self.command
        info = identify(method, raw_path, self.headers, body)
        path, _, query = raw_path.partition("?")
        entry = {
            "seq": seq,
            "time": started,
            "method": method,
            "path": path,
            "query": query,
            "service": info["service"],
            "region": info["region"],
            "operation": info["operation"],
            "action": info["action"],
            "bucket": info["bucket"],
            "key": info["key"],
            "resource": info["resource"],
            "status": None,
            "error_code": None,
            "injected": None,
            "refused": False,
            "answered_by": "moto",
        }
        if "keys" in info:
            entry["keys"] = info["keys"]
        if "copy_source" in info:
            entry["copy_source"] = info["copy_source"]
        if info["service"] in LOGGED_BODY_SERVICES:
            entry["body"] = logged_body(info["service"], raw_path, body)
        # What a test checks of an upload: the checksums and metadata sent.
        entry["headers"] = {
            name.lower(): value
            for name, value in self.headers.items()
            if name.lower().startswith(("x-amz-checksum-", "x-amz-meta-", "x-amz-sdk-checksum"))
            or name.lower() in ("content-encoding", "x-amz-trailer")
        }

        kind, code, refusal = proxy.decide(info)
        if info.get("conditions_ignored"):
            entry["conditions_ignored"] = info["conditions_ignored"]
        if kind is not None:
            action, resource = info["action"], info["resource"]
            if refusal is not None:
                action, resource = refusal["action"], refusal["resource"]
                entry.update(
                    refused=True,
                    refused_action=action,
                    refused_resource=resource,
                    refused_reason=refusal["reason"],
                )
                if refusal["conditions_ignored"]:
                    entry["conditions_ignored"] = refusal["conditions_ignored"]
            status, headers, out, code = error_answer(
                info["service"], kind, method, action, resource, info["akid"], code
            )
            entry.update(injected=kind, answered_by="proxy", error_code=code)
            self._answer(entry, status, None, headers, out)
            return

        if info["service"] == "states":
            try:
                with proxy.lock:
                    doc = proxy.fake_sfn.answer(info["operation"], entry.get("body"))
                status, error_code = 200, None
            except SfnError as e:
                doc = {"__type": e.code, "message": e.message}
                status, error_code = e.status, e.code
            if doc is not None:
                headers = [
                    ("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-RequestId", str(uuid.uuid4())),
                ]
                if error_code:
                    headers.append(("x-amzn-ErrorType", error_code))
                entry["answered_by"] = "proxy"
                self._answer(entry, status, None, headers, json.dumps(doc).encode())
                return

        if info["service"] == "states" and info["operation"] == "PublishStateMachineVersion":
            self._publish_version(entry, raw_path, body)
            return

        if info["service"] == "elasticmapreduce" and info["operation"] == "CancelSteps":
            request = entry.get("body") or {}
            with proxy.lock:
                infos = proxy.steps.cancel(request.get("StepIds") or [])
            out = json.dumps({"CancelStepsInfoList": infos}).encode()
            headers = [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ]
            entry["answered_by"] = "proxy"
            self._answer(entry, 200, None, headers, out)
            return

        rewrite = None
        forward_body = body
        if info["service"] == "elasticmapreduce" and info["operation"] in (
            "DescribeStep",
            "ListSteps",
        ):
            rewrite = info["operation"]
            request = entry.get("body")
            if rewrite == "ListSteps" and isinstance(request, dict) and request.get("StepStates"):
                # moto would filter on its own states: filter after rewriting.
                request = dict(request)
                wanted = request.pop("StepStates")
                rewrite = ("ListSteps", wanted)
                forward_body = json.dumps(request).encode()

        try:
            status, reason, headers, out = self._forward(method, raw_path, forward_body)
        except OSError as e:
            entry.update(answered_by="proxy", error_code="ProxyUpstreamError")
            out = f"fault_proxy: moto did not answer: {e}\n".encode()
            self._answer(entry, 502, None, [("Content-Type", "text/plain")], out)
            return
        if rewrite is not None and status == 200:
            out = self._rewrite_steps(rewrite, out)
        if info["operation"] == "CompleteMultipartUpload" and status == 200:
            # moto 5.2.1 names the root element CompleteMultipartUploadResponse;
            # S3 (and so the SDKs' parsers) say CompleteMultipartUploadResult.
            out = out.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
            headers = [
                (k, str(len(out)) if k.lower() == "content-length" else v) for k, v in headers
            ]
        self._answer(entry, status, reason, headers, out)

    def _publish_version(self, entry, raw_path, body):
        """moto 5.2.1 has no PublishStateMachineVersion, but publishes a
        version on UpdateStateMachine with `publish`: the proxy reads the
        current definition and updates the machine with it unchanged."""
        request = entry.get("body") or {}
        arn = request.get("stateMachineArn", "")

        def call(operation, payload):
            headers = {k: v for k, v in self.headers.items()}
            headers["X-Amz-Target"] = f"AWSStepFunctions.{operation}"
            conn = self.proxy.moto_connection()
            try:
                data = json.dumps(payload).encode()
                headers["Content-Length"] = str(len(data))
                conn.request("POST", raw_path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            finally:
                conn.close()

        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        entry["answered_by"] = "proxy"
        status, out = call("DescribeStateMachine", {"stateMachineArn": arn})
        if status != 200:
            self._answer(entry, status, None, headers, out)
            return
        definition = json.loads(out).get("definition", "")
        update = {"stateMachineArn": arn, "definition": definition, "publish": True}
        if request.get("description"):
            update["versionDescription"] = request["description"]
        status, out = call("UpdateStateMachine", update)
        if status == 200:
            doc = json.loads(out)
            out = json.dumps(
                {
                    "creationDate": doc.get("updateDate"),
                    "stateMachineVersionArn": doc.get("stateMachineVersionArn"),
                }
            ).encode()
        self._answer(entry, status, None, headers, out)

    def _forward(self, method, raw_path, body):
        conn = self.proxy.moto_connection()
        try:
            conn.putrequest(method, raw_path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                    continue
                conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH") or "Content-Length" in self.headers:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            out = resp.read()
            return resp.status, resp.reason, resp.getheaders(), out
        finally:
            conn.close()

    def _rewrite_steps(self, rewrite, out):
        doc = json_body(out)
        if not isinstance(doc, dict):
            return out
        steps = self.proxy.steps
        with self.proxy.lock:
            if rewrite == "DescribeStep":
                if isinstance(doc.get("Step"), dict):
                    steps.rewrite(doc["Step"], count_poll=True)
            else:
                for step in doc.get("Steps") or []:
                    steps.rewrite(step, count_poll=False)
                if isinstance(rewrite, tuple):
                    wanted = rewrite[1]
                    doc["Steps"] = [
                        s
                        for s in doc.get("Steps") or []
                        if s.get("Status", {}).get("State") in wanted
                    ]
        return json.dumps(doc).encode()

    def _answer(self, entry, status, reason, headers, out):
        # Logged before the client can see the answer: once a call returns,
        # the test that made it finds it in the log.
        entry["status"] = status
        if entry["error_code"] is None:
            error_type = {k.lower(): v for k, v in headers}.get("x-amzn-errortype")
            entry["error_code"] = error_code_of(status, error_type, out)
        entry["duration"] = round(time.time() - entry["time"], 4)
        self.proxy.record(entry)

        method = self.command
        self.send_response_only(status, reason)
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == "content-length":
                continue
            self.send_header(name, value)
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if method == "HEAD":
            # A HEAD answer says the length of the body a GET would have.
            length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
            self.send_header("Content-Length", length)
        elif status not in (204, 304):
            self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if not no_body and out:
            self.wfile.write(out)
        self.wfile.flush()


def _make_method(name):
    def method(self):
        try:
            self._handle()
        except (ConnectionError, TimeoutError) as e:
            self.close_connection = True
            if self.proxy.verbose:
                sys.stderr.write(f"fault_proxy: {name} {self.path}: {e}\n")
        except Exception:
            # A bug of the proxy: say it on stderr, and drop the connection
            # rather than leave the client waiting.
            self.close_connection = True
            sys.stderr.write(f"fault_proxy: {name} {self.path}:\n{traceback.format_exc()}")

    return method


for _method in ("GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"):
    setattr(_Handler, f"do_{_method}", _make_method(_method))
