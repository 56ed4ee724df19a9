"""rental_clean.py on tiny hand-made files: outputs, types, every quarantine reason, gates."""

from __future__ import annotations

import json
import runpy
import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from conftest import BASE_TRANSACTIONS, JOBS_DIR, TRANSACTIONS_HEADER, USERS_HEADER

import rental_clean
from rental_common import JobError

T = "rental_transactions.csv"


def run_clean(spark, raw_data, *extra):
    return rental_clean.main(raw_data.clean_args(*extra), spark=spark)


def quarantine_rows(spark, raw_data, dataset=None):
    df = spark.read.parquet(raw_data.uri("quarantine"))
    rows = [r.asDict() for r in df.collect()]
    if dataset:
        rows = [r for r in rows if r["dataset"] == dataset]
    return sorted(rows, key=lambda r: (r["dataset"], r["line_number"]))


def by_line(rows):
    return {r["line_number"]: r["reason"] for r in rows}


def test_clean_data_outputs_types_and_partitions(spark, base_run):
    raw_data, counts = base_run
    assert counts["files"] == {
        "locations.csv": {"read": 3, "clean": 3, "quarantined": 0},
        "users.csv": {"read": 3, "clean": 3, "quarantined": 0},
        "vehicles.csv": {"read": 3, "clean": 3, "quarantined": 0},
        T: {"read": 5, "clean": 5, "quarantined": 0},
    }
    assert counts["quarantine_reasons"] == {}
    assert json.loads(raw_data.path("counts.json").read_text()) == counts
    assert quarantine_rows(spark, raw_data) == []

    processed = raw_data.path("processed")
    months = sorted(p.name for p in (processed / "rentals_clean").iterdir() if p.is_dir())
    assert months == ["rental_month=2024-01", "rental_month=2024-02", "rental_month=2024-03"]
    for table in ("locations", "users", "vehicles", "rentals_clean"):
        files = [f for f in (processed / table).rglob("*.parquet")]
        assert files and all(f.name.endswith(".snappy.parquet") for f in files), table

    rentals = spark.read.parquet(raw_data.uri("processed/rentals_clean"))
    types = dict(rentals.dtypes)
    assert types.pop("rental_month") == "string"
    assert types == {
        "rental_id": "string",
        "user_id": "string",
        "vehicle_id": "string",
        "rental_start_time": "timestamp",
        "rental_end_time": "timestamp",
        "pickup_location": "int",
        "dropoff_location": "int",
        "total_amount": "double",
        "rental_hours": "double",
    }
    got = {
        r["rental_id"]: (r["rental_hours"], r["rental_start_time"], r["pickup_location"])
        for r in rentals.collect()
    }
    assert got == {
        "r1": (4.0, datetime(2024, 1, 31, 22, 0), 1),
        "r2": (2.5, datetime(2024, 2, 1, 8, 0), 1),
        "r3": (24.0, datetime(2024, 2, 1, 9, 0), 2),
        "r4": (3.0, datetime(2024, 3, 10, 1, 0), 3),
        "r5": (1.0, datetime(2024, 2, 1, 23, 0), 1),
    }
    r1_month = (
        spark.read.parquet("file://" + str(processed / "rentals_clean" / "rental_month=2024-01"))
        .select("rental_id")
        .collect()
    )
    assert [r["rental_id"] for r in r1_month] == ["r1"]

    locations = spark.read.parquet(raw_data.uri("processed/locations"))
    # The raw file has its columns in another order plus an extra one (conftest).
    assert locations.columns == [
        "location_id",
        "location_name",
        "address",
        "city",
        "state",
        "zip_code",
        "latitude",
        "longitude",
    ]
    assert dict(locations.dtypes)["location_id"] == "int"
    assert dict(locations.dtypes)["latitude"] == "double"
    names = {r["location_id"]: (r["location_name"], r["zip_code"]) for r in locations.collect()}
    assert names == {
        1: ("Smith, Jones and Co", "93650"),
        2: ("Bean LLC", "95350"),
        3: ('Acme "Best" Rentals', "01234"),
    }
    users = spark.read.parquet(raw_data.uri("processed/users"))
    u1 = users.where("user_id = 'u1'").first()
    assert u1["driver_license_expiry"] == date(2030, 1, 1) and u1["is_active"] == 1
    vehicles = spark.read.parquet(raw_data.uri("processed/vehicles"))
    v1 = vehicles.where("vehicle_id = 'v1'").first()
    assert v1["registration_name"] == "DOE,JOHN"
    assert v1["last_update_timestamp"] == datetime(2024, 6, 1, 10, 0)
    assert v1["vehicle_year"] == 2020 and v1["vehicle_type"] == "premium"


