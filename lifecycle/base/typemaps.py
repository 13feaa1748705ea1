"""MLflow column types (as a signature names them) and what they are in Arrow and Spark SQL.

One table for every engine, so that the local engine, the lean path and Spark read and
write a column with the same type.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: Column types read straight from the ``MLmodel`` file; anything else (arrays, objects,
#: maps, tensors) is left to MLflow's own schema code.
PLAIN_TYPES = frozenset(
    ("double", "float", "long", "integer", "boolean", "string", "binary", "datetime")
)
#: Column types a model can take as one NumPy matrix.
NUMERIC_TYPES = frozenset(("double", "float", "long", "integer"))


@cache
def arrow_types() -> dict[str, pa.DataType]:
    """MLflow column type -> Arrow type (types without an entry are read as text).

    A function, so that importing this module does not import Arrow (the server's start-up
    does not need it).
    """
    import pyarrow as pa

    return {
        "double": pa.float64(),
        "float": pa.float32(),
        "long": pa.int64(),
        "integer": pa.int32(),
        "boolean": pa.bool_(),
        "string": pa.string(),
    }


#: MLflow column type -> Spark SQL type name (unknown types: ``double``).
SPARK_TYPES: dict[str, str] = {
    "double": "double",
    "float": "float",
    "long": "bigint",
    "integer": "int",
    "boolean": "boolean",
    "string": "string",
    "datetime": "timestamp",
}


def spark_type(mlflow_type: str) -> str:
    """The Spark SQL type name of an MLflow column type (``double`` when unknown)."""
    return SPARK_TYPES.get(mlflow_type, "double")
