"""Property test of the V2 fast path's decoder: whenever ``fast_matrix`` takes a request, its
matrix equals what the general path's ``decode_inputs`` makes of the same request; and the
fast answer's bytes equal the general encoder's for the same predictions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from serving import v2

COLUMNS = ("a", "b", "c")
SIGNATURE = [(c, "double") for c in COLUMNS]

# Mostly what clients send (so that the fast path takes many examples), sometimes not.
_plain = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**20), 2**20))
values = st.one_of(
    _plain,
    _plain,
    _plain,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
datatypes = st.sampled_from(["FP64"] * 5 + ["INT64"] * 2 + ["FP32", "BOOL", "BYTES", "INT32"])


@st.composite
def per_column(draw: st.DrawFn) -> dict[str, Any]:
    """A request the fast path should take, then (half the time) one mutation of it."""
    rows = draw(st.integers(min_value=1, max_value=3))
    inputs = []
    for name in draw(st.permutations([*COLUMNS, "extra"])):
        ints = draw(st.booleans())
        data = draw(
            st.lists(st.integers(-(2**20), 2**20) if ints else _plain, min_size=rows, max_size=rows)
        )
        shape = draw(st.sampled_from([[rows], [rows, 1]]))
        inputs.append({"name": name, "shape": shape,
                       "datatype": "INT64" if ints else "FP64", "data": data})  # fmt: skip
    if draw(st.booleans()):
        t = inputs[draw(st.integers(0, len(inputs) - 1))]
        mutation = draw(st.integers(0, 9))
        if mutation == 0:
            t["datatype"] = draw(datatypes)
        elif mutation == 6:
            t[draw(st.sampled_from(["name", "datatype"]))] = ["not", "hashable"]
        elif mutation == 7:
            del t[draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
        elif mutation == 8:
            inputs[inputs.index(t)] = [t]  # an input that is not an object
        elif mutation == 9:
            t["data"] = draw(st.sampled_from(["a" * rows, {"x": 1}, 1.5, None, [[1.0]] * rows]))
        elif mutation == 1:
            t["data"][0] = draw(values)
        elif mutation == 2:
            t["shape"] = draw(
                st.sampled_from(
                    [[1, rows], [rows, 2], [rows + 1], [], [float(rows)], [rows, 1.0], [True]]
                )
            )
        elif mutation == 3:
            t["parameters"] = {"content_type": "np"}
        elif mutation == 4:
            inputs.remove(t)
        else:
            t["data"] = t["data"] + t["data"][:1]
    return {"inputs": inputs}


@st.composite
def one_matrix(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(st.integers(min_value=0, max_value=3))
    data = draw(st.lists(values, min_size=rows * 3, max_size=rows * 3))
    shape = draw(
        st.sampled_from(
            [[rows, 3], [rows, 3], [3, rows], [rows * 3], [float(rows), 3], [rows, 3.0]]
        )
    )
    if draw(st.booleans()) and rows:
        data = [data[i * 3 : i * 3 + 3] for i in range(rows)]
    inp: dict[str, Any] = {"name": "x", "shape": shape, "datatype": draw(datatypes), "data": data}
    if draw(st.integers(0, 9)) == 0:
        inp["datatype"] = ["FP64"]  # unhashable
    if draw(st.integers(0, 9)) == 0:
        inp["parameters"] = {"content_type": "np"}
    return {"inputs": [inp] if draw(st.integers(0, 9)) else [[inp]]}


def _general(obj: dict[str, Any]) -> np.ndarray | None:
    try:
        frame = v2.decode_inputs(obj, SIGNATURE)
    except ValueError:
        return None
    try:
        return np.asarray(frame.to_numpy(dtype=np.float64))
    except (TypeError, ValueError):
        return None


@settings(max_examples=400, deadline=None)
@given(st.one_of(per_column(), one_matrix()))
def test_the_fast_decoder_takes_only_what_it_decodes_like_the_general_path(
    obj: dict[str, Any],
) -> None:
    fast = v2.fast_matrix(obj, COLUMNS)
    event(f"fast path: {fast is not None}")
    if fast is None:
        return
    general = _general(obj)
    assert general is not None, obj  # the general path accepts what the fast path took
    assert fast.dtype == np.float64 and np.isfinite(fast).all()
    np.testing.assert_array_equal(fast, general)


def _typed_case(shape: list[Any], datatype: str = "FP64", data: list[Any] | None = None) -> Any:
    return {"inputs": [
        {"name": c, "shape": shape, "datatype": datatype, "data": data or [1.5]} for c in COLUMNS
    ]}  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(per_column(), one_matrix()), st.one_of(st.none(), st.text(max_size=3), st.integers())
)
@example(_typed_case([1.0]), None)  # sizes that equal 1 but are not integers
@example(_typed_case([True]), None)
@example(_typed_case([1, 1.0]), "a")
@example(_typed_case([1], "INT64", [1.0]), None)  # an INT64 tensor holding a float
@example(_typed_case([1], "FP64", [2**60 + 1]), None)  # an integer not exact in float64
def test_the_typed_decoder_takes_only_what_it_decodes_like_the_general_path(
    obj: dict[str, Any], rid: Any
) -> None:
    """``fast_request`` reads the bytes (msgspec, typed): whenever it takes a request, its
    matrix is the general path's for the JSON that json.loads makes of the same bytes, and
    the id is the request's."""
    if rid is not None:
        obj = {"id": rid, **obj}
    body = json.dumps(obj).encode()
    found = v2.fast_request(body, COLUMNS)
    event(f"typed fast path: {found is not None}")
    if found is None:
        return
    general = _general(json.loads(body))
    assert general is not None, obj
    matrix, sent_id = found
    assert matrix.dtype == np.float64 and np.isfinite(matrix).all()
    np.testing.assert_array_equal(matrix, general)
    assert sent_id == rid
    np.testing.assert_array_equal(matrix, v2.fast_matrix(json.loads(body), COLUMNS))