# ---------------------------------------------------------------------------------------------
# One run on dirty files covers every quarantine reason. It reads with 256-byte input splits,
# so each file is read by several tasks: line numbers and "first occurrence" must still hold.
# ---------------------------------------------------------------------------------------------

DIRTY_TRANSACTIONS = [
    "r1,u1,v1,2024-01-31 22:00:00,2024-02-01 02:00:00,1,2,80.0",  # 2 clean
    "r6,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,abc",  # 3 bad_amount
    "r7,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,-5.0",  # 4 negative_amount
    "r8,,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0",  # 5 missing_field user_id
    "r9,u1,v1,2024-13-01 10:00:00,2024-01-05 11:00:00,1,2,20.0",  # 6 bad_timestamp
    "r10,u1,v1,2024-01-05 12:00:00,2024-01-05 11:00:00,1,2,20.0",  # 7 end_before_start
    "r11,u99,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0",  # 8 unknown_user
    "r12,u1,v99,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0",  # 9 unknown_vehicle
    "r13,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,99,2,20.0",  # 10 unknown_pickup
    "r14,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,98,20.0",  # 11 unknown_dropoff
    "r1,u2,v2,2024-01-06 10:00:00,2024-01-06 11:00:00,2,2,999.0",  # 12 duplicate of line 2
    "r15,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2",  # 13 ragged: 7 fields
    "r16,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0,x",  # 14 ragged: 9 fields
    'r17,"u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0',  # 15 quote never closed
    "",  # 16 blank line: 1 field
    "r18,u2,v2,2024-01-07 10:00:00,2024-01-07 12:00:00,1,1,10.0",  # 17 clean
    "r19,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,x1,2,10.0",  # 18 bad_location_id
    "r6,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,15.0",  # 19 clean: line 3 was bad
    "r20,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,1e999",  # 20 bad_amount (infinite)
    "r21,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,NaN",  # 21 bad_amount
    "r22,u1,v1,2024-02-30 10:00:00,2024-03-01 11:00:00,1,2,20.0",  # 22 bad_timestamp (Feb 30)
    "r23,u1,v1,2024-01-05 10:00:00,2024-01-05 10:00:00,1,2,0",  # 23 clean: 0 hours, 0.0
    "r24,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,   ",  # 24 missing_field amount
    "r25,u5,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0",  # 25 unknown_user (u5 bad)
    'r26,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,"1",2,10.0',  # 26 clean: quoted value
    'r27,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,1"0',  # 27 quote inside a field
]
EXPECTED_TRANSACTION_REASONS = {
    3: "bad_amount",
    4: "negative_amount",
    5: "missing_field",
    6: "bad_timestamp",
    7: "end_before_start",
    8: "unknown_user",
    9: "unknown_vehicle",
    10: "unknown_pickup_location",
    11: "unknown_dropoff_location",
    12: "duplicate_key",
    13: "ragged_line",
    14: "ragged_line",
    15: "unparseable_line",
    16: "ragged_line",
    18: "bad_location_id",
    20: "bad_amount",
    21: "bad_amount",
    22: "bad_timestamp",
    24: "missing_field",
    25: "unknown_user",
    27: "unparseable_line",
}
DIRTY_USERS = [
    "u1,Ann,Lee,ann@example.com,555-0001,DL1,2030-01-01,2024-01-01,1",  # 2
    "u2,Bob,Ray,bob@example.com,555-0002,DL2,2030-01-02,2024-01-02,0",  # 3
    ",NoKey,X,nokey@example.com,555-0009,DL9,2030-01-09,2024-01-09,1",  # 4 missing_key
    "u1,Dup,Lee,dup@example.com,555-0001,DL1,2030-01-01,2024-01-01,1",  # 5 duplicate_key
    "u4,Too,Few",  # 6 ragged_line
    "u3,Cy,Fox,cy@example.com,555-0003,DL3,2030-01-03,2024-01-03,1",  # 7
    "u5,Bad,Date,bd@example.com,555-0005,DL5,2030-02-30,2024-01-05,1",  # 8 bad_value
]
DIRTY_VEHICLES = [
    '1,5000001,"DOE,JOHN",FOR HIRE VEHICLE,2026-01-01,P1,2020-01-01,2020,(555) 000-0001,'
    "1 A St,v1,2024-06-01 10:00:00,BMW,premium",  # 2
    '1,5000002,"ROE,JANE",FOR HIRE VEHICLE,2026-01-02,P2,2020-01-02,2019,(555) 000-0002,'
    "2 B St,v2,2024-06-01 11:00:00,Kia,basic",  # 3
    '0,5000003,"POE,EDGAR",FOR HIRE VEHICLE,2026-01-03,P3,2020-01-03,2021,(555) 000-0003,'
    "3 C St,v3,2024-06-01 12:00:00,Tesla,high_end",  # 4
    '1,5000004,"DUP,LICATE",FOR HIRE VEHICLE,2026-01-04,P4,2020-01-04,2022,(555) 000-0004,'
    "4 D St,v1,2024-06-01 13:00:00,Dup,basic",  # 5 duplicate_key
    '1,5000005,"NO,KEY",FOR HIRE VEHICLE,2026-01-05,P5,2020-01-05,2022,(555) 000-0005,'
    "5 E St,,2024-06-01 14:00:00,Audi,basic",  # 6 missing_key
    # 7 ragged: the comma of an unquoted name makes 15 fields
    "1,5000006,ROE,JANE,FOR HIRE VEHICLE,2026-01-06,P6,2020-01-06,2019,(555) 000-0006,"
    "6 F St,v6,2024-06-01 15:00:00,Kia,basic",
]
DIRTY_LOCATIONS = [
    '1,"Smith, Jones and Co",1 Main St,Fresno,CA,93650,36.7,-119.7',  # 2
    "2,Bean LLC,2 Oak Ave,Modesto,CA,95350,37.6,-121.0",  # 3
    '3,"Acme ""Best"" Rentals",3 Pine Rd,Fresno,CA,01234,36.8,-119.8',  # 4
    "2,Dup LLC,9 Elm St,Modesto,CA,95350,37.6,-121.0",  # 5 duplicate_key
    ",No Key,9 Elm St,Modesto,CA,95350,37.6,-121.0",  # 6 missing_key
    "abc,Bad Key,9 Elm St,Modesto,CA,95350,37.6,-121.0",  # 7 bad_key
    "4,Short,9 Elm St",  # 8 ragged_line
]


