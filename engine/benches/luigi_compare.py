#!/usr/bin/env python3
"""flux-engine and Luigi's local scheduler, side by side, on one DAG.

The DAG: 1,000 independent leaf tasks that do nothing, and one sink that
depends on all of them (1,001 tasks). Each run is a whole process, timed
from start to exit; the two tools run alternately (A B A B ...) so that
drift in the machine's speed hits both alike.

Luigi runs with `luigi.build([Sink()], local_scheduler=True, workers=2)`.
Its tasks keep their completion in a shared in-memory flag array (no files
written): Luigi's worker processes are forked, so a plain class-level set
would not tell the sink's process that the leaves are done, and Luigi's own
"unfulfilled dependencies" check (left on, as by default) would fail.
flux-engine runs `FLUX_BIN run DAG --state-dir FRESH_DIR`: `noop` tasks,
max_parallel = number of cores, with its durable SQLite checkpoint.

    cargo build --release --bin flux-engine
    python3 engine/benches/luigi_compare.py [--flux-bin PATH] [--reps 5]

Needs network access to PyPI once per run (a throw-away virtualenv).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEAVES = 1000
TASKS = LEAVES + 1

LUIGI_WORKFLOW = f"""\
import multiprocessing
import sys

import luigi

LEAVES = {LEAVES}
# One flag per task, in shared memory: Luigi runs each task in a forked
# worker process and the sink's process checks that every leaf is complete.
DONE = multiprocessing.RawArray("b", LEAVES + 1)


class Leaf(luigi.Task):
    i = luigi.IntParameter()

    def complete(self):
        return bool(DONE[self.i])

    def run(self):
        DONE[self.i] = 1


class Sink(luigi.Task):
    def requires(self):
        return [Leaf(i=i) for i in range(LEAVES)]

    def complete(self):
        return bool(DONE[LEAVES])

    def run(self):
        DONE[LEAVES] = 1


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    ok = luigi.build([Sink()], local_scheduler=True, workers=2)
    sys.exit(0 if ok and all(DONE) else 1)
"""


def flux_dag():
    lines = ['[dag]\nname = "fan_in"\n']
    for i in range(LEAVES):
        lines.append(f'[tasks.leaf{i}]\ntype = "noop"\n')
    deps = ", ".join(f'"leaf{i}"' for i in range(LEAVES))
    lines.append(f'[tasks.sink]\ntype = "noop"\ndepends_on = [{deps}]\n')
    return "\n".join(lines)


def default_flux_bin():
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "release" / "flux-engine"
    return Path(__file__).resolve().parents[2] / "target" / "release" / "flux-engine"


def timed(cmd, cwd):
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed with exit code {done.returncode}: {' '.join(map(str, cmd))}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flux-bin", type=Path, default=default_flux_bin())
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    flux_bin = args.flux_bin.resolve()
    if not flux_bin.is_file():
        sys.exit(f"no flux-engine binary at {flux_bin}: run `cargo build --release`")

    with tempfile.TemporaryDirectory(prefix="luigi_compare_") as tmp:
        tmp = Path(tmp)
        venv = tmp / "venv"
        print("creating a virtualenv and installing luigi ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "luigi"],
            check=True,
        )
        version = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('luigi'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

        workflow = tmp / "fan_in_workflow.py"
        workflow.write_text(LUIGI_WORKFLOW)
        dag = tmp / "fan_in.toml"
        dag.write_text(flux_dag())

        runs = 0

        def luigi_run():
            return timed([python, workflow], cwd=tmp)

        def flux_run():
            nonlocal runs
            runs += 1
            state = tmp / f"state{runs}"
            return timed([flux_bin, "run", dag, "--state-dir", state], cwd=tmp)

        print(f"warm-up (untimed), then {args.reps} alternating runs each", flush=True)
        luigi_run()
        flux_run()
        luigi_times, flux_times = [], []
        for rep in range(args.reps):
            luigi_times.append(luigi_run())
            flux_times.append(flux_run())
            print(
                f"  run {rep + 1}: luigi {luigi_times[-1]:7.3f} s"
                f"   flux-engine {flux_times[-1]:7.3f} s",
                flush=True,
            )

    ratios = [lt / ft for lt, ft in zip(luigi_times, flux_times)]
    print()
    print(f"fan-in DAG: {LEAVES} leaves + 1 sink = {TASKS} tasks, 2 workers each")
    print(f"{'':<22} {'median s':>9} {'min s':>8} {'max s':>8} {'tasks/s':>9}")
    for name, times in ((f"luigi {version}", luigi_times), ("flux-engine", flux_times)):
        med = statistics.median(times)
        print(
            f"{name:<22} {med:>9.3f} {min(times):>8.3f} {max(times):>8.3f}"
            f" {TASKS / med:>9.0f}"
        )
    print(
        f"median of pairwise ratios (luigi s / flux s): {statistics.median(ratios):.1f}x"
        f"  (min {min(ratios):.1f}x, max {max(ratios):.1f}x)"
    )


if __name__ == "__main__":
    main()
