"""Step Functions through harness.py: fake executions answered by the
proxy, and moto's own interpreter reaching moto."""

import http.client
import json
import time
import urllib.parse

import pytest

from test_fault_proxy import REGION, Harness, error_of

ACCOUNT = "123456789012"
SM = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:fake-sm"
T0 = 1733380000.5


@pytest.fixture(scope="module")
def h():
    harness = Harness()
    yield harness
    harness.close()
    assert harness.proc.returncode == 0


@pytest.fixture(autouse=True)
def fresh_proxy(h):
    h.ok(op="reset")


def execution_arn(name, machine="fake-sm"):
    return f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{machine}:{name}"


def execution(name, status="FAILED", start=T0, machine="fake-sm", **extra):
    doc = {
        "executionArn": execution_arn(name, machine),
        "stateMachineArn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}",
        "name": name,
        "status": status,
        "startDate": start,
    }
    if status != "RUNNING":
        doc["stopDate"] = start + 60
    doc.update(extra)
    return doc


def events(n, start_id=1, first_previous=0):
    """n events as GetExecutionHistory gives them: ids from start_id, each
    after the one before."""
    out = []
    for i in range(n):
        event_id = start_id + i
        out.append(
            {
                "id": event_id,
                "previousEventId": first_previous if i == 0 else event_id - 1,
                "timestamp": T0 + i,
                "type": "PassStateEntered",
                "stateEnteredEventDetails": {"name": f"s{event_id}", "input": "{}"},
            }
        )
    out[0]["type"] = "ExecutionStarted"
    out[0].pop("stateEnteredEventDetails")
    out[0]["executionStartedEventDetails"] = {
        "input": "{}",
        "roleArn": "arn:aws:iam::123456789012:role/fake",
    }
    return out


def pages(sfn, arn, **kwargs):
    """Every page of GetExecutionHistory, following nextToken."""
    out = []
    token = None
    while True:
        args = dict(kwargs, executionArn=arn)
        if token:
            args["nextToken"] = token
        page = sfn.get_execution_history(**args)
        out.append(page["events"])
        token = page.get("nextToken")
        if not token:
            return out


# ------------------------------------------------------------------- history


def test_history_pages_in_order_once_each(h):
    sfn = h.client("stepfunctions")
    arn = execution_arn("paged")
    h.ok(
        op="fake_execution",
        execution=execution("paged", status="SUCCEEDED", output='{"n": 1}'),
        history=events(250),
        page_size=100,
    )

    got = pages(sfn, arn, maxResults=1000)
    assert [len(p) for p in got] == [100, 100, 50]
    assert [e["id"] for p in got for e in p] == list(range(1, 251))
    assert got[0][0]["type"] == "ExecutionStarted"
    assert got[0][0]["executionStartedEventDetails"]["input"] == "{}"
    assert got[0][0]["timestamp"].timestamp() == T0

    # maxResults below the page size wins; absent, it is AWS's default (100).
    assert [len(p) for p in pages(sfn, arn, maxResults=70)] == [70, 70, 70, 40]
    assert [len(p) for p in pages(sfn, arn)] == [100, 100, 50]

    backwards = pages(sfn, arn, maxResults=1000, reverseOrder=True, includeExecutionData=False)
    assert [len(p) for p in backwards] == [100, 100, 50]
    assert [e["id"] for p in backwards for e in p] == list(range(250, 0, -1))

    # Tokens are opaque, bound to the execution and the direction.
    first = sfn.get_execution_history(executionArn=arn)
    token = first["nextToken"]
    for bad in ("garbage", token[:-2] + "xx"):
        code, status, _ = error_of(sfn.get_execution_history, executionArn=arn, nextToken=bad)
        assert (code, status) == ("InvalidToken", 400)
    code, _, _ = error_of(
        sfn.get_execution_history, executionArn=arn, nextToken=token, reverseOrder=True
    )
    assert code == "InvalidToken"
    # A token can be used again (the SDK's retries do).
    again = sfn.get_execution_history(executionArn=arn, nextToken=token)
    assert [e["id"] for e in again["events"]] == list(range(101, 201))
    code, _, _ = error_of(sfn.get_execution_history, executionArn=arn, maxResults=1001)
    assert code == "ValidationException"

    log = h.requests()
    assert {r["answered_by"] for r in log} == {"proxy"}
    assert {r["operation"] for r in log} == {"GetExecutionHistory"}
    assert {(r["service"], r["action"]) for r in log} == {("states", "states:GetExecutionHistory")}
    assert log[0]["body"] == {"executionArn": arn, "maxResults": 1000}
    invalid = [r for r in log if r["status"] == 400]
    assert {r["error_code"] for r in invalid} == {"InvalidToken", "ValidationException"}


