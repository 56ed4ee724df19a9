"""Fake Step Functions executions, answered by the proxy itself.

moto cannot serve realistic execution histories (no `.sync` integrations,
`GetExecutionHistory` ignores paging, `RedriveExecution` answers 500), so a
test describes an execution (`fake_execution`) and the proxy answers the
Step Functions calls about it without forwarding them:
DescribeExecution, GetExecutionHistory, DescribeStateMachineForExecution,
RedriveExecution and StopExecution when the body's `executionArn` is a
fake one, and ListExecutions when its `stateMachineArn` has fake ones.

Pure state and decisions, no I/O: `FakeExecutions.answer` takes an
operation and its JSON body and gives the answer's document (or raises
SfnError); the proxy sends it. The caller holds the proxy's lock.
"""

import copy
import json
import secrets
import time

EXECUTION_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE")
FINAL_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
REDRIVABLE_STATUSES = ("FAILED", "ABORTED", "TIMED_OUT")
REDRIVE_STATUSES = ("REDRIVABLE", "NOT_REDRIVABLE", "REDRIVABLE_BY_MAP_RUN")
STATE_MACHINE_TYPES = ("STANDARD", "EXPRESS")
ROLE_ARN = "arn:aws:iam::123456789012:role/fake"
DEFAULT_DEFINITION = json.dumps(
    {"StartAt": "Fake", "States": {"Fake": {"Type": "Pass", "End": True}}}
)
# GetExecutionHistory and ListExecutions: "The default is 100 and the
# maximum allowed page size is 1000. A value of 0 uses the default."
DEFAULT_MAX_RESULTS = 100
MAX_RESULTS = 1000
AFTER_REDRIVE_KEYS = {
    "status",
    "events",
    "redrive_status",
    "redrive_status_reason",
    "output",
    "error",
    "cause",
}


class FakeSfnCommandError(ValueError):
    """A malformed `fake_execution` command."""


