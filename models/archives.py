"""Extracting an artifact's zip without trusting it: every entry checked before anything is
written (zip slip, links, entry count, declared sizes and compression ratios against the
limits), and the bytes counted again while streaming (a header may lie). A refused zip
leaves nothing behind; the error names the limit and the flag that raises it."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lifecycle.base.errors import ModelImportError

MIB = 1 << 20
#: Whatever the compressed size, a zip may always unpack to this much.
MIN_ALLOWANCE = 64 * MIB
#: Beyond that, at most this multiple of the zip's own size ...
SIZE_MULTIPLE = 10
#: ... and never more than this (``--max-archive-bytes`` replaces both rules).
CEILING = 1 << 30
MAX_ENTRIES = 10_000
#: An entry of more than 1 MiB may not be compressed more than this.
MAX_ENTRY_RATIO = 200
FLAG = "--max-archive-bytes"


@dataclass(frozen=True)
class ArchiveLimits:
    """How much a zip may unpack to (``max_bytes`` None: the default rule)."""

    max_bytes: int | None = None
    max_entries: int = MAX_ENTRIES
    max_entry_ratio: int = MAX_ENTRY_RATIO

    def allowance(self, compressed_size: int) -> int:
        """Total uncompressed bytes allowed for a zip of ``compressed_size`` bytes."""
        if self.max_bytes is not None:
            return self.max_bytes
        return min(CEILING, max(MIN_ALLOWANCE, SIZE_MULTIPLE * compressed_size))


def _refuse(zip_path: Path, what: str) -> ModelImportError:
    return ModelImportError(f"Zip '{zip_path.name}' refused: {what}")


def check_entries(
    zip_path: Path, infos: list[zipfile.ZipInfo], root: Path, limits: ArchiveLimits
) -> int:
    """Check every entry against the limits; the total declared size allowed.

    Raises:
        ModelImportError: an entry escapes ``root``, is a link, or a limit is exceeded.
    """
    if len(infos) > limits.max_entries:
        raise _refuse(
            zip_path, f"{len(infos)} entries, more than the limit of {limits.max_entries}"
        )
    allowance = limits.allowance(zip_path.stat().st_size)
    total = 0
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        target = (root / pure).resolve()
        if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(root):
            raise ModelImportError(
                f"Zip '{zip_path.name}' has an entry that escapes the extraction folder "
                f"(zip slip): '{name}'"
            )
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ModelImportError(
                f"Zip '{zip_path.name}' has a symbolic link entry '{name}'; refused"
            )
        ratio = info.file_size / max(1, info.compress_size)
        if limits.max_bytes is None and info.file_size > MIB and ratio > limits.max_entry_ratio:
            raise _refuse(
                zip_path,
                f"entry '{name}' is compressed {ratio:.0f}:1, more than the limit of "
                f"{limits.max_entry_ratio}:1 (a zip bomb?); pass {FLAG} N to accept it",
            )
        total += info.file_size
    if total > allowance:
        raise _refuse(
            zip_path,
            f"it unpacks to {total} bytes, more than the limit of {allowance} bytes; "
            f"pass {FLAG} N to allow more",
        )
    return allowance


def safe_extract_zip(zip_path: Path, dest: Path, limits: ArchiveLimits | None = None) -> Path:
    """Extract ``zip_path`` into ``dest`` within ``limits``.

    Returns:
        The folder holding the contents: ``dest``, or its only sub-folder when the zip wraps
        everything in one top folder.

    Raises:
        ModelImportError: not a zip, an entry escapes ``dest`` (zip slip) or is a link, or a
            limit is exceeded (checked before writing, and again while writing).
    """
    limits = limits or ArchiveLimits()
    if not zipfile.is_zipfile(zip_path):
        raise ModelImportError(f"'{zip_path}' is not a zip file")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            allowance = check_entries(zip_path, infos, root, limits)
            written = 0
            for info in infos:
                target = root / PurePosixPath(info.filename.replace("\\", "/"))
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                entry = 0
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(MIB):
                        entry += len(chunk)
                        written += len(chunk)
                        if entry > info.file_size or written > allowance:
                            raise _refuse(
                                zip_path,
                                f"entry '{info.filename}' unpacks to more than its header "
                                f"declares or past the limit of {allowance} bytes; pass {FLAG} N "
                                "to allow more",
                            )
                        out.write(chunk)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    entries = [p for p in root.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


def zip_content_sha256(zip_path: Path, limits: ArchiveLimits | None = None) -> str:
    """SHA-256 of what ``zip_path`` holds, computed as for the folder it unpacks to: the
    files' names relative to the archive's one top-level folder (when all entries share
    one) and their contents, sorted by name. A folder and a zip of it get the same digest.

    The entries are checked against ``limits`` first; the contents are streamed, nothing is
    written.

    Raises:
        ModelImportError: a bad zip, or one the limits refuse.
    """
    limits = limits or ArchiveLimits()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            check_entries(zip_path, infos, Path("/nonexistent-root").resolve(), limits)
            files = [i for i in infos if not i.is_dir()]
            names = [PurePosixPath(i.filename.replace("\\", "/")) for i in files]
            tops = {n.parts[0] for n in names if len(n.parts) > 1}
            strip = len(tops) == 1 and all(len(n.parts) > 1 for n in names)
            keyed = sorted(
                (PurePosixPath(*n.parts[1:]).as_posix() if strip else n.as_posix(), info)
                for n, info in zip(names, files, strict=True)
            )
            h = hashlib.sha256()
            for name, info in keyed:
                h.update(name.encode() + b"\0")
                with zf.open(info) as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
                h.update(b"\0")
            return h.hexdigest()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelImportError(f"Zip '{zip_path.name}' cannot be read: {exc}") from exc
