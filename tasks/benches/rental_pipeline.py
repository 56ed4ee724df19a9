#!/usr/bin/env python3
"""Benchmark: the whole rental pipeline under flux-engine vs. cold spark-submit per job.

A (baseline): what public implementations of this pipeline do, one cold `spark-submit` per
PySpark job, run one after the other as Step Functions runs EMR steps: rental_clean.py, then
rental_vehicle_location_metrics.py, then rental_user_transaction_metrics.py. Spark work only:
no ingest, crawler, queries or report.

B (flux-engine, JVM Spark, cold): `flux-engine --spark spark run dags/rental.toml --param
input_dir=DATA` in a fresh state dir: ingest, the three jobs on one Spark Connect server that the
run starts (counted), the crawler, the queries and gates, the report.

C (flux-engine, JVM Spark, warm): the same run in a state dir where `flux-engine spark start`
keeps a Spark Connect server between runs, as during development: started once before the reps
with one untimed warm-up run whose time is not counted; the kept server's memory is counted with
each run's. Each rep still writes a fresh bucket and catalog.

D and E: B and C on Sail (`--spark sail`): Sail's Spark Connect server, no JVM.

A, B, C, D and E alternate (A B C D E A B C D E ...), each run a fresh process tree; medians are
printed with min and max, and the ratios to A are taken pair by pair (within a rep) so that drift
of a shared machine cancels out. Peak memory is the largest sum of RSS over the process tree,
sampled every 0.2 s. With --scale, generated data and only the cold runs B and D (the target
compares Sail with the JVM Spark there).

    cargo build --release
    python3 tasks/benches/rental_pipeline.py [--data ../shared/data/rental] [--reps 3]
    python3 tasks/benches/rental_pipeline.py --scale 1000000 --reps 1   # generated data, B and D
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "release" / "flux-engine"
    if not path.is_file():
        sys.exit(f"{path} not found: run `cargo build --release` first (same CARGO_TARGET_DIR)")
    return path


def spark_submit() -> str:
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "bin" / "spark-submit").is_file():
        return str(Path(home) / "bin" / "spark-submit")
    found = shutil.which("spark-submit")
    if found:
        return found
    try:
        import pyspark  # noqa: F401  (the pip package ships bin/spark-submit)

        return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    except ImportError:
        sys.exit("no spark-submit: install pyspark (pip install -r pyspark/requirements.txt)")


def tree_rss_kib(root_pid: int) -> int:
    """Sum of RSS of root_pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry)] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def timed(
    commands: list[list[str]], env: dict, log: Path, also: list[int] | None = None
) -> tuple[float, int, bool]:
    """Runs commands one after another; returns wall seconds, peak tree RSS (KiB), success.
    The process trees of the pids in `also` (a kept server) count with each command's.
    """
    peak = 0
    start = time.monotonic()
    ok = True
    with open(log, "ab") as out:
        for command in commands:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=REPO)
            done = threading.Event()

            def sample(pid=proc.pid):
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, sum(tree_rss_kib(p) for p in [pid, *(also or [])]))
                    done.wait(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            rc = proc.wait()
            done.set()
            sampler.join()
            if rc != 0:
                ok = False
                break
    return time.monotonic() - start, peak, ok


def baseline_commands(data: Path, work: Path) -> list[list[str]]:
    submit = spark_submit()
    py = REPO / "pyspark"
    common = [
        submit,
        "--master",
        "local[*]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        "spark.sql.shuffle.partitions=8",
        "--py-files",
        str(py / "rental_common.py"),
    ]
    out = f"file://{work}"
    return [
        common
        + [
            str(py / "rental_clean.py"),
            "--raw",
            f"file://{data.resolve()}/",
            "--output",
            f"{out}/processed/clean",
            "--quarantine",
            f"{out}/processed/quarantine",
            "--counts-out",
            f"{work}/counts.json",
        ],
        common
        + [
            str(py / "rental_vehicle_location_metrics.py"),
            "--processed",
            f"{out}/processed/clean",
            "--output",
            f"{out}/processed/vehicle_location",
        ],
        common
        + [
            str(py / "rental_user_transaction_metrics.py"),
            "--processed",
            f"{out}/processed/clean",
            "--output",
            f"{out}/processed/user_transaction",
        ],
    ]


def flux_commands(data: Path, state: Path, backend: str) -> list[list[str]]:
    return [
        [
            str(binary()),
            "--state-dir",
            str(state),
            "--spark",
            backend,
            "run",
            str(REPO / "dags" / "rental.toml"),
            "--param",
            f"input_dir={data.resolve()}",
        ]
    ]


def summary(values: list[float], digits: int = 1) -> str:
    f = f"8.{digits}f"
    return f"median {statistics.median(values):{f}}   min {min(values):{f}}   max {max(values):{f}}"


def kept_server_pid(state: Path) -> int | None:
    """The pid of the server `flux-engine spark start` keeps for `state`."""
    try:
        return json.loads((state / "spark" / "server.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


# The flux-engine variants: (letter, description, backend, warm).
FLUX_VARIANTS = [
    ("B", "flux-engine, JVM Spark, cold", "spark", False),
    ("C", "flux-engine, JVM Spark, warm", "spark", True),
    ("D", "flux-engine, Sail, cold", "sail", False),
    ("E", "flux-engine, Sail, warm", "sail", True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "rental"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--scale",
        type=int,
        help="generate this many transactions and time the cold runs only (B and D)",
    )
    args = parser.parse_args()

    env = dict(os.environ)
    for name in ("FLUX_HOME", "FLUX_SPARK_MODE", "FLUX_SPARK_BACKEND"):
        env.pop(name, None)
    keep = Path(tempfile.mkdtemp(prefix="flux-bench-"))
    log = keep / "bench.log"
    print(f"machine: {os.cpu_count()} cores; binary {binary()}; logs in {log}", flush=True)

    data = Path(args.data)
    if args.scale:
        data = keep / f"data-{args.scale}"
        t0 = time.monotonic()
        subprocess.run(
            [
                str(binary()),
                "sample-data",
                "--out",
                str(data),
                "--transactions",
                str(args.scale),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"generated {args.scale:,} transactions in {time.monotonic() - t0:.1f} s")
    if not (data / "rental_transactions.csv").is_file():
        sys.exit(f"no rental_transactions.csv in {data}")
    rows = sum(1 for _ in open(data / "rental_transactions.csv", "rb")) - 1
    print(f"data: {data} ({rows:,} transactions)", flush=True)

    variants = [v for v in FLUX_VARIANTS if not (args.scale and v[3])]
    times: dict[str, list[float]] = {"A": []}
    memory: dict[str, list[float]] = {"A": []}
    for letter, _, backend, warm in variants:
        times[letter], memory[letter] = [], []
        if warm:
            # The kept server: started once, then one untimed warm-up run.
            state = keep / f"warm-{backend}"
            subprocess.run(
                [
                    str(binary()),
                    "--state-dir",
                    str(state),
                    "--spark",
                    backend,
                    "spark",
                    "start",
                ],
                check=True,
                env=env,
            )
            _, _, ok = timed(flux_commands(data, state, backend), env, log)
            if not ok:
                sys.exit(f"the {backend} warm-up run failed: see {log}")
    try:
        for rep in range(args.reps):
            if not args.scale:
                work = keep / f"baseline-{rep}"
                seconds, peak, ok = timed(baseline_commands(data, work), env, log)
                shutil.rmtree(work, ignore_errors=True)
                if not ok:
                    sys.exit(f"baseline run {rep} failed: see {log}")
                times["A"].append(seconds)
                memory["A"].append(peak / 1024)
                print(
                    f"rep {rep}: A cold spark-submit x3            {seconds:7.1f} s  peak {peak/1024:7.0f} MiB",
                    flush=True,
                )
            for letter, description, backend, warm in variants:
                if warm:
                    state = keep / f"warm-{backend}"
                    for sub in (
                        "s3",
                        "catalog",
                    ):  # a fresh bucket and catalog, the same server
                        shutil.rmtree(state / sub, ignore_errors=True)
                    # The kept server's memory counts with the run's.
                    server = kept_server_pid(state)
                    extra = [server] if server else []
                else:
                    state = keep / f"flux-{letter}-{rep}"
                    extra = []
                seconds, peak, ok = timed(flux_commands(data, state, backend), env, log, extra)
                if not warm:
                    shutil.rmtree(state, ignore_errors=True)
                if not ok:
                    sys.exit(f"{description} run {rep} failed: see {log}")
                times[letter].append(seconds)
                memory[letter].append(peak / 1024)
                print(
                    f"rep {rep}: {letter} {description:<30} {seconds:7.1f} s  peak {peak/1024:7.0f} MiB",
                    flush=True,
                )
    finally:
        for _, _, backend, warm in variants:
            if warm:
                subprocess.run(
                    [
                        str(binary()),
                        "--state-dir",
                        str(keep / f"warm-{backend}"),
                        "spark",
                        "stop",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )

    print()
    if times["A"]:
        print(f"A  cold spark-submit per job (3 jobs)      wall s  {summary(times['A'])}")
        print(f"                                           MiB     {summary(memory['A'], 0)}")
    for letter, description, _, warm in variants:
        what = "ingest to report" + (", kept server counted" if warm else "")
        print(f"{letter}  {description:<38} wall s  {summary(times[letter])}   ({what})")
        print(f"                                           MiB     {summary(memory[letter], 0)}")

    def pairwise(top: str, bottom: str) -> list[float]:
        return [t / b for t, b in zip(times[top], times[bottom])]

    if times["A"]:
        for letter, _, _, _ in variants:
            print(
                f"{letter}/A (pairwise)                                     {summary(pairwise(letter, 'A'), 2)}"
            )
        print("targets: D/A <= 0.15 (Sail cold), E/A <= 0.08 (Sail warm)")
    else:
        print(
            f"D/B (pairwise)                                     {summary(pairwise('D', 'B'), 2)}"
        )
        print("target: D/B <= 0.25 (Sail against the JVM Spark, both cold)")


if __name__ == "__main__":
    main()