@pytest.fixture(scope="module")
def dirty_run(spark, tmp_path_factory):
    from conftest import RawData

    data = RawData(tmp_path_factory.mktemp("dirty"))
    data.write(
        {
            T: DIRTY_TRANSACTIONS,
            "users.csv": DIRTY_USERS,
            "vehicles.csv": DIRTY_VEHICLES,
            "locations.csv": DIRTY_LOCATIONS,
        }
    )
    key = "spark.sql.files.maxPartitionBytes"
    previous = spark.conf.get(key)
    spark.conf.set(key, "256")
    try:
        counts = rental_clean.main(data.clean_args("--max-quarantine-ratio", "1"), spark=spark)
        splits = spark.read.text(data.uri(f"raw/{T}")).rdd.getNumPartitions()
    finally:
        spark.conf.set(key, previous)
    return data, counts, quarantine_rows(spark, data), splits


def test_dirty_files_are_read_in_several_splits(dirty_run):
    *_, splits = dirty_run
    assert splits >= 4  # the premise of the line-number and first-occurrence checks


def test_every_transaction_quarantine_reason(spark, dirty_run):
    data, counts, quarantine, _ = dirty_run
    rows = [r for r in quarantine if r["dataset"] == T]
    assert by_line(rows) == EXPECTED_TRANSACTION_REASONS
    lines = [TRANSACTIONS_HEADER, *DIRTY_TRANSACTIONS]
    for r in rows:  # the record is the original line, unchanged
        assert r["record"] == lines[r["line_number"] - 1]
    details = {r["line_number"]: r["detail"] for r in rows}
    assert details[5] == "user_id"
    assert details[24] == "total_amount"
    assert details[12] == "rental_id=r1 first at line 2"
    assert details[13] == "expected 8 fields, found 7"
    assert details[14] == "expected 8 fields, found 9"
    assert details[8] == "user_id=u99"

    assert counts["files"][T] == {"read": 26, "clean": 5, "quarantined": 21}
    assert counts["quarantine_reasons_by_file"][T] == {
        "bad_amount": 3,
        "bad_location_id": 1,
        "bad_timestamp": 2,
        "duplicate_key": 1,
        "end_before_start": 1,
        "missing_field": 2,
        "negative_amount": 1,
        "ragged_line": 3,
        "unknown_dropoff_location": 1,
        "unknown_pickup_location": 1,
        "unknown_user": 2,
        "unknown_vehicle": 1,
        "unparseable_line": 2,
    }

    rentals = spark.read.parquet(data.uri("processed/rentals_clean"))
    clean = {r["rental_id"]: r["total_amount"] for r in rentals.collect()}
    # r1: the first occurrence (line 2, 80.0) is kept, not the later 999.0.
    # r6: line 3 was quarantined for its amount, so line 19 is the first valid r6.
    assert clean == {"r1": 80.0, "r18": 10.0, "r6": 15.0, "r23": 0.0, "r26": 10.0}


