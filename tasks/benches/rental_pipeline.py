#!/usr/bin/env python3
"""Benchmark: the whole rental pipeline under flux-engine vs. cold spark-submit per job.

A (baseline): what public implementations of this pipeline do, one cold `spark-submit` per
PySpark job, run one after the other as Step Functions runs EMR steps: rental_clean.py, then
rental_vehicle_location_metrics.py, then rental_user_transaction_metrics.py. Spark work only:
no ingest, crawler, queries or report.

B (flux-engine, cold): `flux-engine run dags/rental.toml --param input_dir=DATA` in a fresh state
dir: ingest, the three jobs on one Spark Connect server that the run starts (counted), the
crawler, the queries and gates, the report.

C (flux-engine, warm): the same run in a state dir where `flux-engine spark start` keeps a Spark
Connect server between runs, as during development: started once before the reps with one
untimed warm-up run, not counted. Each rep still writes a fresh bucket and catalog.

A, B and C alternate (A B C A B C ...), each run a fresh process tree; medians are printed with min and
max, and the B/A ratio is taken pair by pair so that drift of a shared machine cancels out.
Peak memory is the largest sum of RSS over the process tree, sampled every 0.2 s.

    cargo build --release
    python3 tasks/benches/rental_pipeline.py [--data ../shared/data/rental] [--reps 3]
    python3 tasks/benches/rental_pipeline.py --scale 1000000 --reps 1   # generated data, B only
"""

from __future__ import annotations

import argparse
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


def timed(commands: list[list[str]], env: dict, log: Path) -> tuple[float, int, bool]:
    """Runs commands one after another; returns wall seconds, peak tree RSS (KiB), success."""
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
                    peak = max(peak, tree_rss_kib(pid))
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


def flux_commands(data: Path, state: Path) -> list[list[str]]:
    return [
        [
            str(binary()),
            "--state-dir",
            str(state),
            "run",
            str(REPO / "dags" / "rental.toml"),
            "--param",
            f"input_dir={data.resolve()}",
        ]
    ]


def summary(values: list[float], digits: int = 1) -> str:
    f = f"8.{digits}f"
    return f"median {statistics.median(values):{f}}   min {min(values):{f}}   max {max(values):{f}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "rental"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--scale", type=int, help="generate this many transactions and time flux-engine only"
    )
    args = parser.parse_args()

    env = dict(os.environ)
    env.pop("FLUX_HOME", None)
    env.pop("FLUX_SPARK_MODE", None)
    keep = Path(tempfile.mkdtemp(prefix="flux-bench-"))
    log = keep / "bench.log"
    print(f"machine: {os.cpu_count()} cores; logs in {log}", flush=True)

    data = Path(args.data)
    if args.scale:
        data = keep / f"data-{args.scale}"
        t0 = time.monotonic()
        subprocess.run(
            [str(binary()), "sample-data", "--out", str(data), "--transactions", str(args.scale)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"generated {args.scale:,} transactions in {time.monotonic() - t0:.1f} s")
    if not (data / "rental_transactions.csv").is_file():
        sys.exit(f"no rental_transactions.csv in {data}")
    rows = sum(1 for _ in open(data / "rental_transactions.csv", "rb")) - 1
    print(f"data: {data} ({rows:,} transactions)", flush=True)

    base_t, base_m, flux_t, flux_m, ratios = [], [], [], [], []
    warm_t, warm_m, warm_ratios = [], [], []
    warm_state = keep / "warm"
    if not args.scale:
        subprocess.run(
            [str(binary()), "--state-dir", str(warm_state), "spark", "start"], check=True, env=env
        )
        _, _, ok = timed(flux_commands(data, warm_state), env, log)
        if not ok:
            sys.exit(f"the warm-up run failed: see {log}")
    for rep in range(args.reps):
        if not args.scale:
            work = keep / f"baseline-{rep}"
            seconds, peak, ok = timed(baseline_commands(data, work), env, log)
            shutil.rmtree(work, ignore_errors=True)
            if not ok:
                sys.exit(f"baseline run {rep} failed: see {log}")
            base_t.append(seconds)
            base_m.append(peak / 1024)
            print(
                f"rep {rep}: A cold spark-submit x3   {seconds:7.1f} s  peak {peak/1024:7.0f} MiB",
                flush=True,
            )
        state = keep / f"flux-{rep}"
        seconds, peak, ok = timed(flux_commands(data, state), env, log)
        shutil.rmtree(state, ignore_errors=True)
        if not ok:
            sys.exit(f"flux-engine run {rep} failed: see {log}")
        flux_t.append(seconds)
        flux_m.append(peak / 1024)
        print(
            f"rep {rep}: B flux-engine run (all)  {seconds:7.1f} s  peak {peak/1024:7.0f} MiB",
            flush=True,
        )
        if base_t:
            ratios.append(flux_t[-1] / base_t[-1])
        if not args.scale:
            for sub in ("s3", "catalog"):  # a fresh bucket and catalog, the same server
                shutil.rmtree(warm_state / sub, ignore_errors=True)
            seconds, peak, ok = timed(flux_commands(data, warm_state), env, log)
            if not ok:
                sys.exit(f"flux-engine warm run {rep} failed: see {log}")
            warm_t.append(seconds)
            warm_m.append(peak / 1024)
            warm_ratios.append(seconds / base_t[-1])
            print(
                f"rep {rep}: C flux-engine run, warm   {seconds:7.1f} s  (server memory not counted)",
                flush=True,
            )

    print()
    if base_t:
        print(f"A  cold spark-submit per job (3 jobs)   wall s  {summary(base_t)}")
        print(f"                                        MiB     {summary(base_m)}")
    print(f"B  flux-engine, ingest to report        wall s  {summary(flux_t)}")
    print(f"                                        MiB     {summary(flux_m)}")
    if warm_t:
        print(f"C  flux-engine, warm Spark, all tasks   wall s  {summary(warm_t)}")
    if ratios:
        print(f"B/A (pairwise)                                  {summary(ratios, 2)}")
    if warm_ratios:
        print(f"C/A (pairwise)                                  {summary(warm_ratios, 2)}")
    if not args.scale:
        subprocess.run([str(binary()), "--state-dir", str(warm_state), "spark", "stop"], env=env)
        print("target: the whole pipeline in at most half the baseline's time (ratio <= 0.50)")


if __name__ == "__main__":
    main()