def test_describe_calls_and_replacing_an_execution(h):
    sfn = h.client("stepfunctions")
    arn = execution_arn("described")
    definition = json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}})
    h.ok(
        op="fake_execution",
        execution=execution("described", error="States.TaskFailed", cause="boom", input='{"a": 1}'),
        history=events(3),
        definition=definition,
    )
    got = sfn.describe_execution(executionArn=arn)
    assert (got["status"], got["error"], got["cause"]) == ("FAILED", "States.TaskFailed", "boom")
    assert (got["redriveCount"], got["redriveStatus"]) == (0, "REDRIVABLE")
    assert (got["startDate"].timestamp(), got["stopDate"].timestamp()) == (T0, T0 + 60)
    assert (got["name"], got["stateMachineArn"], got["input"]) == ("described", SM, '{"a": 1}')

    machine = sfn.describe_state_machine_for_execution(executionArn=arn)
    assert machine["stateMachineArn"] == SM
    assert machine["name"] == "fake-sm"
    assert machine["definition"] == definition
    assert machine["roleArn"] == "arn:aws:iam::123456789012:role/fake"
    assert machine["updateDate"].timestamp() == T0

    # The same ARN again replaces it; RUNNING is not redrivable by default.
    h.ok(op="fake_execution", execution=execution("described", status="RUNNING"))
    got = sfn.describe_execution(executionArn=arn)
    assert (got["status"], got["redriveStatus"]) == ("RUNNING", "NOT_REDRIVABLE")
    assert "stopDate" not in got and "error" not in got
    assert sfn.get_execution_history(executionArn=arn)["events"] == []

    # Cleared, the ARN is moto's again: it knows no such execution.
    assert h.ok(op="clear_fake_executions")["cleared"] == 1
    code, status, _ = error_of(sfn.describe_execution, executionArn=arn)
    assert (code, status) == ("ExecutionDoesNotExist", 400)
    assert [r["answered_by"] for r in h.requests()] == ["proxy"] * 4 + ["moto"]