def test_dimension_quarantine_missing_and_duplicate_keys(spark, dirty_run):
    data, counts, quarantine, _ = dirty_run

    def reasons(dataset):
        return by_line([r for r in quarantine if r["dataset"] == dataset])

    assert reasons("users.csv") == {
        4: "missing_key",
        5: "duplicate_key",
        6: "ragged_line",
        8: "bad_value",
    }
    assert reasons("vehicles.csv") == {5: "duplicate_key", 6: "missing_key", 7: "ragged_line"}
    assert reasons("locations.csv") == {
        5: "duplicate_key",
        6: "missing_key",
        7: "bad_key",
        8: "ragged_line",
    }

    def read(table, key, attr):
        rows = spark.read.parquet(data.uri(f"processed/{table}")).collect()
        return {r[key]: r[attr] for r in rows}

    # The first occurrence of each duplicated key is the one kept.
    assert read("users", "user_id", "first_name") == {"u1": "Ann", "u2": "Bob", "u3": "Cy"}
    assert read("vehicles", "vehicle_id", "brand") == {"v1": "BMW", "v2": "Kia", "v3": "Tesla"}
    assert read("locations", "location_id", "location_name") == {
        1: "Smith, Jones and Co",
        2: "Bean LLC",
        3: 'Acme "Best" Rentals',
    }


def test_read_equals_clean_plus_quarantined(dirty_run):
    data, counts, quarantine, _ = dirty_run
    expected = {  # data lines, clean lines, quarantined lines: counted by hand above
        "users.csv": (7, 3, 4),
        "vehicles.csv": (6, 3, 3),
        "locations.csv": (7, 3, 4),
        T: (26, 5, 21),
    }
    for name, (read, clean, quarantined) in expected.items():
        assert counts["files"][name] == {"read": read, "clean": clean, "quarantined": quarantined}
        assert sum(1 for r in quarantine if r["dataset"] == name) == quarantined
        lines_in_file = (data.raw / name).read_text().count("\n")
        assert read == lines_in_file - 1 == clean + quarantined
    assert json.loads(data.path("counts.json").read_text()) == counts
    total = sum(counts["quarantine_reasons"].values())
    assert total == sum(c["quarantined"] for c in counts["files"].values()) == len(quarantine)


def test_the_scratch_folder_goes_with_the_folders_it_created(tmp_path):
    """The numbered lines' folder is deleted at the end, and so are the folders above it that
    the job created (a failed first run leaves no OUTPUT behind); folders that were there stay."""
    from urllib.parse import unquote, urlparse

    from rental_common import Scratch

    def fill(scratch):
        path = Path(unquote(urlparse(scratch.uri).path))
        (path / "users.csv").mkdir(parents=True)
        (path / "users.csv" / "part-0.parquet").write_bytes(b"x")
        return path

    output = tmp_path / "with space" / "processed"  # a file:// URI quotes the space
    scratch = Scratch(None, output.as_uri(), "numbered_lines")
    assert scratch.uri.startswith(output.as_uri() + "/_numbered_lines-")
    fill(scratch)
    scratch.close()
    assert not (tmp_path / "with space").exists()

    output.mkdir(parents=True)
    scratch = Scratch(None, str(output), "numbered_lines")
    path = fill(scratch)
    (output / "users").mkdir()  # an output written meanwhile
    scratch.close()
    assert not path.exists() and sorted(p.name for p in output.iterdir()) == ["users"]


