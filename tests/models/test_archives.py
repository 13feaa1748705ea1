"""Zips are checked before anything is extracted: a zip bomb is refused in one line that names
the limit and the flag, and nothing is written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from lifecycle.base.errors import ModelImportError
from lifecycle.base.workspaces import Workspace
from lifecycle.cli import cli
from models.archives import ArchiveLimits, safe_extract_zip

DESIGNER = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "designer"


def _bomb(path: Path, mib: int) -> Path:
    """One entry of ``mib`` MiB of zeros (deflate: about 1,000:1)."""
    block = b"\0" * (1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("trained_model_outputs/data.ilearner", "w") as entry,
    ):
        for _ in range(mib):
            entry.write(block)
    return path


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.zip", 256)
    assert bomb.stat().st_size < 1 << 20
    dest = tmp_path / "out"
    with pytest.raises(ModelImportError, match="--max-archive-bytes") as err:
        safe_extract_zip(bomb, dest)
    assert len(str(err.value).splitlines()) == 1
    assert "bomb.zip" in str(err.value)
    assert not dest.exists()


def test_many_small_entries_past_the_total_limit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(5):
            zf.writestr(f"f{i}.bin", b"x" * 1000)
    limits = ArchiveLimits(max_bytes=3000)
    with pytest.raises(
        ModelImportError, match=r"unpacks to 5000 bytes, more than the limit of 3000"
    ):
        safe_extract_zip(path, tmp_path / "out", limits)
    with pytest.raises(ModelImportError, match="5 entries, more than the limit of 4"):
        safe_extract_zip(path, tmp_path / "out", ArchiveLimits(max_entries=4))
    assert not (tmp_path / "out").exists()
    assert (safe_extract_zip(path, tmp_path / "ok", ArchiveLimits(max_bytes=5000))).is_dir()


def test_import_of_a_bomb_names_the_flag_and_registers_nothing(
    dev: Workspace, tmp_path: Path
) -> None:
    bomb = _bomb(tmp_path / "trained_model_outputs.zip", 128)
    result = CliRunner().invoke(
        cli, ["import", "designer", str(bomb), "--name", "boom", "--trust-pickle"]
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-archive-bytes" in lines[0]
    assert dev.client().search_registered_models() == []


def test_a_real_zip_within_the_limits_imports(dev: Workspace, tmp_path: Path) -> None:
    import shutil

    archive = shutil.make_archive(
        str(tmp_path / "trained_model_outputs"), "zip", DESIGNER / "binary_logreg",
        "trained_model_outputs",
    )  # fmt: skip
    result = CliRunner().invoke(
        cli, ["import", "designer", archive, "--name", "zipped", "--trust-pickle"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("zipped version 1")
