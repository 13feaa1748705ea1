"""The README runner itself: it fails when a command's output or exit code is not what a
block shows, and its placeholders are only ids, digests, times, durations, ports, paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sybil.example import SybilFailure

from tests.support.readme_console import SYBIL, Walk, match_output, run_walk, walks

README = Path(__file__).resolve().parents[2] / "README.md"


def _walk(tmp_path: Path) -> Walk:
    return Walk(root=tmp_path, env={"PATH": "/usr/bin:/bin"}, setups={})


def test_every_console_block_of_the_readme_is_in_a_walk() -> None:
    text = README.read_text()
    blocks = len(re.findall(r"^```console$", text, flags=re.M))
    examples = SYBIL.parse(README).examples()
    parsed = [e for e in examples if getattr(e.region.evaluator, "__name__", "") == "_console"]
    assert len(parsed) == blocks > 10
    first_walk = text.index("<!-- readme-test: walk ")
    assert text.index("```console") > first_walk
    assert walks(README)[:3] == ["notebook", "designer", "automl"]


def test_placeholders_match_only_what_varies(tmp_path: Path) -> None:
    walk = _walk(tmp_path)
    shown = [
        "run: f3b9a53783f245749a8b8087987ae32b",
        "2026-11-23T06:37:35  root   done in 11.4 s at http://127.0.0.1:5077",
        "...",
        "last line",
    ]
    printed = [
        "run: 0123456789abcdef0123456789abcdef",
        "2027-01-02T10:00:00 root done in 3 s at http://127.0.0.1:40000",
        "anything",
        "at all",
        "last line",
    ]
    assert match_output(shown, printed, walk) is None
    assert walk.ids == {"f3b9a53783f245749a8b8087987ae32b": "0123456789abcdef0123456789abcdef"}
    assert walk.substitute("--run-id f3b9a53783f245749a8b8087987ae32b") == (
        "--run-id 0123456789abcdef0123456789abcdef"
    )
    # a bound value that is itself under /tmp/ (a clone in /tmp) is not rewritten again
    walk.ids["/path/to/this/repo"] = "/tmp/ci-clone"
    assert walk.substitute("mlflow run /path/to/this/repo -P dir=/tmp/demo") == (
        f"mlflow run /tmp/ci-clone -P dir={tmp_path}/demo"
    )
    # everything else is literal: a changed word, number, a missing or extra line all fail
    for bad in (
        [printed[0], printed[1].replace("root", "user"), "last line"],
        [printed[0], printed[1], "last line", "extra"],
        [printed[0], "last line"],
        [printed[0].replace("run:", "run id:"), printed[1], "last line"],
    ):
        assert match_output(shown, bad, _walk(tmp_path)) is not None, bad
    assert match_output(["accuracy 0.958042"], ["accuracy 0.958043"], walk) is not None


def test_a_block_whose_command_fails_or_prints_otherwise_fails_the_walk(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- readme-test: walk w -->\n```console\n$ echo hello\nhello\n$ false\n```\n")
    with pytest.raises(SybilFailure, match=r"`false` exited 1, the README shows 0"):
        run_walk(doc, "w", _walk(tmp_path))
    doc.write_text("<!-- readme-test: walk w -->\n```console\n$ echo hello\nhallo\n```\n")
    with pytest.raises(SybilFailure, match="output differs"):
        run_walk(doc, "w", _walk(tmp_path / "2"))
    doc.write_text(
        "<!-- readme-test: walk w -->\n"
        "<!-- readme-test: write f.txt -->\n```text\nabc\n```\n"
        "```console\n$ cat f.txt; exit 3\nabc\n(exit 3)\n```\n"
        "<!-- readme-test: walk other -->\n```console\n$ false\n```\n"
    )
    run_walk(doc, "w", _walk(tmp_path / "3"))  # the other walk's block is not run
