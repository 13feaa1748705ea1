"""Writing scored rows: CSV rendered straight from Arrow (numbers unquoted, text quoted as\nneeded), input lines prefixed with predictions, Parquet part files merged at the end, and\nthe rejects file's columns."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REJECTS_HEADER = ["source_file", "row_number", "raw_text", "reason"]


SOURCE_COLUMNS = ["source_file", "source_row"]


class ParquetParts:
    """Parquet output as numbered part files, so a killed run can resume.

    A Parquet file is only readable once its footer is written, so the output is streamed
    into parts instead: each chunk is one row group, a part is sealed (closed) at every
    checkpoint, and a resumed run drops the parts written after its checkpoint. At the end
    the parts' row groups are copied in order into one file, so the result does not depend
    on where the parts were cut: an interrupted and an uninterrupted run write the same bytes.
    """

    def __init__(self, folder: Path, done: int) -> None:
        import pyarrow.parquet as pq

        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.done = folder, done
        for path in folder.glob("*.parquet"):
            if int(path.stem) >= done:  # written after the checkpoint: redone
                path.unlink()
        first = self._path(0)
        self.schema: pa.Schema | None = pq.read_schema(first) if done and first.exists() else None
        self.writer: Any = None

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.parquet"

    def write(self, table: pa.Table) -> None:
        """Append ``table`` as one row group (cast to the output's schema, set by the first)."""
        import pyarrow.parquet as pq

        if self.schema is None:
            self.schema = table.schema
        if self.writer is None:
            self.writer = pq.ParquetWriter(self._path(self.done), self.schema)
        self.writer.write_table(table.cast(self.schema), row_group_size=max(1, table.num_rows))

    def seal(self) -> int:
        """Close the current part (it is then complete); the number of complete parts."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.done += 1
        return self.done

    def close(self) -> None:
        """Close an open part without counting it (after a failure)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None

    def merge(self, out_fh: Any) -> bool:
        """Copy every part's row groups, in order, into ``out_fh``; False when there were none."""
        import pyarrow.parquet as pq

        self.seal()
        writer = None
        for index in range(self.done):
            part = pq.ParquetFile(self._path(index))
            for group in range(part.num_row_groups):
                table = part.read_row_group(group)
                if writer is None:
                    writer = pq.ParquetWriter(out_fh, table.schema)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
            part.close()
        if writer is None:
            return False
        writer.close()
        return True


def header_bytes(names: list[str], delimiter: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerow(names)
    return buf.getvalue().encode("utf-8")


def prefixed_lines(lines: pa.Array, file_name: str, rows: np.ndarray, delimiter: str) -> bytes:
    """CSV lines with ``source_file`` and ``source_row`` put in front."""
    import pyarrow.compute as pc

    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="").writerow([file_name])
    name = buf.getvalue()
    rows_text = pc.cast(pa.array(rows, pa.int64()), pa.string())
    joined = pc.binary_join_element_wise(name, rows_text, lines, delimiter)
    return _join_lines(joined)


def render_csv(table: pa.Table, delimiter: str, safe: set[str] | None = None) -> bytes:
    """``table`` as CSV records without a header, quoting only the values that need it."""
    if table.num_rows == 0 or table.num_columns == 0:
        return b""
    return _join_lines(render_lines(table, delimiter, safe))


#: Characters a number rendered as text may hold: a delimiter among them forces the check.
_NUMBER_CHARS = frozenset("0123456789.+-eEinfaINFA")


def render_lines(table: pa.Table, delimiter: str, safe: set[str] | None = None) -> pa.Array:
    """Each row of ``table`` as one CSV record (no line end).

    Arrow's own writer quotes every string; this renders each column to text with Arrow
    compute (vectorised), quotes values holding the delimiter, a quote or a line break,
    and joins the columns, so kept columns come out as they were read. Columns in ``safe``
    and numeric columns (unless the delimiter could occur in a number) skip that check.
    """
    import pyarrow.compute as pc

    if table.num_rows == 0 or table.num_columns == 0:
        return pa.array([], pa.string())
    pattern = "[" + re.escape(delimiter) + '"\\r\\n]'
    numbers_safe = delimiter not in _NUMBER_CHARS
    parts = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if name in (safe or ()) or (numeric and numbers_safe):
            parts.append(pc.fill_null(text, ""))
            continue
        needs = pc.match_substring_regex(text, pattern)
        if pc.any(needs).as_py():
            quoted = pc.binary_join_element_wise(
                '"', pc.replace_substring(text, '"', '""'), '"', ""
            )
            text = pc.if_else(needs, quoted, text)
        parts.append(pc.fill_null(text, ""))
    lines = pc.binary_join_element_wise(*parts, delimiter) if len(parts) > 1 else parts[0]
    return lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines


def _join_lines(lines: pa.Array | pa.ChunkedArray) -> bytes:
    """The records followed by a newline each, as one byte string (no Python-level loop)."""
    import pyarrow.compute as pc

    if len(lines) == 0:
        return b""
    ended = pc.binary_join_element_wise(lines, "\n", "")
    arr = ended.combine_chunks() if isinstance(ended, pa.ChunkedArray) else ended
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    return arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def unique_names(names: list[str], taken: set[str] | None = None) -> list[str]:
    seen: dict[str, int] = {n: 0 for n in taken or ()}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out