def test_redrive(h):
    sfn = h.client("stepfunctions")
    arn = execution_arn("redriven")
    redriven = [
        {
            "id": 1,
            "previousEventId": 0,
            "timestamp": T0 + 100,
            "type": "ExecutionRedriven",
            "executionRedrivenEventDetails": {"redriveCount": 1},
        },
        {"id": 2, "previousEventId": 1, "timestamp": T0 + 101, "type": "TaskStateEntered"},
        {"id": 3, "previousEventId": 1, "timestamp": T0 + 102, "type": "TaskScheduled"},
    ]
    h.ok(
        op="fake_execution",
        execution=execution("redriven", error="States.TaskFailed", cause="boom"),
        history=events(5),
        after_redrive={"events": redriven},
    )
    before = time.time()
    date = sfn.redrive_execution(executionArn=arn, clientToken="token-1")["redriveDate"]
    assert before - 1 <= date.timestamp() <= time.time() + 1

    got = sfn.describe_execution(executionArn=arn)
    assert got["status"] == "RUNNING"
    assert (got["redriveCount"], got["redriveStatus"]) == (1, "NOT_REDRIVABLE")
    assert got["redriveDate"] == date
    assert not {"stopDate", "error", "cause"} & set(got)
    history = sfn.get_execution_history(executionArn=arn)["events"]
    assert [(e["id"], e["previousEventId"]) for e in history[5:]] == [(6, 5), (7, 6), (8, 6)]
    assert [e["type"] for e in history[5:]] == [
        "ExecutionRedriven",
        "TaskStateEntered",
        "TaskScheduled",
    ]

    # The same client token: the same answer, nothing changes.
    again = sfn.redrive_execution(executionArn=arn, clientToken="token-1")["redriveDate"]
    assert again == date
    assert sfn.describe_execution(executionArn=arn)["redriveCount"] == 1
    assert len(sfn.get_execution_history(executionArn=arn)["events"]) == 8
    # Another: refused, the execution is RUNNING and NOT_REDRIVABLE.
    code, status, response = error_of(
        sfn.redrive_execution, executionArn=arn, clientToken="token-2"
    )
    assert (code, status) == ("ExecutionNotRedrivable", 400)
    assert "RUNNING" in response["Error"]["Message"]
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/x-amz-json-1.0"
    )

    # Stopped, it can be redriven again (the SDK makes up a client token);
    # after_redrive can end it at once.
    stopped = sfn.stop_execution(executionArn=arn, error="Stop", cause="by test")["stopDate"]
    got = sfn.describe_execution(executionArn=arn)
    assert (got["status"], got["stopDate"], got["error"]) == ("ABORTED", stopped, "Stop")
    assert got["redriveStatus"] == "REDRIVABLE"
    last = sfn.get_execution_history(executionArn=arn, reverseOrder=True)["events"][0]
    assert (last["id"], last["previousEventId"], last["type"]) == (9, 8, "ExecutionAborted")
    assert last["executionAbortedEventDetails"] == {"error": "Stop", "cause": "by test"}
    sfn.redrive_execution(executionArn=arn)
    assert sfn.describe_execution(executionArn=arn)["redriveCount"] == 2
    ids = [e["id"] for e in sfn.get_execution_history(executionArn=arn)["events"]]
    assert ids == list(range(1, 13))

    # Not redrivable: a SUCCEEDED execution, or one the test says is not.
    h.ok(op="fake_execution", execution=execution("done", status="SUCCEEDED"))
    code, _, response = error_of(sfn.redrive_execution, executionArn=execution_arn("done"))
    assert code == "ExecutionNotRedrivable" and "SUCCEEDED" in response["Error"]["Message"]
    reason = "Execution is older than 14 days"
    h.ok(
        op="fake_execution",
        execution=execution("old", redriveStatus="NOT_REDRIVABLE", redriveStatusReason=reason),
    )
    code, _, response = error_of(sfn.redrive_execution, executionArn=execution_arn("old"))
    assert (code, response["Error"]["Message"]) == ("ExecutionNotRedrivable", reason)

    h.ok(op="fake_execution", execution=execution("express"), state_machine_type="EXPRESS")
    assert sfn.describe_execution(executionArn=execution_arn("express"))["redriveStatus"] == (
        "NOT_REDRIVABLE"
    )

    # A redrive straight to a final status.
    h.ok(
        op="fake_execution",
        execution=execution("quick", error="E", cause="C"),
        after_redrive={"status": "SUCCEEDED", "output": "{}", "redrive_status": "NOT_REDRIVABLE"},
    )
    sfn.redrive_execution(executionArn=execution_arn("quick"))
    got = sfn.describe_execution(executionArn=execution_arn("quick"))
    assert (got["status"], got["output"], got["redriveCount"]) == ("SUCCEEDED", "{}", 1)
    assert "stopDate" in got and not {"error", "cause"} & set(got)

    log = h.requests()
    assert all(r["answered_by"] == "proxy" for r in log)
    redrives = [r for r in log if r["operation"] == "RedriveExecution"]
    assert redrives[0]["body"] == {"executionArn": arn, "clientToken": "token-1"}
    assert [r["status"] for r in redrives] == [200, 200, 400, 200, 400, 400, 200]


