#!/usr/bin/env python3
"""Soak: runs killed at random moments and resumed must end as uninterrupted runs do.

A program, not a timed test. Two parts, each compared with an uninterrupted run of the same DAG:

A. A DAG of shell and noop tasks (fan-out, partial fan-ins, a join; each shell task adds its
   weight to the sum of its inputs, sleeps a little and appends a line to a journal). Each of
   --shell-runs runs is SIGKILLed at a random moment, then resumed with `resume --latest`, which
   is itself SIGKILLed at random with probability 1/2, until it ends. Compared: the run's status,
   every task's output (`show --format json`) and the journal, where every task must have
   completed exactly once after the last attempt that the checkpoint recorded as succeeded.

B. The rental pipeline (`dags/rental.toml`, the shipped sample by default): each of
   --pipeline-runs runs is SIGKILLed at a random moment of its first 40 s, resumed (and maybe
   killed again), until it ends. Compared: every query's result rows (the CSV the run wrote,
   as a set of lines) with an uninterrupted run's.

After every kill it waits 3 s and looks for orphans: processes (other than this one) with a file
of the run's state dir open, which is what every task process, Spark job and Spark server of
the run has (its logs). Printed at the end: runs, kills, mismatches, orphans found.

    cargo build --release
    python3 tasks/benches/soak.py [--shell-runs 50] [--pipeline-runs 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "release" / "flux-engine"
    if not path.is_file():
        sys.exit(f"{path} not found: run `cargo build --release` first (same CARGO_TARGET_DIR)")
    return path


# (id, dependencies, weight, sleep seconds)
SHELL_TASKS = [
    ("src", [], 1, 0.05),
    ("a1", ["src"], 2, 0.2),
    ("a2", ["src"], 3, 0.1),
    ("a3", ["src"], 5, 4.0),  # outlives the 3 s wait after a kill, if not reaped
    ("a4", ["src"], 7, 0.15),
    ("b1", ["a1", "a2"], 11, 0.2),
    ("b2", ["a3", "a4"], 13, 0.1),
    ("mark", ["b1"], 0, 0.0),
    ("c", ["mark", "b2"], 17, 0.25),
    ("d1", ["c"], 19, 0.1),
    ("d2", ["c"], 23, 0.2),
    ("join", ["d1", "d2"], 29, 0.05),
]


def shell_dag(folder: Path) -> Path:
    lines = ['[dag]\nname = "soak"\n\n[defaults]\nretry = { max_attempts = 1 }\n']
    for task_id, deps, weight, sleep in SHELL_TASKS:
        lines.append(f"[tasks.{task_id}]")
        if task_id == "mark":
            lines.append('type = "noop"')
            lines.append("output = { sum = 0 }")
        else:
            # The output is the weight plus the sums of the inputs; the journal line is
            # written last, so a line means the task's work is done.
            script = (
                f"sleep {sleep}; "
                f"s=$(python3 -c \"import json,os; d=json.load(open(os.environ['FLUX_INPUTS'])); "
                f"print({weight} + sum(v.get('sum', 0) for v in d.values()))\"); "
                'echo "{\\"sum\\": $s}" > "$FLUX_OUTPUT"; '
                f'echo "{task_id} $FLUX_RUN_ID $FLUX_ATTEMPT" >> journal.txt'
            )
            lines.append('type = "shell"')
            lines.append(f"command = '''{script}'''")
        if deps:
            lines.append("depends_on = [" + ", ".join(f'"{d}"' for d in deps) + "]")
        lines.append("")
    path = folder / "soak.toml"
    path.write_text("\n".join(lines))
    return path


def orphans(state: Path) -> list[int]:
    """Processes other than this one with a file under `state` open."""
    found = []
    prefix = str(state.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith(prefix):
                    found.append(int(entry))
                    break
        except OSError:
            continue
    return found


class Tally:
    def __init__(self) -> None:
        self.runs = self.kills = self.mismatches = self.orphans = 0
        self.notes: list[str] = []

    def mismatch(self, what: str) -> None:
        self.mismatches += 1
        self.notes.append(what)


def run_killed(
    bin_: Path, state: Path, args: list[str], kill_within: float, rng: random.Random, tally: Tally
) -> bool:
    """Starts `args`; SIGKILLs it after a random delay. True if it was killed."""
    log = open(state.parent / "engine.log", "ab")
    proc = subprocess.Popen(
        [str(bin_), "--state-dir", str(state), *args],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        cwd=state.parent,
    )
    delay = rng.uniform(0, kill_within)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tally.kills += 1
        time.sleep(3)
        left = orphans(state)
        if left:
            tally.orphans += len(left)
            tally.notes.append(f"orphans after a kill in {state}: {left}")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return True


def recorded_runs(bin_: Path, state: Path) -> list:
    if not (state / "flux.db").exists():
        return []
    return json.loads(
        subprocess.run(
            [str(bin_), "--state-dir", str(state), "runs", "--format", "json"],
            capture_output=True,
            check=True,
        ).stdout
    )


def finish(
    bin_: Path,
    state: Path,
    rng: random.Random,
    kill_within: float,
    tally: Tally,
    start: list[str],
) -> None:
    """Resumes the latest run until it ends, killing a resume with probability 1/2. A run
    killed before it was recorded has nothing to resume: it is started again, as a user
    would, with `start`."""
    if not recorded_runs(bin_, state):
        tally.notes.append(f"killed before the run was recorded in {state}: started again")
        subprocess.run(
            [str(bin_), "--state-dir", str(state), *start], capture_output=True, cwd=state.parent
        )
        return
    for _ in range(20):
        if rng.random() < 0.5 and run_killed(
            bin_, state, ["resume", "--latest"], kill_within, rng, tally
        ):
            continue
        done = subprocess.run(
            [str(bin_), "--state-dir", str(state), "resume", "--latest"],
            capture_output=True,
            cwd=state.parent,
        )
        if done.returncode == 0:
            return
        tally.notes.append(f"resume in {state} exited {done.returncode}: {done.stderr[-300:]!r}")
        return


def show(bin_: Path, state: Path) -> dict:
    runs = json.loads(
        subprocess.run(
            [str(bin_), "--state-dir", str(state), "runs", "--format", "json"],
            capture_output=True,
            check=True,
        ).stdout
    )
    run_id = runs[0]["run_id"]
    return json.loads(
        subprocess.run(
            [str(bin_), "--state-dir", str(state), "show", run_id, "--format", "json"],
            capture_output=True,
            check=True,
        ).stdout
    )


def shell_outcome(bin_: Path, folder: Path) -> tuple[str, dict]:
    report = show(bin_, folder / "state")
    outputs = {t["id"]: t.get("output") for t in report["tasks"]}
    return report["status"], outputs


def journal_problems(folder: Path, report: dict) -> list[str]:
    """Each task ran to its end at least once, and never again after the attempt recorded as
    its success."""
    seen: dict[str, list[int]] = {}
    for line in (folder / "journal.txt").read_text().splitlines():
        task, _run, attempt = line.split()
        seen.setdefault(task, []).append(int(attempt))
    problems = []
    for task in report["tasks"]:
        if task["id"] == "mark":
            continue
        attempts = seen.get(task["id"], [])
        if not attempts:
            problems.append(f"{task['id']} never completed")
        elif max(attempts) > task["attempts"]:
            problems.append(f"{task['id']} ran again after its recorded success")
    return problems


def part_shell(bin_: Path, runs: int, rng: random.Random, tally: Tally) -> None:
    with tempfile.TemporaryDirectory(prefix="soak-ref-") as ref:
        ref = Path(ref)
        dag = shell_dag(ref)
        subprocess.run(
            [str(bin_), "--state-dir", str(ref / "state"), "run", str(dag)],
            check=True,
            capture_output=True,
            cwd=ref,
        )
        expected = shell_outcome(bin_, ref)
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="soak-shell-") as folder:
            folder = Path(folder)
            dag = shell_dag(folder)
            state = folder / "state"
            tally.runs += 1
            if run_killed(bin_, state, ["run", str(dag)], 6.0, rng, tally):
                finish(bin_, state, rng, 5.0, tally, ["run", str(dag)])
            got = shell_outcome(bin_, folder)
            if got != expected:
                tally.mismatch(f"shell run {i}: {got} != {expected}")
            problems = journal_problems(folder, show(bin_, state))
            if problems:
                tally.mismatch(f"shell run {i}: {problems}")


def query_results(bin_: Path, state: Path) -> dict[str, list[str]]:
    """Every query task's result rows, from the CSV its last attempt wrote."""
    report = show(bin_, state)
    results = {}
    for task in report["tasks"]:
        output = task.get("output") or {}
        location = output.get("output_location")
        if not location:
            continue
        path = state / "s3" / location.removeprefix("s3://")
        results[task["id"]] = sorted(path.read_text().splitlines())
    return results


