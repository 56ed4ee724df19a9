"""Shared definitions for the rental PySpark jobs: file specs, schemas, line-level CSV parsing.

This module is imported as a plain top-level module by rental_clean.py and the two metric jobs
(on EMR it is shipped with ``--py-files rental_common.py``). It reads and writes nothing itself.

Everything here uses only the stable DataFrame API and SQL functions present in Spark 3.5 and 4.x
(``try_cast`` and ``try_to_timestamp`` through ``F.expr``), so the jobs behave the same whether
ANSI mode is on (the Spark 4 default) or off (the Spark 3.5 default).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"
DATE_FORMAT = "yyyy-MM-dd"

# Strict shapes checked before any cast, so that Java's lenient number parsing ("1d", "0x1p3",
# "Infinity") and partial dates never pass as valid values.
NUMBER_RE = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
INTEGER_RE = r"^[+-]?[0-9]+$"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TIMESTAMP_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"

# A quoted field: starts at the line start or after a comma; a quote inside it is doubled
# (RFC 4180). Each is replaced by QUOTED_MARK, which leaves only unquoted text, in which every
# comma is a field separator and any remaining quote is malformed; so is a mark followed by
# anything but a comma (text after the closing quote). No look-ahead: Sail's regular expressions
# (Rust's) have none, and the jobs run on Spark and on Sail alike.
QUOTED_FIELD_RE = r'(^|,)"(?:[^"]|"")*"'
# U+0001 cannot be in a line that gets this far: control characters are quarantined first.
QUOTED_MARK = "\x01"

# One field of a CSV line: a quoted field (quotes doubled inside) or the text up to the next
# comma. Each match starts at the comma before its field (one is put before the line), so no
# match is empty and a leading empty field is not lost. Fields are split with this rather than
# from_csv, which Sail implements without quoting. No capture group: the whole match is taken,
# comma included, because extracting a group is slower on Sail (3.2 s against 1.9 s for
# 1,000,000 vehicle lines).
CSV_FIELD_RE = r',(?:"(?:[^"]|"")*"|[^,]*)'

# C0 control characters other than the line ending (LF and CR never reach a line: the text reader
# ends lines at them). A NUL inside an id passes every other check yet makes an id that looks
# equal to another and is not, so a line holding any of these is quarantined (control_character).
# TAB is included: no column of these files is free text where a TAB carries meaning, and Spark's
# trim() keeps it, so "u1<TAB>" would otherwise be a user id of its own.
CONTROL_RE = r"[\x00-\x09\x0B\x0C\x0E-\x1F]"

# A line holding nothing but white space (or a byte-order mark) is blank. Used in Spark (Java
# regex) and in Python (re): the class is spelled out so that both read it the same way.
BLANK_LINE_RE = r"^[ \t\r\n\x0B\f\ufeff]*$"

SPARK_TYPES = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "double": T.DoubleType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
}


class JobError(Exception):
    """A failure the job reports with a message and a non-zero exit, not a stack trace."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = "string"  # one of SPARK_TYPES
    required: bool = False  # a null/blank value quarantines the row
    missing_reason: str = "missing_field"
    bad_reason: str = "bad_value"


@dataclass(frozen=True)
class Dataset:
    name: str  # output table name
    file: str  # raw file name under --raw
    key: str
    columns: tuple = field(default_factory=tuple)

    @property
    def column_names(self) -> list:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> T.StructType:
        return T.StructType(
            [T.StructField(c.name, SPARK_TYPES[c.kind], True) for c in self.columns]
        )


def _key(name: str, kind: str = "string") -> Column:
    return Column(name, kind, required=True, missing_reason="missing_key", bad_reason="bad_key")


LOCATIONS = Dataset(
    name="locations",
    file="locations.csv",
    key="location_id",
    columns=(
        _key("location_id", "int"),
        Column("location_name"),
        Column("address"),
        Column("city"),
        Column("state"),
        Column("zip_code"),  # string: zip codes keep their leading zeros
        Column("latitude", "double"),
        Column("longitude", "double"),
    ),
)