def test_the_block_starting_with_the_header_is_numbered_first(capsys):
    """Blocks as read_raw_files collects them: (file, block id, lines, first id, first line,
    content lines). Spark's order is kept; a header found in a later block (Sail handing the
    file's first byte range to another partition) moves that block first."""
    from rental_common import TRANSACTIONS, in_file_order

    def block(blk, first):
        return (T, blk, 10, blk << 33, first, 10)

    head, data = block(0, TRANSACTIONS_HEADER), block(1, BASE_TRANSACTIONS[2])
    assert in_file_order(TRANSACTIONS, [head, data]) == [head, data]
    swapped = [block(0, BASE_TRANSACTIONS[2]), block(1, TRANSACTIONS_HEADER)]
    assert in_file_order(TRANSACTIONS, swapped) == swapped[::-1]
    assert capsys.readouterr().err == ""
    # No header anywhere: unchanged, and check_header names the first block's line.
    lost = [block(0, BASE_TRANSACTIONS[2]), block(1, BASE_TRANSACTIONS[3])]
    assert in_file_order(TRANSACTIONS, lost) == lost
    # Three blocks: the header's first, and a warning that the others' order is not known.
    three = [block(0, BASE_TRANSACTIONS[2]), block(1, BASE_TRANSACTIONS[3])]
    three.append(block(2, TRANSACTIONS_HEADER))
    assert in_file_order(TRANSACTIONS, three) == [three[2], three[0], three[1]]
    assert "read in 3 blocks and numbered out of file order" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Failures: a missing column, the quarantine ratio, the command line.
# ---------------------------------------------------------------------------------------------


def test_missing_required_column_fails_before_writing(spark, raw_data):
    header = TRANSACTIONS_HEADER.replace(",total_amount", "")
    rows = [line.rsplit(",", 1)[0] for line in BASE_TRANSACTIONS]
    raw_data.write({T: rows}, headers={T: header})
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data)
    message = str(err.value)
    assert "rental_transactions.csv" in message and "total_amount" in message
    assert not raw_data.path("processed").exists()
    assert not raw_data.path("quarantine").exists()
    assert not raw_data.path("counts.json").exists()


def test_quarantine_ratio_gate(spark, raw_data):
    rows = BASE_TRANSACTIONS[:4] + [
        "r9,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,abc"  # 1 of 5 = 0.2
    ]
    raw_data.write({T: rows})
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data)  # default limit 0.05
    message = str(err.value)
    assert "rental_transactions.csv" in message
    assert "0.2000" in message and "0.05" in message
    assert not raw_data.path("processed").exists()
    # The quarantine and the counts are written first, to show why.
    assert by_line(quarantine_rows(spark, raw_data, T)) == {6: "bad_amount"}
    counts = json.loads(raw_data.path("counts.json").read_text())
    assert counts["files"][T] == {"read": 5, "clean": 4, "quarantined": 1}


def test_ratio_limit_is_inclusive():
    counts = {"files": {T: {"read": 5, "clean": 4, "quarantined": 1}}}
    rental_clean.check_ratios(counts, 0.2)  # equal to the limit: passes
    with pytest.raises(JobError):
        rental_clean.check_ratios(counts, 0.19)
    rental_clean.check_ratios({"files": {T: {"read": 0, "clean": 0, "quarantined": 0}}}, 0.0)


