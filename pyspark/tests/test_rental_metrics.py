"""The two KPI jobs on the five base rentals, against values worked out by hand.

The base rentals (conftest.BASE_TRANSACTIONS), with their hours:
    r1 u1 v1(premium) pickup 1  2024-01-31 22:00  4.0 h    80.0
    r2 u1 v2(basic)   pickup 1  2024-02-01 08:00  2.5 h    25.0
    r3 u2 v3(high_end)pickup 2  2024-02-01 09:00 24.0 h  1200.0
    r4 u3 v2(basic)   pickup 3  2024-03-10 01:00  3.0 h    30.0
    r5 u2 v1(premium) pickup 1  2024-02-01 23:00  1.0 h    20.0
"""

from __future__ import annotations

from datetime import date

import pytest

import rental_user_transaction_metrics
import rental_vehicle_location_metrics
from rental_user_transaction_metrics import DAILY_COLUMNS, USER_COLUMNS
from rental_vehicle_location_metrics import (
    LOCATION_COLUMNS,
    VEHICLE_COLUMNS,
    VEHICLE_TYPE_COLUMNS,
)


@pytest.fixture(scope="module")
def metrics(spark, base_run):
    data, _ = base_run
    args = ["--processed", data.uri("processed"), "--output", data.uri("metrics")]
    rental_vehicle_location_metrics.main(args, spark=spark)
    rental_user_transaction_metrics.main(args, spark=spark)

    def read(table):
        df = spark.read.parquet(data.uri(f"metrics/{table}"))
        return df.columns, [r.asDict() for r in df.collect()]

    return read


def keyed(rows, key):
    return {r[key]: r for r in rows}


def assert_row(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for k, v in expected.items():
        if isinstance(v, float):
            assert actual[k] == pytest.approx(v), k
        else:
            assert actual[k] == v, k


def test_location_performance(metrics):
    columns, rows = metrics("location_performance")
    assert columns == LOCATION_COLUMNS
    got = keyed(rows, "location_id")
    assert set(got) == {1, 2, 3}
    assert_row(
        got[1],
        {
            "location_id": 1,
            "location_name": "Smith, Jones and Co",
            "city": "Fresno",
            "state": "CA",
            "total_revenue": 125.0,
            "total_transactions": 3,
            "avg_transaction_amount": 125.0 / 3,
            "max_transaction_amount": 80.0,
            "min_transaction_amount": 20.0,
            "unique_vehicles": 2,
            "total_rental_hours": 7.5,
        },
    )
    assert_row(
        got[2],
        {
            "location_id": 2,
            "location_name": "Bean LLC",
            "city": "Modesto",
            "state": "CA",
            "total_revenue": 1200.0,
            "total_transactions": 1,
            "avg_transaction_amount": 1200.0,
            "max_transaction_amount": 1200.0,
            "min_transaction_amount": 1200.0,
            "unique_vehicles": 1,
            "total_rental_hours": 24.0,
        },
    )
    assert got[3]["location_name"] == 'Acme "Best" Rentals'
    assert got[3]["total_revenue"] == 30.0 and got[3]["total_rental_hours"] == 3.0


def test_vehicle_type_performance(metrics):
    columns, rows = metrics("vehicle_type_performance")
    assert columns == VEHICLE_TYPE_COLUMNS
    got = keyed(rows, "vehicle_type")
    assert set(got) == {"premium", "basic", "high_end"}
    assert_row(
        got["premium"],
        {
            "vehicle_type": "premium",
            "total_revenue": 100.0,
            "total_transactions": 2,
            "avg_transaction_amount": 50.0,
            "max_transaction_amount": 80.0,
            "min_transaction_amount": 20.0,
            "avg_rental_hours": 2.5,
        },
    )
    assert_row(
        got["basic"],
        {
            "vehicle_type": "basic",
            "total_revenue": 55.0,
            "total_transactions": 2,
            "avg_transaction_amount": 27.5,
            "max_transaction_amount": 30.0,
            "min_transaction_amount": 25.0,
            "avg_rental_hours": 2.75,
        },
    )
    assert got["high_end"]["total_revenue"] == 1200.0
    assert got["high_end"]["avg_rental_hours"] == 24.0


def test_vehicle_performance(metrics):
    columns, rows = metrics("vehicle_performance")
    assert columns == VEHICLE_COLUMNS
    got = {
        r["vehicle_id"]: (
            r["brand"],
            r["vehicle_type"],
            r["total_revenue"],
            r["total_transactions"],
            r["total_rental_hours"],
        )
        for r in rows
    }
    assert got == {
        "v1": ("BMW", "premium", 100.0, 2, 5.0),
        "v2": ("Kia", "basic", 55.0, 2, 5.5),
        "v3": ("Tesla", "high_end", 1200.0, 1, 24.0),
    }


def test_daily_metrics(metrics):
    columns, rows = metrics("daily_metrics")
    assert columns == DAILY_COLUMNS
    got = keyed(rows, "rental_date")
    assert set(got) == {date(2024, 1, 31), date(2024, 2, 1), date(2024, 3, 10)}
    assert_row(
        got[date(2024, 2, 1)],
        {
            "rental_date": date(2024, 2, 1),
            "total_transactions": 3,  # r2, r3, r5
            "total_revenue": 1245.0,
            "avg_transaction_value": 415.0,
            "max_rental_hours": 24.0,
            "min_rental_hours": 1.0,
            "avg_rental_hours": 27.5 / 3,
            "unique_users": 2,
        },
    )
    assert_row(
        got[date(2024, 1, 31)],
        {
            "rental_date": date(2024, 1, 31),
            "total_transactions": 1,
            "total_revenue": 80.0,
            "avg_transaction_value": 80.0,
            "max_rental_hours": 4.0,
            "min_rental_hours": 4.0,
            "avg_rental_hours": 4.0,
            "unique_users": 1,
        },
    )
    assert got[date(2024, 3, 10)]["total_revenue"] == 30.0


def test_user_metrics(metrics):
    columns, rows = metrics("user_metrics")
    assert columns == USER_COLUMNS
    got = keyed(rows, "user_id")
    assert set(got) == {"u1", "u2", "u3"}
    assert_row(
        got["u1"],
        {
            "user_id": "u1",
            "first_name": "Ann",
            "last_name": "Lee",
            "total_transactions": 2,
            "total_revenue": 105.0,
            "avg_spend": 52.5,
            "max_spend": 80.0,
            "min_spend": 25.0,
            "total_rental_hours": 6.5,
        },
    )
    assert_row(
        got["u2"],
        {
            "user_id": "u2",
            "first_name": "Bob",
            "last_name": "Ray",
            "total_transactions": 2,
            "total_revenue": 1220.0,
            "avg_spend": 610.0,
            "max_spend": 1200.0,
            "min_spend": 20.0,
            "total_rental_hours": 25.0,
        },
    )
    assert got["u3"]["total_revenue"] == 30.0 and got["u3"]["total_rental_hours"] == 3.0


def test_a_missing_local_input_fails_before_reading(tmp_path):
    """Sail reads a missing path as an empty table; the jobs must fail as on Spark instead."""
    from rental_common import JobError, require_local_path

    present = tmp_path / "with space"
    present.mkdir()
    require_local_path(present.as_uri())
    require_local_path(str(present))
    missing = (tmp_path / "processed" / "clean").as_uri()
    with pytest.raises(JobError, match=r"\[PATH_NOT_FOUND\] Path does not exist"):
        require_local_path(missing)
    # Not a local path: left to the engine reading it (EMR's S3).
    require_local_path("s3://bucket/nowhere/")
