"""``python -m lifecycle.cli.mlproject ENTRY ...``: MLproject entry points with flat parameters.

MLproject parameters cannot be optional flags or repeated options, so the entry points that
need them come through here: an empty string means "not given", ``true``/``false`` become a
flag, comma-separated values become repeated options. Each entry then runs the very same
``lifecycle`` command (and so the same library function) a user would type.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lifecycle.base.errors import InvalidArgumentError


def _opt(args: list[str], flag: str, value: str | None) -> None:
    if value not in (None, ""):
        args += [flag, str(value)]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise InvalidArgumentError(f"Invalid boolean '{value}'. Expected true or false")


def _int(value: str) -> str:
    # MLproject float parameters arrive as "2" or "2.0".
    return str(int(float(value))) if value not in ("", None) else ""


def translate(argv: Sequence[str]) -> list[str]:
    """The ``lifecycle`` command line for one MLproject entry point invocation.

    Raises:
        InvalidArgumentError: an unknown entry point or a malformed value.
    """
    parser = argparse.ArgumentParser(prog="python -m lifecycle.cli.mlproject")
    sub = parser.add_subparsers(dest="entry", required=True)
    p = sub.add_parser("import")
    for name in (
        "--path",
        "--name",
        "--kind",
        "--sample",
        "--target",
        "--run-id",
        "--holdout",
        "--trust-pickle",
        "-w",
    ):
        p.add_argument(name, default="")
    p = sub.add_parser("promote")
    for name in ("--name", "--version", "--from", "--to", "--stage", "--gate"):
        p.add_argument(name, default="")
    p = sub.add_parser("score")
    for name in ("--model-uri", "--input", "--output", "--workers", "--engine", "-w"):
        p.add_argument(name, default="")
    p = sub.add_parser("deploy-azure")
    for name in ("--target", "--name", "--version", "--endpoint", "--compute", "--out", "-w"):
        p.add_argument(name, default="")
    p = sub.add_parser("monitor")
    for name in ("--model-uri", "--input", "--labels", "--report", "--policy", "-w"):
        p.add_argument(name, default="")
    ns = vars(parser.parse_args(list(argv)))
    entry = ns.pop("entry")
    out: list[str] = []
    if entry == "import":
        out = ["import"]
        if ns["kind"] not in ("", "auto"):
            out.append(ns["kind"])
        out += [ns["path"], "--name", ns["name"]]
        _opt(out, "--sample", ns["sample"])
        _opt(out, "--target", ns["target"])
        _opt(out, "--run-id", ns["run_id"])
        _opt(out, "--holdout", ns["holdout"])
        if _bool(ns["trust_pickle"]):
            out.append("--trust-pickle")
        _opt(out, "-w", ns["w"])
    elif entry == "promote":
        out = [
            "promote",
            ns["name"],
            "--version",
            ns["version"],
            "--from",
            ns["from"],
            "--to",
            ns["to"],
        ]
        _opt(out, "--stage", ns["stage"])
        for gate in filter(None, (g.strip() for g in ns["gate"].split(","))):
            out += ["--gate", gate]
    elif entry == "score":
        out = ["score", ns["model_uri"], *ns["input"].split(","), "--output", ns["output"]]
        workers = _int(ns["workers"])
        if workers not in ("", "0"):
            out += ["--workers", workers]
        _opt(out, "--engine", ns["engine"])
        _opt(out, "-w", ns["w"])
    elif entry == "deploy-azure":
        target = ns["target"]
        if target not in ("online", "batch"):
            raise InvalidArgumentError(f"Invalid target '{target}'. Expected online or batch")
        out = ["deploy", f"azure-{target}", ns["name"], "--version", ns["version"]]
        out += ["--endpoint", ns["endpoint"]]
        if target == "batch":
            _opt(out, "--compute", ns["compute"])
        _opt(out, "--out", ns["out"])
        _opt(out, "-w", ns["w"])
    elif entry == "monitor":
        out = ["monitor", ns["model_uri"]]
        for path in filter(None, ns["input"].split(",")):
            out += ["--input", path]
        _opt(out, "--labels", ns["labels"])
        _opt(out, "--report", ns["report"])
        _opt(out, "--policy", ns["policy"])
        _opt(out, "-w", ns["w"])
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Translate the entry point's parameters and run the ``lifecycle`` command."""
    from lifecycle.cli import cli

    try:
        args = translate(sys.argv[1:] if argv is None else argv)
    except InvalidArgumentError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(2)
    cli.main(args=args, prog_name="lifecycle")


if __name__ == "__main__":
    main()