def test_list_executions(h):
    sfn = h.client("stepfunctions")
    statuses = ["SUCCEEDED", "FAILED", "RUNNING", "FAILED", "ABORTED"]
    for i, status in enumerate(statuses):
        h.ok(op="fake_execution", execution=execution(f"run-{i}", status=status, start=T0 + i))
    h.ok(op="fake_execution", execution=execution("elsewhere", machine="other-sm"))

    listed = sfn.list_executions(stateMachineArn=SM)
    assert "nextToken" not in listed
    assert [e["name"] for e in listed["executions"]] == [f"run-{i}" for i in range(4, -1, -1)]
    first = listed["executions"][0]
    assert set(first) == {
        "executionArn",
        "stateMachineArn",
        "name",
        "status",
        "startDate",
        "stopDate",
        "redriveCount",
    }
    assert "stopDate" not in listed["executions"][2]  # the RUNNING one

    failed = sfn.list_executions(stateMachineArn=SM, statusFilter="FAILED")["executions"]
    assert [e["name"] for e in failed] == ["run-3", "run-1"]

    names, token, sizes = [], None, []
    while True:
        args = {"stateMachineArn": SM, "maxResults": 2}
        if token:
            args["nextToken"] = token
        page = sfn.list_executions(**args)
        sizes.append(len(page["executions"]))
        names += [e["name"] for e in page["executions"]]
        token = page.get("nextToken")
        if not token:
            break
    assert sizes == [2, 2, 1]
    assert names == [f"run-{i}" for i in range(4, -1, -1)]
    code, status, _ = error_of(sfn.list_executions, stateMachineArn=SM, nextToken="nope")
    assert (code, status) == ("InvalidToken", 400)

    sfn.redrive_execution(executionArn=execution_arn("run-1"))
    redriven = sfn.list_executions(stateMachineArn=SM, redriveFilter="REDRIVEN")["executions"]
    assert [(e["name"], e["redriveCount"]) for e in redriven] == [("run-1", 1)]
    assert "redriveDate" in redriven[0]

    # A state machine without fake executions is moto's.
    sm = sfn.create_state_machine(
        name="moto-sm",
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/sm",
    )["stateMachineArn"]
    sfn.start_execution(stateMachineArn=sm, name="moto-run")
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=sm)["executions"]] == [
        "moto-run"
    ]

    answered = [(r["operation"], r["answered_by"]) for r in h.requests()]
    assert answered[-4:] == [
        ("ListExecutions", "proxy"),
        ("CreateStateMachine", "moto"),
        ("StartExecution", "moto"),
        ("ListExecutions", "moto"),
    ]
    assert all(by == "proxy" for _, by in answered[:-3])