USERS = Dataset(
    name="users",
    file="users.csv",
    key="user_id",
    columns=(
        _key("user_id"),
        Column("first_name"),
        Column("last_name"),
        Column("email"),
        Column("phone_number"),
        Column("driver_license_number"),
        Column("driver_license_expiry", "date"),
        Column("creation_date", "date"),
        Column("is_active", "int"),
    ),
)

VEHICLES = Dataset(
    name="vehicles",
    file="vehicles.csv",
    key="vehicle_id",
    columns=(
        Column("active", "int"),
        Column("vehicle_license_number"),
        Column("registration_name"),
        Column("license_type"),
        Column("expiration_date", "date"),
        Column("permit_license_number"),
        Column("certification_date", "date"),
        Column("vehicle_year", "int"),
        Column("base_telephone_number"),
        Column("base_address"),
        _key("vehicle_id"),
        Column("last_update_timestamp", "timestamp"),
        Column("brand"),
        Column("vehicle_type"),
    ),
)


def _req(name: str, kind: str = "string", bad_reason: str = "bad_value") -> Column:
    return Column(name, kind, required=True, missing_reason="missing_field", bad_reason=bad_reason)


TRANSACTIONS = Dataset(
    name="rentals_clean",
    file="rental_transactions.csv",
    key="rental_id",
    columns=(
        _req("rental_id"),
        _req("user_id"),
        _req("vehicle_id"),
        _req("rental_start_time", "timestamp", "bad_timestamp"),
        _req("rental_end_time", "timestamp", "bad_timestamp"),
        _req("pickup_location", "int", "bad_location_id"),
        _req("dropoff_location", "int", "bad_location_id"),
        _req("total_amount", "double", "bad_amount"),
    ),
)

DATASETS = (LOCATIONS, USERS, VEHICLES, TRANSACTIONS)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("dataset", T.StringType(), False),
        T.StructField("line_number", T.LongType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("detail", T.StringType(), True),
        T.StructField("record", T.StringType(), True),
    ]
)


# --------------------------------------------------------------------------------------------
# Session and path helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def job_session(app_name: str, spark: SparkSession | None = None):
    """The given session, or the active one, or a new one that is stopped at the end.

    Inside, the session time zone is UTC (see utc_session).
    """
    own = spark is None and SparkSession.getActiveSession() is None
    if spark is None:
        spark = SparkSession.builder.appName(app_name).getOrCreate()
    try:
        with utc_session(spark):
            yield spark
    finally:
        if own:
            spark.stop()


@contextlib.contextmanager
def utc_session(spark: SparkSession):
    """Run with the session time zone set to UTC, restoring the caller's setting afterwards.

    The raw timestamps carry no zone. The jobs read them as UTC so that durations never gain or
    lose an hour at a daylight-saving change and dates/months are the ones written in the file.
    """
    key = "spark.sql.session.timeZone"
    previous = spark.conf.get(key)
    spark.conf.set(key, "UTC")
    try:
        yield
    finally:
        spark.conf.set(key, previous)


