"""Input side of batch scoring: which files, and their rows as a stream of fixed-size chunks.

Owns: expanding files / folders / globs into an ordered list of inputs; streaming CSV
(header row, quoted fields with delimiters, quotes and newlines, UTF-8 BOM, blank lines,
``NA``/empty as missing, another delimiter) and Parquet as Arrow tables of exactly
``chunk_rows`` rows (the last may be shorter). CSV columns are read as text, so the schema
module decides how each value is coerced and which rows are rejected; malformed CSV records
(wrong number of fields) are collected instead of failing the file.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from lifecycle.base.errors import ScoringError

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
NULL_VALUES = ["", "NA"]
#: Rows per chunk: bigger chunks gain little speed here and each chunk in flight costs memory.
DEFAULT_CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class InputFile:
    """One input file: its path, format (``csv`` or ``parquet``) and size in bytes.

    An input on storage that only Spark reads (``hdfs://``, ``s3a://``, ``file://``...) has
    its ``uri``, modification time and column names from Spark's file system (``path`` is
    then only its name).
    """

    path: Path
    fmt: str
    size: int
    uri: str | None = None
    mtime_ns: int | None = None
    columns: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """The file name used in ``source_file`` columns and rejects."""
        return self.path.name

    @property
    def where(self) -> str:
        """The input as the user named it: its URI, else its path."""
        return self.uri or str(self.path)

    def modified_ns(self) -> int:
        """Its modification time in nanoseconds (part of a checkpoint's fingerprint)."""
        return self.mtime_ns if self.mtime_ns is not None else self.path.stat().st_mtime_ns


@dataclass
class MalformedRecord:
    """A CSV record the parser could not split into the header's number of fields."""

    text: str
    reason: str
    #: Data rows of its chunk parsed before it (None: unknown, listed after the chunk's rows).
    after_rows: int | None = None


@dataclass
class Chunk:
    """A run of rows of one input file.

    ``first_row`` is the 1-based number of the chunk's first data row in its file (rows the
    parser could split; malformed records are not numbered).
    """

    file_index: int
    file_name: str
    first_row: int
    table: pa.Table
    seq: int = 0
    malformed: list[MalformedRecord] = field(default_factory=list)
    #: Row numbers count from the chunk's start (the writer adds the rows before it).
    relative: bool = False


def format_of(path: Path) -> str:
    """``parquet`` for .parquet/.pq files, else ``csv``."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"


def expand_inputs(inputs: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> list[InputFile]:
    """Expand files, folders (their CSV/Parquet files, sorted) and globs, in the order given.

    Raises:
        ScoringError: a path or glob matches nothing, or nothing scorable is found.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
            )
            if not files:
                raise ScoringError(
                    f"Input folder '{path}' holds no CSV or Parquet files "
                    f"(expected names ending in {', '.join(SUPPORTED_SUFFIXES)})"
                )
            found.extend(files)
        elif path.is_file():
            found.append(path)
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise ScoringError(f"Input glob '{text}' matches no files")
            found.extend(matches)
        else:
            raise ScoringError(f"Input '{text}' does not exist (expected a file, folder or glob)")
    seen: set[Path] = set()
    out: list[InputFile] = []
    for p in found:
        rp = p.resolve()
        if rp in seen:
            continue
        seen.add(rp)
        out.append(InputFile(path=rp, fmt=format_of(rp), size=rp.stat().st_size))
    return out


#: The largest block Arrow is asked to parse at once (and so the longest record accepted).
MAX_BLOCK_BYTES = 64 << 20


def read_columns(inp: InputFile, delimiter: str = ",") -> list[str]:
    """The column names of an input (a CSV's header row, a Parquet file's schema).

    Raises:
        ScoringError: the file is empty or its header cannot be read.
    """
    if inp.columns is not None:
        return list(inp.columns)
    if inp.fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(inp.path).schema_arrow.names)
    import pyarrow.csv as pacsv

    if inp.size == 0:
        raise ScoringError(f"Input '{inp.path}' is empty: expected a header row")
    # Arrow reads the header with the first block of records; a record longer than the block
    # ("straddles two block boundaries") is retried with a larger one.
    block = 1 << 16
    while True:
        try:
            reader = pacsv.open_csv(
                inp.path,
                read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter,
                    newlines_in_values=True,
                    invalid_row_handler=lambda r: "skip",
                ),
                convert_options=pacsv.ConvertOptions(
                    null_values=NULL_VALUES, strings_can_be_null=True, auto_dict_encode=False
                ),
            )
            break
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if "straddl" in str(exc) and block < min(inp.size + 1, MAX_BLOCK_BYTES):
                block *= 8
                continue
            raise ScoringError(
                f"Cannot read the header of '{inp.path}': {exc}".splitlines()[0]
            ) from exc
    names = list(reader.schema.names)
    reader.close()
    return names


