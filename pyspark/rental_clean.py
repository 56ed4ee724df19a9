"""Clean the four raw rental CSV files into Parquet tables, quarantining every rejected line.

Reads (CSV with a header row, RFC 4180 quoting):
    RAW/locations.csv, RAW/users.csv, RAW/vehicles.csv, RAW/rental_transactions.csv
Writes (Parquet, Snappy, mode overwrite):
    OUTPUT/locations, OUTPUT/users, OUTPUT/vehicles
    OUTPUT/rentals_clean   clean transactions + rental_hours, partitioned by rental_month (YYYY-MM)
    QUARANTINE             dataset, line_number, reason, detail, record (the original line)
    --counts-out           JSON: rows read / clean / quarantined per file, and per reason

Every data line of every file ends up either clean or in the quarantine with one reason, so
read = clean + quarantined for each file. A line holding a C0 control character other than the
line ending (NUL, TAB, ...) is quarantined as control_character, whatever else is wrong with it.

Three gates fail the job (exit status 1, "rental_clean: error: ..." naming the file):
- An empty input file fails it before anything is written, so the tables published before stay
  as they were. Empty means no data line that is not blank: 0 bytes, only blank lines (white
  space or a byte-order mark), or a header line followed by nothing or by blank lines only. An
  empty export is a broken upload, never a day without data: cleaning it would "succeed" with 0
  rows and replace the published tables with empty ones. The message names each empty file,
  says why it counts as empty, and says to put the complete file under --raw and run again.
- A file missing a required column fails it before anything is written.
- A file whose quarantined/read ratio exceeds --max-quarantine-ratio, or whose data lines are
  all quarantined (even with a limit of 1), fails it after the quarantine and counts are
  written but before the processed tables are.

Usage:
    spark-submit --py-files rental_common.py rental_clean.py \\
        --raw s3://bucket/raw --output s3://bucket/processed \\
        --quarantine s3://bucket/quarantine/rentals [--counts-out s3://bucket/counts.json] \\
        [--max-quarantine-ratio 0.05]
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import rental_common as rc


def transaction_rules():
    return (
        rc.Rule(
            "negative_amount",
            F.col("total_amount") < 0,
            F.concat(F.lit("total_amount="), F.col("total_amount").cast("string")),
        ),
        rc.Rule(
            "end_before_start",
            F.col("rental_end_time") < F.col("rental_start_time"),
            F.concat_ws(
                " < ",
                F.date_format("rental_end_time", rc.TIMESTAMP_FORMAT),
                F.date_format("rental_start_time", rc.TIMESTAMP_FORMAT),
            ),
        ),
    )


def parse_args(argv):
    p = argparse.ArgumentParser(prog="rental_clean.py", description=__doc__.splitlines()[0])
    p.add_argument("--raw", required=True, help="URI prefix holding the four raw CSV files")
    p.add_argument("--output", required=True, help="URI prefix for the processed Parquet tables")
    p.add_argument("--quarantine", required=True, help="URI of the quarantine Parquet table")
    p.add_argument("--counts-out", help="file path or URI for the counts JSON")
    p.add_argument(
        "--max-quarantine-ratio",
        type=float,
        default=0.05,
        help="fail if quarantined/read exceeds this for any file (default 0.05)",
    )
    return p.parse_args(argv)


def _clean(df):
    return df.where(F.col("reason").isNull())


def build(spark: SparkSession, raw_prefix: str, scratch: str):
    """Read and tag all four files.

    Returns {dataset name: (Dataset, tagged df, lines in file)}. The numbered lines, and then
    each tagged table, are written under `scratch` (see read_raw_files) and read back, which the
    caller deletes once the outputs are written: the counts and every output read the tagged
    tables from there instead of tagging again (a cache would do the same on Spark, but Sail's
    persist() is a no-op: each of the six writes recomputed the parsing, the joins and the
    dedupe, about half of the job's time).
    The headers of all files are checked before any row is processed, so a missing column fails
    the job before anything is written.
    """
    files = rc.read_raw_files(spark, raw_prefix, rc.DATASETS, scratch)
    numbered = {}
    rc.check_not_empty(files, raw_prefix)
    for ds in rc.DATASETS:
        raw = files[ds.file]
        header = rc.parse_header(raw.header_line)
        positions = rc.check_header(ds, header)
        numbered[ds.name] = (raw.lines, raw.total_lines, header, positions)

    tagged = {}
    for ds in (rc.LOCATIONS, rc.USERS, rc.VEHICLES):
        lines, total, header, positions = numbered[ds.name]
        df = rc.tag_rows(ds, lines, header, positions)
        tagged[ds.name] = (ds, _dedupe_once(spark, df, ds, total, scratch), total)

    ds = rc.TRANSACTIONS
    lines, total, header, positions = numbered[ds.name]
    users, vehicles, locations = (
        _clean(tagged[n][1]) for n in (rc.USERS.name, rc.VEHICLES.name, rc.LOCATIONS.name)
    )
    df = rc.tag_rows(
        ds,
        lines,
        header,
        positions,
        transaction_rules(),
        [
            rc.Reference("user_id", users, "user_id", "unknown_user"),
            rc.Reference("vehicle_id", vehicles, "vehicle_id", "unknown_vehicle"),
            rc.Reference("pickup_location", locations, "location_id", "unknown_pickup_location"),
            rc.Reference("dropoff_location", locations, "location_id", "unknown_dropoff_location"),
        ],
    )
    tagged[ds.name] = (ds, _dedupe_once(spark, df, ds, total, scratch), total)
    return tagged


def _dedupe_once(spark: SparkSession, rows, ds, total: int, scratch: str):
    """The tagged rows with duplicate keys marked, computed once and read back from scratch.

    The rows are written before the dedupe too: its aggregate and join both read them, and
    Sail, unlike Spark, does not reuse a shuffle two branches of a plan share, so each branch
    would parse every line again (9.7 s of 1,000,000 vehicles, 6.6 s with this write).
    """
    rows = rc.materialise(spark, rows, rc.join_uri(scratch, f"parsed_{ds.name}"))
    rows = rc.dedupe(rows, ds.key, rc.partitions_for(total))
    return rc.materialise(spark, rows, rc.join_uri(scratch, f"tagged_{ds.name}"))


def count(tagged) -> dict:
    """Counts per file and per reason; checks read = clean + quarantined for every file."""
    per_file = None
    for ds, df, _ in tagged.values():
        part = df.groupBy("reason").agg(F.count(F.lit(1)).alias("n"))
        part = part.select(F.lit(ds.file).alias("file"), "reason", "n")
        per_file = part if per_file is None else per_file.unionByName(part)
    rows = per_file.collect()

    files, reasons, by_file = {}, {}, {}
    for ds, _, total_lines in tagged.values():
        per_reason = {r["reason"]: r["n"] for r in rows if r["file"] == ds.file}
        read = total_lines - 1
        clean = per_reason.pop(None, 0)
        quarantined = sum(per_reason.values())
        if read != clean + quarantined:
            raise rc.JobError(
                f"{ds.file}: internal accounting error: read {read} != "
                f"clean {clean} + quarantined {quarantined}"
            )
        files[ds.file] = {"read": read, "clean": clean, "quarantined": quarantined}
        by_file[ds.file] = dict(sorted(per_reason.items()))
        for reason, n in per_reason.items():
            reasons[reason] = reasons.get(reason, 0) + n
    return {
        "files": files,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "quarantine_reasons_by_file": by_file,
    }


def print_counts(counts: dict) -> None:
    print(f"{'file':<28}{'read':>10}{'clean':>10}{'quarantined':>13}")
    for name, c in counts["files"].items():
        print(f"{name:<28}{c['read']:>10}{c['clean']:>10}{c['quarantined']:>13}")
    for reason, n in counts["quarantine_reasons"].items():
        print(f"quarantined {reason}: {n}")
    sys.stdout.flush()


def check_ratios(counts: dict, limit: float) -> None:
    for name, c in counts["files"].items():
        ratio = c["quarantined"] / c["read"] if c["read"] else 0.0
        if ratio > limit:
            raise rc.JobError(
                f"{name}: quarantined {c['quarantined']} of {c['read']} rows, ratio {ratio:.4f} "
                f"exceeds --max-quarantine-ratio {limit}; processed output not written"
            )


def check_some_clean(counts: dict) -> None:
    """Fail if a file with data lines has no clean one, whatever the ratio limit.

    Even with --max-quarantine-ratio 1, a file whose every line is quarantined would publish an
    empty table over the previous good one (issue 11): that is a broken export, not a day
    without data.
    """
    for name, c in counts["files"].items():
        if c["read"] and not c["clean"]:
            raise rc.JobError(
                f"{name}: none of its {c['read']} data lines is clean (all quarantined, see the "
                "quarantine for why); processed output not written, so the tables published "
                "before are unchanged"
            )


def run(spark: SparkSession, args) -> dict:
    # The numbered lines go under the output prefix, in a folder of their own that is deleted
    # at the end whatever happens (on EMR as on the local engine, where the output prefix is a
    # staging folder discarded if the job fails).
    scratch = rc.Scratch(spark, args.output, "numbered_lines")
    try:
        tagged = build(spark, args.raw, scratch.uri)
        counts = count(tagged)
        print_counts(counts)
        write_outputs(spark, args, tagged, counts)
        return counts
    finally:
        scratch.close()


def write_outputs(spark: SparkSession, args, tagged, counts) -> None:
    quarantine = None
    for ds, df, _ in tagged.values():
        q = df.where(F.col("reason").isNotNull()).select(
            F.lit(ds.file).alias("dataset"), "line_number", "reason", "detail", "record"
        )
        quarantine = q if quarantine is None else quarantine.unionByName(q)
    quarantine = quarantine.select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in rc.QUARANTINE_SCHEMA.fields]
    )
    rc.write_parquet(quarantine.coalesce(1), args.quarantine)
    if args.counts_out:
        rc.write_text_file(spark, args.counts_out, rc.to_json(counts))

    check_ratios(counts, args.max_quarantine_ratio)
    check_some_clean(counts)

    for ds in (rc.LOCATIONS, rc.USERS, rc.VEHICLES):
        df = _clean(tagged[ds.name][1]).select(*ds.column_names)
        rc.write_parquet(df.coalesce(1), rc.join_uri(args.output, ds.name))

    ds = rc.TRANSACTIONS
    rentals = (
        _clean(tagged[ds.name][1])
        .select(*ds.column_names)
        .withColumn(
            "rental_hours",
            (F.unix_timestamp("rental_end_time") - F.unix_timestamp("rental_start_time"))
            / F.lit(3600.0),
        )
        .withColumn("rental_month", F.date_format("rental_start_time", "yyyy-MM"))
    )
    rc.write_parquet(
        rentals.repartition("rental_month"),
        rc.join_uri(args.output, ds.name),
        partition_by="rental_month",
    )


def main(argv=None, spark: SparkSession | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not 0 <= args.max_quarantine_ratio <= 1:
        raise rc.JobError("--max-quarantine-ratio must be between 0 and 1")
    with rc.job_session("rental_clean", spark) as session:
        return run(session, args)


if __name__ == "__main__":
    try:
        main()
    except rc.JobError as exc:
        print(f"rental_clean: error: {exc}", file=sys.stderr)
        sys.exit(1)
