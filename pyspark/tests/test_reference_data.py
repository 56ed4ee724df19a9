"""The clean job and both KPI jobs on the full reference data set (shared/data/rental).

The expected values are computed here with Python's csv module, independently of Spark, and
checked against the facts stated in the data set's README.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime

import pytest
from conftest import REPO_ROOT, RawData

import rental_clean
import rental_user_transaction_metrics
import rental_vehicle_location_metrics

REFERENCE = (REPO_ROOT / ".." / "shared" / "data" / "rental").resolve()
FILES = ("locations.csv", "users.csv", "vehicles.csv", "rental_transactions.csv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((REFERENCE / f).is_file() for f in FILES),
        reason=f"reference data not found at {REFERENCE} (expected <repo>/../shared/data/rental)",
    ),
]


def read_csv(name):
    with open(REFERENCE / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def expected():
    rentals = read_csv("rental_transactions.csv")
    vehicle_type = {v["vehicle_id"]: v["vehicle_type"] for v in read_csv("vehicles.csv")}
    fmt = "%Y-%m-%d %H:%M:%S"
    revenue_by_type = defaultdict(float)
    revenue_by_day = defaultdict(float)
    hours = 0.0
    for r in rentals:
        amount = float(r["total_amount"])
        start = datetime.strptime(r["rental_start_time"], fmt)
        end = datetime.strptime(r["rental_end_time"], fmt)
        hours += (end - start).total_seconds() / 3600
        revenue_by_type[vehicle_type[r["vehicle_id"]]] += amount
        revenue_by_day[start.date()] += amount
    return {
        "rows": {name: len(read_csv(name)) for name in FILES},
        "transactions": len(rentals),
        "revenue": sum(float(r["total_amount"]) for r in rentals),
        "users": len({r["user_id"] for r in rentals}),
        "vehicles": len({r["vehicle_id"] for r in rentals}),
        "locations": len(
            {r["pickup_location"] for r in rentals} | {r["dropoff_location"] for r in rentals}
        ),
        "pickup_locations": len({r["pickup_location"] for r in rentals}),
        "hours": hours,
        "revenue_by_type": dict(revenue_by_type),
        "revenue_by_day": dict(revenue_by_day),
    }


@pytest.fixture(scope="module")
def outputs(spark, tmp_path_factory):
    data = RawData(tmp_path_factory.mktemp("reference"))
    args = [
        "--raw",
        REFERENCE.as_uri(),
        "--output",
        data.uri("processed"),
        "--quarantine",
        data.uri("quarantine"),
        "--counts-out",
        data.uri("counts.json"),
    ]
    counts = rental_clean.main(args, spark=spark)
    metric_args = ["--processed", data.uri("processed"), "--output", data.uri("metrics")]
    rental_vehicle_location_metrics.main(metric_args, spark=spark)
    rental_user_transaction_metrics.main(metric_args, spark=spark)

    def read(table):
        return spark.read.parquet(data.uri(table))

    return counts, read


def test_independent_totals_match_the_readme(expected):
    assert expected["transactions"] == 20_080
    assert expected["revenue"] == 16_200_620
    assert expected["users"] == 10_000
    assert expected["vehicles"] == 18_180
    assert expected["locations"] == 300


def test_clean_keeps_every_row(outputs, expected):
    counts, read = outputs
    for name in FILES:
        n = expected["rows"][name]
        assert counts["files"][name] == {"read": n, "clean": n, "quarantined": 0}, name
    assert counts["quarantine_reasons"] == {}
    assert read("quarantine").count() == 0
    assert read("processed/locations").count() == 300

    rentals = read("processed/rentals_clean")
    totals = rentals.selectExpr(
        "count(*) AS n",
        "sum(total_amount) AS revenue",
        "sum(rental_hours) AS hours",
        "count(DISTINCT user_id) AS users",
        "count(DISTINCT vehicle_id) AS vehicles",
        "min(rental_hours) AS min_h",
        "max(rental_hours) AS max_h",
    ).first()
    assert totals["n"] == expected["transactions"]
    assert totals["revenue"] == pytest.approx(expected["revenue"])
    assert totals["hours"] == pytest.approx(expected["hours"])
    assert (totals["users"], totals["vehicles"]) == (expected["users"], expected["vehicles"])
    assert (totals["min_h"], totals["max_h"]) == (1.0, 72.0)  # README: whole hours, 1 to 72
    locations = rentals.selectExpr("pickup_location AS l").union(
        rentals.selectExpr("dropoff_location AS l")
    )
    assert locations.distinct().count() == expected["locations"]
    months = {r["rental_month"] for r in rentals.select("rental_month").distinct().collect()}
    assert {str(m)[:7] for m in months} == {f"2024-0{m}" for m in range(1, 6)}


def test_vehicle_location_metrics(outputs, expected):
    _, read = outputs
    loc = read("metrics/location_performance")
    agg = loc.selectExpr(
        "count(*) AS n", "sum(total_revenue) AS revenue", "sum(total_transactions) AS tx"
    ).first()
    assert agg["n"] == expected["pickup_locations"]
    assert agg["revenue"] == pytest.approx(expected["revenue"])
    assert agg["tx"] == expected["transactions"]
    assert loc.where("location_name IS NULL OR city IS NULL").count() == 0

    by_type = {
        r["vehicle_type"]: r["total_revenue"]
        for r in read("metrics/vehicle_type_performance").collect()
    }
    assert by_type == pytest.approx(expected["revenue_by_type"])

    veh = read("metrics/vehicle_performance")
    agg = veh.selectExpr("count(*) AS n", "sum(total_transactions) AS tx").first()
    assert (agg["n"], agg["tx"]) == (expected["vehicles"], expected["transactions"])


def test_user_transaction_metrics(outputs, expected):
    _, read = outputs
    users = read("metrics/user_metrics")
    agg = users.selectExpr(
        "count(*) AS n", "sum(total_transactions) AS tx", "sum(total_revenue) AS revenue"
    ).first()
    assert (agg["n"], agg["tx"]) == (expected["users"], expected["transactions"])
    assert agg["revenue"] == pytest.approx(expected["revenue"])
    assert users.where("first_name IS NULL").count() == 0

    daily = {r["rental_date"]: r["total_revenue"] for r in read("metrics/daily_metrics").collect()}
    assert daily == pytest.approx(expected["revenue_by_day"])