def iter_chunks(
    inp: InputFile,
    file_index: int,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    delimiter: str = ",",
    columns: list[str] | None = None,
    skip_rows: int = 0,
    typed: dict[str, pa.DataType] | None = None,
) -> Iterator[Chunk]:
    """Stream ``inp`` as chunks of exactly ``chunk_rows`` rows (the last may be shorter).

    CSV values stay text (nulls for empty and ``NA``), except the ``typed`` columns, which
    Arrow parses straight to their type (much faster than text then cast). When a typed
    value does not parse, the file continues as text from the first row not yet yielded,
    so bad values become per-row rejects downstream. Malformed records met while reading are
    attached to the file's last chunk, so chunk contents do not depend on read-ahead timing.
    ``skip_rows`` data rows are read and dropped first (resuming a run).

    Raises:
        ScoringError: the file cannot be read (bad encoding, unreadable Parquet).
    """
    done = skip_rows
    if typed and inp.fmt == "csv":
        try:
            for chunk in _iter_chunks_once(
                inp, file_index, chunk_rows, delimiter, columns, skip_rows, typed
            ):
                yield chunk
                done = chunk.first_row - 1 + chunk.table.num_rows
            return
        except _TypedParseError as exc:
            logger.info("%s: %s; reading the rest as text", inp.name, exc)
    yield from _iter_chunks_once(inp, file_index, chunk_rows, delimiter, columns, done, None)


class _TypedParseError(Exception):
    """A value of a typed column did not parse (the caller falls back to text)."""


def _iter_chunks_once(
    inp: InputFile,
    file_index: int,
    chunk_rows: int,
    delimiter: str,
    columns: list[str] | None,
    skip_rows: int,
    typed: dict[str, pa.DataType] | None,
) -> Iterator[Chunk]:
    malformed: list[MalformedRecord] = []
    row = 1
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    schema: pa.Schema | None = None
    try:
        batches: Iterator[pa.RecordBatch]
        if inp.fmt == "parquet":
            batches = _parquet_batches(inp, chunk_rows, columns)
        else:
            batches, malformed = _csv_batches(inp, delimiter, columns, chunk_rows, typed)
        for batch in batches:
            schema = batch.schema
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                head, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
                pending = rest.to_batches() if rest.num_rows else []
                pending_rows = rest.num_rows
                if row + chunk_rows - 1 > skip_rows:
                    yield Chunk(file_index, inp.name, row, _drop_head(head, skip_rows - row + 1))
                row += chunk_rows
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if typed:
            raise _TypedParseError(str(exc).splitlines()[0]) from exc
        raise ScoringError(f"Cannot read '{inp.path}': {exc}".splitlines()[0]) from exc
    tail = (
        pa.Table.from_batches(pending)
        if pending
        else (schema.empty_table() if schema is not None else pa.table({}))
    )
    tail = _drop_head(tail, skip_rows - row + 1) if tail.num_rows else tail
    yield Chunk(file_index, inp.name, max(row, skip_rows + 1), tail, malformed=list(malformed))


def _drop_head(table: pa.Table, n: int) -> pa.Table:
    return table.slice(n) if n > 0 else table


def _csv_batches(
    inp: InputFile,
    delimiter: str,
    columns: list[str] | None,
    chunk_rows: int,
    typed: dict[str, pa.DataType] | None = None,
) -> tuple[Iterator[pa.RecordBatch], list[MalformedRecord]]:
    import pyarrow.csv as pacsv

    names = read_columns(inp, delimiter)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ScoringError(f"Input '{inp.path}' repeats column name(s) {dupes} in its header")
    malformed: list[MalformedRecord] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(
            MalformedRecord(
                text=row.text,
                reason=f"malformed record: expected {row.expected_columns} fields, "
                f"got {row.actual_columns}",
            )
        )
        return "skip"

    # ~ bytes per row from the file average keeps Arrow's blocks near one chunk.
    block = max(1 << 20, min(64 << 20, chunk_rows * max(16, 8 * len(names))))
    reader = pacsv.open_csv(
        inp.path,
        read_options=pacsv.ReadOptions(block_size=block, use_threads=True),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={n: (typed or {}).get(n, pa.string()) for n in names},
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            include_columns=columns,
        ),
    )
    return iter(reader), malformed


