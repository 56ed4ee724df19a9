"""Location and vehicle KPIs of the clean rentals.

Reads (Parquet written by rental_clean.py):
    PROCESSED/rentals_clean, PROCESSED/locations, PROCESSED/vehicles
Writes (Parquet, Snappy, mode overwrite):
    OUTPUT/location_performance      one row per pickup location:
        location_id, location_name, city, state, total_revenue, total_transactions,
        avg_transaction_amount, max_transaction_amount, min_transaction_amount,
        unique_vehicles, total_rental_hours
    OUTPUT/vehicle_type_performance  one row per vehicle_type:
        vehicle_type, total_revenue, total_transactions, avg_transaction_amount,
        max_transaction_amount, min_transaction_amount, avg_rental_hours
    OUTPUT/vehicle_performance       one row per rented vehicle:
        vehicle_id, brand, vehicle_type, total_revenue, total_transactions, total_rental_hours

Revenue is total_amount. Usage:
    spark-submit --py-files rental_common.py rental_vehicle_location_metrics.py \\
        --processed s3://bucket/processed --output s3://bucket/metrics
"""

from __future__ import annotations

import argparse
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import rental_common as rc

LOCATION_COLUMNS = [
    "location_id",
    "location_name",
    "city",
    "state",
    "total_revenue",
    "total_transactions",
    "avg_transaction_amount",
    "max_transaction_amount",
    "min_transaction_amount",
    "unique_vehicles",
    "total_rental_hours",
]
VEHICLE_TYPE_COLUMNS = [
    "vehicle_type",
    "total_revenue",
    "total_transactions",
    "avg_transaction_amount",
    "max_transaction_amount",
    "min_transaction_amount",
    "avg_rental_hours",
]
VEHICLE_COLUMNS = [
    "vehicle_id",
    "brand",
    "vehicle_type",
    "total_revenue",
    "total_transactions",
    "total_rental_hours",
]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="rental_vehicle_location_metrics.py", description=__doc__.splitlines()[0]
    )
    p.add_argument("--processed", required=True, help="URI prefix written by rental_clean.py")
    p.add_argument("--output", required=True, help="URI prefix for the KPI tables")
    return p.parse_args(argv)


def _amount_stats():
    return [
        F.sum("total_amount").alias("total_revenue"),
        F.count(F.lit(1)).alias("total_transactions"),
        F.avg("total_amount").alias("avg_transaction_amount"),
        F.max("total_amount").alias("max_transaction_amount"),
        F.min("total_amount").alias("min_transaction_amount"),
    ]


def location_performance(rentals: DataFrame, locations: DataFrame) -> DataFrame:
    per_pickup = rentals.groupBy(F.col("pickup_location").alias("location_id")).agg(
        *_amount_stats(),
        F.countDistinct("vehicle_id").alias("unique_vehicles"),
        F.sum("rental_hours").alias("total_rental_hours"),
    )
    names = locations.select("location_id", "location_name", "city", "state")
    return per_pickup.join(names, "location_id", "left").select(*LOCATION_COLUMNS)


def vehicle_type_performance(rentals: DataFrame, vehicles: DataFrame) -> DataFrame:
    typed = rentals.join(vehicles.select("vehicle_id", "vehicle_type"), "vehicle_id", "left")
    return (
        typed.groupBy("vehicle_type")
        .agg(*_amount_stats(), F.avg("rental_hours").alias("avg_rental_hours"))
        .select(*VEHICLE_TYPE_COLUMNS)
    )


def vehicle_performance(rentals: DataFrame, vehicles: DataFrame) -> DataFrame:
    per_vehicle = rentals.groupBy("vehicle_id").agg(
        F.sum("total_amount").alias("total_revenue"),
        F.count(F.lit(1)).alias("total_transactions"),
        F.sum("rental_hours").alias("total_rental_hours"),
    )
    attrs = vehicles.select("vehicle_id", "brand", "vehicle_type")
    return per_vehicle.join(attrs, "vehicle_id", "left").select(*VEHICLE_COLUMNS)


def run(spark: SparkSession, args) -> None:
    processed = args.processed
    rentals = rc.read_parquet(spark, rc.join_uri(processed, "rentals_clean")).select(
        "vehicle_id", "pickup_location", "total_amount", "rental_hours"
    )
    locations = rc.read_parquet(spark, rc.join_uri(processed, "locations"))
    vehicles = rc.read_parquet(spark, rc.join_uri(processed, "vehicles"))

    rc.write_parquet(
        location_performance(rentals, locations).coalesce(1),
        rc.join_uri(args.output, "location_performance"),
    )
    rc.write_parquet(
        vehicle_type_performance(rentals, vehicles).coalesce(1),
        rc.join_uri(args.output, "vehicle_type_performance"),
    )
    rc.write_parquet(
        vehicle_performance(rentals, vehicles), rc.join_uri(args.output, "vehicle_performance")
    )


def main(argv=None, spark: SparkSession | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with rc.job_session("rental_vehicle_location_metrics", spark) as session:
        run(session, args)


if __name__ == "__main__":
    try:
        main()
    except rc.JobError as exc:
        print(f"rental_vehicle_location_metrics: error: {exc}", file=sys.stderr)
        sys.exit(1)