def part_pipeline(bin_: Path, runs: int, data: Path, rng: random.Random, tally: Tally) -> None:
    dag = REPO / "dags" / "rental.toml"
    args = ["run", str(dag), "--param", f"input_dir={data}"]
    with tempfile.TemporaryDirectory(prefix="soak-pipeline-ref-") as ref:
        state = Path(ref) / "state"
        subprocess.run(
            [str(bin_), "--state-dir", str(state), *args], check=True, capture_output=True
        )
        expected = query_results(bin_, state)
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="soak-pipeline-") as folder:
            state = Path(folder) / "state"
            tally.runs += 1
            if run_killed(bin_, state, args, 40.0, rng, tally):
                finish(bin_, state, rng, 40.0, tally, args)
            status = show(bin_, state)["status"]
            got = query_results(bin_, state)
            if status != "succeeded" or got != expected:
                differing = sorted(k for k in expected if got.get(k) != expected[k])
                tally.mismatch(f"pipeline run {i}: status {status}, differing: {differing}")
            print(f"pipeline run {i + 1}/{runs}: {status}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shell-runs", type=int, default=50)
    parser.add_argument("--pipeline-runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--binary", type=Path, help="the flux-engine to soak [default: the release build]"
    )
    parser.add_argument("--data", type=Path, default=REPO / "dags" / "data" / "rental-sample")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bin_ = args.binary.resolve() if args.binary else binary()
    started = time.monotonic()
    shell, pipeline = Tally(), Tally()
    part_shell(bin_, args.shell_runs, rng, shell)
    print(
        f"shell and noop DAG: {shell.runs} runs, {shell.kills} kills, "
        f"{shell.mismatches} mismatches, {shell.orphans} orphans",
        flush=True,
    )
    if args.pipeline_runs:
        part_pipeline(bin_, args.pipeline_runs, args.data.resolve(), rng, pipeline)
        print(
            f"rental pipeline: {pipeline.runs} runs, {pipeline.kills} kills, "
            f"{pipeline.mismatches} mismatches, {pipeline.orphans} orphans"
        )
    for note in shell.notes + pipeline.notes:
        print("  " + note)
    print(f"took {time.monotonic() - started:.0f} s")
    sys.exit(
        1 if shell.mismatches or pipeline.mismatches or shell.orphans or pipeline.orphans else 0
    )


if __name__ == "__main__":
    main()