def test_faults_apply_to_fake_executions(h):
    arn = execution_arn("faulted")
    h.ok(op="fake_execution", execution=execution("faulted"), history=events(2))
    h.ok(op="fault", service="states", operation="GetExecutionHistory", kind="throttle")
    got = h.client("stepfunctions", attempts=2).get_execution_history(executionArn=arn)
    assert got["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(got["events"]) == 2
    log = h.requests()
    assert [(r["status"], r["injected"], r["error_code"], r["answered_by"]) for r in log] == [
        (400, "throttle", "ThrottlingException", "proxy"),
        (200, None, None, "proxy"),
    ]

    h.ok(op="allow_only", policy={"Statement": [allow("states:Describe*")]})
    sfn = h.client("stepfunctions")
    assert sfn.describe_execution(executionArn=arn)["status"] == "FAILED"
    code, status, _ = error_of(sfn.redrive_execution, executionArn=arn)
    assert (code, status) == ("AccessDeniedException", 403)
    assert h.requests()[-1]["refused_action"] == "states:RedriveExecution"
    assert sfn.describe_execution(executionArn=arn)["redriveCount"] == 0


def allow(action):
    return {"Effect": "Allow", "Action": action, "Resource": "*"}


@pytest.mark.parametrize(
    "cmd",
    [
        {"execution": None},
        {"execution": {"executionArn": "a", "stateMachineArn": "s", "name": "n"}},
        {"execution": execution("x", status="DONE")},
        {"execution": execution("x", startDate="yesterday")},
        {"execution": execution("x"), "history": {}},
        {"execution": execution("x"), "page_size": 0},
        {"execution": execution("x"), "state_machine_type": "FAST"},
        {"execution": execution("x"), "after_redrive": {"redriveStatus": "REDRIVABLE"}},
        {"execution": execution("x"), "after_redrive": {"events": [{"type": "X"}]}},
    ],
)
def test_bad_fake_executions_are_refused(h, cmd):
    reply = h.send(op="fake_execution", **cmd)
    assert reply["ok"] is False and reply["error"], reply


# ------------------------------------------------- moto's interpreter, reached


def sfn_call(h, operation, body):
    """A Step Functions call through the proxy, unsigned (moto checks no
    signature; the credential scope names the service and region)."""
    host, port = urllib.parse.urlsplit(h.endpoint).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            "/",
            body=json.dumps(body),
            headers={
                "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}"
                "/states/aws4_request, SignedHeaders=host, Signature=00",
                "X-Amz-Target": f"AWSStepFunctions.{operation}",
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, (operation, resp.status, data)
    return json.loads(data)


def run_to_end(h, name, definition):
    """Create a state machine and run it; its DescribeExecution once ended."""
    # moto 5.2.1 answers 500 to a second StartExecution in a region that
    # already has an execution (see README): start from an empty moto.
    assert h.ok(op="moto", path="/moto-api/reset")["status"] == 200
    sm = sfn_call(
        h,
        "CreateStateMachine",
        {
            "name": name,
            "definition": json.dumps(definition),
            "roleArn": "arn:aws:iam::123456789012:role/sm",
        },
    )["stateMachineArn"]
    arn = sfn_call(h, "StartExecution", {"stateMachineArn": sm, "name": "run", "input": "{}"})[
        "executionArn"
    ]
    deadline = time.monotonic() + 20
    while True:
        got = sfn_call(h, "DescribeExecution", {"executionArn": arn})
        if got["status"] != "RUNNING" or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_moto_interpreter_runs_state_machines(h):
    assert h.send(op="sfn_interpreter", on="yes")["ok"] is False
    assert h.ok(op="sfn_interpreter", on=True) == {"ok": True}
    try:
        passes = {
            "StartAt": "A",
            "States": {
                "A": {"Type": "Pass", "Result": {"x": 1}, "Next": "B"},
                "B": {"Type": "Pass", "End": True},
            },
        }
        got = run_to_end(h, "passes", passes)
        assert got["status"] == "SUCCEEDED", got
        assert json.loads(got["output"]) == {"x": 1}

        # The interpreter's aws-sdk call reaches this moto (MOTO_PORT), which
        # knows no such crawler.
        crawl = {
            "StartAt": "Crawl",
            "States": {
                "Crawl": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::aws-sdk:glue:startCrawler",
                    "Parameters": {"Name": "no-such-crawler"},
                    "End": True,
                }
            },
        }
        got = run_to_end(h, "crawl", crawl)
        assert got["status"] == "FAILED", got
        assert got["error"] == "glue.EntityNotFoundException"
        assert got["cause"].startswith("Crawler no-such-crawler not found.")
    finally:
        h.ok(op="sfn_interpreter", on=False)
        h.ok(op="moto", path="/moto-api/reset")
    log = h.requests()
    assert {r["answered_by"] for r in log} == {"moto"}
    assert {r["operation"] for r in log} == {
        "CreateStateMachine",
        "StartExecution",
        "DescribeExecution",
    }
