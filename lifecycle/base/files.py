"""Writing files so that a reader never sees half of one: write a temporary file beside the
target, then rename it into place (``os.replace`` is atomic on one filesystem).
A crash leaves the old file or the new one, never a mix; the temporary's name starts with a
dot and carries the writer's pid, so two writers never share one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The temporary name beside ``path`` that this process writes before renaming."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on an error
    it is removed and ``path`` is left as it was."""
    target = Path(path)
    if mkdir:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mkdir: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, mkdir=mkdir) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mkdir: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, mkdir=mkdir) as tmp:
        tmp.write_bytes(data)
