"""The monitoring report: a static page whose figures exist, are valid PNGs and render.

The structural check always runs; the rendering check runs headless Chromium when a
``chromium`` binary is on PATH (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lifecycle.base.workspaces import load_config
from lifecycle.monitor import attach_baseline
from lifecycle.monitor.monitor import monitor
from lifecycle.monitor.result import MonitorResult
from tests.support.monitor_data import SHIFTED_CAT_P, fit_model, make_data, register, write_config

NAME = "report-model"
_OK_RGB = (0x2E, 0x86, 0xC1)  # the colour of non-drifted bars: only the figures use it


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self.title = ""
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "td":
            self.cells.append(data.strip())
        if self._in and self._in[-1] == "title":
            self.title += data


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype="int32")


def _non_blank(arr: np.ndarray) -> bool:
    return bool(arr.std() > 5 and (arr.min(axis=2) < 200).mean() > 0.005)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MonitorResult]:
    """A report of drifted data after two monitor runs (so the trend has two points)."""
    root = tmp_path_factory.mktemp("report")
    ws = load_config(write_config(root)).get("dev")
    train = make_data(5000, seed=30)
    version = register(ws, NAME, fit_model(train), train, root / "model")
    attach_baseline(ws, NAME, version, train, labels="y")
    quiet = root / "quiet.yaml"
    quiet.write_text("actions: []\n", encoding="utf-8")
    first = root / "first.csv"
    make_data(5000, seed=31).to_csv(first, index=False)
    monitor(ws, f"models:/{NAME}/{version}", [first], labels="y", policy=quiet)
    second = root / "second.csv"
    make_data(5000, seed=32, x1_shift=1.0, cat_p=SHIFTED_CAT_P).to_csv(second, index=False)
    out = root / "report"
    result = monitor(
        ws, f"models:/{NAME}/{version}", [second], labels="y", report_dir=out, policy=quiet
    )
    return out, result


def test_report_structure(report: tuple[Path, MonitorResult]) -> None:
    out, result = report
    assert result.report == str((out / "index.html").resolve())
    page = _Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert page.title.startswith(f"Monitoring: {NAME} v")
    assert page.images[0] == "drift_psi.png"
    assert "trend.png" in page.images
    drifted = [f["name"] for f in result.features if f["drift"]]
    assert sorted(drifted) == ["cat", "x1"]
    for name in drifted:
        assert any(src.startswith("dist_") and src.endswith(f"_{name}.png") for src in page.images)
    for src in page.images:
        assert "/" not in src and ":" not in src  # relative: opens from disk, no server
        arr = _pixels(out / src)
        assert _non_blank(arr), src
    for name in ("x1", "x2", "x3", "cat", "prediction"):
        assert name in page.cells
    assert "accuracy" in page.cells
    # nothing left half-written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_report_is_logged_with_the_run(report: tuple[Path, MonitorResult]) -> None:
    out, result = report
    ws = load_config(out.parent / "lifecycle.yaml").get("dev")
    arts = {a.path for a in ws.client().list_artifacts(result.run_id, "monitor/report")}
    assert "monitor/report/index.html" in arts and "monitor/report/drift_psi.png" in arts


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(
    report: tuple[Path, MonitorResult], tmp_path: Path
) -> None:
    out, _ = report
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,3000",
            f"--screenshot={shot}",
            (out / "index.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    arr = _pixels(shot)
    assert arr.shape[:2] == (3000, 1280)
    assert _non_blank(arr)
    # The figures were loaded from disk: their bar colour appears on the page.
    blue = np.all(np.abs(arr - np.array(_OK_RGB)) < 12, axis=2).sum()
    assert blue > 500, f"only {blue} pixels of the figures' bar colour: images did not load"
