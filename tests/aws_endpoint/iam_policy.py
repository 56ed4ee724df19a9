"""A small evaluator of IAM identity policies, for the proxy's `allow_only`.

What it does, and where it is knowingly simpler than IAM:
- Statements: `Effect` Allow or Deny, `Action` or `NotAction`, `Resource`
  or `NotResource`, each a string or a list. Wildcards `*` and `?`; actions
  compare without regard to case, resources with.
- A request is allowed when every one of its (action, resource)
  requirements is matched by an Allow statement and by no Deny statement
  (explicit deny wins, no match is an implicit deny).
- `Condition` blocks are not evaluated: a statement with one applies as if
  its condition held. Each decision lists the statements whose condition
  was ignored, so a test can see that it relied on one.
- S3 requirements carry the resource ARN (`arn:aws:s3:::bucket` or
  `arn:aws:s3:::bucket/key`) and are matched exactly. The other services'
  requirements carry no resource: a statement's Resource matches them when
  it is `*` or an ARN of the same service (`arn:aws:glue:...`), whatever
  the rest of the ARN says. This is lenient on purpose: the engine's
  requests name clusters, crawlers and workgroups in ways that would need
  each service's ARN rules to check.
- Policy variables (`${aws:username}`) are not expanded.
"""

import re


class PolicyError(ValueError):
    pass


def _as_list(value):
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise PolicyError(f"expected a string or a list of strings, got {value!r}")


def _glob(pattern, ignore_case):
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{regex}$", re.IGNORECASE if ignore_case else 0)


class Statement:
    def __init__(self, index, doc):
        if not isinstance(doc, dict):
            raise PolicyError(f"statement {index} is not an object")
        self.sid = doc.get("Sid", f"#{index}")
        self.effect = doc.get("Effect")
        if self.effect not in ("Allow", "Deny"):
            raise PolicyError(f"statement {self.sid}: Effect must be Allow or Deny")
        actions, not_actions = _as_list(doc.get("Action")), _as_list(doc.get("NotAction"))
        if (actions is None) == (not_actions is None):
            raise PolicyError(f"statement {self.sid}: needs exactly one of Action, NotAction")
        resources = _as_list(doc.get("Resource"))
        not_resources = _as_list(doc.get("NotResource"))
        if (resources is None) == (not_resources is None):
            raise PolicyError(f"statement {self.sid}: needs exactly one of Resource, NotResource")
        self.not_action = actions is None
        self.actions = [_glob(a, True) for a in (actions if actions is not None else not_actions)]
        self.not_resource = resources is None
        self.resource_patterns = resources if resources is not None else not_resources
        self.resources = [_glob(r, False) for r in self.resource_patterns]
        self.has_condition = bool(doc.get("Condition"))

    def matches_action(self, action):
        hit = any(p.match(action) for p in self.actions)
        return hit != self.not_action

    def matches_resource(self, action, resource):
        if resource is None:
            # Lenient: any resource of the action's service (see module doc).
            if self.not_resource:
                return True
            service = action.split(":", 1)[0]
            for pattern in self.resource_patterns:
                if pattern == "*":
                    return True
                fields = pattern.split(":")
                if (
                    len(fields) >= 3
                    and fields[0] == "arn"
                    and _glob(fields[2], True).match(service)
                ):
                    return True
            return False
        hit = any(p.match(resource) for p in self.resources)
        return hit != self.not_resource

    def matches(self, action, resource):
        return self.matches_action(action) and self.matches_resource(action, resource)


class Policy:
    def __init__(self, doc):
        if not isinstance(doc, dict):
            raise PolicyError("the policy must be a JSON object")
        statements = doc.get("Statement")
        if isinstance(statements, dict):
            statements = [statements]
        if not isinstance(statements, list) or not statements:
            raise PolicyError("the policy has no Statement")
        self.statements = [Statement(i, s) for i, s in enumerate(statements)]

    def with_conditions(self):
        return [s.sid for s in self.statements if s.has_condition]

    def decide(self, requirements):
        """A dict: allowed (bool); when refused, the first refused action and
        resource and why ("explicit deny" or "no allow"); the Sids of the
        statements used whose Condition was ignored."""
        ignored = []
        for action, resource in requirements:
            denying = [
                s for s in self.statements if s.effect == "Deny" and s.matches(action, resource)
            ]
            if denying:
                ignored += [s.sid for s in denying if s.has_condition]
                return {
                    "allowed": False,
                    "action": action,
                    "resource": resource,
                    "reason": f"explicit deny in {denying[0].sid}",
                    "conditions_ignored": _unique(ignored),
                }
            allowing = [
                s for s in self.statements if s.effect == "Allow" and s.matches(action, resource)
            ]
            if not allowing:
                return {
                    "allowed": False,
                    "action": action,
                    "resource": resource,
                    "reason": "no statement allows it",
                    "conditions_ignored": _unique(ignored),
                }
            # A statement without condition is enough; else say which one was relied on.
            if all(s.has_condition for s in allowing):
                ignored.append(allowing[0].sid)
        return {"allowed": True, "conditions_ignored": _unique(ignored)}


def _unique(items):
    seen = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