def _parquet_batches(
    inp: InputFile, chunk_rows: int, columns: list[str] | None
) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(inp.path)
    yield from pf.iter_batches(batch_size=chunk_rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# CSV as raw blocks of whole records: workers parse them in parallel


@dataclass
class RawBlock:
    """Whole CSV records of one file as bytes (no header), parsed by a worker.

    ``start``/``end`` are byte offsets in the file: a run resumes at a block's ``end``.
    """

    file_index: int
    file_name: str
    names: list[str]
    data: bytes
    start: int
    end: int
    seq: int = 0


def header_end(path: Path) -> int:
    """The byte offset just after the header record (quoted newlines respected)."""
    with open(path, "rb") as fh:
        buf = b""
        while True:
            more = fh.read(1 << 16)
            buf += more
            quotes = 0
            start = 0
            while True:
                i = buf.find(b"\n", start)
                if i < 0:
                    break
                quotes += buf.count(b'"', start, i)
                if quotes % 2 == 0:
                    return i + 1
                start = i + 1
            if not more:
                return len(buf)


def _last_record_end(buf: bytes) -> int:
    """Index just after the last newline outside quotes in ``buf`` (which starts at a record
    boundary), or -1. Quotes are doubled inside quoted fields, so parity tells."""
    i = buf.rfind(b"\n")
    if i < 0:
        return -1
    if buf.find(b'"', 0, i) < 0:  # memchr: much cheaper than counting when there is none
        return i + 1
    quotes = buf.count(b'"', 0, i)
    while True:
        if quotes % 2 == 0:
            return i + 1
        j = buf.rfind(b"\n", 0, i)
        if j < 0:
            return -1
        quotes -= buf.count(b'"', j, i)
        i = j


def block_bytes_for(path: Path, chunk_rows: int) -> int:
    """Bytes per block so that a block holds about ``chunk_rows`` records."""
    with open(path, "rb") as fh:
        sample = fh.read(1 << 16)
    lines = max(1, sample.count(b"\n"))
    per_row = max(1, len(sample) // lines)
    return max(1024, chunk_rows * per_row)


def iter_csv_blocks(
    inp: InputFile,
    file_index: int,
    names: list[str],
    block_bytes: int,
    start: int | None = None,
) -> Iterator[RawBlock]:
    """Cut a CSV file into blocks of whole records (the last block may be empty).

    Reading raw bytes and counting quotes is far cheaper than parsing, so the parsing itself
    runs in the workers, in parallel.

    Blocks end at the last record boundary before each multiple of ``block_bytes`` past the
    header, so where they end depends only on the file, not on where reading started: a run
    resumed at a block's end (``start``) cuts the rest exactly as an uninterrupted run does
    (Parquet output keeps one row group per block, so that matters for identical bytes).
    """
    base = header_end(inp.path)
    pos = base if start is None else start
    target = base + ((pos - base) // block_bytes + 1) * block_bytes
    with open(inp.path, "rb") as fh:
        while True:
            # Re-reading the partial record left over is cheaper than joining buffers.
            fh.seek(pos)
            buf = fh.read(target - pos)
            if pos + len(buf) < target:  # end of file: the rest is the last block
                yield RawBlock(file_index, inp.name, names, buf, pos, pos + len(buf))
                return
            cut = _last_record_end(buf)
            if cut <= 0:  # no record ends before this target: the block runs to the next one
                target += block_bytes
                continue
            yield RawBlock(
                file_index, inp.name, names, buf if cut == len(buf) else buf[:cut], pos, pos + cut
            )
            pos += cut
            target += block_bytes


def parse_block(
    block: RawBlock,
    delimiter: str,
    typed: dict[str, pa.DataType] | None,
    columns: list[str] | None = None,
) -> tuple[pa.Table, list[MalformedRecord], bool]:
    """Parse a block: (table, malformed records, whether the typed columns held).

    Typed columns are parsed straight to their type; when a value does not parse, the block
    is parsed again as text so bad values become per-row rejects.
    """
    import pyarrow.csv as pacsv

    for attempt in [typed, None] if typed else [None]:
        malformed: list[MalformedRecord] = []

        def on_invalid(row: pacsv.InvalidRow, sink: list[MalformedRecord] = malformed) -> str:
            # Records are numbered from 1 in the block (no header): the rows before this one
            # are the records before it that were not malformed.
            after = None if row.number is None else row.number - 1 - len(sink)
            sink.append(
                MalformedRecord(
                    text=row.text,
                    reason=f"malformed record: expected {row.expected_columns} fields, "
                    f"got {row.actual_columns}",
                    after_rows=after,
                )
            )
            return "skip"

        types = {n: (attempt or {}).get(n, pa.string()) for n in block.names}
        if not block.data.strip(b"\r\n"):
            empty = pa.schema([(n, types[n]) for n in block.names if not columns or n in columns])
            return empty.empty_table(), malformed, attempt is not None
        try:
            table = pacsv.read_csv(
                pa.BufferReader(block.data),
                read_options=pacsv.ReadOptions(
                    column_names=block.names, use_threads=False, block_size=len(block.data) + 1
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    null_values=NULL_VALUES,
                    strings_can_be_null=True,
                    include_columns=columns,
                ),
            )
            return table, malformed, attempt is not None
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            if attempt is None:
                raise ScoringError(
                    f"Cannot read '{block.file_name}' at byte {block.start}: {exc}".splitlines()[0]
                ) from exc
    raise AssertionError("unreachable")
