"""Batch scoring of CSV and Parquet files through a model's pyfunc: local streaming engine,
Spark, and Azure ML batch deployment specs."""
