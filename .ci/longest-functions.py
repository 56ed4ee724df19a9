#!/usr/bin/env python3
"""The longest production Rust functions, in lines, longest first.

Tests, benches and `#[cfg(test)]` modules are left out; braces are counted on
lines with string literals and comments removed, which is rough but right
for this code base. `TOP=20 python3 .ci/longest-functions.py` for more rows;
paths as arguments to look at some crates only.
"""

import os, re, sys

FN = re.compile(
    r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"[^"]*"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)'
)


def strip(line):
    # drop string literals and line comments for brace counting (rough but adequate)
    out, i, n = [], 0, len(line)
    in_str = False
    while i < n:
        c = line[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
            continue
        if c == '"':
            in_str = True
            i += 1
            continue
        if (
            c == "'"
            and i + 2 < n
            and (line[i + 2] == "'" or (line[i + 1] == "\\" and i + 3 < n))
        ):
            j = line.find("'", i + 2)
            if j != -1 and j - i <= 4:
                i = j + 1
                continue
        if line.startswith("//", i):
            break
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    res = []
    skip_depth = None
    depth = 0
    i = 0
    pending_test = False
    stack = []  # (name, start_line, depth_at_open)
    raw_in_str = False
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("#[cfg(test)]"):
            pending_test = True
        m = FN.match(line)
        code = strip(line)
        if m and skip_depth is None and not pending_test:
            stack.append((m.group(7), i + 1, depth))
        if (
            pending_test
            and ("mod " in code or "fn " in code or "impl" in code)
            and "{" in code
        ):
            skip_depth = depth
            pending_test = False
        elif pending_test and code.strip().endswith(";"):
            pending_test = False
        for ch in code:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if skip_depth is not None and depth == skip_depth:
                    skip_depth = None
                while stack and depth == stack[-1][2]:
                    name, start, _ = stack.pop()
                    res.append((i + 2 - start, name, start))
        # a declaration without body (trait fn;)
        if (
            stack
            and stack[-1][1] == i + 1
            and code.rstrip().endswith(";")
            and "{" not in code
        ):
            stack.pop()
        i += 1
    return res


roots = sys.argv[1:] or [
    "src",
    "engine/src",
    "tasks/src",
    "exporters/src",
    "reports/src",
]
out = []
for root in roots:
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs") and f != "tests.rs" and "/tests" not in d:
                p = os.path.join(d, f)
                for n, name, start in functions(p):
                    out.append((n, f"{p}:{start}", name))
out.sort(reverse=True)
for n, where, name in out[: int(os.environ.get("TOP", "10"))]:
    print(f"{n:5d}  {name}  {where}")
