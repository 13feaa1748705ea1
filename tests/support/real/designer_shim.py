"""Names Designer's code needs on Python 3.11 with pandas 1.5.3, restored at run time (no
installed file is edited)."""

import collections
import collections.abc

for _name in (
    "Iterable",
    "Mapping",
    "MutableMapping",
    "Sequence",
    "Callable",
    "Hashable",
    "Set",
    "MutableSet",
    "MutableSequence",
):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

import pandas.core.dtypes.common as _common  # noqa: E402

if not hasattr(_common, "is_string_like_dtype"):
    _common.is_string_like_dtype = lambda arr_or_dtype: _common.is_string_dtype(arr_or_dtype)  # type: ignore[attr-defined]

import pandas.core.arrays.integer as _integer  # noqa: E402

if not hasattr(_integer, "_IntegerDtype"):
    _integer._IntegerDtype = _integer.IntegerDtype  # type: ignore[attr-defined]