def join_uri(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/")] + [p.strip("/") for p in parts])


def require_local_path(uri: str) -> None:
    """Fail as Spark does on a local input that does not exist. Sail reads a missing path as an
    empty table with no columns; a job that went on would publish empty KPIs over good ones."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") and not os.path.exists(unquote(parsed.path) or uri):
        raise JobError(f"cannot read {uri}: [PATH_NOT_FOUND] Path does not exist: {uri}")


def read_parquet(spark: SparkSession, uri: str) -> DataFrame:
    require_local_path(uri)
    try:
        return spark.read.parquet(uri)
    except Exception as exc:  # path not found, access denied, ...
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise JobError(f"cannot read {uri}: {first}") from exc


def write_parquet(df: DataFrame, uri: str, partition_by: str | None = None) -> None:
    writer = df.write.mode("overwrite").option("compression", "snappy")
    if partition_by:
        writer = writer.partitionBy(partition_by)
    writer.parquet(uri)
    if not partition_by:
        _keep_schema_of_empty(df, uri)


def _keep_schema_of_empty(df: DataFrame, uri: str) -> None:
    """Spark writes an empty DataFrame as one Parquet file holding only the schema, so the
    table exists (an empty quarantine is the usual case). Sail writes nothing at all, and the
    crawler would then find no table: for a local target left without a Parquet file, write
    the schema-only file here (pyarrow comes with the Spark Connect client)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return
    path = parsed.path if parsed.scheme == "file" else uri
    for _, _, names in os.walk(path):
        if any(n.endswith(".parquet") for n in names):
            return
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema

    os.makedirs(path, exist_ok=True)
    empty = pa.Table.from_batches([], schema=to_arrow_schema(df.schema))
    pq.write_table(
        empty, os.path.join(path, "part-00000-empty.snappy.parquet"), compression="snappy"
    )


def write_text_file(spark: SparkSession, target: str, text: str) -> None:
    """Write one small text file to a local path, a file:// URI or any Hadoop URI (s3://...)."""
    parsed = urlparse(target)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # 1 letter: a Windows drive
        path = parsed.path if parsed.scheme == "file" else target
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(target)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = fs.create(hadoop_path, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _local_path(uri: str) -> str | None:
    """The local path of a plain path, a file:// URI or a Windows drive path; None otherwise."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)  # file:///tmp/with%20space is /tmp/with space
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # 1 letter: a Windows drive
        return uri
    return None


def delete_tree(spark: SparkSession, uri: str) -> None:
    """Delete a folder and everything in it: a local path, a file:// URI or any Hadoop URI."""
    path = _local_path(uri)
    if path is not None:
        if os.path.exists(path):
            shutil.rmtree(path)
        return
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    fs.delete(hadoop_path, True)


def materialise(spark: SparkSession, df: DataFrame, uri: str) -> DataFrame:
    """Write df to Parquet at uri and read it back: computed once, whatever reads it later."""
    write_parquet(df, uri)
    return spark.read.parquet(uri)


class Scratch:
    """A folder of the job's own, ``PARENT/_NAME-<random>``, for data it materialises while it
    runs. close() deletes it, and with it the local folders above it, up to PARENT, that it
    created and that are still empty: a job that fails before writing its outputs leaves
    nothing behind. The name starts with "_", which Spark's readers and the crawler skip."""

    def __init__(self, spark: SparkSession, parent: str, name: str):
        self.spark = spark
        self.uri = join_uri(parent, f"_{name}-{uuid.uuid4().hex[:12]}")
        self._created = None  # the highest local folder that creating the scratch creates
        path = _local_path(self.uri)
        if path is not None:
            path = os.path.abspath(path)
            while not os.path.exists(path) and os.path.dirname(path) != path:
                self._created, path = path, os.path.dirname(path)

    def close(self) -> None:
        try:
            delete_tree(self.spark, self.uri)
        except Exception as exc:  # never hide the job's own outcome behind this
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            print(f"warning: cannot delete the scratch folder {self.uri}: {first}", file=sys.stderr)
            return
        if self._created is None:
            return
        path = os.path.dirname(os.path.abspath(_local_path(self.uri)))
        while len(path) >= len(self._created):
            try:
                os.rmdir(path)  # only an empty folder
            except OSError:
                return
            path = os.path.dirname(path)


# --------------------------------------------------------------------------------------------
# Reading a raw CSV file line by line
# --------------------------------------------------------------------------------------------


@dataclass
class RawFile:
    uri: str
    lines: DataFrame | None  # line_number (1 = header), record; None for a file of 0 bytes
    total_lines: int
    header_line: str
    content_lines: int  # lines that are not blank (BLANK_LINE_RE), the header included


def read_raw_files(spark: SparkSession, raw_prefix: str, datasets, scratch: str) -> dict:
    """Read the raw files as numbered text lines. Returns {file: RawFile}.

    Spark splits a large file into blocks read by different tasks, one partition each, in file
    order. Each row gets its partition (``spark_partition_id``) and an id that increases in
    read order within its partition (``monotonically_increasing_id``), so (block, id) is the
    file order; a count per block turns it into line numbers without moving all rows to one
    partition.

    Both ids are nondeterministic: each plan that reads the scan may compute them again, and
    not necessarily the same way. So they are computed once, in one job per file that writes
    (record, block, id) as Parquet under `scratch` (a URI prefix), and the block counts and
    the line numbers are both derived from that copy. A cache would not do: Sail's persist()
    is a no-op, and a run whose later plans renumbered a file lost rows (issue 14). Delete
    `scratch` once everything derived from the lines is written.
    """
    uris = {ds.file: join_uri(raw_prefix, ds.file) for ds in datasets}
    for uri in uris.values():
        require_local_path(uri)
    try:
        # One scan per file, so that a row's partition is a block of its own file, in file
        # order: the block is the partition id, where Spark's hidden _metadata columns (which
        # Sail, a Spark Connect server on DataFusion, lacks) would otherwise be needed. Each
        # file stays a plan of its own, never a union: Sail numbers the partitions of a union
        # across its inputs, so a row's partition id would depend on the plan reading it.
        # Lines end at LF, and a CR before it is dropped here: Spark's reader would split at CR
        # too, but Sail's, splitting at either, makes an empty line of a CRLF that falls across
        # two of its batches. (A file whose lines end in a lone CR, no LF, is one long line.)
        record = F.col("value")
        record = F.when(record.endswith("\r"), F.expr("substring(value, 1, length(value) - 1)"))
        scans = {}
        for name, uri in uris.items():
            target = join_uri(scratch, name)
            numbered = (
                spark.read.option("lineSep", "\n")
                .text(uri)
                .select(
                    record.otherwise(F.col("value")).alias("record"),
                    F.spark_partition_id().alias("_blk"),
                    F.monotonically_increasing_id().alias("_mid"),
                )
            )
            write_parquet(numbered, target)
            scans[name] = spark.read.parquet(target)
        blocks = []
        for name, scan in scans.items():
            stats = scan.groupBy("_blk").agg(
                F.count(F.lit(1)).alias("_n"),
                F.min("_mid").alias("_m0"),
                F.min_by("record", "_mid").alias("_first"),
                F.count(F.when(~F.col("record").rlike(BLANK_LINE_RE), True)).alias("_content"),
            )
            blocks += [
                (name, r["_blk"], r["_n"], r["_m0"], r["_first"], r["_content"])
                for r in stats.collect()
            ]
        blocks.sort()
    except Exception as exc:  # path not found, access denied, ...
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise JobError(f"cannot read the raw files under {raw_prefix}: {first}") from exc

    files = {}
    for ds in datasets:
        name, uri = ds.file, uris[ds.file]
        mine = [b for b in blocks if b[0] == name]
        if not mine:  # a file of 0 bytes has no line at all; check_not_empty says so
            files[name] = RawFile(uri, None, 0, "", 0)
            continue
        mine = in_file_order(ds, mine, uri)
        # line_number = lines in earlier blocks + position in this block + 1
        offsets, before = [], 0
        for _, blk, n, m0, _, _ in mine:
            offsets += [F.lit(blk), F.lit(before - m0 + 1)]
            before += n
        line_number = F.col("_mid") + F.create_map(*offsets)[F.col("_blk")]
        lines = scans[name].select(line_number.alias("line_number"), "record")
        content = sum(b[5] for b in mine)
        files[name] = RawFile(uri, lines, before, mine[0][4], content)
    return files


def in_file_order(dataset: Dataset, blocks: list, uri: str = "") -> list:
    """The blocks of one file (tuples whose [4] is the block's first line), in file order.

    They come sorted by block id, which on Spark is the file's order. On Sail it may not be:
    DataFusion's file streams hand the byte ranges of a file to whichever partition asks
    first (work stealing), so the block holding the file's start can have any id. That block
    is told by its first line, the header: when the lowest block does not start with a line
    holding the dataset's columns and exactly one other block does, that one is put first.
    This puts a file read in two blocks in order. Of a file read in more (Sail splits a file
    of 1 MB or more into as many ranges as the server has cores), nothing tells the order of
    the blocks after the first: a warning says so, as the line numbers past the first block
    may then not be the file's.
    """

    def starts_with_header(block) -> bool:
        try:
            check_header(dataset, parse_header(block[4]))
            return True
        except (JobError, csv.Error):
            return False

    if len(blocks) < 2 or starts_with_header(blocks[0]):
        return blocks
    starts = [b for b in blocks[1:] if starts_with_header(b)]
    if len(starts) != 1:
        return blocks  # no header anywhere: check_header reports the first line
    first = starts[0]
    if len(blocks) > 2:
        print(
            f"warning: {uri or dataset.file} was read in {len(blocks)} blocks and numbered out "
            "of file order by the Spark backend: the block starting with the header is put "
            f"first, but the order of the other {len(blocks) - 1} is not known, so line numbers "
            "past the first block may not be the file's",
            file=sys.stderr,
        )
    return [first] + [b for b in blocks if b is not first]


def emptiness(raw: RawFile) -> str | None:
    """Why a raw file holds no data (None if it holds some).

    Empty means no data line that is not blank: 0 bytes, only blank lines (white space, a
    byte-order mark), or a header followed by nothing but blank lines. A file whose only data
    lines are junk is not empty: its lines are quarantined and the ratio gate judges them.
    """
    if raw.total_lines == 0:
        return "the file is empty (0 bytes)"
    blank_header = re.match(BLANK_LINE_RE, raw.header_line) is not None
    if raw.content_lines == 0:
        n = raw.total_lines
        return f"the file holds only {n} blank line{'s' if n != 1 else ''}, no header and no data"
    if raw.content_lines == 1 and not blank_header:
        blanks = raw.total_lines - 1
        after = f" (only {blanks} blank line{'s' if blanks != 1 else ''})" if blanks else ""
        return f"the file has a header line but no data lines{after}"
    return None


def check_not_empty(files: dict, raw_prefix: str) -> None:
    """Fail, naming every empty file, before anything is written.

    Cleaning an empty file would succeed with 0 rows and publish empty tables over the
    previous good ones (issue 11): an empty input is a broken export or upload, never a day
    without data, so the job refuses it.
    """
    problems = [(name, why) for name, raw in files.items() if (why := emptiness(raw))]
    if not problems:
        return
    lines = [f"{name}: {why}: {files[name].uri}" for name, why in problems]
    raise JobError(
        "; ".join(lines) + ". Nothing was written, so the tables published before are "
        f"unchanged: put the complete file{'s' if len(problems) > 1 else ''} (a header line "
        f"and at least one data line) under {raw_prefix} and run again"
    )


def parse_header(line: str) -> list:
    """Column names of a header line (quoted names allowed, a UTF-8 BOM ignored)."""
    if line.startswith("\ufeff"):
        line = line[1:]
    rows = list(csv.reader([line]))
    return [name.strip() for name in rows[0]] if rows else []


def check_header(dataset: Dataset, header: list) -> dict:
    """Map each required column to its position in the header, or fail naming what is missing."""
    missing = [c for c in dataset.column_names if c not in header]
    if missing:
        raise JobError(
            f"{dataset.file}: missing required column(s) {', '.join(missing)} "
            f"in header {header!r}"
        )
    return {name: header.index(name) for name in dataset.column_names}


def csv_fields(record):
    """The fields of a CSV line as written (quoted ones with their quotes), an array whose
    every element has the comma before its field in front (see CSV_FIELD_RE)."""
    return F.regexp_extract_all(F.concat(F.lit(","), record), F.lit(CSV_FIELD_RE), 0)


def csv_value(fields, i: int):
    """Field i (from 0) of csv_fields() as from_csv reads it: a quoted field without its quotes
    and with doubled quotes undone; null when empty (quoted or not) or past the line's end."""
    separated = F.get(fields, i)  # null past the end, whether ANSI mode is on or not
    field = separated.substr(F.lit(2), F.length(separated) - 1)
    inner = F.regexp_replace(field.substr(F.lit(2), F.length(field) - 2), '""', '"')
    value = F.when(field.startswith('"'), inner).otherwise(field)
    return F.when(value != "", value)


def _is_blank(col):
    return col.isNull() | (col == "")


def _typed(raw_name: str, kind: str):
    """Typed value of a trimmed raw string column: null when it does not fit. Never raises."""
    c = F.col(raw_name)
    q = f"`{raw_name}`"
    if kind == "string":
        return c
    if kind == "int":
        return F.when(c.rlike(INTEGER_RE), F.expr(f"try_cast({q} AS INT)"))
    if kind == "double":
        value = F.expr(f"try_cast({q} AS DOUBLE)")
        finite = F.abs(value) != F.lit(float("inf"))  # "1e999" parses, as Infinity
        return F.when(c.rlike(NUMBER_RE) & finite, value)
    if kind == "date":
        value = F.expr(f"try_to_timestamp({q}, '{DATE_FORMAT}')").cast("date")
        return F.when(c.rlike(DATE_RE), value)
    if kind == "timestamp":
        value = F.expr(f"try_to_timestamp({q}, '{TIMESTAMP_FORMAT}')")
        return F.when(c.rlike(TIMESTAMP_RE), value)
    raise ValueError(kind)


@dataclass(frozen=True)
class Rule:
    """A check on the typed columns of still-clean rows: quarantined when condition is true."""

    reason: str
    condition: object  # Column
    detail: object  # Column


@dataclass(frozen=True)
class Reference:
    """column must be a key of table (the clean rows of another dataset)."""

    column: str
    table: DataFrame
    key: str
    reason: str


def tag_rows(
    dataset: Dataset,
    lines: DataFrame,
    header: list,
    positions: dict,
    rules=(),
    references=(),
) -> DataFrame:
    """Parse the data lines of one file and give each row its first failing reason.

    Returns line_number, record, reason (null = clean), detail, and one typed column per dataset
    column. Checks in order: control characters, quoting, field count, missing required values,
    values that do not fit their type, then `rules`, then `references`. Duplicate keys come
    last, see dedupe().
    """
    n_fields = len(header)
    stripped = F.regexp_replace(F.col("record"), QUOTED_FIELD_RE, "$1" + QUOTED_MARK)
    parsed = csv_fields(F.col("record"))
    raws = [f"_raw_{c.name}" for c in dataset.columns]
    step1 = (
        lines.where(F.col("line_number") > 1)
        .select("line_number", "record", stripped.alias("_s"), parsed.alias("_p"))
        .select(
            "line_number",
            "record",
            F.regexp_extract("record", f"({CONTROL_RE})", 1).alias("_cc"),
            ((F.instr("_s", '"') > 0) | F.col("_s").rlike(QUOTED_MARK + "[^,]")).alias("_badquote"),
            (F.length("_s") - F.length(F.translate("_s", ",", "")) + F.lit(1)).alias("_nf"),
            *[
                F.trim(csv_value(F.col("_p"), positions[c.name])).alias(raw)
                for c, raw in zip(dataset.columns, raws)
            ],
        )
    )
    df = step1.select(
        "*", *[_typed(raw, c.kind).alias(c.name) for c, raw in zip(dataset.columns, raws)]
    )
    for i, ref in enumerate(references):
        keys = ref.table.select(F.col(ref.key).alias(f"_ref{i}"), F.lit(True).alias(f"_found{i}"))
        df = df.join(keys, df[ref.column] == keys[f"_ref{i}"], "left")

    # (reason, condition, detail) in order of precedence: the first true condition wins.
    checks = [
        _control_character_check(dataset, raws, n_fields),
        ("unparseable_line", F.col("_badquote"), F.lit("quote not closed or inside a field")),
        (
            "ragged_line",
            F.col("_nf") != n_fields,
            F.format_string(f"expected {n_fields} fields, found %d", F.col("_nf")),
        ),
    ]
    for missing_reason in sorted({c.missing_reason for c in dataset.columns if c.required}):
        cols = [c for c in dataset.columns if c.required and c.missing_reason == missing_reason]
        blanks = [_is_blank(F.col(f"_raw_{c.name}")) for c in cols]
        any_blank = blanks[0]
        for b in blanks[1:]:
            any_blank = any_blank | b
        names = F.concat_ws(",", *[F.when(b, F.lit(c.name)) for b, c in zip(blanks, cols)])
        checks.append((missing_reason, any_blank, names))
    for c in dataset.columns:
        if c.kind != "string":
            raw = F.col(f"_raw_{c.name}")
            bad = ~_is_blank(raw) & F.col(c.name).isNull()
            checks.append((c.bad_reason, bad, F.concat(F.lit(f"{c.name}="), raw)))
    checks += [(r.reason, r.condition, r.detail) for r in rules]
    for i, ref in enumerate(references):
        detail = F.concat(F.lit(f"{ref.column}="), F.col(ref.column).cast("string"))
        checks.append((ref.reason, F.col(f"_found{i}").isNull(), detail))

    first = F.when(checks[0][1], F.lit(0))
    for i, (_, condition, _) in enumerate(checks[1:], start=1):
        first = first.when(condition, F.lit(i))
    reason = F.when(F.col("_check") == 0, F.lit(checks[0][0]))
    detail = F.when(F.col("_check") == 0, checks[0][2])
    for i, (name, _, text) in enumerate(checks[1:], start=1):
        reason = reason.when(F.col("_check") == i, F.lit(name))
        detail = detail.when(F.col("_check") == i, text)
    return df.select("*", first.alias("_check")).select(
        "line_number",
        "record",
        reason.alias("reason"),
        detail.alias("detail"),
        *dataset.column_names,
    )


def _control_character_check(dataset: Dataset, raws: list, n_fields: int) -> tuple:
    """control_character: the line holds a C0 control character (CONTROL_RE).

    Checked first, on the original line, before any CSV parsing: the bytes are wrong whatever
    shape the line has. The detail gives the first such character as U+XXXX, its position in
    the line (1 = first character) and, when the line has the header's shape, the columns
    that hold one, e.g. "U+0000 at character 8 in rental_id".
    """
    code = F.format_string("U+%04X", F.ascii("_cc"))
    position = F.expr("locate(_cc, record)")
    holders = F.concat_ws(
        ",",
        *[
            F.when(F.col(raw).rlike(CONTROL_RE), F.lit(c.name))
            for c, raw in zip(dataset.columns, raws)
        ],
    )
    shaped = ~F.col("_badquote") & (F.col("_nf") == n_fields) & (holders != "")
    where = F.when(shaped, F.concat(F.lit(" in "), holders)).otherwise(F.lit(""))
    detail = F.format_string("%s at character %d%s", code, position, where)
    return ("control_character", F.col("_cc") != "", detail)


def dedupe(df: DataFrame, key: str, partitions: int) -> DataFrame:
    """Among clean rows, keep the first line of each key; later lines become duplicate_key.

    The first line of each key is the smallest line number among the clean rows holding it,
    found by an aggregate of the (key, line number) pairs and joined back by key. A window
    ranking the rows would give the same, but it sorts the whole rows, every column with them:
    on Sail that took 6.2 s of 1,000,000 vehicles, the aggregate and join 1.7 s. The rows are
    hash-partitioned by key into `partitions` partitions first, sized to the data rather than
    to spark.sql.shuffle.partitions; on Spark the aggregate and the join reuse that shuffle.
    """
    keyed = df.repartition(partitions, F.col(key))
    clean = F.col("reason").isNull()
    firsts = keyed.where(clean).groupBy(key).agg(F.min("line_number").alias("_first"))
    ranked = keyed.join(firsts, on=key, how="left")
    dup = clean & (F.col("line_number") != F.col("_first"))
    text = F.format_string(f"{key}=%s first at line %d", F.col(key).cast("string"), F.col("_first"))
    return ranked.select(
        "line_number",
        "record",
        F.when(dup, F.lit("duplicate_key")).otherwise(F.col("reason")).alias("reason"),
        F.when(dup, text).otherwise(F.col("detail")).alias("detail"),
        *[c for c in df.columns if c not in ("line_number", "record", "reason", "detail")],
    )


def partitions_for(lines: int, rows_per_partition: int = 500_000) -> int:
    return max(1, -(-lines // rows_per_partition))