def test_a_file_with_no_clean_line_fails_even_with_a_ratio_limit_of_1(spark, raw_data):
    """Every transaction quarantined: with --max-quarantine-ratio 1 the ratio gate lets it
    through, and the run would publish an empty rentals_clean over the good one."""
    raw_data.write()
    run_clean(spark, raw_data)
    raw_data.write({T: ["r8,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,-1.0", "r9,u1"]})
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data, "--max-quarantine-ratio", "1")
    message = str(err.value)
    assert f"{T}: none of its 2 data lines is clean" in message, message
    assert "users.csv" not in message
    # The quarantine and the counts say why; the published tables are the earlier ones.
    assert by_line(quarantine_rows(spark, raw_data, T)) == {
        2: "negative_amount",
        3: "ragged_line",
    }
    counts = json.loads(raw_data.path("counts.json").read_text())
    assert counts["files"][T] == {"read": 2, "clean": 0, "quarantined": 2}
    rentals = spark.read.parquet(raw_data.uri("processed/rentals_clean"))
    assert sorted(r["rental_id"] for r in rentals.collect()) == ["r1", "r2", "r3", "r4", "r5"]


def test_command_line_error_exits_non_zero(spark, raw_data, capsys, monkeypatch):
    """The script's __main__ path: a clear message on stderr and exit status 1, no traceback.

    It runs in this process, where the job picks up the tests' active session (a new JVM
    would cost more than the rest of this file); it does not stop that session.
    """
    header = USERS_HEADER.replace(",email", "")
    raw_data.write(
        {"users.csv": ["u1,Ann,Lee,555,DL1,2030-01-01,2024-01-01,1"]}, {"users.csv": header}
    )
    script = str(JOBS_DIR / "rental_clean.py")
    monkeypatch.setattr(sys, "argv", [script, *raw_data.clean_args()])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(script, run_name="__main__")
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert "rental_clean: error: users.csv: missing required column(s) email" in stderr
    assert "Traceback" not in stderr
    assert not raw_data.path("processed").exists()
    assert spark.range(1).count() == 1  # the session is still usable


# ---------------------------------------------------------------------------------------------
# Empty inputs (issue 11): a header-only file used to "clean" to 0 rows and replace the
# published tables with empty ones. Every kind of empty file now fails before any write.
# ---------------------------------------------------------------------------------------------

EMPTY_FILES = {
    "header only": (TRANSACTIONS_HEADER + "\n", "the file has a header line but no data lines: "),
    "header without a line end": (
        TRANSACTIONS_HEADER,
        "the file has a header line but no data lines: ",
    ),
    "header and blank lines": (
        TRANSACTIONS_HEADER + "\n\n   \n",
        "the file has a header line but no data lines (only 2 blank lines): ",
    ),
    "zero bytes": ("", "the file is empty (0 bytes): "),
    "blank lines only": (
        "\n \t\n\ufeff\n",
        "the file holds only 3 blank lines, no header and no data: ",
    ),
}


def assert_nothing_written(raw_data):
    assert not raw_data.path("processed").exists()
    assert not raw_data.path("quarantine").exists()
    assert not raw_data.path("counts.json").exists()


@pytest.mark.parametrize("case", sorted(EMPTY_FILES))
def test_an_empty_input_fails_before_anything_is_written(spark, raw_data, case):
    text, why = EMPTY_FILES[case]
    raw_data.write()
    (raw_data.raw / T).write_text(text, encoding="utf-8")
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data)
    message = str(err.value)
    # The file, why it counts as empty, where it is, and what to do.
    assert f"{T}: {why}{raw_data.raw_uri}/{T}" in message, message
    assert "put the complete file (a header line and at least one data line)" in message
    assert "run again" in message
    assert "users.csv" not in message  # the good files are not blamed
    assert_nothing_written(raw_data)


def test_an_empty_input_leaves_the_published_tables_as_they_were(spark, raw_data):
    """The issue's reproduction: good data published, then a run on a header-only file."""
    raw_data.write()
    run_clean(spark, raw_data)
    published = raw_data.path("counts.json").read_text()

    (raw_data.raw / T).write_text(TRANSACTIONS_HEADER + "\n", encoding="utf-8")
    with pytest.raises(JobError):
        run_clean(spark, raw_data)

    rentals = spark.read.parquet(raw_data.uri("processed/rentals_clean"))
    assert sorted(r["rental_id"] for r in rentals.collect()) == ["r1", "r2", "r3", "r4", "r5"]
    assert raw_data.path("counts.json").read_text() == published


