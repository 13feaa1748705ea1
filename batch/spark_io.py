"""Inputs and outputs of the Spark engine on storage every node sees.

Owns: telling URIs (``hdfs://``, ``s3a://``, ``abfss://``, ``dbfs:/``, ``file://``...) from
paths; refusing a path on this machine when the executors run elsewhere (``--master`` other
than ``local[…]``) unless ``--shared-path`` says it is mounted at the same place on every
node; listing URI inputs (files, folders, globs) through Spark's Hadoop file system, with
their size, modification time, columns and the file system's own checksum when it has one
(the driver never opens them as local files); and an output URI: written to a staging folder
on the driver (so a killed run resumes there), then copied through the Hadoop file system
next to its destination and renamed into place.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch.readers import SUPPORTED_SUFFIXES, InputFile, format_of
from lifecycle.base.errors import ScoringError

logger = logging.getLogger(__name__)

#: A scheme of two or more characters then ``:/`` (``C:/`` stays a Windows path).
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def is_uri(text: str) -> bool:
    """Whether ``text`` names storage by URI (``hdfs://``, ``s3a://``, ``dbfs:/``, ``file://``)."""
    return bool(_URI.match(str(text)))


def check_reachable(items: list[str], master: str | None, shared_path: bool) -> None:
    """Refuse local paths when executors run on other hosts (unless ``shared_path``).

    Raises:
        ScoringError: a path on this machine with a cluster master, in one line.
    """
    from batch.spark import is_local_master

    if is_local_master(master) or shared_path:
        return
    for item in items:
        if not is_uri(item):
            raise ScoringError(
                f"Input '{item}' is a path on this machine, but Spark master '{master}' runs "
                "executors on other hosts that cannot open it: put the inputs on storage every "
                "node reads (hdfs://, s3a://, abfss://, dbfs:/, file:// on shared storage), or "
                f"pass --shared-path if '{item}' is mounted at the same path on every node"
            )


def _fs(spark: Any, uri: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def expand_uris(spark: Any, items: list[str], delimiter: str) -> list[InputFile]:
    """URI inputs (files, folders of CSV/Parquet files, globs) as input files, in the order
    given (a folder's and a glob's files sorted by name).

    Raises:
        ScoringError: a URI matches nothing, its scheme has no file system here (the
            connector is not installed), or a CSV file is empty.
    """
    out: list[InputFile] = []
    seen: set[str] = set()
    for uri in items:
        try:
            fs, path = _fs(spark, uri)
            statuses = list(fs.globStatus(path) or [])
        except Exception as exc:
            raise ScoringError(f"Cannot list input '{uri}': {_java_message(exc)}") from exc
        if not statuses:
            raise ScoringError(f"Input '{uri}' does not exist (expected a file, folder or glob)")
        files = []
        for st in sorted(statuses, key=lambda s: str(s.getPath())):
            if st.isDirectory():
                children = [
                    c
                    for c in fs.listStatus(st.getPath())
                    if c.isFile() and c.getPath().getName().lower().endswith(SUPPORTED_SUFFIXES)
                ]
                if not children:
                    raise ScoringError(
                        f"Input folder '{st.getPath()}' holds no CSV or Parquet files "
                        f"(expected names ending in {', '.join(SUPPORTED_SUFFIXES)})"
                    )
                files.extend(sorted(children, key=lambda c: c.getPath().getName()))
            else:
                files.append(st)
        for st in files:
            where = str(st.getPath())
            if where in seen:
                continue
            seen.add(where)
            name = st.getPath().getName()
            inp = InputFile(
                path=Path(name),
                fmt=format_of(Path(name)),
                size=int(st.getLen()),
                uri=where,
                mtime_ns=int(st.getModificationTime()) * 1_000_000,
            )
            out.append(_with_columns(spark, inp, delimiter))
    return out


def _with_columns(spark: Any, inp: InputFile, delimiter: str) -> InputFile:
    from dataclasses import replace

    if inp.fmt == "parquet":
        return replace(inp, columns=tuple(spark.read.parquet(inp.where).columns))
    if inp.size == 0:
        raise ScoringError(f"Input '{inp.where}' is empty: expected a header row")
    first = spark.read.text(inp.where).limit(1).collect()
    if not first:
        raise ScoringError(f"Input '{inp.where}' is empty: expected a header row")
    header = str(first[0][0]).lstrip("\ufeff")
    names = next(csv.reader([header], delimiter=delimiter), [])
    return replace(inp, columns=tuple(names))


def remote_checksum(spark: Any, uri: str) -> str | None:
    """The file system's own checksum of ``uri`` (``ALGORITHM:hex``), if it keeps one."""
    try:
        fs, path = _fs(spark, uri)
        checksum = fs.getFileChecksum(path)
    except Exception as exc:
        logger.info("no checksum for %s: %s", uri, _java_message(exc))
        return None
    if checksum is None:
        return None
    return f"{checksum.getAlgorithmName()}:{bytes(checksum.getBytes()).hex()}"


@dataclass
class StagedOutput:
    """An output URI written first to a folder on the driver, then copied into place."""

    uri: str
    local: Path
    folder: bool
    produced: list[Path] = field(default_factory=list)

    def to_uri(self, path: str | Path) -> str:
        """The destination URI of a file written under the staging folder."""
        root = self.local if self.folder else self.local.parent
        rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        parent = self.uri.rstrip("/") if self.folder else self.uri.rsplit("/", 1)[0]
        return f"{parent}/{rel}"

    def upload(self, spark: Any, paths: list[Path]) -> None:
        """Copy ``paths`` to their URIs: each to a hidden name beside it, then renamed over
        the destination (readers never see a half-copied file).

        Raises:
            ScoringError: the copy or the rename fails (the staged files are kept).
        """
        jvm = spark.sparkContext._jvm
        for path in paths:
            dest = self.to_uri(path)
            try:
                fs, target = _fs(spark, dest)
                tmp = jvm.org.apache.hadoop.fs.Path(
                    target.getParent(), f".{target.getName()}.uploading"
                )
                source = jvm.org.apache.hadoop.fs.Path(path.resolve().as_uri())
                fs.copyFromLocalFile(False, True, source, tmp)
                if fs.exists(target):
                    fs.delete(target, False)
                if not fs.rename(tmp, target):
                    raise ScoringError(f"rename of {tmp} to {dest} refused by the file system")
            except ScoringError:
                raise
            except Exception as exc:
                raise ScoringError(
                    f"Cannot write output '{dest}': {_java_message(exc)} (kept in {self.local})"
                ) from exc
            logger.info("copied %s to %s", path, dest)

    def remove(self) -> None:
        """Remove the staging folder (after a successful upload)."""
        shutil.rmtree(self.local if self.folder else self.local.parent, ignore_errors=True)


def stage_output(uri: str, staging_root: Path) -> StagedOutput:
    """Where a run writes an output URI on this machine: a folder keyed by the URI (so a
    rerun with the same arguments finds its checkpoint)."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    folder = uri.endswith("/")
    base = staging_root / "spark-outputs" / key
    base.mkdir(parents=True, exist_ok=True)
    local = base if folder else base / uri.rstrip("/").rsplit("/", 1)[-1]
    return StagedOutput(uri=uri, local=local, folder=folder)


def _java_message(exc: BaseException) -> str:
    """The first line of a Java exception's message (py4j wraps them in pages of text)."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return f"{java.getClass().getSimpleName()}: {java.getMessage()}".splitlines()[0]
        except Exception:
            pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
