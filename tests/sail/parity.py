"""Compare the tables two flux-engine state dirs published for the rental DAG, row for row.

Usage: parity.py STATE_A STATE_B [--drop-a-row TABLE]

Every Parquet table under s3/<bucket>/processed/ (the clean tables, the quarantine, the KPI
tables) is read whole from each side, its columns sorted by name and its rows sorted, and the
two compared. Floats are compared to 9 decimal places and timestamps as UTC instants: Spark
writes Parquet timestamps without a time zone (INT96), Sail with UTC (TIMESTAMP_MICROS), and
both mean the same instant. Prints one line per table, "same" or "DIFF" with a few differing
rows, and exits 1 if any table differs or exists on one side only.

The JSON documents there (the cleaning job's counts) are compared as parsed JSON.

--drop-a-row TABLE leaves out one row of TABLE on side B before comparing: the check that the
comparison does see a one-row difference.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import pyarrow.dataset as ds


def tables(state: str) -> dict:
    """{name: folder} of every published table: a folder holding Parquet files, or its parent's
    child folders (processed/clean/users, ...). Version and lock entries start with a dot."""
    found = {}
    s3 = os.path.join(state, "s3")
    for bucket in sorted(os.listdir(s3)):
        base = os.path.join(s3, bucket, "processed")
        if not os.path.isdir(base):
            continue
        for top in sorted(os.listdir(base)):
            path = os.path.join(base, top)
            if top.startswith(".") or not os.path.isdir(path):
                continue
            names = os.listdir(path)
            if any(n.endswith(".parquet") for n in names):
                found[top] = path
                continue
            for sub in sorted(names):
                inner = os.path.join(path, sub)
                if not sub.startswith(".") and os.path.isdir(inner):
                    found[f"{top}/{sub}"] = inner
    return found


def documents(state: str) -> dict:
    """{name: parsed JSON} of the JSON files under processed/ (not in version folders)."""
    found = {}
    s3 = os.path.join(state, "s3")
    for bucket in sorted(os.listdir(s3)):
        base = os.path.join(s3, bucket, "processed")
        for folder, dirs, names in os.walk(base, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for n in names:
                if n.endswith(".json"):
                    path = os.path.join(folder, n)
                    with open(path, encoding="utf-8") as fh:
                        found[os.path.relpath(path, base)] = json.load(fh)
    return found


def normalized(value):
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, datetime.datetime):  # a pandas Timestamp is one too
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return datetime.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )
    return value


def rows(folder: str) -> tuple[list, list]:
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    columns = sorted(table.column_names)
    data = table.select(columns).to_pylist()
    keyed = [tuple(normalized(r[c]) for c in columns) for r in data]
    return columns, sorted(keyed, key=repr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--drop-a-row", metavar="TABLE")
    args = p.parse_args(argv)
    a, b = tables(args.a), tables(args.b)
    differ = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"DIFF {name}: only in {'A' if name in a else 'B'}")
            differ += 1
            continue
        columns_a, rows_a = rows(a[name])
        columns_b, rows_b = rows(b[name])
        if name == args.drop_a_row and rows_b:
            rows_b = rows_b[1:]
        if columns_a != columns_b:
            print(f"DIFF {name}: columns {columns_a} against {columns_b}")
            differ += 1
        elif rows_a != rows_b:
            only_a = [r for r in rows_a if r not in set(rows_b)][:3]
            only_b = [r for r in rows_b if r not in set(rows_a)][:3]
            print(f"DIFF {name}: {len(rows_a)} rows against {len(rows_b)}")
            print(f"  only in A: {only_a}")
            print(f"  only in B: {only_b}")
            differ += 1
        else:
            print(f"same {name}: {len(rows_a)} rows")
    docs_a, docs_b = documents(args.a), documents(args.b)
    for name in sorted(set(docs_a) | set(docs_b)):
        if docs_a.get(name) == docs_b.get(name):
            print(f"same {name}")
        else:
            print(f"DIFF {name}: {docs_a.get(name)} against {docs_b.get(name)}")
            differ += 1
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
