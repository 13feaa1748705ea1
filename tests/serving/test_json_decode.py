"""The scoring server decodes JSON bodies with msgspec first: whatever it returns must be what
:func:`json.loads` (MLflow's decoder) returns for the same bytes, including what msgspec
refuses (NaN literals, numbers past float64, surrogates, a byte-order mark, UTF-16) and
integers of any size."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.protocol import TooDeeplyNested, decode_json_object

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def _expected(body: bytes) -> Any:
    try:
        obj = json.loads(body)
    except RecursionError:
        return TooDeeplyNested
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 and 1.0 differ; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check(body: bytes) -> None:
    want = _expected(body)
    if want is TooDeeplyNested:
        with pytest.raises(TooDeeplyNested):
            decode_json_object(body)
        return
    assert _same(decode_json_object(body), want), body[:200]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), _values, max_size=5), st.booleans())
def test_objects_decode_as_json_loads_decodes_them(doc: dict[str, Any], ascii_only: bool) -> None:
    _check(json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
)
def test_number_literals_decode_to_the_same_value(literal: str) -> None:
    _check(f'{{"x": [{literal}], "y": {literal}}}'.encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 18446744073709551616}',  # past 64 bits: stays an exact int
        b'{"a": -9223372036854775809}',
        b'{"a": 9223372036854775808}',
        b'{"a": NaN, "b": [Infinity, -Infinity]}',  # msgspec refuses these literals
        b'{"a": 1E400}',
        b'{"a": "\\ud800"}',  # a lone surrogate
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
        '{"a": 1}'.encode("utf-16"),
        b'{"a": 1, "a": 2}',
        b'{"a": -0.0, "b": -0}',
        b"[1, 2]",
        b"not json",
        b"",
        b"\xff\xfe\xfd",
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # too deep for either decoder
    ],
)
def test_bodies_msgspec_refuses_decode_as_json_loads(body: bytes) -> None:
    _check(body)