class SfnError(Exception):
    """An error answer of the Step Functions API (JSON 1.0, 400 unless said)."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def now():
    return round(time.time(), 3)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _events(value, what):
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise FakeSfnCommandError(f"{what} must be a list of event objects")
    return copy.deepcopy(value)


class FakeExecution:
    def __init__(self, cmd):
        execution = cmd.get("execution")
        if not isinstance(execution, dict):
            raise FakeSfnCommandError("execution must be an object (DescribeExecution's fields)")
        for field in ("executionArn", "stateMachineArn", "name"):
            if not isinstance(execution.get(field), str) or not execution[field]:
                raise FakeSfnCommandError(f"execution.{field} must be a non-empty string")
        if execution.get("status") not in EXECUTION_STATUSES:
            raise FakeSfnCommandError(
                f"execution.status must be one of {', '.join(EXECUTION_STATUSES)}"
            )
        for field in ("startDate", "stopDate", "redriveDate"):
            if (field == "startDate" or field in execution) and not _number(execution.get(field)):
                raise FakeSfnCommandError(f"execution.{field} must be epoch seconds (a number)")
        for field in ("input", "output", "error", "cause", "redriveStatusReason"):
            if field in execution and not isinstance(execution[field], str):
                raise FakeSfnCommandError(f"execution.{field} must be a string")
        count = execution.get("redriveCount", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise FakeSfnCommandError("execution.redriveCount must be a non-negative integer")
        if "redriveStatus" in execution and execution["redriveStatus"] not in REDRIVE_STATUSES:
            raise FakeSfnCommandError(
                f"execution.redriveStatus must be one of {', '.join(REDRIVE_STATUSES)}"
            )

        self.type = cmd.get("state_machine_type", "STANDARD")
        if self.type not in STATE_MACHINE_TYPES:
            raise FakeSfnCommandError("state_machine_type must be STANDARD or EXPRESS")
        self.execution = copy.deepcopy(execution)
        self.execution["redriveCount"] = count
        if "redriveStatus" not in self.execution:
            redrivable = self.type == "STANDARD" and execution["status"] in REDRIVABLE_STATUSES
            self.execution["redriveStatus"] = "REDRIVABLE" if redrivable else "NOT_REDRIVABLE"

        self.history = _events(cmd.get("history", []), "history")
        self.page_size = cmd.get("page_size", MAX_RESULTS)
        if not isinstance(self.page_size, int) or isinstance(self.page_size, bool):
            raise FakeSfnCommandError("page_size must be a positive integer")
        if self.page_size < 1:
            raise FakeSfnCommandError("page_size must be a positive integer")
        self.definition = cmd.get("definition", DEFAULT_DEFINITION)
        if not isinstance(self.definition, str):
            raise FakeSfnCommandError("definition must be a string (the ASL JSON)")

        after = cmd.get("after_redrive", {})
        if not isinstance(after, dict):
            raise FakeSfnCommandError("after_redrive must be an object")
        unknown = set(after) - AFTER_REDRIVE_KEYS
        if unknown:
            raise FakeSfnCommandError(
                f"after_redrive: unknown keys {', '.join(sorted(unknown))}"
                f" (known: {', '.join(sorted(AFTER_REDRIVE_KEYS))})"
            )
        self.after_redrive = dict(after)
        self.after_redrive.setdefault("status", "RUNNING")
        if self.after_redrive["status"] not in EXECUTION_STATUSES:
            raise FakeSfnCommandError(
                f"after_redrive.status must be one of {', '.join(EXECUTION_STATUSES)}"
            )
        self.after_redrive["events"] = _events(after.get("events", []), "after_redrive.events")
        if not all(_is_int(e.get("id")) for e in self.after_redrive["events"]):
            raise FakeSfnCommandError("after_redrive.events: every event needs an integer id")
        self.after_redrive.setdefault("redrive_status", "NOT_REDRIVABLE")
        if self.after_redrive["redrive_status"] not in REDRIVE_STATUSES:
            raise FakeSfnCommandError(
                f"after_redrive.redrive_status must be one of {', '.join(REDRIVE_STATUSES)}"
            )
        for field in ("redrive_status_reason", "output", "error", "cause"):
            if field in after and not isinstance(after[field], str):
                raise FakeSfnCommandError(f"after_redrive.{field} must be a string")

        self.redrives = {}  # clientToken -> redriveDate

    @property
    def arn(self):
        return self.execution["executionArn"]

    @property
    def state_machine_arn(self):
        return self.execution["stateMachineArn"]

    def last_event_id(self):
        ids = [e["id"] for e in self.history if _is_int(e.get("id"))]
        return max(ids) if ids else 0

    def append_events(self, events):
        """Append events renumbered to follow the last one: ids and
        previousEventIds shift by the same amount, so that the first of
        them (id 1, previousEventId 0 as given) follows the last event."""
        events = copy.deepcopy(events)
        if not events:
            return
        shift = self.last_event_id() + 1 - min(e["id"] for e in events)
        for event in events:
            event["id"] += shift
            if _is_int(event.get("previousEventId")):
                event["previousEventId"] += shift
        self.history.extend(events)

    def list_item(self):
        item = {
            field: self.execution[field]
            for field in (
                "executionArn",
                "stateMachineArn",
                "name",
                "status",
                "startDate",
                "stopDate",
                "redriveCount",
                "redriveDate",
            )
            if field in self.execution
        }
        return item


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class FakeExecutions:
    """The fake executions by ARN, and the page tokens handed out."""

    def __init__(self):
        self.executions = {}  # executionArn -> FakeExecution
        self.order = {}  # executionArn -> insertion number (ties of ListExecutions)
        self.tokens = {}  # nextToken -> (what, key, position, reverse)

    def __len__(self):
        return len(self.executions)

    def add(self, cmd):
        execution = FakeExecution(cmd)
        self.executions[execution.arn] = execution
        self.order[execution.arn] = len(self.order)
        return execution

    def clear(self):
        n = len(self.executions)
        self.__init__()
        return n

    # -- the API

    def answer(self, operation, body):
        """The answer document of a Step Functions call the fakes serve, or
        None when it is not theirs (then it goes to moto). Raises SfnError."""
        if not isinstance(body, dict):
            return None
        if operation == "ListExecutions":
            arn = body.get("stateMachineArn")
            if not any(e.state_machine_arn == arn for e in self.executions.values()):
                return None
            return self.list_executions(arn, body)
        execution = self.executions.get(body.get("executionArn"))
        if execution is None:
            return None
        handler = {
            "DescribeExecution": self.describe_execution,
            "GetExecutionHistory": self.get_execution_history,
            "DescribeStateMachineForExecution": self.describe_state_machine_for_execution,
            "RedriveExecution": self.redrive_execution,
            "StopExecution": self.stop_execution,
        }.get(operation)
        if handler is None:
            return None
        return handler(execution, body)

    def describe_execution(self, execution, body):
        return copy.deepcopy(execution.execution)

    def describe_state_machine_for_execution(self, execution, body):
        arn = execution.state_machine_arn
        return {
            "stateMachineArn": arn,
            "name": arn.rsplit(":", 1)[-1],
            "definition": execution.definition,
            "roleArn": ROLE_ARN,
            "updateDate": execution.execution["startDate"],
        }

    def get_execution_history(self, execution, body):
        reverse = bool(body.get("reverseOrder"))
        size = min(max_results(body), execution.page_size)
        events = execution.history
        token = body.get("nextToken")
        if token:
            start = self._take_token(token, ("history", execution.arn, reverse))
        else:
            start = 0
        ordered = list(reversed(events)) if reverse else events
        page = ordered[start : start + size]
        answer = {"events": copy.deepcopy(page)}
        if start + size < len(ordered):
            answer["nextToken"] = self._token(("history", execution.arn, reverse), start + size)
        return answer

    def list_executions(self, state_machine_arn, body):
        status_filter = body.get("statusFilter")
        redrive_filter = body.get("redriveFilter")
        chosen = [
            e
            for e in self.executions.values()
            if e.state_machine_arn == state_machine_arn
            and (not status_filter or e.execution["status"] == status_filter)
            and (
                not redrive_filter
                or (redrive_filter == "REDRIVEN") == (e.execution["redriveCount"] > 0)
            )
        ]
        chosen.sort(key=lambda e: (-e.execution["startDate"], -self.order[e.arn]))
        size = max_results(body)
        key = ("list", state_machine_arn, (status_filter, redrive_filter))
        token = body.get("nextToken")
        start = self._take_token(token, key) if token else 0
        page = chosen[start : start + size]
        answer = {"executions": [e.list_item() for e in page]}
        if start + size < len(chosen):
            answer["nextToken"] = self._token(key, start + size)
        return answer

    def redrive_execution(self, execution, body):
        client_token = body.get("clientToken")
        if client_token and client_token in execution.redrives:
            return {"redriveDate": execution.redrives[client_token]}
        state = execution.execution
        if state["status"] not in REDRIVABLE_STATUSES or state["redriveStatus"] != "REDRIVABLE":
            reason = state.get("redriveStatusReason") or (
                f"Execution {execution.arn} is {state['status']}"
                f" (redriveStatus {state['redriveStatus']}) and cannot be redriven"
            )
            raise SfnError("ExecutionNotRedrivable", reason)
        after = execution.after_redrive
        date = now()
        status = after["status"]
        state["status"] = status
        state["redriveCount"] += 1
        state["redriveDate"] = date
        if status in FINAL_STATUSES:
            state["stopDate"] = date
            if status == "SUCCEEDED":
                state.pop("error", None)
                state.pop("cause", None)
        else:
            for field in ("stopDate", "error", "cause"):
                state.pop(field, None)
        for field in ("output", "error", "cause"):
            if field in after:
                state[field] = after[field]
        state["redriveStatus"] = after["redrive_status"]
        state.pop("redriveStatusReason", None)
        if "redrive_status_reason" in after:
            state["redriveStatusReason"] = after["redrive_status_reason"]
        execution.append_events(after["events"])
        if client_token:
            execution.redrives[client_token] = date
        return {"redriveDate": date}

    def stop_execution(self, execution, body):
        state = execution.execution
        if state["status"] not in ("RUNNING", "PENDING_REDRIVE"):
            # Already ended: nothing changes.
            return {"stopDate": state.get("stopDate", now())}
        date = now()
        state.update(status="ABORTED", stopDate=date)
        details = {}
        for field in ("error", "cause"):
            state.pop(field, None)
            if isinstance(body.get(field), str):
                state[field] = details[field] = body[field]
        if execution.type == "STANDARD":
            state["redriveStatus"] = "REDRIVABLE"
            state.pop("redriveStatusReason", None)
        last = execution.last_event_id()
        execution.history.append(
            {
                "id": last + 1,
                "previousEventId": last,
                "timestamp": date,
                "type": "ExecutionAborted",
                "executionAbortedEventDetails": details,
            }
        )
        return {"stopDate": date}

    # -- page tokens

    def _token(self, key, position):
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (key, position)
        return token

    def _take_token(self, token, key):
        found = self.tokens.get(token) if isinstance(token, str) else None
        if found is None or found[0] != key:
            raise SfnError("InvalidToken", f"Invalid Token: '{token}'")
        return found[1]


def max_results(body):
    value = body.get("maxResults", 0)
    if value is None:
        value = 0
    if not _is_int(value) or value < 0 or value > MAX_RESULTS:
        raise SfnError(
            "ValidationException",
            f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy"
            f" constraint: Member must have value between 0 and {MAX_RESULTS}",
        )
    return value or DEFAULT_MAX_RESULTS
