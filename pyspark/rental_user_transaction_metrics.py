"""Daily and per-user KPIs of the clean rentals.

Reads (Parquet written by rental_clean.py):
    PROCESSED/rentals_clean, PROCESSED/users
Writes (Parquet, Snappy, mode overwrite):
    OUTPUT/daily_metrics  one row per rental_date (the date of rental_start_time):
        rental_date, total_transactions, total_revenue, avg_transaction_value,
        max_rental_hours, min_rental_hours, avg_rental_hours, unique_users
    OUTPUT/user_metrics   one row per user with at least one rental:
        user_id, first_name, last_name, total_transactions, total_revenue, avg_spend,
        max_spend, min_spend, total_rental_hours

Revenue is total_amount. Timestamps are read in UTC, as rental_clean.py wrote them.
Usage:
    spark-submit --py-files rental_common.py rental_user_transaction_metrics.py \\
        --processed s3://bucket/processed --output s3://bucket/metrics
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import rental_common as rc

DAILY_COLUMNS = [
    "rental_date",
    "total_transactions",
    "total_revenue",
    "avg_transaction_value",
    "max_rental_hours",
    "min_rental_hours",
    "avg_rental_hours",
    "unique_users",
]
USER_COLUMNS = [
    "user_id",
    "first_name",
    "last_name",
    "total_transactions",
    "total_revenue",
    "avg_spend",
    "max_spend",
    "min_spend",
    "total_rental_hours",
]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="rental_user_transaction_metrics.py", description=__doc__.splitlines()[0]
    )
    p.add_argument("--processed", required=True, help="URI prefix written by rental_clean.py")
    p.add_argument("--output", required=True, help="URI prefix for the KPI tables")
    return p.parse_args(argv)


def daily_metrics(rentals: DataFrame) -> DataFrame:
    return (
        rentals.groupBy(F.to_date("rental_start_time").alias("rental_date"))
        .agg(
            F.count(F.lit(1)).alias("total_transactions"),
            F.sum("total_amount").alias("total_revenue"),
            F.avg("total_amount").alias("avg_transaction_value"),
            F.max("rental_hours").alias("max_rental_hours"),
            F.min("rental_hours").alias("min_rental_hours"),
            F.avg("rental_hours").alias("avg_rental_hours"),
            F.countDistinct("user_id").alias("unique_users"),
        )
        .select(*DAILY_COLUMNS)
    )


def user_metrics(rentals: DataFrame, users: DataFrame) -> DataFrame:
    per_user = rentals.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("total_transactions"),
        F.sum("total_amount").alias("total_revenue"),
        F.avg("total_amount").alias("avg_spend"),
        F.max("total_amount").alias("max_spend"),
        F.min("total_amount").alias("min_spend"),
        F.sum("rental_hours").alias("total_rental_hours"),
    )
    names = users.select("user_id", "first_name", "last_name")
    return per_user.join(names, "user_id", "left").select(*USER_COLUMNS)


def run(spark: SparkSession, args) -> None:
    rentals = rc.read_parquet(spark, rc.join_uri(args.processed, "rentals_clean")).select(
        "user_id", "rental_start_time", "total_amount", "rental_hours"
    )
    users = rc.read_parquet(spark, rc.join_uri(args.processed, "users"))
    rc.write_parquet(daily_metrics(rentals).coalesce(1), rc.join_uri(args.output, "daily_metrics"))
    rc.write_parquet(user_metrics(rentals, users), rc.join_uri(args.output, "user_metrics"))


def main(argv=None, spark: SparkSession | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with rc.job_session("rental_user_transaction_metrics", spark) as session:
        run(session, args)


if __name__ == "__main__":
    try:
        main()
    except rc.JobError as exc:
        print(f"rental_user_transaction_metrics: error: {exc}", file=sys.stderr)
        sys.exit(1)
