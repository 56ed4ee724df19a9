"""Shared fixtures: one local SparkSession for the whole run, and tiny raw data sets."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path

import pytest

JOBS_DIR = Path(__file__).resolve().parent.parent  # pyspark/
REPO_ROOT = JOBS_DIR.parent
sys.path.insert(0, str(JOBS_DIR))  # the jobs import rental_common as a top-level module

# Timestamps come back from collect() as naive datetimes in the Python process's zone.
os.environ["TZ"] = "UTC"
time.tzset()

LOCATIONS_HEADER = "location_id,location_name,address,city,state,zip_code,latitude,longitude"
USERS_HEADER = (
    "user_id,first_name,last_name,email,phone_number,driver_license_number,"
    "driver_license_expiry,creation_date,is_active"
)
VEHICLES_HEADER = (
    "active,vehicle_license_number,registration_name,license_type,expiration_date,"
    "permit_license_number,certification_date,vehicle_year,base_telephone_number,base_address,"
    "vehicle_id,last_update_timestamp,brand,vehicle_type"
)
TRANSACTIONS_HEADER = (
    "rental_id,user_id,vehicle_id,rental_start_time,rental_end_time,pickup_location,"
    "dropoff_location,total_amount"
)

BASE_LOCATIONS = [
    '1,"Smith, Jones and Co",1 Main St,Fresno,CA,93650,36.7,-119.7',
    "2,Bean LLC,2 Oak Ave,Modesto,CA,95350,37.6,-121.0",
    '3,"Acme ""Best"" Rentals",3 Pine Rd,Fresno,CA,01234,36.8,-119.8',
]
BASE_USERS = [
    "u1,Ann,Lee,ann@example.com,555-0001,DL1,2030-01-01,2024-01-01,1",
    "u2,Bob,Ray,bob@example.com,555-0002,DL2,2030-01-02,2024-01-02,0",
    "u3,Cy,Fox,cy@example.com,555-0003,DL3,2030-01-03,2024-01-03,1",
]
BASE_VEHICLES = [
    '1,5000001,"DOE,JOHN",FOR HIRE VEHICLE,2026-01-01,P1,2020-01-01,2020,(555) 000-0001,'
    "1 A St,v1,2024-06-01 10:00:00,BMW,premium",
    '1,5000002,"ROE,JANE",FOR HIRE VEHICLE,2026-01-02,P2,2020-01-02,2019,(555) 000-0002,'
    "2 B St,v2,2024-06-01 11:00:00,Kia,basic",
    '0,5000003,"POE,EDGAR",FOR HIRE VEHICLE,2026-01-03,P3,2020-01-03,2021,(555) 000-0003,'
    "3 C St,v3,2024-06-01 12:00:00,Tesla,high_end",
]
# Hours: r1 4 (crosses a month end), r2 2.5, r3 24, r4 3 (US daylight-saving day), r5 1.
BASE_TRANSACTIONS = [
    "r1,u1,v1,2024-01-31 22:00:00,2024-02-01 02:00:00,1,2,80.0",
    "r2,u1,v2,2024-02-01 08:00:00,2024-02-01 10:30:00,1,1,25.0",
    "r3,u2,v3,2024-02-01 09:00:00,2024-02-02 09:00:00,2,3,1200.0",
    "r4,u3,v2,2024-03-10 01:00:00,2024-03-10 04:00:00,3,1,30.0",
    "r5,u2,v1,2024-02-01 23:00:00,2024-02-02 00:00:00,1,3,20.0",
]

HEADERS = {
    "locations.csv": LOCATIONS_HEADER,
    "users.csv": USERS_HEADER,
    "vehicles.csv": VEHICLES_HEADER,
    "rental_transactions.csv": TRANSACTIONS_HEADER,
}
BASE_ROWS = {
    "locations.csv": BASE_LOCATIONS,
    "users.csv": BASE_USERS,
    "vehicles.csv": BASE_VEHICLES,
    "rental_transactions.csv": BASE_TRANSACTIONS,
}


def relayout(header: str, rows: list, columns: list) -> tuple:
    """Rewrite CSV lines with their columns in another order (unknown columns get "x")."""
    names = next(csv.reader([header]))

    def line(values):
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()

    new_rows = []
    for values in csv.reader(rows):
        record = dict(zip(names, values))
        new_rows.append(line([record.get(c, "x") for c in columns]))
    return line(columns), new_rows


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("rental-pyspark-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # C1-only JIT and the parallel collector: these short runs never repay C2's compile
        # time, and it halves the first (cold) run of a job on this 2-core machine.
        .config(
            "spark.driver.extraJavaOptions",
            "-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:+UseParallelGC",
        )
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


class RawData:
    """Writes a raw folder under tmp_path and gives the URIs the jobs take."""

    def __init__(self, root: Path):
        self.root = root
        self.raw = root / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)

    def write(
        self,
        overrides: dict | None = None,
        headers: dict | None = None,
        layouts: dict | None = None,
    ) -> "RawData":
        """Write the four files: the base rows unless overridden (a list of lines).

        headers replaces a file's header line as is. layouts gives a file's columns in another
        order, possibly with extra ones (filled with "x"): the lines are rewritten with csv.
        """
        overrides = overrides or {}
        headers = {**HEADERS, **(headers or {})}
        for name, header in headers.items():
            rows = overrides.get(name, BASE_ROWS[name])
            if layouts and name in layouts:
                header, rows = relayout(header, rows, layouts[name])
            text = "\n".join([header, *rows]) + "\n"
            (self.raw / name).write_text(text, encoding="utf-8")
        return self

    @property
    def raw_uri(self) -> str:
        return self.raw.as_uri()

    def uri(self, name: str) -> str:
        return "file://" + str((self.root / name).resolve())

    def path(self, name: str) -> Path:
        return self.root / name

    def clean_args(self, *extra: str) -> list:
        return [
            "--raw",
            self.raw_uri,
            "--output",
            self.uri("processed"),
            "--quarantine",
            self.uri("quarantine"),
            "--counts-out",
            str(self.path("counts.json")),
            *extra,
        ]


@pytest.fixture
def raw_data(tmp_path):
    return RawData(tmp_path)


# The base files as the clean job's first test and the metric tests read them. locations.csv
# has its columns in another order and an extra column: the jobs map columns by header name.
BASE_LOCATIONS_LAYOUT = [
    "latitude",
    "longitude",
    "note",
    "location_name",
    "location_id",
    "address",
    "city",
    "state",
    "zip_code",
]


@pytest.fixture(scope="session")
def base_run(spark, tmp_path_factory):
    """rental_clean.py once on the base files. Returns (RawData, counts)."""
    import rental_clean

    data = RawData(tmp_path_factory.mktemp("base"))
    data.write(layouts={"locations.csv": BASE_LOCATIONS_LAYOUT})
    counts = rental_clean.main(data.clean_args(), spark=spark)
    return data, counts