def test_every_empty_file_is_named_in_one_message(spark, raw_data):
    raw_data.write()
    (raw_data.raw / "users.csv").write_bytes(b"")
    (raw_data.raw / "locations.csv").write_text("\n", encoding="utf-8")
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data)
    message = str(err.value)
    assert "users.csv: the file is empty (0 bytes)" in message
    assert "locations.csv: the file holds only 1 blank line, no header and no data" in message
    assert "put the complete files (a header line" in message
    assert T not in message and "vehicles.csv" not in message
    assert_nothing_written(raw_data)


def test_a_file_whose_only_data_line_is_junk_is_not_empty(spark, raw_data):
    """One bad data line is data: it is quarantined and the ratio gate judges the file."""
    raw_data.write({T: ["r1,u1"]})
    with pytest.raises(JobError) as err:
        run_clean(spark, raw_data)
    assert "exceeds --max-quarantine-ratio" in str(err.value)
    assert by_line(quarantine_rows(spark, raw_data, T)) == {2: "ragged_line"}


# ---------------------------------------------------------------------------------------------
# Control characters (issue 11): ten transactions with a NUL inside rental_id were cleaned into
# rentals_clean with 11-character ids. Any C0 control character but the line end quarantines.
# ---------------------------------------------------------------------------------------------

# (line, the control character, the column it is in or None when the line has no clean shape)
CONTROL_LINES = [
    ("r6\x00abc,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0", "\x00", "rental_id"),
    ("r1\x00,u2,v2,2024-01-06 10:00:00,2024-01-06 11:00:00,2,2,10.0", "\x00", "rental_id"),
    ("\x00r11,u2,v2,2024-01-06 10:00:00,2024-01-06 11:00:00,2,2,10.0", "\x00", "rental_id"),
    ("r7,u1\t,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0", "\t", "user_id"),
    ("r8,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0\x1f", "\x1f", "total_amount"),
    ("r9,u1,\x0b,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0", "\x0b", "vehicle_id"),
    ("r10,u1,v1,2024-01-05 10:00:00,2024-01-05 11:00:00,1,2,20.0,\x07", "\x07", None),
    ("\x01", "\x01", None),
]


def test_control_characters_are_a_quarantine_reason(spark, raw_data):
    rows = BASE_TRANSACTIONS + [line for line, _, _ in CONTROL_LINES]
    users = [
        "u1,Ann,Lee,ann@example.com,555-0001,DL1,2030-01-01,2024-01-01,1",
        "u2,Bob,Ray,bob@example.com,555-0002,DL2,2030-01-02,2024-01-02,0",
        "u3,Cy,Fox,cy@example.com,555-0003,DL3,2030-01-03,2024-01-03,1",
        "u4,Di\x0c,Roe,di@example.com,555-0004,DL4,2030-01-04,2024-01-04,1",  # line 5
    ]
    raw_data.write({T: rows, "users.csv": users})
    counts = run_clean(spark, raw_data, "--max-quarantine-ratio", "1")

    first_control_line = len(BASE_TRANSACTIONS) + 2  # after the header and the clean lines
    expected = {}
    for i, (line, char, column) in enumerate(CONTROL_LINES):
        detail = f"U+{ord(char):04X} at character {line.index(char) + 1}"
        expected[first_control_line + i] = (
            "control_character",
            detail + (f" in {column}" if column else ""),
            line,
        )
    got = {
        r["line_number"]: (r["reason"], r["detail"], r["record"])
        for r in quarantine_rows(spark, raw_data, T)
    }
    assert got == expected

    users_got = quarantine_rows(spark, raw_data, "users.csv")
    assert [(r["line_number"], r["reason"], r["detail"]) for r in users_got] == [
        (5, "control_character", "U+000C at character 6 in first_name")
    ]

    n = len(CONTROL_LINES)
    assert counts["files"][T] == {"read": 5 + n, "clean": 5, "quarantined": n}
    assert counts["quarantine_reasons_by_file"][T] == {"control_character": n}
    assert counts["quarantine_reasons_by_file"]["users.csv"] == {"control_character": 1}
    assert counts["quarantine_reasons"] == {"control_character": n + 1}

    rentals = spark.read.parquet(raw_data.uri("processed/rentals_clean"))
    assert sorted(r["rental_id"] for r in rentals.collect()) == ["r1", "r2", "r3", "r4", "r5"]
    users_clean = spark.read.parquet(raw_data.uri("processed/users"))
    assert sorted(r["user_id"] for r in users_clean.collect()) == ["u1", "u2", "u3"]
