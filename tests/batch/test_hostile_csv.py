"""Hostile CSVs for the batch reader (issue #16 item 7): hypothesis writes files of records
with quotes, delimiters and newlines inside fields, NUL bytes, huge fields, mixed line
endings, blank lines, a BOM, invalid UTF-8, non-numeric features and records with the wrong
number of fields; the real engine scores them with a real (models-from-code) model.

The oracle is the list of records the test wrote: every record is read (none silently
dropped), every well-formed numeric record is scored, every other one is rejected with its
reason, and the output and the rejects file hold exactly those rows. A file with bytes that
are not UTF-8 is refused whole, in one line, with nothing written."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.engine import score
from lifecycle.base.errors import ScoringError
from lifecycle.base.workspaces import Workspace, local_workspace
from tests.support.batch_models import save_code_model

HEADER = ["f0", "f1", "f2", "n", "note"]

_note_chars = st.characters(
    codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc"), include_characters='",\n\r\x00\t'
)
_notes = st.one_of(
    st.text(_note_chars, max_size=30),
    st.just("x" * 300_000),  # one huge field
    st.just('"' * 7 + "\r\n" * 3),
)
_UNDECODABLE = "@@not-utf-8@@"
_bad_numbers = st.sampled_from(["abc", "1.2.3", "--", "\x00", "1e", "nan?", " 4 4"])


@st.composite
def records(draw: st.DrawFn) -> tuple[str, list[str]]:
    """One record: ``good``, ``bad`` (a non-numeric feature) or ``shape`` (field count)."""
    kind = draw(st.sampled_from(["good", "good", "good", "bad", "shape", "undecodable"]))
    fields = [
        repr(draw(st.floats(-1e6, 1e6, allow_nan=False))),
        repr(draw(st.floats(-1e6, 1e6, allow_nan=False))),
        str(draw(st.integers(-1000, 1000))),
        str(draw(st.integers(-(2**40), 2**40))),
        draw(_notes),
    ]
    if kind == "bad":
        fields[draw(st.integers(0, 3))] = draw(_bad_numbers)
    elif kind == "shape":
        fields = fields[:3] if draw(st.booleans()) else [*fields, "extra"]
    elif kind == "undecodable":
        fields[4] = _UNDECODABLE  # replaced by bytes that are not UTF-8 when written
    return kind, fields


@st.composite
def hostile_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """The file's bytes and the kind of each record written in it, in order."""
    rows = draw(st.lists(records(), min_size=1, max_size=25))
    out = io.BytesIO()
    if draw(st.booleans()):
        out.write("\ufeff".encode())
    out.write(",".join(HEADER).encode() + b"\n")
    kinds = []
    for kind, fields in rows:
        for _ in range(draw(st.integers(0, 1))):
            out.write(draw(st.sampled_from([b"\n", b"\r\n"])))  # blank lines
        line = io.StringIO()
        # "\r\n" as the writer's terminator makes it quote fields holding either character.
        csv.writer(line, lineterminator="\r\n").writerow(fields)
        data = line.getvalue()[:-2].encode("utf-8").replace(_UNDECODABLE.encode(), b"ab\xff\xfecd")
        out.write(data + draw(st.sampled_from([b"\n", b"\r\n", b"\r"])))
        kinds.append(kind)
    return out.getvalue(), kinds


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_code_model(tmp_path_factory.mktemp("m") / "code"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return local_workspace("dev", tmp_path_factory.mktemp("ws"))


def _csv_records(path: Path) -> list[list[str]]:
    csv.field_size_limit(sys.maxsize)  # the huge fields come back in the rejects file
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        return list(csv.reader(fh))[1:]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile_files())
def test_hostile_csv_is_read_whole_and_every_row_is_scored_or_rejected(
    model: str,
    ws: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[bytes, list[str]],
) -> None:
    data, kinds = case
    folder = tmp_path_factory.mktemp("hostile")
    src = folder / "in.csv"
    src.write_bytes(data)
    out = folder / "out.csv"
    if "undecodable" in kinds:
        # The input must be UTF-8: a file with bytes that are not is refused whole, in one
        # line naming the place, and nothing is written.
        with pytest.raises(ScoringError) as info:
            score(ws, model, src, out, workers=1, max_error_rate=1.0, keep_all=True, record=False)
        assert "\n" not in str(info.value) and "UTF8" in str(info.value), str(info.value)
        assert not out.exists() and not list(folder.glob("out.csv*"))
        return
    manifest = score(
        ws, model, src, out, workers=1, max_error_rate=1.0, keep_all=True, record=False
    )
    good = kinds.count("good")
    assert manifest.rows_read == len(kinds), (manifest.rows_read, kinds)
    assert manifest.rows_read == manifest.rows_scored + manifest.rows_rejected
    assert manifest.rows_scored == good, (manifest.rows_scored, kinds)
    scored = pd.read_csv(out, keep_default_na=False) if good else None
    if scored is not None:
        assert len(scored) == good
    rejects = out.with_name(out.name + ".rejects.csv")
    if manifest.rows_rejected:
        assert len(_csv_records(rejects)) == manifest.rows_rejected
    else:
        assert not rejects.exists()