@given(
    st.one_of(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5),
        st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=5),
    ),
    st.one_of(st.none(), st.text(max_size=5)),
)
def test_the_fast_answer_is_the_general_encoders_bytes(preds: list[Any], rid: Any) -> None:
    arr = np.asarray(preds)
    fast = v2.fast_infer_reply("m", "1", rid if rid is not None else "fixed", arr)
    general = v2.infer_response("m", "1", rid if rid is not None else "fixed", arr)
    assert (fast.status, fast.body) == (general.status, general.body)


def test_the_fast_decoder_takes_the_common_requests() -> None:
    """The property above would pass if fast_matrix took nothing: it takes these."""
    per_col = {"id": "1", "inputs": [
        {"name": c, "shape": [2], "datatype": "FP64", "data": [1.5, 2]} for c in COLUMNS
    ]}  # fmt: skip
    matrix = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64",
                          "data": [[1, 2, 3], [4.5, 5, 6]]}]}  # fmt: skip
    ints = {"inputs": [
        {"name": c, "shape": [1, 1], "datatype": "INT64", "data": [7]} for c in COLUMNS
    ]}  # fmt: skip
    for obj in (per_col, matrix, ints):
        fast = v2.fast_matrix(obj, COLUMNS)
        assert fast is not None, obj
        np.testing.assert_array_equal(fast, _general(obj))
    for obj in (per_col, ints):  # the typed decoder takes the per-column form
        found = v2.fast_request(json.dumps(obj).encode(), COLUMNS)
        assert found is not None, obj
        np.testing.assert_array_equal(found[0], _general(obj))
    # The body's own bytes decide: a NaN literal or a huge integer is not taken.
    nan_body = (
        b'{"inputs": ['
        + b", ".join(
            b'{"name": "%s", "shape": [1], "datatype": "FP64", "data": [%s]}' % (c.encode(), v)
            for c, v in zip(COLUMNS, [b"NaN", b"1", b"2"], strict=True)
        )
        + b"]}"
    )
    assert v2.fast_request(nan_body, COLUMNS) is None
    assert v2.fast_request(nan_body.replace(b"NaN", b"1" * 30), COLUMNS) is None
